"""Text-guided boundary loss of RS2-SAM2 (Sec. "Loss & Training", L_tbl, lambda_tbl = 0.2).

The paper: absolute differences between horizontally and vertically adjacent pixels give a
boundary map for the prediction and for the ground truth; their squared difference (MSE) is
weighted by a scalar obtained from the sentence embedding through a linear layer.

Two deliberate differences from the public reference code, which has two bugs:

1. The reference thresholds the predicted mask before taking differences, so the boundary term
   has no gradient with respect to the mask logits and trains nothing. Here the boundaries come
   from the *soft* probabilities ``sigmoid(logits)``, so the term shapes the mask.
   (``tests/test_rs2sam2.py`` checks that its gradient reaches the logits.)
2. The reference's text weight is an unbounded linear output: minimising the loss can drive it
   negative (a loss that rewards wrong boundaries) or to zero. Here the weight is
   ``1 + beta * tanh(w . s + b)``, bounded to ``[1 - beta, 1 + beta]`` (beta = 0.5): the sentence
   can raise or lower the emphasis on boundaries but can never switch the term off or flip it.
   Note that any weight learned jointly with the loss is pushed toward its lower bound; the bound
   is what keeps the term meaningful.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def boundary_map(prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute differences of vertically and horizontally adjacent pixels of ``(B, 1, H, W)`` maps."""
    if prob.ndim != 4:
        raise ValueError(f"boundary_map expects (B, C, H, W), got shape {tuple(prob.shape)}")
    vertical = (prob[..., 1:, :] - prob[..., :-1, :]).abs()
    horizontal = (prob[..., :, 1:] - prob[..., :, :-1]).abs()
    return vertical, horizontal


class TextGuidedBoundaryLoss(nn.Module):
    """L_tbl: text-weighted MSE between soft predicted and ground-truth boundary maps.

    Args:
        text_dim: size of the sentence embedding that sets the weight.
        beta: half-width of the weight's range ``[1 - beta, 1 + beta]``; must be in [0, 1).
    """

    def __init__(self, text_dim: int, beta: float = 0.5):
        super().__init__()
        if text_dim < 1:
            raise ValueError(f"text_dim must be >= 1, got {text_dim}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1) so the weight stays positive, got {beta}")
        self.beta = beta
        self.to_weight = nn.Linear(text_dim, 1)
        nn.init.zeros_(self.to_weight.weight)  # start at weight 1 for every sentence
        nn.init.zeros_(self.to_weight.bias)

    def text_weight(self, sentence: torch.Tensor) -> torch.Tensor:
        """``(B,)`` weights in ``[1 - beta, 1 + beta]`` from ``(B, text_dim)`` sentence embeddings."""
        return 1.0 + self.beta * torch.tanh(self.to_weight(sentence).squeeze(-1))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape or logits.ndim != 4:
            raise ValueError(
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must both be (B, 1, H, W)."
            )
        if sentence.ndim != 2 or sentence.shape[0] != logits.shape[0]:
            raise ValueError(
                f"sentence must be (B, text_dim) with B = {logits.shape[0]}, got {tuple(sentence.shape)}"
            )
        pred_v, pred_h = boundary_map(logits.sigmoid())
        gt_v, gt_h = boundary_map(target.to(logits.dtype))
        per_sample = ((pred_v - gt_v) ** 2).flatten(1).mean(-1) + ((pred_h - gt_h) ** 2).flatten(1).mean(-1)
        return (self.text_weight(sentence) * per_sample).mean()
