"""Torch datasets over :class:`~aspects_train.samples.SliceStack` lists.

Every sample goes through the serving preprocessing: ``preprocessing.resize_image`` (the
contract's bilinear resize to 512×512) and ``preprocessing.normalise`` (``/255`` and
ImageNet mean/std); labels through ``preprocessing.resize_labels`` (nearest, half-pixel).
Crops are taken at that 512×512 scale, so pixel size is the one served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from aspects_client import contract
from aspects_client.preprocessing import network_input, normalise, resize_image, resize_labels

from .augment import AugmentConfig, random_crop
from .samples import SliceStack

NETWORK_HW = contract.NETWORK_SIZE


def slice_at_network_size(stack: SliceStack, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``index`` → (float32 0–255 image [512, 512], uint8 labels [512, 512])."""
    image = resize_image(stack.slices[index : index + 1])[0]
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
        x = normalise(img[None])[0]
        return torch.from_numpy(x), torch.from_numpy(lab.astype(np.int64))


class SliceDataset(Dataset):
    """Whole slices exactly as served: x = ``network_input`` [3, 512, 512], y int64 [512, 512].

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
        x = network_input(stack.slices[n : n + 1])[0]
        y = resize_labels(stack.labels[n : n + 1], NETWORK_HW)[0]
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
