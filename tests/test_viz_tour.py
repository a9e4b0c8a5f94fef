"""The data tour's figures and explorer (rslab.viz.tour): what they draw, print and refuse."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from rslab.data.catalog_testing import write_tiny_dataset
from rslab.data.sample import Sample
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.viz.tour import show_catalog, show_map_layers, world_explorer, world_scene
from rslab.viz.widgets import HEADLESS_ENV, HEADLESS_NOTE


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(WorldConfig(size=64), seed=0)


def test_map_layers_draws_both_layers_on_the_scene_bounds(world):
    large = world.scene(0)  # any scene with bounds; a 64 px one keeps the test fast
    fig = show_map_layers(large, world.tree, level=2, opacity=0.6, max_px=16)
    ax = fig.axes[0]
    images = ax.get_images()
    assert len(images) == 2 and images[1].get_alpha() == 0.6
    west, south, east, north = large.bounds
    assert np.allclose(images[0].get_extent(), (west, east, south, north))
    assert images[0].get_array().shape[:2] == (16, 16)  # 64 px subsampled by 4
    assert "60% opacity" in ax.get_title() and "level 2" in ax.get_title()


def test_map_layers_refuses_a_sample_it_cannot_place(world):
    scene = world.scene(0)
    with pytest.raises(ValueError, match="bounds"):
        show_map_layers(Sample(optical=scene.optical, labels=scene.labels), world.tree)
    with pytest.raises(ValueError, match="opacity"):
        show_map_layers(scene, world.tree, opacity=1.5)
    with pytest.raises(ValueError, match="optical and labels"):
        show_map_layers(Sample(labels=scene.labels, bounds=scene.bounds), world.tree)


def test_catalog_without_data_root_prints_the_layout(capsys):
    assert show_catalog(None) == []
    out = capsys.readouterr().out
    assert "data_root not set" in out and "| loveda | `loveDA/`" in out


def test_catalog_lists_found_datasets_and_shows_item_zero(tmp_path, capsys):
    write_tiny_dataset("loveda", tmp_path, n=2, size=32)
    figures = show_catalog(tmp_path)
    out = capsys.readouterr().out
    assert "loveda: 2 items in loveDA/" in out
    assert "sen12ms: not under" in out  # the others are reported missing, not skipped silently
    assert len(figures) == 1 and isinstance(figures[0], Figure)
    assert [ax.get_title() for ax in figures[0].axes] == ["optical", "labels"]


def test_world_explorer_headless_prints_the_note_and_draws_the_start(world, monkeypatch, capsys):
    monkeypatch.setenv(HEADLESS_ENV, "1")
    fig = world_explorer(world, seed=3, n_looks=2.0)
    assert HEADLESS_NOTE in capsys.readouterr().out
    other = SyntheticWorld(WorldConfig(size=64), seed=3)
    assert fig._suptitle.get_text() == f"seed 3, style '{other.style_names[0]}', 2 looks"
    # the explorer draws the scene of the chosen seed, not the notebook's world
    same = world_scene(3, 0, 2.0, size=64, tree=world.tree)
    assert np.array_equal(fig.axes[0].get_images()[0].get_array(), same.axes[0].get_images()[0].get_array())


def test_world_explorer_refuses_bad_inputs(world):
    with pytest.raises(ValueError, match="SyntheticWorld"):
        world_explorer(object())
    with pytest.raises(ValueError, match="seed"):
        world_explorer(world, seed=-1)
    with pytest.raises(ValueError, match="style_names"):
        world_scene(0, style=99, size=64)
