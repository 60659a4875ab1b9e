"""The options tables of docs/cli.md and docs/central.md, generated from the argparse parsers.

Each command's section (the heading naming `accessd COMMAND`) keeps its prose by hand, and
holds one generated block: every option and argument with its metavar and choices, its help
text (the meaning `--help` prints) and its default, between two markers. Options shared by
several commands through an argument group (the central office's broker options) get one block
of their own. `tests/test_docs.py` fails when a block differs from the parsers;

    scripts/cli-docs            # says what is missing or stale, where (exit status 1)
    scripts/cli-docs --write    # rewrites the blocks; adds a section for a new command

Defaults taken from the environment (`--operator` from $SUDO_USER / $USER, `--store` from
$ACCESSD_CENTRAL_STORE) are shown as the variable's name, so the pages do not depend on who
generated them.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: environment variables the parsers read for their defaults, shown by name in the docs
ENV_DEFAULTS = ("SUDO_USER", "USER", "ACCESSD_CENTRAL_STORE", "ACCESSD_CONFIG")
BEGIN = "<!-- generated from `{name} --help` by scripts/cli-docs: edit the parser -->"
BEGIN_GROUP = ("<!-- generated from the {title} options of `{name}` commands by "
               "scripts/cli-docs: edit the parser -->")
END = "<!-- end of generated options -->"
PLAIN_GROUPS = {"positional arguments", "options", "optional arguments"}


@dataclass(frozen=True)
class Command:
    name: str  # "enroll", "central collect"; "" for `accessd` itself
    parser: argparse.ArgumentParser

    @property
    def title(self) -> str:
        return f"accessd {self.name}".strip()

    @property
    def doc(self) -> Path:
        return DOCS / ("central.md" if self.name.startswith("central") else "cli.md")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _parser(env: dict[str, str]) -> argparse.ArgumentParser:
    from accessd.cli.main import build_parser

    with _environment(env):
        return build_parser()


def commands(parser: argparse.ArgumentParser | None = None, prefix: str = "") -> list[Command]:
    """`accessd` and every command under it, in the parsers' order."""
    if parser is None:
        parser = _parser({**os.environ, **{v: f"${v}" for v in ENV_DEFAULTS}})
    out = [Command(prefix.strip(), parser)] if not prefix else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(Command(f"{prefix}{name}", sub))
                out += commands(sub, f"{prefix}{name} ")
    return out


def environment_problems() -> list[str]:
    """Defaults read from a variable not in ENV_DEFAULTS would make the pages differ from one
    machine to the next: build the parsers twice, in two environments, and compare."""
    names = {v: f"${v}" for v in ENV_DEFAULTS}
    a = commands(_parser({**os.environ, **names}))
    b = commands(_parser({"PATH": os.environ.get("PATH", ""), **names}))
    problems = []
    for ca, cb in zip(a, b, strict=True):
        for x, y in zip(ca.parser._actions, cb.parser._actions, strict=True):
            if x.default != y.default:
                problems.append(f"{ca.title} {'/'.join(x.option_strings) or x.dest}: its "
                                f"default comes from the environment ({x.default!r} here); "
                                "add the variable to ENV_DEFAULTS in tests/cli_docs.py")
    return problems


# -- rendering ---------------------------------------------------------------------------------


def _documented(action: argparse.Action) -> bool:
    return not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) \
        and action.help != argparse.SUPPRESS


def _shared_groups(parser: argparse.ArgumentParser) -> dict[str, list[argparse.Action]]:
    return {g.title: [a for a in g._group_actions if _documented(a)]
            for g in parser._action_groups
            if g.title not in PLAIN_GROUPS and g._group_actions}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _option(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar or action.dest
        return f"`[{name}]`" if action.nargs == "?" else f"`{name}`"
    flag = max(action.option_strings, key=len)
    if action.nargs == 0:
        return f"`{flag}`"
    if action.choices is not None and action.metavar is None:
        return f"`{flag} {{{','.join(str(c) for c in action.choices)}}}`"
    return f"`{flag} {action.metavar or action.dest.upper()}`"


def _default(action: argparse.Action) -> str:
    value = action.default
    if action.nargs == 0 or value in (None, False, argparse.SUPPRESS) or action.required:
        return ""
    if isinstance(value, float):
        value = format(value, "g")
    return f"`{value}`"


def _meaning(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        text = text % {**vars(action), "prog": "accessd"}
    if action.choices is not None and not action.option_strings:
        text += f" (one of {', '.join(f'`{c}`' for c in action.choices)})"
    if action.required and action.option_strings:
        text += " (required)"
    return text


def _rows(actions: list[argparse.Action]) -> list[str]:
    rows = ["| option | meaning | default |", "|---|---|---|"]
    rows += [f"| {_cell(_option(a))} | {_cell(_meaning(a))} | {_cell(_default(a))} |"
             for a in actions]
    return rows


def render(cmd: Command) -> str | None:
    """The generated block of one command, or None for a mere group of commands."""
    parser = cmd.parser
    shared = {a for acts in _shared_groups(parser).values() for a in acts}
    own = [a for a in parser._actions if _documented(a) and a not in shared]
    if not own and not shared:
        return None
    lines = [BEGIN.format(name=cmd.title), *_rows(own)]
    for group in parser._mutually_exclusive_groups:
        names = ", ".join(_option(a) for a in group._group_actions)
        lines.append("")
        lines.append(f"{'Exactly' if group.required else 'At most'} one of {names}.")
    for title in _shared_groups(parser):
        lines += ["", f"And the [{title} options](#{title}-options)."]
    lines.append(END)
    return "\n".join(lines)


def render_group(cmd: Command, title: str, actions: list[argparse.Action]) -> str:
    parent = cmd.title.rsplit(" ", 1)[0]
    return "\n".join([BEGIN_GROUP.format(title=title, name=parent), *_rows(actions), END])


# -- finding the blocks -----------------------------------------------------------------------


HEADING = re.compile(r"^(#+) (.*)$", re.M)


def section(text: str, title: str) -> tuple[int, int] | None:
    """Start and end offsets of the section whose heading names `title` in backticks."""
    for m in HEADING.finditer(text):
        if re.search(rf"`{re.escape(title)}`", m.group(2)):
            return m.end(), _section_end(text, m)
    return None


def block_at(text: str, begin: str, start: int = 0, end: int | None = None
             ) -> tuple[int, int] | None:
    """The generated block starting with the marker line `begin`, within start..end."""
    i = text.find(begin, start, end)
    if i < 0:
        return None
    j = text.find(END, i)
    return (i, j + len(END)) if j >= 0 else None


@dataclass
class Expected:
    doc: Path
    key: str  # the command's name ("" for `accessd` itself)
    where: str  # the section's title, or the group's heading text
    block: str
    group: bool = False  # options shared by several commands, under a heading of their own

    @property
    def begin(self) -> str:
        return self.block.split("\n", 1)[0]


def expected() -> list[Expected]:
    out: list[Expected] = []
    groups: dict[str, tuple[Command, list[argparse.Action]]] = {}
    for cmd in commands():
        block = render(cmd)
        if block is not None:
            out.append(Expected(cmd.doc, cmd.name, cmd.title, block))
        for title, actions in _shared_groups(cmd.parser).items():
            groups.setdefault(title, (cmd, actions))
    for title, (cmd, actions) in groups.items():
        out.append(Expected(cmd.doc, title, f"{title.capitalize()} options",
                            render_group(cmd, title, actions), group=True))
    return out


def _leaf(cmd: Command) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in cmd.parser._actions)


CLAIM = re.compile(r"\(default:? ([^),;]+)")


def help_problems() -> list[str]:
    """A help text that states a default must state the parser's; shared option groups must
    be the same in every command that has them (they are documented once)."""
    found = []
    groups: dict[str, tuple[str, list[str]]] = {}
    for cmd in commands():
        for a in cmd.parser._actions:
            m = CLAIM.search(a.help or "") if _documented(a) else None
            shown = _default(a).strip("`")
            if m and shown and m.group(1).split()[0] != shown:
                found.append(f"{cmd.title} {max(a.option_strings, key=len, default=a.dest)}: "
                             f"its help says 'default {m.group(1)}', the parser's default is "
                             f"{shown}")
        for title, actions in _shared_groups(cmd.parser).items():
            rows = _rows(actions)
            first = groups.setdefault(title, (cmd.title, rows))
            if first[1] != rows:
                found.append(f"{cmd.title}: its {title} options differ from {first[0]}'s, "
                             "but they are documented once")
    return found


def problems() -> list[str]:
    """What is missing or stale, and where; empty when the pages match the parsers."""
    found = environment_problems() + help_problems()
    for cmd in commands():
        if cmd.name and _leaf(cmd) and render(cmd) is None and section(
                cmd.doc.read_text(encoding="utf-8"), cmd.title) is None:
            found.append(f"{cmd.doc.relative_to(ROOT)}: no section for `{cmd.title}` (a "
                         "heading naming it in backticks)")
    for exp in expected():
        text = exp.doc.read_text(encoding="utf-8")
        rel = exp.doc.relative_to(ROOT)
        where = _where(text, exp)
        if where is None:
            heading = (f"a heading '{exp.where}'" if exp.group else
                       f"a heading naming `{exp.where}` in backticks")
            found.append(f"{rel}: no section for {exp.where} ({heading}): run "
                         "scripts/cli-docs --write, then write its prose")
            continue
        span = block_at(text, exp.begin, *where)
        if span is None:
            found.append(f"{rel}, section `{exp.where}`: no generated options block: run "
                         "scripts/cli-docs --write")
            continue
        have = text[span[0]:span[1]]
        if have != exp.block:
            diff = "\n".join(difflib.unified_diff(have.splitlines(), exp.block.splitlines(),
                                                  "docs", "parser", lineterm="", n=0))
            found.append(f"{rel}, section `{exp.where}`: the options differ from the parser "
                         f"(run scripts/cli-docs --write):\n{diff}")
        found += _stale_prose(text, where, span, exp)
    return found


def _where(text: str, exp: Expected) -> tuple[int, int] | None:
    if exp.group:  # a shared group: a heading of its own, "Broker options"
        m = re.search(rf"^(#+) {re.escape(exp.where)}[ \t]*$", text, re.M)
        return None if m is None else (m.end(), _section_end(text, m))
    return section(text, exp.where)


def _section_end(text: str, m: re.Match[str]) -> int:
    """The next heading of the same or a higher level (a page's title: its first heading)."""
    level = max(len(m.group(1)), 2)
    return next((h.start() for h in HEADING.finditer(text, m.end())
                 if len(h.group(1)) <= level), len(text))


def _stale_prose(text: str, where: tuple[int, int], span: tuple[int, int],
                 exp: Expected) -> list[str]:
    """Options the section's prose names that its command does not have."""
    if exp.group:
        return []
    cmd = next(c for c in commands() if c.name == exp.key)
    known = {o for a in cmd.parser._actions for o in a.option_strings}
    known |= {o for a in commands()[0].parser._actions for o in a.option_strings}
    prose = text[where[0]:span[0]] + text[span[1]:where[1]]
    named = set(re.findall(r"`(--[a-z][a-z-]*)", prose))
    return [f"{exp.doc.relative_to(ROOT)}, section `{exp.where}`: the prose names {opt}, "
            "which the command does not have" for opt in sorted(named - known)]


# -- writing ----------------------------------------------------------------------------------


def write() -> list[Path]:
    """Rewrite every block; insert a missing one at the end of its section, and a missing
    section (heading and the parser's description) at the end of its page."""
    changed = []
    for exp in expected():
        text = exp.doc.read_text(encoding="utf-8")
        where = _where(text, exp)
        if where is None:
            level = "###" if exp.doc.name == "central.md" else "##"
            if exp.group:
                heading, desc = exp.where, ""
            else:
                cmd = next(c for c in commands() if c.name == exp.key)
                heading, desc = f"`{exp.where}`", cmd.parser.description or ""
            text = text.rstrip("\n") + f"\n\n{level} {heading}\n\n{desc}\n\n"
            where = (len(text), len(text))
        span = block_at(text, exp.begin, *where)
        if span is None:
            at = where[1]
            text = text[:at].rstrip("\n") + "\n\n" + exp.block + "\n\n" + text[at:].lstrip("\n")
        else:
            text = text[:span[0]] + exp.block + text[span[1]:]
        if text != exp.doc.read_text(encoding="utf-8"):
            exp.doc.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
            changed.append(exp.doc)
    return changed


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        for path in sorted(set(write())):
            print(f"rewrote {path.relative_to(ROOT)}")
    found = problems()
    for p in found:
        print(p, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
