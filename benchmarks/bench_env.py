"""Shared by the benchmark scripts: what the local Triton's own environment runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def server_env_versions(server_venv: Path = ROOT / ".venv-server") -> dict[str, str]:
    """Versions of nvidia-pytriton / tritonserver / onnxruntime / numpy in the server venv."""
    try:
        text = subprocess.run(
            [
                str(server_venv / "bin" / "python"),
                "-c",
                "import importlib.metadata as m, onnxruntime, numpy;"
                "print(m.version('nvidia-pytriton'), onnxruntime.__version__, numpy.__version__)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
    except Exception as exc:
        return {"server env": f"unreadable: {exc}"}
    return {
        "nvidia-pytriton (server env)": text[0],
        "tritonserver": "2.51 (bundled in nvidia-pytriton 0.7.0, NGC 24.10)",
        "onnxruntime (server env, python-backend stubs)": text[1],
        "numpy (server env)": text[2],
    }


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of distributions in this environment ("missing" if absent)."""
    import importlib.metadata as md

    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
