"""The one home of the client's number checks: settings classes (``InferenceSettings``,
``S3Settings``), the request and the CLI's option types all say the same thing the same way.

``*_problem`` functions return what is wrong (``None`` when nothing is); ``check_*`` raise it
as a ``UsageError`` naming the setting.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import UsageError


def seconds_problem(value: Any, *, positive: bool = True) -> str | None:
    """What is wrong with ``value`` as seconds (> 0, or >= 0), or None."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and math.isfinite(value) and (value > 0 if positive else value >= 0):
        return None
    return f"must be a finite number of seconds {'> 0' if positive else '>= 0'}"


def number_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a finite number > 0, or None."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return None if ok and math.isfinite(value) and value > 0 else "must be a finite number > 0"


def int_problem(value: Any, low: int, high: int | None = None) -> str | None:
    """What is wrong with ``value`` as a whole number in [low, high], or None."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and value >= low and (high is None or value <= high):
        return None
    span = f"from {low} to {high}" if high is not None else f">= {low:,}"
    return f"must be a whole number {span}"


def _raise(name: str, problem: str | None, value: Any) -> None:
    if problem is not None:
        raise UsageError(f"{name} {problem}, got {value!r}")


def check_seconds(value: Any, name: str, *, positive: bool = True) -> None:
    """UsageError unless ``value`` is a finite number of seconds > 0 (>= 0)."""
    _raise(name, seconds_problem(value, positive=positive), value)


def check_number(value: Any, name: str) -> None:
    """UsageError unless ``value`` is a finite number > 0."""
    _raise(name, number_problem(value), value)


def check_int(value: Any, name: str, low: int, high: int | None = None) -> None:
    """UsageError unless ``value`` is a whole number (not bool) in [low, high]."""
    _raise(name, int_problem(value, low, high), value)
