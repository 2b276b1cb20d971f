"""``POST /enroll``: an agent trades a join token for its own key (raw ASGI, served on the
agent listener too, outside the API's guard: the join token is the credential).

Body: ``{"token": "mwsj1...", "agentId": "..."}``; answer: ``{"agentId", "wsAgentKey"}``
(and ``releaseKeys`` when the server names release keys),
a key of a freshly drawn generation (enrollment.py). A token that does not hold is the same
403 whatever failed (which check goes to the log and the audit, not to the caller); an id
already enrolled, connected or in the state database is 409 unless the token was made with
``--reenroll``; a body over 16 KiB is 413, one that is not JSON of that shape 400.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ..protocol import AGENT_ID, derive_enrolled_key
from ..protocol.strictjson import JSONRejectedError, loads
from .enrollment import JoinTokens, Refusal, parse_join_token

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

    from .links import AuditOut

__all__ = ["ENROLL_PATH", "EnrollEndpoint"]

ENROLL_PATH = "/enroll"
MAX_BODY_BYTES = 16 << 10
#: Refusals one address may have a minute for one token id before that id gets 429 from
#: there: guessing one token's secret is slow, and a NAT's valid tokens still work.
REFUSALS_PER_MINUTE = 10
#: Refusals one address may have a minute whatever the token, before everything from it
#: gets 429 (guessing ids too: a token id alone is 64 random bits).
ADDRESS_REFUSALS_PER_MINUTE = 300
#: (address, token id) pairs remembered at most (the oldest go first).
MAX_TRACKED = 65_536
_FORBIDDEN = "the join token is not valid for this agent (unknown, expired or used up)"
_CONFLICT = (
    "{agent} is already enrolled or known to this server: enroll the machine under a new "
    "agentId, or make a token with `monitoring-ws token create --reenroll` to replace its "
    "key (the old key then stops working)"
)
log = logging.getLogger("monitoring_ws.gateway")


class EnrollEndpoint:
    """Redeems join tokens against ``tokens`` and hands out keys derived from
    ``master_secret()`` (read per call: a reload may rotate it) and a new generation."""

    def __init__(
        self,
        tokens: JoinTokens,
        master_secret: Callable[[], str | bytes],
        clock: Callable[[], int],
        audit: AuditOut | None = None,
        *,
        body_timeout_s: float = 10.0,
        known: Callable[[str], Awaitable[bool]] | None = None,
        rekeyed: Callable[[str], None] | None = None,
        release_keys: tuple[str, ...] = (),
        operator_keys: tuple[str, ...] = (),
        require_operator_signature: bool = True,
    ) -> None:
        self.tokens, self.master_secret, self.clock, self.audit = (
            tokens,
            master_secret,
            clock,
            audit,
        )
        #: A body that has not arrived by then is cut (408), as on the API.
        self.body_timeout_s = body_timeout_s
        #: Whether an id is connected or in the state database (then it needs --reenroll).
        self.known = known
        #: Told of an agent whose key changed: its open sessions use the old one.
        self.rekeyed = rekeyed
        #: The release keys an enrolled agent is told to trust (``releaseKeys``).
        self.release_keys = release_keys
        #: The operator keys enrolled agents are to trust, and whether they need them.
        self.operator_keys = operator_keys
        self.require_operator_signature = require_operator_signature
        #: Per (address, token id) and per (address, ""): (the minute, refusals in it).
        self._refusals: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()

    def _limited(self, address: str, token_id: str | None) -> bool:
        """Whether ``address`` (and, given, its guesses at ``token_id``) failed too often."""
        minute = int(trio.current_time() // 60)
        limits = [((address, ""), ADDRESS_REFUSALS_PER_MINUTE)]
        if token_id is not None:
            limits.append(((address, token_id), REFUSALS_PER_MINUTE))
        for key, limit in limits:
            then, count = self._refusals.get(key, (0, 0))
            if then == minute and count >= limit:
                return True
        return False

    def _refused(self, address: str, token_id: str | None) -> None:
        minute = int(trio.current_time() // 60)
        keys = [(address, "")] if token_id is None else [(address, ""), (address, token_id)]
        for key in keys:
            then, count = self._refusals.pop(key, (minute, 0))
            self._refusals[key] = (minute, count + 1 if then == minute else 1)
        while len(self._refusals) > MAX_TRACKED:
            self._refusals.popitem(last=False)

    def _answer(self, agent_id: str, key: str) -> dict[str, Any]:
        answer: dict[str, Any] = {"agentId": agent_id, "wsAgentKey": key}
        if self.release_keys:  # what the agent's ``update`` will trust (docs/install.md)
            answer["releaseKeys"] = list(self.release_keys)
        if self.operator_keys:  # taken only if the agent's join token pins this very set
            answer["operatorKeys"] = list(self.operator_keys)
            answer["requireOperatorSignature"] = self.require_operator_signature
        return answer

    async def __call__(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        address = (scope.get("client") or ("unknown", 0))[0]
        if scope["method"] != "POST":
            await _answer(send, 405, _error("method_not_allowed", "POST a join token"), "POST")
            return
        if self._limited(address, None):
            await _answer(send, 429, _error("too_many_requests", "too many refusals: wait"))
            return
        body: bytes | None = b""
        with trio.move_on_after(self.body_timeout_s) as timed:
            body = await _body(receive)
        if timed.cancelled_caught:
            await _answer(send, 408, _error("request_timeout", "the body came too slowly"))
            return
        if body is None:
            await _answer(send, 413, _error("request_entity_too_large", "16 KiB at most"))
            return
        try:
            request = loads(body.decode("utf-8"))
            token, agent_id = request["token"], request["agentId"]
            if not isinstance(agent_id, str) or not AGENT_ID.fullmatch(agent_id):
                raise ValueError("agentId: 1-128 chars of [A-Za-z0-9._:-], a letter or digit first")  # noqa: TRY301
            join = parse_join_token(token if isinstance(token, str) else "")
        except (UnicodeDecodeError, JSONRejectedError, KeyError, TypeError, ValueError) as exc:
            message = str(exc) if isinstance(exc, ValueError) else "send {token, agentId}"
            self._refused(address, None)
            await _answer(send, 400, _error("bad_request", message))
            return
        if self._limited(address, join.id):
            await _answer(send, 429, _error("too_many_requests", "too many refusals: wait"))
            return
        known = self.known is not None and await self.known(agent_id)
        try:
            redeemed = await trio.to_thread.run_sync(
                partial(self.tokens.redeem, join, agent_id, self.clock(), known=known)
            )
        except (sqlite3.Error, OSError) as exc:
            log.error(  # noqa: TRY400 - one line says it all
                "cannot enroll %s: the join tokens in %s: %s", agent_id, self.tokens.path, exc
            )
            await _answer(send, 503, _error("unavailable", "the join tokens cannot be read now"))
            return
        if isinstance(redeemed, Refusal):
            self._refused(address, join.id)
            log.warning("enrollment of %s from %s refused: %s", agent_id, address, redeemed.reason)
            if self.audit is not None:
                self.audit.noisy(
                    "enroll_refused",
                    agentId=agent_id,
                    address=address,
                    joinToken=join.id,
                    reason=redeemed.reason,
                )
            if redeemed.conflict:
                await _answer(send, 409, _error("conflict", _CONFLICT.format(agent=agent_id)))
            else:
                await _answer(send, 403, _error("forbidden", _FORBIDDEN))
            return
        log.info("agent %s enrolled from %s with join token %s", agent_id, address, join.id)
        if self.audit is not None:
            self.audit.noisy("enrolled", agentId=agent_id, address=address, joinToken=join.id)
        if self.rekeyed is not None:
            self.rekeyed(agent_id)
        key = derive_enrolled_key(self.master_secret(), agent_id, redeemed).hex()
        await _answer(send, 200, self._answer(agent_id, key))


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def _body(receive: ASGIReceiveCallable) -> bytes | None:
    """The request body, or None past ``MAX_BODY_BYTES`` (read no further)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(
    send: ASGISendCallable, status: int, body: dict[str, Any], allow: str | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    if allow is not None:
        headers.append((b"allow", allow.encode()))
    await send(
        {"type": "http.response.start", "status": status, "headers": headers, "trailers": False}
    )
    await send(
        {"type": "http.response.body", "body": json.dumps(body).encode(), "more_body": False}
    )
