"""The client's rooms and doors (aspects_client.rooms): the core never imports the optional
rooms (``dicom``, ``scoring``) nor their dependencies; a room uses only the core's public
names; the bare install (``.venv-client``: ``pip install ./client``) has neither room's
dependencies and says which extra to install, in one line, before any work."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .helpers import ROOT

PACKAGE = ROOT / "client" / "aspects_client"
ROOMS = ("dicom", "scoring")
ROOM_DEPENDENCIES = ("pydicom", "highdicom", "pynetdicom", "scipy")
VENV = ROOT / ".venv-client"


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(level, module, names) of every import statement in ``path`` (function bodies too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", [a.name for a in node.names]))
    return found


def _core_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py"))


def test_the_core_never_imports_a_room_or_its_dependencies():
    bad = []
    for path in _core_modules():
        for level, module, names in _imports(path):
            top = module.split(".")[0]
            room = (level == 1 and (top in ROOMS or (not module and set(names) & set(ROOMS))))
            absolute = level == 0 and module.split(".")[:2] in (
                ["aspects_client", r] for r in ROOMS
            )
            if room or absolute or (level == 0 and top in ROOM_DEPENDENCIES):
                bad.append(f"{path.name}: {'.' * level}{module} {names}")
    assert not bad, bad
    assert len(_core_modules()) >= 20


def test_rooms_use_only_the_cores_public_names():
    bad = []
    for room in ROOMS:
        for path in sorted((PACKAGE / room).glob("*.py")):
            for level, module, names in _imports(path):
                if level == 2 or (level == 0 and module.startswith("aspects_client.")):
                    bad += [f"{room}/{path.name}: {module}.{n}" for n in names
                            if n.startswith("_")]
    assert not bad, bad


def test_the_rooms_are_where_their_code_is():
    for room in ROOMS:
        assert len(list((PACKAGE / room).glob("*.py"))) >= 4, room


@pytest.fixture(scope="module")
def bare() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{VENV} is missing: run scripts/setup_envs.sh")
    return VENV


def test_the_bare_install_has_no_room_dependencies_and_no_other_role(bare):
    code = ("import importlib.util as u; print([m for m in "
            f"{(*ROOM_DEPENDENCIES, 'aspects_export', 'aspects_devkit')!r} if u.find_spec(m)])")
    out = subprocess.run([bare / "bin" / "python", "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    for command in ("aspects-export", "aspects-train", "aspects-dev"):
        assert not (bare / "bin" / command).exists(), command


def _volume(tmp_path: Path) -> Path:
    image = np.random.default_rng(0).uniform(100, 400, (64, 64, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([2.0, 2.0, 5.0, 1.0])), tmp_path / "dwi.nii.gz")
    return tmp_path / "dwi.nii.gz"


@pytest.mark.parametrize(
    ("extra_args", "extra"),
    [(["--score"], "score"), (["DICOMDIR"], "dicom")],
    ids=["score", "dicom"],
)
def test_a_missing_extra_is_one_line_naming_it_before_any_work(bare, tmp_path, extra_args,
                                                                extra):
    (tmp_path / "DICOMDIR").mkdir()
    source = [] if extra == "dicom" else [str(_volume(tmp_path))]
    args = [a if a != "DICOMDIR" else str(tmp_path / "DICOMDIR") for a in extra_args]
    out = subprocess.run(
        [bare / "bin" / "aspects", "segment", *source, *args, "-o", str(tmp_path / "o.json"),
         "--url", "127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"[{extra}] extra" in lines[0], out.stderr
    assert f"pip install 'aspects-client[{extra}]'" in lines[0]
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize(
    ("module", "prog", "extra", "argv"),
    [
        ("aspects_export", "aspects-export", "export", ["onnx", "-o", "OUT"]),
        ("aspects_train", "aspects-train", "train", ["--help"]),
        ("aspects_devkit", "aspects-dev", "devkit", ["demo", "-o", "OUT"]),
    ],
)
def test_a_role_cli_without_its_extra_says_which_to_install(module, prog, extra, argv,
                                                            tmp_path):
    """torch and onnx made unimportable (as in a bare ``pip install .``)."""
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; "
            f"sys.argv = [{prog!r}, *{argv!r}]; from {module}.entry import main; "
            "raise SystemExit(main())")
    out = subprocess.run([ROOT / ".venv" / "bin" / "python", "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [
        f"{prog}: error: needs the [{extra}] extra "
        f"({out.stderr.split('(')[1].split(' ')[0]} is not installed): "
        f"pip install 'aspects-triton[{extra}]'"
    ]
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_import_contract_covers_every_core_module():
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    rooms = [c for c in contracts["contracts"] if "never imports its rooms" in c["name"]]
    assert len(rooms) == 1
    listed = set(rooms[0]["source_modules"])
    core = {f"aspects_client.{p.stem}" for p in _core_modules() if p.stem != "__init__"}
    assert listed == core, (sorted(core - listed), sorted(listed - core))
    assert {"aspects_client.dicom", "aspects_client.scoring"} <= set(rooms[0]["forbidden_modules"])
