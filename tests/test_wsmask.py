"""wsaccel's C masker against wsproto's own: byte for byte, over any masking key, payload
and split of the payload into chunks (frames arrive in pieces)."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from wsaccel.xormask import XorMaskerSimple as CMasker
from wsproto import ConnectionType, WSConnection, frame_protocol
from wsproto.events import AcceptConnection, Request, TextMessage

from monitoring_ws.host.serving.wsmask import PYTHON_MASKER as PythonMasker
from monitoring_ws.host.serving.wsmask import accelerate_masking

from .gateway.agents import open_agent
from .support import examples, processes


@settings(max_examples=examples(1000))
@given(
    key=st.binary(min_size=4, max_size=4),
    payload=st.binary(max_size=2000),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_the_c_masker_is_byte_equal(key: bytes, payload: bytes, cuts: list[int]) -> None:
    assert PythonMasker is not CMasker  # wsproto's own, even after the swap
    python, c = PythonMasker(key), CMasker(key)
    edges = [0, *sorted(cut % (len(payload) + 1) for cut in cuts), len(payload)]
    chunks = [payload[a:b] for a, b in itertools.pairwise(edges)]
    assert b"".join(bytes(c.process(chunk)) for chunk in chunks) == b"".join(
        bytes(python.process(bytearray(chunk))) for chunk in chunks
    )


def test_wsproto_uses_it_and_still_reads_frames() -> None:
    assert accelerate_masking()
    assert frame_protocol.XorMaskerSimple is CMasker
    # A client (masking) and a server (unmasking) connection, end to end through wsproto.

    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/agent")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    text = "é" * 300 + '{"type":"metrics"}'
    server.receive_data(client.send(TextMessage(text)))
    assert "".join(e.data for e in server.events() if isinstance(e, TextMessage)) == text


async def test_a_server_without_wsaccel_unmasks_in_python(tmp_path: Path) -> None:
    """wsaccel is optional (``[speedups]``): a server that cannot import it says so and
    serves agents all the same."""
    hidden = tmp_path / "no-wsaccel"
    hidden.mkdir()
    # Imported at start-up: ``import wsaccel`` then raises ImportError, as when absent.
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['wsaccel'] = None\n")
    port = processes.free_port()
    server = processes.server(tmp_path, port)
    server.env = {**server.env, "PYTHONPATH": str(hidden)}
    await trio.to_thread.run_sync(server.start)
    try:
        async with open_agent(f"ws://127.0.0.1:{port}/agent", "plain-1") as agent:
            assert agent.ws.closed is None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                listed = (await http.get("/api/agents")).json()["agents"]
        assert [a["agentId"] for a in listed if a["connected"]] == ["plain-1"]
    finally:
        await trio.to_thread.run_sync(server.stop)
    assert "wsaccel is not installed: frames are unmasked in pure Python" in (
        server.log.read_text()
    )
