"""Read-time checks shared by every reader: one place for each decision.

Every reader calls these instead of repeating them, so a file is judged the same way
whichever dataset it belongs to. Each check either returns the (possibly converted)
array, warns with :class:`ReadConversionWarning` when it converts, or raises a
``ValueError`` that names the file, the problem and the fix.

========================  =================================================================
check                     decision
========================  =================================================================
:func:`optical_to_unit`   pixel scale from dtype and observed range -> float32 in [0, 1]
:func:`optical_scale`     ... the divisor alone, for a dtype and a range (windowed reads)
:func:`sar_to_db`         dB vs linear power, non-finite values, plausible dB range
:func:`check_finite`      NaN / inf refused (or counted as nodata where documented)
:func:`check_bands`       band count against the format's allowed counts, band names
:func:`mask_to_index`     index vs colour encoding of a mask, from what the file is
:func:`check_not_empty`   a decoded mask that is all ignore is an error
:func:`binary_mask`       0/1 vs 0/255 binary masks
:func:`label_dtype`       smallest unsigned integer type for decoded labels
========================  =================================================================
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..sample import IGNORE_INDEX


class ReadConversionWarning(UserWarning):
    """A reader converted a file's values (scale, dB, grey-as-RGB...) and says how."""


#: Plausible Sentinel-1 GRD backscatter range in dB for *finite* pixels. Real chips span
#: about -50..+30 dB (Sen1Floods11's sample: -47..26); outside this the file is not dB.
SAR_DB_PLAUSIBLE: tuple[float, float] = (-80.0, 50.0)
#: Fraction of mask pixels allowed to have a channel strictly between 64 and 191 (not a pure
#: colour even after JPEG-like noise) before a colour-coded mask is refused.
IMPURE_COLOUR_FRACTION = 0.25
#: ... and at least this many pixels (tiny masks with one noisy pixel are not judged by fraction).
IMPURE_COLOUR_MIN_PIXELS = 16
#: Largest image (pixels per band) read whole into memory; larger ones must be read by windows
#: (:func:`rslab.data.readers.open_raster`). ``None`` disables the check.
MAX_IMAGE_PIXELS: int | None = 400_000_000


def warn(message: str) -> None:
    warnings.warn(message, ReadConversionWarning, stacklevel=3)


def _where(path) -> str:
    return str(path) if path not in (None, "") else "<array>"


# ------------------------------------------------------------------------------- pixel values


def check_finite(arr: np.ndarray, path="", what: str = "image") -> np.ndarray:
    """Raise when ``arr`` holds NaN or +-inf (counts and first position in the message)."""
    arr = np.asarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(bad.sum()) - n_nan
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{_where(path)}: {what} has {n_nan} NaN and {n_inf} inf value(s) (first at index {first}); "
                "non-finite pixels would become wrong numbers downstream. Fill or mask them before use "
                "(e.g. np.nan_to_num with an explicit nodata value)."
            )
    return arr


def optical_to_unit(arr: np.ndarray, path="") -> np.ndarray:
    """Optical pixels -> float32 reflectance-like values in [0, 1], whatever the stored dtype.

    - ``bool``: 0/1; ``uint8``: / 255.
    - ``uint16``: / 65535, except when every value is <= 255 (8-bit data in a 16-bit file):
      / 255 with a warning.
    - signed integers: like ``uint16`` when non-negative, refused when negative.
    - float: NaN/inf refused; values in [0, 1] kept; values in [0, 255] with a maximum above 2
      are 8-bit values stored as float: / 255 with a warning; anything else (negative values,
      a maximum in (1, 2], or above 255) is refused with the observed range.
    """
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ValueError(f"{_where(path)}: image is empty (shape {arr.shape}).")
    lo = hi = 0  # uint8, bool and unsupported dtypes: the divisor depends on the dtype alone
    if arr.dtype != np.uint8 and (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        check_finite(arr, path, "optical image")
        lo, hi = arr.min().item(), arr.max().item()
    scale = optical_scale(arr.dtype, lo, hi, path)
    out = arr.astype(np.float32)
    return out if scale == 1.0 else out / np.float32(scale)


def optical_scale(dtype, lo, hi, path="") -> float:
    """The divisor :func:`optical_to_unit` applies to finite pixels of ``dtype`` ranging ``lo..hi``.

    Warns and refuses as described there; :class:`.windowed.WindowedRaster` calls it with a
    whole file's range to use one divisor for every window.
    """
    dtype, where = np.dtype(dtype), _where(path)
    if dtype == np.dtype(bool):
        return 1.0
    if dtype == np.uint8:
        return 255.0
    if np.issubdtype(dtype, np.integer):
        lo, hi = int(lo), int(hi)
        if lo < 0:
            raise ValueError(
                f"{where}: optical pixels of dtype {dtype} range {lo}..{hi}; negative values are not "
                "reflectance. Rescale to [0, 1] (or store 8/16-bit unsigned) before reading."
            )
        if hi <= 255:
            warn(f"{where}: {dtype} image holds only 0..{hi} (8-bit values in a wider type); scaled by 1/255.")
            return 255.0
        if hi > 65535:
            raise ValueError(
                f"{where}: optical pixels of dtype {dtype} reach {hi}, beyond 16 bits; rescale to [0, 1] first."
            )
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        lo, hi = float(lo), float(hi)
        if lo >= 0.0 and hi <= 1.0:
            return 1.0
        if lo >= 0.0 and 2.0 < hi <= 255.0:
            warn(f"{where}: float image ranges {lo:g}..{hi:g}, read as 8-bit values stored as float; scaled by 1/255.")
            return 255.0
        raise ValueError(
            f"{where}: float optical pixels range {lo:g}..{hi:g}; expected reflectance in [0, 1] or 8-bit "
            "values in [0, 255]. Rescale the image to [0, 1] before reading."
        )
    raise ValueError(
        f"{where}: cannot scale optical pixels of dtype {dtype} to [0, 1]; expected 8/16-bit integers or float."
    )


def sar_to_db(arr: np.ndarray, path="") -> np.ndarray:
    """SAR backscatter -> float32 dB (NaN = nodata), recognising linear power and non-finite values.

    - integer dtypes: refused (digital numbers, not dB; calibrate first).
    - ``-inf`` (10 log10 of zero power): nodata, set to NaN with a warning.
    - ``+inf``: refused. All NaN: refused (no valid pixel).
    - every finite value >= 0: linear power (dB of real scenes is mostly negative);
      converted with ``10 log10``, zeros becoming NaN (nodata), with a warning.
    - finite dB values outside :data:`SAR_DB_PLAUSIBLE`: refused with the observed range.
    Values already in dB come back unchanged (as float32).
    """
    arr = np.asarray(arr)
    where = _where(path)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{where}: SAR must be float backscatter in dB, got dtype {arr.dtype} (digital numbers?); "
            "calibrate to sigma0 in dB first."
        )
    out = arr.astype(np.float32, copy=False)
    if np.isposinf(out).any():
        raise ValueError(f"{where}: SAR has {int(np.isposinf(out).sum())} +inf value(s); not a valid backscatter.")
    neg_inf = np.isneginf(out)
    if neg_inf.any():
        warn(f"{where}: {int(neg_inf.sum())} SAR pixel(s) are -inf dB (zero power); treated as nodata (NaN).")
        out = np.where(neg_inf, np.float32(np.nan), out)
    finite = np.isfinite(out)
    if not finite.any():
        raise ValueError(f"{where}: SAR has no finite pixel (all NaN/nodata); nothing to read.")
    values = out[finite]
    if values.min() >= 0.0:
        zeros = int((values == 0).sum())
        warn(
            f"{where}: SAR values are all >= 0 ({values.min():g}..{values.max():g}): read as linear power and "
            f"converted to dB with 10*log10" + (f"; {zeros} zero pixel(s) set to NaN (nodata)." if zeros else ".")
        )
        with np.errstate(divide="ignore"):
            out = np.where(out > 0, 10.0 * np.log10(np.where(out > 0, out, 1.0)), np.float32(np.nan))
        out = out.astype(np.float32)
        values = out[np.isfinite(out)]
        if values.size == 0:
            raise ValueError(f"{where}: SAR is all zero power; nothing to read.")
    lo, hi = float(values.min()), float(values.max())
    if lo < SAR_DB_PLAUSIBLE[0] or hi > SAR_DB_PLAUSIBLE[1]:
        raise ValueError(
            f"{where}: SAR values range {lo:g}..{hi:g} dB, outside the plausible {SAR_DB_PLAUSIBLE} for "
            "Sentinel-1 backscatter; is it amplitude, DN or a scaled product? Convert to dB first."
        )
    return out


def check_bands(n_bands: int, allowed: Sequence[int], path="", what: str = "image",
                names: Sequence[str] = ()) -> None:
    """Refuse a band count the format does not define (grey, 2-band, 4-band where 3 are expected)."""
    if n_bands not in tuple(allowed):
        expect = " or ".join(str(a) for a in allowed)
        named = f" ({', '.join(names)})" if names else ""
        hint = " It looks like a greyscale image." if n_bands == 1 else ""
        raise ValueError(f"{_where(path)}: {what} must have {expect} bands{named}, got {n_bands}.{hint}")


def check_size(shape: Sequence[int], path="", what: str = "image") -> None:
    """Refuse empty rasters and rasters too large to read whole (see :data:`MAX_IMAGE_PIXELS`)."""
    h, w = int(shape[-2]), int(shape[-1])
    if h == 0 or w == 0:
        raise ValueError(f"{_where(path)}: {what} is empty ({h}x{w} pixels).")
    if MAX_IMAGE_PIXELS is not None and h * w > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{_where(path)}: {what} is {h}x{w} = {h * w} pixels, above the whole-image limit "
            f"rslab.data.readers.checks.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS}. Read it by windows with "
            "rslab.data.readers.open_raster(path), or raise the limit if the file is trusted."
        )


# ------------------------------------------------------------------------------------ masks


def label_dtype(max_id: int) -> type:
    """Smallest unsigned integer type holding ids up to ``max_id`` (and :data:`IGNORE_INDEX`)."""
    top = max(int(max_id), IGNORE_INDEX)
    if top <= np.iinfo(np.uint8).max:
        return np.uint8
    if top <= np.iinfo(np.uint16).max:
        return np.uint16
    return np.uint32


def is_grey_rgb(rgb: np.ndarray) -> bool:
    """True when an (H, W, 3) array has three identical channels (a grey image saved as RGB)."""
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def check_pure_colours(rgb: np.ndarray, path="") -> None:
    """Refuse an (H, W, 3) 'colour code' whose pixels are mostly not near-pure colours.

    Colour-coded masks use channels of 0 or 255; compression noise moves them a little. A
    channel between 64 and 191 on more than :data:`IMPURE_COLOUR_FRACTION` of the pixels means
    the file is a photo, a grey index mask or a blended visualisation, not a colour code.
    """
    impure = ((rgb > 63) & (rgb < 192)).any(axis=-1)
    frac = float(impure.mean()) if impure.size else 0.0
    if frac > IMPURE_COLOUR_FRACTION and int(impure.sum()) >= IMPURE_COLOUR_MIN_PIXELS:
        ys, xs = np.nonzero(impure)
        example = tuple(int(v) for v in rgb[ys[0], xs[0]])
        raise ValueError(
            f"{_where(path)}: {100 * frac:.1f}% of the mask's pixels are not pure colours (e.g. {example} at "
            f"row {int(ys[0])}, col {int(xs[0])}); a colour-coded mask uses channels of 0 or 255. Is this the "
            "image instead of the mask, or a blended visualisation?"
        )


def mask_to_index(raw: np.ndarray, path="", *, kind: str, palette: np.ndarray | None = None,
                  colours: Sequence[tuple[int, int, int]] = ()) -> tuple[np.ndarray, str]:
    """Decide how a mask file is encoded, from what the file is, and return ``(array, form)``.

    ``raw``: ``(H, W)`` (single band or palette indices) or ``(H, W, 3)``. ``palette``: the
    file's palette as ``(n, 3)`` uint8 when it is a palette image. ``kind``: what the format
    allows -- ``"index"`` (class ids), ``"colour"`` (RGB colour code, ``colours`` the table), or
    ``"either"``. Returns the array to decode and ``form`` = ``"index"`` or ``"colour"``:

    - palette image: decoded by colour when the colours of the indices it uses are all in the
      dataset's table (``"colour"``/``"either"``); by index otherwise (``"index"``/``"either"``);
      a colour-only format with foreign palette colours is refused naming them.
    - three identical channels (grey saved as RGB): an index mask (first channel) with a
      warning when the format allows indices; for a colour-only format a grey image whose
      values are not all 0/255 is refused.
    - single band for a colour-only format: refused. Colour image for an index-only format:
      refused. A ``"colour"`` result goes to :func:`.labels.decode_rgb_labels`, which refuses
      impure (:func:`check_pure_colours`) and unknown colours.
    """
    where = _where(path)
    raw = np.asarray(raw)
    table = {tuple(int(v) for v in c) for c in colours}
    if palette is not None and raw.ndim == 2:
        used = np.unique(raw)
        pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        used_colours = {tuple(int(v) for v in pal[i]) if i < len(pal) else (0, 0, 0) for i in used}
        if kind in ("colour", "either") and table and used_colours <= table | {(0, 0, 0)}:
            padded = np.zeros((max(256, len(pal)), 3), dtype=np.uint8)
            padded[: len(pal)] = pal
            return padded[raw], "colour"
        if kind == "colour":
            foreign = sorted(used_colours - table - {(0, 0, 0)})
            raise ValueError(
                f"{where}: palette mask uses colour(s) {foreign[:10]} that are not in the dataset's colour table "
                f"{sorted(table)}; re-save it with the official colours."
            )
        return raw, "index"
    if raw.ndim == 2:
        if kind == "colour":
            raise ValueError(
                f"{where}: this dataset's masks are RGB colour-coded, but the file is a single-band image "
                f"(values {np.unique(raw)[:10].tolist()}); pass the colour-coded mask, not a class-id image."
            )
        return raw, "index"
    if raw.ndim == 3 and raw.shape[-1] == 3:
        if is_grey_rgb(raw):
            grey = raw[..., 0]
            values = np.unique(grey)
            pure = bool(np.isin(values, (0, 255)).all())
            if kind == "index" or (kind == "either" and not pure):
                warn(f"{where}: mask has three identical channels (a grey index mask saved as RGB); "
                     "decoded as a single-band index mask.")
                return grey, "index"
            if kind == "colour" and not pure:
                raise ValueError(
                    f"{where}: mask is a grey image saved as RGB (values {values[:10].tolist()}), not a colour "
                    "code; this dataset needs its RGB colour-coded masks."
                )
            return raw, "colour"
        if kind == "index":
            raise ValueError(
                f"{where}: this dataset's masks are single-band class ids, but the file is an RGB colour image; "
                "pass the index mask (or convert the colours to ids first)."
            )
        return raw, "colour"  # its colours are checked by the decoder (labels.decode_rgb_labels)
    raise ValueError(f"{where}: mask must be (H, W) or (H, W, 3), got shape {raw.shape}.")


def check_not_empty(labels: np.ndarray, path="", ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A decoded mask that is nothing but ``ignore_index`` is an error, never an empty label."""
    if labels.size and (labels == ignore_index).all():
        raise ValueError(
            f"{_where(path)}: the mask decodes to nothing but ignore ({ignore_index}) over all {labels.size} "
            "pixels; wrong encoding (e.g. a 0/1 mask where 0/255 or class ids are expected) or an empty file?"
        )
    return labels


def binary_mask(raw: np.ndarray, path="", threshold: float = 50) -> np.ndarray:
    """A binary foreground mask from 0/255 (threshold ``> threshold``) or 0/1 files.

    A mask whose values are all in {0, 1} (and holds 1) is a 0/1 mask: read ``== 1`` with a
    warning, never thresholded into an empty mask. Values outside 0..255 are refused.
    """
    raw = np.asarray(raw)
    where = _where(path)
    if np.issubdtype(raw.dtype, np.floating):
        check_finite(raw, path, "mask")
    if raw.size == 0:
        raise ValueError(f"{where}: mask is empty (shape {raw.shape}).")
    lo, hi = float(raw.min()), float(raw.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"{where}: binary mask values range {lo:g}..{hi:g}; expected 0/255 (or 0/1).")
    if hi == 1 and np.isin(raw, (0, 1)).all():
        warn(f"{where}: binary mask holds 0/1 (not 0/255); read 1 as foreground.")
        return raw == 1
    return raw > threshold


def describe_colour_errors(rgb: np.ndarray, bad_mask: np.ndarray, path, allowed: str) -> ValueError:
    """Error naming each unknown colour, its pixel count and the file."""
    colours, counts = np.unique(rgb[bad_mask].reshape(-1, 3), axis=0, return_counts=True)
    order = np.argsort(-counts)
    parts = [f"{tuple(int(v) for v in colours[i])} x {int(counts[i])} px" for i in order[:10]]
    more = f" (and {len(order) - 10} more colours)" if len(order) > 10 else ""
    return ValueError(
        f"{_where(path)}: {int(bad_mask.sum())} pixel(s) have colours not in the dataset's table: "
        f"{', '.join(parts)}{more}; allowed: {allowed}. Is the encoding right?"
    )
