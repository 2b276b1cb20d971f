"""Both session state machines, fed frames and times: every close-code path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from monitoring_ws.protocol import (
    AgentConfig,
    AgentSession,
    AgentState,
    AuthAccepted,
    Authenticated,
    AuthHello,
    Capabilities,
    CloseCode,
    CloseConnection,
    Command,
    CommandReceived,
    CommandResult,
    CommandResultReceived,
    DuplicateDropped,
    Event,
    HeartbeatAnswered,
    HeartbeatReceived,
    Keyring,
    Limits,
    LogEntry,
    LogsReceived,
    MemoryReplayWindow,
    MessageType,
    MetricsReceived,
    ReplayVerdict,
    SendFrame,
    ServerConfig,
    ServerSession,
    ServerState,
    derive_agent_key,
    parse_retry_after,
    seal,
)

from .support import AGENT, HELLO, KEY, NOW, SECRET, frame, nonce

HB = 30_000


def server(**config: Any) -> ServerSession:
    return ServerSession(
        Keyring([SECRET]),
        opened_at_ms=NOW,
        session_id="s-1",
        config=ServerConfig(**config),
    )


def agent(**kwargs: Any) -> AgentSession:
    hello = AuthHello("1.0.0", "web-01", Capabilities(("ping",), ("acks", "zstd")))
    return AgentSession(agent_id=AGENT, key=KEY, hello=hello, **kwargs)


def close_of(events: list[Event]) -> CloseConnection:
    assert len(events) == 1
    assert isinstance(events[0], CloseConnection), events
    return events[0]


def frames_of(events: list[Event]) -> list[str]:
    return [e.text for e in events if isinstance(e, SendFrame)]


def opened(window: MemoryReplayWindow | None = None, **config: Any) -> ServerSession:
    session = server(**config)
    events = session.receive(frame("auth", HELLO), NOW, window or MemoryReplayWindow())
    assert isinstance(events[-1], Authenticated)
    return session


def connect(
    window: MemoryReplayWindow | None = None, **config: Any
) -> tuple[ServerSession, AgentSession, MemoryReplayWindow]:
    """A server and an agent session that completed the handshake with each other."""
    window = window or MemoryReplayWindow()
    srv, agt = server(**config), agent()
    events = srv.receive(agt.start(NOW), NOW, window)
    [reply] = frames_of(events)
    assert isinstance(agt.receive(reply, NOW + 1)[0], AuthAccepted)
    return srv, agt, window


# -- handshake ---------------------------------------------------------------------------


def test_handshake_between_the_two_machines() -> None:
    srv, agt, _ = connect(features=frozenset({"acks", "seq"}), heartbeat_interval_ms=5_000)
    assert srv.state is ServerState.OPEN
    assert agt.state is AgentState.OPEN
    assert srv.agent_id == AGENT
    assert srv.hello is not None
    assert srv.hello.hostname == "web-01"
    # Accepted features: what both speak.
    assert srv.features == ("acks",)
    assert agt.reply is not None
    assert agt.reply.features == ("acks",)
    assert agt.reply.session_id == "s-1"
    assert agt.heartbeat_interval_ms == 5_000


def test_auth_reply_is_signed_with_the_agent_key_and_carries_the_brief_members() -> None:
    srv = server()
    events = srv.receive(frame("auth", HELLO, nonce_value="a" * 16), NOW, MemoryReplayWindow())
    [reply] = frames_of(events)
    data = json.loads(reply)
    assert data["type"] == "auth"
    assert data["agentId"] == AGENT
    assert data["payload"]["ok"] is True
    assert {"sessionId", "serverTime", "heartbeatIntervalMs", "features"} <= data["payload"].keys()
    assert data["payload"]["authNonce"] == "a" * 16
    resealed = seal(
        MessageType.AUTH, AGENT, data["payload"], key=KEY, ts=data["ts"], nonce=data["nonce"]
    )
    assert resealed.signature == data["signature"]


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ("{", CloseCode.MALFORMED),
        (frame("auth", {**HELLO, "protocol": 9}), CloseCode.MALFORMED),
        (frame("auth", HELLO, key=derive_agent_key("wrong", AGENT)), CloseCode.AUTH_FAILED),
        (frame("auth", HELLO, ts=NOW - 300_001), CloseCode.AUTH_FAILED),
        (frame("auth", HELLO, ts=NOW + 300_001), CloseCode.AUTH_FAILED),
        (frame("metrics", {"cpu": 1}), CloseCode.AUTH_FAILED),
        (frame("heartbeat", {}), CloseCode.AUTH_FAILED),
        (frame("log", {"entries": "x"}), CloseCode.MALFORMED),
        ("x" * (1 << 20 | 1), CloseCode.MESSAGE_TOO_BIG),
        (b"\x00binary", CloseCode.UNSUPPORTED_DATA),
    ],
)
def test_bad_first_frames(first: str | bytes, code: CloseCode) -> None:
    srv = server()
    close = close_of(srv.receive(first, NOW, MemoryReplayWindow()))
    assert close.code is code
    assert srv.state is ServerState.CLOSED
    if code is CloseCode.AUTH_FAILED:
        assert close.reason == "authentication failed"  # never which check
        assert close.detail  # but the log knows


def test_command_as_first_frame_signed_is_4401() -> None:
    command = {"commandId": "c1", "command": "ping", "args": {}, "timeoutMs": 1}
    close = close_of(server().receive(frame("command", command), NOW, MemoryReplayWindow()))
    assert close.code is CloseCode.AUTH_FAILED


def test_repeated_auth_nonce_is_4401_even_on_a_new_connection() -> None:
    window = MemoryReplayWindow()
    auth = frame("auth", HELLO)
    assert isinstance(server().receive(auth, NOW, window)[-1], Authenticated)
    assert close_of(server().receive(auth, NOW + 5, window)).code is CloseCode.AUTH_FAILED


def test_two_phase_accept_for_an_external_window() -> None:
    srv = server()
    verified = srv.verify(frame("auth", HELLO), NOW)
    events = srv.accept(verified, ReplayVerdict.DUPLICATE, NOW)
    assert close_of(events).code is CloseCode.AUTH_FAILED


def test_seed_compatible_keyring_accepts_the_raw_secret() -> None:
    raw = SECRET.encode()
    seed_agent = AgentSession(agent_id=AGENT, key=raw, hello=AuthHello("1", "h"))
    auth = seed_agent.start(NOW)
    strict = server()
    assert close_of(strict.receive(auth, NOW, MemoryReplayWindow())).code is CloseCode.AUTH_FAILED
    seed = ServerSession(Keyring([SECRET], seed_compatible=True), opened_at_ms=NOW, session_id="s")
    events = seed.receive(auth, NOW, MemoryReplayWindow())
    assert isinstance(events[-1], Authenticated)
    # The reply is signed with the key that authenticated: the raw secret.
    [reply] = frames_of(events)
    assert isinstance(seed_agent.receive(reply, NOW)[0], AuthAccepted)


def test_auth_timeout_is_4408() -> None:
    srv = server()
    assert srv.deadline_ms() == NOW + 10_000
    assert srv.on_deadline(NOW + 9_999) == []
    assert close_of(srv.on_deadline(NOW + 10_000)).code is CloseCode.TIMEOUT
    assert srv.deadline_ms() is None


def test_a_shell_may_give_the_first_frame_more_time_never_less() -> None:
    later = ServerSession(Keyring([SECRET]), opened_at_ms=NOW, session_id="s", auth_extra_ms=2_500)
    assert later.deadline_ms() == NOW + 12_500
    assert later.on_deadline(NOW + 12_499) == []
    assert close_of(later.on_deadline(NOW + 12_500)).code is CloseCode.TIMEOUT
    never_less = ServerSession(
        Keyring([SECRET]), opened_at_ms=NOW, session_id="s", auth_extra_ms=-5_000
    )
    assert never_less.deadline_ms() == NOW + 10_000


# -- open session ------------------------------------------------------------------------


def test_data_flows_as_typed_events() -> None:
    srv, agt, window = connect()
    [metrics] = srv.receive(agt.metrics({"cpu": {"percent": 1.5}}, NOW + 10), NOW + 10, window)
    assert isinstance(metrics, MetricsReceived)
    assert metrics.metrics.values["cpu"]["percent"] == 1.5
    entry = LogEntry(NOW, "error", "disk full", "/var/log/syslog")
    [logs] = srv.receive(agt.logs([entry], NOW + 11), NOW + 11, window)
    assert isinstance(logs, LogsReceived)
    assert logs.batch.entries == (entry,)
    result = CommandResult("c1", True, 3, result={"pong": True})
    [got] = srv.receive(agt.command_result(result, NOW + 12), NOW + 12, window)
    assert isinstance(got, CommandResultReceived)
    assert got.result == result


def test_commands_reach_the_agent_verified() -> None:
    srv, agt, _ = connect()
    command = Command("c-1", "ping", {"x": 1}, 10_000)
    [received] = agt.receive(srv.command(command, NOW + 5), NOW + 5)
    assert isinstance(received, CommandReceived)
    assert received.command == command


def test_heartbeat_is_answered_with_a_signed_reply() -> None:
    srv, agt, window = connect()
    events = srv.receive(agt.heartbeat(NOW + 100), NOW + 100, window)
    assert isinstance(events[0], HeartbeatReceived)
    [answer] = frames_of(events)
    assert json.loads(answer)["payload"] == {"serverTime": NOW + 100}
    assert agt.receive(answer, NOW + 101) == [HeartbeatAnswered(NOW + 100)]


def test_duplicate_is_dropped_without_effect_and_counted() -> None:
    srv, agt, window = connect()
    data = agt.metrics({"n": 1}, NOW + 10)
    assert isinstance(srv.receive(data, NOW + 10, window)[0], MetricsReceived)
    assert [type(e) for e in srv.receive(data, NOW + 20, window)] == [DuplicateDropped]
    assert srv.duplicates == 1
    assert srv.state is ServerState.OPEN


def test_agent_mismatch_after_auth_is_4403() -> None:
    srv = opened()
    other = frame("metrics", {}, agent_id="other", key=derive_agent_key(SECRET, "other"))
    assert close_of(srv.receive(other, NOW, MemoryReplayWindow())).code is CloseCode.AGENT_MISMATCH


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame("metrics", {}, key=derive_agent_key("x", AGENT)), CloseCode.AUTH_FAILED),
        (frame("metrics", {}, ts=NOW - 400_000), CloseCode.AUTH_FAILED),
        (frame("auth", HELLO), CloseCode.MALFORMED),
        (
            frame("command", {"commandId": "c", "command": "p", "args": {}, "timeoutMs": 1}),
            CloseCode.MALFORMED,
        ),
        ('{"type": "metrics"}', CloseCode.MALFORMED),
        (b"binary", CloseCode.UNSUPPORTED_DATA),
    ],
)
def test_bad_frames_after_auth(data: str | bytes, code: CloseCode) -> None:
    srv = opened()
    assert close_of(srv.receive(data, NOW, MemoryReplayWindow())).code is code


def test_a_session_signed_with_an_old_secret_keeps_its_key() -> None:
    old_key = derive_agent_key("old", AGENT)
    srv = ServerSession(Keyring([SECRET, "old"]), opened_at_ms=NOW, session_id="s")
    window = MemoryReplayWindow()
    assert isinstance(
        srv.receive(frame("auth", HELLO, key=old_key), NOW, window)[-1], Authenticated
    )
    assert isinstance(
        srv.receive(frame("metrics", {}, key=old_key), NOW, window)[0], MetricsReceived
    )
    assert close_of(srv.receive(frame("metrics", {}), NOW, window)).code is CloseCode.AUTH_FAILED


def test_three_silent_intervals_close_with_4408() -> None:
    srv, agt, window = connect(heartbeat_interval_ms=HB)
    srv.receive(agt.heartbeat(NOW + HB), NOW + HB, window)
    assert srv.deadline_ms() == NOW + HB + 3 * HB
    assert srv.on_deadline(NOW + 4 * HB - 1) == []
    assert close_of(srv.on_deadline(NOW + 4 * HB)).code is CloseCode.TIMEOUT


def test_server_initiated_closes_carry_retry_hints() -> None:
    srv = opened()
    close = srv.close(CloseCode.GOING_AWAY, retry_after_s=5)
    assert close.code is CloseCode.GOING_AWAY
    assert parse_retry_after(close.reason) == 5
    assert srv.state is ServerState.CLOSED
    with pytest.raises(RuntimeError):
        srv.receive(frame("metrics", {}), NOW, MemoryReplayWindow())
    with pytest.raises(RuntimeError):
        srv.command(Command("c", "ping", {}, 1), NOW)
    assert server().close(CloseCode.REPLACED).code is CloseCode.REPLACED
    assert parse_retry_after(server().close(CloseCode.TOO_MANY_ATTEMPTS, 60).reason) == 60


def test_commands_need_an_open_session() -> None:
    with pytest.raises(RuntimeError):
        server().command(Command("c", "ping", {}, 1), NOW)


# -- agent side --------------------------------------------------------------------------


def reply_frame(auth_nonce: str, *, key: bytes = KEY, ts: int = NOW, interval: int = HB) -> str:
    payload = {
        "ok": True,
        "sessionId": "s",
        "serverTime": ts,
        "heartbeatIntervalMs": interval,
        "features": [],
        "authNonce": auth_nonce,
    }
    return frame("auth", payload, key=key, ts=ts)


def started() -> tuple[AgentSession, str]:
    agt = agent()
    auth_nonce = json.loads(agt.start(NOW))["nonce"]
    return agt, auth_nonce


def test_agent_refuses_a_reply_to_another_auth() -> None:
    agt, _ = started()
    assert close_of(agt.receive(reply_frame(nonce()), NOW)).code is CloseCode.AUTH_FAILED


def test_agent_refuses_a_forged_reply() -> None:
    agt, auth_nonce = started()
    forged = reply_frame(auth_nonce, key=derive_agent_key("attacker", AGENT))
    assert close_of(agt.receive(forged, NOW)).code is CloseCode.AUTH_FAILED


def test_agent_takes_the_server_clock_from_the_reply() -> None:
    agt, auth_nonce = started()
    skew = 3_600_000  # our clock is an hour behind the server's
    assert isinstance(agt.receive(reply_frame(auth_nonce, ts=NOW + skew), NOW)[0], AuthAccepted)
    assert agt.clock_offset_ms == skew
    assert json.loads(agt.metrics({}, NOW + 5))["ts"] == NOW + skew + 5
    # A command stamped on the server's clock passes the agent's corrected check.
    command = {"commandId": "c", "command": "ping", "args": {}, "timeoutMs": 100}
    assert isinstance(
        agt.receive(frame("command", command, ts=NOW + skew), NOW)[0], CommandReceived
    )


def test_adjust_clock_before_start_makes_a_skewed_agent_authenticate() -> None:
    skew = -900_000
    agt = agent()
    agt.adjust_clock(NOW, NOW - skew)  # e.g. from the upgrade response's Date header
    events = server().receive(agt.start(NOW - skew), NOW, MemoryReplayWindow())
    assert isinstance(events[-1], Authenticated)


def test_an_unauthenticated_clock_stamps_auth_but_makes_nothing_old_look_fresh() -> None:
    """Over plain ws:// a man in the middle could set the Date header: it may only stamp
    the auth frame, never move the clock a v1 server's reply (no nonce echo) is checked
    against."""
    hour = 3_600_000
    agt = agent()
    agt.adjust_clock(NOW - hour, NOW, authenticated=False)  # "the server says it is 1 h ago"
    assert json.loads(agt.start(NOW))["ts"] == NOW - hour
    assert agt.clock_offset_ms == 0
    old_reply = {
        "ok": True,
        "sessionId": "s",
        "serverTime": NOW - hour,
        "heartbeatIntervalMs": HB,
        "features": [],
    }  # a v1 server's reply captured an hour ago: no authNonce to tie it to this auth
    events = agt.receive(frame("auth", old_reply, ts=NOW - hour), NOW)
    assert close_of(events).code is CloseCode.AUTH_FAILED  # its ts is an hour off: refused
    trusted = agent()
    trusted.adjust_clock(NOW - hour, NOW)  # over TLS the same header moves the clock
    assert trusted.clock_offset_ms == -hour


def test_agent_runs_no_command_that_does_not_verify() -> None:
    _, agt, _ = connect()
    command = {"commandId": "c", "command": "run", "args": {}, "timeoutMs": 100}
    forged = frame("command", command, key=derive_agent_key("attacker", AGENT))
    events = agt.receive(forged, NOW)
    assert close_of(events).code is CloseCode.AUTH_FAILED
    assert not any(isinstance(e, CommandReceived) for e in events)


def test_agent_drops_a_replayed_command() -> None:
    srv, agt, _ = connect()
    data = srv.command(Command("c-1", "ping", {}, 100), NOW)
    assert isinstance(agt.receive(data, NOW)[0], CommandReceived)
    assert [type(e) for e in agt.receive(data, NOW + 1)] == [DuplicateDropped]
    assert agt.duplicates == 1


@pytest.mark.parametrize(
    ("kind", "payload", "code"),
    [
        ("metrics", {}, CloseCode.MALFORMED),
        ("heartbeat", {}, CloseCode.MALFORMED),  # a server heartbeat needs serverTime
    ],
)
def test_agent_refuses_what_a_server_may_not_send(
    kind: str, payload: dict[str, Any], code: CloseCode
) -> None:
    _, agt, _ = connect()
    assert close_of(agt.receive(frame(kind, payload), NOW)).code is code


def test_agent_refuses_binary_and_other_agents_frames() -> None:
    _, agt, _ = connect()
    assert close_of(agt.receive(b"\x01", NOW)).code is CloseCode.UNSUPPORTED_DATA
    _, agt, _ = connect()
    other = frame("heartbeat", {"serverTime": NOW}, agent_id="other")
    assert close_of(agt.receive(other, NOW)).code is CloseCode.AGENT_MISMATCH


def test_agent_heartbeats_and_detects_a_silent_server() -> None:
    _, agt, _ = connect(heartbeat_interval_ms=HB)
    t = NOW + 1
    assert agt.deadline_ms() == t + HB
    assert agt.on_deadline(t + HB - 1) == []
    [beat] = agt.on_deadline(t + HB)
    assert isinstance(beat, SendFrame)
    assert json.loads(beat.text)["type"] == "heartbeat"
    assert agt.deadline_ms() == t + 2 * HB
    agt.on_deadline(t + 2 * HB)
    close = agt.on_deadline(t + 3 * HB)
    assert close_of(close).code is CloseCode.TIMEOUT


def test_agent_auth_reply_timeout_and_misuse() -> None:
    agt = AgentSession(
        agent_id=AGENT,
        key=KEY,
        hello=AuthHello("1", "h"),
        config=AgentConfig(limits=Limits(auth_timeout_ms=500)),
    )
    with pytest.raises(RuntimeError):
        agt.metrics({}, NOW)
    with pytest.raises(RuntimeError):
        agt.receive("{}", NOW)
    assert agt.deadline_ms() is None
    agt.start(NOW)
    with pytest.raises(RuntimeError):
        agt.start(NOW)
    assert agt.on_deadline(NOW + 499) == []
    assert close_of(agt.on_deadline(NOW + 500)).code is CloseCode.TIMEOUT


def test_agent_floors_a_tiny_heartbeat_interval() -> None:
    agt, auth_nonce = started()
    agt.receive(reply_frame(auth_nonce, interval=1), NOW)
    assert agt.heartbeat_interval_ms == AgentConfig().min_heartbeat_interval_ms
