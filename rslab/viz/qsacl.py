"""Figures of notebook 02 (SkySense V2, QSACL): one scene seen by two sensors, the pre-training
loss, linear-probe scores, and what each QSACL query attends to (static maps, the per-class lift,
and an ipywidgets explorer for a live kernel).

Every function returns a :class:`rslab.viz.display.LabFigure` and, in a notebook kernel, displays
it once (:func:`rslab.viz.display.show`). Images and maps may be numpy arrays or CPU tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from rslab.viz.display import LabFigure, show
from rslab.viz.palette import colorize_labels, label_legend
from rslab.viz.sar import optical_to_display, sar_to_display

__all__ = ["show_scene_pair", "plot_pretraining_loss", "plot_probe_miou", "show_query_attention",
           "plot_query_lift", "show_query_map", "query_explorer"]


def _image(x, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return a


def show_scene_pair(optical, sar_db, labels, tree,
                    title: str = "One held-out scene: the same ground seen by two sensors") -> Figure:
    """Optical RGB | SAR VV (dB, stretched) | leaf-class labels of one scene, with a class legend.
    ``optical`` (C, H, W), ``sar_db`` (2, H, W) in dB, ``labels`` (H, W)."""
    optical, sar_db, labels = _image(optical, "optical", 3), _image(sar_db, "sar_db", 3), _image(labels, "labels", 2)
    fig = LabFigure(figsize=(10, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].imshow(optical_to_display(optical))
    axes[0].set_title("optical (RGB)")
    axes[1].imshow(sar_to_display(sar_db, channel="VV"), cmap="gray")
    axes[1].set_title("SAR VV (dB, stretched)")
    axes[2].imshow(colorize_labels(labels, tree))
    axes[2].set_title("labels (leaf classes)")
    axes[2].legend(handles=label_legend(tree, present=labels), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                   fontsize=7, frameon=False)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    return show(fig)


def plot_pretraining_loss(histories: dict[str, Sequence[dict]], batch_size: int) -> Figure:
    """Contrastive loss against step, one line per method (``histories``: label -> a trainer's
    ``history`` records; those with a ``"contrastive"`` entry are drawn), with InfoNCE's chance
    level log B for batches of ``batch_size``."""
    if not histories:
        raise ValueError("histories must map at least one method label to its trainer history")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (InfoNCE negatives), got {batch_size}")
    fig = LabFigure(figsize=(6, 3.5))
    ax = fig.subplots()
    for label, history in histories.items():
        h = [r for r in history if "contrastive" in r]
        ax.plot([r["step"] for r in h], [r["contrastive"] for r in h], label=label)
    ax.axhline(math.log(batch_size), color="grey", ls=":", label="log B (chance)")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.legend()
    ax.set_title("Pre-training loss")
    return show(fig)


def plot_probe_miou(rows: Sequence[tuple[str, float, float]], title: str, wrap_labels: bool = False) -> Figure:
    """Linear-probe mIoU (%) per backbone, optical and SAR bars side by side. ``rows``: (label,
    optical mIoU, SAR mIoU) with mIoU in [0, 1]; ``wrap_labels`` breaks labels at ", "."""
    if not rows or any(len(r) != 3 for r in rows):
        raise ValueError("rows must be a non-empty list of (label, optical mIoU, SAR mIoU)")
    fig = LabFigure(figsize=(8, 3.5) if wrap_labels else (7, 3.5))
    ax = fig.subplots()
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [100 * r[1] for r in rows], 0.4, label="optical input")
    ax.bar(x + 0.2, [100 * r[2] for r in rows], 0.4, label="SAR input")
    labels = [r[0].replace(", ", ",\n") if wrap_labels else r[0] for r in rows]
    ax.set_xticks(x, labels, fontsize=8 if wrap_labels else None)
    ax.set_ylabel("linear-probe mIoU (%)")
    ax.set_title(title)
    ax.legend()
    return show(fig)


def show_query_attention(images, labels, attention, tree, n_show: int = 6, scenes: Sequence[int] = (0, 1)) -> Figure:
    """For each scene in ``scenes``: optical | labels | the attention maps of the first ``n_show``
    queries. ``images`` (B, C, H, W) optical, ``labels`` (B, H, W), ``attention`` (B, m, H, W)
    (:func:`rslab.models.qsacl.query_attention_maps`)."""
    images, labels = _image(images, "images", 4), _image(labels, "labels", 3)
    attention = _image(attention, "attention", 4)
    n_show = min(n_show, attention.shape[1])
    if n_show < 1 or not scenes or max(scenes) >= min(len(images), len(labels), len(attention)):
        raise ValueError(f"need n_show >= 1 and scenes {tuple(scenes)} within the {len(attention)} scenes given")
    fig = LabFigure(figsize=(2.2 * (n_show + 2), 2.3 * len(scenes)))
    axes = fig.subplots(len(scenes), n_show + 2, squeeze=False)
    for row, b in enumerate(scenes):
        axes[row, 0].imshow(optical_to_display(images[b]))
        axes[row, 0].set_title("optical")
        axes[row, 1].imshow(colorize_labels(labels[b], tree))
        axes[row, 1].set_title("labels")
        for q in range(n_show):
            axes[row, q + 2].imshow(attention[b, q], cmap="magma")
            axes[row, q + 2].set_title(f"query {q}")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("QSACL cross-attention of each query (teacher, held-out scenes)")
    fig.legend(handles=label_legend(tree, present=labels[list(scenes)]), loc="upper center",
               bbox_to_anchor=(0.5, 0.02), ncol=6, fontsize=7, frameon=False)
    return show(fig)


def plot_query_lift(lift, class_names: Sequence[str]) -> Figure:
    """The (m, K) lift of :func:`rslab.models.qsacl.query_class_affinity` as a log2 heat map (clipped
    to [-3, 3]; absent classes at 0 = no preference): which classes each query prefers."""
    lift = _image(lift, "lift", 2)
    if lift.shape[1] != len(class_names):
        raise ValueError(f"lift has {lift.shape[1]} classes but {len(class_names)} class_names were given")
    m = lift.shape[0]
    fig = LabFigure(figsize=(9, 0.45 * m + 1.8))
    ax = fig.subplots()
    im = ax.imshow(np.log2(np.clip(np.nan_to_num(lift, nan=1.0), 1 / 8, 8)), cmap="coolwarm", vmin=-3, vmax=3,
                   aspect="auto")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(m))
    ax.set_ylabel("query")
    ax.set_title("log2 lift: attention share / pixel share, per class")
    fig.colorbar(im, ax=ax, label="log2 lift")
    return show(fig)


def show_query_map(image, attention_map, query: int) -> Figure:
    """One scene's optical image (C, H, W) next to one query's attention map (H, W)."""
    image, attention_map = _image(image, "image", 3), _image(attention_map, "attention_map", 2)
    fig = LabFigure(figsize=(6, 3))
    axes = fig.subplots(1, 2)
    axes[0].imshow(optical_to_display(image))
    axes[1].imshow(attention_map, cmap="magma")
    axes[1].set_title(f"query {query}")
    for ax in axes:
        ax.axis("off")
    return show(fig)


def query_explorer(images, attention):
    """An ipywidgets explorer (a live kernel only; see :func:`rslab.viz.widgets.widgets_enabled`):
    sliders pick a scene and a query, and :func:`show_query_map` draws the precomputed
    ``attention`` (B, m, H, W) next to ``images`` (B, C, H, W); moving a slider never runs a model."""
    import ipywidgets as widgets

    images, attention = _image(images, "images", 4), _image(attention, "attention", 4)
    if len(images) != len(attention):
        raise ValueError(f"images and attention must hold the same scenes, got {len(images)} and {len(attention)}")

    def draw(scene: int = 0, query: int = 0) -> None:
        show_query_map(images[scene], attention[scene, query], query)

    return widgets.interact(draw, scene=(0, len(images) - 1), query=(0, attention.shape[1] - 1))
