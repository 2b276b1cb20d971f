"""Coverage-guided fuzzing of the sans-IO protocol core (``./dev fuzz N``).

Targets, chosen by the input's first byte: the strict JSON reader, RFC 8785
canonicalization (checked against the ``rfc8785`` reference), the envelope decoder, and
both session state machines, fed raw text or frames correctly signed around a fuzzed
payload, before and after a real handshake. Anything but the documented refusals
(``ProtocolError``, ``JSONRejectedError``) is a crash. With atheris (libFuzzer) installed
the search is coverage-guided; without it a seeded random mutator runs the same checks.

    .venv/bin/python tests/fuzz/fuzz_protocol.py -runs=1000000 [-seed=N] [CORPUS_DIR]
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from harness import atheris, fuzz


def _imports() -> Any:
    from monitoring_ws import protocol  # noqa: PLC0415
    from monitoring_ws.protocol import strictjson  # noqa: PLC0415

    return protocol, strictjson


if atheris is not None:
    with atheris.instrument_imports(include=["monitoring_ws"]):
        protocol, strictjson = _imports()
else:
    protocol, strictjson = _imports()

SECRET = "fuzz-master-secret"
AGENT = "fuzz-agent-1"
KEY = protocol.derive_agent_key(SECRET, AGENT)
KEYRING = protocol.Keyring([SECRET])
NOW = 1_732_550_400_000
HELLO = protocol.AuthHello(
    "fuzz", "host", protocol.Capabilities(("ping",), ("ack", "cancel")), instance_id=None
)
KINDS = list(protocol.MessageType)
#: Words of the protocol, so mutations reach past the schema checks.
DICTIONARY = [
    *(m.value for m in protocol.MessageType),
    "type",
    "agentId",
    "ts",
    "nonce",
    "payload",
    "signature",
    "protocol",
    "agentVersion",
    "hostname",
    "capabilities",
    "commands",
    "features",
    "commandId",
    "command",
    "args",
    "timeoutMs",
    "ok",
    "result",
    "error",
    "code",
    "message",
    "durationMs",
    "entries",
    "level",
    "source",
    "delivery",
    "stream",
    "seq",
    "values",
    "serverTime",
    "sessionId",
    "heartbeatIntervalMs",
    "authNonce",
    "maxFrameBytes",
    "1e400",
    "9007199254740993",
    "\\ud800",
    "-0.0",
]
SEEDS = [
    b'\x00{"a": [1, 2.5, -0.0, 1e300, "\\u00e9"], "b": {"c": null}}',
    b'\x01{"z": 1, "a": "\\ud83d\\ude00", "n": [1E-7, 1e21, 0.1]}',
    b'\x04\x01{"values": {"cpu": 1.5}, "delivery": {"stream": "s", "seq": 1}}',
    b'\x05\x01{"commandId": "c-1", "command": "ping", "args": {}, "timeoutMs": 100}',
    b'\x03\x00{"type": "auth", "agentId": "a", "ts": 1, "nonce": "n", "payload": {}}',
]


def _open_pair() -> tuple[Any, Any, Any]:
    """An agent and a server session after a real handshake."""
    agent = protocol.AgentSession(agent_id=AGENT, key=KEY, hello=HELLO)
    server = protocol.ServerSession(
        KEYRING,
        opened_at_ms=NOW,
        session_id="fuzz-session",
        config=protocol.ServerConfig(
            features=frozenset({"ack", "cancel"}), rate_limit=protocol.RateLimit()
        ),
    )
    window = protocol.MemoryReplayWindow()
    events = server.receive(agent.start(NOW), NOW, window)
    reply = next(e for e in events if isinstance(e, protocol.SendFrame))
    agent.receive(reply.text, NOW)
    assert server.agent_id == AGENT
    assert agent.reply is not None
    return agent, server, window


def _signed(kind_byte: int, text: str) -> str | None:
    """``text`` as the payload of a correctly signed frame, when it is a JSON object."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    kind = KINDS[kind_byte % len(KINDS)]
    try:
        envelope = protocol.seal(kind, AGENT, payload, key=KEY, ts=NOW, nonce="f" * 16 + "0" * 8)
    except ValueError:  # not signable JSON: the sender's own check refuses it
        return None
    return envelope.to_frame()


def _feed(session: Any, frames: list[str], server: bool, window: Any) -> None:
    for frame in frames:
        if session.closed:
            return
        if server:
            session.receive(frame, NOW, window)
            session.on_deadline(NOW + 10**7)
        else:
            session.receive(frame, NOW)
            session.on_deadline(NOW + 10**7)


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    # Invalid UTF-8 becomes lone surrogates: text a peer's bytes could never be, but that
    # the readers must refuse cleanly all the same.
    target, flag, text = data[0] % 6, data[1], data[2:].decode("utf-8", "surrogateescape")
    if target == 0:
        with contextlib.suppress(strictjson.JSONRejectedError):
            strictjson.loads(text)
    elif target == 1:
        try:
            value = strictjson.loads(text)
        except strictjson.JSONRejectedError:
            return
        ours = protocol.canonicalize(value)  # what the strict reader takes is signable
        if ours != protocol.canonicalize_reference(value):
            raise AssertionError(f"canonical forms differ for {text!r}")
    elif target == 2:
        frame: str | bytes = data[2:] if flag & 2 else text  # bytes: the frame's UTF-8
        for sender in protocol.Sender:
            with contextlib.suppress(protocol.ProtocolError):
                protocol.decode(frame, sender=sender, agent_id=AGENT if flag & 1 else None)
    elif target == 3:  # a first frame, raw or signed
        first = _signed(flag, text) if flag & 1 else text
        server = protocol.ServerSession(KEYRING, opened_at_ms=NOW, session_id="s")
        _feed(server, [first or text], True, protocol.MemoryReplayWindow())
    else:
        agent, server, window = _open_pair()
        pieces = text.split("\x1e")[:4]
        frames = [(_signed(flag >> 1, p) if flag & 1 else p) or p for p in pieces]
        if target == 4:
            _feed(server, frames, True, window)
        else:
            _feed(agent, frames, False, window)


def main() -> None:
    fuzz(one_input, SEEDS, dictionary=DICTIONARY, name="mws-fuzz")


if __name__ == "__main__":
    main()
