"""GET /api/commands: command history newest first, filtered, a page at a time."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from ..conftest import StartServer
from .agents import open_agent


async def test_history_pages_and_filters(start_server: StartServer) -> None:
    running = await start_server()
    url = running.agent_urls[0]
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        open_agent(url, "hist-a") as a,
        open_agent(url, "hist-b") as b,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(a.serve_commands)
        nursery.start_soon(b.serve_commands)
        sent: list[str] = []
        for number in range(5):
            agent = "hist-a" if number < 4 else "hist-b"
            body: dict[str, Any] = {"command": "ping", "args": {"n": number}}
            if number == 1:
                body["requestedBy"] = "nightly-job"
            answer = await http.post(f"/api/agents/{agent}/commands", json=body)
            sent.append(answer.json()["commandId"])
        newest = (await http.get("/api/commands", params={"limit": 1})).json()["commands"][0]
        # Newest first, two at a time, until `next` is null.
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 2}
        for _ in range(10):
            page = (await http.get("/api/commands", params=params)).json()
            assert len(page["commands"]) <= 2
            seen += [record["commandId"] for record in page["commands"]]
            if page["next"] is None:
                break
            params["cursor"] = page["next"]
        assert seen == list(reversed(sent))
        assert newest["commandId"] == sent[-1]

        async def ids(**filters: Any) -> list[str]:
            page = (await http.get("/api/commands", params=filters)).json()
            return [record["commandId"] for record in page["commands"]]

        assert await ids(agentId="hist-b") == [sent[4]]
        assert await ids(requestedBy="nightly-job") == [sent[1]]
        assert await ids(command="ping", state="succeeded", agentId="hist-a") == sent[3::-1]
        assert await ids(state="failed") == []
        first = (await http.get(f"/api/commands/{sent[0]}")).json()["createdAt"]
        assert await ids(until=first) == [sent[0]]
        assert sent[0] not in await ids(since=first + 1)
        for bad in ({"limit": 0}, {"state": "done"}, {"cursor": "x"}, {"agentid": "a"}):
            refused = await http.get("/api/commands", params=bad)
            assert refused.status_code == 400, bad
            assert refused.json()["error"]["code"] == "bad_request"
        nursery.cancel_scope.cancel()
