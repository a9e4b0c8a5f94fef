"""ConInfer on scenes too large for memory (ConInfer Sec. 3.6 / Fig. 2, read window by window).

:func:`rslab.models.coninfer.refine_scene` holds the scene as one tensor, all its tiles, and two
full-resolution ``(K, H, W)`` float32 maps: about ``4 (C + 2K)`` bytes per pixel, 7 GB for a
12,000 px RGB scene with 6 classes. :func:`refine_large_scene` computes the same thing with
working memory bounded by the patch pool:

1. tiles are read from ``source`` a batch at a time (any ``(C, H, W)`` array-like with
   slicing: a numpy array or memmap, a torch tensor, or
   :func:`rslab.data.readers.open_raster`'s windowed raster) and both branches run on them;
   only their per-patch maps (``(T, K, h, w)`` and ``(T, D, h, w)``) are kept;
2. ONE mixture over the patches of all tiles (the paper's pool; ``pool_tiles`` fits one per
   group of tiles instead, bounding memory by the group);
3. the output is stitched a band of rows at a time, exactly as :func:`stitch_tiles` does
   (bilinear upsampling of each tile's patch map, overlapping tiles averaged), and kept only as
   uint8 labels ``(H, W)``: 1 byte per pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .coninfer import (
    ConInferConfig,
    ConInferResult,
    _check_layout,
    _check_tiling,
    _check_values,
    _run_branches,
    _stitch_rows,
    coninfer,
    flatten_maps,
    tile_positions,
)


@dataclass
class LargeSceneResult:
    """Output of :func:`refine_large_scene`.

    ``labels`` / ``prior_labels``: (H, W) uint8 argmax of the refined / prior probabilities;
    ``tile_probs`` / ``tile_prior``: (T, K, h, w) per-patch maps of each tile; ``positions``:
    the tiles' (y, x) offsets; ``results``: one :class:`ConInferResult` per pool.
    """

    labels: np.ndarray
    prior_labels: np.ndarray
    tile_probs: torch.Tensor
    tile_prior: torch.Tensor
    positions: list[tuple[int, int]]
    results: list[ConInferResult]


def _source_shape(source) -> tuple[int, int, int]:
    shape = getattr(source, "shape", None)
    if shape is None or len(shape) != 3:
        raise ValueError(f"source must be a (C, H, W) array-like with .shape and slicing, got shape {shape}")
    c, h, w = (int(v) for v in shape)
    _check_layout((c, h, w), "source")
    return c, h, w


def _read_tile(source, y: int, x: int, tile: int, h: int, w: int) -> torch.Tensor:
    window = source[:, y:min(y + tile, h), x:min(x + tile, w)]
    t = window if isinstance(window, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(window))
    t = t.float()
    if t.shape[1] < tile or t.shape[2] < tile:  # scene smaller than a tile: zero-pad bottom/right
        t = F.pad(t, (0, tile - t.shape[2], 0, tile - t.shape[1]))
    return t


def _stitch_labels(tile_maps: torch.Tensor, positions: list[tuple[int, int]], hw: tuple[int, int],
                   tile: int) -> np.ndarray:
    """:func:`stitch_tiles` followed by argmax, one band of ``tile`` rows at a time -> uint8 (H, W)."""
    h, w = hw
    hp, wp = max(h, tile), max(w, tile)
    k = tile_maps.shape[1]
    if k > 255:
        raise ValueError(f"{k} classes do not fit uint8 labels")
    out = np.empty((h, w), dtype=np.uint8)
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, hp)
        rows = min(y1, h) - y0
        band = _stitch_rows(tile_maps, positions, y0, y1, wp, tile)
        out[y0:y0 + rows] = band[:, :rows, :w].argmax(0).numpy().astype(np.uint8)
    return out


def refine_large_scene(prior_fn: Callable[[torch.Tensor], torch.Tensor],
                       feature_fn: Callable[[torch.Tensor], torch.Tensor],
                       source, tile: int = 448, stride: int | None = None,
                       config: ConInferConfig | None = None, batch_tiles: int = 8,
                       pool_tiles: int | None = None) -> LargeSceneResult:
    """Tiled ConInfer (Fig. 2) on a scene read window by window; see the module docstring.

    Args:
        prior_fn, feature_fn: as in :func:`rslab.models.coninfer.refine_scene`
            ((B, C, tile, tile) -> (B, K, h, w) probabilities / (B, D, h, w) features).
        source: (C, H, W) array-like supporting ``source[:, y0:y1, x0:x1]``.
        tile, stride: tiling (stride defaults to tile, non-overlapping as in the paper).
        config: :class:`ConInferConfig`.
        batch_tiles: tiles per forward pass of the branches.
        pool_tiles: ``None`` = one mixture over all tiles (the paper); ``n`` = one per n tiles.

    Each tile is checked as it is read (NaN/inf and huge values refused, naming the tile).
    """
    c, h, w = _source_shape(source)
    stride = _check_tiling(tile, stride)
    if batch_tiles < 1:
        raise ValueError(f"batch_tiles must be >= 1, got {batch_tiles}")
    if pool_tiles is not None and pool_tiles < 1:
        raise ValueError(f"pool_tiles must be None or >= 1, got {pool_tiles}")
    ys = tile_positions(max(h, tile), tile, stride)
    xs = tile_positions(max(w, tile), tile, stride)
    positions = [(y, x) for y in ys for x in xs]
    priors, feats = [], []
    with torch.no_grad():
        for s in range(0, len(positions), batch_tiles):
            batch_pos = positions[s:s + batch_tiles]
            batch = torch.stack([_read_tile(source, y, x, tile, h, w) for y, x in batch_pos])
            _check_values(batch, f"source tiles at {batch_pos[0]}..{batch_pos[-1]}")
            p, f = _run_branches(prior_fn, feature_fn, batch, tile)
            priors.append(p)
            feats.append(f)
    prior_maps, feature_maps = torch.cat(priors), torch.cat(feats)
    del priors, feats
    t, k, gh, gw = prior_maps.shape
    group = t if pool_tiles is None else pool_tiles
    z_maps = torch.empty_like(prior_maps)
    results = []
    for s in range(0, t, group):
        p_flat, f_flat = flatten_maps(prior_maps[s:s + group], feature_maps[s:s + group])
        res = coninfer(p_flat, f_flat, config)
        z_maps[s:s + group] = res.z.cpu().reshape(-1, gh, gw, k).permute(0, 3, 1, 2)
        res.posterior = res.posterior.cpu()
        results.append(res)
    return LargeSceneResult(labels=_stitch_labels(z_maps, positions, (h, w), tile),
                            prior_labels=_stitch_labels(prior_maps, positions, (h, w), tile),
                            tile_probs=z_maps, tile_prior=prior_maps, positions=positions, results=results)
