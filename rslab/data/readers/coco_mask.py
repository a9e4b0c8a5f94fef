"""COCO segmentation decoding without pycocotools (numpy + Pillow only).

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
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_counts_from_string(counts)
    counts = np.asarray(counts, dtype=np.int64)
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
    """COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` -> ``(H, W)`` bool mask (union).

    Rasterised with Pillow's ``ImageDraw.polygon`` (filled, outline included). This
    matches pycocotools' ``frPyObjects`` in the interior; boundary pixels can differ
    by about one pixel because the two rasterisers sample edges differently.
    """
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        coords = [float(v) for v in poly]
        if len(coords) < 6 or len(coords) % 2:
            raise ValueError(f"COCO polygon needs an even number >= 6 of coordinates, got {len(coords)}.")
        draw.polygon(list(zip(coords[0::2], coords[1::2])), fill=1, outline=1)
    return np.array(canvas, dtype=bool)


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Any COCO ``segmentation`` field (polygons, uncompressed or compressed RLE) -> bool mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        mask = rle_decode(segmentation)
        if mask.shape != (height, width):
            raise ValueError(f"RLE size {mask.shape} differs from the image size {(height, width)}.")
        return mask
    raise ValueError(f"unsupported COCO segmentation of type {type(segmentation).__name__}; expected list or dict.")
