"""Layouts of the synthetic world: where every class and object is (labels + instances).

A layout is drawn from one random generator and does not depend on the regional style, the
number of SAR looks or the text options, so the same scene index can be re-rendered in another
style with an identical label map (what the visual-prompt notebooks need to show intra-class
variance). Everything is vectorised except the short loops over rectangular objects
(buildings, vehicles), which are slice assignments.

Painter's order (later overrides earlier): field parcels (cropland / grassland / bare soil) ->
urban patches (grass lawns) -> forest blobs -> lakes -> river -> roads (bridges cross the river)
-> buildings (never on water) -> vehicles (on roads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy.special import ndtri

# Leaf ids of the "synthetic" tree (rslab/data/trees/synthetic.yaml); checked by SyntheticWorld.
RESIDENTIAL, INDUSTRIAL, ROAD, CAR, TRUCK, RIVER, LAKE, BROADLEAF, CONIFER, CROPLAND, GRASSLAND, BARE = range(12)
LEAF_NAMES = (
    "residential building", "industrial building", "road", "car", "truck", "river", "lake",
    "broadleaf forest", "conifer forest", "cropland", "grassland", "bare soil",
)
BUILDINGS = (RESIDENTIAL, INDUSTRIAL)
VEHICLES = (CAR, TRUCK)
WATER = (RIVER, LAKE)
SCENE_TYPES = ("rural", "suburban", "urban", "mixed")


@dataclass
class Layout:
    """Where things are. ``labels`` uint8 leaf ids, ``instances`` int32 (0 = none).

    Per-instance arrays are indexed by instance id (row 0 unused): ``inst_class`` leaf id (-1 for row 0),
    ``inst_rect`` placed rectangle (y0, y1, x0, x1) for buildings/vehicles (-1 otherwise),
    ``inst_height`` metres (buildings, vehicles), ``inst_horizontal`` vehicle heading.
    ``parcel_id``/``u``/``v`` drive the crop-row texture of the renderer.
    """

    labels: np.ndarray
    instances: np.ndarray
    inst_class: np.ndarray
    inst_rect: np.ndarray
    inst_height: np.ndarray
    inst_horizontal: np.ndarray
    parcel_id: np.ndarray
    parcel_stripe_period: np.ndarray
    parcel_stripe_along_u: np.ndarray
    u: np.ndarray
    v: np.ndarray
    canopy: np.ndarray  # (H, W) unit-variance fine texture field (tree crowns, clods), shared by both sensors
    scene_type: str
    has_river: bool
    extras: dict = field(default_factory=dict)

    @property
    def n_instances(self) -> int:
        return len(self.inst_class) - 1


# ----------------------------------------------------------------------------- noise
@lru_cache(maxsize=64)
def _interp_matrix(n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(n, m) Gaussian interpolation weights from a coarse grid (spacing ``scale`` px) to n pixels,
    and the per-pixel L2 norm of the weights (to give the noise unit variance)."""
    m = int(np.ceil(n / scale)) + 5
    centres = (np.arange(m, dtype=np.float64) - 2.5) * scale
    d = (np.arange(n, dtype=np.float64)[:, None] - centres[None, :]) / (0.6 * scale)
    w = np.exp(-0.5 * d * d)
    w[w < 1e-4] = 0.0
    return w.astype(np.float32), np.sqrt((w * w).sum(1)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Stationary Gaussian random field, zero mean and unit variance per pixel, correlation
    length ~``scale`` px: coarse white noise interpolated by two small matrix products
    (``Wy @ G @ Wx.T``), far cheaper than filtering a full-resolution field."""
    wy, ny = _interp_matrix(h, float(scale))
    wx, nx = _interp_matrix(w, float(scale))
    g = rng.standard_normal((wy.shape[1], wx.shape[1]), dtype=np.float32)
    out = (wy @ g) @ wx.T
    out /= ny[:, None] * nx[None, :]
    return out


_BANK_SIZE = 1024


@lru_cache(maxsize=1)
def _texture_bank() -> np.ndarray:
    """A fixed 1024^2 fine-texture field (scale 2.5 px), computed once per process."""
    return smooth_noise(np.random.default_rng(20240601), _BANK_SIZE, _BANK_SIZE, 2.5)


def fine_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Unit-variance fine texture (tree crowns, soil clods; correlation ~2.5 px). Scenes up to
    512 px take a random window (and orientation) of a shared precomputed field: the texture is
    statistically the same and ~2 ms cheaper per scene; larger scenes get their own field."""
    if max(h, w) > _BANK_SIZE // 2:
        return smooth_noise(rng, h, w, 2.5)
    y0, x0 = (int(v) for v in rng.integers(0, _BANK_SIZE - max(h, w) + 1, size=2))
    window = _texture_bank()[y0 : y0 + max(h, w), x0 : x0 + max(h, w)]
    window = np.rot90(window, int(rng.integers(4)))[:h, :w]
    return np.ascontiguousarray(window)


# ----------------------------------------------------------------------------- helpers
class _Objects:
    """Accumulates instances (class, rect, height, heading) while painting."""

    def __init__(self):
        self.cls, self.rect, self.height, self.horiz = [-1], [(-1, -1, -1, -1)], [0.0], [False]

    def add(self, cls: int, rect=(-1, -1, -1, -1), height: float = 0.0, horizontal: bool = False) -> int:
        self.cls.append(cls)
        self.rect.append(tuple(int(r) for r in rect))
        self.height.append(float(height))
        self.horiz.append(bool(horizontal))
        return len(self.cls) - 1


def _scene_params(scene_type: str, size: int, rng: np.random.Generator) -> dict:
    area = (size / 256.0) ** 2
    lake_area = area if area >= 1 else area**0.5  # small scenes still show lakes now and then
    if scene_type == "rural":
        return dict(n_patches=int(rng.random() < 0.45), patch=(56, 110), forest=0.30, river=0.65,
                    lakes=0.9 * lake_area, rural_roads=rng.integers(1, 3), industrial=0.15)
    if scene_type == "suburban":
        return dict(n_patches=1, patch=(110, 190), forest=0.18, river=0.5, lakes=0.5 * lake_area,
                    rural_roads=1, industrial=0.3)
    if scene_type == "urban":
        return dict(n_patches=1, patch=(int(0.75 * size), size), forest=0.06, river=0.35, lakes=0.2 * lake_area,
                    rural_roads=0, industrial=0.35)
    # mixed: large scenes with several settlements
    return dict(n_patches=max(1, rng.poisson(0.45 * area)), patch=(100, 360), forest=0.2, river=1.0,
                lakes=0.5 * lake_area, rural_roads=rng.integers(1, 2 + int(size // 1024)), industrial=0.2)


def _bin_index(values: np.ndarray, edges: np.ndarray, lo: float) -> np.ndarray:
    """``np.searchsorted(edges, values)`` for edges at integer offsets from ``lo`` and values >= lo,
    via an integer lookup table (several times faster than a binary search per pixel)."""
    offsets = np.round(edges - lo).astype(np.int64)
    lut = np.searchsorted(offsets, np.arange(offsets[-1] + 2), side="right").astype(np.int32)
    q = (values - np.float32(lo)).astype(np.int32)  # values >= lo, so truncation is floor
    np.clip(q, 0, len(lut) - 1, out=q)
    return lut[q]


def _grid_lines(lo: int, hi: int, spacing: tuple[int, int], rng) -> list[int]:
    """Road centre positions between lo and hi with jittered spacing (always includes ends)."""
    pos, p = [lo], lo
    while True:
        p += int(rng.integers(*spacing))
        if p > hi - spacing[0] // 2:
            break
        pos.append(p)
    pos.append(hi)
    return pos


# ----------------------------------------------------------------------------- the painting steps
# Each step draws from the same generator in a fixed order; changing the order (or the number of
# draws) of any step changes every scene of the world.
class _Parcels(NamedTuple):
    labels: np.ndarray          # (H, W) uint8 leaf ids after painting the parcels
    parcel_id: np.ndarray       # (H, W) parcel index
    parcel_class: np.ndarray    # (n_parcels,) leaf id of each parcel
    n_parcels: int
    stripe_period: np.ndarray   # (n_parcels,) crop-row period
    stripe_along_u: np.ndarray  # (n_parcels,) crop rows along u (else along v)
    u: np.ndarray               # (H, W) rotated coordinates of the grid
    v: np.ndarray


def _paint_parcels(rng: np.random.Generator, H: int, W: int, ys: np.ndarray, xs: np.ndarray) -> _Parcels:
    """Step 1, field parcels: a rotated, staggered rectangular grid (cadastral strips) of
    cropland / grassland / bare soil."""
    theta = rng.uniform(-0.45, 0.45)
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = xs * c + ys * s
    v = ys * c - xs * s
    umin, umax = float(min(0, -H * abs(s))) - 1, float(W * c + H * abs(s)) + 1
    col_edges = np.cumsum(rng.integers(28, 90, size=int((umax - umin) / 28) + 2)) + umin
    ncol = len(col_edges) + 1
    ci = _bin_index(u, col_edges, umin)
    row_shift = rng.uniform(0, 80, size=ncol + 1).astype(np.float32)
    vmin = float(-W * abs(s)) - 1
    row_edges = np.cumsum(rng.integers(24, 80, size=int((H + W * abs(s) + 100) / 24) + 2)) + vmin
    ri = _bin_index(v + row_shift[ci], row_edges, vmin)
    nrow = len(row_edges) + 1
    parcel_id = ci * nrow + ri
    n_parcels = ncol * nrow
    parcel_class = rng.choice(np.array([CROPLAND, GRASSLAND, BARE], dtype=np.uint8), size=n_parcels,
                              p=[0.58, 0.30, 0.12])
    labels = parcel_class[parcel_id]
    stripe_period = rng.uniform(3.0, 7.0, size=n_parcels).astype(np.float32)
    stripe_along_u = rng.random(n_parcels) < 0.5
    return _Parcels(labels, parcel_id, parcel_class, n_parcels, stripe_period, stripe_along_u, u, v)


def _paint_urban_patches(rng: np.random.Generator, labels: np.ndarray, p: dict, size: int
                         ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Step 2, settlements: rectangles painted as grass lawns; returns the urban mask and the rectangles."""
    H = W = size
    urban = np.zeros((H, W), bool)
    patches = []
    for _ in range(p["n_patches"]):
        ph, pw = (int(min(size, rng.integers(*p["patch"]))) for _ in range(2))
        y0, x0 = int(rng.integers(0, H - ph + 1)), int(rng.integers(0, W - pw + 1))
        patches.append((y0, y0 + ph, x0, x0 + pw))
        urban[y0 : y0 + ph, x0 : x0 + pw] = True
    np.copyto(labels, np.uint8(GRASSLAND), where=urban)
    return urban, patches


def _paint_forest(rng: np.random.Generator, labels: np.ndarray, urban: np.ndarray, p: dict) -> None:
    """Step 3, forest blobs: thresholded smooth noise outside settlements; conifer vs broadleaf
    from a second field."""
    H, W = labels.shape
    forest_noise = smooth_noise(rng, H, W, 34.0) + 0.35 * smooth_noise(rng, H, W, 9.0)
    thr = float(ndtri(1.0 - p["forest"])) * 1.06
    forest = (forest_noise > thr) & ~urban
    conifer = smooth_noise(rng, H, W, 70.0) > rng.uniform(-0.8, 0.8)
    # full-array ops beat masked fancy indexing
    np.copyto(labels, np.where(conifer, np.uint8(CONIFER), np.uint8(BROADLEAF)), where=forest)


def _paint_lakes(rng: np.random.Generator, labels: np.ndarray, urban: np.ndarray, objs: _Objects, p: dict,
                 scene_type: str, ys: np.ndarray, xs: np.ndarray) -> list[tuple]:
    """Step 4, lakes: star-shaped blobs (radius modulated by low harmonics) outside settlements;
    each is an instance. Returns ``(instance id, y0, y1, x0, x1, inside mask)`` per lake."""
    H, W = labels.shape
    size = H
    n_lakes = int(rng.poisson(p["lakes"]))
    lakes = []
    for _ in range(n_lakes):
        a, b = rng.uniform(10, 34, size=2) * (1 + 0.5 * (scene_type == "mixed"))
        cy, cx = rng.uniform(0.1, 0.9, size=2) * size
        r = int(max(a, b) * 1.4) + 1
        y0, y1, x0, x1 = max(0, int(cy) - r), min(H, int(cy) + r), max(0, int(cx) - r), min(W, int(cx) + r)
        if y1 - y0 < 4 or x1 - x0 < 4:
            continue
        dy, dx = ys[y0:y1] - cy, xs[:, x0:x1] - cx
        phi = np.arctan2(dy, dx)
        k1, k2, k3 = rng.uniform(0, 2 * np.pi, size=3)
        rad = 1 + 0.18 * np.sin(2 * phi + k1) + 0.1 * np.sin(3 * phi + k2) + 0.06 * np.sin(5 * phi + k3)
        inside = ((dy / b) ** 2 + (dx / a) ** 2 < rad**2) & ~urban[y0:y1, x0:x1]
        if inside.sum() < 30:
            continue
        lid = objs.add(LAKE)
        labels[y0:y1, x0:x1][inside] = LAKE
        objs.rect[lid] = (y0, y1, x0, x1)
        lakes.append((lid, y0, y1, x0, x1, inside))
    return lakes


def _paint_river(rng: np.random.Generator, labels: np.ndarray, p: dict, size: int, ys: np.ndarray,
                 xs: np.ndarray) -> bool:
    """Step 5, the river: a meandering band around a sum-of-sines centreline, any direction,
    passing near the scene centre. Returns whether a river (of at least 50 px) was painted."""
    H = W = size
    has_river = bool(rng.random() < p["river"])
    if not has_river:
        return False
    ang = rng.uniform(0, np.pi)
    ca, sa = np.float32(np.cos(ang)), np.float32(np.sin(ang))
    along = xs * ca + ys * sa
    across = ys * ca - xs * sa
    n_u = int(3 * size) + 4
    t = np.arange(n_u, dtype=np.float32) - size
    # pass near the scene centre: its across-coordinate, plus a random offset
    centre = np.full(n_u, float((H / 2) * ca - (W / 2) * sa) + rng.uniform(-0.25, 0.25) * size, np.float32)
    for _ in range(3):
        lam = rng.uniform(120, 420) * max(1.0, size / 512) ** 0.5
        centre += np.float32(rng.uniform(6, 26)) * np.sin(2 * np.pi * t / lam + rng.uniform(0, 2 * np.pi))
    half = rng.uniform(5, 11) * max(1.0, size / 512) ** 0.3 + 1.5 * np.sin(2 * np.pi * t / rng.uniform(80, 200))
    idx = np.clip(along.astype(np.int32) + size, 0, n_u - 1)
    river = np.abs(across - centre[idx]) < half[idx]
    if river.sum() < 50:
        return False
    np.copyto(labels, np.uint8(RIVER), where=river)
    return True


def _paint_roads(rng: np.random.Generator, labels: np.ndarray, p: dict, patches: list, size: int
                 ) -> tuple[np.ndarray, list[tuple], list[tuple]]:
    """Step 6, roads: straight rural roads, then a grid per settlement with one through-road to
    the scene edge (roads cross the river as bridges). Returns the road mask, the segments
    ``(horizontal, centre, lo, hi, half_width)`` (where vehicles go) and the blocks between roads."""
    H = W = size
    road = np.zeros((H, W), bool)
    segments = []  # (horizontal, centre, lo, hi, half_width)
    blocks = []

    def paint_road(horizontal: bool, centre: int, lo: int, hi: int, half: int) -> None:
        a0, a1 = max(0, centre - half), min(H if horizontal else W, centre + half + 1)
        lo, hi = max(0, lo), min(W if horizontal else H, hi)
        if a1 <= a0 or hi <= lo:
            return
        if horizontal:
            road[a0:a1, lo:hi] = True
        else:
            road[lo:hi, a0:a1] = True
        segments.append((horizontal, centre, lo, hi, half))

    for _ in range(int(p["rural_roads"])):
        horizontal = bool(rng.random() < 0.5)
        paint_road(horizontal, int(rng.integers(size // 8, size - size // 8)), 0, size, int(rng.integers(2, 4)))
    for (y0, y1, x0, x1) in patches:
        half = int(rng.integers(2, 4))
        rows = _grid_lines(y0, y1 - 1, (38, 66), rng)
        cols = _grid_lines(x0, x1 - 1, (38, 66), rng)
        for r in rows:
            paint_road(True, r, x0, x1, half)
        for col in cols:
            paint_road(False, col, y0, y1, half)
        # one through-road connects the settlement to the scene edge
        if rng.random() < 0.5:
            r = rows[int(rng.integers(len(rows)))]
            paint_road(True, r, 0, size, half)
        else:
            col = cols[int(rng.integers(len(cols)))]
            paint_road(False, col, 0, size, half)
        for ra, rb in zip(rows[:-1], rows[1:]):
            for ca_, cb in zip(cols[:-1], cols[1:]):
                blocks.append((ra + half + 1, rb - half, ca_ + half + 1, cb - half))
    np.copyto(labels, np.uint8(ROAD), where=road)
    return road, segments, blocks


def _plan_blocks(rng: np.random.Generator, labels: np.ndarray, road: np.ndarray, blocks: list, p: dict
                 ) -> tuple[list[tuple], np.ndarray]:
    """Step 7a, the blocks between roads: residential rows of houses, industrial halls on bare
    yards, parks (a copse of broadleaf trees) or vacant lots. Yards, parks and lots are painted
    now; the buildings are returned as ``(class, rect, height)`` and placed by
    :func:`_label_instances` (never on water or road). Also returns the water-or-road mask."""
    water_or_road = (labels == RIVER) | (labels == LAKE) | road
    buildings = []
    for (y0, y1, x0, x1) in blocks:
        bh, bw = y1 - y0, x1 - x0
        if bh < 12 or bw < 12:
            continue
        # block kinds: residential, industrial, park, vacant lot
        kind = rng.choice(4, p=[0.82 - p["industrial"], p["industrial"], 0.1, 0.08])
        m = 3
        if kind == 1 and bh >= 24 and bw >= 24:  # industrial
            yard = ~water_or_road[y0:y1, x0:x1]
            labels[y0:y1, x0:x1][yard] = BARE
            n = int(rng.integers(1, 3 if min(bh, bw) < 45 else 4))
            along_x = bw >= bh
            length = (bw if along_x else bh) - 2 * m
            cuts = np.linspace(0, length, n + 1).astype(int)
            for k in range(n):
                g = int(rng.integers(2, 6))
                if along_x:
                    rect = (y0 + m + int(rng.integers(0, 3)), y1 - m - int(rng.integers(0, 3)),
                            x0 + m + cuts[k], x0 + m + cuts[k + 1] - g)
                else:
                    rect = (y0 + m + cuts[k], y0 + m + cuts[k + 1] - g,
                            x0 + m + int(rng.integers(0, 3)), x1 - m - int(rng.integers(0, 3)))
                buildings.append((INDUSTRIAL, rect, rng.uniform(8, 22)))
        elif kind == 0 or kind == 1:  # residential (small industrial blocks become residential)
            hs, ws = int(rng.integers(7, 14)), int(rng.integers(7, 14))
            gap = int(rng.integers(2, 6))
            ny, nx = max(1, (bh - 2 * m + gap) // (hs + gap)), max(1, (bw - 2 * m + gap) // (ws + gap))
            for iy in range(ny):
                for ix in range(nx):
                    if rng.random() < 0.12:
                        continue
                    hh, ww = hs - int(rng.integers(0, 3)), ws - int(rng.integers(0, 3))
                    yy, xx = y0 + m + iy * (hs + gap), x0 + m + ix * (ws + gap)
                    rect = (yy, min(yy + hh, y1 - m), xx, min(xx + ww, x1 - m))
                    if rect[1] - rect[0] >= 4 and rect[3] - rect[2] >= 4:
                        buildings.append((RESIDENTIAL, rect, rng.uniform(4, 10)))
        elif kind == 2:  # park: a copse of broadleaf trees
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            ry, rx = max(3, bh // 3), max(3, bw // 3)
            sub = labels[cy - ry : cy + ry, cx - rx : cx + rx]
            sub[~water_or_road[cy - ry : cy + ry, cx - rx : cx + rx]] = BROADLEAF
        else:  # construction site / vacant lot
            labels[y0:y1, x0:x1][~water_or_road[y0:y1, x0:x1]] = BARE
    return buildings, water_or_road


def _label_instances(labels: np.ndarray, parcels: _Parcels, lakes: list, has_river: bool, road: np.ndarray,
                     water_or_road: np.ndarray, buildings: list, objs: _Objects) -> np.ndarray:
    """Step 7b, the instance map (no random draws): visible cropland parcels (>= 16 px, no
    slivers), lakes, the river, no instance on roads, then the buildings (skipped when they
    would touch water or road), which also overwrite the labels."""
    H, W = labels.shape
    parcel_id, n_parcels = parcels.parcel_id, parcels.n_parcels
    instances = np.zeros((H, W), np.int32)
    # parcels as instances: cropland parcels only (the countable fields), where still visible.
    crop_vis = labels == CROPLAND
    visible = np.bincount(np.where(crop_vis, parcel_id, n_parcels).ravel(),
                          minlength=n_parcels + 1)[:n_parcels] >= 16  # no slivers
    pid_to_inst = np.zeros(n_parcels, np.int32)
    for pid in np.flatnonzero(visible & (parcels.parcel_class == CROPLAND)):
        pid_to_inst[pid] = objs.add(CROPLAND)
    np.copyto(instances, pid_to_inst[parcel_id], where=crop_vis)
    for (lid, y0, y1, x0, x1, inside) in lakes:
        sub = instances[y0:y1, x0:x1]
        sub[inside & (labels[y0:y1, x0:x1] == LAKE)] = lid
    if has_river:
        rid = objs.add(RIVER)
        np.copyto(instances, np.int32(rid), where=labels == RIVER)
    np.copyto(instances, np.int32(0), where=road)

    for cls, (y0, y1, x0, x1), height in buildings:
        if y1 - y0 < 3 or x1 - x0 < 3 or water_or_road[y0:y1, x0:x1].any():
            continue
        bid = objs.add(cls, (y0, y1, x0, x1), height)
        labels[y0:y1, x0:x1] = cls
        instances[y0:y1, x0:x1] = bid
    return instances


def _place_vehicles(rng: np.random.Generator, labels: np.ndarray, instances: np.ndarray, segments: list,
                    objs: _Objects, scene_type: str) -> None:
    """Step 8, vehicles on roads, along the lanes (cars ~ 3x5 px, trucks ~ 3x9 px at 1 m GSD); a
    vehicle off the road or overlapping another is dropped."""
    H, W = labels.shape
    density = {"rural": 0.006, "suburban": 0.012, "urban": 0.02, "mixed": 0.01}[scene_type]
    for horizontal, centre, lo, hi, half in segments:
        n = int(rng.poisson(density * (hi - lo)))
        for _ in range(n):
            cls = CAR if rng.random() < 0.82 else TRUCK
            length = int(rng.integers(4, 6)) if cls == CAR else int(rng.integers(8, 11))
            width = 3 if half >= 3 else 2
            lane = centre + (1 if rng.random() < 0.5 else -width)
            pos = int(rng.integers(lo, max(lo + 1, hi - length)))
            rect = (lane, lane + width, pos, pos + length) if horizontal else (pos, pos + length, lane, lane + width)
            y0, y1, x0, x1 = rect
            if y0 < 0 or x0 < 0 or y1 > H or x1 > W:
                continue
            if not (labels[y0:y1, x0:x1] == ROAD).all():
                continue  # off the road or overlapping another vehicle
            vid = objs.add(cls, rect, 1.5 if cls == CAR else 3.5, horizontal)
            labels[y0:y1, x0:x1] = cls
            instances[y0:y1, x0:x1] = vid


# ----------------------------------------------------------------------------- main
def make_layout(rng: np.random.Generator, size: int, scene_type: str) -> Layout:
    """Draw one ``size`` x ``size`` layout of ``scene_type`` (one of :data:`SCENE_TYPES`) from ``rng``.

    The steps run in the painter's order of the module docstring, each drawing from ``rng`` in
    turn: field parcels (:func:`_paint_parcels`) -> settlements (:func:`_paint_urban_patches`) ->
    forest (:func:`_paint_forest`) -> lakes (:func:`_paint_lakes`) -> river (:func:`_paint_river`)
    -> roads (:func:`_paint_roads`) -> blocks and buildings (:func:`_plan_blocks`,
    :func:`_label_instances`) -> vehicles (:func:`_place_vehicles`) -> the canopy texture
    (:func:`fine_texture`). The scene type sets the densities (:func:`_scene_params`). Same
    generator state, same layout, bit for bit.
    """
    if scene_type not in SCENE_TYPES:
        raise ValueError(f"scene_type must be one of {SCENE_TYPES}, got {scene_type!r}.")
    H = W = size
    p = _scene_params(scene_type, size, rng)
    ys = np.arange(H, dtype=np.float32)[:, None]
    xs = np.arange(W, dtype=np.float32)[None, :]
    objs = _Objects()

    parcels = _paint_parcels(rng, H, W, ys, xs)
    labels = parcels.labels
    urban, patches = _paint_urban_patches(rng, labels, p, size)
    _paint_forest(rng, labels, urban, p)
    lakes = _paint_lakes(rng, labels, urban, objs, p, scene_type, ys, xs)
    has_river = _paint_river(rng, labels, p, size, ys, xs)
    road, segments, blocks = _paint_roads(rng, labels, p, patches, size)
    buildings, water_or_road = _plan_blocks(rng, labels, road, blocks, p)
    instances = _label_instances(labels, parcels, lakes, has_river, road, water_or_road, buildings, objs)
    _place_vehicles(rng, labels, instances, segments, objs, scene_type)

    return Layout(
        labels=labels, instances=instances,
        inst_class=np.asarray(objs.cls, np.int64), inst_rect=np.asarray(objs.rect, np.int32).reshape(-1, 4),
        inst_height=np.asarray(objs.height, np.float32), inst_horizontal=np.asarray(objs.horiz, bool),
        parcel_id=parcels.parcel_id, parcel_stripe_period=parcels.stripe_period,
        parcel_stripe_along_u=parcels.stripe_along_u, u=parcels.u, v=parcels.v, canopy=fine_texture(rng, H, W),
        scene_type=scene_type, has_river=has_river, extras={"patches": patches, "n_parcels": parcels.n_parcels},
    )
