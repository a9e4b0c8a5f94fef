"""Co-registered optical-SAR pairs of the synthetic world: checks, stacking, scene selection, tiling.

Used by the alignment recipe (notebook 01) and the notebooks that reuse its data (02, 05):

- :func:`check_pairs`: validate (N, C, H, W) optical and (N, 2, H, W) SAR batches; flag pairs with
  too much SAR nodata.
- :func:`pairs_to_tensors`: stack ``Sample`` s into checked tensors.
- :func:`dominant_class`, :func:`balanced_scenes`: held-out evaluation scenes, ``per_class`` per class.
- :func:`restyled_scenes`: the same ground in another regional style (a second acquisition).
- :func:`tile_pairs`: non-overlapping tiles of a large co-registered scene.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["check_pairs", "pairs_to_tensors", "dominant_class", "balanced_scenes", "restyled_scenes", "tile_pairs"]


def check_pairs(optical: torch.Tensor, sar_db: torch.Tensor, max_nodata: float = 0.5) -> torch.Tensor:
    """Validate co-registered batches; return a (N,) bool keep-mask of usable pairs.

    Raises ``ValueError`` on a shape or channel mismatch. Pairs whose SAR has more than
    ``max_nodata`` NaN pixels are flagged (False) so callers drop them rather than train on them;
    the remaining NaNs are masked inside the encoder.
    """
    if not isinstance(optical, torch.Tensor) or not isinstance(sar_db, torch.Tensor):
        raise ValueError("optical and sar must be torch tensors (N, C, H, W); use torch.from_numpy().")
    if optical.ndim != 4 or sar_db.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) batches, got optical {tuple(optical.shape)}, "
                         f"sar {tuple(sar_db.shape)}")
    if sar_db.shape[1] != 2:
        raise ValueError(f"SAR must have 2 channels (VV, VH) in dB, got {sar_db.shape[1]} "
                         f"(shape {tuple(sar_db.shape)})")
    if optical.shape[0] != sar_db.shape[0] or optical.shape[-2:] != sar_db.shape[-2:]:
        raise ValueError(
            f"optical {tuple(optical.shape)} and SAR {tuple(sar_db.shape)} are not co-registered pairs: "
            "they must share N, H and W."
        )
    if not torch.isfinite(optical).all():
        raise ValueError("optical contains NaN/inf; drop those pairs first (optical nodata is not supported).")
    nodata = (~torch.isfinite(sar_db)).any(1).float().mean((1, 2))
    return nodata <= max_nodata


def pairs_to_tensors(samples: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``Sample`` s into (N, C, H, W) optical and (N, 2, H, W) SAR float tensors, checked."""
    if not samples:
        raise ValueError("no samples given")
    missing = [i for i, s in enumerate(samples) if s.optical is None or s.sar is None]
    if missing:
        raise ValueError(f"samples {missing[:5]} lack an optical or SAR image; alignment needs co-registered pairs.")
    shapes = {(s.optical.shape, s.sar.shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"samples differ in shape {sorted(shapes)[:3]}; crop or tile them to one size first.")
    optical = torch.from_numpy(np.stack([s.optical for s in samples])).float()
    sar = torch.from_numpy(np.stack([s.sar for s in samples])).float()
    check_pairs(optical, sar)
    return optical, sar


def dominant_class(labels: np.ndarray, tree, level: int) -> int:
    """Class id at ``level`` covering most labelled pixels of a leaf-label map (ignore excluded)."""
    mapped = np.asarray(tree.to_level(labels, level))
    mapped = mapped[mapped != 255]
    if mapped.size == 0:
        raise ValueError("label map has no labelled pixel")
    return int(np.bincount(mapped, minlength=tree.num_classes(level)).argmax())


def balanced_scenes(world, class_names: Sequence[str], per_class: int, level: int = 2, start: int = 100_000,
                    max_tries: int = 50_000, **scene_kw) -> tuple[list, torch.Tensor]:
    """Scenes ``start, start+1, ...`` of a synthetic world, kept until each class of ``class_names``
    (names at ``level``) dominates ``per_class`` of them. Returns (samples, class index per sample).

    Use a ``start`` far from the training indices so the evaluation scenes are held out.
    """
    tree = world.tree
    ids = [tree.class_id(tree.find(n), level) for n in class_names]
    buckets: dict[int, list] = {c: [] for c in ids}
    for index in range(start, start + max_tries):
        sample = world.scene(index, **scene_kw)
        c = dominant_class(sample.labels, tree, level)
        if c in buckets and len(buckets[c]) < per_class:
            buckets[c].append(sample)
            if all(len(b) == per_class for b in buckets.values()):
                break
    else:
        short = {tree.names(level)[c]: len(b) for c, b in buckets.items()}
        raise ValueError(f"after {max_tries} scenes some classes dominate too few of them: {short}; lower per_class.")
    samples = [s for c in ids for s in buckets[c]]
    targets = torch.tensor([k for k, c in enumerate(ids) for _ in buckets[c]])
    return samples, targets


def restyled_scenes(world, samples: Sequence, offset: int | None = None) -> list:
    """The same ground in another regional style: each sample re-rendered by ``world`` (same
    layout and labels, other colours and SAR moisture shift), e.g. as a second acquisition.

    ``offset`` shifts the style index by a fixed amount (mod the number of styles); by default it
    cycles through 1 .. n_styles - 1 so every other style is used. Needs ``n_styles >= 2``.
    """
    n = world.config.n_styles
    if n < 2:
        raise ValueError(f"restyling needs a world with at least 2 styles, got n_styles={n}")
    if offset is not None and offset % n == 0:
        raise ValueError(f"offset {offset} maps every style to itself (n_styles={n})")
    out = []
    for i, s in enumerate(samples):
        if "index" not in s.meta or "style" not in s.meta:
            raise ValueError("samples must come from a SyntheticWorld (meta needs 'index' and 'style')")
        shift = offset if offset is not None else 1 + i % (n - 1)
        out.append(world.scene(s.meta["index"], style=(s.meta["style"] + shift) % n, size=s.labels.shape[-1]))
    return out


def tile_pairs(sample, tile: int, optical_bands: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Cut a large co-registered ``Sample`` into non-overlapping ``tile x tile`` pairs.

    Returns ``{"optical": (T, C, t, t), "sar": (T, 2, t, t), "labels": (T, t, t), "origin": (T, 2)}``
    (labels only when the sample has them). ``optical_bands`` selects bands (e.g. Sentinel-2
    B4, B3, B2, B8 = (3, 2, 1, 7) to match the RGB+NIR of the synthetic world).
    """
    if sample.optical is None or sample.sar is None:
        raise ValueError("tile_pairs needs a sample with both optical and SAR images.")
    h, w = sample.shape
    if tile < 8 or tile > min(h, w):
        raise ValueError(f"tile must be in [8, {min(h, w)}], got {tile}")
    optical = sample.optical if optical_bands is None else sample.optical[list(optical_bands)]
    out: dict[str, list] = {"optical": [], "sar": [], "labels": [], "origin": []}
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            out["optical"].append(optical[:, y : y + tile, x : x + tile])
            out["sar"].append(sample.sar[:, y : y + tile, x : x + tile])
            if sample.labels is not None:
                out["labels"].append(sample.labels[y : y + tile, x : x + tile])
            out["origin"].append((y, x))
    result = {k: torch.from_numpy(np.stack(v)) for k, v in out.items() if v}
    result["optical"], result["sar"] = result["optical"].float(), result["sar"].float()
    return result
