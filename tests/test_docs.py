"""Docs stay true to the code, both ways.

- The command line: each command of `accessd` has a description and a section of its own in
  docs/cli.md or docs/central.md, whose options block (every option, its metavar and choices,
  the help text `--help` prints, the default) is generated from the parser and must match it;
  the section's prose may not name an option the command lacks (tests/cli_docs.py).
- The configuration: every key of accessd/config.py is in docs/configuration.md and in
  config/accessd.example.toml, and neither documents a key or a default the code lacks.

A failure says what is missing or wrong, and where, so that a branch adding a command or a
key knows what to write.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
import typing
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest
from cli_docs import commands, problems

from accessd import config as config_module
from accessd.cli.main import build_parser
from accessd.config import Config, parse_config
from accessd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DOC = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "config" / "accessd.example.toml"
COMMANDS = [c for c in commands() if c.name]


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.name for c in COMMANDS])
def test_command_has_a_description_and_help_for_each_option(cmd: Any) -> None:
    assert cmd.parser.description, f"{cmd.title} has no description"
    for action in cmd.parser._actions:
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            assert action.help, f"{cmd.title}: {action.dest} has no help"


def test_cli_pages_match_the_parsers() -> None:
    found = problems()
    assert not found, "\n".join(found)


def test_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in COMMANDS:
        with pytest.raises(SystemExit) as ex:
            build_parser().parse_args([*cmd.name.split(), "--help"])
        assert ex.value.code == 0
    assert "usage: accessd" in capsys.readouterr().out


def test_a_stale_options_table_is_reported_where_it_is(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import cli_docs

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("cli.md", "central.md"):
        text = (cli_docs.DOCS / name).read_text(encoding="utf-8")
        if name == "cli.md":
            text = text.replace("| `--timeout TIMEOUT` |", "| `--timeout SECONDS` |")
            text = text.replace("## `accessd status`", "## Status")
            operator = ("| `--operator OPERATOR` | who does this (journalled; default "
                        "$SUDO_USER, else $USER) | `$SUDO_USER` |")
            i = text.index("## `accessd revoke`")
            text = text[:i] + text[i:].replace(operator, operator + "\n| `--force` | do it | |", 1)
        (docs / name).write_text(text, encoding="utf-8")
    monkeypatch.setattr(cli_docs, "DOCS", docs)
    monkeypatch.setattr(cli_docs, "ROOT", tmp_path)
    found = "\n".join(cli_docs.problems())
    assert "docs/cli.md, section `accessd enroll`: the options differ" in found
    assert "-| `--timeout SECONDS` |" in found and "+| `--timeout TIMEOUT` |" in found
    assert "docs/cli.md, section `accessd revoke`: the options differ" in found
    assert "docs/cli.md: no section for accessd status" in found
    cli_docs.write()
    assert cli_docs.problems() == []  # --write repairs the blocks and adds the section


# -- the configuration -------------------------------------------------------------------------

MINIMAL = '[[readers]]\nport = "/dev/ttyX"\n'  # the only required key: one reader
MULTI = '[[doors]]\nid = "a"\n[[doors.readers]]\nport = "/dev/ttyX"\n'  # the [[doors]] form
UNLOCK = '[unlock]\nstart = "09:00"\nend = "12:00"\n'


def code_keys() -> dict[str, tuple[str, ...]]:
    """{"site": (keys...), ..., "": top-level keys}, from the dataclasses of accessd/config.py."""
    hints = typing.get_type_hints(Config, vars(config_module))
    out: dict[str, tuple[str, ...]] = {"": ()}
    for f in dataclasses.fields(Config):
        if f.name in ("path", "extra"):
            continue
        kind = hints[f.name]
        args = typing.get_args(kind)
        if type(None) in args:  # an optional table ([unlock])
            kind = next(a for a in args if a is not type(None))
            args = ()
        if typing.get_origin(kind) is tuple and args:
            kind = args[0]  # readers: tuple[ReaderConfig, ...], an array of tables
            out[""] = (*out[""], f.name)  # listed at the top level too
        if dataclasses.is_dataclass(kind):
            out[f.name] = tuple(g.name for g in dataclasses.fields(kind))
        else:
            out[""] = (*out[""], f.name)
    return out


TABLES = ("readers", "doors", "lock", "pins", "door", "unlock")  # tables, not values


def _table_key(section: str, key: str) -> bool:
    return key in TABLES and section in ("", "doors")


def code_default(section: str, key: str) -> Any:
    """What the code uses when the file does not set the key (a file with one reader)."""
    cfg = parse_config(MINIMAL, base=Path("/etc/accessd"))
    if section == "doors":
        return getattr(parse_config(MULTI, base=Path("/etc/accessd")).doors[0], key)
    if section == "unlock":
        return getattr(parse_config(MINIMAL + UNLOCK, base=Path("/etc/accessd")).unlock, key)
    if section == "readers":
        if key == "port":  # required for a serial reader: the default only shows elsewhere
            return parse_config('[[readers]]\ntype = "simulated"\n').readers[0].port
        return getattr(cfg.readers[0], key)
    return getattr(getattr(cfg, section), key) if section else getattr(cfg, key)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _toml(literal: str) -> Any:
    try:
        return tomllib.loads(f"v = {literal}")["v"]
    except tomllib.TOMLDecodeError:
        return ...


def _templated(text: str) -> str:
    """`<storage.dir>/site.key`, `reader<N>`: the code's derived defaults, as the docs say."""
    storage = str(code_default("storage", "dir"))
    return (text.replace("<storage.dir>", storage).replace("<dir>", storage)
            .replace("<N>", "0").replace("<id>", "a"))


def default_problem(section: str, key: str, cell: str) -> str | None:
    """None if the documented default `cell` is the code's; else what differs."""
    code = None if _table_key(section, key) else _plain(code_default(section, key))
    cell = cell.strip()
    if "(required)" in cell:
        try:
            parse_config("log_level = \"INFO\"\n")
        except ConfigError:
            return None
        return "documented as required, but the code accepts a file without it"
    if cell.lower().startswith("none"):
        return None if code is None else f"documented as none, the code's is {code!r}"
    same = re.match(r"the `(\w+)`", cell)
    if same:
        other = _plain(code_default(section, same.group(1)))
        return None if code == other else f"documented as the {same.group(1)}, the code's " \
                                          f"is {code!r}"
    m = re.match(r"`([^`]*)`", cell)
    if m is None:
        return f"the default '{cell}' is neither a `value`, none, nor the `key` it copies"
    value = _toml(m.group(1))
    if value is ...:
        value = _templated(m.group(1))
    elif isinstance(value, str):
        value = _templated(value)
    if isinstance(value, float | int) and isinstance(code, float | int) \
            and not isinstance(value, bool):
        ok = float(value) == float(code)
    else:
        ok = value == code
    return None if ok else f"documented default {m.group(0)}, the code's is {code!r}"


def doc_tables() -> dict[str, dict[str, str]]:
    """{"site": {key: default cell}, ...} from docs/configuration.md (section "" is the top)."""
    text = CONFIG_DOC.read_text(encoding="utf-8")
    out: dict[str, dict[str, str]] = {}
    parts = re.split(r"^## (.*)$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        m = re.fullmatch(r"\[\[?(\w+)\]\]?|Top level", heading.strip())
        if m is None:
            continue
        rows = out.setdefault(m.group(1) or "", {})
        for row in re.finditer(r"^\| `(\w+)` \| [^|]* \| ([^|]*) \|", body, re.M):
            rows[row.group(1)] = row.group(2)
    return out


def test_every_config_key_is_documented_with_its_default() -> None:
    docs, wrong = doc_tables(), []
    for section, keys in code_keys().items():
        where = f"section [{section}]" if section else "section Top level"
        if section not in docs:
            wrong.append(f"docs/configuration.md: no '## [{section}]' section for the keys "
                         f"{', '.join(keys)}")
            continue
        for key in keys:
            if key not in docs[section]:
                default = "-" if _table_key(section, key) else _plain(code_default(section, key))
                wrong.append(f"docs/configuration.md, {where}: no row for `{key}` (the code's "
                             f"default: {default!r})")
            elif (why := default_problem(section, key, docs[section][key])) is not None:
                wrong.append(f"docs/configuration.md, {where}, `{key}`: {why}")
    assert not wrong, "\n".join(wrong)


def test_the_docs_name_no_config_key_the_code_lacks() -> None:
    keys = code_keys()
    wrong = [f"docs/configuration.md, section [{section or 'Top level'}]: documents `{key}`, "
             f"which accessd/config.py does not have"
             for section, rows in doc_tables().items() for key in rows
             if key not in keys.get(section, ())]
    assert not wrong, "\n".join(wrong)


def example_lines() -> list[tuple[str, str, bool, str, int]]:
    """(table, key, in an example table (a commented-out header), rest of line, line number)
    for each `key = value` line of the example, commented out or not."""
    out, table, example = [], "", False
    for n, line in enumerate(EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        head = re.match(r"^(#\s*)?\[\[?(\w+)\]\]?\s*$", line)
        if head:
            table, example = head.group(2), bool(head.group(1))
            continue
        m = re.match(r"^(#\s*)?(\w+) = (.*)$", line)
        if m:
            out.append((table, m.group(2), example or bool(m.group(1)), m.group(3), n))
    return out


def test_every_config_key_is_in_the_example_and_no_other() -> None:
    keys, wrong = code_keys(), []
    lines = example_lines()
    for section, names in keys.items():
        for key in names:
            if section == "" and key in keys:  # an array of tables: its own header
                continue
            if not any(t == section and k == key for t, k, *_ in lines):
                wrong.append(f"config/accessd.example.toml, [{section or 'top level'}]: no line "
                             f"for `{key}` (commented out if it keeps its default)")
    for table, key, _, _, n in lines:
        if key not in keys.get(table, ()):
            wrong.append(f"config/accessd.example.toml:{n}: [{table or 'top level'}] `{key}` "
                         "is not a key of accessd/config.py")
    assert not wrong, "\n".join(wrong)


def test_defaults_stated_in_the_example_are_the_code_s() -> None:
    wrong = []
    for table, key, _, rest, n in example_lines():
        claim = re.search(r"#.*\bdefault:? (\"[^\"]*\"|[\w.\-]+)", rest)
        if claim is None or key not in code_keys().get(table, ()):
            continue
        value = _toml(claim.group(1))
        if value is ...:
            continue  # prose ("default: the site id"), not a value
        why = default_problem(table, key, f"`{claim.group(1)}`")
        if why is not None:
            wrong.append(f"config/accessd.example.toml:{n}: [{table}] `{key}`: {why}")
    assert not wrong, "\n".join(wrong)


def test_config_checks_catch_a_wrong_default_and_an_unknown_key() -> None:
    assert default_problem("mqtt", "port", "`1883`") is None
    assert "the code's is 1883" in (default_problem("mqtt", "port", "`8883`") or "")
    assert default_problem("site", "secret_file", "`<storage.dir>/site.key`") is None
    assert default_problem("site", "name", "the `id`") is None
    assert default_problem("readers", "name", '`"reader<N>"`') is None
    assert default_problem("schedule", "days", '`["mon","tue","wed","thu","fri"]`') is None
    assert "the code's is" in (default_problem("clock", "not_before", '`"2025-01-01"`') or "")
    assert default_problem("", "readers", "— (required)") is None
