"""Evaluation metrics: semantic segmentation, referring segmentation, retrieval.

All functions accept numpy arrays or torch tensors (moved to CPU numpy here) and
return plain Python floats / numpy arrays.

Semantic segmentation (per-class IoU over the whole evaluation set)::

    IoU_c = TP_c / (TP_c + FP_c + FN_c),   mIoU = mean over classes present

computed from one confusion matrix accumulated over all pixels (mmseg / Cityscapes
style), not averaged per image. A class absent from both prediction and ground
truth has 0 / 0: its IoU is NaN and it is left out of the mean (``nanmean``).

Referring segmentation (LAVT / RRSIS / RS2-SAM2 protocol), per expression i::

    IoU_i = |P_i & G_i| / |P_i | G_i|
    mIoU  = mean_i IoU_i                       (each expression weighs the same)
    oIoU  = sum_i |P_i & G_i| / sum_i |P_i | G_i|   (large objects weigh more)
    Pr@X  = fraction of expressions with IoU_i >= X,   X in {0.5, ..., 0.9}

Retrieval: Recall@K = fraction of queries whose true match ranks in the top K.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rslab.data.sample import IGNORE_INDEX

PR_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)


def _to_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch.Tensor (or anything tensor-like)
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - report what the caller passed
        raise ValueError(f"{name} must be array-like (numpy array or torch tensor), got {type(x).__name__}.") from e


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    return int(num_classes)


def _check_ids(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == bool:  # binary segmentation: False/True are classes 0/1
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{name} holds non-integer values; pass class ids (e.g. logits.argmax(dim=1)), not scores."
            )
    return arr.astype(np.int64, copy=False)


# --------------------------------------------------------------------------- semantic


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts; row = true class, column = predicted class.

    ``pred`` and ``target`` are class-id arrays of the same shape (any number of
    dims, e.g. (H, W) or (B, H, W)). Pixels whose target equals ``ignore_index`` are
    skipped whatever the prediction. Any other id outside ``[0, num_classes)`` in
    either array raises ``ValueError`` listing the values (a silent out-of-range
    id would corrupt every IoU). Vectorised with one ``np.bincount``.
    """
    num_classes = _check_num_classes(num_classes)
    pred = _check_ids(_to_numpy(pred, "pred"), "pred")
    target = _check_ids(_to_numpy(target, "target"), "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}; they must match pixel for pixel.")
    valid = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    t = target[valid]
    p = pred[valid]
    for arr, name in ((t, "target"), (p, "pred")):
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            values = np.unique(arr[bad])[:10].tolist()
            raise ValueError(
                f"{name} has class ids {values} outside [0, {num_classes}) "
                f"(ignore_index={ignore_index}); check num_classes and the label encoding."
            )
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix; NaN where a class is absent from both sides."""
    cm = _to_numpy(cm, "cm").astype(np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {cm.shape}.")
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def iou_per_class(pred, target, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """IoU of each class over all given pixels, shape ``(num_classes,)``.

    A class that appears in neither prediction nor (non-ignored) ground truth gets
    NaN, not 0 or 1: there is nothing to score. A class predicted but absent from the
    truth gets 0 (all false positives).
    """
    return iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def mean_iou(pred, target, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> float:
    """mIoU = nanmean of :func:`iou_per_class` (absent classes excluded); NaN if no class is present."""
    ious = iou_per_class(pred, target, num_classes, ignore_index)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


class SegmentationMeter:
    """Streaming confusion matrix for evaluation loops.

    >>> meter = SegmentationMeter(num_classes=3)
    >>> for logits, labels in loader:                       # doctest: +SKIP
    ...     meter.update(logits.argmax(1), labels)
    >>> meter.compute()["miou"]                             # doctest: +SKIP

    ``compute()`` returns ``miou``, ``pixel_acc`` (correct / valid pixels),
    ``mean_acc`` (nanmean of per-class recall), ``iou`` (per-class array, NaN for
    absent classes), ``n_pixels`` and, when ``class_names`` is given,
    ``iou_per_class`` as ``{name: iou}``.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX,
                 class_names: Sequence[str] | None = None) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = ignore_index
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}.")
        self.class_names = tuple(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        self.cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        self.cm += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict:
        iou = iou_from_confusion(self.cm)
        total = int(self.cm.sum())
        support = self.cm.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(support > 0, np.diag(self.cm) / np.where(support > 0, support, 1), np.nan)
        out = {
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "pixel_acc": float(np.trace(self.cm) / total) if total else float("nan"),
            "mean_acc": float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan"),
            "iou": iou,
            "n_pixels": total,
        }
        if self.class_names is not None:
            out["iou_per_class"] = {n: float(v) for n, v in zip(self.class_names, iou, strict=True)}
        return out


# --------------------------------------------------------------------------- referring


def _binary_pair(pred_mask, gt_mask) -> tuple[np.ndarray, np.ndarray]:
    p = _to_numpy(pred_mask, "pred_mask")
    g = _to_numpy(gt_mask, "gt_mask")
    if p.shape != g.shape:
        raise ValueError(f"pred_mask shape {p.shape} != gt_mask shape {g.shape}.")
    for arr, name in ((p, "pred_mask"), (g, "gt_mask")):
        if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"{name} must be binary (bool or 0/1); threshold probabilities first (e.g. prob > 0.5)."
            )
    return p.astype(bool), g.astype(bool)


def intersection_union(pred_mask, gt_mask) -> tuple[np.ndarray, np.ndarray]:
    """Per-mask intersection and union pixel counts; ``(H, W)`` -> scalars, ``(B, H, W)`` -> (B,)."""
    p, g = _binary_pair(pred_mask, gt_mask)
    if p.ndim < 2:
        raise ValueError(f"masks must be (H, W) or (B, H, W), got shape {p.shape}.")
    axes = (-2, -1)
    return (p & g).sum(axis=axes).astype(np.int64), (p | g).sum(axis=axes).astype(np.int64)


def binary_iou(pred_mask, gt_mask) -> float | np.ndarray:
    """IoU of binary masks: a float for (H, W), an array (B,) for (B, H, W).

    Both masks empty (union 0) counts as IoU 1.0: predicting nothing for a target
    that is not there is correct (the gRefCOCO no-target convention).
    """
    inter, union = intersection_union(pred_mask, gt_mask)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(iou) if iou.ndim == 0 else iou.astype(np.float64)


def _float_vector(x, name: str) -> np.ndarray:
    if not hasattr(x, "shape") and not isinstance(x, (list, tuple)):
        x = list(x)  # generators and other iterables
    return _to_numpy(x, name).astype(np.float64).reshape(-1)


def oiou(intersections: Iterable[float], unions: Iterable[float]) -> float:
    """Overall IoU: cumulative intersection / cumulative union over the dataset."""
    inter = _float_vector(intersections, "intersections")
    union = _float_vector(unions, "unions")
    if inter.shape != union.shape:
        raise ValueError(f"intersections {inter.shape} and unions {union.shape} must have the same length.")
    if (inter > union).any() or (inter < 0).any():
        raise ValueError("each intersection must satisfy 0 <= intersection <= union.")
    total = union.sum()
    return float(inter.sum() / total) if total > 0 else float("nan")


def precision_at(ious, thresholds: Sequence[float] = PR_THRESHOLDS) -> dict[float, float]:
    """Pr@X: fraction of samples with IoU >= X, for each threshold X (``{X: fraction}``)."""
    ious = _to_numpy(ious, "ious").astype(np.float64).reshape(-1)
    if ious.size == 0:
        raise ValueError("precision_at needs at least one IoU value.")
    if np.isnan(ious).any() or (ious < 0).any() or (ious > 1).any():
        raise ValueError("IoU values must lie in [0, 1] and not be NaN.")
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"thresholds must lie in [0, 1], got {t}.")
    return {float(t): float((ious >= t).mean()) for t in thresholds}


class ReferringMeter:
    """Accumulates referring-segmentation results; ``compute()`` gives mIoU, oIoU, Pr@X.

    ``update(pred_masks, gt_masks)`` takes binary masks (H, W) or a batch (B, H, W),
    one per expression. ``compute()`` returns ``{"miou", "oiou", "pr50", "pr60",
    "pr70", "pr80", "pr90", "n"}`` (keys ``pr{round(100 X)}`` for the thresholds given).
    """

    def __init__(self, thresholds: Sequence[float] = PR_THRESHOLDS) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        for t in self.thresholds:
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"thresholds must lie in [0, 1], got {t}.")
        self.reset()

    def reset(self) -> None:
        self.intersections: list[int] = []
        self.unions: list[int] = []
        self.ious: list[float] = []

    def update(self, pred_masks, gt_masks) -> None:
        inter, union = intersection_union(pred_masks, gt_masks)
        inter, union = np.atleast_1d(inter), np.atleast_1d(union)
        self.intersections.extend(inter.tolist())
        self.unions.extend(union.tolist())
        self.ious.extend(np.where(union > 0, inter / np.maximum(union, 1), 1.0).tolist())

    def compute(self) -> dict[str, float]:
        if not self.ious:
            raise ValueError("ReferringMeter.compute() called before any update().")
        out = {"miou": float(np.mean(self.ious)), "oiou": oiou(self.intersections, self.unions)}
        for t, frac in precision_at(self.ious, self.thresholds).items():
            out[f"pr{round(t * 100)}"] = frac
        out["n"] = len(self.ious)
        return out


# --------------------------------------------------------------------------- retrieval


def recall_at_k(similarity, gt_index, k: int | Sequence[int] = (1, 5)) -> dict[int, float]:
    """Recall@K for retrieval: ``similarity`` (Q, G) scores, ``gt_index`` (Q,) true gallery index.

    The rank of a query's match counts gallery items scoring strictly higher plus
    *tied* items other than the match: ties count against the query, so a collapsed
    model giving every item the same score gets Recall@K = 0 for every K < G, never
    a flattering 1.0. Returns ``{K: fraction of queries with rank < K}``.
    """
    sim = _to_numpy(similarity, "similarity").astype(np.float64)
    gt = _to_numpy(gt_index, "gt_index")
    if sim.ndim != 2:
        raise ValueError(f"similarity must be (num_queries, num_gallery), got shape {sim.shape}.")
    if gt.shape != (sim.shape[0],):
        raise ValueError(f"gt_index must have shape ({sim.shape[0]},) (one per query), got {gt.shape}.")
    if not np.issubdtype(gt.dtype, np.integer):
        raise ValueError(f"gt_index must hold integer gallery indices, got dtype {gt.dtype}.")
    if ((gt < 0) | (gt >= sim.shape[1])).any():
        raise ValueError(f"gt_index values must lie in [0, {sim.shape[1]}), got min {gt.min()} max {gt.max()}.")
    ks = (k,) if isinstance(k, (int, np.integer)) else tuple(k)
    for kk in ks:
        if isinstance(kk, bool) or not isinstance(kk, (int, np.integer)) or kk < 1:
            raise ValueError(f"k must be positive integers, got {k!r}.")
    gt_score = sim[np.arange(sim.shape[0]), gt][:, None]
    rank = (sim > gt_score).sum(axis=1) + (sim == gt_score).sum(axis=1) - 1
    return {int(kk): float((rank < kk).mean()) for kk in ks}


def pixel_miou(probs: torch.Tensor, labels, num_classes: int, ignore_index: int = 255
               ) -> tuple[float, np.ndarray]:
    """Pixel mIoU of patch-level predictions (ConInfer, notebook 05).

    Upsample (B, K, h, w) patch probabilities bilinearly to the (B, H, W) labels' size, take
    the argmax, and return (mIoU, per-class IoU) via :class:`SegmentationMeter`."""
    if not isinstance(probs, torch.Tensor):
        raise ValueError(f"probs must be a (B, K, h, w) torch tensor, got {type(probs).__name__}")
    lab = np.asarray(labels)
    if lab.ndim == 2:
        lab = lab[None]
    if probs.ndim != 4 or probs.shape[0] != lab.shape[0]:
        raise ValueError(f"probs (B, K, h, w) {tuple(probs.shape)} and labels (B, H, W) "
                         f"{lab.shape} must share B")
    pred = F.interpolate(probs.float(), size=lab.shape[1:], mode="bilinear",
                         align_corners=False).argmax(1).cpu().numpy()
    meter = SegmentationMeter(num_classes, ignore_index)
    meter.update(pred, lab)
    scores = meter.compute()
    return scores["miou"], scores["iou"]


def retrieval_scores(query: torch.Tensor, gallery: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Recall@K of query i retrieving gallery i (cosine similarity); via :func:`recall_at_k`."""
    if query.shape != gallery.shape:
        raise ValueError(f"query {tuple(query.shape)} and gallery {tuple(gallery.shape)} must be paired row by row")
    sim = F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T
    return recall_at_k(sim, np.arange(len(query)), ks)


def zero_shot_predict(image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """Class index with the highest cosine similarity between image and class-prompt embeddings."""
    if image_emb.ndim != 2 or class_emb.ndim != 2 or image_emb.shape[1] != class_emb.shape[1]:
        raise ValueError(
            f"need (N, D) image and (C, D) class embeddings of the same D, "
            f"got {tuple(image_emb.shape)}, {tuple(class_emb.shape)}"
        )
    return (F.normalize(image_emb, dim=-1) @ F.normalize(class_emb, dim=-1).T).argmax(1)


def zero_shot_accuracy(image_emb: torch.Tensor, class_emb: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean per-class recall over classes present) of zero-shot prediction."""
    pred = zero_shot_predict(image_emb, class_emb)
    targets = torch.as_tensor(targets)
    if targets.shape != pred.shape:
        raise ValueError(f"targets must be ({len(pred)},), got {tuple(targets.shape)}")
    acc = float((pred == targets).float().mean())
    recalls = [float((pred[targets == c] == c).float().mean()) for c in targets.unique().tolist()]
    return {"acc": acc, "balanced_acc": float(np.mean(recalls))}
