"""Shell completion for ``monitoring-ws``: a bash function written from the argument
parser (subcommands, ``ctl``'s nouns and verbs, their flags); zsh loads it through
``bashcompinit``. ``eval "$(monitoring-ws ctl completion bash)"`` in ~/.bashrc."""

from __future__ import annotations

import argparse
import shlex

__all__ = ["completion_script"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    """Its long flags, and the choices of its positionals (``completion bash|zsh``)."""
    words = []
    for action in parser._actions:
        words += [flag for flag in action.option_strings if flag.startswith("--")]
        if (
            not action.option_strings
            and action.choices
            and not isinstance(action, argparse._SubParsersAction)
        ):
            words += [str(choice) for choice in action.choices]
    return sorted(words)


def _valued(parser: argparse.ArgumentParser, into: set[str]) -> set[str]:
    """Every flag, in this parser and below, that takes a value (its value is skipped)."""
    for action in parser._actions:
        if action.option_strings and action.nargs != 0:
            into.update(action.option_strings)
    for child in _subparsers(parser).values():
        _valued(child, into)
    return into


def _words(words: list[str]) -> str:
    return shlex.quote(" ".join(words))


def completion_script(root: argparse.ArgumentParser, shell: str) -> str:
    """The script for ``shell`` (bash or zsh)."""
    commands = _subparsers(root)
    cases = [f'    "") reply={_words(sorted(commands))} ;;']
    for name, parser in sorted(commands.items()):
        nouns = _subparsers(parser)
        cases.append(f'    "{name}") reply={_words(sorted(nouns) + _flags(parser))} ;;')
        for noun, noun_parser in sorted(nouns.items()):
            verbs = _subparsers(noun_parser)
            cases.append(
                f'    "{name} {noun}") reply={_words(sorted(verbs) + _flags(noun_parser))} ;;'
            )
            for verb, verb_parser in sorted(verbs.items()):
                cases.append(f'    "{name} {noun} {verb}") reply={_words(_flags(verb_parser))} ;;')
    body = "\n".join(cases)
    valued = "|".join(sorted(_valued(root, set())))
    script = f"""# monitoring-ws completion ({shell}); from `monitoring-ws ctl completion {shell}`
_monitoring_ws() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} path="" word i reply=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    word=${{COMP_WORDS[i]}}
    case "$word" in
      --) break ;;
      {valued}) ((i++)) ;;
      -*) ;;
      *) [ "$(printf '%s' "$path" | wc -w)" -lt 3 ] && path="${{path:+$path }}$word" ;;
    esac
  done
  case "$path" in
{body}
  esac
  COMPREPLY=($(compgen -W "$reply" -- "$cur"))
}}
complete -o default -F _monitoring_ws monitoring-ws
"""
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script
