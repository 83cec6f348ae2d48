"""``metadata.json`` beside a weights file: a machine-readable description of the network.

In the spirit of MONAI bundles' ``configs/metadata.json``: the network's input and output
tensors, the classes, the normalisation, ``contract_version``, the architecture, the weights
file's name and sha256 and the training recipe (relative paths only).  ``describe(contract)``
is what the serving contract says such a file must hold; ``check_description`` refuses a file
that disagrees, naming the field; ``checkpoints.load_checkpoint`` runs it whenever a
``metadata.json`` lies beside the weights it loads.  (Re)write or check one with::

    python -m aspects_export.model_description write models/demo [--weights FILE]
    python -m aspects_export.model_description check models/demo

Standard library only (no torch): importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from aspects_client import contract as _contract
from aspects_client.errors import AspectsError

from .errors import CheckpointError

METADATA_FILE = "metadata.json"
RECIPE_FILE = "recipe.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
DESCRIPTION_VERSION = "1"
WRITE_COMMAND = "python -m aspects_export.model_description write"
_DTYPES = {"TYPE_FP32": "float32", "TYPE_FP16": "float16", "TYPE_UINT8": "uint8"}
_SHOWN = 6  # problems listed in one error message
_SHA256 = re.compile(r"[0-9a-f]{64}")

Description = dict[str, Any]


def _tensor(spec: _contract.TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "dtype": _DTYPES[spec.dtype], "shape": ["N", *spec.dims]}


def _slice_name(offset: int) -> str:
    return "slice k" if offset == 0 else f"slice k{offset:+d}"


def describe(contract: ModuleType = _contract) -> Description:
    """What every description must say, from ``contract`` (JSON types: lists, not tuples)."""
    (image,), (logits,) = contract.MODEL_IO[contract.UNET_MODEL]
    background = {"index": contract.BACKGROUND_INDEX, "key": contract.BACKGROUND_KEY,
                  "name": contract.BACKGROUND_KEY}
    return {
        "description_version": DESCRIPTION_VERSION,
        "contract_version": contract.CONTRACT_VERSION,
        "architecture": {
            "library": "segmentation-models-pytorch",
            "class": contract.ARCHITECTURE,
            "encoder_name": contract.ENCODER_NAME,
            "encoder_weights": None,
            "in_channels": contract.NETWORK_CHANNELS,
            "classes": contract.NUM_CLASSES,
        },
        "inputs": [{
            **_tensor(image),
            "channels": [_slice_name(o) for o in contract.CONTEXT_OFFSETS],
            "context_offsets": list(contract.CONTEXT_OFFSETS),
            "edge_slices": "replicated: the missing neighbour of an end slice is the slice",
        }],
        "outputs": [{
            **_tensor(logits),
            "meaning": "logits of slice k per class (softmax over axis 1)",
            "class_order": list(contract.CLASS_KEYS),
        }],
        "classes": [background, *({"index": r.index, "key": r.key, "name": r.name}
                                  for r in contract.REGIONS)],
        "normalisation": {
            "window_percentiles": list(contract.WINDOW_PERCENTILES),
            "window": "per volume, percentiles of the non-zero voxels -> uint8 0..255",
            "resize": list(contract.NETWORK_SIZE),
            "resize_method": "bilinear, half-pixel centres, no antialias",
            "pixel_scale": contract.PIXEL_SCALE,
            "mean": list(contract.IMAGENET_MEAN),
            "std": list(contract.IMAGENET_STD),
            "order": "uint8 [3, H, W] -> float32 -> resize -> / pixel_scale "
                     "-> (x - mean[c]) / std[c]",
        },
    }


def build_description(
    weights_name: str, sha256: str, size: int, recipe: Any, extra: Mapping[str, Any] | None = None,
    contract: ModuleType = _contract,
) -> Description:
    """The whole file: ``extra`` free-text fields first (name, intended use, ...), then
    ``describe(contract)``, the weights and the training recipe (``recipe.json``'s content)."""
    return {
        "name": Path(weights_name).name.split(".")[0],
        **(extra or {}),
        **describe(contract),
        "weights": {"file": weights_name, "format": Path(weights_name).suffix.lstrip("."),
                    "bytes": size, "sha256": sha256},
        "training": {"recipe_file": RECIPE_FILE if recipe is not None else None,
                     "recipe": recipe},
    }


def is_absolute_path(text: str) -> bool:
    """True for a POSIX, home (``~``), Windows drive or UNC path: what ties it to one machine."""
    return text.startswith(("/", "~", "\\")) or re.match(r"[A-Za-z]:[\\/]", text) is not None


def absolute_paths(value: Any, field: str) -> Iterator[tuple[str, str]]:
    """``(field, text)`` for every string inside ``value`` that is an absolute path."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from absolute_paths(item, f"{field}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from absolute_paths(item, f"{field}[{i}]")
    elif isinstance(value, str) and is_absolute_path(value):
        yield field, value


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def differences(actual: Any, expected: Any, field: str = "") -> Iterator[str]:
    """One line per field of ``expected`` that ``actual`` lacks or holds differently."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            yield f"{field} is {_show(actual)}, the contract says {_show(expected)}"
            return
        for key, want in expected.items():
            sub = f"{field}.{key}" if field else key
            if key in actual:
                yield from differences(actual[key], want, sub)
            else:
                yield f"{sub} is missing (the contract says {_show(want)})"
    elif isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
            yield from differences(got, want, f"{field}[{i}]")
    elif actual != expected or isinstance(actual, bool) != isinstance(expected, bool):
        yield f"{field} is {_show(actual)}, the contract says {_show(expected)}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_problems(desc: Mapping[str, Any], weights: Path | None) -> list[str]:
    """The ``weights`` entry: present, well formed, and (given the file) its name and sha256."""
    entry = desc.get("weights")
    if not isinstance(entry, Mapping):
        return ["weights is missing (the weights file's name and sha256)"]
    if not isinstance(entry.get("file"), str) or "/" in entry["file"] or "\\" in entry["file"]:
        return [f"weights.file is {_show(entry.get('file'))}, not a file name"]
    if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
        return [f"weights.sha256 is {_show(entry.get('sha256'))}, not a hex sha256"]
    if weights is None:
        return []
    if not weights.is_file():
        return [f"weights.file is {_show(entry['file'])}, which is not in {weights.parent}"]
    if entry["file"] != weights.name:
        return [f"weights.file is {_show(entry['file'])}, but it lies beside {weights.name!r} "
                f"(move {weights.name} to its own folder, or describe it instead)"]
    digest = sha256_file(weights)
    if entry["sha256"] != digest:
        return [f"weights.sha256 is {entry['sha256'][:12]}…, but {weights.name} hashes to "
                f"{digest[:12]}… (the weights changed after the description was written)"]
    return []


def _load(source: str | Path | Mapping[str, Any]) -> tuple[str, Path | None, Mapping[str, Any]]:
    """``(where, folder, description)`` of a mapping, a metadata.json or its folder."""
    if isinstance(source, Mapping):
        return "the model description", None, source
    path = Path(source) / METADATA_FILE if Path(source).is_dir() else Path(source)
    hint = f"write it with `{WRITE_COMMAND} {path.parent}`"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"no model description at {path}; {hint}") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc}); {hint}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object; {hint}")
    return str(path), path.parent, data


def check_description(
    source: str | Path | Mapping[str, Any], weights: str | Path | None = None,
    contract: ModuleType = _contract,
) -> None:
    """Refuse (``CheckpointError``, naming each field) a description that disagrees with
    ``contract``, has an absolute path in its training recipe, or (given ``weights``)
    names another file or another sha256."""
    where, folder, desc = _load(source)
    problems = list(differences(desc, describe(contract)))
    problems += [f"{field} is an absolute path ({_show(text)}): store a file name or a path "
                 f"relative to the recipe (recipe.json) instead"
                 for field, text in absolute_paths(desc.get("training"), "training")]
    problems += weights_problems(desc, Path(weights) if weights is not None else None)
    if not problems:
        return
    more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
    raise CheckpointError(
        f"{where} disagrees with the serving contract (CONTRACT_VERSION "
        f"{contract.CONTRACT_VERSION}) or its weights: " + "; ".join(problems[:_SHOWN]) + more
        + f". Regenerate it with `{WRITE_COMMAND} {folder or 'DIR'}` once the weights and "
        "recipe.json are right (weights trained under another contract must be retrained)"
    )


def _weights_in(folder: Path, name: str | None) -> Path:
    """The weights file to describe: ``name``, else the folder's only .safetensors file."""
    found = [folder / name] if name else sorted(folder.glob("*.safetensors"))
    if len(found) != 1 or not found[0].is_file():
        raise CheckpointError(
            f"cannot tell which weights in {folder} to describe ({len(found)} .safetensors "
            "files); name one with --weights FILE"
        )
    return found[0]


def write_description(folder: str | Path, weights_name: str | None = None) -> Path:
    """Write ``folder/metadata.json`` for its weights and recipe.json (checked first; free-text
    fields of an existing file are kept).  Atomic: nothing is left half written."""
    folder = Path(folder)
    weights = _weights_in(folder, weights_name)
    recipe_path = folder / RECIPE_FILE
    recipe = json.loads(recipe_path.read_text(encoding="utf-8")) if recipe_path.is_file() else None
    out = folder / METADATA_FILE
    old = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    generated = build_description(weights.name, "0" * 64, 0, recipe)
    extra = {k: v for k, v in old.items() if k not in generated or k == "name"}
    if (folder / MODEL_CARD_FILE).is_file():
        extra.setdefault("model_card", MODEL_CARD_FILE)
    desc = build_description(
        weights.name, sha256_file(weights), weights.stat().st_size, recipe, extra
    )
    check_description(desc, weights)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(desc, indent=2, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``write FOLDER [--weights FILE]`` | ``check FOLDER``; errors: one line, exit 1."""
    parser = argparse.ArgumentParser(prog="python -m aspects_export.model_description")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="(re)write FOLDER/metadata.json from the contract")
    w.add_argument("folder", type=Path)
    w.add_argument("--weights", help="weights file in FOLDER (default: its only .safetensors)")
    c = sub.add_parser("check", help="check FOLDER/metadata.json against the contract")
    c.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            print(write_description(args.folder, args.weights))
        else:
            entry = _load(args.folder)[2].get("weights")
            name = entry.get("file") if isinstance(entry, Mapping) else None
            check_description(args.folder, args.folder / name if isinstance(name, str) else None)
            print(f"{args.folder}: the description agrees with the contract and its weights")
    except (AspectsError, OSError, ValueError) as exc:
        print(f"model_description: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
