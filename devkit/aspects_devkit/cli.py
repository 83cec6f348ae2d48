"""``aspects-dev``: the system on one machine, no GPU, no Docker, no cloud account.

Subcommands:
  serve-local REPOSITORY  the local CPU Triton (nvidia-pytriton's tritonserver) until
                          Ctrl-C or SIGTERM
  demo [-o DIR]           export the demo checkpoint, start Triton + S3, segment a phantom

Errors are one line on stderr; exit 1 on failure, 2 for bad usage.

The top of the dev kit: it imports the modules that own the subcommands, and none of them
imports it (the import contract in ``pyproject.toml``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aspects_client.cli import Parser

from . import commands
from .demo import DEMO
from .local_triton import SERVE_LOCAL

COMMANDS: tuple[commands.Command, ...] = (SERVE_LOCAL, DEMO)


def build_parser() -> Parser:
    """The ``aspects-dev`` parser: ``serve-local`` and ``demo``."""
    return commands.build_parser(COMMANDS, description=__doc__.split("\n\n")[0])


def main(argv: Sequence[str] | None = None) -> int:
    """``aspects-dev``: parse, run one subcommand, return its exit code."""
    return commands.run_parsed(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
