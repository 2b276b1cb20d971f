"""Shared fixtures: the independent test vectors and a small signed-frame factory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]
# shared/ lies beside the checkout (developers' trees and CI's clean clone alike).
VECTORS = Path(
    os.environ.get("MONITORING_WS_VECTORS", REPO.parent / "shared" / "protocol-test-vectors.json")
)


@pytest.fixture(scope="session")
def vectors() -> list[dict[str, Any]]:
    if not VECTORS.is_file():
        pytest.fail(
            f"test vectors not found at {VECTORS}: they come from ../shared/ "
            "(or set MONITORING_WS_VECTORS to their path)"
        )
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert data, "the vector file is empty"
    return data
