"""``ctl forward AGENT LOCAL_PORT:HOST:PORT``: a loopback listener here whose every TCP
connection is carried through the server to the agent, which connects to HOST:PORT if its
``tunnels.allow`` says so. A refused connection is closed with the agent's reason on
stderr; the listener stays."""

from __future__ import annotations

import json
import socket
import struct
import sys
from typing import Any, TextIO

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .api import Api
from .channel import open_channel, plain_errors
from .keys import Signer, signer_for
from .settings import ClientSettings, CtlError

__all__ = ["forward", "parse_spec"]


def parse_spec(spec: str) -> tuple[int, str, int]:
    """``LOCAL_PORT:HOST:PORT`` (HOST may be ``[v6]``); ``CtlError`` (2) otherwise."""
    local, _, rest = spec.partition(":")
    host, _, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not (local.isdigit() and port.isdigit() and host) or int(local) > 65535:
        raise CtlError(f"{spec!r} is not LOCAL_PORT:HOST:PORT (e.g. 5432:127.0.0.1:5432)", 2)
    if not 1 <= int(port) <= 65535:
        raise CtlError(f"{spec!r}: the port must be 1-65535", 2)
    return int(local), host, int(port)


def forward(api: Api, args: Any, out: TextIO) -> int:
    local, host, port = parse_spec(args.spec)
    try:
        with plain_errors():
            signer = signer_for(args)
            trio.run(_serve, api.settings, args.agent, (local, host, port), args.bind, signer)
    except KeyboardInterrupt:
        return 130
    return 0


async def _serve(
    settings: ClientSettings,
    agent_id: str,
    spec: tuple[int, str, int],
    bind: str,
    signer: Signer | None = None,
) -> None:
    local, host, port = spec
    try:
        listeners = await trio.open_tcp_listeners(local, host=bind)
    except OSError as error:
        raise CtlError(f"cannot listen on {bind}:{local}: {error}", 2) from None
    address = listeners[0].socket.getsockname()
    print(
        f"forwarding {address[0]}:{address[1]} -> {agent_id} {host}:{port} (Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    query = {"kind": "tunnel", "host": host, "port": port}

    async def carry(stream: trio.SocketStream) -> None:
        try:
            async with trio.open_nursery() as nursery:
                try:
                    signed = dict(query)
                    if signer is not None:  # each connection is its own intent
                        target = {"host": host, "port": port}
                        signed["intent"] = signer.channel("tunnel", target, agent_id)
                    ws = await open_channel(nursery, settings, agent_id, signed)
                except CtlError as refused:
                    print(f"monitoring-ws ctl: {refused}", file=sys.stderr, flush=True)
                    nursery.cancel_scope.cancel()
                    return
                await _pump(stream, ws)
                with trio.move_on_after(2):  # its reader runs in this nursery: close first
                    await ws.aclose()
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(carry, listeners)


async def _pump(stream: trio.SocketStream, ws: WebSocketConnection) -> None:
    """Both directions: each side's end of data half-closes the other; a reset is a
    reset on both sides."""
    async with trio.open_nursery() as nursery:

        async def upstream() -> None:
            try:
                async for data in stream:
                    await ws.send_message(bytes(data))
                await ws.send_message(json.dumps({"type": "eof"}))
            except trio.BrokenResourceError:  # the local client reset its connection
                await ws.send_message(json.dumps({"type": "close", "reason": "reset"}))
                nursery.cancel_scope.cancel()

        nursery.start_soon(upstream)
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    await stream.send_all(message)
                    continue
                control = json.loads(message)
                if control.get("type") == "eof":
                    await stream.send_eof()
                elif control.get("type") == "closed":
                    if control.get("reason") != "closed":
                        print(
                            f"monitoring-ws ctl: {host_of(control)}",
                            file=sys.stderr,
                            flush=True,
                        )
                    if control.get("reason") == "reset":
                        _reset(stream)
                    break
        except (ConnectionClosed, trio.BrokenResourceError):
            pass
        nursery.cancel_scope.cancel()


def host_of(control: dict[str, Any]) -> str:
    return f"the tunnel closed ({control.get('reason')}): {control.get('message') or ''}"


def _reset(stream: trio.SocketStream) -> None:
    """Close with a TCP reset, as the agent's side was."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
