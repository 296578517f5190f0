"""Every verb's flags, as `ctxlm <verb> --help` lists them, against a snapshot taken before the
command line was generated from the config dataclasses (issue 32): flag names, destinations,
defaults, choices, required, nargs, const, the kind of action and the value's type (by name). The snapshot is
tests/fixtures/cli_flags.json; after adding or changing a flag on purpose, regenerate it with

    PYTHONPATH=. python tests/test_cli_snapshot.py --write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "fixtures" / "cli_flags.json"


def _plain(value):
    """A JSON-able form of a default, choice or const."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def _verbs(parser: argparse.ArgumentParser, name: str = "ctxlm"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                yield from _verbs(sub, f"{name} {verb}")


def _flag(action: argparse.Action) -> dict:
    return {
        "dest": action.dest,
        "default": _plain(action.default),
        "choices": _plain(list(action.choices)) if action.choices is not None else None,
        "required": action.required,
        "nargs": _plain(action.nargs),
        "const": _plain(action.const),
        "action": type(action).__name__,
        "type": getattr(action.type, "__name__", None),
    }


def flag_sets(parser: argparse.ArgumentParser) -> dict:
    """{verb: {flag: its settings}} for every verb and sub-verb, and each verb's mutually exclusive groups."""
    snapshot = {}
    for name, sub in _verbs(parser):
        flags = {
            ", ".join(a.option_strings): _flag(a)
            for a in sub._actions
            if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
        }
        groups = sorted(
            sorted(", ".join(a.option_strings) for a in g._group_actions) + [f"required={g.required}"]
            for g in sub._mutually_exclusive_groups
        )
        snapshot[name] = {"flags": flags, "exclusive": groups}
    return snapshot


def live() -> dict:
    from ctxlm.cli import build_parser

    return json.loads(json.dumps(flag_sets(build_parser())))


def test_every_verbs_flags_match_the_snapshot():
    expected, now = json.loads(SNAPSHOT.read_text(encoding="utf-8")), live()
    assert sorted(now) == sorted(expected)
    for verb in expected:
        assert now[verb]["flags"] == expected[verb]["flags"], verb
        assert now[verb]["exclusive"] == expected[verb]["exclusive"], verb


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: PYTHONPATH=. python tests/test_cli_snapshot.py --write")
    SNAPSHOT.write_text(json.dumps(live(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
