"""The command-line allow-list: word for word, patterns per argument, no ``..`` escapes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring_ws.allowlist import AllowList, AllowListError

LIST = AllowList.parse(
    [
        "uptime",
        "systemctl status nginx",
        "cat re:/var/log/app/[^/]+",
        "df -h re:/[a-z]*",
        "'quoted arg' two",
    ]
)


@pytest.mark.parametrize(
    "line",
    [
        "uptime",
        "  uptime  ",
        "systemctl status nginx",
        "cat /var/log/app/x.log",
        "cat '/var/log/app/with space.log'",
        "df -h /home",
        "df -h /",
        "'quoted arg' two",
    ],
)
def test_allowed(line: str) -> None:
    assert LIST.allows_line(line) is not None


@pytest.mark.parametrize(
    "line",
    [
        "uptime -p",
        "systemctl status nginx; reboot",
        "systemctl stop nginx",
        "cat /var/log/app/../secret",  # the bypass of re:cat /var/log/app/[^ ]+
        "cat /var/log/app/..",
        "cat /var/log/app/x /etc/shadow",
        "cat /var/log/app/sub/x",
        "cat '/var/log/app/x\0'",
        "df -h /home /etc",
        "df",
        "",
        "cat 'unclosed",
        "quoted arg two",
    ],
)
def test_refused(line: str) -> None:
    assert LIST.allows_line(line) is None


def test_the_split_arguments_are_what_runs() -> None:
    assert LIST.allows_line("cat '/var/log/app/a b'") == ["cat", "/var/log/app/a b"]


def test_an_empty_list_allows_nothing() -> None:
    assert not AllowList.parse([])
    assert AllowList.parse([]).allows_line("uptime") is None


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("re:cat /var/log/app/[^ ]+", "re: before each pattern word"),
        ("re:df -h( /[a-z]*)?", "re: before each pattern word"),
        ("cat re:[unclosed", "bad pattern"),
        ("", "empty"),
        ("echo 'open", "unclosed quote"),
    ],
)
def test_unreadable_entries_say_how_to_write_them(entry: str, fragment: str) -> None:
    with pytest.raises(AllowListError, match="allow-list entry") as caught:
        AllowList.parse([entry])
    assert fragment in str(caught.value)


_ARG = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12)


@given(st.lists(_ARG, min_size=1, max_size=4), st.lists(_ARG, min_size=0, max_size=4))
def test_a_directory_pattern_never_admits_dot_dot(prefix: list[str], rest: list[str]) -> None:
    """Whatever precedes or follows, an argument with a ``..`` component is refused."""
    allow = AllowList.parse(["cat re:/srv/[^/]*.*"])
    argument = "/srv/" + "/".join([*prefix, "..", *rest])
    assert not allow.allows(["cat", argument])
