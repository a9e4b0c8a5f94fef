"""Single-scene readers: DeepGlobe Land Cover and Sen1Floods11 chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..sample import Sample
from ._io import (
    bounds_from_geotiff,
    check_file,
    check_same_size,
    native_extent,
    read_mask,
    read_optical,
    read_tiff,
)
from .checks import check_bands, check_finite, mask_to_index, sar_to_db, warn
from .labels import DEEPGLOBE_CLASSES, DEEPGLOBE_COLOURS, SEN1FLOODS11_CLASSES, decode_deepglobe, decode_sen1floods11

#: Sentinel-2 L1C band order of Sen1Floods11's S2Hand chips.
S2_BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
#: Scale of Sentinel-2 L1C digital numbers to top-of-atmosphere reflectance.
S2_REFLECTANCE_SCALE = 10000.0


def read_deepglobe(sat_path: str | Path, mask_path: str | Path | None = None) -> Sample:
    """One DeepGlobe Land Cover scene (``*_sat.jpg`` + optional ``*_mask.png``).

    ``optical``: (3, H, W) float32 RGB in [0, 1] (8-bit / 255), 0.5 m GSD, usually
    2448 x 2448. ``labels``: RGB colour code thresholded per channel at 128 ->
    ids in :data:`DEEPGLOBE_CLASSES` order: urban (0,255,255) 0, agriculture
    (255,255,0) 1, rangeland (255,0,255) 2, forest (0,255,0) 3, water (0,0,255) 4,
    barren (255,255,255) 5; unknown (0,0,0) -> 255 (ignore). Labels are uint8.

    Refused: images that are not 3-band, single-band or grey-as-RGB masks (not a colour code),
    palette masks with foreign colours, masks that are mostly not pure colours, colours outside
    the table (named with their pixel counts), and masks that are all "unknown".
    """
    sat_path = check_file(sat_path, "DeepGlobe satellite image")
    optical = read_optical(sat_path)
    check_bands(optical.shape[0], (3,), sat_path, "DeepGlobe satellite image (a 3-band RGB image)", ("R", "G", "B"))
    labels = None
    if mask_path is not None:
        mask_path = check_file(mask_path, "DeepGlobe mask")
        raw, palette = read_mask(mask_path)
        check_same_size(optical.shape[1:], raw.shape[:2], sat_path, mask_path)
        raw, _ = mask_to_index(raw, mask_path, kind="colour", palette=palette, colours=DEEPGLOBE_COLOURS)
        labels = decode_deepglobe(raw, mask_path)
    return Sample(
        optical=optical,
        labels=labels,
        meta={
            "source": str(sat_path),
            "label_source": str(mask_path) if mask_path is not None else None,
            "dataset": "deepglobe_landcover",
            "class_names": DEEPGLOBE_CLASSES,
            "gsd_m": 0.5,
            "bands": ("R", "G", "B"),
        },
    )


def read_sen1floods11(
    s1_path: str | Path,
    s2_path: str | Path | None = None,
    label_path: str | Path | None = None,
) -> Sample:
    """One Sen1Floods11 hand-labelled chip (``*_S1Hand.tif`` [+ ``*_S2Hand.tif``, ``*_LabelHand.tif``]).

    - ``sar``: S1Hand, float32 (2, H, W) backscatter in dB, bands (VV, VH), kept as
      stored; NaN is the product's nodata and stays NaN (see :mod:`rslab.data.sar`).
    - ``optical``: S2Hand, 13 Sentinel-2 L1C bands (:data:`S2_BANDS`) stored as int16
      TOA reflectance x 10000 -> float32 / 10000, all 13 bands. Not clipped: bright
      clouds can exceed 1.0. Use :func:`s2_rgb` for a display RGB.
    - ``labels``: LabelHand int16: -1 nodata -> 255 (ignore), 0 not water, 1 water
      (:data:`SEN1FLOODS11_CLASSES`).
    - ``bounds``: (west, south, east, north) in degrees from the GeoTIFF's
      ModelPixelScale + ModelTiepoint (EPSG:4326 chips); ``meta["crs_extent"]`` holds
      the extent in the file's own units when the CRS is projected.

    All given files must be co-registered at the same size. Checks (:mod:`.checks`): S1 that
    is linear power (all values >= 0) is converted to dB with a warning, ``-inf`` becomes NaN
    with a warning, ``+inf``, all-NaN, integer DN and implausible dB ranges are refused; S2 must
    have 13 bands, integer DN are / 10000, float reflectance is kept (float DN above 100 are
    / 10000 with a warning), NaN/inf are refused; labels outside -1/0/1 (e.g. a 0/255 mask)
    and all-nodata labels are refused.
    """
    s1_path = check_file(s1_path, "Sen1Floods11 S1Hand file")
    sar, geo = read_tiff(s1_path)
    check_bands(sar.shape[0], (2,), s1_path, "S1Hand SAR chip", ("VV", "VH in dB"))
    sar = sar_to_db(sar, s1_path)
    hw = sar.shape[1:]
    meta: dict = {"source": str(s1_path), "dataset": "sen1floods11", "class_names": SEN1FLOODS11_CLASSES,
                  "gsd_m": 10.0, "sar_bands": ("VV", "VH")}

    optical = None
    if s2_path is not None:
        s2_path = check_file(s2_path, "Sen1Floods11 S2Hand file")
        s2, _ = read_tiff(s2_path)
        check_bands(s2.shape[0], (len(S2_BANDS),), s2_path, "S2Hand optical chip", S2_BANDS)
        check_same_size(hw, s2.shape[1:], s1_path, s2_path)
        optical = _s2_reflectance(s2, s2_path)
        meta.update(optical_source=str(s2_path), bands=S2_BANDS)

    labels = None
    if label_path is not None:
        label_path = check_file(label_path, "Sen1Floods11 LabelHand file")
        raw, palette = read_mask(label_path)
        check_same_size(hw, raw.shape[:2], s1_path, label_path)
        raw, _ = mask_to_index(raw, label_path, kind="index", palette=palette)
        labels = decode_sen1floods11(raw, label_path)
        meta["label_source"] = str(label_path)

    extent = native_extent(geo, *hw)
    if extent is not None:
        meta["crs_extent"] = extent
    return Sample(optical=optical, sar=sar, labels=labels, bounds=bounds_from_geotiff(geo, *hw), meta=meta)


def _s2_reflectance(s2: np.ndarray, path) -> np.ndarray:
    """S2Hand pixels -> float32 TOA reflectance (int16 DN / 10000; float checked and kept)."""
    if np.issubdtype(s2.dtype, np.integer):
        if s2.size and s2.min() < 0:
            raise ValueError(f"{path}: S2Hand has negative digital numbers (min {int(s2.min())}); L1C DN are >= 0.")
        return s2.astype(np.float32) / S2_REFLECTANCE_SCALE
    check_finite(s2, path, "S2Hand optical chip")
    hi = float(s2.max()) if s2.size else 0.0
    if hi > 100.0:
        warn(f"{path}: float S2Hand values reach {hi:g}: read as digital numbers and divided by "
             f"{S2_REFLECTANCE_SCALE:g}.")
        return (s2.astype(np.float32) / S2_REFLECTANCE_SCALE).astype(np.float32)
    return s2.astype(np.float32)


def s2_rgb(optical: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0)) -> np.ndarray:
    """Display RGB (3, H, W) in [0, 1] from 13-band Sentinel-2: bands B4, B3, B2 (ids 3, 2, 1).

    Each band is stretched linearly between its own 2nd and 98th percentile (NaN
    ignored) and clipped, which gives a natural-looking picture of TOA reflectance.
    """
    optical = np.asarray(optical)
    if optical.ndim != 3 or optical.shape[0] != len(S2_BANDS):
        raise ValueError(f"s2_rgb expects (13, H, W) Sentinel-2 bands, got shape {optical.shape}.")
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    rgb = optical[[3, 2, 1]].astype(np.float32)
    out = np.empty_like(rgb)
    for c in range(3):
        band = rgb[c]
        if not np.isfinite(band).any():
            out[c] = 0.0
            continue
        lo, hi = np.nanpercentile(band, [lo_p, hi_p])
        out[c] = np.clip((band - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return np.nan_to_num(out, nan=0.0)


def find_sen1floods11_chip(folder: str | Path, chip_id: str | None = None) -> dict[str, Path]:
    """Locate the ``S1Hand`` / ``S2Hand`` / ``LabelHand`` files of one chip in ``folder``.

    Returns ``{"s1_path": ..., "s2_path": ..., "label_path": ...}`` (keys for missing
    files are left out) ready for ``read_sen1floods11(**paths)``. With no ``chip_id``
    the folder must contain exactly one chip.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Sen1Floods11 folder not found: {folder}")
    s1_files = sorted(folder.glob(f"{chip_id or '*'}_S1Hand.tif"))
    if not s1_files:
        raise FileNotFoundError(f"no {chip_id or '*'}_S1Hand.tif in {folder}")
    if len(s1_files) > 1:
        names = [p.name for p in s1_files[:5]]
        raise ValueError(f"{len(s1_files)} chips in {folder} ({names}...); pass chip_id to pick one.")
    stem = s1_files[0].name[: -len("_S1Hand.tif")]
    paths = {"s1_path": s1_files[0]}
    for key, suffix in (("s2_path", "_S2Hand.tif"), ("label_path", "_LabelHand.tif")):
        if (folder / f"{stem}{suffix}").is_file():
            paths[key] = folder / f"{stem}{suffix}"
    return paths
