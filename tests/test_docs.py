"""Docs stay true to the code: every command and option is documented and has help."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from accessd.cli.main import build_parser

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _commands(sub, f"{prefix}{name} ")


COMMANDS = list(_commands(build_parser()))


@pytest.mark.parametrize(("name", "parser"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_has_help_and_docs(name: str, parser: argparse.ArgumentParser) -> None:
    assert parser.description, f"{name} has no description"
    doc = (DOCS / ("central.md" if name.startswith("central") else "cli.md")).read_text()
    assert f"accessd {name}" in doc or f"`{name.split()[-1]}`" in doc, \
        f"'accessd {name}' is not documented"
    for action in parser._actions:
        if action.dest == "help" or isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, f"{name}: {action.dest} has no help"
        for opt in action.option_strings:
            assert f"`{opt}" in doc, f"{name}: option {opt} is not documented"


def test_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    for name, _ in COMMANDS:
        with pytest.raises(SystemExit) as ex:
            build_parser().parse_args([*name.split(), "--help"])
        assert ex.value.code == 0
    assert "usage: accessd" in capsys.readouterr().out
