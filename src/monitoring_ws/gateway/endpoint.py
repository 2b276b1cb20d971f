"""The raw ASGI ``/agent`` handler: a socket is refused (shutting down, too many from its
address) or gets a session and its connection; and who may not authenticate at all."""

from __future__ import annotations

import logging
import random
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

import trio

from ..host.serving.forwarded import client_address
from ..protocol import (
    FEATURE_ACK,
    FEATURE_CANCEL,
    FEATURE_CHANNELS,
    FEATURE_INTENTS,
    FEATURE_LABELS,
    FEATURE_OUTPUT,
    CloseCode,
    Keyring,
    Limits,
    ProtocolError,
    RateLimit,
    ServerConfig,
    ServerSession,
    close_reason,
)
from .connection import AgentConnection

if TYPE_CHECKING:
    from collections import Counter

    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, WebsocketScope

    from .admission import Admission
    from .config import GatewayConfig
    from .enrollment import JoinTokens
    from .links import ConnectionOwner
    from .live import LiveConnections

__all__ = ["AgentEndpoint", "session_config"]

log = logging.getLogger("monitoring_ws.gateway")


def session_config(config: GatewayConfig) -> ServerConfig:
    """What every server session is made with (the gateway's settings, fixed at start)."""
    return ServerConfig(
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        features=frozenset(
            {FEATURE_ACK, FEATURE_CANCEL, FEATURE_INTENTS, FEATURE_LABELS, FEATURE_OUTPUT}
            | ({FEATURE_CHANNELS} if config.channels else set())
        ),
        rate_limit=RateLimit(
            config.agent_messages_per_s, config.agent_bytes_per_s, config.agent_burst_s
        ),
        # Counted in bytes only: every frame already counts in messages above.
        output_rate=RateLimit(1e9, config.output_bytes_per_s, config.agent_burst_s),
        limits=Limits(
            max_frame_bytes=config.max_frame_bytes,
            max_frame_values=config.max_frame_values,
            max_auth_frame_bytes=config.max_auth_frame_bytes,
            auth_timeout_ms=config.auth_timeout_ms,
        ),
    )


class AgentEndpoint:
    """Called by the server for each WebSocket on ``/agent`` (a Quart route would cost
    ~15 KB more per agent); holds the revoked ids its sessions refuse."""

    def __init__(
        self,
        owner: ConnectionOwner,
        *,
        live: LiveConnections,
        admission: Admission,
        enrollments: JoinTokens,
        keyring: Callable[[], Keyring],
        stats: Counter[str],
    ) -> None:
        """``keyring`` gives the keys in force (a reload replaces them)."""
        self._owner = owner
        self._live = live
        self._admission = admission
        self._enrollments = enrollments
        self._keyring = keyring
        self._stats = stats
        config: GatewayConfig = owner.config
        self._config = config
        self._proxies = config.server.proxy_networks()
        self._session_config = session_config(config)
        #: Agents refused at once (``revoked_agents``; replaced on reload).
        self.revoked: frozenset[str] = frozenset()

    async def __call__(
        self, scope: WebsocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        address, port = scope.get("client") or ("unknown", 0)
        if self._proxies:
            forwarded = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"),
                None,
            )
            address = client_address(address, forwarded, self._proxies)
        del scope  # held by this frame for the connection's life otherwise
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        config = self._config
        retry: int | None
        if self._live.shutting_down:
            code, retry = CloseCode.GOING_AWAY, config.shutdown_retry_after_s
        else:
            code, retry = (
                CloseCode.TOO_MANY_ATTEMPTS,
                self._admission.admit(address, trio.current_time()),
            )
        if retry is not None:
            self._stats[f"refused_{int(code)}"] += 1
            reason = close_reason(code, retry)
            await send({"type": "websocket.close", "code": code, "reason": reason})
            return
        lifetime_ms = config.max_session_s * 1000
        session = ServerSession(
            self._keyring(),
            opened_at_ms=self._owner.clock(),
            session_id=str(uuid.uuid4()),
            config=self._session_config,
            gate=partial(self._gate, address),
            generation_of=self._generation_of,
            # Spread over the last tenth, so a fleet that connected at once does not
            # reconnect at once.
            lifetime_ms=lifetime_ms - random.randrange(lifetime_ms // 10 + 1),  # noqa: S311
            # Sockets opened at once that never authenticate (a flood) are not all closed,
            # and do not all come back, at once: a quarter more, at random.
            auth_extra_ms=random.randrange(config.auth_timeout_ms // 4 + 1),  # noqa: S311
        )
        connection = AgentConnection(
            self._owner, session, receive, send, address=address, port=port
        )
        self._live.opened(connection)
        self._stats["connections"] += 1
        await connection.run()

    def _gate(self, address: str, agent_id: str) -> ProtocolError | None:
        """Whether a first frame claiming ``agent_id`` may be verified at all."""
        if agent_id in self.revoked:
            return ProtocolError(CloseCode.AUTH_FAILED, f"{agent_id} is revoked")
        retry = self._admission.agent_gate(address, agent_id, trio.current_time())
        if retry is None:
            return None
        return ProtocolError(CloseCode.TOO_MANY_ATTEMPTS, f"{agent_id} failed too often", retry)

    def _generation_of(self, agent_id: str) -> str | None:
        """An enrolled agent's key generation (None: its key is derived from its id)."""
        try:
            generation = self._enrollments.generation(agent_id)
        except sqlite3.Error as exc:  # fail closed: the agent's outbox waits
            log.error(  # noqa: TRY400 - one line, no traceback: the message says it all
                "cannot read the enrollment records in %s: %s", self._enrollments.path, exc
            )
            raise ProtocolError(
                CloseCode.TRY_AGAIN_LATER, "the enrollment records are unreadable", 5
            ) from None
        if generation is False:
            raise ProtocolError(
                CloseCode.AUTH_FAILED, f"{agent_id} was revoked: only a new enrollment admits it"
            )
        return generation

    def revoke(self, agent_ids: Iterable[str]) -> int:
        """Refuse these agents from now on (4401) and close their open sessions; returns
        how many sessions were closed. The list replaces the previous one. A revoked id's
        key is forgotten, whether enrolled or derived from the id alone: taking the id off
        the list later brings no old key back; it must enroll again (``--reenroll``)."""
        ids = frozenset(agent_ids)
        self._enrollments.revoke_agents(sorted(ids - self.revoked), self._owner.clock())
        self.revoked = ids
        return self._live.close_revoked(ids)
