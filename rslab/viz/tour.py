"""Figures and the explorer of the data tour (notebook 00).

- :func:`show_map_layers`: the two layers of the tour's leafmap map (optical, labels) as a static
  figure on longitude/latitude axes, for headless runs and the book, where Leaflet cannot load.
- :func:`show_catalog`: one item of every dataset found under a ``data_root``
  (:mod:`rslab.data.catalog`), or the expected layout when there is none.
- :func:`world_explorer`: the seed / regional style / number-of-looks explorer of the synthetic
  world (an ipywidgets panel at a live kernel) and its static snapshot.
"""

from __future__ import annotations

import functools

import numpy as np
from matplotlib.figure import Figure

from rslab.data.catalog import DATASETS, datasets_table, find_dataset, open_dataset
from rslab.data.sample import Sample
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.viz.display import LabFigure, show
from rslab.viz.figures import show_sample
from rslab.viz.palette import colorize_labels, label_legend
from rslab.viz.sar import optical_to_display
from rslab.viz.widgets import HEADLESS_NOTE, widgets_enabled

__all__ = ["CATALOG_FIRST_SPLIT", "show_catalog", "show_map_layers", "world_explorer", "world_scene"]

#: The split :func:`show_catalog` opens per dataset (``None``: the dataset has no splits);
#: any dataset not listed opens its ``"train"`` split.
CATALOG_FIRST_SPLIT = {"sen1floods11": "test", "rrsisd": "test", "refsegrs": "test", "sen12ms": None,
                       "deepglobe": None}


def show_map_layers(sample: Sample, tree, level: int = 2, opacity: float = 0.6, max_px: int = 512) -> Figure:
    """The optical image with the labels at ``level`` drawn over it at ``opacity``, on the scene's
    longitude/latitude (``sample.bounds``): what :func:`rslab.viz.scene_map` puts on the map.

    The image is subsampled by an integer step to at most about ``max_px`` pixels a side."""
    if not isinstance(sample, Sample) or sample.optical is None or sample.labels is None:
        raise ValueError("sample must be a Sample with optical and labels (e.g. world.large_scene(...)).")
    if sample.bounds is None:
        raise ValueError("sample.bounds is None: the map needs (west, south, east, north), as synthetic scenes carry.")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}.")
    if max_px < 1:
        raise ValueError(f"max_px must be a positive pixel count, got {max_px}.")
    west, south, east, north = sample.bounds
    step = max(1, sample.labels.shape[0] // max_px)
    labels = sample.labels[::step, ::step]
    extent = (west, east, south, north)
    fig = LabFigure(figsize=(6.5, 6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(optical_to_display(sample.optical[:, ::step, ::step]), extent=extent)
    ax.imshow(colorize_labels(labels, tree, level, alpha=True), extent=extent, alpha=opacity)
    ax.legend(handles=label_legend(tree, level, present=labels), loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title=f"level {level}")
    ax.set_xlabel("longitude (deg)")
    ax.set_ylabel("latitude (deg)")
    ax.set_title(f"The map's two layers: optical, labels (level {level}) at {opacity:.0%} opacity", fontsize=10)
    return show(fig)


def _catalog_item_figure(item, title: str) -> Figure:
    """Optical | labels (or the first referred mask) of one catalog item."""
    labels = item.labels if item.labels is not None else (
        item.referring[0].mask.astype("int64") if item.referring else None)
    fig = LabFigure(figsize=(7, 3.4))
    axes = fig.subplots(1, 2 if labels is not None else 1, squeeze=False)
    axes[0, 0].imshow(optical_to_display(item.optical))
    axes[0, 0].set_title("optical")
    if labels is not None:
        axes[0, 1].imshow(np.where(labels == 255, np.nan, labels), cmap="tab10", interpolation="nearest")
        axes[0, 1].set_title("labels" if item.labels is not None else "referred mask")
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return show(fig)


def show_catalog(data_root) -> list[Figure]:
    """Print which catalog datasets are under ``data_root`` (item count, folder, reader, the
    notebooks that use them) and show item 0 of each; with ``data_root=None``, print the layout the
    catalog expects. Returns the figures shown (one per dataset with an optical image)."""
    if data_root is None:
        print("data_root not set (the full profile sets it): the catalog expects")
        print(datasets_table())
        return []
    figures = []
    for name, entry in DATASETS.items():
        try:
            find_dataset(name, data_root)
        except FileNotFoundError as err:
            print(f"{name}: not under {data_root} ({str(err).splitlines()[1].strip()})")
            continue
        data = open_dataset(name, data_root, CATALOG_FIRST_SPLIT.get(name, "train"))
        item = data[0]
        print(f"{name}: {len(data)} items in {entry.folder}/ (reader {entry.reader}); "
              f"used by {', '.join(entry.used_by)}")
        if item.optical is not None:
            title = f"{entry.title}: item 0" + (f", '{item.referring[0].text}'" if item.referring else "")
            figures.append(_catalog_item_figure(item, title))
    return figures


def world_scene(seed: int = 0, style: int = 0, n_looks: float = 4.0, *, size: int = 256, tree=None) -> Figure:
    """Scene 0 of the synthetic world of ``seed`` (side ``size`` px) in regional ``style`` with
    ``n_looks`` of speckle, shown by :func:`rslab.viz.show_sample` (``tree``: the world's own by default)."""
    world = SyntheticWorld(WorldConfig(size=size), seed=seed)
    if not 0 <= style < len(world.style_names):
        raise ValueError(f"style must be an index into world.style_names (0..{len(world.style_names) - 1}), "
                         f"got {style}.")
    scene = world.scene(0, style=style, n_looks=n_looks)
    return show_sample(scene, world.tree if tree is None else tree,
                       title=f"seed {seed}, style '{world.style_names[style]}', {n_looks:g} looks")


def world_explorer(world: SyntheticWorld, seed: int | None = None, n_looks: float = 4.0,
                   max_seed: int = 20) -> Figure:
    """The synthetic-world explorer: sliders for the world seed (0..``max_seed``, or up to ``seed``),
    the regional style and the number of looks, redrawing :func:`world_scene` at ``world``'s scene
    size. The widgets are built only at a live kernel (:func:`rslab.viz.widgets_enabled`); headless
    runs print a note. Either way, returns the static snapshot at the starting values (``seed``:
    the world's own)."""
    if not isinstance(world, SyntheticWorld):
        raise ValueError(f"world must be a SyntheticWorld, got {type(world).__name__}.")
    seed = world.seed if seed is None else seed
    if seed < 0:
        raise ValueError(f"seed must be a non-negative world seed, got {seed}.")
    draw = functools.partial(world_scene, size=world.config.size, tree=world.tree)
    if widgets_enabled():
        import ipywidgets as widgets
        from IPython.display import display

        display(widgets.interactive(
            draw,
            seed=widgets.IntSlider(value=seed, min=0, max=max(max_seed, seed), description="seed"),
            style=widgets.Dropdown(options=[(name, k) for k, name in enumerate(world.style_names)], value=0,
                                   description="style"),
            n_looks=widgets.FloatLogSlider(value=n_looks, base=2, min=0, max=5, step=1, description="looks"),
        ))
    else:
        print(HEADLESS_NOTE)
    return draw(seed, 0, n_looks)
