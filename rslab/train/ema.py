"""Exponential moving average (EMA) of a model: the momentum teacher.

QSACL (SkySense V2) trains its student against a teacher whose weights are an EMA of the
student's, with the momentum raised from ``start`` to ``end`` along a cosine, exactly as in
DINO (Caron et al. 2021, Sec. 3.1, "teacher network") and iBOT:

    theta_teacher <- m(t) * theta_teacher + (1 - m(t)) * theta_student
    m(t) = end - (end - start) * (1 + cos(pi * t / T)) / 2,   t = 0 .. T-1 optimiser steps

so the teacher follows the student closely early on and freezes towards the end.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["EMA", "cosine_momentum"]


def cosine_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """Teacher momentum after optimiser step ``step`` (0-based) of ``total_steps``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    t = min(max(step, 0), total_steps) / total_steps
    return end - (end - start) * (1.0 + math.cos(math.pi * t)) / 2.0


class EMA:
    """A frozen copy of ``model`` updated as an EMA of it.

    Args:
        model: the student. A deep copy becomes the teacher (``ema.model``); the student itself is
            only read. Create the EMA before building the ``Trainer`` so your ``loss_fn`` can use
            ``ema.model`` (e.g. a teacher forward pass), then pass ``ema=ema`` to the trainer.
        momentum: ``(start, end)`` of the cosine schedule, e.g. ``(0.996, 1.0)`` (DINO) ;
            a single float gives a constant momentum.
        total_steps: length ``T`` of the schedule; the ``Trainer`` sets it to ``max_steps`` when
            left as ``None``.

    Floating-point buffers (e.g. BatchNorm running statistics) are averaged like parameters;
    integer buffers (``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, momentum: float | tuple[float, float] = (0.996, 1.0),
                 total_steps: int | None = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"EMA needs an nn.Module, got {type(model).__name__}")
        start, end = (momentum, momentum) if isinstance(momentum, (int, float)) else tuple(momentum)
        for name, value in (("start", start), ("end", end)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"EMA momentum {name} must be in [0, 1], got {value}")
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"total_steps must be >= 1 or None, got {total_steps}")
        self.start, self.end, self.total_steps = float(start), float(end), total_steps
        self.model = copy.deepcopy(model).requires_grad_(False)

    def momentum_at(self, step: int) -> float:
        if self.total_steps is None:
            raise ValueError("EMA.total_steps is not set: pass total_steps=... (the Trainer sets max_steps)")
        return cosine_momentum(step, self.total_steps, self.start, self.end)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Move the teacher towards ``student`` with the momentum of step ``step``; returns it."""
        m = self.momentum_at(step)
        teacher_params = list(self.model.parameters())
        student_params = list(student.parameters())
        if len(teacher_params) != len(student_params):
            raise ValueError(f"teacher has {len(teacher_params)} parameters, student {len(student_params)}: "
                             "the EMA must be built from the model being trained")
        # lerp(teacher, student, 1 - m) == m * teacher + (1 - m) * student, fused over all tensors.
        torch._foreach_lerp_(teacher_params, [p.detach() for p in student_params], 1.0 - m)
        for t_buf, s_buf in zip(self.model.buffers(), student.buffers()):
            if t_buf.is_floating_point():
                t_buf.lerp_(s_buf, 1.0 - m)
            else:
                t_buf.copy_(s_buf)
        return m

    def to(self, device: torch.device | str) -> "EMA":
        self.model.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()
