"""The ``ack`` and ``cancel`` extensions in the sans-IO core: numbers, the ledger, and both
sessions (docs/protocol.md, section 11)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring_ws.protocol import (
    FEATURE_ACK,
    FEATURE_CANCEL,
    AckReceived,
    AgentSession,
    AuthHello,
    CancelReceived,
    Capabilities,
    CloseCode,
    CloseConnection,
    Delivery,
    DeliveryLedger,
    HeartbeatAnswered,
    LogsReceived,
    MemoryReplayWindow,
    MessageType,
    MetricsReceived,
    ProtocolError,
    SendFrame,
    ServerConfig,
    ServerSession,
    delivery_of,
)

from .support import AGENT, KEY, NOW
from .test_sessions import server

BOTH = frozenset({FEATURE_ACK, FEATURE_CANCEL})


def _open_pair(
    server_features: frozenset[str], agent_features: tuple[str, ...]
) -> tuple[ServerSession, AgentSession, MemoryReplayWindow]:
    hello = AuthHello("1.0.0", "web-01", Capabilities(("ping",), agent_features))
    agt = AgentSession(agent_id=AGENT, key=KEY, hello=hello)
    srv = server(features=server_features)
    window = MemoryReplayWindow()
    events = srv.receive(agt.start(NOW), NOW, window)
    [reply] = [e.text for e in events if isinstance(e, SendFrame)]
    agt.receive(reply, NOW)
    return srv, agt, window


# -- numbers -------------------------------------------------------------------------------


@given(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", fullmatch=True), st.integers(1, 2**53 - 1)
)
def test_valid_numbers_round_trip(stream: str, seq: int) -> None:
    delivery = Delivery(stream, seq)
    assert delivery_of({"delivery": delivery.to_payload()}) == delivery


@pytest.mark.parametrize(
    "bad",
    [
        {"stream": "s", "seq": 0},
        {"stream": "s", "seq": -1},
        {"stream": "s", "seq": True},
        {"stream": "s", "seq": 1.5},
        {"stream": "s", "seq": 2**53},
        {"stream": "", "seq": 1},
        {"stream": "-s", "seq": 1},
        {"stream": "s" * 129, "seq": 1},
        {"seq": 1},
        "s:1",
        [],
    ],
)
def test_malformed_numbers_are_schema_errors(bad: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        delivery_of({"delivery": bad})
    assert caught.value.code is CloseCode.MALFORMED


def test_a_payload_without_a_number_has_none() -> None:
    assert delivery_of({"cpu": 1}) is None


# -- the ledger ------------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from(["a1", "a2"]), st.sampled_from(["s1", "s2"]), st.integers(1, 30)),
        max_size=200,
    )
)
def test_the_ledger_admits_exactly_what_is_new(sends: list[tuple[str, str, int]]) -> None:
    """Against a model: per agent, new iff another stream or a higher number than seen."""
    ledger, model = DeliveryLedger(), {}
    for agent_id, stream, seq in sends:
        mark = model.get(agent_id)
        expected = mark is None or mark[0] != stream or seq > mark[1]
        if expected:
            model[agent_id] = (stream, seq)
        assert ledger.admit(agent_id, Delivery(stream, seq)) is expected
    for agent_id, (stream, seq) in model.items():
        assert ledger.mark(agent_id) == Delivery(stream, seq)


@given(st.integers(1, 50), st.lists(st.integers(0, 50), max_size=10))
def test_an_outbox_resent_after_reconnects_is_kept_once(
    produced: int, acked_points: list[int]
) -> None:
    """An agent sends 1..n in order; after each reconnect it re-sends from its last ack."""
    ledger = DeliveryLedger()
    sent = list(range(1, produced + 1))
    for point in acked_points:
        sent += list(range(min(point, produced) + 1, produced + 1))  # the unacked tail again
    kept = [seq for seq in sent if ledger.admit("agent", Delivery("s", seq))]
    assert kept == list(range(1, produced + 1))


def test_stored_marks_seed_the_ledger() -> None:
    ledger = DeliveryLedger({"a": Delivery("s", 7)})
    assert not ledger.admit("a", Delivery("s", 7))
    assert ledger.admit("a", Delivery("s", 8))
    assert list(ledger) == ["a"]
    assert len(ledger) == 1


# -- sessions ------------------------------------------------------------------------------


def test_ack_is_in_force_only_when_both_sides_offer_it() -> None:
    assert _open_pair(BOTH, (FEATURE_ACK,))[0].features == (FEATURE_ACK,)
    assert _open_pair(BOTH, ())[0].features == ()
    assert _open_pair(frozenset(), (FEATURE_ACK,))[0].features == ()
    _, agt, _ = _open_pair(BOTH, (FEATURE_ACK, FEATURE_CANCEL, "zstd"))
    assert agt.reply is not None
    assert agt.reply.features == (FEATURE_ACK, FEATURE_CANCEL)


def test_numbered_messages_carry_their_number_and_metrics_lose_it() -> None:
    srv, agt, window = _open_pair(BOTH, (FEATURE_ACK,))
    number = {"stream": "s", "seq": 3}
    metrics = agt.message(MessageType.METRICS, {"cpu": 1, "delivery": number}, NOW)
    [event] = srv.receive(metrics, NOW, window)
    assert isinstance(event, MetricsReceived)
    assert event.delivery == Delivery("s", 3)
    assert event.metrics.values == {"cpu": 1}
    logs = agt.message(MessageType.LOG, {"entries": [], "delivery": number}, NOW)
    [event] = srv.receive(logs, NOW, window)
    assert isinstance(event, LogsReceived)
    assert event.delivery == Delivery("s", 3)


def test_without_ack_a_delivery_member_is_just_data() -> None:
    srv, agt, window = _open_pair(frozenset(), (FEATURE_ACK,))
    metrics = agt.message(MessageType.METRICS, {"delivery": {"seq": "x"}}, NOW)
    [event] = srv.receive(metrics, NOW, window)
    assert isinstance(event, MetricsReceived)
    assert event.delivery is None
    assert event.metrics.values == {"delivery": {"seq": "x"}}


def test_a_malformed_number_closes_with_4400() -> None:
    srv, agt, window = _open_pair(BOTH, (FEATURE_ACK,))
    result = {"commandId": "c", "ok": True, "durationMs": 1, "delivery": {"stream": "s"}}
    [event] = srv.receive(agt.message(MessageType.COMMAND_RESULT, result, NOW), NOW, window)
    assert isinstance(event, CloseConnection)
    assert event.code is CloseCode.MALFORMED


def test_the_agent_hears_acks_from_ack_frames_and_heartbeat_answers() -> None:
    srv, agt, window = _open_pair(BOTH, (FEATURE_ACK,))
    assert agt.receive(srv.ack(Delivery("s", 5), NOW), NOW) == [AckReceived(Delivery("s", 5))]
    events = srv.receive(agt.heartbeat(NOW), NOW, window)
    [answer] = [e.text for e in events if isinstance(e, SendFrame)]
    assert agt.receive(answer, NOW) == [HeartbeatAnswered(NOW), AckReceived(Delivery("s", 5))]


def test_the_agent_hears_a_cancel() -> None:
    srv, agt, _ = _open_pair(BOTH, (FEATURE_CANCEL,))
    assert agt.receive(srv.cancel("cmd-1", NOW), NOW) == [CancelReceived("cmd-1")]


def test_an_agent_may_not_send_server_types() -> None:
    srv, agt, window = _open_pair(BOTH, (FEATURE_ACK,))
    forged = agt._seal_now(MessageType.ACK, {"stream": "s", "seq": 1}, NOW)
    [event] = srv.receive(forged, NOW, window)
    assert isinstance(event, CloseConnection)
    assert event.code is CloseCode.MALFORMED


def test_frames_need_an_open_session() -> None:
    closed = ServerSession(
        server().keyring, opened_at_ms=NOW, session_id="x", config=ServerConfig()
    )
    with pytest.raises(RuntimeError):
        closed.ack(Delivery("s", 1), NOW)
    with pytest.raises(RuntimeError):
        closed.cancel("c", NOW)


def test_a_known_stream_skips_only_the_pattern_check() -> None:
    assert delivery_of({"delivery": {"stream": "s-1", "seq": 2}}, "s-1") == Delivery("s-1", 2)
    for bad in ({"seq": 1}, {"stream": None, "seq": 1}, {"stream": "s-1", "seq": 0}):
        with pytest.raises(ProtocolError):
            delivery_of({"delivery": bad}, "s-1")
    with pytest.raises(ProtocolError):
        delivery_of({"delivery": {"stream": "bad stream", "seq": 1}}, "s-1")
