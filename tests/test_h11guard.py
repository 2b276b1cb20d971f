"""The guarded h11 header pattern reads every line as h11's own does."""

from __future__ import annotations

import re

from h11 import _readers
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring_ws.host.serving.h11guard import ORIGINAL_PATTERN, guard_h11

ORIGINAL = re.compile(ORIGINAL_PATTERN)
PIECES = [b" ", b"\t", b"  ", b"a", b"B~", b"\x00", b"\x01", b"\x80", b":", b"\r", b"\x0b", b""]


def test_the_guard_is_in_place_with_the_installed_h11() -> None:
    assert guard_h11()
    assert guard_h11()  # again: a no-op
    assert _readers.header_field_re.pattern != ORIGINAL_PATTERN
    line = b"X:" + b" " * 20_000 + b"\x00"  # quadratic in h11's own pattern
    assert _readers.header_field_re.fullmatch(line) is None


@settings(max_examples=4000, deadline=None)
@given(
    st.sampled_from([b"X", b"Content-Length", b"a b", b""]),
    st.lists(st.sampled_from(PIECES), max_size=12),
)
def test_the_guarded_pattern_reads_every_line_as_h11s(name: bytes, pieces: list[bytes]) -> None:
    guard_h11()
    line = name + b":" + b"".join(pieces)
    theirs = ORIGINAL.fullmatch(line)
    ours = _readers.header_field_re.fullmatch(line)
    assert (theirs is None) == (ours is None), line
    if theirs is not None and ours is not None:
        assert theirs.groupdict() == ours.groupdict()
