"""Allow-lists of command lines, matched argument by argument (no I/O).

Used by the agent's ``run`` (``allowedCommands``) and by the server for shell over SSM
(``ssm_shell_allowed``). An entry is written in shell syntax and split like one; each of
its words matches exactly one argument of the command line, itself split the same way:

- a plain word matches that exact argument;
- a word written ``re:PATTERN`` matches an argument the regular expression matches in
  full, unless the argument has a ``..`` path component or a NUL (a pattern that names a
  directory never reaches outside it).

So ``cat re:/var/log/app/[^/]+`` allows ``cat /var/log/app/x.log`` and refuses
``cat /var/log/app/../secret``, ``cat /var/log/app/x /etc/shadow`` and anything else.
A regular expression never sees the raw line, so it cannot be stretched across arguments.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["AllowList", "AllowListError", "split_line"]

_REGEX_ONLY = re.compile(r"[\[\]\\*+?()|^$]")


class AllowListError(ValueError):
    """An entry cannot be read; the message names it and says how to write it."""


def split_line(line: str) -> list[str] | None:
    """The arguments of a command line split as a POSIX shell would (no expansion); None
    when it cannot be split (an unclosed quote)."""
    try:
        return shlex.split(line)
    except ValueError:
        return None


@attrs.frozen
class _Word:
    literal: str | None
    pattern: re.Pattern[str] | None

    def matches(self, argument: str) -> bool:
        if self.literal is not None:
            return argument == self.literal
        assert self.pattern is not None  # noqa: S101 - one of the two is set
        if "\0" in argument or ".." in argument.split("/"):
            return False
        return self.pattern.fullmatch(argument) is not None


def _entry(text: str) -> tuple[_Word, ...]:
    words = split_line(text)
    if not words:
        raise AllowListError(f"allow-list entry {text!r} is empty or has an unclosed quote")
    if (
        text.startswith("re:")
        and len(words) > 1
        and any(not w.startswith("re:") and _REGEX_ONLY.search(w) for w in words[1:])
    ):
        raise AllowListError(
            f"allow-list entry {text!r} looks like one regular expression over the whole "
            "line; each word now matches one argument: write re: before each pattern word, "
            "e.g. 'cat re:/var/log/app/[^/]+'"
        )
    parsed = []
    for word in words:
        if word.startswith("re:"):
            try:
                parsed.append(_Word(None, re.compile(word[3:])))
            except re.error as exc:
                raise AllowListError(f"allow-list entry {text!r}: bad pattern: {exc}") from None
        else:
            parsed.append(_Word(word, None))
    return tuple(parsed)


@attrs.frozen
class AllowList:
    """Parsed entries; an empty list allows nothing."""

    entries: tuple[tuple[_Word, ...], ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Raises ``AllowListError`` for an entry that cannot be read."""
        return cls(tuple(_entry(text) for text in entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows(self, arguments: Sequence[str]) -> bool:
        """Whether some entry matches ``arguments`` word for word."""
        return any(
            len(entry) == len(arguments)
            and all(word.matches(arg) for word, arg in zip(entry, arguments, strict=True))
            for entry in self.entries
        )

    def allows_line(self, line: str) -> list[str] | None:
        """The arguments of ``line`` when an entry allows them, else None."""
        arguments = split_line(line)
        return arguments if arguments and self.allows(arguments) else None
