"""The protocol core imports no I/O framework (a fresh interpreter proves it)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = [
    "trio",
    "quart",
    "quart_trio",
    "hypercorn",
    "trio_websocket",
    "boto3",
    "botocore",
    "asyncio",
    "socket",
    "ssl",
    "anyio",
]


def test_protocol_imports_no_io() -> None:
    code = (
        "import sys, monitoring_ws.protocol\n"
        f"bad = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"monitoring_ws.protocol imported {out}"
