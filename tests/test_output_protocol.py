"""The ``output`` extension's sans-IO parts: the payload, the decoder that cuts a byte
stream into chunks, the negotiation in both sessions, and docs/protocol.md's vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring_ws.protocol import (
    FEATURE_ACK,
    FEATURE_OUTPUT,
    AgentSession,
    AuthHello,
    Capabilities,
    CloseConnection,
    Command,
    CommandOutputReceived,
    Keyring,
    MemoryReplayWindow,
    MessageType,
    ProtocolError,
    RateLimit,
    SendFrame,
    ServerConfig,
    ServerSession,
    derive_agent_key,
    seal,
)
from monitoring_ws.protocol.output import (
    MAX_CHUNK_BYTES,
    CommandOutput,
    OutputDecoder,
    chunk_bytes_for,
)

NONCE = "3b241101-e2bb-4255-8caf-4136c566a962"
VECTORS = [
    (
        MessageType.COMMAND,
        Command("cmd-42", "run", {"command": "uptime"}, 30000, stream_output=True).to_payload(),
        "ce8525bee2ab11208140e0ae5792c4eed84b1972581b4be7042b0dba1410ab79",
    ),
    (
        MessageType.COMMAND_OUTPUT,
        {
            **CommandOutput("cmd-42", "stdout", 1, 0, "12:00 up 3 days\n").to_payload(),
            "delivery": {"stream": "s-1", "seq": 7},
        },
        "976fc32bfaa728911652f456a2aee1791dcba604684dd5ed6e13a81017e5df0e",
    ),
    (
        MessageType.COMMAND_OUTPUT,
        CommandOutput("cmd-42", "stderr", 2, 0, "/w==", binary=True).to_payload(),
        "f0e28dcb89665cce97f4ba474ed90e9dcd57b0b13b5335961f63b0ac1e100d91",
    ),
]


@pytest.mark.parametrize(("kind", "payload", "signature"), VECTORS)
def test_the_output_vectors_of_protocol_md(
    kind: MessageType, payload: dict[str, object], signature: str
) -> None:
    key = derive_agent_key("peer-benchmark-master-secret", "agent-001")
    envelope = seal(kind, "agent-001", payload, key=key, ts=1732550400000, nonce=NONCE)
    assert envelope.signature == signature
    document = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    assert envelope.signing_input().decode() in document
    assert signature in document


def test_a_command_asks_for_its_output_only_when_it_says_so() -> None:
    plain = Command("c-1", "run", {}, 1000)
    assert "streamOutput" not in plain.to_payload()  # protocol v1's command, unchanged
    assert Command.from_payload(plain.to_payload()).stream_output is False
    asked = Command("c-1", "run", {}, 1000, stream_output=True)
    assert Command.from_payload(asked.to_payload()) == asked
    with pytest.raises(ProtocolError, match="streamOutput"):
        Command.from_payload({**plain.to_payload(), "streamOutput": "yes"})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"stream": "stdin"}, "stream"),
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"offset": -1}, "offset"),
        ({"base64": "AA=="}, "exactly one"),
        ({"text": None}, "exactly one"),
        ({"text": "x" * (MAX_CHUNK_BYTES + 1)}, "text"),
        ({"commandId": "../x"}, "commandId"),
    ],
)
def test_a_bad_chunk_is_refused_with_the_member_named(
    change: dict[str, object], reason: str
) -> None:
    payload = {"commandId": "c-1", "stream": "stdout", "seq": 1, "offset": 0, "text": "hi"}
    payload = {k: v for k, v in {**payload, **change}.items() if v is not None}
    with pytest.raises(ProtocolError, match=reason):
        CommandOutput.from_payload(payload)


def test_base64_must_be_base64() -> None:
    payload = {"commandId": "c-1", "stream": "stdout", "seq": 1, "offset": 0, "base64": "***"}
    with pytest.raises(ProtocolError, match="base64"):
        CommandOutput.from_payload(payload)
    ok = CommandOutput.from_payload({**payload, "base64": base64.b64encode(b"\xff\x00").decode()})
    assert (ok.raw(), ok.size) == (b"\xff\x00", 2)


@given(st.lists(st.binary(max_size=300), max_size=20), st.booleans())
def test_the_decoder_keeps_every_byte_in_order(pieces: list[bytes], utf8: bool) -> None:
    """Whatever the cuts, the chunks put together are the bytes fed, their offsets count
    them, text chunks are whole UTF-8 and every chunk fits a payload."""
    if utf8:  # text cut anywhere, even inside a character
        printable = (bytes(b for b in p if b >= 0x20) for p in pieces)
        whole = "".join(p.decode("latin-1") + "é€😀\n" for p in printable).encode()
        step = max(1, len(whole) // max(1, len(pieces)))
        pieces = [whole[i : i + step] for i in range(0, len(whole), step)]
    decoder = OutputDecoder("stdout")
    out = bytearray()
    for index, piece in enumerate(pieces):
        for offset, data, binary in decoder.feed(piece, final=index == len(pieces) - 1):
            assert offset == len(out)
            chunk = CommandOutput("c", "stdout", 1, offset, data, binary)
            CommandOutput.from_payload(chunk.to_payload())  # valid on the wire
            out += chunk.raw()
    if pieces:
        assert bytes(out) == b"".join(pieces)
        assert decoder.offset == len(out)
    if utf8 and pieces:
        assert all(not binary for _, _, binary in OutputDecoder("x").feed(b"".join(pieces)))


def test_control_characters_go_as_base64_which_is_smaller() -> None:
    [(_, data, binary)] = OutputDecoder("stdout").feed(b"\x01" * 100, final=True)
    assert binary
    assert base64.b64decode(data) == b"\x01" * 100


def test_chunks_fit_the_smallest_frame_a_server_may_announce() -> None:
    assert chunk_bytes_for(1 << 20) == MAX_CHUNK_BYTES
    small = chunk_bytes_for(4096)
    assert small * 4 // 3 + 1024 <= 4096


def _sessions(
    agent_features: tuple[str, ...], rate: RateLimit | None = None
) -> tuple[AgentSession, ServerSession, MemoryReplayWindow]:
    keyring = Keyring(("secret-for-output-tests",))
    key = keyring.keys_for("a-1", None)[0]
    hello = AuthHello("1", "h", Capabilities((), agent_features))
    agent = AgentSession(agent_id="a-1", key=key, hello=hello)
    server = ServerSession(
        keyring,
        opened_at_ms=1_000_000,
        session_id="s",
        config=ServerConfig(features=frozenset({FEATURE_ACK, FEATURE_OUTPUT}), output_rate=rate),
    )
    window = MemoryReplayWindow()
    events = server.receive(agent.start(1_000_000), 1_000_000, window)
    reply = next(e for e in events if isinstance(e, SendFrame))
    agent.receive(reply.text, 1_000_000)
    return agent, server, window


def test_the_reply_announces_the_budget_only_to_an_agent_that_offers_output() -> None:
    agent, _, _ = _sessions((FEATURE_ACK, FEATURE_OUTPUT), RateLimit(1e9, 5000, 1))
    assert agent.reply is not None
    assert FEATURE_OUTPUT in agent.reply.features
    assert agent.reply.output_bytes_per_s == 5000
    seed, _, _ = _sessions((FEATURE_ACK,), RateLimit(1e9, 5000, 1))
    assert seed.reply is not None
    assert seed.reply.output_bytes_per_s is None
    assert "outputBytesPerS" not in seed.reply.to_payload()


def test_output_from_an_agent_that_did_not_negotiate_it_closes_4400() -> None:
    agent, server, window = _sessions((FEATURE_ACK,))
    chunk = CommandOutput("c-1", "stdout", 1, 0, "hi").to_payload()
    [event] = server.receive(
        agent.message(MessageType.COMMAND_OUTPUT, chunk, 1_000_001), 1_000_001, window
    )
    assert isinstance(event, CloseConnection)
    assert event.code == 4400


def test_output_has_its_own_budget_past_which_the_server_closes_4429() -> None:
    agent, server, window = _sessions((FEATURE_ACK, FEATURE_OUTPUT), RateLimit(1e9, 2000, 1))
    text = "x" * 600
    received = 0
    for seq in range(1, 10):
        chunk = CommandOutput("c-1", "stdout", seq, 0, text).to_payload()
        frame = agent.message(MessageType.COMMAND_OUTPUT, chunk, 1_000_001)
        [event] = server.receive(frame, 1_000_001, window)
        if isinstance(event, CloseConnection):
            assert event.code == 4429
            break
        assert isinstance(event, CommandOutputReceived)
        assert event.output.data == text
        received += 1
    assert 1 <= received < 9  # two seconds' worth pass (1 s of burst), then the close
    assert json.loads(frame)["type"] == "command_output"


def test_a_chunk_of_commas_goes_as_base64_so_the_frame_is_never_refused() -> None:
    """A receiver counts ``,[{`` as JSON values before parsing (65,536 at most)."""
    [(_, data, binary)] = OutputDecoder("stdout").feed(b"," * MAX_CHUNK_BYTES, final=True)
    assert binary
    assert base64.b64decode(data) == b"," * MAX_CHUNK_BYTES
    [(_, _, binary)] = OutputDecoder("stdout").feed(b"a,b\n" * 100, final=True)
    assert not binary
