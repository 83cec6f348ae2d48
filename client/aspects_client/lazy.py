"""Lazy exports of a package: its public names imported from their module on first use.

    __getattr__, __dir__ = lazy_exports(__name__, {"read_dicom": "read", ...})

so that ``import aspects_client.dicom`` imports nothing heavy until a name is used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` for ``exports`` (public name → module).

    The first use of a name imports ``package.module`` and caches the value on the package.
    """

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(exports)

    return getattr_, dir_
