"""Fitting payloads into a frame limit: what is cut, what is kept, and that it fits."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring_ws.protocol import MessageType, encoded_size, fit_payload
from monitoring_ws.protocol.fitting import shrink

from .strategies import json_values

BUDGETS = st.integers(min_value=256, max_value=20_000)


@settings(max_examples=300)
@given(json_values, st.integers(min_value=2, max_value=2000))
def test_shrink_never_grows_and_fits_containers(value: Any, budget: int) -> None:
    shrunk = shrink(value, budget)
    assert encoded_size(shrunk) <= encoded_size(value)
    if isinstance(value, str | list | dict):
        assert encoded_size(shrunk) <= max(budget, 2)


@settings(max_examples=100)
@given(st.text(min_size=1, max_size=5_000), BUDGETS)
def test_a_command_result_fits_and_says_so(output: str, budget: int) -> None:
    payload = {
        "commandId": "c-1",
        "ok": True,
        "durationMs": 5,
        "result": {"stdout": output * 3, "stderr": output, "exitCode": 0},
        "delivery": {"stream": "s", "seq": 4},
    }
    fitted = fit_payload(MessageType.COMMAND_RESULT, payload, budget)
    assert encoded_size(fitted) <= budget + 200
    assert fitted["commandId"] == "c-1"
    assert fitted["delivery"] == payload["delivery"]
    result = fitted["result"]
    assert result["truncated"] is True
    assert result["originalBytes"] == encoded_size(payload["result"])
    assert result["exitCode"] == 0
    assert payload["result"]["stdout"].startswith(result["stdout"])  # the beginning is kept


def test_a_log_batch_keeps_whole_entries_first() -> None:
    entries = [{"ts": 1, "level": "info", "message": "x" * 1000} for _ in range(100)]
    fitted = fit_payload(MessageType.LOG, {"entries": entries}, 10_000)
    assert encoded_size(fitted) <= 10_000
    assert fitted["truncated"] is True
    assert fitted["originalEntries"] == 100
    assert 5 <= len(fitted["entries"]) < 100
    assert all(entry["level"] == "info" for entry in fitted["entries"])


def test_other_payloads_keep_their_delivery_number() -> None:
    payload = {"blob": "y" * 100_000, "cpu": 5, "delivery": {"stream": "s", "seq": 9}}
    fitted = fit_payload(MessageType.METRICS, payload, 4096)
    assert encoded_size(fitted) <= 4096
    assert fitted["delivery"] == {"stream": "s", "seq": 9}
    assert fitted["cpu"] == 5
    assert fitted["truncated"] is True
