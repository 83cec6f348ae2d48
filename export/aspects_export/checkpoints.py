"""Checkpoint loading for the contract network (``aspects_export.network.build_unet``).

Accepted files (always read with ``torch.load(weights_only=True)``: no pickled code runs):

- a plain ``state_dict`` (``torch.save(model.state_dict(), path)``);
- ``{"state_dict": state_dict, ...}`` (also ``"model_state_dict"`` / ``"model"``);
- a PyTorch Lightning checkpoint: ``{"state_dict": {"model.encoder...": ...}, "epoch": ...,
  "optimizer_states": [...], ...}`` of a LightningModule holding the network as ``self.model``
  (the ``model.`` prefix is stripped; a ``net.``/``module.`` prefix from DataParallel too);
- a ``.safetensors`` file (FP16/BF16 tensors are upcast to FP32).

A ``metadata.json`` beside the file (``aspects_export.model_description``) is checked first:
a description that disagrees with the contract or names another sha256 is refused.

``load_into`` refuses anything that does not fit exactly, with one ``CheckpointError`` that
lists missing keys, unexpected keys and shape mismatches.  Two spec strings name built-in
weights:

- ``"demo"`` (the default of ``aspects-export`` and the demo): ``models/demo/`` in the
  repository, FP16 safetensors trained by ``aspects-train`` on synthetic images only
  (``DEMO_CHECKPOINT_NOTE``; its model card says what it is and is not for);
- ``"untrained"``: ``untrained_state_dict()``, seeded deterministic random weights
  (``UNTRAINED_CHECKPOINT_NOTE``), for tests and timing where the labels do not matter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from aspects_client import contract
from aspects_export.errors import CheckpointError
from aspects_export.model_description import METADATA_FILE, check_description

DEMO_SPEC = "demo"
DEMO_WEIGHTS = Path("models") / "demo" / "aspects-unet-effb3-synth.safetensors"
DEMO_CHECKPOINT_NOTE = (
    "demo weights trained on synthetic images only (models/demo/MODEL_CARD.md): "
    "not for clinical use"
)
UNTRAINED_SPEC = "untrained"
UNTRAINED_SEED = 0
UNTRAINED_CHECKPOINT_NOTE = (
    "UNTRAINED weights (seeded random initialisation): the labels mean nothing; "
    "use --checkpoint demo or a trained checkpoint for real segmentations"
)
BUILTIN_SPECS = (DEMO_SPEC, UNTRAINED_SPEC)
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_PREFIXES = ("model.", "net.", "module.")
_LIST_MAX = 10

StateDict = dict[str, torch.Tensor]


def demo_weights_path() -> Path:
    """The demo weights file in this repository; CheckpointError when it is not there."""
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for root in (start, *start.parents):  # the checkout above this package, or above cwd
            if (root / DEMO_WEIGHTS).is_file():
                return root / DEMO_WEIGHTS
    raise CheckpointError(
        f"the demo weights ({DEMO_WEIGHTS}) are not in this checkout; run from the repository "
        "(git lfs pull if it uses LFS), train them with scripts/train_demo.sh, or give "
        "--checkpoint PATH"
    )


def untrained_state_dict(seed: int = UNTRAINED_SEED) -> StateDict:
    """Deterministic, UNTRAINED weights: ``build_unet()`` after ``torch.manual_seed(seed)``."""
    from aspects_export.network import build_unet

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_unet()
    finally:
        torch.random.set_rng_state(state)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_checkpoint(path: str | Path) -> StateDict:
    """Read a checkpoint file (see the module docstring) → FP32 state dict without prefixes.

    Raises ``CheckpointError`` for a missing, unreadable, corrupt or non-checkpoint file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path}; check the path (or use one of {BUILTIN_SPECS})"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    if (path.parent / METADATA_FILE).is_file():  # a description beside it: it must agree
        check_description(path.parent / METADATA_FILE, weights=path)
    raw = _load_safetensors(path) if path.suffix == ".safetensors" else _load_torch(path)
    return _normalise(_unwrap(raw, path), path)


def _load_torch(path: Path) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for damaged files
        text = str(exc).strip()
        detail = text.split("WeightsUnpickler error:")[-1].strip() if text else ""
        detail = detail.splitlines()[0][:160] if detail else ""
        msg = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        if "Unsupported global" in text:
            raise CheckpointError(
                f"{path} contains pickled Python objects besides tensors, which are not loaded "
                "for safety; re-save the weights with torch.save(model.state_dict(), path)"
            ) from exc
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or another "
            f"format; {msg}); re-download it or re-save it with "
            "torch.save(model.state_dict(), path)"
        ) from exc


def _load_safetensors(path: Path) -> StateDict:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - safetensors is in the [export] extra
        raise CheckpointError(
            f"{path} is a .safetensors file but the safetensors package is missing; "
            "pip install -e '.[export]'"
        ) from exc
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError and others
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt: {msg[:200]}); "
            "re-download or re-export it"
        ) from exc


def _unwrap(raw: object, path: Path) -> Mapping[str, object]:
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(raw).__name__}, not a state dict; "
            "save the weights with torch.save(model.state_dict(), path)"
        )
    for key in _WRAPPER_KEYS:
        inner = raw.get(key)
        if isinstance(inner, Mapping) and inner and not isinstance(inner, torch.Tensor):
            return inner
    return raw


def _normalise(raw: Mapping[str, object], path: Path) -> StateDict:
    tensors = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"{path} contains no tensors (keys: {_short(list(map(str, raw)))}); "
            "it is not a model checkpoint"
        )
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    # Lightning modules may hold more than the network (e.g. a loss with buffers): keep only
    # the prefixed part when the network's own keys carry "model.".
    lightning = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    if lightning and any(k.startswith("encoder.") for k in lightning):
        tensors = lightning
    return {
        k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v)
        for k, v in tensors.items()
    }


def _short(items: list[str]) -> str:
    head = ", ".join(items[:_LIST_MAX])
    return f"{head}, … ({len(items)} in all)" if len(items) > _LIST_MAX else head


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Load ``state_dict`` strictly into ``model``; any misfit → one ``CheckpointError`` listing
    missing keys, unexpected keys and shape mismatches (first 10 of each, with counts)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_short(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_short(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {_short(mismatched)}")
        hint = ""
        if any(k.startswith("encoder.") for k in missing) and any(
            k.startswith("encoder.") for k in unexpected
        ):
            hint = " (its encoder is a different architecture)"
        elif any(k.startswith("segmentation_head.") for k in mismatched):
            hint = " (different number of output classes)"
        raise CheckpointError(
            f"checkpoint does not fit smp {contract.ARCHITECTURE}('{contract.ENCODER_NAME}', "
            f"classes={contract.NUM_CLASSES}){hint}: " + "; ".join(parts) + ". "
            "Use a checkpoint of this architecture, or change the network to match it"
        )
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:  # pragma: no cover - all misfits are caught above
        raise CheckpointError(f"checkpoint does not fit the network: {exc}") from exc
    return model


def load_model(spec: str | Path) -> tuple[torch.nn.Module, str]:
    """``"demo"``, ``"untrained"`` or a checkpoint path → (eval-mode network, description).

    The description is the built-in's note (``DEMO_CHECKPOINT_NOTE`` /
    ``UNTRAINED_CHECKPOINT_NOTE``), else the resolved path.
    """
    from aspects_export.network import build_unet, prepare_for_inference

    model = build_unet()
    if str(spec) == UNTRAINED_SPEC:
        load_into(model, untrained_state_dict())
        return prepare_for_inference(model), UNTRAINED_CHECKPOINT_NOTE
    if str(spec) == DEMO_SPEC:
        load_into(model, load_checkpoint(demo_weights_path()))
        return prepare_for_inference(model), DEMO_CHECKPOINT_NOTE
    path = Path(spec)
    load_into(model, load_checkpoint(path))
    return prepare_for_inference(model), str(path.resolve())
