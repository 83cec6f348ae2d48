"""The doors to the client's optional rooms: the core reaches ``aspects_client.dicom`` and
``aspects_client.scoring`` only through :func:`enter`, never by import (an import-linter
contract checks it), so the bare client (NIfTI in, contours out) needs neither their code's
dependencies nor their import time.  Pure data (a table of rooms) and one function.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any

from .errors import MissingExtraError

DISTRIBUTION = "aspects-client"


@dataclass(frozen=True)
class Room:
    """An optional sub-package: its package, the extra that installs its dependencies, the
    top-level modules of those dependencies and what a user would call the feature."""

    package: str
    extra: str
    needs: tuple[str, ...]
    feature: str


ROOMS: dict[str, Room] = {
    "dicom": Room("aspects_client.dicom", "dicom", ("pydicom", "highdicom", "pynetdicom"),
                  "DICOM input and output"),
    "score": Room("aspects_client.scoring", "score", ("scipy",), "the ASPECTS score"),
}


def install_hint(extra: str, distribution: str = DISTRIBUTION) -> str:
    """The command that installs ``extra``."""
    return f"pip install '{distribution}[{extra}]'"


def run_entry(prog: str, extra: str, target: str, distribution: str = "aspects-triton") -> int:
    """Run another role's CLI (``target`` = ``module:function``), or say in one line which
    extra installs what it lacks (exit 2) when one of its dependencies is missing, whether
    at import or when a command first needs it."""
    module, _, function = target.partition(":")
    try:
        return int(getattr(importlib.import_module(module), function)() or 0)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if not top or top.startswith("aspects_"):
            raise
        print(f"{prog}: error: needs the [{extra}] extra ({top} is not installed): "
              f"{install_hint(extra, distribution)}", file=sys.stderr)
        return 2


def missing_extra(room: str, module: str) -> MissingExtraError:
    """The error that names the extra to install for ``room`` (``module`` is absent)."""
    spec = ROOMS[room]
    return MissingExtraError(
        f"{spec.feature} needs the [{spec.extra}] extra ({module} is not installed): "
        f"{install_hint(spec.extra)}"
    )


def require(room: str) -> None:
    """MissingExtraError now, before any work, when ``room``'s dependencies are absent."""
    for module in ROOMS[room].needs:
        if importlib.util.find_spec(module) is None:
            raise missing_extra(room, module)


def enter(room: str, name: str) -> Any:
    """The public name ``name`` of a room's package (its door); MissingExtraError naming the
    extra when one of the room's dependencies is not installed."""
    spec = ROOMS[room]
    try:
        return getattr(importlib.import_module(spec.package), name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in spec.needs:
            raise
        raise missing_extra(room, top) from None
