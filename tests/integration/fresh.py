"""A fresh machine for the CLI tests: empty project caches, ``HOME`` pointed at an empty
directory, and optionally a package registry that cannot be reached (pip's configuration
replaced by an index on a closed 127.0.0.1 port: real pip, really failing)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ATLAS_PROGRESS = "aspects atlas: fetching the ASPECTS atlas once"
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "PYENV_ROOT", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
            "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_FIND_LINKS", "PIP_DISABLE_PIP_VERSION_CHECK",
            "PIP_CONFIG_FILE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_env(root: Path, *, registry: bool = True) -> dict[str, str]:
    """The environment of a machine where nothing of the project was cached: an empty HOME,
    empty XDG/matplotlib/atlas caches and temp dir; ``registry=False`` also makes the
    package registry unreachable (pip config replaced, index on a closed local port)."""
    dirs = {name: root / name for name in ("home", "xdg-cache", "mpl", "aspects-cache", "tmp")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    env.update(HOME=str(dirs["home"]), XDG_CACHE_HOME=str(dirs["xdg-cache"]),
               MPLCONFIGDIR=str(dirs["mpl"]), ASPECTS_CACHE_DIR=str(dirs["aspects-cache"]),
               TMPDIR=str(dirs["tmp"]), PYTHONDONTWRITEBYTECODE="1")
    if not registry:
        (root / "no-wheels").mkdir(exist_ok=True)
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_FIND_LINKS=str(root / "no-wheels"),
                   PIP_INDEX_URL=f"http://127.0.0.1:{closed_port()}/simple",
                   PIP_DEFAULT_TIMEOUT="5")
        env.pop("PIP_EXTRA_INDEX_URL", None)
    return env


def run_tool(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> (
        subprocess.CompletedProcess[str]):
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:]], env=env, cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], prog: str) -> str:
    """A failure: non-zero exit, exactly one stderr line ``PROG: error: ...`` (progress lines
    of the tool before it are allowed), no traceback; returns the error line."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def never_advises_itself(line: str, cmd: list[str]) -> None:
    """The advice in ``line`` must not be the command that just failed."""
    assert f"`{cmd[0]} {cmd[1]}" not in line, line
