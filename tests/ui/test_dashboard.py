"""The dashboard in a real browser: Playwright driving Debian's Chromium against a real
server process with real agents, 10,000 more agents in its state database (offline), and
API tokens on. Screenshots of each view go to ``MONITORING_WS_SCREENSHOTS`` when it is
set (``./dev screenshots`` points it at docs/img), else to the test's temp dir."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright

from monitoring_ws.gateway.store import StateStore
from monitoring_ws.protocol.ed25519 import key_id as key_id_of
from monitoring_ws.protocol.ed25519 import public_key

from ..support.processes import Process, agent, free_port, server

TOKEN = "dashboard-test-token-0123456789"
CHROMIUM = (
    os.environ.get("MONITORING_WS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
OFFLINE_FLEET = 10_000
WAIT_MS = 20_000


def _seed_offline_fleet(state_dir: Path) -> None:
    """10,000 agents the server last saw a day ago (its ``seen`` table), so every listing
    and the fleet table carry a fleet of that size."""
    state_dir.mkdir(mode=0o700)
    store = StateStore(state_dir / "state.sqlite3")
    seen_ms = 1_764_000_000_000
    for index in range(OFFLINE_FLEET):
        store.put_seen(f"fleet-{index:05d}", seen_ms + index)
    trio.run(store.commit)
    store.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("dashboard")
    _seed_offline_fleet(tmp / "server-state")
    port = free_port()
    # A 3 s heartbeat: an agent silent for 6 s is stale, at 9 s it is closed.
    config = tmp / "monitoring.toml"
    config.write_text("[plugins.websocket]\nheartbeat_interval_ms = 3000\n", encoding="utf-8")
    process = server(tmp, port, "--config", str(config))
    process.env["MONITORING_WS_API_TOKENS"] = TOKEN
    process.start()
    agents: dict[str, Process] = {}
    for name in ("web-1", "web-2", "web-3"):
        (tmp / f"{name}-app.log").touch()
        agents[name] = agent(
            tmp,
            port,
            name,
            metricsIntervalS=0.5,
            logFiles=[str(tmp / f"{name}-app.log")],
            logBatchIntervalS=0.2,
            allowedCommands=["sleep 30", "echo hello", "sh -c re:.*"],
            labels={"role": "db" if name == "web-3" else "web"},
            sessions={"shell": name == "web-1", "program": "/bin/sh"},
        )
    try:
        for running in agents.values():
            running.start()
        yield {"url": f"http://127.0.0.1:{port}", "agents": agents, "tmp": tmp}
    finally:
        for running in agents.values():
            running.stop()
        process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: ./dev test installs it (apt-get install chromium)")
    asyncio.set_event_loop(None)  # Playwright's sync API runs its own loop
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, fleet: dict[str, object]) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, base_url=str(fleet["url"])
    )
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda exc: problems.append(str(exc)))
    opened.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    try:
        yield opened
    finally:
        context.close()
    # A CSP violation or a script error shows up here; expected HTTP errors do not count.
    assert [p for p in problems if "Failed to load resource" not in p] == []


def _shoot(page: Page, name: str, tmp: Path) -> None:
    folder = Path(os.environ.get("MONITORING_WS_SCREENSHOTS") or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / f"dashboard-{name}.png")


def _log_in(page: Page, path: str = "/ui") -> None:
    page.goto(path)
    page.fill("#token", TOKEN)
    page.click("#login-form button")


def test_the_fleet_view_lists_agents_of_every_state(page: Page, fleet: dict[str, object]) -> None:
    _log_in(page)
    counts = page.locator(".counts")
    expect(counts).to_contain_text(f"{OFFLINE_FLEET + 3} agents", timeout=WAIT_MS)
    expect(counts).to_contain_text(f"{OFFLINE_FLEET} offline")
    # Virtualised: a window of rows exists, not 10,002.
    assert 10 < page.locator(".row").count() < 120
    # Sorted by state: connected, stale, offline; again: the other way round.
    page.click("button[data-sort=state]")
    expect(page.locator(".row").first).to_have_attribute("data-state", "connected")
    page.click("button[data-sort=state]")
    expect(page.locator(".row").first).to_have_attribute("data-state", "offline")
    page.fill("input[type=search]", "web-")
    expect(counts).to_contain_text("3 shown")
    for name in ("web-1", "web-2", "web-3"):
        expect(page.locator(f'.row[data-agent="{name}"]')).to_have_attribute(
            "data-state", "connected", timeout=WAIT_MS
        )
    expect(page.locator('.row[data-agent="web-1"] .num').first).to_contain_text(
        "%", timeout=WAIT_MS
    )
    _shoot(page, "fleet", fleet["tmp"])  # type: ignore[arg-type]
    page.fill("input[type=search]", "role=db")
    expect(counts).to_contain_text("1 shown")
    page.fill("input[type=search]", "fleet-09999")
    expect(page.locator('.row[data-agent="fleet-09999"]')).to_have_attribute(
        "data-state", "offline"
    )


def test_a_wrong_token_is_refused_and_a_right_one_works(page: Page) -> None:
    page.goto("/ui")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-why")).to_contain_text("needs an API token")
    page.fill("#token", "not-the-right-token-at-all")
    page.click("#login-form button")
    expect(page.locator("#login-why")).to_contain_text("The token was refused (401 unauthorized)")
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    expect(page.locator(".counts")).to_contain_text(f"{OFFLINE_FLEET + 3} agents", timeout=WAIT_MS)
    expect(page.locator("#login")).to_be_hidden()


def test_the_agent_view_charts_live_points(page: Page, fleet: dict[str, object]) -> None:
    _log_in(page, "/ui#/agents/web-1")
    expect(page.locator("#agent-state")).to_have_text("connected", timeout=WAIT_MS)
    expect(page.locator("dl.meta")).to_contain_text("role=web")
    for chart in ("cpu", "memory", "disk", "load"):
        points = page.locator(f'[data-chart="{chart}"]')
        expect(points).not_to_have_attribute("data-points", "0", timeout=WAIT_MS)
    cpu = page.locator('[data-chart="cpu"]')
    first = int(cpu.get_attribute("data-points") or 0)
    # (wait_for_function would evaluate a string: the page's CSP forbids that, rightly)
    deadline = time.monotonic() + WAIT_MS / 1000
    while int(cpu.get_attribute("data-points") or 0) <= first and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert int(cpu.get_attribute("data-points") or 0) > first
    assert cpu.locator("polyline").get_attribute("points")
    expect(page.locator("[data-session]").first).to_contain_text("open")
    # The log tail follows the agent's file.
    tmp: Path = fleet["tmp"]  # type: ignore[assignment]
    with (tmp / "web-1-app.log").open("a") as app_log:
        app_log.write(
            "GET /health 200 3ms\nPOST /orders 201 41ms\nERROR payment gateway timed out\n"
        )
    expect(page.locator("#logs")).to_contain_text("payment gateway timed out", timeout=WAIT_MS)
    page.select_option("#chart-window", "60000")
    expect(cpu).to_contain_text("last 1 min")
    _shoot(page, "agent", fleet["tmp"])  # type: ignore[arg-type]


def test_a_ping_from_the_console_shows_its_result(page: Page, fleet: dict[str, object]) -> None:
    _log_in(page, "/ui#/agents/web-1")
    page.select_option("#console-command", "ping", timeout=WAIT_MS)
    page.click("#console-send")
    expect(page.locator("#console-state")).to_have_attribute(
        "data-state", "succeeded", timeout=WAIT_MS
    )
    expect(page.locator("#console-output .result")).to_contain_text('"pong": true')
    # run's output is shown as text: as it comes (the default), the first line before the
    # command ends...
    page.select_option("#console-command", "run")
    page.fill("#console-args", '{"command": "sh -c \\"echo one; sleep 5; echo two\\""}')
    page.click("#console-send")
    expect(page.locator("#console-stream")).to_have_text("one\n", timeout=WAIT_MS)
    expect(page.locator("#console-state")).to_have_attribute("data-state", "sent")
    expect(page.locator("#console-stream")).to_have_text("one\ntwo\n", timeout=WAIT_MS)
    expect(page.locator("#console-state")).to_have_attribute(
        "data-state", "succeeded", timeout=WAIT_MS
    )
    _shoot(page, "console", fleet["tmp"])  # type: ignore[arg-type]
    # ... or all at once with the result.
    page.uncheck("#console-stream-output")
    page.fill("#console-args", '{"command": "echo hello"}')
    page.click("#console-send")
    expect(page.locator("#console-output .stdout")).to_have_text("hello\n", timeout=WAIT_MS)


def test_a_shell_in_the_browser_answers_and_its_recording_replays(
    page: Page, fleet: dict[str, object]
) -> None:
    _log_in(page, "/ui#/agents/web-1")
    expect(page.locator("#agent-state")).to_have_text("connected", timeout=WAIT_MS)
    page.click("#shell-open")
    expect(page.locator("#shell-status")).to_contain_text("connected", timeout=WAIT_MS)
    page.locator("#shell-screen .xterm").click()
    page.keyboard.type("echo $((6*7))")
    page.keyboard.press("Enter")
    expect(page.locator("#shell-screen .xterm-rows")).to_contain_text("42", timeout=WAIT_MS)
    _shoot(page, "shell", fleet["tmp"])  # type: ignore[arg-type]
    page.keyboard.type("exit 4")
    page.keyboard.press("Enter")
    expect(page.locator("#shell-status")).to_contain_text("exit 4", timeout=WAIT_MS)
    replay = page.locator("tr[data-recording] button.replay").first
    expect(replay).to_be_visible(timeout=WAIT_MS)
    replay.click()
    expect(page.locator("#replay-screen .xterm-rows")).to_contain_text("42", timeout=WAIT_MS)


def test_a_shell_the_agent_refuses_says_why(page: Page) -> None:
    _log_in(page, "/ui#/agents/web-2")
    expect(page.locator("#agent-state")).to_have_text("connected", timeout=WAIT_MS)
    page.click("#shell-open")
    expect(page.locator("#shell-status")).to_contain_text(
        "shell sessions are off on this agent", timeout=WAIT_MS
    )


def test_a_refused_command_shows_the_api_error(page: Page) -> None:
    _log_in(page, "/ui#/agents/web-1")
    page.select_option("#console-command", "ping", timeout=WAIT_MS)
    page.fill("#console-timeout", "0")
    page.click("#console-send")
    expect(page.locator("#console-error")).to_contain_text(
        "400 bad_request: timeoutMs: 0 is less than the minimum of 1", timeout=WAIT_MS
    )


def test_a_command_sent_without_waiting_is_followed_and_cancelled(page: Page) -> None:
    _log_in(page, "/ui#/agents/web-1")
    page.select_option("#console-command", "run", timeout=WAIT_MS)
    page.fill("#console-args", '{"command": "sleep 30"}')
    page.fill("#console-timeout", "60000")
    page.uncheck("#console-wait")
    page.click("#console-send")
    expect(page.locator("#console-state")).to_have_attribute("data-state", "sent", timeout=WAIT_MS)
    page.click("#console-cancel")
    expect(page.locator("#console-state")).to_have_attribute(
        "data-state", "cancelled", timeout=WAIT_MS
    )
    expect(page.locator("#console-cancel")).to_be_hidden()


def test_the_history_lists_commands_linked_to_agents(page: Page, fleet: dict[str, object]) -> None:
    _log_in(page, "/ui#/commands?agentId=web-1")
    rows = page.locator("tr[data-command]")
    expect(rows.first).to_be_visible(timeout=WAIT_MS)
    page.select_option("select[name=state]", "succeeded")
    page.click("#history-filters button[type=submit]")
    expect(page.locator('tr[data-command][data-state="succeeded"]').first).to_be_visible()
    expect(page.locator('tr[data-command][data-state="cancelled"]')).to_have_count(0)
    _shoot(page, "commands", fleet["tmp"])  # type: ignore[arg-type]
    page.locator("tr[data-command] a", has_text="web-1").first.click()
    expect(page).to_have_url(f"{fleet['url']}/ui#/agents/web-1")


def test_the_jobs_page_composes_runs_and_follows_a_job(
    page: Page, fleet: dict[str, object]
) -> None:
    _log_in(page, "/ui#/jobs")
    page.fill("#job-selector", "role=web")
    expect(page.locator("#job-preview")).to_contain_text(
        "matches 2 agents (2 connected)", timeout=WAIT_MS
    )
    page.fill("#job-command", "ping")
    page.fill("#job-concurrency", "1")
    page.click("#job-run")
    expect(page).to_have_url(re.compile(r"/ui#/jobs/j[0-9a-f]+$"), timeout=WAIT_MS)
    expect(page.locator("#job-state")).to_have_attribute("data-state", "succeeded", timeout=WAIT_MS)
    rows = page.locator("#job-agents tr[data-agent]")
    expect(rows).to_have_count(2)
    expect(page.locator('#job-agents tr[data-agent="web-1"]')).to_have_attribute(
        "data-state", "succeeded"
    )
    expect(page.locator('#job-agents tr[data-agent="web-3"]')).to_have_count(0)
    _shoot(page, "job", fleet["tmp"])  # type: ignore[arg-type]
    page.click("header a[data-nav=jobs]")
    expect(page.locator("tr[data-job]").first).to_have_attribute("data-state", "succeeded")


def test_a_job_is_cancelled_from_its_page(page: Page) -> None:
    _log_in(page, "/ui#/jobs")
    page.fill("#job-selector", '{"ids": ["web-1", "web-2"]}')
    page.fill("#job-command", "run")
    page.fill("#job-args", '{"command": "sleep 30"}')
    page.fill("#job-concurrency", "1")
    page.click("#job-run")
    state = page.locator("#job-state")
    expect(state).to_have_attribute("data-state", "running", timeout=WAIT_MS)
    expect(page.locator('#job-agents tr[data-state="sent"]')).to_have_count(1, timeout=WAIT_MS)
    page.click("#job-cancel")
    expect(state).to_have_attribute("data-state", "cancelled", timeout=WAIT_MS)
    expect(page.locator('#job-agents tr[data-state="cancelled"]')).to_have_count(2)
    expect(page.locator("#job-cancel")).to_be_hidden()


def test_a_job_the_server_refuses_shows_why(page: Page) -> None:
    _log_in(page, "/ui#/jobs")
    page.fill("#job-selector", "role in (nothing")
    page.fill("#job-command", "ping")
    page.click("#job-run")
    expect(page.locator("#job-error")).to_contain_text("400 bad_request", timeout=WAIT_MS)


def test_an_agent_that_stops_turns_offline(page: Page, fleet: dict[str, object]) -> None:
    _log_in(page)
    page.fill("input[type=search]", "web-2")
    row = page.locator('.row[data-agent="web-2"]')
    expect(row).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    fleet["agents"]["web-2"].kill()  # type: ignore[index]
    expect(row).to_have_attribute("data-state", "offline", timeout=WAIT_MS)


def test_a_frozen_agent_turns_stale_and_back(page: Page, fleet: dict[str, object]) -> None:
    _log_in(page)
    page.fill("input[type=search]", "web-3")
    row = page.locator('.row[data-agent="web-3"]')
    expect(row).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    frozen: Process = fleet["agents"]["web-3"]  # type: ignore[index]
    os.kill(frozen.pid, signal.SIGSTOP)  # silent, its socket still open
    try:
        expect(row).to_have_attribute("data-state", "stale", timeout=WAIT_MS)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    expect(row).to_have_attribute("data-state", "connected", timeout=WAIT_MS)


def test_the_console_signs_with_a_key_made_in_the_browser(
    page: Page, fleet: dict[str, object]
) -> None:
    """Step 18: an Ed25519 key made in Chromium (WebCrypto, non-extractable, IndexedDB)
    signs the console's ping; an agent that requires operator signatures and trusts only
    that key runs it, and refuses the same ping unsigned."""
    _log_in(page, "/ui#/agents/web-1")
    page.click("#operator-key-create", timeout=WAIT_MS)
    public = page.locator("#operator-key-public").inner_text(timeout=WAIT_MS)
    key_id = page.locator("#operator-key-id").inner_text()
    assert public.startswith("ed25519:")
    url = str(fleet["url"])
    strict = agent(
        fleet["tmp"],  # type: ignore[arg-type]
        int(url.rsplit(":", 1)[1]),
        "signed-1",
        operatorKeys=[public],
        requireOperatorSignature=True,
    )
    strict.start()
    try:
        page.goto("/ui#/agents/signed-1")
        expect(page.locator("#agent-state")).to_have_text("connected", timeout=WAIT_MS)
        page.select_option("#console-command", "ping", timeout=WAIT_MS)
        page.uncheck("#console-stream-output")
        page.click("#console-send")
        expect(page.locator("#console-state")).to_have_attribute(
            "data-state", "succeeded", timeout=WAIT_MS
        )
        expect(page.locator("#console-output .result")).to_contain_text('"pong": true')
        _shoot(page, "signed", fleet["tmp"])  # type: ignore[arg-type]
        answer = page.request.get(
            "/api/commands?agentId=signed-1", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        [record] = answer.json()["commands"]
        assert record["intent"]["signatures"][0]["keyId"] == key_id  # the browser's key
        assert record["intent"]["intent"]["agents"] == ["signed-1"]
        # A job from the jobs page: one signature for the agents its selector names.
        page.goto("/ui#/jobs")
        page.fill("#job-selector", '{"ids": ["signed-1"]}')
        page.fill("#job-command", "ping")
        page.click("#job-run")
        expect(page.locator("#job-state")).to_have_attribute(
            "data-state", "succeeded", timeout=WAIT_MS
        )
        page.goto("/ui#/agents/signed-1")
        page.select_option("#console-command", "ping", timeout=WAIT_MS)
        page.uncheck("#console-stream-output")
        # The same ping without the key: the agent refuses it, by name.
        page.click("#operator-key-forget")
        expect(page.locator("#operator-key-create")).to_be_visible()
        page.click("#console-send")
        expect(page.locator("#console-output")).to_contain_text(
            "operator_signature_required", timeout=WAIT_MS
        )
        # A key from `ctl keys create` imported here: the same key id as ctl's; the agent
        # does not trust it.
        seed = bytes(range(32))
        page.fill("#operator-key-seed", base64.b64encode(seed).decode())
        page.click("#operator-key-import")
        expect(page.locator("#operator-key-id")).to_have_text(key_id_of(public_key(seed)))
        page.click("#console-send")
        expect(page.locator("#console-output")).to_contain_text(
            "operator_signature_untrusted", timeout=WAIT_MS
        )
    finally:
        strict.stop()
