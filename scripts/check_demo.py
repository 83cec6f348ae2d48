"""Check what README's first command promises, from what it printed.

    bash scripts/demo.sh >demo.log 2>&1; python3 scripts/check_demo.py demo.log

Promises (README, "Two commands"): the listed output files exist and are not empty, and the
printed mean Dice against the phantom's exact labels is at least ``MEAN_DICE_FLOOR`` (the
committed demo weights reach about 0.85; untrained weights 0.0).  Exit 0 and one summary
line, or exit 1 and one line per broken promise.  Standard library only: CI runs it with
the system Python.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MEAN_DICE_FLOOR = 0.6
EXPECTED_OUTPUTS = ("phantom_LPS.json", "phantom_LPS_labels.nii.gz", "phantom_LPS_overlay.png",
                    "overlay_truth.png")
DICE_LINE = re.compile(r"\[demo\] Dice against the phantom's exact labels: mean ([0-9.]+)")
OUTPUTS_HEAD = re.compile(r"\[demo\] all servers stopped; outputs in (.+):$")


def read_demo_log(text: str) -> tuple[float | None, list[Path]]:
    """(printed mean Dice or None, the listed output paths) from the demo's output."""
    dice = DICE_LINE.search(text)
    lines = text.splitlines()
    head = next((i for i, ln in enumerate(lines) if OUTPUTS_HEAD.match(ln)), None)
    paths: list[Path] = []
    if head is not None:
        for ln in lines[head + 1:]:
            if not ln.startswith("  "):
                break
            paths.append(Path(ln.strip()))
    return (float(dice.group(1)) if dice else None), paths


def region_dice(text: str) -> dict[str, float]:
    """The per-region Dice printed after the mean: ``{"m1": 0.88, ...}``."""
    line = next((ln for ln in text.splitlines() if DICE_LINE.search(ln)), "")
    inside = line.partition("(")[2].partition(")")[0]
    pairs = (item.split() for item in inside.split(",") if item.strip())
    return {p[0]: float(p[1]) for p in pairs if len(p) == 2}


def broken_promises(text: str) -> list[str]:
    """What the demo's output fails to deliver (empty: every promise kept)."""
    dice, paths = read_demo_log(text)
    problems = []
    if dice is None:
        problems.append("no mean Dice printed")
    elif dice < MEAN_DICE_FLOOR:
        problems.append(f"mean Dice {dice:.3f} below the floor {MEAN_DICE_FLOOR}")
    names = {p.name for p in paths}
    problems += [f"{name} not listed" for name in EXPECTED_OUTPUTS if name not in names]
    problems += [f"{p} listed but missing or empty" for p in paths
                 if not p.is_file() or p.stat().st_size == 0]
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_demo.py DEMO_LOG", file=sys.stderr)
        return 2
    text = Path(argv[0]).read_text(encoding="utf-8", errors="replace")
    problems = broken_promises(text)
    for problem in problems:
        print(f"check_demo: {problem}", file=sys.stderr)
    if problems:
        return 1
    dice, paths = read_demo_log(text)
    print(f"check_demo: the demo kept its promises: mean Dice {dice:.3f} >= {MEAN_DICE_FLOOR}, "
          f"{len(paths)} output files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
