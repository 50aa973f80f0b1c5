"""Every option of every `aeserve` subcommand says its default in `--help` (issue: defaults
hidden from new users), except required options and on/off flags, which have none to say."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    from aeserve.cli import build_parser as top

    yield "serve", top()._subparsers._group_actions[0].choices["serve"]
    pytest.importorskip("torch")
    from aeserve.training.cli import build_parser as training

    yield from training()._subparsers._group_actions[0].choices.items()
    from aeserve.batch.cli import build_parser as batch

    yield "score", batch()


def test_every_option_says_its_default():
    silent = []
    for command, parser in parsers():
        for action in parser._actions:
            if (not action.option_strings or action.required
                    or isinstance(action, argparse._HelpAction | argparse._StoreConstAction)):
                continue  # positional, required, --help, and --flag (store_true) options
            help_text = parser._get_formatter()._expand_help(action) if action.help else ""
            if "default" not in help_text:
                silent.append(f"{command} {action.option_strings[0]}")
    assert silent == []
