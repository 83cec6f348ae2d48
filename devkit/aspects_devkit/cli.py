"""``aspects-dev``: the system on one machine, no GPU, no Docker, no cloud account.

Subcommands:
  serve-local REPOSITORY  the local CPU Triton (nvidia-pytriton's tritonserver) until
                          Ctrl-C or SIGTERM
  demo [-o DIR]           export the demo checkpoint, start Triton + S3, segment a phantom

Errors are one line on stderr; exit 1 on failure, 2 for bad usage.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aspects_client.cli import Parser, one_line
from aspects_client.errors import AspectsError, UsageError

PROG = "aspects-dev"


def build_parser() -> Parser:
    from .demo import add_demo_arguments, run_demo
    from .local_triton import add_serve_local_arguments, run_serve_local

    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    s = sub.add_parser("serve-local", help="run the local CPU Triton until Ctrl-C or SIGTERM")
    add_serve_local_arguments(s)
    s.set_defaults(func=run_serve_local)
    d = sub.add_parser("demo", help="the embedded demo: export, local Triton + S3, segment")
    add_demo_arguments(d)
    d.set_defaults(func=run_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except (AspectsError, OSError, RuntimeError) as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
