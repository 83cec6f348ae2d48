"""The thin client really works without torch: in `.venv-client` (the bare install, no
extras; scripts/setup_envs.sh), every client module imports, nothing heavy gets imported,
and `aspects contours` turns a volume and a label map into contours, a label map and an
overlay.  The import contract itself (client -> nothing of ours) is `lint-imports`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .helpers import ROOT

VENV = ROOT / ".venv-client"
HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "segmentation_models_pytorch")


@pytest.fixture(scope="module")
def client_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{VENV} is missing: run scripts/setup_envs.sh")
    return python


def test_no_ml_framework_is_installed_there(client_python):
    code = f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])"
    out = subprocess.run([client_python, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_client_module_imports_without_heavy_packages(client_python):
    code = (
        "import pkgutil, importlib, sys, aspects_client\n"
        "names = [m.name for m in pkgutil.iter_modules(aspects_client.__path__)]\n"
        "for n in names: importlib.import_module('aspects_client.' + n)\n"
        "import aspects_client as a\n"
        "[getattr(a, n) for n in a.__all__]\n"
        f"print(len(names), sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([client_python, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    count, heavy = out.stdout.split(" ", 1)
    assert int(count) >= 20 and heavy.strip() == "[]", out.stdout


def test_the_cli_runs_there(client_python, tmp_path):
    shape = (96, 96, 6)
    image = np.random.default_rng(0).uniform(100, 400, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[20:35, 40:60, 1:5] = 1
    labels[61:76, 40:60, 1:5] = 1
    affine = np.diag([-2.0, 2.0, 5.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "dwi.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "lab.nii.gz")
    aspects = VENV / "bin" / "aspects"
    version = subprocess.run([aspects, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("aspects "), version.stderr
    cmd = [aspects, "contours", str(tmp_path / "dwi.nii.gz"), str(tmp_path / "lab.nii.gz")]
    cmd += ["-o", str(tmp_path / "c.json"), "--labels", "--overlay"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    document = json.loads((tmp_path / "c.json").read_text())
    assert document["summary"]["m1"]["r"]["voxels"] > 0
    assert document["summary"]["m1"]["l"]["voxels"] > 0
    assert (tmp_path / "c_labels.nii.gz").stat().st_size > 0
    assert (tmp_path / "c_overlay.png").stat().st_size > 0
