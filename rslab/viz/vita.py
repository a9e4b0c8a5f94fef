"""Figures of the SkySense-VITA notebook (03): the Semantic Granularity Annealing schedule and its
``tau_SGA`` explorer.

The schedule itself (``mu(t)``, ``p(l | t)``) is computed by :func:`rslab.curriculum.sga_schedule`;
these functions only draw arrays, so that ``rslab.viz`` stays below the curriculum layer.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from rslab.viz.display import LabFigure, show
from rslab.viz.widgets import HEADLESS_NOTE, widgets_enabled

__all__ = ["plot_level_probs", "plot_sga_schedule", "sga_tau_explorer"]


def _check_schedule(probs: np.ndarray, mu: np.ndarray | None = None) -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[0] < 2 or probs.shape[1] < 1:
        raise ValueError(f"probs must be (steps + 1, L) with at least 2 steps, got shape {probs.shape}; "
                         "use rslab.curriculum.sga_schedule(total_steps, depth, tau)")
    if mu is not None and np.shape(mu) != probs.shape[:1]:
        raise ValueError(f"mu must have one value per step, {probs.shape[0]}, got shape {np.shape(mu)}")
    return probs


def plot_sga_schedule(mu: np.ndarray, probs: np.ndarray, tau: float) -> Figure:
    """SGA over training (SkySense-VITA Sec. "Semantic Granularity Annealing"): ``p(l | t)`` of every
    level and the target granularity ``mu(t)`` (dashed, right axis), from
    :func:`rslab.curriculum.sga_schedule`."""
    probs = _check_schedule(probs, mu)
    ts = np.arange(len(probs))
    fig = LabFigure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    for level in range(probs.shape[1]):
        ax.plot(ts, probs[:, level], label=f"p(l={level + 1} | t)")
    ax2 = ax.twinx()
    ax2.plot(ts, mu, "k--", label="mu(t)")
    ax2.set_ylabel("mu(t)")
    ax.set_xlabel("training step t")
    ax.set_ylabel("probability")
    ax.set_title(f"SGA level distribution over training (tau_SGA = {tau})")
    ax.legend(loc="center left")
    return show(fig)


def plot_level_probs(probs: np.ndarray, tau: float) -> Figure:
    """``p(l | t)`` of every level over the steps, on a fixed [0, 1] axis (the explorer's panel)."""
    probs = _check_schedule(probs)
    ts = np.arange(len(probs))
    fig = LabFigure(figsize=(6, 2.8), layout="constrained")
    ax = fig.subplots()
    for level in range(probs.shape[1]):
        ax.plot(ts, probs[:, level], label=f"level {level + 1}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("p(l|t)")
    ax.set_title(f"tau_SGA = {tau:.2f}")
    ax.legend()
    return show(fig)


def sga_tau_explorer(schedule: Callable[[float], tuple[np.ndarray, np.ndarray]], tau: float = 0.5,
                     static_tau: float = 0.1) -> Figure | None:
    """A ``tau_SGA`` slider (log scale, 0.03..10, starting at ``tau``) redrawing
    :func:`plot_level_probs` of ``schedule(tau) -> (mu, probs)``, e.g.
    ``functools.partial(rslab.curriculum.sga_schedule, total_steps, depth)``. Built only at a live
    kernel (:func:`rslab.viz.widgets_enabled`); a headless run prints a note and draws the schedule
    at ``static_tau`` instead, and returns that figure."""
    if not callable(schedule):
        raise ValueError("schedule must be callable: tau -> (mu, probs), "
                         "e.g. functools.partial(rslab.curriculum.sga_schedule, total_steps, depth)")
    if tau <= 0 or static_tau <= 0:
        raise ValueError(f"tau and static_tau must be > 0, got {tau} and {static_tau}")

    def draw(tau: float = tau) -> Figure:
        return plot_level_probs(schedule(tau)[1], tau)

    if widgets_enabled():
        import ipywidgets as widgets

        widgets.interact(draw, tau=widgets.FloatLogSlider(value=tau, base=10, min=-1.5, max=1, step=0.05))
        return None
    print(HEADLESS_NOTE)
    return draw(static_tau)  # a fixed schedule to compare with the run's own
