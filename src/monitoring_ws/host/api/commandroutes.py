"""The command POST routes served as raw ASGI, ahead of the Quart app: the hot path of
the API (docs/performance.md, "Commands"). The same guard, scopes, body limits, command
service, errors and audit lines as the Quart routes (``gate.py``, ``web.command_answer``);
tests/test_command_routes.py sends the same requests through both and compares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from ...web import MAX_BODY_BYTES, Answer, command_answer, error_body, http_error_body
from ..audit import AuditLog
from ..command_service import CommandService
from ..config import ServerSettings
from ..plugins import CommandRoute
from ..serving.leanhttp import WHOLE_BODY
from ..tokens import TokenSet
from .gate import Refused, admit, audit_request

__all__ = ["LeanCommandRoutes"]


def _http_error(exc: RequestEntityTooLarge | RequestTimeout) -> Answer:
    """What the Quart app's handler answers for werkzeug's exception (app.py)."""
    assert exc.code is not None  # noqa: S101 - both have one
    return Answer(exc.code, http_error_body(exc))


class LeanCommandRoutes:
    """Matches ``POST`` on the command routes; everything else goes to the Quart app."""

    def __init__(
        self,
        routes: Sequence[CommandRoute],
        commands: CommandService,
        server: ServerSettings,
        tokens: TokenSet,
        audit: AuditLog,
    ) -> None:
        self.routes = tuple(routes)
        self.commands = commands
        self.server = server
        self.tokens = tokens
        self.audit = audit
        self._proxies = server.proxy_networks()

    def match(self, scope: Any) -> tuple[CommandRoute, str] | None:
        """The route and agent id of a command POST; None for anything else."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        for route in self.routes:
            if path.startswith(route.prefix) and path.endswith(route.suffix):
                agent_id = path[len(route.prefix) : len(path) - len(route.suffix)]
                if agent_id and "/" not in agent_id:  # Quart's <agent_id>: [^/]+
                    return route, agent_id
        return None

    async def serve(
        self, route: CommandRoute, agent_id: str, scope: Any, receive: Any, send: Any
    ) -> None:
        headers: dict[str, str] = {}
        authorization = None
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = value  # the last of a repeated header, as the Quart guard reads
            if name == "authorization" and authorization is None:
                authorization = value
        peer = scope["client"][0] if scope.get("client") else "unknown"
        path = scope["path"]
        verdict = admit(
            self.server,
            self.tokens,
            self._proxies,
            method="POST",
            path=path,
            headers=headers,
            authorization=authorization or "",
            peer=peer,
            rule=route.rule,
            agent_id=agent_id,
        )
        if isinstance(verdict, Refused):
            body = error_body(verdict.code, verdict.message, **verdict.extra)
            answer = Answer(verdict.status, body, tuple(verdict.headers))
        else:
            raw = await self._body(scope, headers, receive)
            if raw is None:
                return  # the client went away
            if isinstance(raw, Answer):  # 413, 408
                answer = raw
            else:
                answer = await command_answer(
                    self.commands,
                    agent_id,
                    raw,
                    token=verdict.token,
                    address=verdict.address or peer,
                    via=route.via,
                    records_path=route.records_path,
                )
        await _send(send, answer)
        audit_request(
            self.audit,
            method="POST",
            path=path,
            status=answer.status,
            address=verdict.address or peer,
            token=verdict.token,
            agent_id=agent_id,
            more=answer.audit,
        )

    async def _body(
        self, scope: Any, headers: dict[str, str], receive: Any
    ) -> bytes | Answer | None:
        """The request's body, or the 413 / 408 the Quart app would answer; None when the
        client disconnected."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _http_error(RequestEntityTooLarge())
        whole: bytes | None = scope.get("extensions", {}).get(WHOLE_BODY)
        if whole is not None:  # the lean listener read it, in its own bounds
            return whole if len(whole) <= MAX_BODY_BYTES else _http_error(RequestEntityTooLarge())
        body = bytearray()
        with trio.move_on_after(self.server.http_body_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                body += message.get("body", b"")
                if len(body) > MAX_BODY_BYTES:
                    return _http_error(RequestEntityTooLarge())
                if not message.get("more_body", False):
                    return bytes(body)
        return _http_error(RequestTimeout())


async def _send(send: Any, answer: Answer) -> None:
    body = answer.encoded()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
