"""The ``aspects-export`` entry point: the CLI, or one line naming the [export] extra when a
dependency of this role is not installed (e.g. after a bare ``pip install .``)."""

from __future__ import annotations

import sys

from aspects_client.rooms import run_entry


def main() -> int:
    return run_entry("aspects-export", "export", "aspects_export.cli:main")


if __name__ == "__main__":
    sys.exit(main())
