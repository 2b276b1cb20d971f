"""Fleet jobs against a real server and real agents: labels, selectors, rate control,
errors, scopes, and a server killed with -9 in the middle of a job."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.agent.client import Agent
from monitoring_ws.agent.handlers import CommandContext, CommandFailed, discover
from monitoring_ws.agent.runner import CommandRunner
from monitoring_ws.agent.settings import AgentSettings, SettingsError, load_settings
from monitoring_ws.protocol import derive_agent_key

from .conftest import SECRET, StartServer
from .support.eventually import eventually
from .support.processes import free_port
from .support.processes import server as server_process

READER = "reader-token-0123456789"
WEB_DEPLOY = "web-deploy-token-0123456789"
DB_ONLY = "db-only-token-0123456789"
TOKENS = [
    {"name": "reader", "token": READER, "scopes": ["agents:read"]},
    {
        "name": "db-only",
        "token": DB_ONLY,
        "scopes": ["agents:read", "commands:cancel"],
        "agents": ["db-*"],
    },
    {
        "name": "web-deploy",
        "token": WEB_DEPLOY,
        "scopes": ["agents:read", "jobs:create", "commands:send:slow"],
        "agents": ["web-*"],
    },
]


class Fleet:
    """In-process agents with a ``slow`` command that notes when it runs, and a ``fail``
    command that always fails."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.runs: list[tuple[str, str, float, float]] = []  # agent, command id, start, end
        self.agents: list[Agent] = []

    def handlers(self, agent_id: str) -> dict[str, Any]:
        async def slow(args: Mapping[str, Any], context: CommandContext) -> dict[str, Any]:
            started = trio.current_time()
            await trio.sleep(float(args.get("seconds", 0.2)))
            self.runs.append((agent_id, "", started, trio.current_time()))
            return {"agent": agent_id}

        async def fail(args: Mapping[str, Any], context: CommandContext) -> None:
            raise CommandFailed("broken", f"{agent_id} cannot do it")

        return {**discover(), "slow": slow, "fail": fail}

    def start(
        self,
        nursery: trio.Nursery,
        url: str,
        agent_id: str,
        labels: Mapping[str, str],
        **extra: Any,
    ) -> None:
        settings = AgentSettings(
            url=url,
            agent_id=agent_id,
            key=derive_agent_key(SECRET, agent_id),
            labels=tuple(sorted(labels.items())),
            state_dir=self.tmp_path / "agents",
            backoff_base_s=0.1,
            backoff_cap_s=0.5,
            **extra,
        )
        agent = Agent(settings, CommandRunner(settings, self.handlers(agent_id)))
        self.agents.append(agent)
        nursery.start_soon(agent.run)

    def ran(self) -> Counter[str]:
        return Counter(agent_id for agent_id, *_ in self.runs)


async def all_connected(http: httpx.AsyncClient, count: int) -> None:
    async def check() -> bool:
        listed = (await http.get("/api/agents")).json()["agents"]
        return sum(1 for agent in listed if agent["connected"]) == count

    await eventually(check, timeout_s=60, what=f"{count} agents connected")


async def finished(http: httpx.AsyncClient, job_id: str, **params: Any) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job: dict[str, Any] = (await http.get(f"/api/jobs/{job_id}", params=params)).json()
        return job if job["state"] not in {"pending", "running"} else None

    return await eventually(check, timeout_s=120, what=f"job {job_id} ended")


def most_at_once(runs: list[tuple[str, str, float, float]]) -> int:
    edges = sorted([(start, 1) for _, _, start, _ in runs] + [(end, -1) for *_, end in runs])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


async def test_a_job_by_label_reaches_only_its_agents_five_at_a_time(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server()
    fleet = Fleet(tmp_path)
    for index in range(40):
        env = "prod" if index % 2 == 0 else "dev"
        fleet.start(nursery, server.agent_urls[0], f"web-{index:02}", {"env": env, "n": str(index)})
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 40)
        preview = (await http.get("/api/agents", params={"selector": "env=prod"})).json()
        prod = sorted(agent["agentId"] for agent in preview["agents"])
        assert len(prod) == 20
        assert all(agent["agentLabels"]["env"] == "prod" for agent in preview["agents"])

        answer = await http.post(
            "/api/jobs",
            json={"selector": "env=prod", "command": "slow", "maxConcurrency": 5},
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["jobId"]
        assert answer.headers["Location"] == f"/api/jobs/{job_id}"
        job = await finished(http, job_id, limit=100)

    assert job["state"] == "succeeded", job
    assert job["counts"]["succeeded"] == 20 == job["matched"]
    assert sorted(target["agentId"] for target in job["agents"]) == prod
    assert sorted(fleet.ran()) == prod
    assert set(fleet.ran().values()) == {1}
    assert 1 <= most_at_once(fleet.runs) <= 5
    # Every agent's command is an ordinary record, linked to the job by its id.
    records = [target["commandId"] for target in job["agents"]]
    assert all(command_id.startswith(f"{job_id}.") for command_id in records)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        kept = [(await http.get(f"/api/commands/{c}")).json() for c in records]
    assert all(record["state"] == "succeeded" for record in kept)
    assert all(record["requestedBy"]["label"] == f"job:{job_id}" for record in kept)
    # The records' own times say the same: never more than 5 at once.
    spans = [("", "", r["createdAt"] / 1000, r["finishedAt"] / 1000) for r in kept]
    assert 1 <= most_at_once(spans) <= 5


async def test_a_job_that_fails_everywhere_stops_after_max_errors(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server()
    fleet = Fleet(tmp_path)
    for index in range(8):
        fleet.start(nursery, server.agent_urls[0], f"db-{index}", {"role": "db"})
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 8)
        answer = await http.post(
            "/api/jobs",
            json={"selector": "role=db", "command": "fail", "maxConcurrency": 1, "maxErrors": 2},
        )
        assert answer.status_code == 202, answer.text
        job = await finished(http, answer.json()["jobId"])
    assert job["state"] == "stopped"
    assert job["stopReason"] == "max_errors"
    assert job["counts"]["failed"] == 3  # the third error is more than 2: no more sends
    assert job["counts"]["skipped"] == 5
    assert job["firstError"]["code"] == "broken"
    skipped = [t for t in job["agents"] if t["state"] == "skipped"]
    assert all(t["reason"] == "stopped" and "maxErrors" in t["message"] for t in skipped)


async def test_scopes_and_agent_globs_bound_a_job(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server(api_tokens=TOKENS)
    fleet = Fleet(tmp_path)
    for agent_id in ("web-1", "web-2", "db-1"):
        fleet.start(nursery, server.agent_urls[0], agent_id, {"env": "prod"})
    reader = {"Authorization": f"Bearer {READER}"}
    deploy = {"Authorization": f"Bearer {WEB_DEPLOY}"}
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30, headers=reader) as http:
        await all_connected(http, 3)
        refused = await http.post("/api/jobs", json={"selector": "env=prod", "command": "slow"})
        assert refused.status_code == 403
        assert refused.json()["error"]["scope"] == "jobs:create"
        http.headers.update(deploy)
        other = await http.post("/api/jobs", json={"selector": "env=prod", "command": "fail"})
        assert other.status_code == 403
        assert other.json()["error"]["scope"] == "commands:send:fail"
        answer = await http.post(
            "/api/jobs", json={"selector": {"glob": "*"}, "command": "slow", "maxErrors": 0}
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["jobId"]
        job = await finished(http, job_id)
        assert job["counts"]["succeeded"] == 2
        assert job["counts"]["skipped"] == 1
        # The token sees only its agents in the page; the counts say one was skipped.
        assert sorted(t["agentId"] for t in job["agents"]) == ["web-1", "web-2"]
        assert [j["jobId"] for j in (await http.get("/api/jobs")).json()["jobs"]] == [job_id]
        # A token for other agents neither sees the job nor cancels it.
        http.headers.update({"Authorization": f"Bearer {DB_ONLY}"})
        assert (await http.get(f"/api/jobs/{job_id}")).status_code == 404
        json_type = {"Content-Type": "application/json"}
        cancel = await http.delete(f"/api/jobs/{job_id}", headers=json_type)
        assert cancel.status_code == 404
        assert (await http.get("/api/jobs")).json()["jobs"] == []
        http.headers.update(reader)  # every agent: it sees the job
        assert (await http.get(f"/api/jobs/{job_id}")).json()["counts"]["skipped"] == 1
    assert sorted(fleet.ran()) == ["web-1", "web-2"]


async def test_operator_labels_are_kept_apart_and_selected(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server()
    fleet = Fleet(tmp_path)
    fleet.start(nursery, server.agent_urls[0], "web-1", {"env": "prod"})
    fleet.start(nursery, server.agent_urls[0], "web-2", {"env": "prod"})
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 2)
        changed = await http.patch(
            "/api/agents/web-1/labels", json={"labels": {"canary": "", "env": "staging"}}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["labels"] == {"env": "staging", "canary": ""}
        assert changed.json()["agentLabels"] == {"env": "prod"}
        chosen = await http.get("/api/agents", params={"selector": "env in (prod,staging),!canary"})
        assert [a["agentId"] for a in chosen.json()["agents"]] == ["web-2"]
        as_json = await http.get("/api/agents", params={"selector": '{"ids": ["web-1"]}'})
        assert [a["agentId"] for a in as_json.json()["agents"]] == ["web-1"]
        removed = await http.patch("/api/agents/web-1/labels", json={"labels": {"canary": None}})
        assert removed.json()["operatorLabels"] == {"env": "staging"}
        bad = await http.patch("/api/agents/web-1/labels", json={"labels": {"env": "no way"}})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_labels"
        unreadable = await http.get("/api/agents", params={"selector": "env in prod"})
        assert unreadable.status_code == 400
        assert unreadable.json()["error"]["code"] == "invalid_selector"
        nobody = await http.post("/api/jobs", json={"selector": "env=nowhere", "command": "ping"})
        assert nobody.status_code == 404
        assert nobody.json()["error"]["code"] == "no_agents"


def test_bad_labels_stop_the_agent_at_start(tmp_path: Path) -> None:
    config = tmp_path / "agent.json"
    config.write_text(
        '{"wsApiUrl": "ws://127.0.0.1:1/agent", "wsSecret": "s", "agentId": "a",'
        ' "labels": {"env": "prod", "bad key!": "x"}}'
    )
    with pytest.raises(SettingsError, match="labels: 'bad key!'"):
        load_settings(config)


@pytest.mark.slow
async def test_a_job_survives_kill_9_without_running_anything_twice(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = free_port()
    process = server_process(tmp_path, port)
    await trio.to_thread.run_sync(process.start)
    fleet = Fleet(tmp_path)
    url = f"ws://127.0.0.1:{port}/agent"
    try:
        for index in range(10):
            fleet.start(nursery, url, f"app-{index}", {"role": "app"})
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            await all_connected(http, 10)
            answer = await http.post(
                "/api/jobs",
                json={
                    "selector": "role=app",
                    "command": "slow",
                    "args": {"seconds": 0.6},
                    "maxConcurrency": 2,
                    "timeoutMs": 60_000,
                },
            )
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["jobId"]
            await eventually(lambda: len(fleet.runs) >= 3, what="three commands ran")
            await trio.to_thread.run_sync(process.kill)  # mid-run: two more are running
            await trio.to_thread.run_sync(process.start)
            job = await finished(http, job_id)
    finally:
        await trio.to_thread.run_sync(process.stop)
    assert job["state"] == "succeeded", job
    assert job["counts"]["succeeded"] == 10, job
    assert sorted(fleet.ran()) == [f"app-{index}" for index in range(10)]
    assert set(fleet.ran().values()) == {1}, fleet.ran()  # nobody ran it twice
