"""Labels and selectors, as pure code: Kubernetes' rules and syntax, and their bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring_ws.host.jobs.spec import Amount, JobSpecError, parse_job
from monitoring_ws.host.selectors import SelectorError, parse_labels, parse_selector
from monitoring_ws.protocol import (
    AuthHello,
    Capabilities,
    MessageType,
    ProtocolError,
    derive_agent_key,
    seal,
)
from monitoring_ws.protocol.labels import MAX_LABELS, LabelError, check_labels

PROD_WEB = {"env": "prod", "role": "web"}


@pytest.mark.parametrize(
    "labels",
    [
        {},
        {"env": "prod"},
        {"example.com/team": "payments", "tier": ""},
        {"a" * 63: "b" * 63},
        {f"k{i}": "v" for i in range(MAX_LABELS)},
    ],
)
def test_labels_that_follow_the_rules(labels: dict[str, str]) -> None:
    assert check_labels(labels) == labels


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        ({"-env": "prod"}, "label key"),
        ({"env": "prod!"}, "label value"),
        ({"a" * 64: "x"}, "label key"),
        ({"env": "x" * 64}, "label value"),
        ({"Example.com/team": "x"}, "label key"),
        ({"/team": "x"}, "label key"),
        ({"env": 1}, "label value"),
        ({f"k{i}": "v" for i in range(MAX_LABELS + 1)}, "at most 64"),
        ([("env", "prod")], "object"),
    ],
)
def test_labels_that_break_a_rule_say_which(labels: Any, says: str) -> None:
    with pytest.raises(LabelError, match=says):
        check_labels(labels)


@pytest.mark.parametrize(
    ("selector", "labels", "matched"),
    [
        ("env=prod", PROD_WEB, True),
        ("env==prod", PROD_WEB, True),
        ("env!=prod", PROD_WEB, False),
        ("env!=prod", {"role": "web"}, True),  # as Kubernetes: no label is not prod
        ("env=prod,role in (web,api)", PROD_WEB, True),
        ("env=prod, role in (api, db)", PROD_WEB, False),
        ("role notin (api,db)", PROD_WEB, True),
        ("canary", PROD_WEB, False),
        ("!canary", PROD_WEB, True),
        ("env=prod,role in (web,api),!canary", PROD_WEB, True),
        ("env=prod,role in (web,api),!canary", {**PROD_WEB, "canary": ""}, False),
        ("tier=", {"tier": ""}, True),
        ("tier in (,x)", {"tier": ""}, True),
    ],
)
def test_label_selectors_match_as_kubernetes(
    selector: str, labels: dict[str, str], matched: bool
) -> None:
    assert parse_selector(selector).matches("web-1", labels) is matched


@pytest.mark.parametrize(
    ("selector", "says"),
    [
        ("", "matches nothing"),
        ("env=prod,", "end with ','"),
        ("env in web", "expected '\\('"),
        ("env in (web", "expected"),
        ("env prod", "expected =, ==, !=, in or notin"),
        ("=prod", "expected a label key"),
        ("env=pr od", "expected ','"),
        ("env=" + "x" * 64, "label value"),
        (",".join(f"k{i}" for i in range(65)), "at most 64 requirements"),
        ("k in (" + ",".join(f"v{i}" for i in range(300)) + ")", "at most 256 values"),
        ("x" * 5000, "at most 4096"),
        ({"transport": "ssm"}, "names no agents"),
        ({"glob": "*", "colour": "red"}, "unknown member colour"),
        ({"ids": []}, "non-empty list"),
        ({"ids": ["a b"]}, "each is 1-128"),
        (7, "string or an object"),
    ],
)
def test_selectors_that_cannot_be_read_say_why(selector: Any, says: str) -> None:
    with pytest.raises(SelectorError, match=says):
        parse_selector(selector)


def test_the_object_form_applies_every_part() -> None:
    selector = parse_selector(
        {"ids": ["web-1", "db-1"], "glob": "web-*", "labels": "env=prod", "transport": "websocket"}
    )
    assert selector.matches("web-1", PROD_WEB, {"websocket": True})
    assert not selector.matches("web-1", PROD_WEB, {"ssm": True})
    assert not selector.matches("db-1", PROD_WEB, {"websocket": True})
    assert not selector.matches("web-1", {"env": "dev"}, {"websocket": True})
    assert selector.to_json()["labels"] == "env=prod"


@given(st.text(max_size=200))
def test_any_text_is_a_selector_or_a_clear_error(text: str) -> None:
    try:
        requirements = parse_labels(text)
    except SelectorError as exc:
        message = str(exc)
        assert message
    else:  # what was understood reads back the same
        again = parse_labels(",".join(r.to_text() for r in requirements)) if requirements else ()
        assert again == requirements


def test_amounts_are_counts_or_percentages_of_the_matched() -> None:
    assert Amount.parse("10%", "maxConcurrency", minimum=1).of(40, at_least=1) == 4
    assert Amount.parse("1%", "maxConcurrency", minimum=1).of(40, at_least=1) == 1
    assert Amount.parse(5, "maxConcurrency", minimum=1).of(40) == 5
    assert Amount.parse("0", "maxErrors", minimum=0).of(40) == 0
    for bad in ("0", "101%", "-1", "5.5", True, None):
        with pytest.raises(JobSpecError, match="maxConcurrency"):
            Amount.parse(bad, "maxConcurrency", minimum=1)


def test_a_job_request_has_documented_defaults_and_clear_errors() -> None:
    spec = parse_job(
        {"selector": "env=prod", "command": "ping"},
        default_timeout_ms=10_000,
        max_timeout_ms=60_000,
    )
    assert (spec.timeout_ms, spec.offline) == (10_000, "skip")
    assert (spec.max_concurrency.to_json(), spec.max_errors.to_json()) == ("50", "0")
    with pytest.raises(JobSpecError, match="unknown member colour"):
        parse_job(
            {"selector": "a", "command": "ping", "colour": 1},
            default_timeout_ms=1,
            max_timeout_ms=1,
        )
    with pytest.raises(JobSpecError, match="at most 65536 bytes"):
        parse_job(
            {"selector": "a", "command": "run", "args": {"blob": "x" * 70_000}},
            default_timeout_ms=1,
            max_timeout_ms=1,
        )
    with pytest.raises(JobSpecError, match="offline must be"):
        parse_job(
            {"selector": "a", "command": "ping", "offline": {}},
            default_timeout_ms=1,
            max_timeout_ms=1,
        )
    with pytest.raises(JobSpecError, match="selector and a command"):
        parse_job({"command": "ping"}, default_timeout_ms=1, max_timeout_ms=1)
    with pytest.raises(JobSpecError, match="timeoutMs"):
        parse_job(
            {"selector": "a", "command": "ping", "timeoutMs": 10**9},
            default_timeout_ms=1,
            max_timeout_ms=60_000,
        )


def test_labels_travel_in_auth_only_with_the_feature() -> None:
    offered = Capabilities(("ping",), ("labels",))
    hello = AuthHello("1.0", "web-01", offered, labels=(("env", "prod"),))
    assert AuthHello.from_payload(hello.to_payload()).labels == (("env", "prod"),)
    # Without the feature the member means nothing here (and is not checked).
    plain = {**hello.to_payload(), "capabilities": {"commands": ["ping"], "features": []}}
    assert AuthHello.from_payload({**plain, "labels": 5}).labels is None
    with pytest.raises(ProtocolError, match=r"payload\.labels"):
        AuthHello.from_payload({**hello.to_payload(), "labels": {"env": "prod!"}})


LABELS_SIGNATURE = "3d8c361257e3d59b57359fe816563b564f9e0299a10a4ff3f6879b992f931ecf"


def test_the_labels_vector_of_protocol_md() -> None:
    hello = AuthHello(
        "1.0.0",
        "web-01",
        Capabilities(("ping",), ("labels",)),
        labels=(("env", "prod"), ("example.com/team", "payments"), ("role", "web")),
    )
    key = derive_agent_key("peer-benchmark-master-secret", "agent-001")
    envelope = seal(
        MessageType.AUTH,
        "agent-001",
        hello.to_payload(),
        key=key,
        ts=1732550400000,
        nonce="3b241101-e2bb-4255-8caf-4136c566a962",
    )
    assert envelope.signature == LABELS_SIGNATURE
    document = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
    assert envelope.signing_input().decode() in document
    assert LABELS_SIGNATURE in document
