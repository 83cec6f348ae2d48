"""The Lightning module: the contract network (``aspects_export.network.build_unet``) trained
with Dice + cross-entropy; per-region validation Dice; optimiser by name; warm-up + cosine.

The network is held as ``self.model``, so a checkpoint's keys are ``model.<smp key>``:
``aspects_export.checkpoints`` strips that prefix and loads it unchanged.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch import nn

from aspects_client import contract
from aspects_export.dice import class_counts, mean_region_dice, region_dice

OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
MONITOR = "val/mean_dice"


def build_optimizer(
    name: str, params, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """One of ``OPTIMIZERS`` by name."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.01) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class SegmentationModule(L.LightningModule):
    """smp Unet (contract encoder, 11 classes) + Dice/CE loss."""

    def __init__(
        self,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 50,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.save_hyperparameters()
        from segmentation_models_pytorch.losses import DiceLoss

        from aspects_export.network import build_unet

        self.model = build_unet()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.dice_loss = DiceLoss("multiclass", from_logits=True)
        self.ce_loss = nn.CrossEntropyLoss()
        self._val_counts: np.ndarray | None = None
        self.last_region_dice: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float32 [N, 3, H, W] (contract-normalised) → logits [N, 11, H, W]."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        return hp.dice_weight * self.dice_loss(logits, y) + hp.ce_weight * self.ce_loss(logits, y)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_counts = np.zeros((3, contract.NUM_CLASSES), np.int64)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", self.loss(logits, y), on_epoch=True, batch_size=len(x))
        counts = class_counts(logits.argmax(1).cpu().numpy(), y.cpu().numpy())
        assert self._val_counts is not None
        self._val_counts += counts

    def on_validation_epoch_end(self) -> None:
        if self._val_counts is None:
            return
        per_region = region_dice(self._val_counts)
        self.last_region_dice = per_region
        for key, value in per_region.items():
            self.log(f"val/dice_{key}", 0.0 if math.isnan(value) else value)
        mean = mean_region_dice(self._val_counts)
        self.log(MONITOR, 0.0 if math.isnan(mean) else mean, prog_bar=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = build_optimizer(hp.optimizer, self.parameters(), hp.lr, hp.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = min(int(hp.warmup_steps), max(0, total // 10))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, warmup, total)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
