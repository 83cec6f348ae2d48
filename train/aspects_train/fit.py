"""``fit``: train the contract network, keep the top-k checkpoints by validation mean Dice,
resume from ``last.ckpt`` after an interruption, and write FP16 safetensors weights."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from torch.utils.data import ConcatDataset, DataLoader

from aspects_synth.generator import SampleOptions
from aspects_synth.recipes import TRAIN_SEED_START, VAL_SEED_START, seed_range

from .augment import AugmentConfig
from .dataset import CropDataset, FixedDataset, SliceDataset, SynthDataset
from .module import MONITOR, SegmentationModule
from .samples import SliceStack, phantom_stacks, stack_from_files

CHECKPOINT_DIR = "checkpoints"
LAST = "last"


@dataclass
class FitConfig:
    """Everything a run depends on (saved as ``recipe.json`` beside its checkpoints)."""

    out_dir: str = "runs/train"
    source: str = "synth"  # synth (domain-randomised heads) | phantoms (b1000 phantoms)
    synth_per_head: int = 4  # samples drawn from each synthetic head
    synth_val: int = 48  # fixed domain-randomised validation samples
    synth_crop: int | None = None  # train on random crop² windows of the 256² samples
    synth_partial: int = 5  # at most this many samples across a slice (partial volume)
    deep_fraction: float = 0.0  # share of levels from the ganglionic band (deep regions)
    ema_decay: float = 0.0  # exponential moving average of the weights (0 = off)
    channels_last: bool = False  # NHWC memory format (faster convolutions on CPU)
    train_phantoms: int = 48
    val_phantoms: int = 2
    train_pairs: list[tuple[str, str]] = field(default_factory=list)  # (volume, labels) NIfTI
    val_pairs: list[tuple[str, str]] = field(default_factory=list)
    crop: int = 256
    batch_size: int = 4
    accumulate: int = 2
    samples_per_epoch: int = 600
    max_epochs: int = 28
    max_minutes: float | None = None
    stop_after_epochs: int | None = None  # end early; the schedule still spans max_epochs
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    top_k: int = 3
    init_from: str | None = None  # start from these network weights (new optimiser/schedule)
    seed: int = 0
    threads: int | None = None
    precision: str = "auto"
    progress: bool = True
    augment: dict = field(default_factory=lambda: asdict(AugmentConfig()))


@dataclass(frozen=True)
class FitResult:
    best_checkpoint: Path | None
    best_score: float | None
    last_checkpoint: Path | None
    region_dice: dict[str, float]
    seconds: float


def auto_precision() -> str:
    """Mixed precision where the hardware has it: FP16 on CUDA, BF16 on CPUs with AMX or
    AVX512-BF16, else FP32 (e.g. AVX2 CPUs, where bf16 would be emulated and slower)."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def load_stacks(
    pairs: Sequence[tuple[str, str]], n_phantoms: int, seed_start: int, progress: bool
) -> list[SliceStack]:
    """Labelled pairs if given, else ``n_phantoms`` cached synthetic phantoms."""
    if pairs:
        return [stack_from_files(v, lab) for v, lab in pairs]
    return phantom_stacks(seed_range(seed_start, n_phantoms), progress=progress)


class EpochData(Callback):
    """Give the crop dataset its epoch (fresh, reproducible crops) and print one line per
    validation (readable in a log file when the progress bar is off)."""

    def __init__(self, dataset: CropDataset | SynthDataset, log_lines: bool) -> None:
        self.dataset = dataset
        self.log_lines = log_lines
        self.started = time.monotonic()
        self.losses: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dataset.set_epoch(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the module's on_validation_epoch_end: the metrics of this validation
        if not self.log_lines or trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        dice = " ".join(f"{k}={v:.2f}" for k, v in pl_module.last_region_dice.items())
        print(
            f"epoch {trainer.current_epoch} step {trainer.global_step} "
            f"t={time.monotonic() - self.started:.0f}s "
            f"train_loss={(sum(self.losses) / len(self.losses)) if self.losses else math.nan:.4f} "
            f"val_loss={float(m.get('val/loss', math.nan)):.4f} "
            f"mean_dice={float(m.get(MONITOR, math.nan)):.4f} | {dice}",
            flush=True,
        )
        self.losses.clear()


class StopAfterEpochs(Callback):
    """End the run after ``epochs`` epochs (the LR schedule still spans ``max_epochs``)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = int(epochs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def ema_callback(decay: float) -> Callback:
    """An exponential moving average of the weights, updated every optimiser step; the
    averaged weights are validated, checkpointed and exported (Lightning swaps them in)."""
    from lightning.pytorch.callbacks import WeightAveraging
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    return WeightAveraging(multi_avg_fn=get_ema_multi_avg_fn(float(decay)))


def fit(config: FitConfig, extra_callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train per ``config``; resumes from ``<out_dir>/checkpoints/last.ckpt`` if present.

    ``extra_callbacks``: more Lightning callbacks (e.g. Optuna pruning).
    """
    began = time.monotonic()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    L.seed_everything(config.seed, workers=True, verbose=False)
    out = Path(config.out_dir)
    ckpt_dir = out / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(asdict(config), indent=2) + "\n")

    if config.source not in ("synth", "phantoms"):
        raise ValueError(f"source must be synth or phantoms, got {config.source!r}")
    synthetic = config.source == "synth" and not config.train_pairs
    if synthetic:
        options = SampleOptions(config.synth_crop, config.synth_partial, config.deep_fraction)
        train_set: CropDataset | SynthDataset = SynthDataset(
            config.samples_per_epoch, TRAIN_SEED_START, config.synth_per_head, config.seed,
            options=options,
        )
    else:
        train_stacks = load_stacks(
            config.train_pairs, config.train_phantoms, TRAIN_SEED_START, config.progress
        )
        train_set = CropDataset(
            train_stacks,
            crop=config.crop,
            samples_per_epoch=config.samples_per_epoch,
            augment=AugmentConfig(**config.augment),
            seed=config.seed,
        )
    val_stacks = load_stacks(config.val_pairs, config.val_phantoms, VAL_SEED_START, False)
    val_set: SliceDataset | ConcatDataset = SliceDataset(val_stacks)
    if synthetic and config.synth_val > 0 and not config.val_pairs:
        held = SynthDataset(config.synth_val, VAL_SEED_START, config.synth_per_head, seed=1)
        val_set = ConcatDataset([val_set, FixedDataset(held, config.synth_val)])
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=False)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, shuffle=False)

    module = SegmentationModule(
        optimizer=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        channels_last=config.channels_last,
    )
    if config.init_from:
        from aspects_export.checkpoints import load_checkpoint, load_into

        load_into(module.model, load_checkpoint(config.init_from))  # values only: still trainable
    checkpoints = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="epoch{epoch:03d}-dice{val/mean_dice:.4f}",
        auto_insert_metric_name=False,
        monitor=MONITOR,
        mode="max",
        save_top_k=config.top_k,
        save_last=True,
    )
    callbacks: list[Callback] = [checkpoints, EpochData(train_set, log_lines=True)]
    callbacks += list(extra_callbacks)
    if config.stop_after_epochs:
        callbacks.append(StopAfterEpochs(config.stop_after_epochs))
    if config.ema_decay > 0:
        callbacks.append(ema_callback(config.ema_decay))
    if config.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    precision = auto_precision() if config.precision == "auto" else config.precision
    max_time = {"minutes": float(config.max_minutes)} if config.max_minutes else None
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        precision=precision,
        max_epochs=config.max_epochs,
        max_time=max_time,
        accumulate_grad_batches=config.accumulate,
        gradient_clip_val=config.grad_clip,
        callbacks=callbacks,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        logger=L.pytorch.loggers.CSVLogger(str(out), name="logs"),  # a new version per (re)start
        default_root_dir=str(out),
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    last = ckpt_dir / f"{LAST}.ckpt"
    resume = str(last) if last.is_file() else None
    if resume:
        print(f"resuming from {resume}", flush=True)
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume)
    best = Path(checkpoints.best_model_path) if checkpoints.best_model_path else None
    score = (
        float(checkpoints.best_model_score) if checkpoints.best_model_score is not None else None
    )
    return FitResult(
        best_checkpoint=best,
        best_score=score,
        last_checkpoint=last if last.is_file() else None,
        region_dice=dict(module.last_region_dice),
        seconds=time.monotonic() - began,
    )

