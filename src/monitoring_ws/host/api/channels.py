"""``/api/agents/:id/channel``: a shell or a tunnel to an agent over one WebSocket
(docs/api.md, "Sessions and tunnels"); and the recordings of shells.

The upgrade passes the API's guard like any request (browser rules, the token, its agent
globs) plus the kind's scope: ``sessions:shell`` or ``tunnels:open``. A browser cannot
send ``Authorization`` on a WebSocket, so the token may come as the subprotocol
``monitoring-ws.bearer.<base64url of the token>`` beside ``monitoring-ws.channel.v1``.

After the upgrade: binary messages are the channel's bytes both ways; text messages are
JSON: the client sends ``resize``, ``eof``, ``close``; the server ``opened``, ``refused``,
``eof`` and ``closed`` (then it closes the WebSocket with 1000).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio
from quart import Quart, Response, send_file, websocket

from ...protocol import AGENT_ID
from ...protocol.channel_control import ShellParams, TunnelParams
from ...protocol.errors import ProtocolError
from ...protocol.intent import IntentRefusedError, fitting_args, signer_ids
from ...transports.channels import Channel, ChannelEnded, ChannelRefusedError, OpensChannels
from ...web import ID_RULE, error, token
from ..audit import AuditLog
from ..config import ServerSettings
from ..recordings import Recording, Recordings
from ..tokens import TokenSet
from .gate import Admitted, admit

__all__ = ["SUBPROTOCOL", "add_channel_routes"]

SUBPROTOCOL = "monitoring-ws.channel.v1"
_BEARER = "monitoring-ws.bearer."
_SCOPES = {"shell": "sessions:shell", "tunnel": "tunnels:open"}


def bearer_of(protocols: Sequence[str]) -> str:
    """``Bearer <token>`` from a ``monitoring-ws.bearer.`` subprotocol ("" if none)."""
    for protocol in protocols:
        if protocol.startswith(_BEARER):
            encoded = protocol[len(_BEARER) :]
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                return "Bearer " + raw.decode("utf-8")
            except (binascii.Error, ValueError):
                return "Bearer -"
    return ""


def _params(kind: str, args: Mapping[str, str]) -> dict[str, Any] | str:
    """The channel's parameters from the query, or what is wrong with them."""
    try:
        if kind == "shell":
            return {
                "cols": int(args.get("cols", "80")),
                "rows": int(args.get("rows", "24")),
                "term": args.get("term", "xterm-256color"),
            }
        return {"host": args.get("host", ""), "port": int(args.get("port", "0"))}
    except ValueError:
        return "cols, rows and port must be integers"


def _intent(kind: str, params: Mapping[str, Any], text: str | None) -> dict[str, Any] | str | None:
    """``?intent=`` (base64url of the signed intent's JSON), checked against the open:
    the intent, None without one, or what is wrong (409)."""
    if not text:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        wanted = (ShellParams if kind == "shell" else TunnelParams).from_payload(params)
        fitting_args(data, kind, wanted.to_payload())
    except (binascii.Error, ValueError, IntentRefusedError, ProtocolError) as exc:
        return f"intent: {getattr(exc, 'message', exc)}"
    return dict(data)


def _asked(
    kind: str, args: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any] | None] | Response:
    """The open's parameters and signed intent, or the error answer (400, 409)."""
    params = _params(kind, args)
    if isinstance(params, str):
        return error(400, "bad_request", params)
    intent = _intent(kind, params, args.get("intent"))
    if isinstance(intent, str):
        return error(409, "intent_rejected", intent)
    return params, intent


def _facts(
    agent_id: str,
    kind: str,
    *,
    who: str | None,
    address: str | None,
    params: Mapping[str, Any],
    intent: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What the audit lines of one open say."""
    facts: dict[str, Any] = {"agentId": agent_id, "kind": kind, "token": who, "address": address}
    if kind == "tunnel":
        facts["destination"] = f"{params['host']}:{params['port']}"
    if intent is not None:
        facts["operatorKeys"] = signer_ids(intent)
    return facts


def add_channel_routes(
    app: Quart,
    server: ServerSettings,
    tokens: TokenSet,
    openers: Callable[[], Sequence[OpensChannels]],
    *,
    recordings: Recordings,
    audit: AuditLog,
) -> None:
    proxies = server.proxy_networks()

    @app.websocket("/api/agents/<agent_id>/channel")
    async def channel(agent_id: str) -> Response | None:
        """``?kind=shell&cols=&rows=&term=`` or ``?kind=tunnel&host=&port=``."""
        protocols = list(websocket.requested_subprotocols)
        verdict = admit(
            server,
            tokens,
            proxies,
            method="GET",
            path=websocket.path,
            headers={name.lower(): value for name, value in websocket.headers.items()},
            authorization=websocket.headers.get("Authorization", "") or bearer_of(protocols),
            peer=websocket.remote_addr or "unknown",
            rule=None,  # the kind's scope and the agent globs: checked below
            agent_id=agent_id,
        )
        address = verdict.address or websocket.remote_addr
        kind = websocket.args.get("kind", "")
        who = None if verdict.token is None else verdict.token.name
        if not isinstance(verdict, Admitted):
            audit.noisy("refused", path=websocket.path[:512], status=verdict.status, token=who)
            return error(verdict.status, verdict.code, verdict.message, **verdict.extra)
        if kind not in _SCOPES:
            return error(400, "bad_request", "kind must be shell or tunnel")
        if not AGENT_ID.fullmatch(agent_id):
            return error(400, "invalid_agent_id", f"agent id: {ID_RULE}")
        if verdict.token is not None and verdict.token.lacks(_SCOPES[kind]):
            message = f"the token {who} lacks the scope {_SCOPES[kind]}"
            return error(403, "forbidden", message, scope=_SCOPES[kind])
        if verdict.token is not None and not verdict.token.reaches(agent_id):
            message = f"the token {who} does not reach agent {agent_id}"
            return error(403, "forbidden", message, scope="agents")
        asked = _asked(kind, websocket.args)
        if isinstance(asked, Response):
            return asked
        params, intent = asked
        found = list(openers())
        if not found:
            return error(501, "not_supported", "no transport here opens sessions or tunnels")
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in protocols else None)
        facts = _facts(agent_id, kind, who=who, address=address, params=params, intent=intent)
        try:
            opened = await found[0].open_channel(
                agent_id, kind, params, requested_by=who, intent=intent
            )
        except ChannelRefusedError as refused:
            # Refusals come as fast as anyone asks (an agent that is not there): rate-limited.
            audit.noisy("channel_refused", **facts, code=refused.code, message=refused.message)
            await _say({"type": "refused", "code": refused.code, "message": refused.message})
            await websocket.close(1000)
            return None
        recording = None
        if kind == "shell":
            recording = recordings.start(
                agent_id=agent_id,
                requested_by=who,
                cols=params["cols"],
                rows=params["rows"],
                term=params["term"],
            )
            facts["recording"] = recording.id
        audit.record("channel_opened", **facts)
        await _carry(opened, recording, audit, facts)
        return None

    @app.get("/api/recordings")
    async def list_recordings() -> dict[str, Any]:
        """Recorded shell sessions the token may see, newest first."""
        presented = token()
        listed = [
            meta
            for meta in recordings.list()
            if presented is None or presented.reaches(str(meta.get("agentId")))
        ]
        return {"recordings": listed}

    @app.get("/api/recordings/<recording_id>")
    async def get_recording(recording_id: str) -> Response:
        """The asciicast v2 file (``application/x-asciicast``)."""
        found = recordings.find(recording_id)
        presented = token()
        if found is None or (
            presented is not None and not presented.reaches(str(found[0].get("agentId")))
        ):
            return error(404, "not_found", f"no recording {recording_id[:64]}")
        response = await send_file(found[1], mimetype="application/x-asciicast")
        response.headers["Content-Disposition"] = f'attachment; filename="{recording_id}.cast"'
        return response


async def _say(message: dict[str, Any]) -> None:
    await websocket.send(json.dumps(message, separators=(",", ":")))


async def _carry(
    channel: Channel, recording: Recording | None, audit: AuditLog, facts: dict[str, Any]
) -> None:
    """The channel's bytes both ways until it ends or the client leaves; then the
    recording's totals, the audit line, and (if the client is still there) ``closed``."""
    started = time.monotonic()
    ended = ChannelEnded("closed", "the client left")
    try:
        await _say({"type": "opened", "recording": facts.get("recording")})
        async with trio.open_nursery() as nursery:

            async def from_agent() -> None:
                nonlocal ended
                try:
                    while True:
                        data = await channel.receive()
                        if not data:
                            await _say({"type": "eof"})
                            continue
                        if recording is not None:
                            recording.output(data)
                        await websocket.send(data)
                except ChannelEnded as closed:
                    ended = closed
                nursery.cancel_scope.cancel()

            nursery.start_soon(from_agent)
            await _from_client(channel, recording)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await channel.aclose("closed", "the operator closed it")
            totals = {"bytesIn": channel.bytes_in, "bytesOut": channel.bytes_out}
            if recording is not None:
                recording.finish(
                    bytes_in=channel.bytes_in,
                    bytes_out=channel.bytes_out,
                    exit_code=ended.exit_code,
                    reason=ended.reason,
                )
            audit.record(
                "channel_closed",
                **facts,
                **totals,
                reason=ended.reason,
                exitCode=ended.exit_code,
                durationMs=int((time.monotonic() - started) * 1000),
            )
            # The client may be gone: what is left to say is best effort.
            with trio.move_on_after(2), contextlib.suppress(Exception):
                closed: dict[str, Any] = {
                    "type": "closed",
                    "reason": ended.reason,
                    "message": ended.message,
                }
                if ended.exit_code is not None:
                    closed["exitCode"] = ended.exit_code
                await _say(closed)
                await websocket.close(1000)


async def _from_client(channel: Channel, recording: Recording | None) -> None:
    """The client's messages until it asks to close (or leaves: the handler is cancelled);
    after its ``eof`` a tunnel waits for the agent's side to finish."""
    while True:
        message = await websocket.receive()
        if isinstance(message, bytes):
            await channel.send(message)
            continue
        try:
            control = json.loads(message)
        except ValueError:
            control = None
        kind = control.get("type") if isinstance(control, dict) else None
        if kind == "resize" and isinstance(control, dict):
            cols, rows = control.get("cols"), control.get("rows")
            if isinstance(cols, int) and isinstance(rows, int) and 0 < cols <= 1000 >= rows > 0:
                channel.resize(cols, rows)
                if recording is not None:
                    recording.resize(cols, rows)
        elif kind == "eof":
            await channel.send_eof()
            await trio.sleep_forever()  # the agent's side ends it
        elif kind == "close" and isinstance(control, dict):
            if control.get("reason") == "reset":  # the operator's TCP client reset
                await channel.aclose("reset", "the operator's connection was reset")
            return
        else:
            await _say({"type": "error", "message": "text messages: resize, eof or close"})
