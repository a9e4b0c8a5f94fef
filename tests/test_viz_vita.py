"""The SGA figures of notebook 03 (rslab.viz.vita): what they draw and refuse, headless explorer."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from rslab.curriculum import sga_schedule
from rslab.viz.vita import plot_level_probs, plot_sga_schedule, sga_tau_explorer
from rslab.viz.widgets import HEADLESS_ENV, HEADLESS_NOTE


def test_sga_schedule_figure_draws_each_level_and_mu():
    mu, probs = sga_schedule(20, 3, 0.5)
    fig = plot_sga_schedule(mu, probs, 0.5)
    ax, ax_mu = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["p(l=1 | t)", "p(l=2 | t)", "p(l=3 | t)"]
    assert np.array_equal(ax.get_lines()[2].get_ydata(), probs[:, 2])
    assert np.array_equal(ax_mu.get_lines()[0].get_ydata(), mu) and "tau_SGA = 0.5" in ax.get_title()


def test_level_probs_panel_is_on_a_fixed_unit_axis():
    fig = plot_level_probs(sga_schedule(10, 2, 0.2)[1], 0.2)
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.0) and len(ax.get_lines()) == 2 and ax.get_title() == "tau_SGA = 0.20"


def test_schedule_figures_refuse_mismatched_arrays():
    mu, probs = sga_schedule(10, 3)
    with pytest.raises(ValueError, match="one value per step"):
        plot_sga_schedule(mu[:-1], probs, 0.5)
    with pytest.raises(ValueError, match="sga_schedule"):
        plot_level_probs(probs[:, 0], 0.5)


def test_tau_explorer_headless_draws_the_static_schedule(monkeypatch, capsys):
    monkeypatch.setenv(HEADLESS_ENV, "1")
    schedule = functools.partial(sga_schedule, 10, 3)
    fig = sga_tau_explorer(schedule, tau=0.5, static_tau=0.1)
    assert HEADLESS_NOTE in capsys.readouterr().out
    assert fig.axes[0].get_title() == "tau_SGA = 0.10"
    assert np.array_equal(fig.axes[0].get_lines()[0].get_ydata(), schedule(0.1)[1][:, 0])
    with pytest.raises(ValueError, match="callable"):
        sga_tau_explorer(None)
    with pytest.raises(ValueError, match="> 0"):
        sga_tau_explorer(schedule, static_tau=0.0)
