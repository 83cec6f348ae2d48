"""The segmentation network: segmentation-models-pytorch ``Unet`` (contract encoder, 11 classes).

The input is FP32 ``[N, 3, h, w]`` (``contract.NETWORK_SIZE``): a 2.5D stack of the slice below,
the slice and the slice above (``contract.CONTEXT_OFFSETS``), each channel ImageNet-normalised
with its own mean/std; the output is FP32 logits ``[N, 11, h, w]`` for the middle slice, in
contract class order.  ``encoder_weights=None`` always:
nothing is downloaded, weights come from a checkpoint (``aspects_export.checkpoints``).
"""

from __future__ import annotations

import torch

from aspects_client import contract


def build_unet() -> torch.nn.Module:
    """A freshly initialised ``smp.Unet(ENCODER_NAME, classes=NUM_CLASSES)``, in eval mode."""
    import segmentation_models_pytorch as smp

    model = smp.Unet(
        encoder_name=contract.ENCODER_NAME,
        encoder_weights=None,
        in_channels=contract.NETWORK_CHANNELS,
        classes=contract.NUM_CLASSES,
    )
    return prepare_for_inference(model)


def prepare_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Put ``model`` in eval mode with gradients off (batch-norm running stats, no dropout)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module, image: torch.Tensor, batch_size: int = 4
) -> torch.Tensor:
    """Run ``model`` on FP32 ``image [N,3,h,w]`` in chunks → FP32 logits ``[N,11,h,w]``."""
    outs = [model(image[i : i + batch_size]) for i in range(0, image.shape[0], batch_size)]
    return torch.cat(outs, dim=0)
