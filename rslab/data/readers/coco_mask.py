"""COCO segmentation decoding without pycocotools (numpy only).

COCO stores an object mask in one of three forms (COCO data-format spec, "segmentation"):

- polygons: ``[[x0, y0, x1, y1, ...], ...]`` in pixel coordinates;
- uncompressed RLE: ``{"size": [h, w], "counts": [n0, n1, ...]}`` -- run lengths that
  alternate background/foreground, *starting with background*, over the mask
  flattened in column-major (Fortran) order;
- compressed RLE: the same counts packed into an ASCII string (``maskApi.c``
  ``rleToString``): each count (from the 4th on, as a difference to the count two
  before) is written as 5-bit groups, least significant first, each group + 48 as a
  character, bit 0x20 flagging "more groups follow" and bit 0x10 of the last group
  carrying the sign.
"""

from __future__ import annotations

import numpy as np


def rle_counts_from_string(s: str | bytes) -> list[int]:
    """Compressed COCO RLE string -> run lengths (inverse of ``maskApi.c`` ``rleToString``)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(s):
                raise ValueError(f"truncated COCO RLE string at character {p}: {s[:40]!r}...")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {s[p]!r} in COCO RLE string at position {p}.")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # sign-extend a negative difference
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_counts_to_string(counts) -> str:
    """Run lengths -> compressed COCO RLE string (``maskApi.c`` ``rleToString``)."""
    out = []
    counts = [int(c) for c in counts]
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # Python's >> on negatives is arithmetic, as in the C code
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE (compressed or uncompressed) -> ``(H, W)`` bool mask."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"COCO RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}.")
    try:
        h, w = (int(v) for v in rle["size"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"COCO RLE 'size' must be [height, width], got {rle['size']!r}.") from e
    if h <= 0 or w <= 0:
        raise ValueError(f"COCO RLE size must be positive, got {h}x{w}.")
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        try:
            counts = rle_counts_from_string(counts)
        except UnicodeDecodeError as e:
            raise ValueError(f"COCO RLE counts string is not ASCII: {e}.") from e
    try:
        counts = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"COCO RLE counts must be a list of integers or a compressed string, got {counts!r:.60}."
        ) from e
    if counts.ndim != 1 or not np.isfinite(counts).all() or (counts != np.round(counts)).any():
        raise ValueError(f"COCO RLE counts must be whole run lengths, got {counts[:8].tolist()}...")
    counts = counts.astype(np.int64)
    if (counts < 0).any():
        raise ValueError(f"COCO RLE has negative run lengths: {counts[counts < 0][:5].tolist()}.")
    if counts.sum() != h * w:
        raise ValueError(f"COCO RLE run lengths sum to {int(counts.sum())} but size {h}x{w} has {h * w} pixels.")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate background, foreground, ...
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()  # column-major: reshape (W, H) then transpose


def rle_encode(mask: np.ndarray) -> dict:
    """``(H, W)`` bool mask -> compressed COCO RLE ``{"size": [h, w], "counts": str}``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2-D mask, got shape {mask.shape}.")
    flat = mask.T.reshape(-1)  # column-major order
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs  # counts always start with a background run
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle_counts_to_string(runs)}


def polygons_to_mask(polygons, height: int, width: int) -> np.ndarray:
    """COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` -> ``(H, W)`` bool mask (union of polygons).

    Reproduces pycocotools' rasteriser (``maskApi.c`` ``rleFrPoly``) so masks -- and
    therefore IoU scores -- match the official COCO/REFER tools pixel for pixel:

    1. vertices are scaled by 5 and rounded to a 5x finer integer grid;
    2. each edge is walked one fine-grid step at a time along its major axis
       (DDA line drawing), giving a dense chain of boundary points;
    3. wherever the chain crosses a fine column ``5 c + 2`` (the sample line of
       pixel column ``c``), the crossing row is mapped back to pixel rows
       (``ceil((v + 0.5) / 5 - 0.5)``) and toggles inside/outside from there down;
    4. toggles are applied in column-major order (that is how the C code builds
       its RLE) and their parity is the mask.

    In effect a pixel is inside when its centre is inside the polygon, with edges
    quantised to 1/5 pixel. Several polygons of one object are unioned, as
    ``pycocotools.mask.merge`` does in the REFER API.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"mask size must be positive, got {height}x{width}.")
    if not polygons:
        raise ValueError("COCO polygon list is empty; an object needs at least one polygon.")
    out = np.zeros((height, width), dtype=bool)
    for i, poly in enumerate(polygons):
        try:
            coords = np.asarray(poly, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise ValueError(f"COCO polygon {i} is not a flat list of numbers: {poly!r:.60}.") from e
        if coords.size < 6 or coords.size % 2:
            raise ValueError(f"COCO polygon {i} needs an even number >= 6 of coordinates, got {coords.size}.")
        if not np.isfinite(coords).all():
            raise ValueError(f"COCO polygon {i} has NaN/inf coordinates: {coords[~np.isfinite(coords)][:4].tolist()} "
                             f"(at positions {np.flatnonzero(~np.isfinite(coords))[:4].tolist()}).")
        xs, ys = coords[0::2], coords[1::2]
        area = 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))
        if area == 0.0:
            raise ValueError(f"COCO polygon {i} is degenerate (zero area: repeated or collinear points "
                             f"{coords[:6].tolist()}...).")
        if xs.max() < -0.5 or ys.max() < -0.5 or xs.min() > width + 0.5 or ys.min() > height + 0.5:
            raise ValueError(f"COCO polygon {i} lies outside the {height}x{width} image "
                             f"(x {xs.min():g}..{xs.max():g}, y {ys.min():g}..{ys.max():g}).")
        out |= _rasterise_polygon(xs, ys, height, width)
    return out


def _rasterise_polygon(xs: np.ndarray, ys: np.ndarray, h: int, w: int, scale: float = 5.0) -> np.ndarray:
    # 1. fine-grid vertices; C's (int) cast truncates toward zero
    x = np.trunc(scale * xs + 0.5).astype(np.int64)
    y = np.trunc(scale * ys + 0.5).astype(np.int64)
    x_start, x_end = x, np.roll(x, -1)
    y_start, y_end = y, np.roll(y, -1)
    dx, dy = np.abs(x_end - x_start), np.abs(y_end - y_start)
    along_x = dx >= dy
    # 2. walk every edge from its lower end along the major axis, keeping the original direction
    flip = (along_x & (x_start > x_end)) | (~along_x & (y_start > y_end))
    xs0, xe0 = np.where(flip, x_end, x_start), np.where(flip, x_start, x_end)
    ys0, ye0 = np.where(flip, y_end, y_start), np.where(flip, y_start, y_end)
    major = np.where(along_x, dx, dy)
    slope = np.where(along_x, (ye0 - ys0), (xe0 - xs0)) / np.maximum(major, 1)
    n_points = major + 1
    edge = np.repeat(np.arange(len(x)), n_points)
    step = np.arange(n_points.sum()) - np.repeat(np.cumsum(n_points) - n_points, n_points)
    t = np.where(flip[edge], major[edge] - step, step)
    minor = np.trunc(np.where(along_x[edge], ys0[edge], xs0[edge]) + slope[edge] * t + 0.5).astype(np.int64)
    u = np.where(along_x[edge], xs0[edge] + t, minor)  # fine-grid column of each boundary point
    v = np.where(along_x[edge], minor, ys0[edge] + t)  # fine-grid row
    # 3. crossings of pixel-column sample lines, mapped back to pixel (column, row)
    moved = u[1:] != u[:-1]
    col = np.where(u[1:] < u[:-1], u[1:], u[1:] - 1).astype(np.float64)
    col = (col + 0.5) / scale - 0.5
    row = np.minimum(v[1:], v[:-1]).astype(np.float64)
    row = np.ceil(np.clip((row + 0.5) / scale - 0.5, 0, h))
    keep = moved & (np.floor(col) == col) & (col >= 0) & (col <= w - 1)
    # 4. toggles in column-major order; parity of the running count is the mask
    toggles = np.zeros(h * w + 1, dtype=np.int64)
    np.add.at(toggles, col[keep].astype(np.int64) * h + row[keep].astype(np.int64), 1)
    flat = (np.cumsum(toggles)[: h * w] % 2).astype(bool)
    return flat.reshape(w, h).T


def segmentation_to_mask(segmentation, height: int, width: int, where: str = "") -> np.ndarray:
    """Any COCO ``segmentation`` field (polygons, uncompressed or compressed RLE) -> bool mask.

    ``where`` (e.g. ``"instances.json annotation 7"``) prefixes every error so a corrupt RLE or a
    polygon with NaN / degenerate coordinates names its file and annotation.
    """
    if not where:
        return _segmentation_to_mask(segmentation, height, width)
    try:
        return _segmentation_to_mask(segmentation, height, width)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


def _segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        mask = rle_decode(segmentation)
        if mask.shape != (height, width):
            raise ValueError(f"RLE size {mask.shape} differs from the image size {(height, width)}.")
        return mask
    raise ValueError(f"unsupported COCO segmentation of type {type(segmentation).__name__}; expected list or dict.")
