"""What the ``aspects`` CLI prints: its name, exit codes and one-line messages."""

from __future__ import annotations

import sys

from .outputs import printable

PROG = "aspects"
EXIT_FAILED, EXIT_USAGE = 1, 2


def one_line(text: str) -> str:
    """One terminal line: whitespace runs collapsed, control characters escaped."""
    return printable(" ".join(text.split()))


def error_line(source: str, exc: object) -> str:
    """``aspects: error: <source>: <message>`` on one line (the source named once)."""
    text = str(exc)
    if source not in text:
        text = f"{source}: {text}"
    return f"{PROG}: error: {one_line(text)}"


def warn_qc(source: str, qc: dict) -> None:
    """One stderr line per result whose quality control failed (the exit code stays 0:
    the outputs are written; the line says what to review)."""
    if not qc.get("passed", True):
        flags = "; ".join(qc.get("flags", []))
        print(
            f"{PROG}: warning: {printable(source)}: QC failed, review: {one_line(flags)}",
            file=sys.stderr,
        )


def score_line(score: dict) -> str:
    """'ASPECTS 7 (left; affected: M2, L, IC; right 10)' — one stdout line per source."""
    names = {"r": "right", "l": "left"}
    side = score.get("affected_hemisphere")
    if side is None:
        text = f"ASPECTS {score['score']} (no lesion)"
    else:
        other = "l" if side == "r" else "r"
        keys = ", ".join(k.upper() for k in score["affected_regions"][side]) or "none"
        text = (
            f"ASPECTS {score['score']} ({names[side]}; affected: {keys}; "
            f"{names[other]} {score['scores'][other]})"
        )
    return text + (" UNCERTAIN: review" if score.get("uncertain") else "")
