"""Training checkpoint → the weights file that ships: FP16 safetensors with the recipe.

The result loads in ``aspects_export.checkpoints.load_checkpoint`` (FP16 is upcast to FP32);
it is checked against the network before it is written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from aspects_export.checkpoints import load_checkpoint, load_into
from aspects_export.network import build_unet


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


def recipe_metadata(recipe_path: str | Path) -> dict[str, str]:
    """``{"recipe": <recipe.json text>}`` for :func:`export_weights`."""
    return {"recipe": json.dumps(json.loads(Path(recipe_path).read_text()), sort_keys=True)}
