"""Semantic Granularity Annealing (SGA), SkySense-VITA Sec. "Semantic Granularity Annealing".

The semantic tree has levels ``1`` (coarsest) to ``L`` (leaves). Training moves a continuous
target granularity ``mu(t)`` from 1 to L with a cosine schedule,

    mu(t) = 1 + (L - 1) * (1 - cos(pi * t / T)) / 2,

and at each step samples a discrete level from

    p(l | t)  proportional to  exp(-|l - mu(t)| / tau_SGA),   l = 1..L.

Pixels are then supervised with their ancestor at level ``l`` (``tree.to_level(labels, l)``).
A soft distribution, rather than hard stage switching, keeps coarse levels in play late in
training, which the paper credits with avoiding catastrophic forgetting of coarse classes.
:class:`LevelSchedule` also offers the two ablation baselines: ``"fine"`` (always level L) and
``"hard"`` (L equal stages, level l during stage l).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _check(step: int, total_steps: int, depth: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step must be in [0, total_steps={total_steps}], got {step}")
    if depth < 1:
        raise ValueError(f"the tree depth L must be >= 1, got {depth}")


def sga_mu(step: int, total_steps: int, depth: int) -> float:
    """Continuous target granularity mu(t) in [1, L] (cosine from coarse to fine)."""
    _check(step, total_steps, depth)
    return 1.0 + (depth - 1) * (1.0 - math.cos(math.pi * step / total_steps)) / 2.0


def sga_level_probs(step: int, total_steps: int, depth: int, tau: float = 0.5) -> np.ndarray:
    """p(l | t) for l = 1..L as a length-L array summing to 1."""
    if tau <= 0:
        raise ValueError(f"tau_SGA must be > 0 (smaller = sharper around mu(t)), got {tau}")
    mu = sga_mu(step, total_steps, depth)
    levels = np.arange(1, depth + 1, dtype=np.float64)
    logits = -np.abs(levels - mu) / tau
    p = np.exp(logits - logits.max())
    return p / p.sum()


@dataclass
class LevelSchedule:
    """Which tree level supervises each training step.

    Args:
        depth: tree depth L.
        total_steps: T, the number of training steps.
        mode: ``"sga"`` (the paper), ``"fine"`` (leaf labels only) or ``"hard"`` (stage switching).
        tau: tau_SGA, the width of p(l | t).
        seed: the sampler's seed; the level sequence is a pure function of (seed, step).
    """

    depth: int
    total_steps: int
    mode: str = "sga"
    tau: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.mode not in ("sga", "fine", "hard"):
            raise ValueError(f"mode must be 'sga', 'fine' or 'hard', got {self.mode!r}")
        _check(0, self.total_steps, self.depth)

    def probs(self, step: int) -> np.ndarray:
        if self.mode == "sga":
            return sga_level_probs(step, self.total_steps, self.depth, self.tau)
        p = np.zeros(self.depth)
        if self.mode == "fine":
            p[-1] = 1.0
        else:
            _check(step, self.total_steps, self.depth)
            stage = min(self.depth - 1, int(step * self.depth / self.total_steps))
            p[stage] = 1.0
        return p

    def level(self, step: int) -> int:
        """The level (1..L) for ``step``; reproducible for a given seed."""
        rng = np.random.default_rng((self.seed, step))
        return int(rng.choice(self.depth, p=self.probs(step))) + 1


def sga_schedule(total_steps: int, depth: int, tau: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The whole SGA schedule of a run, for plotting: ``mu (T+1,)`` = :func:`sga_mu` and
    ``probs (T+1, L)`` = :func:`sga_level_probs` at every step ``t = 0..T``."""
    _check(0, total_steps, depth)
    steps = range(total_steps + 1)
    return (np.array([sga_mu(t, total_steps, depth) for t in steps]),
            np.stack([sga_level_probs(t, total_steps, depth, tau) for t in steps]))
