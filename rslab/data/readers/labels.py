"""Label encodings of the real datasets, mapped to contiguous class ids.

Every decoder returns ``(H, W)`` int64 ids in ``0 .. len(CLASSES) - 1`` with
:data:`~rslab.data.sample.IGNORE_INDEX` (255) for unlabelled pixels, and raises a
``ValueError`` listing any value the encoding does not define (a wrong encoding
or a corrupt mask should fail loudly, not train on garbage).

Class-name tuples are in class-id order: ``LOVEDA_CLASSES[2] == "road"``.
"""

from __future__ import annotations

import numpy as np

from ..sample import IGNORE_INDEX
from ._io import unknown_values_error

# --- LoveDA (Wang et al., NeurIPS 2021 Datasets track) --------------------------------
#: LoveDA classes after dropping raw value 0 (no-data): raw value v (1..7) -> id v - 1.
LOVEDA_CLASSES: tuple[str, ...] = ("background", "building", "road", "water", "barren", "forest", "agriculture")

# --- ISPRS Potsdam / Vaihingen (2D semantic labelling benchmark) ------------------------
#: ISPRS classes in mmsegmentation's order (``ISPRSDataset``/``PotsdamDataset.METAINFO``).
ISPRS_CLASSES: tuple[str, ...] = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
#: RGB colour of each ISPRS class in the official label images, same order as ISPRS_CLASSES.
ISPRS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
    (255, 0, 0),
)
POTSDAM_CLASSES = ISPRS_CLASSES
VAIHINGEN_CLASSES = ISPRS_CLASSES

# --- DeepGlobe Land Cover (Demir et al., CVPRW 2018) ------------------------------------
DEEPGLOBE_CLASSES: tuple[str, ...] = ("urban", "agriculture", "rangeland", "forest", "water", "barren")
DEEPGLOBE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 255, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 255),
)

# --- Sen1Floods11 (Bonafilia et al., CVPRW 2020) ----------------------------------------
SEN1FLOODS11_CLASSES: tuple[str, ...] = ("not_water", "water")


def decode_loveda(raw: np.ndarray, path="") -> np.ndarray:
    """LoveDA raw mask -> ids.

    Raw encoding (the released PNGs): 0 no-data, 1 background, 2 building, 3 road,
    4 water, 5 barren, 6 forest, 7 agriculture. We drop no-data the way
    mmsegmentation's ``reduce_zero_label`` does: 0 -> 255 (ignore), v -> v - 1,
    so ids follow :data:`LOVEDA_CLASSES`.
    """
    raw = _check_2d(raw, path)
    bad = np.setdiff1d(np.unique(raw), np.arange(8))
    if bad.size:
        raise unknown_values_error(path, bad, "0 (no-data) and 1..7 (LoveDA classes)")
    out = raw.astype(np.int64) - 1
    out[raw == 0] = IGNORE_INDEX
    return out


def decode_isprs_index(raw: np.ndarray, path="") -> np.ndarray:
    """mmsegmentation's converted ISPRS index PNG -> ids.

    mmseg's ``tools/dataset_converters/potsdam.py`` / ``vaihingen.py`` write
    0 = ignore (black boundary pixels of the eroded labels) and 1..6 = the six classes
    in :data:`ISPRS_CLASSES` order; its ``ISPRSDataset`` then loads them with
    ``reduce_zero_label=True``. We apply that same reduction here so the ids are
    final: 0 -> 255, v -> v - 1 (1..6 -> 0..5), and 255 stays 255.
    """
    raw = _check_2d(raw, path)
    values = np.unique(raw)
    bad = np.setdiff1d(values, np.r_[np.arange(7), IGNORE_INDEX])
    if bad.size:
        raise unknown_values_error(path, bad, "0 (ignore), 1..6 (ISPRS classes, mmseg convention), 255 (ignore)")
    out = raw.astype(np.int64) - 1
    out[(raw == 0) | (raw == IGNORE_INDEX)] = IGNORE_INDEX
    return out


def decode_rgb_labels(
    rgb: np.ndarray,
    colours: tuple[tuple[int, int, int], ...],
    ignore_colours: tuple[tuple[int, int, int], ...] = ((0, 0, 0),),
    path="",
) -> np.ndarray:
    """Colour-coded ``(H, W, 3)`` (or ``(3, H, W)``) mask -> ids, by channel thresholding.

    An array whose last axis is 3 is read as ``(H, W, 3)``.

    Each channel is binarised at 128 (``>= 128`` -> on), the rule the DeepGlobe
    challenge states; it makes pure-colour codes robust to compression noise. The
    binarised (r, g, b) picks the class whose colour matches; ``ignore_colours`` map
    to 255; any other colour raises, listing the offending (binarised) colours.
    Only pure colours (each channel 0 or 255) can be expressed this way.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 3 and rgb.shape[-1] != 3 and rgb.shape[0] == 3:  # channels-first -> last
        rgb = np.moveaxis(rgb, 0, -1)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{path}: colour-coded mask must be RGB with 3 channels, got shape {rgb.shape}.")
    bits = (rgb >= 128).astype(np.int64)
    code = bits[..., 0] * 4 + bits[..., 1] * 2 + bits[..., 2]  # 0..7, one per pure colour
    lut = np.full(8, -1, dtype=np.int64)
    for class_id, colour in enumerate(colours):
        lut[_colour_code(colour)] = class_id
    for colour in ignore_colours:
        lut[_colour_code(colour)] = IGNORE_INDEX
    out = lut[code]
    if (out < 0).any():
        bad_codes = np.unique(code[out < 0])
        bad = [tuple(int(b) * 255 for b in ((c >> 2) & 1, (c >> 1) & 1, c & 1)) for c in bad_codes]
        allowed = ", ".join(str(c) for c in colours) + "; ignored: " + ", ".join(str(c) for c in ignore_colours)
        raise unknown_values_error(path, bad, f"RGB colours {allowed}")
    return out


def decode_isprs_rgb(rgb: np.ndarray, path="") -> np.ndarray:
    """Official ISPRS colour-coded label -> ids (:data:`ISPRS_COLOURS` order).

    Black (0, 0, 0) -- the boundary pixels of the "eroded" label variant -- is ignored.
    """
    return decode_rgb_labels(rgb, ISPRS_COLOURS, ((0, 0, 0),), path)


def decode_isprs(raw: np.ndarray, path="") -> np.ndarray:
    """ISPRS label in either form: ``(H, W)`` mmseg index PNG or 3-channel RGB code."""
    raw = np.asarray(raw)
    if raw.ndim == 2:
        return decode_isprs_index(raw, path)
    return decode_isprs_rgb(raw, path)


def decode_deepglobe(rgb: np.ndarray, path="") -> np.ndarray:
    """DeepGlobe land-cover RGB mask -> ids (:data:`DEEPGLOBE_CLASSES` order).

    urban (0,255,255) 0, agriculture (255,255,0) 1, rangeland (255,0,255) 2,
    forest (0,255,0) 3, water (0,0,255) 4, barren (255,255,255) 5;
    unknown (0,0,0) -> 255 (ignore). Channels thresholded at 128.
    """
    return decode_rgb_labels(rgb, DEEPGLOBE_COLOURS, ((0, 0, 0),), path)


def decode_sen1floods11(raw: np.ndarray, path="") -> np.ndarray:
    """Sen1Floods11 hand label (int16) -> ids: -1 (nodata) -> 255, 0 not water, 1 water."""
    raw = _check_2d(raw, path)
    bad = np.setdiff1d(np.unique(raw), np.array([-1, 0, 1]))
    if bad.size:
        raise unknown_values_error(path, bad, "-1 (nodata), 0 (not water), 1 (water)")
    out = raw.astype(np.int64)
    out[raw == -1] = IGNORE_INDEX
    return out


def _colour_code(colour: tuple[int, int, int]) -> int:
    r, g, b = (int(c >= 128) for c in colour)
    return r * 4 + g * 2 + b


def _check_2d(raw: np.ndarray, path) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim == 3 and raw.shape[0] == 1:
        raw = raw[0]
    if raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-band label image (H, W), got shape {raw.shape}.")
    if not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"{path}: label image must hold integers, got dtype {raw.dtype}.")
    return raw
