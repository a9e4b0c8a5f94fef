"""Mask losses shared by the segmentation models: sigmoid BCE and Dice.

Both take mask *logits* and binary targets of the same shape ``(B, ..., H, W)`` and
return a scalar averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pair(logits: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if logits.shape != target.shape:
        raise ValueError(
            f"{name}: logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape; "
            "resize the target (nearest) or the logits (bilinear) first."
        )
    if logits.ndim < 2:
        raise ValueError(f"{name}: expected (B, ..., H, W) masks, got shape {tuple(logits.shape)}")


def sigmoid_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on mask logits (the 2-class cross-entropy of referring segmentation)."""
    _check_pair(logits, target, "sigmoid_bce_loss")
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 |P.G| + eps) / (|P| + |G| + eps)`` per mask, averaged over masks.

    ``eps = 1`` is the usual smoothing (Milletari et al.; Mask2Former uses the same form), so an
    empty prediction on an empty target scores a loss of 0.
    """
    _check_pair(logits, target, "dice_loss")
    prob = logits.sigmoid().flatten(1)
    target = target.to(prob.dtype).flatten(1)
    numerator = 2.0 * (prob * target).sum(-1) + eps
    denominator = prob.sum(-1) + target.sum(-1) + eps
    return (1.0 - numerator / denominator).mean()
