"""The ``aspects-dev`` program's shared pieces: its name, a subcommand's spec, the parser
built from specs, and the one place where a failure becomes one stderr line and an exit
code (1 on failure, 2 for bad usage, 130 when interrupted).

Each module that owns a subcommand (``local_triton``: ``serve-local``; ``demo``: ``demo``)
declares a :class:`Command`; ``cli`` assembles them.  This module imports
nothing of the dev kit, so nothing needs to import ``cli``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aspects_client.cli import Parser
from aspects_client.errors import AspectsError, UsageError
from aspects_client.terminal import one_line

PROG = "aspects-dev"


@dataclass(frozen=True)
class Command:
    """One ``aspects-dev`` subcommand: its name, one-line help, options and runner."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int]


def build_parser(commands: Sequence[Command], description: str | None = None) -> Parser:
    """The ``aspects-dev`` parser with one subparser per command (one is required)."""
    parser = Parser(prog=PROG, description=description)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in commands:
        subparser = sub.add_parser(command.name, help=command.help)
        command.add_arguments(subparser)
        subparser.set_defaults(func=command.run)
    return parser


def _error(message: str) -> None:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)


def run_parsed(args: argparse.Namespace) -> int:
    """Run the parsed command; map its failure to one stderr line and an exit code."""
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        _error(str(exc))
        return 2
    except (AspectsError, OSError, RuntimeError) as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def main(
    commands: Sequence[Command], argv: Sequence[str] | None, description: str | None = None
) -> int:
    """Parse ``argv`` (``sys.argv[1:]`` when None) against ``commands`` and run it."""
    return run_parsed(build_parser(commands, description).parse_args(argv))
