"""Process helpers shared by the local launchers (``local_triton``, ``local_s3``): a free
TCP port and the tail of a server log.  Imports nothing of the dev kit."""

from __future__ import annotations

import socket
from collections import deque
from pathlib import Path

LOG_TAIL_LINES = 30


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail_lines(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or ``(no server log)`` when unreadable."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except OSError:
        return "(no server log)"
