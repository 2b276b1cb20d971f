"""The TCP connection of a ``tunnel`` channel: only to a destination ``tunnels.allow``
names, checked by address (docs/sessions.md, "Tunnels")."""

from __future__ import annotations

import trio

from ..protocol import TunnelParams
from .channel_settings import TunnelSettings, resolve
from .shell import Refused

__all__ = ["connect_tunnel"]


async def connect_tunnel(settings: TunnelSettings, params: TunnelParams) -> trio.SocketStream:
    """Connect to ``params``' destination, resolved once: the address checked against the
    allow-list is the address connected to (a DNS answer that changes between the check
    and the connect cannot send the agent elsewhere). ``Refused`` with the reason."""
    destination = f"{params.host}:{params.port}"
    if not settings.allow:
        raise Refused("refused", "tunnels are off on this agent: tunnels.allow is empty")
    addresses, allowed = await trio.to_thread.run_sync(
        lambda: (resolve(params.host), settings.allowed_addresses())
    )
    if not addresses:
        raise Refused("refused", f"{params.host} does not resolve on this agent")
    permitted = [address for address in addresses if (address, params.port) in allowed]
    if not permitted:
        raise Refused("refused", f"{destination} is not in tunnels.allow on this agent")
    with trio.move_on_after(settings.connect_timeout_s):
        last: OSError | None = None
        for address in permitted:
            try:
                return await trio.open_tcp_stream(address, params.port)
            except OSError as error:
                last = error
        raise Refused("refused", f"{destination}: {_describe(last)}")
    raise Refused("timeout", f"{destination}: no answer in {settings.connect_timeout_s:g} s")


def _describe(error: BaseException | None) -> str:
    """The OS's words for why a connect failed (trio wraps them: "all attempts ...")."""
    found = error
    while found is not None:
        if isinstance(found, OSError) and found.strerror:
            return found.strerror
        found = found.__cause__ or (
            found.exceptions[0] if isinstance(found, BaseExceptionGroup) else None
        )
    return str(error) if error is not None else "cannot connect"
