"""Low-level file reading shared by the dataset readers.

TIFF goes through ``tifffile`` (multi-band, int16/float32, GeoTIFF tags); PNG and
JPEG through Pillow. Every failure becomes a ``FileNotFoundError`` or ``ValueError``
that names the file and the problem, so a broken dataset folder is easy to fix.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .checks import check_size, optical_to_unit

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES

# GeoTIFF tag ids (GeoTIFF 1.0 spec, section 2.6).
_TAG_MODEL_PIXEL_SCALE = 33550
_TAG_MODEL_TIEPOINT = 33922
_TAG_GEO_KEY_DIRECTORY = 34735
_KEY_GT_MODEL_TYPE = 1024  # 1 = projected, 2 = geographic (lat/lon)
_KEY_RASTER_TYPE = 1025  # 1 = PixelIsArea (tiepoint at pixel corner), 2 = PixelIsPoint (centre)


def check_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise FileNotFoundError(f"{what} not found: {path}{hint}; check the dataset root and file name.")
    return path


@contextmanager
def _tifffile_warnings() -> Iterator[list[logging.LogRecord]]:
    """Collect ``tifffile``'s logged warnings during one read (it logs, not raises, some damage)."""
    handler = logging.handlers.BufferingHandler(capacity=1_000_000)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield handler.buffer
    finally:
        logger.removeHandler(handler)


# tifffile log messages that mean the file is damaged (the array would be incomplete or wrong)
_TIFF_DAMAGE = ("invalid page offset", "failed to reshape", "truncat", "corrupt", "missing required tags",
                "invalid tag", "incompatible keyframe")


def read_tiff(path: str | Path, whole_size_limit: bool = True) -> tuple[np.ndarray, dict]:
    """Read a TIFF as ``(C, H, W)`` plus its GeoTIFF georeference (may be empty).

    Single-band files come back as ``(1, H, W)``; pixel-interleaved (``YXS``) files
    are transposed to channels-first. The dict holds ``pixel_scale``, ``tiepoint``,
    ``geo_keys`` (GeoKeyDirectory as ``{key_id: value}``) when present.

    Damaged files (truncated or corrupt deflate/LZW segments, broken page chains), files whose
    codec is not installed, and rasters above :data:`.checks.MAX_IMAGE_PIXELS` (read those with
    :func:`open_raster`; it passes ``whole_size_limit=False``) raise one ``ValueError`` naming the
    file, the problem and the fix.
    """
    import tifffile

    path = check_file(path, "TIFF file")
    try:
        with _tifffile_warnings() as log, tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError("no image data (no series)")
            series = tif.series[0]
            if whole_size_limit:
                check_size(series.shape[-3:-1] if series.axes.endswith("S") else series.shape[-2:], path, "TIFF")
            arr = series.asarray()
            axes = series.axes
            tags = tif.pages[0].tags
            geo = {}
            if _TAG_MODEL_PIXEL_SCALE in tags:
                geo["pixel_scale"] = tuple(float(v) for v in tags[_TAG_MODEL_PIXEL_SCALE].value)
            if _TAG_MODEL_TIEPOINT in tags:
                geo["tiepoint"] = tuple(float(v) for v in tags[_TAG_MODEL_TIEPOINT].value)
            if _TAG_GEO_KEY_DIRECTORY in tags:
                geo["geo_keys"] = _parse_geo_keys(tags[_TAG_GEO_KEY_DIRECTORY].value)
    except MemoryError:
        raise
    except ValueError as e:
        if str(e).startswith(str(path)):  # our own size check
            raise
        raise _tiff_error(path, e) from e
    except Exception as e:  # zlib.error, KeyError (codec), RuntimeError, TiffFileError...
        raise _tiff_error(path, e) from e
    messages = [r.getMessage() for r in log]
    damage = [m for m in messages if any(k in m.lower() for k in _TIFF_DAMAGE)]
    if damage:
        raise ValueError(f"{path}: damaged TIFF ({'; '.join(damage[:3])}); the file is truncated or corrupt, "
                         "download or copy it again.")
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and axes.endswith("S"):  # (H, W, C) pixel-interleaved
        arr = np.moveaxis(arr, -1, 0)
    elif arr.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D or 3-D raster, got shape {arr.shape} (axes {axes!r}).")
    return arr, geo


def _tiff_error(path: Path, e: Exception) -> ValueError:
    text = f"{type(e).__name__}: {e}"
    if "imagecodecs" in str(e):
        fix = "install the codec package: pip install imagecodecs"
    elif "decompress" in str(e).lower() or "truncat" in str(e).lower() or "failed to read" in str(e).lower() \
            or "corrupt" in str(e).lower():
        fix = "the file is truncated or corrupt; download or copy it again"
    else:
        fix = "is it a valid (Geo)TIFF?"
    return ValueError(f"could not read TIFF {path}: {text}; {fix}.")


def _parse_geo_keys(directory) -> dict[int, int]:
    """GeoKeyDirectory -> ``{key_id: value}`` for keys stored inline (location 0).

    Layout (GeoTIFF spec 2.4): header (version, revision, minor, n_keys) then n_keys
    entries of (key_id, tiff_tag_location, count, value_or_offset).
    """
    values = [int(v) for v in directory]
    if len(values) < 4:
        return {}
    n_keys = values[3]
    keys = {}
    for i in range(n_keys):
        entry = values[4 + 4 * i : 8 + 4 * i]
        if len(entry) < 4:
            break
        key_id, location, _count, value = entry
        if location == 0:
            keys[key_id] = value
    return keys


def bounds_from_geotiff(geo: dict, height: int, width: int) -> tuple[float, float, float, float] | None:
    """``(west, south, east, north)`` in degrees from ModelPixelScale + ModelTiepoint.

    Returned only when the GeoKeyDirectory says the CRS is geographic
    (GTModelTypeGeoKey = 2), because :class:`Sample.bounds` is in degrees. The datum
    is not converted (non-WGS 84 geographic CRSs differ from EPSG:4326 by at most
    ~100 m). Projected (UTM etc.) or CRS-less files give ``None``; use
    :func:`native_extent` for their extent in file units.
    """
    extent = native_extent(geo, height, width)
    if extent is None or geo.get("geo_keys", {}).get(_KEY_GT_MODEL_TYPE) != 2:
        return None
    return extent


def native_extent(geo: dict, height: int, width: int) -> tuple[float, float, float, float] | None:
    """``(min_x, min_y, max_x, max_y)`` in the file's own CRS units, or ``None``.

    The tiepoint ``(i, j, k, x, y, z)`` ties raster pixel ``(i, j)`` to model point
    ``(x, y)``; with PixelIsArea that is the pixel's top-left corner (PixelIsPoint
    ties the pixel centre and is shifted by half a pixel). Rows go south,
    so ``max_y`` is the tiepoint's y and ``min_y = max_y - height * scale_y``.
    """
    if "pixel_scale" not in geo or "tiepoint" not in geo:
        return None
    sx, sy = geo["pixel_scale"][:2]
    i, j, _k, x, y = geo["tiepoint"][:5]
    if sx <= 0 or sy <= 0:
        return None
    if geo.get("geo_keys", {}).get(_KEY_RASTER_TYPE) == 2:
        # PixelIsPoint: the tiepoint is the pixel centre; move to its corner.
        i, j = i + 0.5, j + 0.5
    west = x - i * sx
    north = y + j * sy
    return (west, north - height * sy, west + width * sx, north)


def read_pil(path: str | Path, palette_as_rgb: bool = False, with_palette: bool = False):
    """Read PNG/JPEG with Pillow: ``(H, W)`` for single-band/palette, ``(H, W, C)`` otherwise.

    Palette ("P") images return their palette *indices* (mmseg label PNGs are often
    palette images) unless ``palette_as_rgb``; 16-bit greyscale keeps its values. With
    ``with_palette`` the result is ``(array, palette)``, ``palette`` an ``(n, 3)`` uint8 array for
    palette images and ``None`` otherwise. Truncated files and images above Pillow's
    decompression-bomb limit raise a ``ValueError`` naming the file and the fix.
    """
    from PIL import Image, UnidentifiedImageError

    path = check_file(path, "image file")
    palette = None
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P" and palette_as_rgb:
                im = im.convert("RGB")
            elif im.mode == "P":
                palette = np.asarray(im.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
            elif im.mode == "RGBA":
                im = im.convert("RGB")
            elif im.mode in ("LA", "PA"):
                im = im.getchannel(0)
            elif im.mode == "CMYK" or im.mode == "YCbCr":
                im = im.convert("RGB")
            arr = np.array(im)
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"could not read image {path}: {e} If the file is trusted, raise Pillow's limit first "
            "(PIL.Image.MAX_IMAGE_PIXELS = None, or a larger number of pixels)."
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        fix = "the file is truncated; copy or download it again" if "truncated" in str(e) else \
            "is it a valid PNG/JPEG file?"
        raise ValueError(f"could not read image {path}: {e}; {fix}") from e
    if arr.ndim >= 2 and 0 in arr.shape[:2]:
        raise ValueError(f"{path}: image is empty ({arr.shape[0]}x{arr.shape[1]} pixels).")
    return (arr, palette) if with_palette else arr


def read_raster(path: str | Path, palette_as_rgb: bool = False) -> np.ndarray:
    """Any supported image as ``(C, H, W)`` (TIFF via tifffile, others via Pillow)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return read_tiff(path)[0]
    if suffix in PIL_SUFFIXES:
        arr = read_pil(path, palette_as_rgb)
        return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    raise ValueError(f"{path}: unsupported image type {suffix!r}; expected one of {IMAGE_SUFFIXES}.")


def read_optical(path: str | Path) -> np.ndarray:
    """An 8/16-bit (or float) image file -> ``(C, H, W)`` float32 in [0, 1]; scale rules:
    :func:`.checks.optical_to_unit`."""
    return optical_to_unit(read_raster(path, palette_as_rgb=True), path)


def read_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A mask file as ``(H, W)`` or ``(H, W, 3)`` plus its palette (``(n, 3)``) or ``None``.

    Only the file decides the form: palette PNGs keep their indices (and hand back the palette),
    single-band files are ``(H, W)``, 3/4-band files ``(H, W, 3)`` (a 4th alpha band dropped);
    two bands are refused.
    """
    path = Path(path)
    palette = None
    if path.suffix.lower() in PIL_SUFFIXES:
        arr, palette = read_pil(path, with_palette=True)
    else:
        arr = read_raster(path)  # TIFF (or an unsupported-type error)
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    if arr.ndim == 3:
        if arr.shape[-1] == 4:
            arr = arr[..., :3]
        if arr.shape[-1] != 3:
            raise ValueError(f"{path}: mask has {arr.shape[-1]} bands; expected 1 (class ids) or 3 (RGB colour code).")
    return arr, palette


def check_same_size(image_hw: tuple[int, int], other_hw: tuple[int, int], image_path, other_path) -> None:
    if tuple(image_hw) != tuple(other_hw):
        raise ValueError(
            f"size mismatch: {image_path} is {image_hw[0]}x{image_hw[1]} (HxW) but {other_path} is "
            f"{other_hw[0]}x{other_hw[1]}; image and mask must be co-registered at the same size."
        )


def unknown_values_error(path, values, allowed: str, counts=None) -> ValueError:
    values = [int(v) if np.ndim(v) == 0 else tuple(int(x) for x in v) for v in values]
    pairs = sorted(zip(values, counts if counts is not None else [None] * len(values)))
    shown = [str(v) for v, _ in pairs[:20]]
    more = f" (and {len(pairs) - 20} more)" if len(pairs) > 20 else ""
    if counts is not None:
        more += " with " + ", ".join(f"{c} px" for _, c in pairs[:20]) + " respectively"
    hint = ""
    if set(values) <= {0, 1, 255}:
        hint = " It looks like a binary 0/255 (or 0/1) mask, not this dataset's class ids."
    return ValueError(f"{path}: unknown label value(s) [{', '.join(shown)}]{more}; allowed: {allowed}. "
                      f"Is the encoding right?{hint}")
