"""Agent labels (``env=prod``), with Kubernetes' rules for keys and values.

A key is an optional prefix (a DNS subdomain, at most 253 characters, lower case) and
``/``, then a name: 1-63 characters of ``[A-Za-z0-9-_.]``, beginning and ending with a
letter or digit. A value is empty or follows the name's rule. At most ``MAX_LABELS`` per
agent, and ``MAX_LABELS_BYTES`` of keys and values together (the ``auth`` frame that
carries them must stay under the server's first-frame limit, 16 KiB by default). Shared
by the agent (its settings), the protocol (the ``labels`` feature of the auth exchange)
and the server (its API and selectors).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FEATURE_LABELS",
    "MAX_LABELS",
    "MAX_LABELS_BYTES",
    "LabelError",
    "check_key",
    "check_labels",
    "check_value",
]

#: The auth exchange's feature: the agent's ``auth`` payload carries ``labels``.
FEATURE_LABELS = "labels"
MAX_LABELS = 64
MAX_LABELS_BYTES = 8192
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
KEY_RULE = (
    "a label key is an optional DNS-subdomain prefix and '/', then 1-63 characters of "
    "[A-Za-z0-9-_.] beginning and ending with a letter or digit"
)
VALUE_RULE = (
    "a label value is empty or 1-63 characters of [A-Za-z0-9-_.] beginning and ending "
    "with a letter or digit"
)


class LabelError(ValueError):
    """A label that breaks the rules; the message says which and why."""


def check_key(key: object) -> str:
    """``key`` if it is a label key; raises ``LabelError``."""
    if not isinstance(key, str):
        raise LabelError(KEY_RULE)
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _PREFIX.fullmatch(prefix)):
        raise LabelError(f"{key[:80]!r}: {KEY_RULE}")
    if not _NAME.fullmatch(name):
        raise LabelError(f"{key[:80]!r}: {KEY_RULE}")
    return key


def check_value(key: str, value: object) -> str:
    """``value`` if it is a label value; raises ``LabelError``."""
    if not isinstance(value, str) or (value and not _NAME.fullmatch(value)):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise LabelError(f"{key}={shown!r}: {VALUE_RULE}")
    return value


def check_labels(labels: Any) -> dict[str, str]:
    """A copy of ``labels`` (an object of strings) if every key and value follows the
    rules and there are at most ``MAX_LABELS``; raises ``LabelError`` naming the first
    that does not."""
    if not isinstance(labels, Mapping):
        raise LabelError("labels must be an object of key: value strings")
    if len(labels) > MAX_LABELS:
        raise LabelError(f"at most {MAX_LABELS} labels ({len(labels)} given)")
    checked = {check_key(key): check_value(key, value) for key, value in labels.items()}
    size = sum(len(key) + len(value) for key, value in checked.items())
    if size > MAX_LABELS_BYTES:
        raise LabelError(f"labels hold {size} characters, at most {MAX_LABELS_BYTES}")
    return checked
