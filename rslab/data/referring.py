"""Referring-segmentation datasets: (RGB image, expression, mask) triplets for RS2-SAM2.

One item is one referring expression. The sources are the synthetic world
(:meth:`ReferringDataset.from_world`: several expressions per scene) or a real reader
(:meth:`ReferringDataset.from_reader`: :class:`~rslab.data.readers.referring.RRSISD`,
:class:`~rslab.data.readers.referring.RefSegRS`, one expression per item).

Masks are kept at the image's *original* resolution: the referring metrics (mIoU, oIoU,
Pr@X; :class:`rslab.metrics.ReferringMeter`) are computed there, as in the RRSIS benchmarks,
by upsampling the model's prediction rather than downsampling the ground truth.
:meth:`ReferringDataset.stacked` gives the model-resolution tensors used for training.

Held-out evaluation: build the training and evaluation sets from disjoint scene indices
(:func:`split_scene_indices`), so that no evaluation image is ever seen in training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import Dataset

from rslab.data.sample import ReferringExpression, Sample

__all__ = ["ReferringDataset", "ReferringFilter", "split_scene_indices", "collate_referring", "rgb_image", "resize_rgb",
           "resize_mask", "EXPRESSION_KINDS", "expression_kind", "segment_masks",
           "promptable_segments"]


def rgb_image(optical: np.ndarray | None, rgb_bands: tuple[int, int, int] = (0, 1, 2)) -> np.ndarray:
    """``(3, H, W)`` float32 RGB in [0, 1] from a Sample's ``optical`` array.

    The Sample convention puts R, G, B first for RGB and RGB+NIR images, so the default bands
    suit the synthetic world and the referring readers; pass ``rgb_bands`` for other band orders
    (Sentinel-2 as 13 bands: ``(3, 2, 1)``).
    """
    if optical is None:
        raise ValueError("this sample has no optical image; referring segmentation needs an RGB image")
    optical = np.asarray(optical)
    if optical.ndim != 3:
        raise ValueError(f"optical must be (C, H, W), got shape {optical.shape}")
    if len(rgb_bands) != 3:
        raise ValueError(f"rgb_bands must name 3 bands (R, G, B), got {rgb_bands!r}")
    if max(rgb_bands) >= optical.shape[0] or min(rgb_bands) < 0:
        raise ValueError(
            f"the image has {optical.shape[0]} band(s), so it is not RGB with bands {rgb_bands}; pass an RGB image "
            "(3 bands) or set rgb_bands= to the indices of its red, green and blue bands"
        )
    rgb = optical[list(rgb_bands)].astype(np.float32, copy=False)
    if not np.isfinite(rgb).all():
        rgb = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(rgb, 0.0, 1.0)


@dataclass(frozen=True)
class ReferringFilter:
    """Which expressions to keep.

    min_area_frac: smallest target area as a fraction of the image (0.01 = 1 %). Tiny targets
        (a 10-pixel car in a 128-pixel scene) cannot be resolved by a model working at 64 px.
    classes: keep only targets of these ``target_class`` names (None = all).
    max_words: drop expressions longer than this many words (None = no limit).
    max_per_scene: at most this many expressions per image (None = all), taken in order.
    """

    min_area_frac: float = 0.0
    classes: tuple[str, ...] | None = None
    max_words: int | None = None
    max_per_scene: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.min_area_frac < 1.0:
            raise ValueError(f"min_area_frac must be in [0, 1), got {self.min_area_frac}")
        if self.max_words is not None and self.max_words < 1:
            raise ValueError(f"max_words must be >= 1 or None, got {self.max_words}")
        if self.max_per_scene is not None and self.max_per_scene < 1:
            raise ValueError(f"max_per_scene must be >= 1 or None, got {self.max_per_scene}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))

    def keep(self, expr: ReferringExpression) -> bool:
        mask = np.asarray(expr.mask)
        if not expr.text.strip() or not mask.any():
            return False  # nothing to say or nothing to find
        if mask.mean() < self.min_area_frac:
            return False
        if self.classes is not None and expr.target_class not in self.classes:
            return False
        return self.max_words is None or len(expr.text.split()) <= self.max_words

    def select(self, exprs: Sequence[ReferringExpression]) -> list[int]:
        """Positions of the kept expressions of one scene: those :meth:`keep` accepts, the first ``max_per_scene``."""
        return [j for j, e in enumerate(exprs) if self.keep(e)][: self.max_per_scene]


# What an expression needs beyond the class name, judged from its words (synthetic-world phrasing).
EXPRESSION_KINDS: dict[str, tuple[str, ...]] = {
    "size": ("largest", "smallest"),
    "extreme position": ("leftmost", "rightmost", "topmost", "bottommost"),
    "grid position": (" in the ", " on the ", " at the "),
    "relation": ("nearest",),
    "colour": ("roof",),
}


def expression_kind(text: str, colour_words: Sequence[str] = ()) -> str:
    """``"class only"`` or the first of :data:`EXPRESSION_KINDS` whose words occur in ``text``.

    ``colour_words``: colour names to recognise as attributes (``"the yellow crop field"``).
    Only "class only" expressions can be resolved from the class name alone (the class is then
    unique in the scene); every other kind needs size, spatial or colour reasoning.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expression must be a non-empty string, got {text!r}")
    t = f" {text.lower().strip()} "
    for kind, words in EXPRESSION_KINDS.items():
        if any(w in t for w in words):
            return kind
    if any(f" {c.lower()} " in t for c in colour_words):
        return "colour"
    return "class only"


def segment_masks(instances: np.ndarray, labels: np.ndarray, min_area_frac: float = 0.01) -> list[np.ndarray]:
    """Class-agnostic segments of one scene, as SA-1B-style "whole things and stuff" masks.

    Every instance (``instances > 0``) is one segment; the rest of the image (``instances == 0``) is
    split by semantic label into connected regions (4-connectivity), each one segment. Segments
    smaller than ``min_area_frac`` of the image are dropped. The class names are never returned:
    these masks train SAM's promptable, class-agnostic task (a point or box in, a mask out).
    """
    inst, lab = np.asarray(instances), np.asarray(labels)
    if inst.ndim != 2 or inst.shape != lab.shape:
        raise ValueError(f"instances and labels must be (H, W) maps of one size, got {inst.shape} and {lab.shape}")
    if not 0.0 <= min_area_frac < 1.0:
        raise ValueError(f"min_area_frac must be in [0, 1), got {min_area_frac}")
    min_px = max(1, int(np.ceil(min_area_frac * inst.size)))
    out: list[np.ndarray] = []
    for k in np.unique(inst):
        if k > 0 and (inst == k).sum() >= min_px:
            out.append(inst == k)
    stuff = inst == 0
    for c in np.unique(lab[stuff]):
        comps, n = ndimage.label(stuff & (lab == c))
        for j in range(1, n + 1):
            m = comps == j
            if m.sum() >= min_px:
                out.append(m)
    return out


def promptable_segments(world, indices: Sequence[int], size: int, min_area_frac: float = 0.01) -> dict:
    """Images and class-agnostic segments of the world's scenes ``indices``, at ``size`` px.

    The training set of the SAM2 stand-in pre-training (:func:`rslab.recipes.rs2sam2.pretrain_sam2_standin`):
    pass TRAINING scene indices only, never held-out ones. Returns ``images (N, 3, size, size)`` in
    [0, 1] (:func:`resize_rgb`), ``masks (M, size, size)`` float in {0, 1} (:func:`resize_mask`),
    ``image_index (M,)`` (the image of each segment) and ``scene_indices`` (the world indices used).
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int (pixels), got {size!r}")
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no scene indices given")
    images, masks, owner = [], [], []
    for i in indices:
        s = world.scene(i)
        if s.instances is None or s.labels is None:
            raise ValueError("promptable_segments needs scenes with instance and label maps (a SyntheticWorld)")
        segs = segment_masks(s.instances, s.labels, min_area_frac)
        if not segs:
            continue
        images.append(resize_rgb(torch.from_numpy(rgb_image(s.optical))[None], size)[0])
        for m in segs:
            r = resize_mask(m, size)
            if r.any():
                masks.append(r)
                owner.append(len(images) - 1)
    if not masks:
        raise ValueError("no segments found in these scenes; lower min_area_frac")
    return {"images": torch.stack(images), "masks": torch.stack(masks),
            "image_index": torch.tensor(owner, dtype=torch.long), "scene_indices": indices}


def split_scene_indices(n_train: int, n_eval: int, start: int = 0) -> tuple[range, range]:
    """Disjoint scene-index ranges: ``start .. start+n_train-1`` to train, the next ``n_eval`` to evaluate."""
    if n_train < 1 or n_eval < 1 or start < 0:
        raise ValueError(f"need n_train >= 1, n_eval >= 1, start >= 0; got {n_train}, {n_eval}, {start}")
    return range(start, start + n_train), range(start + n_train, start + n_train + n_eval)


def _light_sample(s: Sample, exprs: list[ReferringExpression], rgb_bands) -> Sample:
    """Only what referring segmentation needs: RGB, the kept expressions, meta (saves ~4x memory)."""
    return Sample(optical=rgb_image(s.optical, rgb_bands), referring=exprs, bounds=s.bounds, meta=dict(s.meta))


class ReferringDataset(Dataset):
    """Items ``{"image", "text", "mask", "target_class", "source"}``, one per referring expression.

    - ``image``: ``(3, H, W)`` float32 RGB in [0, 1] at the source's resolution;
    - ``text``: the expression; ``mask``: ``(H, W)`` bool, original resolution;
    - ``target_class``: the referred object's class name ("" when the source has none);
    - ``source``: index of the image in ``samples`` (items of one image share it).

    Args:
        samples: any sequence of :class:`Sample` (a list, or a lazy reader).
        index: ``(sample_i, expression_j)`` pairs; built from ``filter`` when omitted (which reads
            every sample once).
        filter: a :class:`ReferringFilter` (ignored when ``index`` is given).
        rgb_bands: the optical bands holding R, G, B.
    """

    def __init__(self, samples: Sequence[Sample], index: Sequence[tuple[int, int]] | None = None,
                 filter: ReferringFilter | None = None, rgb_bands: tuple[int, int, int] = (0, 1, 2)):
        if not isinstance(samples, Sequence):
            raise ValueError(f"samples must be a sequence of Sample (list or reader), got {type(samples).__name__}")
        self.samples = samples
        self.rgb_bands = tuple(rgb_bands)
        self.filter = filter or ReferringFilter()
        if index is None:
            index = []
            for i in range(len(samples)):
                index.extend((i, j) for j in self.filter.select(samples[i].referring))
        self.index = [(int(i), int(j)) for i, j in index]
        if not self.index:
            raise ValueError(
                "no referring expressions left: the samples have none, or the filter "
                f"{self.filter} removed them all; lower min_area_frac or widen classes"
            )

    # ---- construction from the two kinds of source -------------------------------------------
    @classmethod
    def from_world(cls, world, indices: int | Sequence[int], filter: ReferringFilter | None = None,
                   **scene_kwargs) -> "ReferringDataset":
        """Scenes ``world.scene(i)`` for ``i`` in ``indices`` (an int ``n`` means ``range(n)``).

        Scenes are rendered once and kept in memory as RGB + the kept expressions only.
        ``scene_kwargs`` go to ``world.scene`` (e.g. ``text_split="heldout"`` for unseen synonyms).
        """
        filter = filter or ReferringFilter()
        if isinstance(indices, (int, np.integer)):
            indices = range(int(indices))
        samples: list[Sample] = []
        for i in indices:
            s = world.scene(int(i), **scene_kwargs)
            exprs = [s.referring[j] for j in filter.select(s.referring)]
            samples.append(_light_sample(s, exprs, (0, 1, 2)))
        index = [(i, j) for i, s in enumerate(samples) for j in range(len(s.referring))]
        return cls(samples, index=index, filter=filter)

    @classmethod
    def from_reader(cls, reader: Sequence[Sample], rgb_bands: tuple[int, int, int] = (0, 1, 2),
                    limit: int | None = None) -> "ReferringDataset":
        """A referring reader (RRSISD, RefSegRS): one expression per item, read lazily.

        No filter is applied (that would read every image up front); ``limit`` keeps the first
        ``limit`` items, e.g. for a quick evaluation.
        """
        n = len(reader) if limit is None else min(int(limit), len(reader))
        if n < 1:
            raise ValueError("the reader holds no items (or limit < 1)")
        return cls(reader, index=[(i, 0) for i in range(n)], rgb_bands=rgb_bands)

    # ---- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def expression(self, k: int) -> tuple[Sample, ReferringExpression]:
        i, j = self.index[k]
        s = self.samples[i]
        if j >= len(s.referring):
            raise IndexError(f"sample {i} has {len(s.referring)} expression(s), the index asks for #{j}")
        return s, s.referring[j]

    def __getitem__(self, k: int) -> dict:
        if not -len(self) <= k < len(self):
            raise IndexError(f"item {k} out of range for {len(self)} expressions")
        k = k % len(self)
        s, e = self.expression(k)
        image = rgb_image(s.optical, self.rgb_bands)
        mask = np.asarray(e.mask, dtype=bool)
        if mask.shape != image.shape[1:]:
            raise ValueError(f"item {k}: mask {mask.shape} and image {image.shape[1:]} differ in size")
        return {"image": torch.from_numpy(np.ascontiguousarray(image)), "text": e.text,
                "mask": torch.from_numpy(np.ascontiguousarray(mask)), "target_class": e.target_class,
                "source": self.index[k][0]}

    @property
    def texts(self) -> list[str]:
        return [self.expression(k)[1].text for k in range(len(self))]

    @property
    def num_images(self) -> int:
        return len({i for i, _ in self.index})

    def kind_counts(self, colour_words: Sequence[str] = ()) -> dict[str, int]:
        """How many expressions of each :func:`expression_kind` (most frequent first)."""
        return dict(Counter(expression_kind(text, colour_words) for text in self.texts).most_common())

    def class_counts(self) -> dict[str, int]:
        """How many expressions refer to each target class (most frequent first; "?" when none)."""
        return dict(Counter(self.expression(k)[1].target_class or "?" for k in range(len(self))).most_common())

    def stacked(self, size: int) -> dict:
        """All items at ``size`` x ``size`` in memory, for fast training loops.

        Returns ``images (N, 3, size, size)`` (bilinear, antialiased), ``targets (N, size, size)``
        float in {0, 1} (nearest), ``texts`` (list of N str). Each image is resized once even when
        it has several expressions.
        """
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive int (pixels), got {size!r}")
        resized: dict[int, torch.Tensor] = {}
        images, targets, texts = [], [], []
        for k in range(len(self)):
            i, _ = self.index[k]
            s, e = self.expression(k)
            if i not in resized:
                resized[i] = resize_rgb(torch.from_numpy(rgb_image(s.optical, self.rgb_bands))[None], size)[0]
            images.append(resized[i])
            targets.append(resize_mask(e.mask, size))
            texts.append(e.text)
        return {"images": torch.stack(images), "targets": torch.stack(targets), "texts": texts}


def resize_rgb(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 3, size, size)``: bilinear with antialiasing (no aliasing when shrinking).

    The one resize used for training tensors (:meth:`ReferringDataset.stacked`) and at inference,
    so that a model sees the same kind of pixels in both.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def resize_mask(mask: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """``(H, W)`` mask -> ``(size, size)`` float32 in {0, 1} (nearest): the training target of
    :meth:`ReferringDataset.stacked` (metrics keep the original-resolution mask instead)."""
    m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {tuple(m.shape)}")
    return F.interpolate(m[None, None], size=(size, size), mode="nearest")[0, 0]


def collate_referring(items: list[dict]) -> dict:
    """Batch dataset items: ``images`` stacked when all share a size (else a list), ``masks`` and
    ``texts`` as lists (masks keep their original sizes for the metrics)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    images = [it["image"] for it in items]
    same = len({tuple(im.shape) for im in images}) == 1
    return {"images": torch.stack(images) if same else images, "texts": [it["text"] for it in items],
            "masks": [it["mask"] for it in items], "target_class": [it["target_class"] for it in items],
            "source": [it["source"] for it in items]}
