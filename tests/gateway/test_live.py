"""``LiveConnections``: revoking closes only the named agents; a shutdown closes every
socket with its retry hint and its wait ends when the last cleanup is done."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from monitoring_ws.gateway.live import LiveConnections


@attrs.define(eq=False)
class _Socket:
    agent_id: str
    closed_with: str | None = None

    def revoke(self) -> None:
        self.closed_with = "4401"

    def shutdown(self, retry_after_s: int) -> None:
        self.closed_with = f"1001 retry {retry_after_s}"


async def test_revoking_closes_the_named_agents_only() -> None:
    live = LiveConnections()
    a, b, unauthenticated = _Socket("a"), _Socket("b"), _Socket("")
    for socket in (a, b, unauthenticated):
        live.opened(socket)
    assert live.close_revoked(frozenset({"a", "x"})) == 1
    assert (a.closed_with, b.closed_with, unauthenticated.closed_with) == ("4401", None, None)
    assert len(live) == 3  # closed, not yet ended: its cleanup removes it


async def test_a_shutdown_waits_for_the_last_cleanup() -> None:
    live = LiveConnections()
    sockets = [_Socket(f"agent-{n}") for n in range(3)]
    for socket in sockets:
        live.opened(socket)
    live.shutdown(7)
    assert live.shutting_down
    assert {s.closed_with for s in sockets} == {"1001 retry 7"}
    waited = trio.Event()

    async def wait() -> None:
        await live.wait_closed(60)
        waited.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        for socket in sockets[:-1]:
            live.ended(socket)
            await trio.testing.wait_all_tasks_blocked()
            assert not waited.is_set()
        live.ended(sockets[-1])
    assert waited.is_set()
    assert len(live) == 0
