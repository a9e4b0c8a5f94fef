"""Figures of ConInfer (notebook 05): class maps at one tree level, the ablation, the convergence of
Eq. 8 and the labelling over the z-updates (a figure and a live explorer).

Class maps here hold class ids at one level (0..K-1) on a patch grid or at full resolution;
:func:`level_classes` turns that level into a flat tree so they get the semantic tree's colours.
Every figure is a :class:`~rslab.viz.display.LabFigure` that displays itself once in a notebook
(:mod:`rslab.viz.display`) and is returned (``fig.savefig(path)`` outside a notebook).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from rslab.data.sample import IGNORE_INDEX
from rslab.viz.display import LabFigure, show
from rslab.viz.figures import show_gallery
from rslab.viz.palette import colorize_labels, flat_tree, label_legend, level_palette
from rslab.viz.widgets import HEADLESS_NOTE, widgets_enabled

__all__ = ["level_classes", "draw_labels", "upsample_patches", "plot_ablation", "show_coninfer_gallery",
           "plot_convergence", "show_label_steps", "label_step_explorer", "show_scene_refinement"]


def _rgb(optical) -> np.ndarray:
    """(C, H, W) optical reflectance -> (H, W, 3) RGB in [0, 1] (the first three channels)."""
    optical = np.asarray(optical)
    if optical.ndim != 3 or optical.shape[0] < 3:
        raise ValueError(f"optical must be (C >= 3, H, W), got shape {optical.shape}")
    return np.clip(optical[:3].transpose(1, 2, 0), 0, 1)


def level_classes(tree, level: int):
    """The classes of ``tree`` at ``level`` as a flat tree (class id = leaf id), coloured like that level."""
    names = tree.names(level)
    colors = ["#%02x%02x%02x" % tuple(int(v) for v in c) for c in level_palette(tree, level)]
    return flat_tree(names, colors, name=f"level {level}")


def draw_labels(ax, labels, classes, title: str, legend: bool = False) -> None:
    """A class map (class ids of ``classes``, a :func:`level_classes` tree) on ``ax``; ids outside
    ``[0, K)`` are unlabelled (black). ``legend``: the classes present, right of the axes."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be an (H, W) class map, got shape {lab.shape}")
    k = len(classes.leaves)
    lab = np.where((lab >= 0) & (lab < k), lab, IGNORE_INDEX)   # anything else is unlabelled (drawn black)
    ax.imshow(colorize_labels(lab, classes), interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    if legend:
        ax.legend(handles=label_legend(classes, present=lab), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  fontsize=7, frameon=False, title="classes", title_fontsize=7)


def upsample_patches(class_map, patch: int) -> np.ndarray:
    """(h, w) patch classes -> (h * patch, w * patch) pixels (each patch's class repeated)."""
    class_map = np.asarray(class_map)
    if class_map.ndim != 2 or patch < 1:
        raise ValueError(f"need an (h, w) class map and patch >= 1, got shape {class_map.shape} and patch={patch}")
    return np.kron(class_map, np.ones((patch, patch), dtype=class_map.dtype))


def plot_ablation(miou: dict[str, float], title: str) -> Figure:
    """Held-out mIoU (%) per setting (``"prior"`` first, in grey), the prior's level dashed."""
    if "prior" not in miou:
        raise ValueError(f"miou needs a 'prior' entry (the reference line); has {sorted(miou)}")
    fig = LabFigure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    names = list(miou)
    ax.bar(names, [100 * miou[n] for n in names], color=["#999"] + ["#4a90d9"] * (len(names) - 1))
    ax.axhline(100 * miou["prior"], color="k", lw=0.8, ls="--")
    ax.set_ylabel("held-out mIoU (%)")
    ax.set_title(title)
    return show(fig)


def show_coninfer_gallery(optical: Sequence[np.ndarray], rows: Sequence[tuple[int, str, str]], class_maps: dict,
                          labels, patch: int, classes, title: str) -> Figure:
    """Input | prompt | prediction | truth for ``rows`` of ``(scene index, setting, prompt text)``.

    ``optical``: each scene's (C, H, W) optical image; ``class_maps``: setting -> (B, h, w) patch
    classes; ``labels``: (B, H, W) class ids (drawn with ``classes``, a :func:`level_classes` tree).
    """
    gallery = []
    for b, name, prompt in rows:
        if name not in class_maps:
            raise ValueError(f"no class maps for setting {name!r}; have {sorted(class_maps)}")
        gallery.append({"image": _rgb(optical[b]), "prompt": prompt,
                        "pred": upsample_patches(np.asarray(class_maps[name][b]), patch),
                        "gt": np.asarray(labels[b])})
    return show_gallery(gallery, tree=classes, title=title)


def plot_convergence(objectives: dict[str, Sequence[float]], changed: dict[str, Sequence[float]],
                     floors: dict[str, Sequence[float]]) -> Figure:
    """Left: Eq. 8 after every z-update per setting, with its floor (dashed) where given; right:
    the share of patches whose class changed at each z-update (what converges)."""
    if set(changed) != set(objectives):
        raise ValueError(f"objectives and changed must name the same settings: {sorted(objectives)} "
                         f"vs {sorted(changed)}")
    fig = LabFigure(figsize=(11, 3.4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    for j, name in enumerate(objectives):
        ax.plot(objectives[name], marker="o", ms=3, color=f"C{j}", label=f"{name}: Eq. 8 at its z")
        if name in floors:
            ax.plot(floors[name], ls="--", color=f"C{j}", label=f"{name}: floor (best z for its q)")
        ax2.plot(100 * np.array(changed[name]), marker="o", ms=3, color=f"C{j}", label=name)
    ax.set_xlabel("z-update")
    ax.set_ylabel("mean KL(z||p) + KL(z||q)")
    ax.set_title("Eq. 8 and its floor: prior-context disagreement", fontsize=10)
    ax.legend(fontsize=7)
    ax2.set_xlabel("z-update")
    ax2.set_ylabel("patches whose class changed (%)")
    ax2.set_title("What converges: the labelling", fontsize=10)
    ax2.legend(fontsize=7)
    return show(fig)


def _step_map(history, grid: tuple[int, int], index: int, step: int) -> np.ndarray:
    return np.asarray(history[step]).reshape(-1, *grid)[index]


def show_label_steps(optical: np.ndarray, truth, history: Sequence, grid: tuple[int, int], classes,
                     index: int = 0, steps: Sequence[int] | None = None) -> Figure:
    """Scene ``index`` (its optical image and patch truth) and its class map at z-updates ``steps``
    (default: first, middle, last). ``history``: the fit's per-update (N,) labels of a pool of
    scenes on ``grid`` (:attr:`~rslab.models.coninfer.ConInferResult.labels_history`)."""
    if not len(history):
        raise ValueError("history is empty: pass the fit's labels_history")
    steps = list(steps) if steps is not None else [0, len(history) // 2, len(history) - 1]
    fig = LabFigure(figsize=(3 * (len(steps) + 2), 3), layout="constrained")
    axes = fig.subplots(1, len(steps) + 2)
    axes[0].imshow(_rgb(optical))
    axes[0].set_title("optical")
    axes[0].axis("off")
    draw_labels(axes[1], truth, classes, "truth (patches)")
    for ax, i in zip(axes[2:], steps):
        draw_labels(ax, _step_map(history, grid, index, i), classes, f"joint, z-update {i}", legend=i == steps[-1])
    return show(fig)


def label_step_explorer(history: Sequence, truth, grid: tuple[int, int], classes, index: int = 0) -> None:
    """A slider over the z-updates of scene ``index``: its class map and patch accuracy against
    ``truth`` (live kernel only; headless runs print :data:`~rslab.viz.widgets.HEADLESS_NOTE`)."""
    if not len(history):
        raise ValueError("history is empty: pass the fit's labels_history")
    truth = np.asarray(truth)

    def show_step(i: int = 0) -> None:
        step = _step_map(history, grid, index, i)
        acc = float((step == truth).mean())
        fig = LabFigure(figsize=(3.5, 3.5), layout="constrained")
        draw_labels(fig.subplots(), step, classes, f"z-update {i}: patch accuracy {100 * acc:.1f}%", legend=True)
        show(fig)

    if not widgets_enabled():   # a live kernel only (see rslab.viz.widgets)
        print(HEADLESS_NOTE)
        return
    import ipywidgets as widgets

    widgets.interact(show_step, i=widgets.IntSlider(min=0, max=len(history) - 1, value=len(history) - 1))


def show_scene_refinement(optical: np.ndarray, truth, prior, refined, classes, title: str) -> Figure:
    """A large scene: optical | truth | prior classes | refined classes (titled ``title``)."""
    fig = LabFigure(figsize=(14, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    axes[0].imshow(_rgb(optical))
    axes[0].set_title("optical")
    axes[0].axis("off")
    draw_labels(axes[1], truth, classes, "truth")
    draw_labels(axes[2], prior, classes, "prior")
    draw_labels(axes[3], refined, classes, title, legend=True)
    return show(fig)
