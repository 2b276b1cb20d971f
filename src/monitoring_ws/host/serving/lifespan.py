"""An ASGI app's lifespan (``startup`` before the first request, ``shutdown`` after the
last), for the listeners that are not Hypercorn, which does this itself."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

__all__ = ["LifespanError", "lifespan"]


class LifespanError(RuntimeError):
    """The app said its startup failed."""


@contextlib.asynccontextmanager
async def lifespan(app: Callable[..., Any]) -> AsyncIterator[None]:
    """Run ``app``'s lifespan around the block: its startup has completed inside it."""
    to_app, app_receives = trio.open_memory_channel[dict[str, Any]](1)
    app_sends, from_app = trio.open_memory_channel[dict[str, Any]](1)

    # The app's side runs shielded: when the server is cancelled it still takes its
    # shutdown (Hypercorn's would), and ends when told to.
    running = trio.CancelScope(shield=True)

    async def run() -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        with running:
            await app(scope, app_receives.receive, app_sends.send)

    async def said(expected: str) -> None:
        answer = await from_app.receive()
        if answer["type"] != expected:
            raise LifespanError(answer.get("message") or answer["type"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        try:
            await to_app.send({"type": "lifespan.startup"})
            await said("lifespan.startup.complete")
        except BaseException:  # it failed, or the server stopped first: the app's side ends
            running.cancel()
            raise
        try:
            yield
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await to_app.send({"type": "lifespan.shutdown"})
                await said("lifespan.shutdown.complete")
            running.cancel()
