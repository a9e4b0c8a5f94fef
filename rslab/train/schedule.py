"""Learning-rate schedule: linear warm-up followed by a cosine decay.

This is the schedule used by the four papers' training recipes (and by DINO/iBOT, whose teacher
recipe QSACL follows): the rate rises linearly for ``warmup_steps`` optimiser steps, then follows
half a cosine from the peak down to ``min_lr_ratio * peak`` at ``total_steps``.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["cosine_with_warmup", "warmup_cosine_factor", "constant_with_warmup"]


def _check(warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate used by optimiser step ``step`` (0-based).

    Warm-up: ``(step + 1) / warmup_steps`` so the very first step already moves (a factor of 0
    would waste it) and step ``warmup_steps - 1`` reaches the peak. Then
    ``min + (1 - min) * (1 + cos(pi * t)) / 2`` with ``t = (step - warmup) / (total - warmup)``,
    which equals 1 right after warm-up and ``min_lr_ratio`` at ``step == total_steps``.
    """
    _check(warmup_steps, total_steps, min_lr_ratio)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class _WarmupCosine:
    """A picklable callable (LambdaLR stores callables objects' ``__dict__`` in its state)."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float, cosine: bool = True):
        _check(warmup_steps, total_steps, min_lr_ratio)
        self.warmup_steps, self.total_steps, self.min_lr_ratio, self.cosine = (
            warmup_steps, total_steps, min_lr_ratio, cosine)

    def __call__(self, step: int) -> float:
        if not self.cosine:
            return (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                       min_lr_ratio: float = 0.0) -> LambdaLR:
    """LambdaLR following :func:`warmup_cosine_factor`; call ``.step()`` once per optimiser step."""
    return LambdaLR(optimizer, _WarmupCosine(warmup_steps, total_steps, min_lr_ratio))


def constant_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Linear warm-up to the peak, then constant (useful for short probes and ablations)."""
    return LambdaLR(optimizer, _WarmupCosine(warmup_steps, total_steps, 0.0, cosine=False))
