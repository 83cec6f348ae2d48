"""The ``aspects-dev`` entry point: the CLI, or one line naming the [devkit] extra when a
dependency of this role is not installed (e.g. after a bare ``pip install .``)."""

from __future__ import annotations

import sys

from aspects_client.rooms import run_entry


def main() -> int:
    return run_entry("aspects-dev", "devkit", "aspects_devkit.cli:main")


if __name__ == "__main__":
    sys.exit(main())
