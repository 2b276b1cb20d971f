"""Properties of the codec: round trips, tamper evidence, and total decoding."""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring_ws.protocol import (
    CloseCode,
    MessageType,
    ProtocolError,
    Sender,
    decode,
    derive_agent_key,
    seal,
    verify_signature,
)

from .strategies import agent_ids, json_values, nonces, payloads, scalars, text, timestamps
from .support import AGENT, HELLO, KEY, NOW, examples, frame

FREE_FORM = st.sampled_from([MessageType.METRICS, MessageType.HEARTBEAT])


@settings(max_examples=examples(1500))
@given(FREE_FORM, agent_ids, timestamps, nonces, payloads, st.binary(min_size=1, max_size=64))
def test_sign_verify_round_trip(
    kind: MessageType, agent_id: str, ts: int, nonce: str, payload: dict[str, Any], secret: bytes
) -> None:
    key = derive_agent_key(secret, agent_id)
    wire = seal(kind, agent_id, payload, key=key, ts=ts, nonce=nonce).to_frame()
    message = decode(wire, sender=Sender.AGENT, agent_id=agent_id)
    assert message.envelope.payload == payload
    assert verify_signature(message, (key,)) == key


def _tamper(fields: dict[str, Any], member: str, data: st.DataObject) -> None:
    if member == "type":
        fields["type"] = "heartbeat" if fields["type"] == "metrics" else "metrics"
    elif member == "agentId":
        fields["agentId"] = data.draw(agent_ids.filter(lambda a: a != fields["agentId"]))
    elif member == "ts":
        fields["ts"] = data.draw(timestamps.filter(lambda t: t != fields["ts"]))
    elif member == "nonce":
        fields["nonce"] = data.draw(nonces.filter(lambda n: n != fields["nonce"]))
    else:
        key = data.draw(st.text(max_size=5))
        value = data.draw(json_values)
        if fields["payload"].get(key, object()) == value and key in fields["payload"]:
            value = [value]
        fields["payload"] = {**fields["payload"], key: value}


@settings(max_examples=examples(1500))
@given(
    FREE_FORM,
    agent_ids,
    timestamps,
    nonces,
    payloads,
    st.sampled_from(["type", "agentId", "ts", "nonce", "payload"]),
    st.data(),
)
def test_any_change_to_a_signed_field_breaks_verification(
    kind: MessageType,
    agent_id: str,
    ts: int,
    nonce: str,
    payload: dict[str, Any],
    member: str,
    data: st.DataObject,
) -> None:
    envelope = seal(kind, agent_id, payload, key=KEY, ts=ts, nonce=nonce)
    fields = json.loads(envelope.to_frame())
    _tamper(fields, member, data)
    message = decode(json.dumps(fields), sender=Sender.AGENT)
    with pytest.raises(ProtocolError) as info:
        verify_signature(message, (KEY,))
    assert info.value.code is CloseCode.AUTH_FAILED


def _decode_any(data: str | bytes) -> None:
    for sender in Sender:
        with contextlib.suppress(ProtocolError):
            decode(data, sender=sender, agent_id=AGENT, max_bytes=4096)


@settings(max_examples=examples(2000))
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_decode_raises_only_protocol_errors_on_text(data: str | bytes) -> None:
    _decode_any(data)


member_values = json_values | st.from_regex(r"\A[0-9a-f]{64}\Z") | agent_ids | nonces
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([t.value for t in MessageType]) | member_values,
        "agentId": member_values,
        "ts": timestamps | member_values,
        "nonce": member_values,
        "payload": payloads
        | st.fixed_dictionaries({}, optional=dict.fromkeys(HELLO, member_values)),
        "signature": member_values,
    },
)


@settings(max_examples=examples(2000))
@given(envelopes)
def test_decode_raises_only_protocol_errors_on_envelope_shapes(fields: dict[str, Any]) -> None:
    _decode_any(json.dumps(fields))


TOKENS = [
    "{",
    "}",
    "[",
    "]",
    '"',
    ",",
    ":",
    "\\",
    "\\u",
    "\\ud800",
    "\\udc00",
    "NaN",
    "Infinity",
    "-",
    "1e999",
    "9" * 20,
    "0.0",
    "true",
    "null",
    "\x00",
    "\ufeff",
    "é",
    "😀",
    '"a":1',
    "[" * 80,
    "{" * 80,
    '"type":"auth"',
    '"payload":[]',
    "\ud800",
]


def _mutate(rng: random.Random, text: str) -> str | bytes:
    if not text:
        return rng.choice(TOKENS)
    action = rng.randrange(6)
    i = rng.randrange(len(text) + 1)
    if action == 0:
        return text[:i]
    if action == 1:
        return text[:i] + rng.choice(TOKENS) + text[i:]
    if action == 2:
        j = rng.randrange(len(text) + 1)
        return text[: min(i, j)] + text[max(i, j) :]
    if action == 3:
        raw = bytearray(text.encode("utf-8", "surrogatepass"))
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if action == 4:
        return text.replace(rng.choice(["1", "a", '"', ":", ","]), rng.choice(TOKENS), 1)
    return text[:i] + text[i:].swapcase()


def test_smoke_100k_random_frames() -> None:
    rng = random.Random(20261125)
    seeds = [
        frame("auth", HELLO),
        frame("metrics", {"cpu": {"percent": 12.5}, "load": [0.1, 1e-7], "n": 2**40}),
        frame("log", {"entries": [{"ts": NOW, "level": "info", "message": "tab\t é"}]}),
        frame(
            "command_result",
            {
                "commandId": "c1",
                "ok": False,
                "durationMs": 1,
                "error": {"code": "x", "message": "y"},
            },
        ),
        frame("heartbeat", {}),
        frame("command", {"commandId": "c", "command": "ping", "args": {}, "timeoutMs": 5}),
    ]
    outcomes: dict[str, int] = {}
    for n in range(100_000):
        data = _mutate(rng, rng.choice(seeds))
        if n % 3 == 0 and isinstance(data, str):  # mutations of mutations
            data = _mutate(rng, data)
        sender = Sender.SERVER if n % 2 else Sender.AGENT
        try:
            message = decode(data, sender=sender, agent_id=AGENT, max_bytes=2048)
            verify_signature(message, (KEY,))
            outcome = "accepted"
        except ProtocolError as error:
            outcome = error.code.name
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert sum(outcomes.values()) == 100_000
    # The corpus reached every decode-time outcome, not just one kind of refusal.
    assert {"MALFORMED", "AUTH_FAILED", "AGENT_MISMATCH", "accepted"} <= outcomes.keys()


def _schema_validator() -> Any:
    """openapi.COMMAND_SCHEMAS' ``CommandRequest`` (its maximum is the server's own)."""
    import copy  # noqa: PLC0415

    from jsonschema import Draft202012Validator  # noqa: PLC0415

    from monitoring_ws.openapi import COMMAND_SCHEMAS  # noqa: PLC0415

    schema = copy.deepcopy(COMMAND_SCHEMAS["CommandRequest"])
    del schema["properties"]["timeoutMs"]["maximum"]
    return Draft202012Validator({**schema, "components": {"schemas": COMMAND_SCHEMAS}})


_COMMAND_SCHEMA = _schema_validator()
_MEMBER_VALUES = {
    "command": st.sampled_from(["ping", "run", "a.b:c-d_1", "", "bad name!", "-x"]) | text,
    "args": st.dictionaries(text, json_values, max_size=3) | json_values,
    "timeoutMs": st.integers(-5, 3_600_005) | st.sampled_from([0, 1, 1000.0, 1.5, 0.0]) | scalars,
    "wait": st.booleans() | json_values,
    "requestedBy": st.text(max_size=130) | json_values,
    "extra": json_values,
}


@settings(max_examples=examples(1500))
@given(
    st.dictionaries(st.sampled_from(sorted(_MEMBER_VALUES)), st.just(None), max_size=6).flatmap(
        lambda keys: st.fixed_dictionaries({k: _MEMBER_VALUES[k] for k in keys})
    )
)
def test_command_bodies_are_checked_as_the_schema_says(body: dict[str, Any]) -> None:
    """The hand-written check (web.command_body) accepts exactly what /openapi.json's
    CommandRequest accepts, within the server's timeout limit."""
    from monitoring_ws.web import BadBody, command_body  # noqa: PLC0415

    max_ms = 3_600_000
    schema_ok = not any(_COMMAND_SCHEMA.iter_errors(body))
    timeout = body.get("timeoutMs", 1)
    within = not schema_ok or timeout <= max_ms
    refusal = None
    try:
        command_body(json.dumps(body), 30_000, max_ms)
    except BadBody as exc:
        refusal = str(exc)
    assert (refusal is None) == (schema_ok and within), refusal
