"""``eventually``: the one way a test waits for a condition (no literal sleeps)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["eventually"]

T = TypeVar("T")

#: How often a condition is looked at again.
POLL_S = 0.02


async def eventually(
    check: Callable[[], T | Awaitable[T]], *, timeout_s: float = 30.0, what: str = "the condition"
) -> T:
    """``check()`` (awaited when it is a coroutine) until it returns a true value, which
    is returned. ``timeout_s`` only catches a hang: it fails the test naming ``what``."""
    deadline = trio.current_time() + timeout_s
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if trio.current_time() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout_s:g} s")
        await trio.sleep(POLL_S)


async def open_connections(api_url: str, count: int, *, timeout_s: float = 30.0) -> None:
    """Until the gateway holds ``count`` agent sockets (``GET /api/websocket/stats``): with
    0, it has finished with every connection a test closed (failures are counted then)."""
    import httpx  # noqa: PLC0415 - only the tests that count need it

    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:

        async def reached() -> bool:
            stats = (await http.get("/api/websocket/stats")).json()
            return int(stats["openConnections"]) == count

        await eventually(reached, timeout_s=timeout_s, what=f"{count} open connection(s)")
