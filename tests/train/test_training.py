"""Training on tiny inputs: the loss falls, checkpoints resume, a checkpoint goes through
``aspects-export`` unchanged, and the Optuna study writes its trials table."""

from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import optuna
import pytest
import torch

from aspects_client import contract
from aspects_client.volume_io import load_volume
from aspects_export.checkpoints import load_model
from aspects_train.dataset import CropDataset
from aspects_train.fit import FitConfig, fit
from aspects_train.module import SegmentationModule, warmup_cosine
from aspects_train.samples import stack_from_volume
from aspects_train.tune import tune
from aspects_train.weights import export_weights, read_metadata

pytestmark = pytest.mark.slow


def _tiny_config(tmp_path: Path, pairs, **overrides) -> FitConfig:
    base = FitConfig(
        out_dir=str(tmp_path / "run"),
        train_pairs=pairs,
        val_pairs=pairs[:1],
        crop=64,
        batch_size=2,
        accumulate=2,
        samples_per_epoch=4,
        max_epochs=1,
        warmup_steps=0,
        progress=False,
        top_k=2,
        threads=2,
    )
    return replace(base, **overrides)


def test_training_steps_on_tiny_crops_lower_the_loss(tiny_phantom):
    """Ten optimiser steps on one 64×64 batch (real Lightning loop): the loss goes down."""
    L.seed_everything(0, verbose=False)
    stack = stack_from_volume(load_volume(tiny_phantom.image), tiny_phantom.classes)
    batch = next(iter(torch.utils.data.DataLoader(CropDataset([stack], crop=64), batch_size=4)))

    class Losses(L.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, b, i):
            self.values.append(float(outputs["loss"]))

    losses = Losses()
    trainer = L.Trainer(
        max_steps=10,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[losses],
        limit_val_batches=0,
    )
    module = SegmentationModule(lr=1e-3, warmup_steps=0)
    trainer.fit(
        module,
        torch.utils.data.DataLoader([tuple(t[i] for t in batch) for i in range(4)], batch_size=4),
    )
    values = losses.values
    assert len(values) == 10 and all(np.isfinite(values))
    assert np.mean(values[-3:]) < 0.9 * np.mean(values[:3]), values


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.01)
    assert 0.01 < warmup_cosine(55, 10, 100) < 1.0


def test_fit_checkpoint_goes_through_aspects_export_unchanged(tmp_path, tiny_pairs):
    result = fit(_tiny_config(tmp_path, tiny_pairs))
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert result.last_checkpoint is not None and result.best_score is not None
    assert set(result.region_dice) == set(contract.REGION_KEYS)

    # the Lightning checkpoint as written, straight into the exporter's CLI
    out = tmp_path / "onnx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aspects_export.cli",
            "onnx",
            "--checkpoint",
            str(result.best_checkpoint),
            "--out",
            str(out),
            "--check-slices",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for model in contract.STEP_MODELS:
        assert (out / f"{model}.onnx").is_file()
    assert "passed" in (out / "numeric_report.json").read_text()

    # the same weights in FP16 safetensors: the network the module trained, within FP16
    weights = export_weights(result.best_checkpoint, tmp_path / "w.safetensors", {"k": "v"})
    assert read_metadata(weights)["k"] == "v"
    assert weights.stat().st_size < 0.6 * sum(
        v.numel() * 4
        for v in torch.load(result.best_checkpoint, weights_only=True)["state_dict"].values()
        if v.is_floating_point()
    )
    full, _ = load_model(result.best_checkpoint)
    half, source = load_model(weights)
    assert source == str(weights.resolve())
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        a, b = full(x), half(x)
    assert torch.allclose(a, b, atol=0.05 * float(a.abs().max()) + 1e-3)
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.99


def test_fit_resumes_from_last_checkpoint(tmp_path, tiny_pairs, capsys):
    fit(_tiny_config(tmp_path, tiny_pairs, max_epochs=1))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    fit(_tiny_config(tmp_path, tiny_pairs, max_epochs=2))
    assert "resuming from" in capsys.readouterr().out
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 2  # 2 epochs × (2 batches / accum 2)


def test_fit_with_ema_checkpoints_the_averaged_weights(tmp_path, tiny_pairs):
    """With an EMA, the checkpoint's weights are the average (not the last step's), kept
    beside the raw ones so a resumed run continues both."""
    result = fit(_tiny_config(tmp_path, tiny_pairs, ema_decay=0.5, channels_last=True,
                              samples_per_epoch=8, lr=1e-2))  # 2 steps: the first copies
    state = torch.load(result.last_checkpoint, weights_only=True)
    key = "model.segmentation_head.0.weight"
    assert "current_model_state" in state
    assert not torch.equal(state["state_dict"][key], state["current_model_state"][key])


def test_fit_stops_early_and_fine_tunes_from_a_checkpoint(tmp_path, tiny_pairs):
    first = fit(_tiny_config(tmp_path / "a", tiny_pairs, max_epochs=5, stop_after_epochs=1))
    assert torch.load(first.last_checkpoint, weights_only=True)["epoch"] == 0
    # lr 0: the network must end exactly where --init-from started it (BN stats aside)
    second = fit(
        _tiny_config(
            tmp_path / "b",
            tiny_pairs,
            init_from=str(first.last_checkpoint),
            lr=0.0,
            weight_decay=0.0,
        )
    )
    key = "model.segmentation_head.0.weight"
    a = torch.load(first.last_checkpoint, weights_only=True)["state_dict"][key]
    b = torch.load(second.last_checkpoint, weights_only=True)["state_dict"][key]
    assert torch.equal(a, b)
    from aspects_export.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not found"):
        fit(_tiny_config(tmp_path / "c", tiny_pairs, init_from=str(tmp_path / "none.ckpt")))


def test_tune_writes_the_trials_table(tmp_path, tiny_pairs):
    study = tune(_tiny_config(tmp_path, tiny_pairs), n_trials=2, optimizers=("adamw", "sgd"))
    rows = list(csv.DictReader((tmp_path / "run" / "trials.csv").open()))
    assert [r["number"] for r in rows] == ["0", "1"]
    assert all(r["state"] == "COMPLETE" and 0 <= float(r["value"]) <= 1 for r in rows)
    assert all(r["optimizer"] in ("adamw", "sgd") and 1e-4 <= float(r["lr"]) <= 3e-3 for r in rows)
    assert study.best_value == pytest.approx(max(float(r["value"]) for r in rows), abs=1e-6)
    assert (tmp_path / "run" / "trial_1" / "checkpoints" / "last.ckpt").is_file()


def test_tune_prunes_a_trial_the_pruner_rejects(tmp_path, tiny_pairs):
    tune(
        _tiny_config(tmp_path, tiny_pairs),
        n_trials=1,
        pruner=optuna.pruners.ThresholdPruner(lower=1.01),
    )  # no Dice reaches it
    rows = list(csv.DictReader((tmp_path / "run" / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["PRUNED"] and rows[0]["last_epoch"] == "0"


def test_cli_fit_reports_a_bad_manifest_in_one_line(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("only-one-column.nii.gz\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aspects_train.cli",
            "fit",
            "--train",
            str(bad),
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "expected 'volume,labels'" in proc.stderr
