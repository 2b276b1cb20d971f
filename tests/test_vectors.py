"""The independent implementation's vectors, reproduced byte for byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785

from monitoring_ws.protocol import (
    MessageType,
    Sender,
    canonicalize,
    decode,
    derive_agent_key,
    seal,
    sign,
    verify_signature,
)


def test_every_built_in_message_type_is_covered(vectors: list[dict[str, Any]]) -> None:
    # ``ack``, ``cancel``, ``command_output`` and ``channel`` belong to negotiated extensions,
    # not to the independent vectors (docs/protocol.md has theirs: tests/test_*_protocol.py).
    extensions = {
        MessageType.ACK.value,
        MessageType.CANCEL.value,
        MessageType.COMMAND_OUTPUT.value,
        MessageType.CHANNEL.value,
    }
    built_in = {t.value for t in MessageType} - extensions
    assert {v["envelope"]["type"] for v in vectors} == built_in


def test_keys(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        assert derive_agent_key(v["secret"], v["agentId"]).hex() == v["key_hex"]


def test_canonical_text(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        expected = v["canonical"].encode("utf-8")
        assert canonicalize(v["envelope"]) == expected
        assert rfc8785.dumps(v["envelope"]) == expected


def test_signatures(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        key = bytes.fromhex(v["key_hex"])
        assert sign(key, v["canonical"].encode("utf-8")) == v["signature"]
        env = v["envelope"]
        sealed = seal(
            MessageType(env["type"]),
            env["agentId"],
            env["payload"],
            key=key,
            ts=env["ts"],
            nonce=env["nonce"],
        )
        assert sealed.signature == v["signature"]


def test_vector_frames_decode_and_verify(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        env = v["envelope"]
        sender = Sender.SERVER if env["type"] == "command" else Sender.AGENT
        # Any member order and spacing on the wire: the signature covers the canonical form.
        wire = json.dumps({"signature": v["signature"], **env}, indent=2, ensure_ascii=True)
        message = decode(wire, sender=sender, agent_id=v["agentId"])
        assert message.signing_input == v["canonical"].encode("utf-8")
        key = bytes.fromhex(v["key_hex"])
        assert verify_signature(message, (key,)) == key


def test_the_copy_in_the_repository_is_the_original() -> None:
    """tests/data holds a byte-identical copy; compared when the original is beside the
    checkout (a fresh clone elsewhere has only the copy, which is enough)."""
    from .conftest import REPO, VECTORS  # noqa: PLC0415

    original = REPO.parent / "shared" / "protocol-test-vectors.json"
    if not original.is_file():
        pytest.skip("no ../shared beside this checkout")
    assert VECTORS.read_bytes() == original.read_bytes()
