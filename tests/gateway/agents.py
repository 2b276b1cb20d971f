"""A test agent: trio-websocket plus the sans-IO ``AgentSession``, nothing else."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from monitoring_ws.protocol import (
    AgentSession,
    AuthAccepted,
    AuthHello,
    Capabilities,
    CloseCode,
    CommandReceived,
    CommandResult,
    Event,
    derive_agent_key,
)

from ..conftest import SECRET


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@attrs.define
class TestAgent:
    __test__ = False  # a helper, not a test class

    ws: WebSocketConnection
    session: AgentSession

    async def send(self, frame: str | bytes) -> None:
        await self.ws.send_message(frame)

    async def events(self) -> list[Event]:
        return self.session.receive(await self.ws.get_message(), now_ms())

    async def next_command(self) -> CommandReceived:
        while True:
            for event in await self.events():
                if isinstance(event, CommandReceived):
                    return event

    async def answer(self, received: CommandReceived, **result: Any) -> None:
        outcome = CommandResult(received.command.command_id, **result)
        await self.send(self.session.command_result(outcome, now_ms()))

    async def serve_commands(self) -> None:
        """Answer every command with its args (an echo), until the connection ends."""
        try:
            while True:
                received = await self.next_command()
                await self.answer(
                    received, ok=True, duration_ms=0, result=dict(received.command.args)
                )
        except ConnectionClosed:
            return


def agent_session(
    agent_id: str,
    *,
    key: bytes | None = None,
    commands: tuple[str, ...] = ("ping",),
    features: tuple[str, ...] = (),
) -> AgentSession:
    capabilities = Capabilities(commands, features)
    hello = AuthHello("test-1.0", f"host-{agent_id}", capabilities, instance_id=None)
    return AgentSession(
        agent_id=agent_id, key=key or derive_agent_key(SECRET, agent_id), hello=hello
    )


@asynccontextmanager
async def open_agent(
    url: str, agent_id: str = "agent-1", **kwargs: Any
) -> AsyncIterator[TestAgent]:
    """A connected, authenticated agent."""
    ws_options = {k: kwargs.pop(k) for k in ("ssl_context", "message_queue_size") if k in kwargs}
    async with open_websocket_url(url, connect_timeout=5, disconnect_timeout=2, **ws_options) as ws:
        agent = TestAgent(ws, agent_session(agent_id, **kwargs))
        await agent.send(agent.session.start(now_ms()))
        events = await agent.events()
        assert isinstance(events[0], AuthAccepted), events
        yield agent


async def close_code(ws: WebSocketConnection, timeout: float = 5) -> int | None:
    """Read until the server closes; the close code it sent."""
    with trio.fail_after(timeout):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code


def agent_address(url: str) -> tuple[str, int]:
    """Host and port of a server's agent URL (``ws://127.0.0.1:4000/agent``)."""
    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


async def first_frame_close(
    url: str, frame: str | bytes, **ws_options: Any
) -> tuple[int | None, str | None]:
    """Open a connection, send one frame, and report how the server closed it."""
    async with open_websocket_url(url, connect_timeout=5, disconnect_timeout=2, **ws_options) as ws:
        # A server that refuses at once (4429) may close before the frame goes out.
        with contextlib.suppress(ConnectionClosed):
            await ws.send_message(frame)
        code = await close_code(ws)
        return code, ws.closed.reason if ws.closed else None


__all__ = [
    "SECRET",
    "CloseCode",
    "TestAgent",
    "agent_address",
    "agent_session",
    "close_code",
    "first_frame_close",
    "now_ms",
    "open_agent",
]
