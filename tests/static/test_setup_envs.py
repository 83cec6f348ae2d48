"""``scripts/setup_envs.sh`` fails loudly: a failed install or import stops it non-zero,
with pip's message, and writes no stamp (so CI never runs the suite on half an environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .helpers import ROOT

SETUP = ROOT / "scripts" / "setup_envs.sh"


def _project(tmp_path: Path, dependency: str) -> Path:
    root = tmp_path / "proj"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, root / "scripts" / "setup_envs.sh")
    (root / "requirements").mkdir()
    (root / "requirements" / "server.txt").write_text("\n")
    (root / "requirements" / "client.lock").write_text("\n")
    (root / "pyproject.toml").write_text(
        "[project]\nname = 'probe'\nversion = '0'\n"
        f"dependencies = ['{dependency}']\n"
        "[project.optional-dependencies]\nexport = []\ntrain = []\ndev = []\n"
    )
    return root


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    # No index: pip cannot reach any registry, so the install must fail (fast, offline).
    python = shutil.which("python3") or sys.executable
    env = {**os.environ, "PIP_NO_INDEX": "1", "PYTHON": python}
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup_envs.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_a_failed_install_stops_setup_without_a_stamp(tmp_path):
    root = _project(tmp_path, "aspects-no-such-package==0.0.0")
    proc = _run(root)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "FAILED: pip install" in proc.stderr
    assert not (root / ".venv" / ".aspects-stamp").exists()
    assert "environments ready" not in proc.stdout
