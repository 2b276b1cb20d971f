"""The ``channels`` extension's sans-IO core (docs/protocol.md 11.6): the ``channel``
message, binary data frames bound to a session and a direction, the windows of flow
control, the table of a connection's channels, and the negotiation in both sessions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring_ws.protocol import (
    FEATURE_CHANNELS,
    AgentSession,
    AuthHello,
    Capabilities,
    ChannelClosed,
    ChannelControl,
    ChannelControlReceived,
    ChannelDataReceived,
    ChannelTable,
    CloseConnection,
    Keyring,
    MemoryReplayWindow,
    MessageType,
    ProtocolError,
    SendFrame,
    ServerConfig,
    ServerSession,
    ShellParams,
    TunnelParams,
    derive_agent_key,
    seal,
)
from monitoring_ws.protocol.channels import (
    HEADER_BYTES,
    MAX_DATA,
    TAG_BYTES,
    ChannelData,
    ChannelViolation,
    ChannelWindow,
    Direction,
    SendWindow,
    open_data,
    seal_data,
)

KEY = derive_agent_key("peer-benchmark-master-secret", "agent-001")
SESSION = "3f0c2a1e-5b6d-4c7e-9f80-1a2b3c4d5e6f"
VECTORS = [
    (
        Direction.SERVER_TO_AGENT,
        b"echo $((6*7))\r",
        "01010000000700000000000000016563686f20242828362a3729290d"
        "206a95ebabf78d621e16678af444b44a84f0765f991771ccc5738dc3c4264002",
    ),
    (
        Direction.AGENT_TO_SERVER,
        b"42\r\n",
        "010200000007000000000000000134320d0a"
        "15f7f6038d4c3481cc91cef65ddcd260a825dee7596bfe283145373605689ed8",
    ),
]


@pytest.mark.parametrize(("direction", "data", "frame"), VECTORS)
def test_the_channel_vectors_of_protocol_md(direction: Direction, data: bytes, frame: str) -> None:
    sealed = seal_data(KEY, SESSION, direction, channel_id=7, seq=1, data=data)
    assert sealed.hex() == frame
    assert open_data(KEY, SESSION, direction, sealed) == ChannelData(7, 1, data)
    document = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    assert frame in document.replace("\n", "").replace(" ", "")


@given(st.integers(0, 2**32 - 1), st.integers(1, 2**64 - 1), st.binary(max_size=2048))
def test_a_frame_opens_to_what_was_sealed(channel_id: int, seq: int, data: bytes) -> None:
    frame = seal_data(
        KEY, SESSION, Direction.AGENT_TO_SERVER, channel_id=channel_id, seq=seq, data=data
    )
    assert len(frame) == HEADER_BYTES + len(data) + TAG_BYTES
    assert open_data(KEY, SESSION, Direction.AGENT_TO_SERVER, frame) == ChannelData(
        channel_id, seq, data
    )


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_changed_byte_is_refused(data: bytes, draw: st.DataObject) -> None:
    frame = bytearray(
        seal_data(KEY, SESSION, Direction.SERVER_TO_AGENT, channel_id=1, seq=1, data=data)
    )
    index = draw.draw(st.integers(0, len(frame) - 1))
    frame[index] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(ProtocolError):
        open_data(KEY, SESSION, Direction.SERVER_TO_AGENT, bytes(frame))


def test_a_frame_is_valid_on_one_session_one_way_with_one_key() -> None:
    frame = seal_data(KEY, SESSION, Direction.SERVER_TO_AGENT, channel_id=1, seq=1, data=b"ls\r")
    with pytest.raises(ProtocolError, match="wrong direction"):
        open_data(KEY, SESSION, Direction.AGENT_TO_SERVER, frame)  # reflected back
    with pytest.raises(ProtocolError, match="does not verify") as other_session:
        open_data(KEY, "another-session", Direction.SERVER_TO_AGENT, frame)  # replayed later
    assert other_session.value.code == 4401
    with pytest.raises(ProtocolError, match="does not verify"):
        open_data(b"k" * 32, SESSION, Direction.SERVER_TO_AGENT, frame)
    with pytest.raises(ProtocolError, match="shorter") as short:
        open_data(KEY, SESSION, Direction.SERVER_TO_AGENT, frame[:20])
    assert short.value.code == 4400
    with pytest.raises(ProtocolError) as big:
        open_data(KEY, SESSION, Direction.SERVER_TO_AGENT, b"\x01" * (MAX_DATA + 100))
    assert big.value.code == 1009
    with pytest.raises(ValueError, match="at most"):
        seal_data(
            KEY, SESSION, Direction.SERVER_TO_AGENT, channel_id=1, seq=1, data=bytes(MAX_DATA + 1)
        )


def test_the_receivers_window_takes_frames_in_order_within_the_grant_until_the_end() -> None:
    window = ChannelWindow(10)
    assert window.receive(ChannelData(1, 1, b"12345")) == b"12345"
    with pytest.raises(ChannelViolation, match="expected 2"):
        window.receive(ChannelData(1, 3, b"x"))  # a frame skipped or replayed
    with pytest.raises(ChannelViolation, match="past a window of 5"):
        window.receive(ChannelData(1, 2, b"123456"))
    window.grant(5)
    assert window.receive(ChannelData(1, 2, b"123456")) == b"123456"
    assert window.receive(ChannelData(1, 3, b"")) == b""  # the sender's end
    with pytest.raises(ChannelViolation, match="after the end"):
        window.receive(ChannelData(1, 4, b"x"))


@given(st.lists(st.integers(1, 3 * MAX_DATA), max_size=20), st.integers(0, MAX_DATA))
def test_a_sender_that_keeps_to_its_window_is_never_refused(
    writes: list[int], initial: int
) -> None:
    sender, receiver = SendWindow(initial), ChannelWindow(initial)
    for write in writes:
        left = write
        while left:
            seq, size = sender.take(left)
            if seq == 0:  # the window is spent: the receiver reads and grants
                sender.granted(MAX_DATA)
                receiver.grant(MAX_DATA)
                continue
            assert receiver.receive(ChannelData(1, seq, bytes(size))) == bytes(size)
            left -= size
    with pytest.raises(ChannelViolation):
        sender.granted(SendWindow.MAX + 1)


NONCE = "3b241101-e2bb-4255-8caf-4136c566a962"
CONTROL_VECTORS = [
    (
        ChannelControl(
            "open", 7, "shell", 1 << 20, ShellParams(120, 40, "xterm-256color"), "alice"
        ),
        "4005670cda3c0d9d951a18a60d8b5d0f091c76dc48552a825eae096ae32820f7",
    ),
    (
        ChannelControl("open", 8, "tunnel", 1 << 20, TunnelParams("127.0.0.1", 5432)),
        "4349da6a63630927f6b10457ac152174b9b842bb3dc45795f90f9016af0ef2b2",
    ),
    (
        ChannelControl.close(7, "exit", exit_code=0),
        "8ff1f77b0c01eb676016d85c32004014c97c846c2a10e150616364d16429ced8",
    ),
]


@pytest.mark.parametrize(("control", "signature"), CONTROL_VECTORS)
def test_the_channel_message_vectors_of_protocol_md(
    control: ChannelControl, signature: str
) -> None:
    payload = control.to_payload()
    assert ChannelControl.from_payload(payload) == control
    envelope = seal(
        MessageType.CHANNEL, "agent-001", payload, key=KEY, ts=1732550400000, nonce=NONCE
    )
    assert envelope.signature == signature
    document = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    assert envelope.signing_input().decode() in document
    assert signature in document


@pytest.mark.parametrize(
    ("payload", "member"),
    [
        ({"op": "dance", "channelId": 1}, "op"),
        ({"op": "window", "channelId": 0, "bytes": 1}, "channelId"),
        ({"op": "window", "channelId": True, "bytes": 1}, "channelId"),
        ({"op": "window", "channelId": 1, "bytes": 2**31 + 1}, "bytes"),
        ({"op": "open", "channelId": 1, "kind": "vnc", "window": 1, "params": {}}, "kind"),
        ({"op": "open", "channelId": 1, "kind": "shell", "window": 1, "params": []}, "params"),
        (
            {"op": "open", "channelId": 1, "kind": "shell", "window": 1, "params": {"cols": 0}},
            "cols",
        ),
        (
            {
                "op": "open",
                "channelId": 1,
                "kind": "shell",
                "window": 1,
                "params": {"term": "x;rm -rf"},
            },
            "term",
        ),
        (
            {
                "op": "open",
                "channelId": 1,
                "kind": "tunnel",
                "window": 1,
                "params": {"host": "a b", "port": 1},
            },
            "host",
        ),
        (
            {
                "op": "open",
                "channelId": 1,
                "kind": "tunnel",
                "window": 1,
                "params": {"host": "db", "port": 70000},
            },
            "port",
        ),
        ({"op": "close", "channelId": 1, "reason": "bored"}, "reason"),
        ({"op": "close", "channelId": 1, "reason": "exit", "exitCode": 999}, "exitCode"),
        ({"op": "close", "channelId": 1, "reason": "error", "message": "x" * 1025}, "message"),
    ],
)
def test_a_bad_channel_message_is_refused_naming_the_member(
    payload: dict[str, object], member: str
) -> None:
    with pytest.raises(ProtocolError, match=member) as refused:
        ChannelControl.from_payload(payload)
    assert refused.value.code == 4400


def _open_both() -> tuple[ChannelTable, ChannelTable, int]:
    server, agent = ChannelTable(opener=True, window=100), ChannelTable(opener=False, window=100)
    opened = server.open("tunnel", TunnelParams("127.0.0.1", 5432))
    assert agent.on_control(opened) is opened  # the agent acts on it
    assert server.on_control(agent.accept(opened.channel_id)) is None
    return server, agent, opened.channel_id


def test_a_table_carries_bytes_within_windows_and_grants_them_back() -> None:
    server, agent, channel = _open_both()
    seq, size = server.take(channel, 250)
    assert (seq, size) == (1, 100)  # the agent's window
    assert server.take(channel, 1) == (0, 0)  # spent: wait for a grant
    assert agent.on_data(ChannelData(channel, seq, bytes(size))) == bytes(size)
    assert agent.consumed(channel, 10) is None  # less than a quarter: no grant yet
    grant = agent.consumed(channel, 90)
    assert grant == ChannelControl("window", channel, size=100)
    assert server.on_control(grant) is None
    assert server.sendable(channel) == 100


def test_a_table_closes_a_channel_whose_peer_breaks_its_rules() -> None:
    server, agent, channel = _open_both()
    closing = agent.on_data(ChannelData(channel, 1, bytes(101)))  # past the window
    assert isinstance(closing, ChannelControl)
    assert (closing.op, closing.reason) == ("close", "violation")
    assert channel not in agent
    assert agent.on_data(ChannelData(channel, 2, b"x")) is None  # after the close: dropped
    with pytest.raises(ProtocolError, match="never opened") as never:
        agent.on_data(ChannelData(channel + 5, 1, b"x"))
    assert never.value.code == 4400
    with pytest.raises(ProtocolError, match="opened twice"):
        agent.on_control(ChannelControl("open", channel, "shell", 10, ShellParams()))
    assert isinstance(
        server.on_control(ChannelControl.close(channel, "refused", "no")), ChannelClosed
    )
    assert server.take(channel, 1) == (0, 0)
    refused = server.on_control(ChannelControl("open", 9, "shell", 10, ShellParams()))
    assert isinstance(refused, ChannelControl)
    assert refused.reason == "refused"  # agents open nothing on a server
    resize = ChannelControl("resize", 1, cols=1, rows=1)
    server2, _, channel2 = _open_both()
    assert isinstance(
        server2.on_control(ChannelControl("resize", channel2, cols=1, rows=1)), ChannelControl
    )
    del resize


def test_an_agent_refuses_channels_past_its_limit() -> None:
    agent = ChannelTable(opener=False, max_open=1)
    assert agent.on_control(ChannelControl("open", 1, "shell", 10, ShellParams())).op == "open"
    limited = agent.on_control(ChannelControl("open", 2, "shell", 10, ShellParams()))
    assert isinstance(limited, ChannelControl)
    assert limited.reason == "limit"
    server = ChannelTable(opener=True, max_open=1)
    server.open("shell", ShellParams())
    with pytest.raises(RuntimeError, match="1 channels are open"):
        server.open("shell", ShellParams())


def _sessions(*, agent_offers: bool, server_offers: bool) -> tuple[ServerSession, AgentSession]:
    features = (FEATURE_CHANNELS,) if agent_offers else ()
    hello = AuthHello("1.0", "host", Capabilities(("ping",), features))
    agent = AgentSession(agent_id="agent-001", key=KEY, hello=hello)
    config = ServerConfig(features=frozenset({FEATURE_CHANNELS} if server_offers else set()))
    server = ServerSession(
        Keyring(("peer-benchmark-master-secret",)),
        opened_at_ms=0,
        session_id=SESSION,
        config=config,
    )
    events = server.receive(agent.start(1000), 1000, MemoryReplayWindow())
    reply = next(event for event in events if isinstance(event, SendFrame))
    agent.receive(reply.text, 1000)
    return server, agent


def test_channels_are_spoken_only_when_both_offer_them() -> None:
    server, agent = _sessions(agent_offers=True, server_offers=True)
    assert server.speaks_channels
    assert agent.speaks_channels
    opened = ChannelControl("open", 1, "shell", 100, ShellParams())
    [received] = agent.receive(server.channel(opened, 2000), 2000)
    assert received == ChannelControlReceived(received.envelope, opened)
    frame = agent.seal_channel_data(1, 1, b"hello")
    assert server.receive(frame, 2000, MemoryReplayWindow()) == [
        ChannelDataReceived(ChannelData(1, 1, b"hello"))
    ]
    back = server.seal_channel_data(1, 1, b"42")
    assert agent.receive(back, 2000) == [ChannelDataReceived(ChannelData(1, 1, b"42"))]
    for agent_offers, server_offers in ((True, False), (False, True)):
        server, agent = _sessions(agent_offers=agent_offers, server_offers=server_offers)
        assert not server.speaks_channels
        assert not agent.speaks_channels
        with pytest.raises(RuntimeError, match="not negotiated"):
            server.channel(opened, 2000)
        [closed] = server.receive(b"\x01" + bytes(60), 2000, MemoryReplayWindow())
        assert isinstance(closed, CloseConnection)
        assert closed.code == 1003  # a binary frame, as in protocol v1


def test_a_channel_message_without_the_extension_closes_4400() -> None:
    server, _ = _sessions(agent_offers=False, server_offers=True)
    payload = ChannelControl("window", 1, size=10).to_payload()
    frame = seal(
        MessageType.CHANNEL, "agent-001", payload, key=KEY, ts=2000, nonce=NONCE
    ).to_frame()
    [closed] = server.receive(frame, 2000, MemoryReplayWindow())
    assert isinstance(closed, CloseConnection)
    assert closed.code == 4400
