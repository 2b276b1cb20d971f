"""The ``channels`` draft's sans-IO core (docs/protocol.md 11.6): binary data frames bound
to a session and a direction, and the windows of flow control. Not negotiated yet."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring_ws.protocol import ProtocolError, derive_agent_key
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
