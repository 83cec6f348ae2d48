"""README's first command, end to end and exactly as written, on a fresh machine (empty
caches, an empty HOME: ``fresh.fresh_env``): ``bash scripts/demo.sh`` sets up (or reuses) the
environments, fetches the atlas itself, exports the committed demo weights, starts a local
Triton + SeaweedFS, runs ``aspects segment s3://…`` on the held-out demo phantom (seed 3,
never trained on) in its LPS file, and keeps what README promises (``scripts/check_demo.py``,
the same check CI runs on its own fresh run)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract
from aspects_client.document import validate

from .fresh import ATLAS_PROGRESS, fresh_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _check_demo():
    spec = importlib.util.spec_from_file_location("check_demo", ROOT / "scripts" / "check_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_demo_on_a_fresh_machine(tmp_path) -> None:
    out = tmp_path / "demo_out"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(out)], cwd=ROOT,
                          env=fresh_env(tmp_path / "machine"), capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert log.count(ATLAS_PROGRESS) == 1, log[-3000:]
    check = _check_demo()
    assert check.broken_promises(log) == [], log[-3000:]
    dice = check.region_dice(log)
    assert set(dice) == set(contract.REGION_KEYS), dice
    assert sum(d > 0.3 for d in dice.values()) >= 8, dice
    document = json.loads((out / "phantom_LPS.json").read_text())
    validate(document)
    assert "synthetic images only" in document["provenance"]["steps"]["unet"]["checkpoint"]
    summary = document["summary"]
    sides = {s for region in summary.values() for s, e in region.items() if e["voxels"] > 0}
    assert sides == set(contract.HEMISPHERES)
    labels = np.asanyarray(nib.load(out / "phantom_LPS_labels.nii.gz").dataobj)
    assert labels.shape == (512, 512, 20) and labels.max() <= contract.NUM_CLASSES - 1
