"""Shared helpers of the static deployment checks: paths, .env parsing, Compose interpolation."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
K8S = ROOT / "deploy" / "k8s"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
NGC_RELEASE = "24.10"
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


def venv_tool(name: str) -> Path | None:
    """A console tool installed beside this Python (the project's .venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (``#`` comments, blank lines); values taken literally, unquoted."""
    env: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        env[key.strip()] = value.strip().strip("'\"")
    return env


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariableError(KeyError):
    """A ``${VAR:?message}`` / ``${VAR?message}`` whose variable is unset (or empty)."""


def interpolate(value: object, env: dict[str, str], used: set[str] | None = None) -> object:
    """Compose-style interpolation of every string in ``value`` (``$$`` stays a literal ``$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, used) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, used) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        if used is not None:
            used.add(name)
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        unset_or_empty = current is None or (op is not None and op.startswith(":") and not current)
        if op in (":-", "-"):
            return arg if unset_or_empty else current  # type: ignore[return-value]
        if op in (":?", "?"):
            if unset_or_empty:
                raise MissingVariableError(f"{name}: {arg}")
            return current  # type: ignore[return-value]
        return current or ""

    return _VAR.sub(sub, value)
