"""A real gateway (Hypercorn trio worker) on an ephemeral loopback port, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.gateway.config import GatewayConfig
from monitoring_ws.gateway.serve import Running, serve

from .agents import SECRET

StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server(nursery: trio.Nursery, tmp_path: Path) -> StartServer:
    """Start a server with config overrides; it stops when the test ends."""

    async def start(**overrides: Any) -> Running:
        settings: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "master_secrets": (SECRET,),
            "state_dir": tmp_path / "state",
        }
        settings.update(overrides)
        config = GatewayConfig(**settings)
        config.check()
        running: Running = await nursery.start(partial(serve, config, handle_signals=False))
        return running

    return start


@pytest.fixture
async def server(start_server: StartServer) -> Running:
    return await start_server()


@pytest.fixture
async def http(server: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.api_url, timeout=10) as client:
        yield client
