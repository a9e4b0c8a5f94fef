"""Matplotlib figures of samples: one point per figure, every function returns its ``Figure``.

Figures are :class:`rslab.viz.display.LabFigure` objects (plain ``Figure`` subclasses, not
``pyplot``), so nothing is registered with pyplot: no figure piles up in loops and nothing needs
closing. In a notebook kernel each function displays its figure as it returns it (in a loop, when
assigned, or as the cell's last expression: once per cell; see :mod:`rslab.viz.display`).
Save with ``fig.savefig(path)``.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rslab.data.sample import IGNORE_INDEX, Sample
from rslab.data.sar import SAR_CHANNELS, SAR_DB_RANGE, db_to_linear
from rslab.viz.display import LabFigure, show
from rslab.viz.palette import colorize_labels, label_legend, overlay
from rslab.viz.sar import optical_to_display, sar_to_display

_PANEL = 3.2  # inches per image panel


def _check_sample(sample) -> Sample:
    if not isinstance(sample, Sample):
        raise ValueError(f"expected a rslab.data.sample.Sample, got {type(sample).__name__}.")
    sample.shape  # raises when fields disagree in size
    return sample


def _image_axes(ax, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend_below(ax, handles, ncol: int = 2) -> None:
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=ncol,
                  fontsize=7, frameon=False, handlelength=1.0, columnspacing=0.8)


def _legend_height(n_entries: int, ncol: int = 2) -> float:
    """Inches to reserve under a panel for a legend of ``n_entries`` in ``ncol`` columns."""
    return 0.3 + 0.18 * int(np.ceil(n_entries / ncol)) if n_entries else 0.0


def _new_figure(n_panels: int, ncols: int | None = None, height_extra: float = 0.0, width: float = _PANEL):
    ncols = min(n_panels, ncols or n_panels)
    nrows = int(np.ceil(n_panels / ncols))
    fig = LabFigure(figsize=(width * ncols, (_PANEL + height_extra) * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def show_images(images: Sequence[np.ndarray], titles: Sequence[str], suptitle: str | None = None,
                ncols: int | None = None) -> Figure:
    """A row (or grid) of (H, W, 3) images in [0, 1] with one title each."""
    if len(images) == 0 or len(images) != len(titles):
        raise ValueError(f"need one title per image and at least one image, "
                         f"got {len(images)} images, {len(titles)} titles.")
    fig, axes = _new_figure(len(images), ncols)
    for ax, img, title in zip(axes, images, titles):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        _image_axes(ax, title)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return show(fig)


def show_sample(sample: Sample, tree, level: int | None = None, sar_channel: str = "rgb",
                title: str | None = None) -> Figure:
    """Optical | SAR | labels side by side (the fields the sample has), with a class legend.

    ``level``: tree level of the label panel (default: leaves). ``sar_channel``: ``"VV"``,
    ``"VH"`` or ``"rgb"`` (false colour R=VV, G=VH, B=VV/VH; see :func:`sar_to_display`).
    """
    _check_sample(sample)
    panels = []
    if sample.optical is not None:
        panels.append(("optical (RGB)", optical_to_display(sample.optical), None))
    if sample.sar is not None:
        name = {"rgb": "SAR false colour\nR=VV, G=VH, B=VV/VH"}.get(
            sar_channel, f"SAR {sar_channel}\n{SAR_DB_RANGE[0]:g} (black) to {SAR_DB_RANGE[1]:g} dB (white)")
        panels.append((name, sar_to_display(sample.sar, sar_channel), None))
    if sample.labels is not None:
        lvl = tree.depth if level is None else level
        panels.append((f"labels, level {lvl} of {tree.depth}", colorize_labels(sample.labels, tree, level),
                       label_legend(tree, level, present=sample.labels)))
    n_legend = max((len(p[2]) for p in panels if p[2] is not None), default=0)
    # 0.4 in for the two-line panel titles under the suptitle
    fig, axes = _new_figure(len(panels), height_extra=0.4 + _legend_height(n_legend))
    for ax, (name, img, legend) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        _image_axes(ax, name)
        if legend is not None:
            _legend_below(ax, legend)
    style = sample.meta.get("style_name", sample.meta.get("style"))
    fig.suptitle(title or (f"{sample.shape[0]}x{sample.shape[1]} px" + (f", style '{style}'" if style else "")),
                 fontsize=11)
    return show(fig)


def show_levels(sample: Sample, tree, alpha: float = 1.0) -> Figure:
    """One label panel per tree level, coarse (1) to fine (depth), each with its legend.

    ``alpha < 1`` blends the labels over the optical image.
    """
    _check_sample(sample)
    if sample.labels is None:
        raise ValueError("show_levels needs sample.labels (a leaf-id map); this sample has none.")
    base = optical_to_display(sample.optical) if (alpha < 1 and sample.optical is not None) else None
    legends = [label_legend(tree, level, present=sample.labels) for level in range(1, tree.depth + 1)]
    fig, axes = _new_figure(tree.depth, height_extra=_legend_height(max(len(h) for h in legends)))
    for ax, level, legend in zip(axes, range(1, tree.depth + 1), legends):
        img = (colorize_labels(sample.labels, tree, level) if base is None
               else overlay(base, sample.labels, tree, level, alpha))
        ax.imshow(img, interpolation="nearest")
        _image_axes(ax, f"level {level}: {tree.num_classes(level)} classes")
        _legend_below(ax, legend)
    fig.suptitle("The same pixels at every level of the semantic tree", fontsize=11)
    return show(fig)


def _channel_index(channel: str) -> int:
    if channel not in SAR_CHANNELS:
        raise ValueError(f"channel must be one of {SAR_CHANNELS}, got {channel!r}.")
    return SAR_CHANNELS.index(channel)


def speckle_std_db(n_looks: float) -> float:
    """Standard deviation (dB) of L-look Gamma speckle: ``10/ln(10) * sqrt(psi1(L))``.

    ``psi1`` is the trigamma function (the variance of ln of a Gamma(L) variable); 5.57 dB at
    L = 1, 2.31 dB at L = 4, 1.10 dB at L = 16.
    """
    from scipy.special import polygamma

    if not n_looks > 0:
        raise ValueError(f"n_looks must be > 0, got {n_looks}.")
    return float(10.0 / np.log(10.0) * np.sqrt(polygamma(1, n_looks)))


def show_looks(sars: dict[float, np.ndarray], channel: str = "VV", reference: np.ndarray | None = None,
               region: np.ndarray | None = None, crop: int | None = None) -> Figure:
    """Speckle vs number of looks: one SAR panel per look count, same scene.

    ``sars`` maps number of looks L -> SAR (2, H, W) dB of the same scene. With ``reference``
    (the same scene without speckle, or with very many looks), each title gives the measured
    speckle, the standard deviation of ``sar - reference`` in dB (over ``region`` if given), next
    to the Gamma model's value :func:`speckle_std_db` (multiplicative speckle is additive in dB).
    ``crop``: show only the top-left ``crop`` x ``crop`` pixels, so the grain is visible.
    """
    if not sars:
        raise ValueError("sars must map number of looks -> SAR array, got an empty dict.")
    c = _channel_index(channel)
    images, titles = [], []
    for looks, sar in sorted(sars.items()):
        if sar.shape[0] != 2 or sar.ndim != 3:
            raise ValueError(f"SAR for {looks} looks must be (2, H, W) in dB, got {sar.shape}.")
        img = sar_to_display(sar, channel)
        images.append(img if crop is None else img[:crop, :crop])
        title = f"{looks:g} look{'s' if looks != 1 else ''}"
        if reference is not None:
            if reference.shape != sar.shape:
                raise ValueError(f"reference {reference.shape} and SAR {sar.shape} must have the same shape.")
            diff = sar[c] - reference[c]
            keep = np.isfinite(diff) if region is None else (np.isfinite(diff) & region)
            title += f"\nspeckle std {np.std(diff[keep]):.2f} dB (Gamma model {speckle_std_db(looks):.2f})"
        titles.append(title)
    return show_images(images, titles, suptitle=f"Speckle: more looks, smoother {channel} (same scene)")


def plot_db_histogram(sar_db: np.ndarray, channel: str = "VV", bins: int = 100) -> Figure:
    """Why SAR is shown in dB: linear intensity is heavily skewed, dB spreads it out."""
    c = _channel_index(channel)
    if sar_db.ndim != 3 or sar_db.shape[0] != 2:
        raise ValueError(f"sar_db must be (2, H, W) in dB, got {sar_db.shape}.")
    db = sar_db[c][np.isfinite(sar_db[c])].ravel()
    lin = db_to_linear(db)
    fig = LabFigure(figsize=(9, 3.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.hist(lin, bins=bins, range=(0, np.percentile(lin, 99.5)), color="0.35")
    ax1.set_xlabel(f"{channel} intensity (linear power ratio)")
    ax1.set_ylabel("pixels")
    ax1.set_title("linear: most pixels squeezed near 0, a long bright tail", fontsize=9)
    ax2.hist(db, bins=bins, range=SAR_DB_RANGE, color="tab:blue")
    ax2.set_xlabel(f"{channel} backscatter (dB) = 10 log10(intensity)")
    ax2.set_ylabel("pixels")
    ax2.set_title(f"dB: spread over the display range {SAR_DB_RANGE[0]:g}..{SAR_DB_RANGE[1]:g} dB", fontsize=9)
    fig.suptitle(f"{channel} histogram, linear vs dB", fontsize=11)
    return show(fig)


def plot_backscatter_by_class(samples: Sample | Sequence[Sample], tree, level: int | None = None,
                              max_pixels: int = 20000, seed: int = 0) -> Figure:
    """Box plots of VV and VH (dB) per class at ``level``: the physics of SAR in one figure.

    Water is darkest (specular reflection away from the sensor), buildings brightest in VV
    (double bounce between wall and ground), vegetation high in VH (volume scattering depolarises).
    """
    samples = [samples] if isinstance(samples, Sample) else list(samples)
    if not samples:
        raise ValueError("need at least one sample with sar and labels.")
    rng = np.random.default_rng(seed)
    names = tree.names(level)
    values: dict[int, list[np.ndarray]] = {k: [] for k in range(len(names))}
    for s in samples:
        _check_sample(s)
        if s.sar is None or s.labels is None:
            raise ValueError("plot_backscatter_by_class needs samples with both sar and labels.")
        ids = tree.to_level(s.labels, level)
        for k in np.unique(ids):
            if k == IGNORE_INDEX:
                continue
            v = s.sar[:, ids == k]
            values[int(k)].append(v[:, np.isfinite(v).all(axis=0)])
    present = [k for k in values if values[k]]
    fig = LabFigure(figsize=(max(6.0, 0.75 * len(present) + 2), 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for c, ax in enumerate(axes):
        data = []
        for k in present:
            v = np.concatenate(values[k], axis=1)[c]
            if v.size > max_pixels:
                v = rng.choice(v, max_pixels, replace=False)
            data.append(v)
        ax.boxplot(data, showfliers=False, whis=(5, 95))
        ax.set_xticks(range(1, len(present) + 1), [names[k] for k in present], rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{SAR_CHANNELS[c]}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("backscatter (dB), 5-95% whiskers")
    fig.suptitle("Backscatter per class: dark water, bright buildings (VV), high VH in vegetation", fontsize=11)
    return show(fig)


def show_class_on_sar(sample: Sample, tree, class_name: str, channel: str = "VV", note: str = "") -> Figure:
    """Optical and SAR with one class outlined, plus the SAR channel without outline, and the
    median dB inside vs outside the class in the title: one scattering mechanism per figure."""
    _check_sample(sample)
    if sample.sar is None or sample.labels is None:
        raise ValueError("show_class_on_sar needs sample.sar and sample.labels.")
    node = tree.find(class_name)
    mask = np.isin(sample.labels, tree.leaf_ids(node))
    c = _channel_index(channel)
    inside = sample.sar[c][mask & np.isfinite(sample.sar[c])]
    outside = sample.sar[c][~mask & np.isfinite(sample.sar[c])]
    stats = (f"median {np.median(inside):.1f} dB inside vs {np.median(outside):.1f} dB elsewhere"
             if inside.size and outside.size else f"no '{node.name}' pixels in this scene")
    sar_img = sar_to_display(sample.sar, channel)
    # (image, title, outline?): the plain SAR panel lets the eye judge brightness unobstructed
    panels = [(sar_img, f"SAR {channel}", False), (sar_img, f"SAR {channel}, outlined\n{stats}", True)]
    if sample.optical is not None:
        panels.insert(0, (optical_to_display(sample.optical), "optical, outlined", True))
    fig, axes = _new_figure(len(panels), height_extra=0.3)
    for ax, (img, title, outline) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        if outline and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=["red"], linewidths=0.7)
        _image_axes(ax, title)
    fig.suptitle(f"'{node.name}' in {channel}" + (f": {note}" if note else ""), fontsize=11)
    return show(fig)


def show_styles(samples: Sequence[Sample], tree, class_name: str, crop: int | None = None) -> Figure:
    """Same class, different regional style: one optical panel per sample with the class outlined.

    ``crop``: show a ``crop`` x ``crop`` window centred on the class (where it has most pixels).
    """
    if not samples:
        raise ValueError("show_styles needs at least one sample.")
    leaf_ids = tree.leaf_ids(tree.find(class_name))
    fig, axes = _new_figure(len(samples), height_extra=0.2)
    for ax, s in zip(axes, samples):
        _check_sample(s)
        if s.optical is None or s.labels is None:
            raise ValueError("show_styles needs samples with optical and labels.")
        img, mask = optical_to_display(s.optical), np.isin(s.labels, leaf_ids)
        if crop is not None and mask.any():
            ys, xs = np.nonzero(mask)
            cy, cx = int(np.median(ys)), int(np.median(xs))
            h, w = mask.shape
            y0 = int(np.clip(cy - crop // 2, 0, max(h - crop, 0)))
            x0 = int(np.clip(cx - crop // 2, 0, max(w - crop, 0)))
            img, mask = img[y0 : y0 + crop, x0 : x0 + crop], mask[y0 : y0 + crop, x0 : x0 + crop]
        ax.imshow(img, interpolation="nearest")
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=["red"], linewidths=0.8)
        _image_axes(ax, f"style '{s.meta.get('style_name', s.meta.get('style', '?'))}'"
                    + ("" if mask.any() else f"\n(no {class_name} here)"))
    fig.suptitle(f"One class, several looks: '{class_name}' (outlined) across regional styles", fontsize=11)
    return show(fig)


def show_referring(sample: Sample, max_expressions: int = 4, wrap: int = 34) -> Figure:
    """The caption over the scene, then one panel per referring expression with its mask."""
    _check_sample(sample)
    if sample.optical is None:
        raise ValueError("show_referring needs sample.optical.")
    img = optical_to_display(sample.optical)
    exprs = sample.referring[:max_expressions]
    fig, axes = _new_figure(1 + len(exprs), height_extra=0.5)
    axes[0].imshow(img)
    _image_axes(axes[0], "caption:\n" + textwrap.fill(sample.caption or "(none)", wrap))
    for ax, expr in zip(axes[1:], exprs):
        shaded = img * 0.45
        shaded[expr.mask] = 0.35 * img[expr.mask] + 0.65 * np.array([1.0, 0.15, 0.1])
        ax.imshow(shaded)
        if expr.mask.any():
            ax.contour(expr.mask.astype(float), levels=[0.5], colors=["yellow"], linewidths=0.8)
            ys, xs = np.nonzero(expr.mask)
            pad = max(4.0, 0.04 * max(expr.mask.shape))  # a box makes a 15-pixel car findable
            ax.add_patch(Rectangle((xs.min() - pad, ys.min() - pad), np.ptp(xs) + 2 * pad, np.ptp(ys) + 2 * pad,
                                   fill=False, edgecolor="yellow", linewidth=1.0, linestyle="--"))
            ax.set_xlim(-0.5, img.shape[1] - 0.5)  # the box must not widen the view
            ax.set_ylim(img.shape[0] - 0.5, -0.5)
        _image_axes(ax, textwrap.fill(f'"{expr.text}"', wrap) + f"\n{int(expr.mask.sum())} px")
    fig.suptitle("Caption and referring expressions with their masks", fontsize=11)
    return show(fig)


def show_large_scene(sample: Sample, tree, level: int | None = None, max_px: int = 1024) -> Figure:
    """Thumbnail of a large scene (optical and labels), downsampled by striding to <= ``max_px``."""
    _check_sample(sample)
    h, w = sample.shape
    step = int(np.ceil(max(h, w) / max_px))
    panels = []
    if sample.optical is not None:
        panels.append((optical_to_display(sample.optical[:, ::step, ::step]), "optical", None))
    if sample.sar is not None:
        panels.append((sar_to_display(np.ascontiguousarray(sample.sar[:, ::step, ::step]), "VV"), "SAR VV", None))
    if sample.labels is not None:
        lab = sample.labels[::step, ::step]
        panels.append((colorize_labels(lab, tree, level), "labels", label_legend(tree, level, present=lab)))
    n_legend = max((len(p[2]) for p in panels if p[2]), default=0)
    fig, axes = _new_figure(len(panels), height_extra=0.2 + _legend_height(n_legend, 3), width=4.2)
    for ax, (img, name, legend) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        _image_axes(ax, name if step == 1 else f"{name} (downsampled {step}x)")
        if legend:
            _legend_below(ax, legend, ncol=3)
    fig.suptitle(f"Large scene, {h}x{w} px", fontsize=11)
    return show(fig)


def _as_display(image: np.ndarray | Sample) -> np.ndarray:
    if isinstance(image, Sample):
        if image.optical is not None:
            return optical_to_display(image.optical)
        if image.sar is not None:
            return sar_to_display(image.sar, "rgb")
        raise ValueError("the sample has neither optical nor sar to show.")
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 3:
        return np.clip(img.astype(np.float32), 0, 1)
    if img.ndim == 3:
        return optical_to_display(img)
    raise ValueError(f"image must be a Sample, (H, W, 3) in [0, 1] or (C, H, W) optical, got shape {img.shape}.")


def show_prediction(image: np.ndarray | Sample, labels: np.ndarray, pred: np.ndarray, tree, level: int | None = None,
                    title: str | None = None) -> Figure:
    """Image | ground truth | prediction | errors, for a semantic segmentation at ``level``.

    ``labels`` and ``pred`` are leaf-id maps (H, W) (pass ``pred`` as leaf ids, or as class ids of
    ``level`` mapped back with the tree; both are compared after ``tree.to_level``). The error
    panel shows wrong pixels in red, right ones in grey and ignored ones in black; its title gives
    pixel accuracy over labelled pixels.
    """
    img = _as_display(image)
    labels, pred = np.asarray(labels), np.asarray(pred)
    if labels.shape != pred.shape or labels.shape != img.shape[:2]:
        raise ValueError(f"image {img.shape[:2]}, labels {labels.shape} and pred {pred.shape} must share (H, W).")
    gt_l, pr_l = tree.to_level(labels, level), tree.to_level(pred, level)
    valid = gt_l != IGNORE_INDEX
    right = valid & (gt_l == pr_l)
    err = np.zeros(labels.shape + (3,), np.float32)
    err[valid] = 0.75
    err[valid & ~right] = (0.9, 0.1, 0.1)
    acc = right.sum() / max(valid.sum(), 1)
    lvl = tree.depth if level is None else level
    present = np.concatenate([labels[valid], pred[valid]]) if valid.any() else labels.ravel()
    panels = [(img, "image", None), (colorize_labels(labels, tree, level), f"ground truth (level {lvl})", None),
              (colorize_labels(pred, tree, level), "prediction", label_legend(tree, level, present=present[None])),
              (err, f"errors (red)\npixel accuracy {acc:.1%}", None)]
    n_legend = len(panels[2][2])
    fig, axes = _new_figure(len(panels), height_extra=_legend_height(n_legend))
    for ax, (im, name, legend) in zip(axes, panels):
        ax.imshow(im, interpolation="nearest")
        _image_axes(ax, name)
        if legend:
            _legend_below(ax, legend)
    if title:
        fig.suptitle(title, fontsize=11)
    return show(fig)


def show_mask_prediction(image: np.ndarray | Sample, gt_mask: np.ndarray, pred_mask: np.ndarray, text: str = "",
                         wrap: int = 40) -> Figure:
    """A referring / prompted mask: ground truth (yellow outline) and prediction (red fill), with IoU."""
    img = _as_display(image)
    gt, pr = np.asarray(gt_mask, bool), np.asarray(pred_mask, bool)
    if gt.shape != pr.shape or gt.shape != img.shape[:2]:
        raise ValueError(f"image {img.shape[:2]}, gt_mask {gt.shape} and pred_mask {pr.shape} must share (H, W).")
    union = (gt | pr).sum()
    iou = (gt & pr).sum() / union if union else 1.0
    shaded = img * 0.55
    shaded[pr] = 0.35 * img[pr] + 0.65 * np.array([1.0, 0.15, 0.1])
    fig, axes = _new_figure(2, height_extra=0.4)
    axes[0].imshow(img)
    _image_axes(axes[0], textwrap.fill(f'"{text}"', wrap) if text else "image")
    axes[1].imshow(shaded)
    if gt.any():
        axes[1].contour(gt.astype(float), levels=[0.5], colors=["yellow"], linewidths=0.9)
    _image_axes(axes[1], f"prediction (red) vs ground truth (yellow)\nIoU {iou:.2f}")
    return show(fig)


def _mask_iou(gt: np.ndarray, pr: np.ndarray) -> float:
    union = (gt | pr).sum()
    return float((gt & pr).sum() / union) if union else 1.0


def _label_miou(gt: np.ndarray, pr: np.ndarray) -> float:
    """Mean IoU over the classes present in ``gt`` or ``pr`` (labelled pixels only)."""
    valid = gt != IGNORE_INDEX
    classes = np.union1d(np.unique(gt[valid]), np.unique(pr[valid]))
    ious = [_mask_iou(gt[valid] == k, pr[valid] == k) for k in classes]
    return float(np.mean(ious)) if ious else float("nan")


def show_gallery(rows: Sequence[dict], tree=None, level: int | None = None, title: str | None = None,
                 wrap: int = 30) -> Figure:
    """A prediction gallery, one row per example: input | prompt | prediction | ground truth.

    Each row is a dict with ``image`` (a Sample, (H, W, 3) in [0, 1] or (C, H, W) optical),
    ``prompt`` (the prompt's text: a referring expression, class names, "support: ..."), ``pred``
    and ``gt`` (both (H, W): boolean masks, or leaf-id label maps when ``tree`` is given), and
    optionally ``prompt_image`` (a visual prompt, e.g. the support image, (H', W', 3)),
    ``prompt_mask`` (its mask or label map, drawn over it) and ``score`` / ``score_name`` (the
    value the notebook's metric gave; by default the row's IoU for masks, or the mean IoU over the
    classes present for label maps, computed here). Label maps get a legend of the classes present.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("show_gallery needs at least one row.")
    prepared = []
    for i, row in enumerate(rows):
        missing = [k for k in ("image", "prompt", "pred", "gt") if k not in row]
        if missing:
            raise ValueError(f"gallery row {i} lacks {missing}; each row needs image, prompt, pred and gt.")
        img = _as_display(row["image"])
        gt, pr = np.asarray(row["gt"]), np.asarray(row["pred"])
        if gt.shape != pr.shape or gt.shape != img.shape[:2]:
            raise ValueError(f"gallery row {i}: image {img.shape[:2]}, pred {pr.shape} and gt {gt.shape} "
                             "must share (H, W).")
        labels = tree is not None and gt.dtype != bool
        if labels:
            gt_l, pr_l = tree.to_level(gt, level), tree.to_level(pr, level)
            score = row.get("score", _label_miou(gt_l, pr_l))
            name = row.get("score_name", "mIoU (classes present)")
            pred_img, gt_img = colorize_labels(pr, tree, level), colorize_labels(gt, tree, level)
            valid = gt != IGNORE_INDEX
            legend = label_legend(tree, level, present=np.concatenate([gt[valid], pr[valid]])[None])
        else:
            if gt.dtype != bool and not np.isin(gt, (0, 1)).all():
                raise ValueError(f"gallery row {i}: gt is a label map; pass tree= to show label maps.")
            gt_b, pr_b = gt.astype(bool), pr.astype(bool)
            score = row.get("score", _mask_iou(gt_b, pr_b))
            name = row.get("score_name", "IoU")
            pred_img, gt_img = img * 0.5, img * 0.5
            pred_img[pr_b] = 0.35 * img[pr_b] + 0.65 * np.array([1.0, 0.15, 0.1])
            gt_img[gt_b] = 0.35 * img[gt_b] + 0.65 * np.array([1.0, 0.9, 0.1])
            legend = None
        prompt_img = None
        if row.get("prompt_image") is not None:
            prompt_img = _as_display(row["prompt_image"])
            pm = row.get("prompt_mask")
            if pm is not None:
                pm = np.asarray(pm)
                if pm.shape != prompt_img.shape[:2]:
                    raise ValueError(f"gallery row {i}: prompt_mask {pm.shape} "
                                     f"must match prompt_image {prompt_img.shape[:2]}.")
                if tree is not None and pm.dtype != bool:
                    prompt_img = overlay(prompt_img, pm, tree, level, 0.6)
                else:
                    prompt_img = prompt_img * 0.5
                    pmb = pm.astype(bool)
                    prompt_img[pmb] = 0.35 * _as_display(row["prompt_image"])[pmb] + 0.65 * np.array([0.1, 0.6, 1.0])
        prepared.append((img, str(row["prompt"]), prompt_img, pred_img, gt_img, float(score), name, legend))
    n_legend = max((len(p[7]) for p in prepared if p[7]), default=0)
    fig = LabFigure(figsize=(4 * 2.9 + (1.8 if n_legend else 0.0), len(prepared) * 3.5),
                    layout="constrained")
    axes = fig.subplots(len(prepared), 4, squeeze=False)
    for r, (img, prompt, prompt_img, pred_img, gt_img, score, name, legend) in enumerate(prepared):
        a_in, a_pr, a_pred, a_gt = axes[r]
        a_in.imshow(img, interpolation="nearest")
        _image_axes(a_in, "input")
        text = textwrap.fill(prompt, wrap)
        if prompt_img is not None:
            a_pr.imshow(prompt_img, interpolation="nearest")
            _image_axes(a_pr, "prompt: " + text)
        else:
            a_pr.set_facecolor("0.96")
            a_pr.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True, transform=a_pr.transAxes)
            _image_axes(a_pr, "prompt (text)")
        a_pred.imshow(pred_img, interpolation="nearest")
        head = "prediction" if legend else "prediction (red)"
        _image_axes(a_pred, f"{head}\n{name} {score:.2f}" if np.isfinite(score) else head)
        a_gt.imshow(gt_img, interpolation="nearest")
        _image_axes(a_gt, "ground truth" + ("" if legend else " (yellow)"))
        if legend:
            a_gt.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False,
                        handlelength=1.0, title="classes", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return show(fig)
