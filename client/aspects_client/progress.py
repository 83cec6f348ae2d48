"""Progress of a CLI run on stderr: tqdm bars on a terminal, else one line per volume."""

from __future__ import annotations

import sys
import threading
from typing import Any

from .outputs import printable


class ProgressDisplay:
    """Progress on stderr: tqdm bars (volumes and slices) on a terminal, else one line per
    finished volume; nothing with ``quiet`` (errors are always printed)."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.done = 0
        self._lock = threading.Lock()
        self._bars: tuple[Any, Any] | None = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            volumes = tqdm(total=total, desc="volumes", unit="vol", position=0, leave=True)
            slices = tqdm(total=0, desc="slices ", unit="slice", position=1, leave=False)
            self._bars = (volumes, slices)

    def slices(self, done: int, added: int) -> None:
        if self._bars is None:
            return
        with self._lock:
            bar = self._bars[1]
            if added:
                bar.total += added
            if done:
                bar.update(done)
            bar.refresh()  # once per request of up to 16 slices: cheap

    def volume_done(self, source: str, status: str, error: str | None = None) -> None:
        with self._lock:
            self.done += 1
            line = f"[{self.done}/{self.total}] {printable(source)}: {status}"
            if self._bars is not None:
                if error:
                    self._bars[0].write(error, file=sys.stderr)
                self._bars[0].update(1)
                self._bars[0].set_postfix_str(printable(source)[-40:], refresh=True)
                return
            if error:
                print(error, file=sys.stderr)
            if not self.quiet:
                print(line, file=sys.stderr)

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            for bar in reversed(self._bars):
                bar.close()
