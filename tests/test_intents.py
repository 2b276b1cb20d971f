"""Operator-signed commands (docs/security.md, "Operator-signed commands"): agents in
``requireOperatorSignature`` mode run what ``ctl`` signed with a trusted key, and refuse,
running nothing, what a compromised server changed, replayed, aimed elsewhere, let
expire or had signed by a key the agent does not trust."""

from __future__ import annotations

import base64
import functools
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from monitoring_ws.agent.channel_settings import TunnelSettings
from monitoring_ws.agent.settings import load_settings
from monitoring_ws.clock import wall_ms
from monitoring_ws.ctl.keys import PASSPHRASE_ENV, Signer, create_key, signed_intent
from monitoring_ws.ctl.settings import CtlError
from monitoring_ws.gateway.enrollment import JoinTokens
from monitoring_ws.protocol.ed25519 import parse_public_key, public_key
from monitoring_ws.protocol.intent import (
    Intent,
    IntentRefusedError,
    SignedIntent,
    check_intent,
    sign_intent,
)
from monitoring_ws.protocol.jointoken import keyset_fingerprint
from monitoring_ws.transports import CommandOrder

from .conftest import REPO, StartServer
from .support.inprocess import connected_agent
from .support.processes import isolated_env
from .test_channels import _control, _echo_server, _exchange, _read_stream_until, _start, _ws_url
from .test_jobs import finished

AGENTS = ("a-1", "a-2", "b-1")


def _seed(config: Path, name: str) -> bytes:
    record = json.loads((config / "monitoring-ws" / "keys" / f"{name}.json").read_text())
    return base64.b64decode(record["seed"])


@pytest.fixture
async def fleet(
    start_server: StartServer, tmp_path: Path, nursery: trio.Nursery
) -> tuple[Any, Path, Path]:
    """A server, an operator key in a scratch config dir, three agents that trust it and
    need its signature for everything; each may ``touch`` files in its own directory."""
    config = tmp_path / "config"
    _, public = create_key("alice", passphrase=None, default=True, environ={
        "XDG_CONFIG_HOME": str(config)
    })  # fmt: skip
    running = await start_server()
    work = tmp_path / "work"
    work.mkdir()
    for agent_id in AGENTS:
        await connected_agent(
            nursery,
            running.agent_urls[0],
            agent_id,
            tmp_path / agent_id,
            operatorKeys=[public],
            requireOperatorSignature=True,
            allowedCommands=[f"touch re:{work}/[a-z0-9-]+"],
            labels={"role": "app" if agent_id.startswith("a") else "other"},
        )
    return running, config, work


async def _ctl(running: Any, config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "monitoring_ws", "ctl", "--url", running.api_url, *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=isolated_env(XDG_CONFIG_HOME=str(config)),
    )


def _touch(work: Path, name: str) -> dict[str, str]:
    return {"command": f"touch {work}/{name}"}


async def _send(running: Any, agent_id: str, args: dict[str, Any], intent: Any) -> Any:
    """What a compromised server does: its own transport sends whatever it likes with
    whatever intent it holds (the API would have refused the mismatch)."""
    order = CommandOrder(agent_id, "run", args, 10_000, intent=intent)
    return await running.plugin.transport.send_command(order)


async def test_only_what_the_operator_signed_runs(fleet: tuple[Any, Path, Path]) -> None:
    running, config, work = fleet
    done = await _ctl(running, config, "run", "a-1", "--", "touch", f"{work}/signed")
    assert done.returncode == 0, done.stderr.decode()
    assert (work / "signed").exists()
    async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as api:
        records = (await api.get("/api/commands", params={"agentId": "a-1"})).json()["commands"]
        [record] = [r for r in records if r["state"] == "succeeded"]
        intent = record["intent"]  # kept with the record, as the operator signed it
        assert intent["intent"]["agents"] == ["a-1"]
        unsigned = await api.post(
            "/api/agents/a-1/commands", json={"command": "run", "args": _touch(work, "plain")}
        )
        assert unsigned.json()["error"]["code"] == "operator_signature_required"
    seed = _seed(config, "alice")
    stranger = bytes(range(32))

    def signed(agents: list[str], name: str, *, key: bytes = seed, expired: bool = False) -> Any:
        begin = 1_000 if expired else int(time.time() * 1000)
        made = Intent(
            "run", _touch(work, name), tuple(agents), begin, begin + 60_000, secrets.token_hex(8)
        )
        return sign_intent(made, [key]).to_json()

    cases = [
        ("changed", _touch(work, "changed"), intent, "operator_signature_invalid"),
        ("replayed", intent["intent"]["args"], intent, "operator_signature_replayed"),
        (
            "elsewhere",
            _touch(work, "elsewhere"),
            signed(["a-2"], "elsewhere"),
            "operator_signature_wrong_agent",
        ),
        (
            "expired",
            _touch(work, "expired"),
            signed(["a-1"], "expired", expired=True),
            "operator_signature_expired",
        ),
        (
            "stranger",
            _touch(work, "stranger"),
            signed(["a-1"], "stranger", key=stranger),
            "operator_signature_untrusted",
        ),
    ]
    for what, args, carried, code in cases:
        outcome = await _send(running, "a-1", args, carried)
        assert outcome.error_code == code, (what, outcome)
        assert "signature" in outcome.error_code
    assert sorted(p.name for p in work.iterdir()) == ["signed"]  # nothing else ran
    assert public_key(stranger) != public_key(seed)


async def test_a_job_signed_once_reaches_its_agents_and_no_other(
    fleet: tuple[Any, Path, Path],
) -> None:
    running, config, work = fleet
    done = await _ctl(running, config, "run", "-l", "role=app", "--", "touch", f"{work}/job")
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert "succeeded: 2 succeeded" in done.stdout.decode()
    # Signed for the app agents; a selector that also matches b-1 still reaches only them.
    seed = _seed(config, "alice")
    now = int(time.time() * 1000)
    made = Intent("run", _touch(work, "wide"), ("a-1", "a-2"), now, now + 60_000, "n" * 20)
    async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as api:
        answer = await api.post(
            "/api/jobs",
            json={
                "selector": {"glob": "*"},
                "command": "run",
                "intent": sign_intent(made, [seed]).to_json(),
            },
        )
        assert answer.status_code == 202, answer.text
        job = await finished(api, answer.json()["jobId"])
    assert job["matched"] == 2, job
    assert job["counts"]["succeeded"] == 2, job


def test_the_documented_intent_vector_verifies_and_only_as_documented() -> None:
    """tests/data/intent-vector.json: what docs/protocol.md gives third parties."""
    vector = json.loads((REPO / "tests/data/intent-vector.json").read_text())
    key = parse_public_key(vector["publicKey"])
    signed = SignedIntent.from_json(vector["signed"])
    assert signed.intent.signed_bytes().decode() == vector["signedBytes"]
    check = functools.partial(
        check_intent, signed, command="run", args={"command": "systemctl restart nginx"}
    )
    inside = vector["signed"]["intent"]["notBefore"] + 1
    assert check(agent_id="web-2", now_ms=inside, trusted=[key]) == (vector["keyId"],)
    for changes, code in (
        ({"agent_id": "web-3"}, "operator_signature_wrong_agent"),
        ({"now_ms": vector["signed"]["intent"]["expires"] + 61_000}, "operator_signature_expired"),
        ({"trusted": [bytes(32)]}, "operator_signature_untrusted"),
        ({"quorum": 2}, "operator_signature_quorum"),
    ):
        arguments = {"agent_id": "web-1", "now_ms": inside, "trusted": [key], **changes}
        with pytest.raises(IntentRefusedError) as refused:
            check(**arguments)
        assert refused.value.code == code
    tampered = json.loads(json.dumps(vector["signed"]))
    tampered["intent"]["agents"].append("web-3")
    with pytest.raises(IntentRefusedError, match="was changed"):
        check_intent(
            SignedIntent.from_json(tampered),
            agent_id="web-3",
            command="run",
            args={"command": "systemctl restart nginx"},
            now_ms=inside,
            trusted=[key],
        )


async def test_enrollment_hands_over_the_operator_keys_the_token_pins(
    start_server: StartServer, tmp_path: Path
) -> None:
    """``token create`` on a server with operator keys pins them in the token; an agent
    enrolling with it takes the keys (and the signature requirement) only if the server
    answers that very set."""
    state = tmp_path / "state"
    _, public = create_key("ops", passphrase=None, default=False, environ={
        "XDG_CONFIG_HOME": str(tmp_path / "config")
    })  # fmt: skip
    config = tmp_path / "monitoring.toml"
    config.write_text(
        f'[server]\nstate_dir = "{state}"\n[plugins.websocket]\noperator_keys = ["{public}"]\n'
    )
    made = subprocess.run(
        [sys.executable, "-m", "monitoring_ws", "token", "create", "--config", config],
        capture_output=True,
        text=True,
        check=False,
        env=isolated_env(),
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.split(".")[4] == keyset_fingerprint([public])
    assert "pins operator keys" in made.stderr
    running = await start_server(state_dir=state, operator_keys=(public,))
    url = running.api_url

    async def enroll(text: str, agent_id: str) -> subprocess.CompletedProcess[bytes]:
        output = str(tmp_path / f"{agent_id}.json")
        where = ("--url", url, "--agent-id", agent_id, "--output", output)
        return await trio.run_process(
            [sys.executable, "-m", "monitoring_ws", "agent", "enroll", *where],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=isolated_env(MONITORING_WS_JOIN_TOKEN=text),
        )

    done = await enroll(token, "e-1")
    assert done.returncode == 0, done.stderr.decode()
    settings = json.loads((tmp_path / "e-1.json").read_text())
    assert settings["operatorKeys"] == [public]
    assert settings["requireOperatorSignature"] is True
    assert load_settings(tmp_path / "e-1.json").requires_signature("ping")
    # A token that pins another set (the server's keys were swapped since): refused.
    other = JoinTokens(state).create(
        ttl_s=600, uses=1, agents=(), pin=None, now_ms=wall_ms(),
        keyset=keyset_fingerprint(["ed25519:" + base64.b64encode(bytes(32)).decode()]),
    )  # fmt: skip
    refused = await enroll(str(other), "e-2")
    assert refused.returncode != 0
    assert "not the ones the join token pins" in refused.stderr.decode()
    assert not (tmp_path / "e-2.json").exists()


async def test_a_tunnel_opens_only_when_an_operator_signed_it(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A tunnel's open is an intent too: ``ctl forward`` signs each connection it opens;
    unsigned (``--no-sign``) the agent refuses it by name, and an intent used once does
    not open a second channel."""
    config = tmp_path / "config"
    _, public = create_key("ops", passphrase=None, default=True, environ={
        "XDG_CONFIG_HOME": str(config)
    })  # fmt: skip
    port = await _echo_server(nursery)
    api = await _start(
        start_server,
        nursery,
        tmp_path,
        tunnels=TunnelSettings(allow=(("127.0.0.1", port),)),
        operator_keys=(parse_public_key(public),),
        signed_commands=None,
    )
    argv = [sys.executable, "-m", "monitoring_ws", "ctl", "--url", api, "forward", "box-1"]
    env = isolated_env(XDG_CONFIG_HOME=str(config))
    for extra, signed in (((), True), (("--no-sign",), False)):
        spec = f"0:127.0.0.1:{port}"
        process = await trio.lowlevel.open_process(
            [*argv, *extra, spec], stderr=subprocess.PIPE, env=env
        )
        assert process.stderr is not None
        try:
            with trio.fail_after(60):
                said = await _read_stream_until(process.stderr, b"(Ctrl-C stops)")
                local = int(said.split(b" -> ")[0].rsplit(b":", 1)[1])
                back = await _exchange(await trio.open_tcp_stream("127.0.0.1", local), b"hi")
                if signed:
                    assert back == b"hi"
                else:
                    assert back == b""
                    said = await _read_stream_until(process.stderr, b"operator_signature")
                    assert b"operator_signature_required" in said
        finally:
            process.kill()
            await process.wait()
    # The same signed open twice: the second is a replay.
    signer = Signer(_seed(config, "ops"))
    intent = signer.channel("tunnel", {"host": "127.0.0.1", "port": port}, "box-1")
    url = _ws_url(api, "box-1", kind="tunnel", host="127.0.0.1", port=port, intent=intent)
    for expected in ("opened", "refused"):
        with trio.fail_after(30):
            async with open_websocket_url(url) as ws:
                answer = await _control(ws)
        assert answer["type"] == expected, answer
    assert "operator_signature_replayed" in answer["message"]


async def test_the_trusted_keys_change_only_by_a_signed_command(
    fleet: tuple[Any, Path, Path], tmp_path: Path
) -> None:
    """Rotation: ``ctl keys trust`` signed by the current key moves the app agents to a
    new key (kept in their state directory); the old key no longer runs anything there,
    the new one does, and the server cannot change the keys by itself."""
    running, config, work = fleet
    _, bob = create_key("bob", passphrase=None, default=False, environ={
        "XDG_CONFIG_HOME": str(config)
    })  # fmt: skip
    # The server, on its own: refused, whoever asks.
    outcome = await running.plugin.transport.send_command(
        CommandOrder("a-1", "operator_keys", {"keys": [bob]}, 10_000)
    )
    assert outcome.error_code == "operator_signature_required"
    done = await _ctl(running, config, "keys", "trust", "-l", "role=app", "--key", "alice", bob)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert "a-1: trusts 1 operator key(s)" in done.stdout.decode()
    kept = json.loads((tmp_path / "a-1" / "operator-keys-a-1.json").read_text())
    assert kept["keys"] == [bob]
    old = await _ctl(running, config, "run", "--key", "alice", "a-1", "--", "touch", f"{work}/old")
    assert old.returncode != 0
    assert "operator_signature_untrusted" in old.stderr.decode()
    new = await _ctl(running, config, "run", "--key", "bob", "a-1", "--", "touch", f"{work}/new")
    assert new.returncode == 0, new.stderr.decode()
    # b-1 was not in the job: it still trusts alice only.
    other = await _ctl(running, config, "run", "--key", "alice", "b-1", "--", "touch", f"{work}/b")
    assert other.returncode == 0, other.stderr.decode()
    assert sorted(p.name for p in work.iterdir()) == ["b", "new"]


def test_a_sealed_key_signs_only_with_its_passphrase(tmp_path: Path) -> None:
    """``ctl keys create --passphrase``: the file holds no usable seed; the passphrase
    unseals it, a wrong one is told apart from a damaged file."""
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    path, public = create_key("sealed", passphrase="correct horse", default=True, environ=environ)
    assert path.stat().st_mode & 0o777 == 0o600
    record = json.loads(path.read_text())
    assert "seed" not in record
    assert record["sealed"]["kdf"] == "scrypt"
    right = signed_intent(
        record, "ping", {}, ["a-1"], lifetime_ms=1000,
        environ={**environ, PASSPHRASE_ENV: "correct horse"},
    )  # fmt: skip
    signed = SignedIntent.from_json(right)
    holding = check_intent(
        signed,
        agent_id="a-1",
        command="ping",
        args={},
        now_ms=signed.intent.not_before_ms,
        trusted=[parse_public_key(public)],
    )
    assert len(holding) == 1
    with pytest.raises(CtlError, match="wrong passphrase"):
        signed_intent(
            record, "ping", {}, ["a-1"], lifetime_ms=1000,
            environ={**environ, PASSPHRASE_ENV: "wrong"},
        )  # fmt: skip
    with pytest.raises(CtlError, match="never overwritten"):
        create_key("sealed", passphrase=None, default=False, environ=environ)


async def test_a_command_with_a_quorum_runs_only_with_enough_operator_signatures(
    start_server: StartServer, tmp_path: Path, nursery: trio.Nursery
) -> None:
    seeds = [bytes([n]) * 32 for n in (1, 2, 3)]
    keys = ["ed25519:" + base64.b64encode(public_key(seed)).decode() for seed in seeds]
    running = await start_server()
    work = tmp_path / "work"
    work.mkdir()
    await connected_agent(
        nursery,
        running.agent_urls[0],
        "q-1",
        tmp_path / "q-1",
        operatorKeys=keys,
        requireOperatorSignature=["run"],
        operatorQuorum={"run": 2},
        allowedCommands=[f"touch re:{work}/[a-z0-9-]+"],
    )
    for signers, name, code in (
        (seeds[:1], "one", "operator_signature_quorum"),
        ([seeds[0], seeds[0]], "same", "operator_signature_quorum"),  # one key twice
        (seeds[1:], "two", None),
    ):
        now = int(time.time() * 1000)
        made = Intent("run", _touch(work, name), ("q-1",), now, now + 60_000, secrets.token_hex(8))
        outcome = await _send(
            running, "q-1", _touch(work, name), sign_intent(made, signers).to_json()
        )
        assert outcome.error_code == code, (name, outcome)
    # Not in the list: ping needs no signature at all here.
    ping = await running.plugin.transport.send_command(CommandOrder("q-1", "ping", {}, 10_000))
    assert ping.ok
    assert sorted(p.name for p in work.iterdir()) == ["two"]


def test_a_long_jobs_intent_stays_within_the_longest_window() -> None:
    """5,000 agents at an hour each would be 208 days: the window stops at 7 days, and
    the intent is still one the server and agents accept."""
    signed = Signer(bytes(32)).sign("run", {}, ["a-1"], lifetime_ms=5000 * 3_600_000)
    intent = SignedIntent.from_json(signed).intent
    assert intent.expires_ms - intent.not_before_ms == 7 * 86_400_000
