"""The gateway: the ``/agent`` endpoint and the state every connection shares."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import trio

from ..clock import wall_ms
from ..protocol import (
    CloseCode,
    CloseConnection,
    Keyring,
    Limits,
    MemoryReplayWindow,
    ReplayWindow,
    ServerConfig,
    ServerSession,
    close_reason,
)
from .admission import Admission
from .commands import PendingCommands
from .config import GatewayConfig
from .connection import AgentConnection
from .registry import MemoryRegistry, Registry
from .sink import MemorySink, TelemetrySink

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, WebsocketScope

__all__ = ["AGENT_PATH", "Gateway"]

AGENT_PATH = "/agent"
log = logging.getLogger("monitoring_ws.gateway")
#: Routine closes stay out of the warnings; failed checks and slow agents do not.
_CLOSE_LOG_LEVEL = {
    CloseCode.GOING_AWAY: logging.DEBUG,
    CloseCode.REPLACED: logging.INFO,
    CloseCode.TIMEOUT: logging.INFO,
}


class Gateway:
    """Agents' connections, the registry, commands in flight, and shutdown."""

    def __init__(
        self,
        config: GatewayConfig,
        keyring: Keyring,
        *,
        registry: Registry[AgentConnection] | None = None,
        sink: TelemetrySink | None = None,
        replay: ReplayWindow | None = None,
        node: str = "local",
    ) -> None:
        self.config = config
        self.keyring = keyring
        self.node = node
        self.registry: Registry[AgentConnection] = registry or MemoryRegistry()
        self.memory_sink = MemorySink(config.log_ring)
        self.sink: TelemetrySink = sink or self.memory_sink
        self.replay: ReplayWindow = replay or MemoryReplayWindow()
        self.commands = PendingCommands()
        self.admission = Admission(config.max_unauthenticated, config.auth_failures_per_minute)
        self.stats: Counter[str] = Counter()
        self.shutting_down = False
        self._connections: set[AgentConnection] = set()
        self._session_config = ServerConfig(
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            limits=Limits(
                max_frame_bytes=config.max_frame_bytes, auth_timeout_ms=config.auth_timeout_ms
            ),
        )

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def agent_endpoint(
        self, scope: WebsocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """The raw ASGI ``/agent`` handler (a Quart route costs ~15 KB more per agent)."""
        if (await receive())["type"] != "websocket.connect":
            return
        address, port = scope.get("client") or ("unknown", 0)
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        retry: int | None
        if self.shutting_down:
            code, retry = CloseCode.GOING_AWAY, self.config.shutdown_retry_after_s
        else:
            code, retry = (
                CloseCode.TOO_MANY_ATTEMPTS,
                self.admission.admit(address, trio.current_time()),
            )
        if retry is not None:
            self.stats[f"refused_{int(code)}"] += 1
            reason = close_reason(code, retry)
            await send({"type": "websocket.close", "code": code, "reason": reason})
            return
        session = ServerSession(
            self.keyring,
            opened_at_ms=wall_ms(),
            session_id=str(uuid.uuid4()),
            config=self._session_config,
        )
        connection = AgentConnection(self, session, receive, send, address=address, port=port)
        self._connections.add(connection)
        self.stats["connections"] += 1
        await connection.run()

    async def authenticated(self, connection: AgentConnection) -> None:
        self.admission.authenticated()
        self.stats["authenticated"] += 1
        await self.registry.register(connection)
        log.info("agent %s connected from %s", connection.agent_id, connection.remote)

    async def connection_ended(self, connection: AgentConnection, authenticated: bool) -> None:
        self._connections.discard(connection)
        if authenticated:
            await self.registry.unregister(connection)
            self.commands.connection_lost(connection)
            log.info("agent %s disconnected", connection.agent_id)
        else:
            closing = connection.closing
            failed = closing is not None and closing.code is CloseCode.AUTH_FAILED
            self.admission.left_unauthenticated(
                connection.address, trio.current_time(), auth_failed=failed
            )

    def log_close(self, connection: AgentConnection, event: CloseConnection) -> None:
        self.stats[f"closed_{int(event.code)}"] += 1
        who = connection.agent_id or connection.remote
        level = _CLOSE_LOG_LEVEL.get(event.code, logging.WARNING)
        # ``detail`` names the failed check: for the log only, never for the peer.
        log.log(level, "closing %s with %d: %s", who, event.code, event.detail or event.reason)

    def shutdown(self) -> None:
        """Refuse new agents and close every open one with 1001 and a retry hint."""
        self.shutting_down = True
        for connection in list(self._connections):
            connection.shutdown(self.config.shutdown_retry_after_s)

    async def wait_closed(self, timeout_s: float) -> None:
        """Wait (bounded) until every agent connection has ended."""
        with trio.move_on_after(timeout_s):
            while self._connections:
                await trio.sleep(0.02)
