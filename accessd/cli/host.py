"""`accessd-host`: the host's fixed commands, run through sudo as the service user.

The host (animateur) enrols and manages the members of their site and may release the door;
they never read keys, change the configuration, or run the office's commands. Their sudo right
is one root-owned program, installed by scripts/install-pi as /usr/local/sbin/accessd-host:

    exec /opt/accessd/venv/bin/python -I -m accessd.cli.host /etc/accessd/accessd.toml "$@"

The first argument (the configuration) is fixed by root; the rest is the host's, and must be
one of `HOST_COMMANDS` with only the options listed for it, spelt in full: no `central`, no
`run`, no `--config`, nothing that names a file. Anything else is refused with one line and
exit status 2 before the CLI sees it. `python -I` keeps the working directory and PYTHON*
variables out; sudo sets SUDO_USER, which names the person in the journal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from accessd.errors import HostCommandRefused

EXIT_REFUSED = 2
_OPERATOR = frozenset({"--operator", "--door"})  # --door: a Pi with several doors
HOST_COMMANDS: dict[str, frozenset[str]] = {
    "enroll": frozenset({"--name", "--plan", "--card", "--present", "--no-card", "--reader",
                         "--timeout", "--from", "--until", "--force", "--member",
                         "--json"}) | _OPERATOR,
    "list": frozenset({"--plan", "--status", "--search", "--json"}),
    "show": frozenset({"--card", "--json"}),
    "log": frozenset({"--member", "--door", "--result", "--type", "--since", "--until",
                      "--limit", "--json"}),
    "suspend": frozenset({"--card"}) | _OPERATOR,
    "resume": frozenset({"--card"}) | _OPERATOR,
    "revoke": frozenset({"--card", "--credential"}) | _OPERATOR,
    "open": frozenset({"--seconds"}) | _OPERATOR,
    "door-mode": _OPERATOR,
    "status": frozenset({"--json", "--door"}),
    "door-key": frozenset({"--door"}),  # prints public lines only (no --new: the admin's)
    "why": frozenset({"--json"}),
    # reads the installed configuration's secrets to test the broker login, prints none
    "doctor": frozenset({"--json"}),
}
# options a host command has that the host may not use (classified on purpose, refused)
HOST_REFUSED: dict[str, frozenset[str]] = {
    "door-key": frozenset({"--new"}),  # rolling the door's key is the administrator's job
}
_HELP = frozenset({"-h", "--help"})


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The CLI's commands by name (argparse keeps them in its sub-parsers action)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def subcommands_here() -> list[str]:
    """The host's commands this version has."""
    from accessd.cli.main import build_parser

    have = subcommands(build_parser())
    return [verb for verb in HOST_COMMANDS if verb in have]


def _number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def filter_args(args: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """The host's arguments, unchanged, if they stay within `HOST_COMMANDS`.

    Raises HostCommandRefused naming what is not allowed. Options must be spelt in full
    (argparse would take `--conf` for `--config`), and `--` is refused (write --opt=value).
    """
    have = subcommands(parser)
    verbs = ", ".join(v for v in HOST_COMMANDS if v in have)
    if not args:
        raise HostCommandRefused(f"name a command: {verbs}")
    verb, rest = args[0], list(args[1:])
    if verb not in HOST_COMMANDS:
        raise HostCommandRefused(f"{verb!r} is not one of the host's commands ({verbs})")
    if verb not in have:
        raise HostCommandRefused(f"{verb!r} is not available in this version of accessd")
    allowed = HOST_COMMANDS[verb] | _HELP
    for token in rest:
        if token == "--":
            raise HostCommandRefused(f"{verb}: '--' is not accepted; write --option=value")
        if token.startswith("-") and not _number(token):
            name = token.split("=", 1)[0]
            if name not in allowed:
                raise HostCommandRefused(
                    f"{verb}: {name} is not an option the host may use "
                    f"(allowed: {', '.join(sorted(HOST_COMMANDS[verb])) or 'none'})")
    return [verb, *rest]


def main(argv: Sequence[str] | None = None) -> int:
    """`accessd-host CONFIG COMMAND [OPTIONS]`: CONFIG comes from the root-owned wrapper."""
    from accessd.cli.main import build_parser
    from accessd.cli.main import main as accessd

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("accessd: error: accessd-host needs the configuration file first (it is "
              "installed by scripts/install-pi)", file=sys.stderr)
        return EXIT_REFUSED
    config, args = argv[0], argv[1:]
    if args in (["-h"], ["--help"]):
        print("usage: accessd COMMAND [OPTIONS]   (the host's commands on this door)\n"
              f"commands: {', '.join(subcommands_here())}\n"
              "accessd COMMAND --help shows a command's options.")
        return 0
    try:
        args = filter_args(args, build_parser())
    except HostCommandRefused as exc:
        print(f"accessd: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return accessd(["--config", config, *args])


if __name__ == "__main__":
    sys.exit(main())
