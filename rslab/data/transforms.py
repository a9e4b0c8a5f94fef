"""Paired geometric transforms and conversion of a :class:`Sample` to torch tensors.

Every transform acts identically on all co-registered fields: optical, SAR, labels, instances
and referring-expression masks, so that a pixel keeps its optical value, SAR value and label.

- Images are interpolated bilinearly; SAR is resampled in *linear intensity* (averaging dB
  values would bias backscatter low) and converted back to dB; labels, instances and masks use
  nearest neighbour. NaN (SAR nodata) propagates, so resampled nodata stays nodata.
- Flips and rotations rewrite the spatial words of referring expressions ("the car on the
  left" becomes "the car on the right" after a horizontal flip) and drop ``bounds`` (the raster
  is no longer north-up). Crops update ``bounds`` and drop referring expressions, because
  position and size phrases describe the whole scene ("the largest house" may lie outside the
  crop); render scenes at the size you need instead when training on referring expressions.

Randomness comes from ``torch`` (an optional ``torch.Generator``), so ``DataLoader`` workers
get distinct, reproducible streams from ``torch.manual_seed``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rslab.data.sample import IGNORE_INDEX, Sample
from rslab.data.sar import db_to_linear, linear_to_db, normalize_sar, sar_valid_mask

__all__ = [
    "Compose", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomRot90", "RandomCrop", "CenterCrop",
    "RandomResizedCrop", "Resize", "flip", "rot90", "crop", "resize", "sample_to_tensors", "rewrite_directions",
]


# ----------------------------------------------------------------------------- spatial words
# direction -> (row, col) unit vector in image coordinates (row grows downward)
_SIDES = {"top": (-1, 0), "bottom": (1, 0), "left": (0, -1), "right": (0, 1)}
_SIDE_OF = {v: k for k, v in _SIDES.items()}
_MOST = {"topmost": (-1, 0), "bottommost": (1, 0), "leftmost": (0, -1), "rightmost": (0, 1)}
_MOST_OF = {v: k for k, v in _MOST.items()}
_PATTERN = re.compile(
    r"\b(?:in the (top|bottom) (left|right) corner|(?:at|on) the (top|bottom|left|right)\b"
    r"|(topmost|bottommost|leftmost|rightmost))"
)


def _prep(side: str) -> str:
    return "at the" if side in ("top", "bottom") else "on the"


def rewrite_directions(text: str, fn: Callable[[tuple[int, int]], tuple[int, int]]) -> str:
    """Apply a map of image directions (row, col) -> (row, col) to the spatial words of ``text``."""

    def sub(m: re.Match) -> str:
        if m.group(1):  # corner
            r, c = fn((_SIDES[m.group(1)][0], _SIDES[m.group(2)][1]))
            return f"in the {_SIDE_OF[(r, 0)]} {_SIDE_OF[(0, c)]} corner"
        if m.group(3):
            side = _SIDE_OF[fn(_SIDES[m.group(3)])]
            return f"{_prep(side)} {side}"
        return _MOST_OF[fn(_MOST[m.group(4)])]

    return _PATTERN.sub(sub, text)


# ----------------------------------------------------------------------------- functional ops
def _map_fields(sample: Sample, img_fn, label_fn, keep_referring: bool, text_fn=None, bounds=...) -> Sample:
    out = copy.copy(sample)
    out.meta = dict(sample.meta)
    if sample.optical is not None:
        out.optical = np.ascontiguousarray(img_fn(sample.optical, "optical"))
    if sample.sar is not None:
        out.sar = np.ascontiguousarray(img_fn(sample.sar, "sar"))
    if sample.labels is not None:
        out.labels = np.ascontiguousarray(label_fn(sample.labels))
    if sample.instances is not None:
        out.instances = np.ascontiguousarray(label_fn(sample.instances))
    refs = []
    if keep_referring:
        for r in sample.referring:
            mask = np.ascontiguousarray(label_fn(r.mask))
            if mask.any():
                refs.append(replace(r, mask=mask, text=text_fn(r.text) if text_fn else r.text))
    out.referring = refs
    if bounds is not ...:
        out.bounds = bounds
    return out


def flip(sample: Sample, horizontal: bool = True) -> Sample:
    """Mirror left-right (``horizontal``) or top-bottom; spatial words follow."""
    axis = -1 if horizontal else -2
    fn = (lambda d: (d[0], -d[1])) if horizontal else (lambda d: (-d[0], d[1]))
    out = _map_fields(sample, lambda a, _: np.flip(a, axis), lambda a: np.flip(a, axis), True,
                      lambda t: rewrite_directions(t, fn), bounds=None)
    out.meta["transforms"] = list(out.meta.get("transforms", [])) + ["hflip" if horizontal else "vflip"]
    return out


def rot90(sample: Sample, k: int = 1) -> Sample:
    """Rotate by k * 90 degrees counter-clockwise (``np.rot90`` on the last two axes)."""
    k = int(k) % 4
    if k == 0:
        return sample

    def fn(d):
        for _ in range(k):  # pixel (r, c) -> (W-1-c, r): centred vector (r, c) -> (-c, r)
            d = (-d[1], d[0])
        return d

    out = _map_fields(sample, lambda a, _: np.rot90(a, k, axes=(-2, -1)), lambda a: np.rot90(a, k, axes=(-2, -1)), True,
                      lambda t: rewrite_directions(t, fn), bounds=None)
    out.meta["transforms"] = list(out.meta.get("transforms", [])) + [f"rot90x{k}"]
    return out


def _crop_bounds(bounds, shape, top, left, h, w):
    if bounds is None:
        return None
    west, south, east, north = bounds
    H, W = shape
    dx, dy = (east - west) / W, (north - south) / H
    return (west + left * dx, north - (top + h) * dy, west + (left + w) * dx, north - top * dy)


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop a window; referring expressions are dropped (see the module docstring)."""
    H, W = sample.shape
    if height < 1 or width < 1 or top < 0 or left < 0 or top + height > H or left + width > W:
        raise ValueError(f"crop window (top={top}, left={left}, {height}x{width}) does not fit in a {H}x{W} sample.")
    sl = (Ellipsis, slice(top, top + height), slice(left, left + width))
    out = _map_fields(sample, lambda a, _: a[sl], lambda a: a[sl], False,
                      bounds=_crop_bounds(sample.bounds, (H, W), top, left, height, width))
    out.meta["transforms"] = list(out.meta.get("transforms", [])) + [f"crop({top},{left},{height},{width})"]
    return out


def _resize_image(a: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
    if kind == "sar":
        t = db_to_linear(t)
    down = size[0] < a.shape[-2] or size[1] < a.shape[-1]
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=down)
    if kind == "sar":
        t = linear_to_db(t)
    elif kind == "optical":
        t = t.clamp(0.0, 1.0)
    return t[0].numpy()


def _resize_nearest(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest neighbour by index arrays (exact for any dtype, no float round-trip)."""
    H, W = a.shape[-2:]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * H / size[0]).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * W / size[1]).astype(np.int64), W - 1)
    return a[..., rows[:, None], cols[None, :]]


def resize(sample: Sample, size: int | tuple[int, int]) -> Sample:
    """Resize every field to ``size`` (bilinear images, SAR in linear intensity, nearest labels)."""
    size = (size, size) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be an int or (height, width) of positive ints, got {size!r}.")
    if tuple(sample.shape) == size:
        return sample
    out = _map_fields(sample, lambda a, kind: _resize_image(a, size, kind), lambda a: _resize_nearest(a, size), True)
    out.meta["transforms"] = list(out.meta.get("transforms", [])) + [f"resize{size}"]
    return out


# ----------------------------------------------------------------------------- random transforms
def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high, (), generator=generator))


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        return flip(sample, True) if _rand(generator) < self.p else sample


class RandomVerticalFlip(RandomHorizontalFlip):
    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        return flip(sample, False) if _rand(generator) < self.p else sample


class RandomRot90:
    """Rotate by 0, 90, 180 or 270 degrees, uniformly."""

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        return rot90(sample, _randint(4, generator))


def _as_size(size) -> tuple[int, int]:
    size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be an int or (height, width) of positive ints, got {size!r}.")
    return int(size[0]), int(size[1])


class RandomCrop:
    def __init__(self, size: int | tuple[int, int]):
        self.size = _as_size(size)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        H, W = sample.shape
        h, w = self.size
        if h > H or w > W:
            raise ValueError(f"RandomCrop size {self.size} is larger than the sample {H}x{W}; resize first.")
        return crop(sample, _randint(H - h + 1, generator), _randint(W - w + 1, generator), h, w)


class CenterCrop(RandomCrop):
    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        H, W = sample.shape
        h, w = self.size
        if h > H or w > W:
            raise ValueError(f"CenterCrop size {self.size} is larger than the sample {H}x{W}.")
        return crop(sample, (H - h) // 2, (W - w) // 2, h, w)


class Resize:
    def __init__(self, size: int | tuple[int, int]):
        self.size = _as_size(size)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        return resize(sample, self.size)


class RandomResizedCrop:
    """Crop a random window covering ``scale`` of the area with aspect ``ratio``, resize to ``size``
    (the torchvision recipe, applied to every field)."""

    def __init__(self, size: int | tuple[int, int], scale: tuple[float, float] = (0.4, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.size = _as_size(size)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.scale, self.ratio = scale, ratio

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        H, W = sample.shape
        for _ in range(10):
            area = H * W * (self.scale[0] + (self.scale[1] - self.scale[0]) * _rand(generator))
            log_r = np.log(self.ratio[0]) + (np.log(self.ratio[1]) - np.log(self.ratio[0])) * _rand(generator)
            w = int(round(np.sqrt(area * np.exp(log_r))))
            h = int(round(np.sqrt(area / np.exp(log_r))))
            if 0 < h <= H and 0 < w <= W:
                top, left = _randint(H - h + 1, generator), _randint(W - w + 1, generator)
                break
        else:
            h, w = min(H, W), min(H, W)
            top, left = (H - h) // 2, (W - w) // 2
        return resize(crop(sample, top, left, h, w), self.size)


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        for t in self.transforms:
            sample = t(sample, generator)
        return sample

    def __repr__(self) -> str:
        return f"Compose({[type(t).__name__ for t in self.transforms]})"


# ----------------------------------------------------------------------------- tensors
def sample_to_tensors(sample: Sample, include_instances: bool = True) -> dict[str, torch.Tensor]:
    """Tensors for a model, from the fields present:

    ``optical`` (C,H,W) float32; ``sar`` (2,H,W) float32 normalised to [-1, 1] by
    :func:`rslab.data.sar.normalize_sar` (nodata -> 0); ``sar_db`` the raw dB (NaN kept);
    ``sar_valid`` (H,W) bool; ``labels`` (H,W) int64; ``valid`` (H,W) bool (labels != 255);
    ``instances`` (H,W) int64.
    """
    out: dict[str, torch.Tensor] = {}
    if sample.optical is not None:
        if sample.optical.ndim != 3:
            raise ValueError(f"optical must be (C, H, W), got shape {sample.optical.shape}")
        out["optical"] = torch.from_numpy(np.ascontiguousarray(sample.optical, dtype=np.float32))
    if sample.sar is not None:
        sar_db = torch.from_numpy(np.ascontiguousarray(sample.sar, dtype=np.float32))
        out["sar"] = normalize_sar(sar_db)
        out["sar_db"] = sar_db
        out["sar_valid"] = sar_valid_mask(sar_db)
    if sample.labels is not None:
        labels = torch.from_numpy(np.ascontiguousarray(sample.labels, dtype=np.int64))
        out["labels"] = labels
        out["valid"] = labels != IGNORE_INDEX
    if include_instances and sample.instances is not None:
        out["instances"] = torch.from_numpy(np.ascontiguousarray(sample.instances, dtype=np.int64))
    return out
