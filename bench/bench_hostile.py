"""A legitimate fleet under attack, against a real ``monitoring-ws serve`` process.

    .venv/bin/python bench/bench_hostile.py [--agents 200] [--seconds 10]

200 agents answer commands from one caller, measured alone, then while an attacker
process (all loopback, bounded in time) holds 2,000 idle unauthenticated sockets from eight
addresses of 127.0.1.0/24 that reopen when closed, 100 slow HTTP clients dribble request
bodies, and four senders stream 1 MiB junk first frames. One JSON line: the caller's
p50/p99 alone and under attack, how many agents stayed connected, what the attackers did.

``HOSTILE_ATTACKS=worst`` is another attack: one authenticated agent (it holds a real
key) sends, back to back, the costliest frames its limits allow: metrics of nested small
integers (``[[0]],[[0]],...``, ~1 us of server CPU a value), ``HOSTILE_WORST_VALUES``
values each (default 60,000; 400,000 fill the 1 MiB frame limit where no value limit
stops them).

Server and attackers on CPU 0 (attackers at nice 19: their own work is not the server's),
fleet and caller on CPU 1. Environment: ``HOSTILE_ATTACKS=idle,slow,junk`` picks attacks
(``control`` sends the junk to a discarding sink instead of the server),
``HOSTILE_JUNK_SENDERS`` (4), ``HOSTILE_ATTACK_CPU`` (0), ``HOSTILE_ATTACK_NICE`` (19).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.frame_protocol import FrameProtocol
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from fleet import (
    SECRET,
    BenchAgent,
    HttpCaller,
    emit,
    listener_args,
    now_ms,
    raise_open_file_limit,
    start_server,
    summary,
)
from monitoring_ws.protocol import derive_agent_key

ATTACK_ADDRESSES = [f"127.0.1.{i}" for i in range(1, 9)]
#: One masked frame of 1 MiB of exponent floats, encoded once: the attackers spend their
#: CPU on sending, not on masking in Python.
JUNK = FrameProtocol(client=True, extensions=[]).send_data(
    json.dumps({"type": "auth", "pad": ["1.2345678901234567e-300"] * 41_000}), fin=True
)


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


async def _open_ws(host: str, port: int, source: str) -> tuple[trio.SocketStream, WSConnection]:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect((host, port))
    stream = trio.SocketStream(sock)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=host, target="/agent")))
    return stream, ws


async def idle_socket(host: str, port: int, source: str, stats: Counter[str]) -> None:
    """Open, upgrade, say nothing; when the server closes it, open again."""
    while True:
        try:
            stream, _ = await _open_ws(host, port, source)
            async with stream:
                stats["idle_opened"] += 1
                while await stream.receive_some(4096):
                    pass
        except (OSError, trio.BrokenResourceError):
            stats["idle_refused"] += 1
        await trio.sleep(0.2)


async def junk_sender(host: str, port: int, stats: Counter[str]) -> None:
    """1 MiB first frames full of exponent floats, one after another."""
    while True:
        try:
            stream, ws = await _open_ws(host, port, "127.0.2.1")
            async with stream:
                ws.receive_data(await stream.receive_some(4096))  # the upgrade's answer
                if not any(isinstance(e, AcceptConnection) for e in ws.events()):
                    stats["junk_refused"] += 1
                    continue
                await stream.send_all(JUNK)
                stats["junk_frames"] += 1
                while await stream.receive_some(4096):
                    pass
        except (OSError, trio.BrokenResourceError, RemoteProtocolError):
            stats["junk_cut"] += 1  # RemoteProtocolError: closed before the upgrade's answer
        await trio.sleep(0.05)


def worst_frames(agent_id: str, values: int, count: int) -> list[str]:
    """Signed metrics frames of ``values`` nested small integers each, built around one
    canonical payload (the attacker spends nothing on canonicalizing)."""
    from monitoring_ws.protocol import random_nonce, sign  # noqa: PLC0415

    key = derive_agent_key(SECRET, agent_id)
    payload = b'{"pad":[' + b",".join([b"[[0]]"] * (values // 3)) + b"]}"
    frames, ts = [], now_ms()
    for _ in range(count):
        nonce = random_nonce()
        signing_input = b'{"agentId":"%s","nonce":"%s","payload":%s,"ts":%d,"type":"metrics"}' % (
            agent_id.encode(),
            nonce.encode(),
            payload,
            ts,
        )
        signature = sign(key, signing_input).encode()
        frame = (
            signing_input[:-1].replace(b',"ts":', b',"signature":"%s","ts":' % signature, 1) + b"}"
        )
        frames.append(frame.decode())
    return frames


async def _drain(agent: BenchAgent) -> None:
    while True:  # what the server sends (heartbeat answers, the close)
        await agent.next_events()


async def worst_sender(host: str, port: int, stats: Counter[str]) -> None:
    """One authenticated agent sending the costliest frames it may, as fast as it may;
    it reconnects when closed (4429 or 1009) and starts again."""
    values = int(os.environ.get("HOSTILE_WORST_VALUES", "60000"))
    frames = worst_frames("worst-1", values, 100)
    while True:
        agent = BenchAgent(host, port, "worst-1")
        try:
            await agent.connect()
            stats["worst_connected"] += 1
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, agent)
                for frame in frames:  # each nonce once
                    await agent.send_raw(agent.encode(frame))
                    stats["worst_frames"] += 1
                await trio.sleep_forever()
        except* (ConnectionError, OSError, trio.BrokenResourceError, LocalProtocolError) as group:
            for exc in group.exceptions:
                stats[f"worst_closed {str(exc).partition('closed ')[2][:24] or 'socket'}"] += 1
            frames = worst_frames("worst-1", values, 100)  # fresh nonces
        finally:
            await agent.aclose()
        await trio.sleep(0.05)


async def control_sender(stats: Counter[str]) -> None:
    """The control: the same 1 MiB frames to a sink that only discards them, in this
    process, on the same CPU. What it costs the caller is the traffic's, not the server's."""

    async def discard(stream: trio.SocketStream) -> None:
        while await stream.receive_some(1 << 16):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, discard, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        while True:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(JUNK)
                stats["control_frames"] += 1
            await trio.sleep(0.05)


async def slow_body(host: str, port: int, stats: Counter[str]) -> None:
    """A POST whose body comes one byte a second; reconnect when cut."""
    while True:
        try:
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    b"POST /api/websocket/agents/x/command HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                )
                stats["slow_opened"] += 1
                while True:
                    await stream.send_all(b" ")
                    with trio.move_on_after(1):
                        if await stream.receive_some(4096):
                            stats["slow_cut"] += 1
                            break
        except (OSError, trio.BrokenResourceError):
            stats["slow_cut"] += 1
        await trio.sleep(0.2)


async def measure(api: tuple[str, int], agents: int, seconds: float) -> list[float]:
    http = HttpCaller(*api)
    await http.connect()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        status, _ = await http.post(
            f"/api/websocket/agents/legit-{i % agents}/command", b'{"command": "ping"}'
        )
        if status == 200:
            latencies.append(time.perf_counter() - start)
        i += 1
    return latencies


async def run(api_url: str, ws_url: str, agents: int, seconds: float) -> dict[str, Any]:
    host, port = host_port(ws_url)
    api = host_port(api_url)
    fleet = [BenchAgent(host, port, f"legit-{i}") for i in range(agents)]
    for agent in fleet:
        await agent.connect()
    dropped: list[str] = []
    stats: Counter[str] = Counter()

    async def serve(agent: BenchAgent) -> None:
        try:
            await agent.answer_commands()
        except (ConnectionError, OSError, trio.BrokenResourceError):
            dropped.append(agent.agent_id)

    async with trio.open_nursery() as fleet_nursery:
        for agent in fleet:
            fleet_nursery.start_soon(serve, agent)
        await measure(api, agents, 1.0)  # warm up
        alone = await measure(api, agents, seconds)
        # The attackers run in their own process, so that their work never stalls the
        # caller's event loop (which would be measured as the server's latency).
        attacker = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--attack", ws_url, api_url, str(seconds + 4)],
            stdout=subprocess.PIPE,
        )
        await trio.sleep(3)  # the attack in full swing
        under_attack = await measure(api, agents, seconds)
        assert attacker.stdout is not None
        output = b""
        async for chunk in attacker.stdout:
            output += chunk
        await attacker.wait()
        stats.update(json.loads(output))
        fleet_nursery.cancel_scope.cancel()
    a, b = summary(alone), summary(under_attack)
    return {
        "agents": agents,
        "alone_requests": len(alone),
        "alone_p50_ms": a["p50_ms"],
        "alone_p99_ms": a["p99_ms"],
        "attack_requests": len(under_attack),
        "attack_p50_ms": b["p50_ms"],
        "attack_p99_ms": b["p99_ms"],
        "p99_ratio": round(b["p99_ms"] / a["p99_ms"], 2),
        "agents_connected": agents - len(dropped),
        "attack": dict(sorted(stats.items())),
    }


async def attack(ws_url: str, api_url: str, seconds: float) -> None:
    """The attackers alone, for ``seconds``; their counts as one JSON line."""
    host, port = host_port(ws_url)
    api = host_port(api_url)
    stats: Counter[str] = Counter()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            kinds = os.environ.get("HOSTILE_ATTACKS", "idle,slow,junk").split(",")
            for i in range(2000 * ("idle" in kinds)):
                source = ATTACK_ADDRESSES[i % len(ATTACK_ADDRESSES)]
                nursery.start_soon(idle_socket, host, port, source, stats)
            for _ in range(100 * ("slow" in kinds)):
                nursery.start_soon(slow_body, *api, stats)
            senders = int(os.environ.get("HOSTILE_JUNK_SENDERS", "4"))
            for _ in range(senders * ("junk" in kinds)):
                nursery.start_soon(junk_sender, host, port, stats)
            for _ in range(senders * ("control" in kinds)):
                nursery.start_soon(control_sender, stats)
            if "worst" in kinds:
                nursery.start_soon(worst_sender, host, port, stats)
    print(json.dumps(stats), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--attack"]:
        # The attackers share the server's CPU, not the caller's: on loopback the sender's
        # CPU also does the receiving side's TCP work, which would otherwise be charged to
        # the measured caller (docs/security.md).
        os.sched_setaffinity(0, {int(os.environ.get("HOSTILE_ATTACK_CPU", "0"))})
        # At the lowest priority: a real attacker's own work runs on its own machines, so
        # here it should take only what the server leaves (HOSTILE_ATTACK_NICE=0: equal).
        os.nice(int(os.environ.get("HOSTILE_ATTACK_NICE", "19")))
        raise_open_file_limit()
        trio.run(attack, sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--listener",
        choices=["combined", "lean", "hypercorn"],
        default="combined",
        help="agents (and attackers) on the API's port, or on agent_listen (lean or Hypercorn)",
    )
    parser.add_argument(
        "--api",
        choices=["hypercorn", "lean"],
        help="what serves the API's port (api_server; default: the server's default)",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    raise_open_file_limit()
    gc.freeze()
    machine = f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}"
    process, api_url, ws_url = start_server(*listener_args(args.listener, api=args.api))
    try:
        result = trio.run(run, api_url, ws_url, args.agents, args.seconds)
    finally:
        process.terminate()
        process.wait(timeout=30)
    api = args.api or "default"
    emit({"bench": "hostile", **result, "listener": args.listener, "api": api, "machine": machine})


if __name__ == "__main__":
    main()
