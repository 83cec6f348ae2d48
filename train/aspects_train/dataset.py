"""Torch datasets: domain-randomised synthetic heads, and :class:`SliceStack` lists.

Every sample is a 2.5D stack (``contract.CONTEXT_OFFSETS``) through the serving
preprocessing: ``preprocessing.context_stacks``, ``resize_image`` (bilinear to
``contract.NETWORK_SIZE``) and ``normalise``; labels through ``resize_labels`` (nearest,
half-pixel).  Crops are taken at network scale, so pixel size is the one served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from aspects_client import contract
from aspects_client.server_reference import (
    context_stacks,
    network_input,
    normalise,
    resize_image,
    resize_labels,
)
from aspects_synth.generator import SampleOptions

from .augment import AugmentConfig, random_crop
from .samples import SliceStack

NETWORK_HW = contract.NETWORK_SIZE


def stack_input(stack: SliceStack, index: int) -> np.ndarray:
    """The 2.5D uint8 stack [3, H, W] of slice ``index`` (edge replicate)."""
    lo, hi = max(index - 1, 0), min(index + 2, len(stack.slices))
    sub = context_stacks(stack.slices[lo:hi])
    return sub[index - lo]


def slice_at_network_size(stack: SliceStack, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``index`` → (float32 0–255 image [3, h, w], uint8 labels [h, w])."""
    image = resize_image(stack_input(stack, index)[None])[0]
    labels = resize_labels(stack.labels[index : index + 1], NETWORK_HW)[0]
    return image, labels


class CropDataset(Dataset):
    """``samples_per_epoch`` random augmented crops per epoch: (x float32 [3, c, c], y int64
    [c, c]).  Sample ``i`` of epoch ``e`` is drawn from ``default_rng([seed, e, i])``, so a
    resumed run sees the same data; call :meth:`set_epoch` at each epoch start."""

    def __init__(
        self,
        stacks: Sequence[SliceStack],
        crop: int = 256,
        samples_per_epoch: int = 600,
        augment: AugmentConfig = AugmentConfig(),
        seed: int = 0,
        labelled_prob: float = 0.9,
    ) -> None:
        if not stacks:
            raise ValueError("no training volumes")
        if not 16 <= crop <= NETWORK_HW[0]:
            raise ValueError(f"crop must be in 16..{NETWORK_HW[0]}, got {crop}")
        self.stacks = list(stacks)
        self.crop = int(crop)
        self.samples_per_epoch = int(samples_per_epoch)
        self.augment = augment
        self.seed = int(seed)
        self.labelled_prob = float(labelled_prob)
        self.epoch = 0
        self._labelled = [s.labelled_slices for s in self.stacks]
        weights = np.array([max(len(s.slices), 1) for s in self.stacks], float)
        self._stack_prob = weights / weights.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        k = int(rng.choice(len(self.stacks), p=self._stack_prob))
        stack, labelled = self.stacks[k], self._labelled[k]
        if labelled.size and rng.random() < self.labelled_prob:
            n = int(labelled[rng.integers(labelled.size)])
        else:
            n = int(rng.integers(len(stack.slices)))
        image, labels = slice_at_network_size(stack, n)
        img, lab = random_crop(image, labels, self.crop, rng, self.augment)
        x = normalise(img[None])[0]  # img [3, c, c]
        return torch.from_numpy(x), torch.from_numpy(lab.astype(np.int64))


class SliceDataset(Dataset):
    """Whole slices exactly as served: x = ``network_input`` [3, h, w], y int64 [h, w].

    ``labelled_only`` keeps the slices holding a region (validation time is spent there).
    """

    def __init__(self, stacks: Sequence[SliceStack], labelled_only: bool = True) -> None:
        self.stacks = list(stacks)
        self.items = [
            (k, int(n))
            for k, s in enumerate(self.stacks)
            for n in (s.labelled_slices if labelled_only else range(len(s.slices)))
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, n = self.items[index]
        stack = self.stacks[k]
        x = network_input(stack_input(stack, n)[None])[0]
        y = resize_labels(stack.labels[n : n + 1], NETWORK_HW)[0]
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


class SynthDataset(Dataset):
    """Domain-randomised samples (``aspects_synth.generator``), generated on the fly.

    Sample ``i`` of epoch ``e`` comes from head seed ``seed_start + e·H + i // per_head``
    (H = heads per epoch) at a level drawn from ``default_rng([seed, e, i])``: reproducible
    and never repeated across epochs; a resumed run sees the same data.  Consecutive
    samples share a head, whose volume-level work is done once.  Nothing is cached on disk.
    """

    def __init__(
        self,
        samples_per_epoch: int,
        seed_start: int,
        per_head: int = 4,
        seed: int = 0,
        device: str = "cpu",
        options: SampleOptions | None = None,
    ) -> None:
        self.samples_per_epoch = int(samples_per_epoch)
        self.options = options or SampleOptions()
        self.seed_start = int(seed_start)
        self.per_head = max(1, int(per_head))
        self.seed = int(seed)
        self.device = device
        self.epoch = 0
        self._head = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def head_seed(self, index: int) -> int:
        heads = -(-self.samples_per_epoch // self.per_head)
        return self.seed_start + self.epoch * heads + int(index) // self.per_head

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from aspects_synth.generator import Head, training_samples

        seed = self.head_seed(index)
        if self._head is None or self._head.params.seed != seed:
            self._head = Head(seed, device=self.device)
        rng = np.random.default_rng([self.seed, self.epoch, int(index), 17])
        x, y = training_samples(self._head, rng, 1, self.options)
        return x[0].cpu(), y[0].cpu()


class FixedDataset(Dataset):
    """Samples of another dataset drawn once and held in memory (validation)."""

    def __init__(self, source: Dataset, count: int) -> None:
        self.items = [source[i] for i in range(int(count))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[index]
