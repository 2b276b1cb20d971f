"""Hypothesis strategies for JSON values and envelope fields."""

from __future__ import annotations

from hypothesis import strategies as st

from monitoring_ws.protocol import MAX_SAFE_INTEGER

# Text without lone surrogates (not representable in UTF-8, refused by the reader).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
ascii_text = st.text(st.characters(max_codepoint=127), max_size=8)
floats = st.floats(allow_nan=False, allow_infinity=False)
tricky_floats = st.sampled_from(
    [
        0.0,
        -0.0,
        1.0,
        -1.0,
        1e-7,
        1e-6,
        1e-5,
        1e21,
        1e20,
        1e16,
        9007199254740992.0,
        5e-324,
        1.7976931348623157e308,
        0.1,
        123456789.5,
        2.5e-5,
        4.35,
        1e22,
        333333333.33333329,
    ]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | floats
    | tricky_floats
    | text
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(text | ascii_text, children, max_size=5)
    ),
    max_leaves=30,
)


agent_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
nonces = st.from_regex(r"\A[A-Za-z0-9-]{16,64}\Z")
timestamps = st.integers(0, MAX_SAFE_INTEGER)
payloads = st.dictionaries(text | ascii_text, json_values, max_size=6)
