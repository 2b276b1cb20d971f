"""/healthz and /readyz: no token, a word per check, 503 when a check fails or the server
drains (a real server; in a cluster, a real Redis stopped and started)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from monitoring_ws.host.api.health import Readiness

from .conftest import RedisProcess, StartServer
from .support.eventually import eventually
from .support.served import ssm_only_app

# The API answers the same on both servers of its port (api_server).
pytestmark = pytest.mark.usefixtures("api_server")


async def test_probes_need_no_token_and_say_one_word_per_check(
    start_server: StartServer,
) -> None:
    running = await start_server(api_tokens=("t" * 32,))
    # A load balancer probes with its own Host header and no token.
    headers = {"Host": "10.0.0.5:4000"}
    async with httpx.AsyncClient(base_url=running.api_url, headers=headers) as http:
        assert (await http.get("/api/agents")).status_code in {401, 403}
        alive = await http.get("/healthz")
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"listeners": "ok", "websocket.state_database": "ok"},
        }


async def test_not_ready_while_redis_is_away(
    start_server: StartServer, redis_server: RedisProcess, tmp_path: Path
) -> None:
    running = await start_server(
        redis_url=redis_server.url, node_id="n1", heartbeat_interval_ms=300
    )
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        assert (await http.get("/readyz")).json()["checks"]["websocket.redis"] == "ok"
        await trio.to_thread.run_sync(redis_server.stop)

        async def not_ready() -> httpx.Response | None:
            ready = await http.get("/readyz")
            return ready if ready.status_code != 200 else None

        ready = await eventually(not_ready, timeout_s=10, what="/readyz failing")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert ready.json()["checks"]["websocket.redis"] == "failing"
        assert (await http.get("/healthz")).status_code == 200  # alive all the same
        await trio.to_thread.run_sync(redis_server.start)

        async def _done() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await eventually(_done, timeout_s=15)


async def test_draining_is_503(tmp_path: Path) -> None:
    readiness = Readiness(listening=True, draining=True)
    client = ssm_only_app(readiness=readiness).test_client()
    response = await client.get("/readyz", headers={"Host": "127.0.0.1"})
    assert response.status_code == 503
    assert await response.get_json() == {
        "status": "not_ready",
        "checks": {"listeners": "draining"},
    }
    readiness.draining = False
    assert (await client.get("/readyz", headers={"Host": "127.0.0.1"})).status_code == 200
