"""``POST /enroll``: an agent trades a join token for its own key (raw ASGI, served on the
agent listener too, outside the API's guard: the join token is the credential).

Body: ``{"token": "mwsj1...", "agentId": "..."}``; answer: ``{"agentId", "wsAgentKey"}``.
Every refusal is the same 403 (which check failed goes to the log and the audit, not to
the caller); a body over 16 KiB is 413, one that is not JSON of that shape 400.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ..protocol import AGENT_ID, derive_agent_key
from ..protocol.strictjson import JSONRejectedError, loads
from .enrollment import JoinTokens, parse_join_token

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

    from .links import AuditOut

__all__ = ["ENROLL_PATH", "EnrollEndpoint"]

ENROLL_PATH = "/enroll"
MAX_BODY_BYTES = 16 << 10
#: Refusals one address may have a minute before it gets 429 without a look at the tokens.
REFUSALS_PER_MINUTE = 10
#: Addresses remembered at most (the oldest go first).
MAX_TRACKED = 65_536
log = logging.getLogger("monitoring_ws.gateway")


class EnrollEndpoint:
    """Redeems join tokens against ``tokens`` and hands out keys derived from
    ``master_secret()`` (read per call: a reload may rotate it)."""

    def __init__(
        self,
        tokens: JoinTokens,
        master_secret: Callable[[], str | bytes],
        clock: Callable[[], int],
        audit: AuditOut | None = None,
        *,
        body_timeout_s: float = 10.0,
    ) -> None:
        self.tokens, self.master_secret, self.clock, self.audit = (
            tokens,
            master_secret,
            clock,
            audit,
        )
        #: A body that has not arrived by then is cut (408), as on the API.
        self.body_timeout_s = body_timeout_s
        #: Per address: (the minute, refusals in it).
        self._refusals: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def _limited(self, address: str) -> bool:
        minute, count = self._refusals.get(address, (0, 0))
        return minute == int(trio.current_time() // 60) and count >= REFUSALS_PER_MINUTE

    def _refused(self, address: str) -> None:
        minute = int(trio.current_time() // 60)
        then, count = self._refusals.pop(address, (minute, 0))
        self._refusals[address] = (minute, count + 1 if then == minute else 1)
        while len(self._refusals) > MAX_TRACKED:
            self._refusals.popitem(last=False)

    async def __call__(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        address = (scope.get("client") or ("unknown", 0))[0]
        if scope["method"] != "POST":
            await _answer(send, 405, _error("method_not_allowed", "POST a join token"), "POST")
            return
        if self._limited(address):
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
            self._refused(address)
            await _answer(send, 400, _error("bad_request", message))
            return
        refusal = await trio.to_thread.run_sync(self.tokens.redeem, join, agent_id, self.clock())
        if refusal is not None:
            self._refused(address)
            log.warning("enrollment of %s from %s refused: %s", agent_id, address, refusal)
            if self.audit is not None:
                self.audit.noisy(
                    "enroll_refused",
                    agentId=agent_id,
                    address=address,
                    joinToken=join.id,
                    reason=refusal,
                )
            await _answer(
                send,
                403,
                _error(
                    "forbidden",
                    "the join token is not valid for this agent (unknown, expired or used up)",
                ),
            )
            return
        log.info("agent %s enrolled from %s with join token %s", agent_id, address, join.id)
        if self.audit is not None:
            self.audit.noisy("enrolled", agentId=agent_id, address=address, joinToken=join.id)
        key = derive_agent_key(self.master_secret(), agent_id).hex()
        await _answer(send, 200, {"agentId": agent_id, "wsAgentKey": key})


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
