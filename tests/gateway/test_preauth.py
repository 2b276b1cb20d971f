"""Bounded before authentication: small first frames, failures keyed by address and agent
id, per-address caps, a trusted proxy's X-Forwarded-For, slow bodies and TLS handshakes."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from monitoring_ws.gateway.admission import Admission
from monitoring_ws.gateway.config import ConfigError
from monitoring_ws.host.config import ServerSettings
from monitoring_ws.host.serving.forwarded import client_address
from monitoring_ws.protocol import CloseCode, derive_agent_key, parse_retry_after

from ..conftest import StartServer
from ..support.eventually import eventually, open_connections
from ..support.observe import counters, open_connections_now
from .agents import agent_address, close_code, first_frame_close, open_agent
from .test_agent_endpoint import HELLO, signed

pytestmark = pytest.mark.usefixtures("agent_listener")  # both listeners


def junk_first_frame(size: int) -> str:
    """A first frame full of exponent floats: the costliest JSON to read."""
    numbers = ",".join(["1.2345678901234567e-300"] * (size // 24))
    return json.dumps({"type": "auth", "payload": {"x": 0}})[:-1] + f', "pad": [{numbers}]}}'


async def test_first_frame_limit(start_server: StartServer) -> None:
    running = await start_server()
    url = running.agent_urls[0]
    code, _ = await first_frame_close(url, junk_first_frame(1 << 20))
    assert code == CloseCode.MESSAGE_TOO_BIG
    code, _ = await first_frame_close(url, junk_first_frame(20 << 10))
    assert code == CloseCode.MESSAGE_TOO_BIG
    # An ordinary auth frame is far below 16 KiB; after it, frames may be 1 MiB again.
    async with open_agent(url, "agent-big") as agent:
        await agent.send(agent.session.metrics({"blob": "x" * 500_000}, int(time.time() * 1000)))
        await agent.send(agent.session.heartbeat(int(time.time() * 1000)))
        await agent.events()  # answered: the big frame was taken
    assert (await counters(running.api_url))["closed_1009"] == 2


async def test_malformed_first_frames_count_as_failures(start_server: StartServer) -> None:
    running = await start_server(address_failures_per_minute=3)
    url = running.agent_urls[0]
    for junk in ("not json", "{}", junk_first_frame(20 << 10)):
        code, _ = await first_frame_close(url, junk)
        assert code in {CloseCode.MALFORMED, CloseCode.MESSAGE_TOO_BIG}
    await open_connections(running.api_url, 0)
    code, reason = await first_frame_close(url, signed("auth", HELLO))
    assert code == CloseCode.TOO_MANY_ATTEMPTS
    assert parse_retry_after(reason or "") is not None


async def test_one_bad_agent_does_not_lock_out_its_neighbours(start_server: StartServer) -> None:
    running = await start_server(auth_failures_per_minute=3)
    url = running.agent_urls[0]
    wrong = derive_agent_key("wrong secret", "agent-x")
    for _ in range(3):
        code, _ = await first_frame_close(url, signed("auth", HELLO, key=wrong))
        assert code == CloseCode.AUTH_FAILED
    await open_connections(running.api_url, 0)
    code, reason = await first_frame_close(url, signed("auth", HELLO, key=wrong))
    assert code == CloseCode.TOO_MANY_ATTEMPTS
    assert 1 <= (parse_retry_after(reason or "") or 0) <= 60
    # The neighbour behind the same address is not affected.
    async with open_agent(url, "agent-neighbour") as agent:
        assert agent.ws.closed is None


async def test_unauthenticated_sockets_are_capped_per_address(start_server: StartServer) -> None:
    """Through a trusted proxy, each forwarded address has its own cap."""
    running = await start_server(max_unauthenticated_per_address=2, trusted_proxies=("127.0.0.1",))
    url = running.agent_urls[0]
    attacker = [(b"X-Forwarded-For", b"198.51.100.7")]
    async with trio.open_nursery() as nursery:
        held = trio.Event()

        async def hold() -> None:
            async with open_websocket_url(url, connect_timeout=5, extra_headers=attacker):
                await held.wait()

        nursery.start_soon(hold)
        nursery.start_soon(hold)

        # Both held open, unauthenticated.
        async def both_held() -> bool:
            return await open_connections_now(running.api_url) >= 2

        await eventually(both_held, timeout_s=5)
        async with open_websocket_url(url, connect_timeout=5, extra_headers=attacker) as third:
            assert await close_code(third) == CloseCode.TOO_MANY_ATTEMPTS
        # Another address (and the proxy's own connections) still come in.
        async with open_agent(url, "agent-ok") as agent:
            assert agent.ws.closed is None
        held.set()


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "1.1.1.1, 203.0.113.9", "203.0.113.9"),  # the left entry is forgeable
        ("127.0.0.1", "203.0.113.9, 10.0.0.2", "203.0.113.9"),  # an inner proxy skipped
        ("127.0.0.1", "10.0.0.2", "127.0.0.1"),  # only proxies: count the proxy
        ("127.0.0.1", "nonsense", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # not a trusted proxy: header ignored
    ],
)
def test_client_address(peer: str, header: str | None, expected: str) -> None:
    proxies = ServerSettings(trusted_proxies=("127.0.0.0/8", "10.0.0.0/8")).proxy_networks()
    assert client_address(peer, header, proxies) == expected


def test_bad_proxy_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        ServerSettings(trusted_proxies=("not-an-address",)).check()


def test_admission_tables_are_bounded() -> None:
    admission = Admission(10, 1)
    for i in range(70_000):
        assert admission.admit("a", 0.0) is None
        admission.left_unauthenticated("a", f"agent-{i}", 0.0, failed=False)
    assert admission.unauthenticated == 0
    for i in range(70_000):
        admission.admit(f"10.{i}", 0.0)
        admission.left_unauthenticated(f"10.{i}", f"agent-{i}", 0.0, failed=True)
    assert len(admission._agent_failures._times) <= 65_536
    assert len(admission._address_failures._times) <= 65_536
    assert admission._by_address == {}


async def test_slow_http_body_is_cut(start_server: StartServer) -> None:
    running = await start_server(http_body_timeout_s=0.5)
    targets = (
        (running.api_url, "/api/websocket/agents/x/command"),
        (running.api_url, "/api/agents/x/commands"),
        (running.agent_urls[0], "/enroll"),
    )
    for url, path in targets:
        stream = await trio.open_tcp_stream(*agent_address(url))
        async with stream:
            await stream.send_all(
                f"POST {path} HTTP/1.1\r\nHost: localhost\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            with trio.fail_after(30):  # a hang guard: the body never completes
                answer = await stream.receive_some(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer


async def test_a_malformed_body_on_the_agent_listener_is_400(start_server: StartServer) -> None:
    """Broken chunked encoding to ``/enroll``: 400, and the listener serves on."""
    running = await start_server()
    for _ in range(2):
        stream = await trio.open_tcp_stream(*agent_address(running.agent_urls[0]))
        async with stream:
            await stream.send_all(
                b"POST /enroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                b"\r\nTransfer-Encoding: chunked\r\n\r\nnot-a-chunk-size\r\n\r\n"
            )
            with trio.fail_after(5):
                answer = await stream.receive_some(4096)
            assert answer.startswith(b"HTTP/1.1 400"), answer
    async with open_agent(running.agent_urls[0], "still-served"):
        pass


async def test_stalled_tls_handshake_is_cut(start_server: StartServer) -> None:
    running = await start_server(tls_self_signed=True, tls_handshake_timeout_s=0.5)
    address = agent_address(running.agent_urls[0])

    def stall() -> bytes:
        # No ClientHello: the server must hang up by itself (the timeout only catches a hang).
        with socket.create_connection(address, timeout=30) as sock:
            return sock.recv(1)

    assert await trio.to_thread.run_sync(stall) == b""


async def test_records_name_the_address_a_trusted_proxy_forwarded(
    start_server: StartServer,
) -> None:
    running = await start_server(trusted_proxies=("127.0.0.1",))
    async with (
        httpx.AsyncClient(base_url=running.api_url) as http,
        open_agent(running.agent_urls[0], "agent-fwd") as agent,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(agent.serve_commands)
        answer = await http.post(
            "/api/websocket/agents/agent-fwd/command",
            json={"command": "ping"},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
        assert answer.status_code == 200, answer.text
        record = (await http.get(f"/api/websocket/commands/{answer.json()['commandId']}")).json()
        assert record["requestedBy"]["address"] == "203.0.113.7"
        nursery.cancel_scope.cancel()


async def test_a_head_of_long_blank_runs_is_refused_and_costs_no_seconds(
    start_server: StartServer,
) -> None:
    """``X:`` + blanks + NUL sent h11's header pattern into quadratic backtracking (16 s of
    CPU for 60 KB); guarded, each listener refuses it at once and serves on."""
    running = await start_server()
    for url, path, blanks in (
        (running.api_url, "/api/agents", 60_000),
        (running.agent_urls[0], "/enroll", 15_000),  # the agents' head limit is 16 KiB
        (running.agent_urls[0], "/agent", 15_000),  # an upgrade: wsproto's h11 reads it
    ):
        stream = await trio.open_tcp_stream(*agent_address(url))
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n".encode()
                + b"X:"
                + b" " * blanks
                + b"\x00\r\n\r\n"
            )
            with trio.fail_after(30):  # a hang guard only
                answer = await stream.receive_some(4096)
            assert answer.startswith(b"HTTP/1.1 400"), answer
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{running.api_url}/healthz")).status_code == 200
    async with open_agent(running.agent_urls[0], "still-served"):
        pass
