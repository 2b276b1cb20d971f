"""The strict reader refuses what would make signatures ambiguous or the server fall over."""

from __future__ import annotations

import pytest

from monitoring_ws.protocol.strictjson import MAX_DEPTH, JSONRejectedError, loads


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',
        '{"x": {"a": 1, "b": 2, "a": 1}}',
        '[{"k": null, "k": null}]',
        "NaN",
        '{"a": Infinity}',
        "[-Infinity]",
        "[1e400]",
        "[-1e400]",
        "[" + "9" * 400 + ".0]",
        "[9007199254740992]",
        "[-9007199254740992]",
        "[" + "1" * 5000 + "]",
        '["\\ud800"]',
        '["\\udc00"]',
        '["\\ude00\\ud83d"]',
        '{"\\ud83d": 1}',
        "\ufeff{}",
        "{} x",
        "{'a': 1}",
        "",
        "[1,]",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(JSONRejectedError):
        loads(text)


def test_raw_lone_surrogate_in_text_is_refused() -> None:
    with pytest.raises(JSONRejectedError):
        loads('["\ud800"]')


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("[9007199254740991, -9007199254740991]", [2**53 - 1, -(2**53 - 1)]),
        ('["\\ud83d\\ude00"]', ["😀"]),
        ('{"a": 1e308}', {"a": 1e308}),
        ('{"s": "[[[[ {{{{"}', {"s": "[[[[ {{{{"}),
    ],
)
def test_accepted(text: str, value: object) -> None:
    assert loads(text) == value


def test_depth_limit_is_exact() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(JSONRejectedError, match="nesting"):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    mixed = '{"a":' * (MAX_DEPTH - 1) + "[]" + "}" * (MAX_DEPTH - 1)
    assert loads(mixed) is not None


def test_very_deep_input_is_refused_without_recursion_error() -> None:
    for depth in (1000, 100_000, 500_000):
        with pytest.raises(JSONRejectedError):
            loads("[" * depth + "]" * depth)
        with pytest.raises(JSONRejectedError):
            loads('{"a":' * depth)


def test_brackets_in_strings_do_not_count_toward_depth() -> None:
    text = '{"s": "' + "[" * 1000 + '\\"' + "{" * 1000 + '"}'
    assert loads(text) == {"s": "[" * 1000 + '"' + "{" * 1000}


def test_many_shallow_containers_are_fine() -> None:
    assert len(loads("[" + ",".join(["[]"] * 50_000) + "]")) == 50_000


@pytest.mark.parametrize(
    "text",
    [
        "[" * 65 + '"' + '\\"' * 500_000,  # an unterminated string full of escaped quotes
        "[" * 65 + '"' + "a" * 1_000_000 + "\\",
        "[" * 65 + '"a",' * 250_000,
        "[" * 1_000_000,
        "[" + "1" * 1_000_000 + ".5]",
    ],
)
@pytest.mark.timeout(120)  # a hang guard: the quadratic scan this guards against took hours
def test_adversarial_megabyte_inputs_are_refused_in_linear_time(text: str) -> None:
    with pytest.raises(JSONRejectedError):
        loads(text)
