"""Unmasking WebSocket frames in C: wsproto (under Hypercorn and the lean listener alike)
unmasks every agent frame in pure Python, ~2 us for a 300-byte frame; wsaccel's masker
does the same in ~0.5 us. tests/test_wsmask.py checks the two agree byte for byte over
any key, payload and split into chunks."""

from __future__ import annotations

from wsproto import frame_protocol

__all__ = ["PYTHON_MASKER", "accelerate_masking"]

#: wsproto's own masker, kept before any swap (the test compares against it).
PYTHON_MASKER = frame_protocol.XorMaskerSimple


def accelerate_masking() -> bool:
    """Use wsaccel's masker in wsproto when wsaccel is installed; whether it is used."""
    try:
        from wsaccel.xormask import (  # type: ignore[import-untyped]  # noqa: PLC0415
            XorMaskerSimple,  # optional
        )
    except ImportError:
        return False
    # wsproto looks the name up in its module each time it builds a frame's masker.
    setattr(frame_protocol, "XorMaskerSimple", XorMaskerSimple)  # noqa: B010
    return True
