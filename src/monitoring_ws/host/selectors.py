"""Which agents a job or a listing means: ids, an id glob, a label selector in Kubernetes'
syntax (``env=prod,role in (web,api),!canary``), optionally one transport.

Pure code: parsing and matching, no I/O. In JSON a selector is a label-selector string or
an object ``{"ids": [...], "glob": "web-*", "labels": "env=prod", "transport": "ssm"}``
whose parts all apply (docs/api.md, "Selectors").
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ..protocol import AGENT_ID
from ..protocol.labels import LabelError, check_key, check_value
from ..protocol.payloads import NAME

__all__ = ["MAX_IDS", "Requirement", "Selector", "SelectorError", "parse_labels", "parse_selector"]

#: Bounds on what a selector may say (every part is checked before anything is matched).
MAX_SELECTOR_CHARS = 4096
MAX_REQUIREMENTS = 64
MAX_SET_VALUES = 256
MAX_IDS = 100_000
_TOKEN = re.compile(r"\s*(!=|==|=|,|\(|\)|!|[^\s!=,()]+)")
_SELECTOR_KEYS = frozenset({"ids", "glob", "labels", "transport"})


class SelectorError(ValueError):
    """A selector that cannot be read; the message says where and why."""


@attrs.frozen
class Requirement:
    """One clause: ``op`` is ``=``, ``!=``, ``in``, ``notin``, ``exists`` or ``!exists``."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in {"=", "in"}:
            return value is not None and value in self.values
        return value is None or value not in self.values  # != and notin, as Kubernetes

    def to_text(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return f"!{self.key}"
        if self.op in {"=", "!="}:
            return f"{self.key}{self.op}{next(iter(self.values))}"
        return f"{self.key} {self.op} ({','.join(sorted(self.values))})"


def parse_labels(text: str) -> tuple[Requirement, ...]:
    """A label selector's requirements; raises ``SelectorError``."""
    if len(text) > MAX_SELECTOR_CHARS:
        raise SelectorError(f"a label selector is at most {MAX_SELECTOR_CHARS} characters")
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    position = 0
    while position < len(tokens):
        requirement, position = _requirement(tokens, position)
        requirements.append(requirement)
        if len(requirements) > MAX_REQUIREMENTS:
            raise SelectorError(f"a label selector holds at most {MAX_REQUIREMENTS} requirements")
        if position < len(tokens):
            if tokens[position] != ",":
                raise SelectorError(f"expected ',' before {tokens[position]!r}")
            position += 1
            if position == len(tokens):
                raise SelectorError("a label selector may not end with ','")
    return tuple(requirements)


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        if text[position:].isspace():
            break
        found = _TOKEN.match(text, position)
        if found is None:  # pragma: no cover - the pattern takes any non-space character
            raise SelectorError(f"cannot read the selector at {text[position:][:20]!r}")
        tokens.append(found.group(1))
        position = found.end()
    return tokens


def _requirement(tokens: list[str], at: int) -> tuple[Requirement, int]:
    if tokens[at] == "!":
        key = _key(tokens, at + 1)
        return Requirement(key, "!exists"), at + 2
    key = _key(tokens, at)
    at += 1
    if at == len(tokens) or tokens[at] == ",":
        return Requirement(key, "exists"), at
    op = tokens[at]
    if op in {"=", "==", "!="}:
        value = tokens[at + 1] if at + 1 < len(tokens) and tokens[at + 1] != "," else ""
        at += 2 if value else 1
        return Requirement(key, "!=" if op == "!=" else "=", frozenset({_value(key, value)})), at
    if op in {"in", "notin"}:
        return _set(tokens, at + 1, key, op)
    raise SelectorError(f"after {key!r} expected =, ==, !=, in or notin, got {op!r}")


def _set(tokens: list[str], at: int, key: str, op: str) -> tuple[Requirement, int]:
    if at >= len(tokens) or tokens[at] != "(":
        raise SelectorError(f"{key} {op}: expected '('")
    values: set[str] = set()
    at += 1
    while True:
        if at >= len(tokens):
            raise SelectorError(f"{key} {op}: expected ')'")
        if tokens[at] in {",", ")"}:  # an empty value: a label that is set to ""
            values.add("")
        else:
            values.add(_value(key, tokens[at]))
            at += 1
        if len(values) > MAX_SET_VALUES:
            raise SelectorError(f"{key} {op}: at most {MAX_SET_VALUES} values")
        if at < len(tokens) and tokens[at] == ")":
            return Requirement(key, op, frozenset(values)), at + 1
        if at >= len(tokens) or tokens[at] != ",":
            raise SelectorError(f"{key} {op}: expected ',' or ')'")
        at += 1


def _key(tokens: list[str], at: int) -> str:
    if at >= len(tokens) or tokens[at] in {",", "(", ")", "!", "=", "==", "!="}:
        raise SelectorError("expected a label key")
    try:
        return check_key(tokens[at])
    except LabelError as exc:
        raise SelectorError(str(exc)) from None


def _value(key: str, value: str) -> str:
    try:
        return check_value(key, value)
    except LabelError as exc:
        raise SelectorError(str(exc)) from None


@attrs.frozen
class Selector:
    """Agents by id, glob, labels and transport; every part given must hold."""

    ids: frozenset[str] | None = None
    glob: str | None = None
    labels: tuple[Requirement, ...] | None = None
    transport: str | None = None

    def matches(self, agent_id: str, labels: Mapping[str, str], transports: Any = ()) -> bool:
        """Whether the agent is meant (``transports``: the names that list it)."""
        if self.ids is not None and agent_id not in self.ids:
            return False
        if self.glob is not None and not fnmatch.fnmatchcase(agent_id, self.glob):
            return False
        if self.transport is not None and self.transport not in transports:
            return False
        return self.labels is None or all(r.matches(labels) for r in self.labels)

    def to_json(self) -> dict[str, Any]:
        """The object form, as it was understood."""
        shown: dict[str, Any] = {}
        if self.ids is not None:
            shown["ids"] = sorted(self.ids)
        if self.glob is not None:
            shown["glob"] = self.glob
        if self.labels is not None:
            shown["labels"] = ",".join(r.to_text() for r in self.labels)
        if self.transport is not None:
            shown["transport"] = self.transport
        return shown


def parse_selector(value: Any) -> Selector:
    """A selector from JSON (a label-selector string or an object); raises
    ``SelectorError`` saying what is wrong."""
    if isinstance(value, str):
        if not value.strip():
            raise SelectorError('an empty selector matches nothing: give labels, or {"glob": "*"}')
        return Selector(labels=parse_labels(value))
    if not isinstance(value, Mapping):
        raise SelectorError("selector must be a label-selector string or an object")
    unknown = sorted(set(value) - _SELECTOR_KEYS)
    if unknown:
        raise SelectorError(f"selector: unknown member {', '.join(unknown)}")
    if not set(value) & {"ids", "glob", "labels"}:
        raise SelectorError('selector names no agents: give ids, glob or labels ("glob": "*")')
    return Selector(
        ids=_ids(value.get("ids")),
        glob=_glob(value.get("glob")),
        labels=None if value.get("labels") is None else _labels(value["labels"]),
        transport=_transport(value.get("transport")),
    )


def _ids(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise SelectorError("selector.ids must be a non-empty list of agent ids")
    if len(value) > MAX_IDS:
        raise SelectorError(f"selector.ids: at most {MAX_IDS} agent ids")
    for agent_id in value:
        if not isinstance(agent_id, str) or not AGENT_ID.fullmatch(agent_id):
            raise SelectorError("selector.ids: each is 1-128 chars of [A-Za-z0-9._:-]")
    return frozenset(value)


def _glob(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise SelectorError("selector.glob must be 1-256 characters (fnmatch: web-*)")
    return value


def _labels(value: Any) -> tuple[Requirement, ...]:
    if not isinstance(value, str) or not value.strip():
        raise SelectorError("selector.labels must be a non-empty label-selector string")
    return parse_labels(value)


def _transport(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise SelectorError("selector.transport must be a transport's name")
    return value
