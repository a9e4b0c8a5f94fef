"""Label encodings of the real datasets, mapped to contiguous class ids.

Every decoder returns ``(H, W)`` uint8 ids (the smallest type holding the ids and
:data:`~rslab.data.sample.IGNORE_INDEX`, see :func:`.checks.label_dtype`; cast with
``.astype(np.int64)`` or ``torch.from_numpy(...).long()`` for losses) in
``0 .. len(CLASSES) - 1`` with 255 for unlabelled pixels. A decoder raises a ``ValueError``
listing any value (or colour, with its pixel count) the encoding does not define, and when
the whole mask decodes to ignore (a wrong encoding or a corrupt mask must fail loudly, not
train on garbage or score an empty label).

Class-name tuples are in class-id order: ``LOVEDA_CLASSES[2] == "road"``.
"""

from __future__ import annotations

import numpy as np

from ..sample import IGNORE_INDEX
from ._io import unknown_values_error
from .checks import check_not_empty, check_pure_colours, describe_colour_errors, label_dtype

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
    lut = {0: IGNORE_INDEX, **{v: v - 1 for v in range(1, 8)}}
    return _decode_by_table(raw, lut, path, "0 (no-data) and 1..7 (LoveDA classes)", len(LOVEDA_CLASSES))


def decode_isprs_index(raw: np.ndarray, path="") -> np.ndarray:
    """mmsegmentation's converted ISPRS index PNG -> ids.

    mmseg's ``tools/dataset_converters/potsdam.py`` / ``vaihingen.py`` write
    0 = ignore (black boundary pixels of the eroded labels) and 1..6 = the six classes
    in :data:`ISPRS_CLASSES` order; its ``ISPRSDataset`` then loads them with
    ``reduce_zero_label=True``. We apply that same reduction here so the ids are
    final: 0 -> 255, v -> v - 1 (1..6 -> 0..5), and 255 stays 255.
    """
    raw = _check_2d(raw, path)
    lut = {0: IGNORE_INDEX, IGNORE_INDEX: IGNORE_INDEX, **{v: v - 1 for v in range(1, 7)}}
    return _decode_by_table(raw, lut, path, "0 (ignore), 1..6 (ISPRS classes, mmseg convention), 255 (ignore)",
                            len(ISPRS_CLASSES))


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
    if not np.issubdtype(rgb.dtype, np.integer) or rgb.min() < 0 or rgb.max() > 255:
        raise ValueError(f"{path}: colour-coded mask must hold 8-bit colours (0..255 integers), got dtype "
                         f"{rgb.dtype}" + (f" with values {rgb.min()}..{rgb.max()}." if rgb.size else "."))
    check_pure_colours(rgb, path)
    bits = (rgb >= 128).astype(np.int64)
    code = bits[..., 0] * 4 + bits[..., 1] * 2 + bits[..., 2]  # 0..7, one per pure colour
    lut = np.full(8, -1, dtype=np.int64)
    for class_id, colour in enumerate(colours):
        lut[_colour_code(colour)] = class_id
    for colour in ignore_colours:
        lut[_colour_code(colour)] = IGNORE_INDEX
    out = lut[code]
    if (out < 0).any():
        allowed = ", ".join(str(c) for c in colours) + "; ignored: " + ", ".join(str(c) for c in ignore_colours)
        raise describe_colour_errors(rgb, out < 0, path, f"RGB colours {allowed} (channels thresholded at 128)")
    return check_not_empty(out.astype(label_dtype(len(colours) - 1)), path)


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
    return _decode_by_table(raw, {-1: IGNORE_INDEX, 0: 0, 1: 1}, path, "-1 (nodata), 0 (not water), 1 (water)",
                            len(SEN1FLOODS11_CLASSES))


def _decode_by_table(raw: np.ndarray, table: dict[int, int], path, allowed: str, num_classes: int) -> np.ndarray:
    """Map raw values through ``table``; unknown values (with pixel counts) and all-ignore results raise."""
    values, counts = np.unique(raw, return_counts=True)
    known = np.isin(values, np.fromiter(table, dtype=np.int64))
    if not known.all():
        raise unknown_values_error(path, values[~known], allowed, counts[~known])
    out = np.empty(raw.shape, dtype=label_dtype(num_classes - 1))
    for value in values.tolist():
        out[raw == value] = table[int(value)]
    return check_not_empty(out, path)


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
