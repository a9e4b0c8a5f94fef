"""Tests for rslab.viz.coninfer: notebook 05's class maps, ablation, convergence and step figures."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from rslab.data.tree import load_tree
from rslab.viz import coninfer as vc
from rslab.viz.palette import level_palette


@pytest.fixture(scope="module")
def tree():
    return load_tree()


def test_level_classes_keep_the_level_colours(tree):
    classes = vc.level_classes(tree, 1)
    assert [leaf.name for leaf in classes.leaves] == list(tree.names(1))
    assert np.array_equal(level_palette(classes), level_palette(tree, 1))


def test_draw_labels_blacks_out_unknown_ids(tree):
    classes = vc.level_classes(tree, 1)
    fig = Figure()
    ax = fig.subplots()
    vc.draw_labels(ax, np.array([[0, 1], [99, -1]]), classes, "t", legend=True)
    img = ax.images[0].get_array()
    assert (np.asarray(img[1, 0]) == 0).all() and (np.asarray(img[1, 1]) == 0).all()   # 99, -1: unlabelled
    assert ax.get_title() == "t" and ax.get_legend() is not None
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        vc.draw_labels(ax, np.zeros(4, int), classes, "t")


def test_upsample_patches_repeats_each_patch():
    up = vc.upsample_patches(np.array([[1, 2], [3, 4]]), 3)
    assert up.shape == (6, 6) and up[2, 2] == 1 and up[3, 5] == 4
    with pytest.raises(ValueError, match="patch >= 1"):
        vc.upsample_patches(np.zeros((2, 2)), 0)


def test_figures_draw_what_they_are_given(tree):
    classes = vc.level_classes(tree, 1)
    fig = vc.plot_ablation({"prior": 0.3, "joint": 0.4}, "t")
    assert isinstance(fig, Figure) and [round(p.get_height()) for p in fig.axes[0].patches] == [30, 40]
    with pytest.raises(ValueError, match="'prior'"):
        vc.plot_ablation({"joint": 0.4}, "t")
    fig = vc.plot_convergence({"a": [1.0, 0.5], "b": [2.0, 1.0]}, {"a": [0.1, 0.0], "b": [0.2, 0.1]}, {"a": [0.4, 0.3]})
    assert len(fig.axes[0].lines) == 3 and len(fig.axes[1].lines) == 2   # the floor is drawn where given
    with pytest.raises(ValueError, match="same settings"):
        vc.plot_convergence({"a": [1.0]}, {"b": [0.1]}, {})
    history = [np.zeros(2 * 16, int), np.ones(2 * 16, int), np.full(2 * 16, 2)]
    optical = np.random.default_rng(0).random((4, 32, 32))
    fig = vc.show_label_steps(optical, np.zeros((4, 4), int), history, (4, 4), classes, index=1)
    assert len(fig.axes) == 5 and fig.axes[-1].get_title() == "joint, z-update 2"
    maps = {"prior": np.zeros((2, 4, 4), int), "joint": np.ones((2, 4, 4), int)}
    fig = vc.show_coninfer_gallery([optical, optical], [(0, "prior", "p"), (1, "joint", "j")], maps,
                                   np.zeros((2, 32, 32), int), 8, classes, "t")
    assert len(fig.axes) >= 8
    with pytest.raises(ValueError, match="no class maps"):
        vc.show_coninfer_gallery([optical], [(0, "paper", "p")], maps, np.zeros((1, 32, 32), int), 8, classes, "t")
    fig = vc.show_scene_refinement(optical, np.zeros((32, 32), int), np.ones((32, 32), int), np.zeros((32, 32), int),
                                   classes, "ConInfer")
    assert [ax.get_title() for ax in fig.axes[:4]] == ["optical", "truth", "prior", "ConInfer"]


def test_label_step_explorer_is_headless_safe(tree, monkeypatch, capsys):
    monkeypatch.setenv("RSLAB_HEADLESS", "1")
    assert vc.label_step_explorer([np.zeros(16, int)], np.zeros((4, 4), int), (4, 4), vc.level_classes(tree, 1)) is None
    assert "headless run" in capsys.readouterr().out
    with pytest.raises(ValueError, match="history is empty"):
        vc.label_step_explorer([], np.zeros((4, 4), int), (4, 4), vc.level_classes(tree, 1))
