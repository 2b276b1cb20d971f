"""The agent's end of channels against a scripted server: what a broken server sends
closes the connection with the protocol's code, and the agent carries on."""

from __future__ import annotations

from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from monitoring_ws.agent.main import build_agent
from monitoring_ws.protocol.channels import Direction, seal_data

from .test_agent import settings_for
from .test_v1_server import AGENT, KEY, envelope, v1_reply, verified


async def test_data_for_a_channel_never_opened_closes_4400_and_the_agent_comes_back() -> None:
    closes: list[int | None] = []
    reconnected = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        hello = verified(await ws.get_message())
        assert "channels" in hello["payload"]["capabilities"]["features"]
        if closes:
            reconnected.set()
            return
        await ws.send_message(envelope("auth", {**v1_reply(), "features": ["channels"]}))
        frame = seal_data(KEY, "s-1", Direction.SERVER_TO_AGENT, channel_id=5, seq=1, data=b"x")
        await ws.send_message(frame)
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            closes.append(None if closed.reason is None else closed.reason.code)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
        agent = build_agent(settings_for(f"ws://127.0.0.1:{server.port}/agent", AGENT))
        nursery.start_soon(agent.run)
        with trio.fail_after(30):
            await reconnected.wait()
        nursery.cancel_scope.cancel()
    assert closes == [4400]
