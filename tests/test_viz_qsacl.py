"""Tests for notebook 02's figures (rslab.viz.qsacl): what each figure draws, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from rslab.data.tree import load_tree
from rslab.viz import qsacl as qviz


@pytest.fixture(scope="module")
def tree():
    return load_tree("synthetic")


def test_show_scene_pair_draws_three_panels_with_a_legend(tree):
    labels = np.zeros((16, 16), dtype=np.int64)
    labels[:, 8:] = 3
    fig = qviz.show_scene_pair(np.random.rand(4, 16, 16), np.full((2, 16, 16), -15.0), labels, tree)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["optical (RGB)", "SAR VV (dB, stretched)", "labels (leaf classes)"]
    legend = fig.axes[2].get_legend()
    assert len(legend.get_texts()) == 2  # the classes present only
    with pytest.raises(ValueError, match="labels must have 2 dimensions"):
        qviz.show_scene_pair(np.random.rand(4, 16, 16), np.zeros((2, 16, 16)), labels[None], tree)


def test_plot_pretraining_loss_one_line_per_method_and_chance():
    history = [{"step": 1, "contrastive": 2.0}, {"step": 2}, {"step": 3, "contrastive": 1.5}]
    fig = qviz.plot_pretraining_loss({"QSACL": history, "image-level": history[:1]}, batch_size=16)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["QSACL", "image-level", "log B (chance)"]
    assert list(lines[0].get_xdata()) == [1, 3]  # records without a loss are skipped
    assert lines[2].get_ydata()[0] == pytest.approx(np.log(16))
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        qviz.plot_pretraining_loss({"QSACL": history}, batch_size=1)


def test_plot_probe_miou_bars_in_percent():
    fig = qviz.plot_probe_miou([("random init", 0.1, 0.2), ("QSACL, 120 steps", 0.3, 0.4)], "t", wrap_labels=True)
    ax = fig.axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [10.0, 30.0, 20.0, 40.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["random init", "QSACL,\n120 steps"]
    with pytest.raises(ValueError, match="rows must be a non-empty list"):
        qviz.plot_probe_miou([], "t")


def test_query_figures(tree):
    images, labels = torch.rand(3, 4, 16, 16), torch.randint(0, 5, (3, 16, 16))
    attention = torch.rand(3, 4, 16, 16)
    fig = qviz.show_query_attention(images, labels, attention, tree, n_show=2)
    assert len(fig.axes) == 2 * (2 + 2)  # two scenes: optical, labels, two queries
    assert fig.axes[3].get_title() == "query 1"
    with pytest.raises(ValueError, match="scenes"):
        qviz.show_query_attention(images, labels, attention, tree, scenes=(0, 5))
    lift = torch.tensor([[1.0, 8.0, float("nan")], [0.5, 1.0, 2.0]])
    fig = qviz.plot_query_lift(lift, ["a", "b", "c"])
    shown = fig.axes[0].get_images()[0].get_array()
    assert np.allclose(shown, [[0.0, 3.0, 0.0], [-1.0, 0.0, 1.0]])  # log2, absent class = no preference
    with pytest.raises(ValueError, match="3 classes but 2 class_names"):
        qviz.plot_query_lift(lift, ["a", "b"])
    fig = qviz.show_query_map(images[0], attention[0, 2], query=2)
    assert fig.axes[1].get_title() == "query 2"


def test_query_explorer_slider_ranges():
    pytest.importorskip("ipywidgets")
    explorer = qviz.query_explorer(torch.rand(3, 4, 16, 16), torch.rand(3, 5, 16, 16))
    sliders = {w.description: (w.min, w.max) for w in explorer.widget.children if hasattr(w, "min")}
    assert sliders == {"scene": (0, 2), "query": (0, 4)}
    with pytest.raises(ValueError, match="same scenes"):
        qviz.query_explorer(torch.rand(3, 4, 16, 16), torch.rand(2, 5, 16, 16))
