"""decode: the brief's checks in order, each with its close code."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from monitoring_ws.protocol import (
    CanonicalizationError,
    CloseCode,
    Keyring,
    MessageType,
    ProtocolError,
    Sender,
    check_timestamp,
    close_reason,
    decode,
    derive_agent_key,
    parse_agent_key,
    parse_retry_after,
    random_nonce,
    seal,
    verify_signature,
)
from monitoring_ws.protocol.payloads import AuthHello, CommandResult, LogBatch

from .support import AGENT, HELLO, KEY, NOW, SECRET, frame, nonce, resign


def fields(**overrides: Any) -> dict[str, Any]:
    base = {"type": "metrics", "agentId": AGENT, "ts": NOW, "nonce": nonce(), "payload": {}}
    return {**base, **overrides}


def code_of(data: str | bytes, **kwargs: Any) -> CloseCode:
    with pytest.raises(ProtocolError) as info:
        decode(data, sender=kwargs.pop("sender", Sender.AGENT), **kwargs)
    return info.value.code


def test_valid_frame_decodes_to_typed_body() -> None:
    message = decode(frame("auth", HELLO), sender=Sender.AGENT)
    assert message.envelope.type is MessageType.AUTH
    assert isinstance(message.body, AuthHello)
    assert message.body.capabilities.commands == ("ping",)
    assert message.body.instance_id is None


def test_size_limit_counts_utf8_bytes() -> None:
    small = frame("metrics", {"s": "é" * 100})
    assert decode(small, sender=Sender.AGENT, max_bytes=len(small.encode()))
    assert code_of(small, max_bytes=len(small.encode()) - 1) is CloseCode.MESSAGE_TOO_BIG
    assert code_of(small.encode(), max_bytes=100) is CloseCode.MESSAGE_TOO_BIG
    assert code_of("x" * (1 << 20 | 1)) is CloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe{}",
        "not json",
        "[]",
        "null",
        json.dumps(fields(extra=1)),
        json.dumps({k: v for k, v in fields().items() if k != "nonce"} | {"signature": "0" * 64}),
        resign(fields(type="unknown")),
        resign(fields(type=1)),
        resign(fields(agentId="")),
        resign(fields(agentId="-starts-with-dash")),
        resign(fields(agentId="a" * 129)),
        resign(fields(agentId="has space")),
        resign(fields(agentId="a\n")),
        resign(fields(ts=True)),
        resign(fields(ts=1.5)),
        resign(fields(ts=-1)),
        resign(fields(ts="1732550400000")),
        resign(fields(nonce="short")),
        resign(fields(nonce="x" * 65)),
        resign(fields(nonce="not_a_uuid_nonce_")),
        resign(fields(payload=[])),
        resign(fields(payload=None)),
        json.dumps(fields() | {"signature": "A" * 64}),
        json.dumps(fields() | {"signature": "0" * 63}),
        json.dumps(fields() | {"signature": None}),
        resign(fields(type="auth", payload={**HELLO, "protocol": 2})),
        resign(fields(type="auth", payload={**HELLO, "protocol": True})),
        resign(fields(type="auth", payload={k: v for k, v in HELLO.items() if k != "hostname"})),
        resign(fields(type="auth", payload={**HELLO, "capabilities": {"commands": [1]}})),
        resign(fields(type="auth", payload={**HELLO, "instanceId": "no spaces allowed"})),
        resign(fields(type="log", payload={"entries": [{"ts": NOW, "level": "info"}]})),
        resign(fields(type="log", payload={"entries": ["text"]})),
        resign(fields(type="command_result", payload={"commandId": "c1", "ok": 1})),
        resign(fields(type="command_result", payload={"commandId": "c1", "ok": True})),
        resign(
            fields(
                type="command_result",
                payload={"commandId": "c", "ok": False, "durationMs": 1, "error": {"code": 1}},
            )
        ),
    ],
)
def test_malformed_is_4400(data: str | bytes) -> None:
    assert code_of(data) is CloseCode.MALFORMED


def test_server_schemas_apply_to_server_frames() -> None:
    bad_command = resign(fields(type="command", payload={"commandId": "c1", "command": "ping"}))
    assert code_of(bad_command, sender=Sender.SERVER) is CloseCode.MALFORMED
    bad_reply = resign(fields(type="auth", payload={"ok": False}))
    assert code_of(bad_reply, sender=Sender.SERVER) is CloseCode.MALFORMED


def test_types_a_sender_may_not_send_decode_without_body() -> None:
    command = {"commandId": "c1", "command": "ping", "args": {}, "timeoutMs": 1000}
    message = decode(frame("command", command), sender=Sender.AGENT)
    assert message.body is None


def test_extra_payload_members_are_allowed_and_signed() -> None:
    payload = {"commandId": "c1", "ok": True, "durationMs": 3, "future": {"x": 1}}
    message = decode(frame("command_result", payload), sender=Sender.AGENT)
    assert isinstance(message.body, CommandResult)
    assert b'"future":{"x":1}' in message.signing_input
    assert verify_signature(message, (KEY,)) == KEY


def test_log_batch_schema() -> None:
    entries = [{"ts": NOW, "level": "error", "message": "boom", "source": "/var/log/x"}]
    message = decode(frame("log", {"entries": entries}), sender=Sender.AGENT)
    assert isinstance(message.body, LogBatch)
    assert message.body.entries[0].source == "/var/log/x"


def test_agent_mismatch_is_4403_and_comes_after_schema() -> None:
    other = frame("metrics", {}, agent_id="other-agent")
    assert code_of(other, agent_id=AGENT) is CloseCode.AGENT_MISMATCH
    broken = resign(fields(agentId="other-agent", payload=[]))
    assert code_of(broken, agent_id=AGENT) is CloseCode.MALFORMED


def test_timestamp_window_is_inclusive() -> None:
    check_timestamp(NOW, NOW + 300_000)
    check_timestamp(NOW, NOW - 300_000)
    for now in (NOW + 300_001, NOW - 300_001):
        with pytest.raises(ProtocolError) as info:
            check_timestamp(NOW, now)
        assert info.value.code is CloseCode.AUTH_FAILED


def test_signature_checks() -> None:
    message = decode(frame("metrics", {"a": 1}), sender=Sender.AGENT)
    assert verify_signature(message, (b"wrong", KEY)) == KEY
    with pytest.raises(ProtocolError) as info:
        verify_signature(message, (derive_agent_key("other", AGENT),))
    assert info.value.code is CloseCode.AUTH_FAILED
    assert info.value.public_reason == "authentication failed"


def test_keyring_rotation_and_seed_mode() -> None:
    old, new = "old-secret", SECRET
    ring = Keyring([new, old])
    keys = ring.keys_for(AGENT)
    assert keys == (derive_agent_key(new, AGENT), derive_agent_key(old, AGENT))
    signed_with_old = decode(frame("metrics", {}, key=keys[1]), sender=Sender.AGENT)
    assert verify_signature(signed_with_old, keys) == keys[1]
    raw = decode(frame("metrics", {}, key=SECRET.encode()), sender=Sender.AGENT)
    with pytest.raises(ProtocolError):
        verify_signature(raw, keys)
    seed = Keyring([SECRET], seed_compatible=True)
    assert verify_signature(raw, seed.keys_for(AGENT)) == SECRET.encode()


def test_keyring_never_shows_secrets() -> None:
    ring = Keyring([SECRET])
    assert SECRET not in repr(ring)
    assert SECRET not in str(ring)
    with pytest.raises(ValueError, match="at least one"):
        Keyring([])
    with pytest.raises(ValueError, match="at least one"):
        Keyring([""])
    with pytest.raises(TypeError):
        Keyring(SECRET)  # type: ignore[arg-type]


def test_parse_agent_key() -> None:
    assert parse_agent_key(KEY.hex()) == KEY
    with pytest.raises(ValueError, match="64 hex"):
        parse_agent_key("abcd")
    with pytest.raises(ValueError, match="non-hexadecimal"):
        parse_agent_key("zz" * 32)


def test_seal_refuses_what_receivers_refuse() -> None:
    with pytest.raises(ValueError, match="agentId"):
        seal(MessageType.METRICS, "bad id", {}, key=KEY, ts=NOW, nonce=nonce())
    with pytest.raises(ValueError, match="nonce"):
        seal(MessageType.METRICS, AGENT, {}, key=KEY, ts=NOW, nonce="x")
    with pytest.raises(ValueError, match="ts"):
        seal(MessageType.METRICS, AGENT, {}, key=KEY, ts=-5, nonce=nonce())
    with pytest.raises(CanonicalizationError):
        seal(MessageType.METRICS, AGENT, {"x": float("nan")}, key=KEY, ts=NOW, nonce=nonce())


def test_close_reasons_and_retry_hints() -> None:
    reason = close_reason(CloseCode.TOO_MANY_ATTEMPTS, 30)
    assert reason == "retry-after=30; too many attempts"
    assert parse_retry_after(reason) == 30
    assert parse_retry_after(close_reason(CloseCode.GOING_AWAY, 0)) == 0
    assert parse_retry_after("server shutting down") is None
    assert parse_retry_after("retry-after=abc") is None
    for code in CloseCode:
        assert len(close_reason(code, 999_999).encode()) <= 123  # RFC 6455 5.5: 125 - 2


def test_a_frame_of_too_many_values_is_refused_before_parsing() -> None:
    payload = {"pad": [[[0]]] * 30_000}  # ~90,000 values in ~180 KB: ~100 ms to read
    crowded = frame("metrics", payload)
    assert code_of(crowded) is CloseCode.MESSAGE_TOO_BIG
    with pytest.raises(ProtocolError, match="JSON values, over 65536"):
        decode(crowded, sender=Sender.AGENT)
    # The limit is the caller's; under it, the same kind of frame reads as ever.
    assert decode(crowded, sender=Sender.AGENT, max_values=100_000).body is not None
    assert decode(frame("metrics", {"pad": [[[0]]] * 20_000}), sender=Sender.AGENT)
    # Commas in strings count too: the bound errs on the safe side, never the other.
    assert code_of(frame("metrics", {"s": "," * 70_000})) is CloseCode.MESSAGE_TOO_BIG


def test_random_nonces_are_uuid4_strings() -> None:
    seen = set()
    for _ in range(5000):
        nonce_value = random_nonce()
        parsed = uuid.UUID(nonce_value)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == nonce_value  # the canonical lower-case spelling
        seen.add(nonce_value)
    assert len(seen) == 5000
