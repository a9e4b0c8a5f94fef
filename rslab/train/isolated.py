"""Short fits inside an experiment: the engine, with the caller's random generators left alone.

A linear probe or a small patch classifier is trained in the middle of a notebook, between draws
that must not change when the fit is added or removed. :class:`~rslab.train.Trainer` seeds the
process-wide Python, numpy and torch generators at its start (that is what makes a resumed run
exact); :func:`fit_preserving_rng` runs it and restores the three generators afterwards, so the
fit is seeded by ``config.seed`` alone and the caller's next draw is the one it would have been.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .engine import TrainConfig, Trainer

__all__ = ["fit_preserving_rng"]


def fit_preserving_rng(model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any], data: Any, config: TrainConfig,
                       optimizer: torch.optim.Optimizer | None = None) -> list[dict[str, Any]]:
    """``Trainer(model, loss_fn, data, config, optimizer=optimizer).fit(resume=False)`` without
    touching the Python, numpy or torch (CPU and, when ``config`` does not force the CPU, CUDA)
    random generators of the caller. Returns the history."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a rslab.train.TrainConfig, got {type(config).__name__}")
    cuda = [] if config.cpu or not torch.cuda.is_available() else list(range(torch.cuda.device_count()))
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda):
            return Trainer(model, loss_fn, data, config, optimizer=optimizer).fit(resume=False)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
