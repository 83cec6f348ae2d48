"""Training checkpoint → the weights file that ships: FP16 safetensors with the recipe.

The result loads in ``aspects_export.checkpoints.load_checkpoint`` (FP16 is upcast to FP32);
it is checked against the network before it is written.  The recipe stored in its header has
relative paths only (``relative_recipe``): no absolute path of the training machine.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from aspects_export.checkpoints import load_checkpoint, load_into
from aspects_export.model_description import is_absolute_path
from aspects_export.network import build_unet

_PATH_FIELDS = ("out_dir", "init_from")  # FitConfig fields kept by file name only
_PAIR_FIELDS = ("train_pairs", "val_pairs")  # (volume, labels) paths: relative to their folder


def export_weights(
    checkpoint: str | Path, out: str | Path, metadata: dict[str, str] | None = None,
    fp16: bool = True,
) -> Path:
    """Write ``checkpoint``'s network weights to ``out`` (.safetensors), FP16 by default.

    ``metadata``: string key/values stored in the file header (e.g. the recipe as JSON).
    Integer buffers (batch-norm counters) keep their dtype.
    """
    from safetensors.torch import save_file

    state = load_checkpoint(checkpoint)
    load_into(build_unet(), state)  # refuses anything that does not fit, before writing
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "source": Path(checkpoint).name, **(metadata or {})}
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={k: str(v) for k, v in meta.items()})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a weights file is for everyone to read
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _name(path: str) -> str:
    """The last component of a POSIX or Windows path."""
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1]


def _common_folder(paths: list[str]) -> str | None:
    """The deepest folder holding every path (made absolute against the working directory)."""
    if not paths:
        return None
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def _without_absolute(value: Any) -> Any:
    """``value`` with every absolute-path string replaced by its file name."""
    if isinstance(value, dict):
        return {k: _without_absolute(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_absolute(v) for v in value]
    return _name(value) if isinstance(value, str) and is_absolute_path(value) else value


def relative_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` without this machine's paths: ``out_dir`` and ``init_from`` by file name,
    ``train_pairs``/``val_pairs`` relative to the folder holding all of them (the manifest's,
    when it sits above its cases), any other absolute path by its file name."""
    out = dict(recipe)
    for key in _PATH_FIELDS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = _name(out[key])
    pairs = [p for key in _PAIR_FIELDS for pair in out.get(key) or [] for p in pair]
    base = _common_folder([str(p) for p in pairs])
    for key in _PAIR_FIELDS:
        if out.get(key):
            out[key] = [
                [Path(os.path.relpath(os.path.abspath(p), base)).as_posix() for p in pair]
                for pair in out[key]
            ]
    return _without_absolute(out)


def recipe_metadata(recipe_path: str | Path) -> dict[str, str]:
    """``{"recipe": <recipe.json, relative paths only>}`` for :func:`export_weights`: the
    weights file travels, so it must not carry the training machine's paths."""
    recipe = json.loads(Path(recipe_path).read_text())
    return {"recipe": json.dumps(relative_recipe(recipe), sort_keys=True)}
