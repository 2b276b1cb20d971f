"""A guard on h11's header-line pattern, which backtracks quadratically.

h11 (0.16) reads each header line with ``name ":" OWS field-value OWS``. On a value of
blanks that ends in a byte the pattern refuses (``X:`` + 60,000 spaces + NUL) the regex
engine tries every split of the blanks between the two OWS: 16 s of CPU for one request
of 60 KB, 1.3 s for 16 KB (Hypercorn's head limit), all on the event loop that serves
every agent. Every HTTP/1 head in this server goes through h11 somewhere (Hypercorn, the
lean listener's fallback, wsproto's upgrade handshake).

The same pattern with its leading blanks possessive (``[ \\t]*+``) accepts exactly the
same lines with the same captures: a field value begins with a visible byte or is empty,
so giving blanks back to it never makes a match that keeping them missed (the empty value
leaves them to the trailing OWS, which ends the line either way). tests/test_h11guard.py
checks both against each other over generated lines, and that the guard is in place with
the h11 this project installs (an upgrade that changes the pattern fails there first).
"""

from __future__ import annotations

import logging
import re

from h11 import _readers

__all__ = ["ORIGINAL_PATTERN", "guard_h11"]

log = logging.getLogger("monitoring_ws.serve")

#: h11 0.16's ``header_field_re`` pattern, as the guard expects to find it.
ORIGINAL_PATTERN = (
    rb"(?P<field_name>[-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*"
    rb"(?P<field_value>([^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
_GUARDED = re.compile(ORIGINAL_PATTERN.replace(rb":[ \t]*(", rb":[ \t]*+(", 1))


def guard_h11() -> bool:
    """Put the linear pattern in h11's place (idempotent); False, with a warning, when h11
    no longer has the pattern this replaces (then it is left as it is)."""
    current = getattr(_readers, "header_field_re", None)
    if current is _GUARDED:
        return True
    if current is None or current.pattern != ORIGINAL_PATTERN:
        log.warning(
            "h11's header pattern is not the one the guard replaces (h11 changed): left as it "
            "is; a head of long blank runs may cost the event loop seconds (docs/security.md)"
        )
        return False
    _readers.header_field_re = _GUARDED
    return True
