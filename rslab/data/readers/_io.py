"""Low-level file reading shared by the dataset readers.

TIFF goes through ``tifffile`` (multi-band, int16/float32, GeoTIFF tags); PNG and
JPEG through Pillow. Every failure becomes a ``FileNotFoundError`` or ``ValueError``
that names the file and the problem, so a broken dataset folder is easy to fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


def read_tiff(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read a TIFF as ``(C, H, W)`` plus its GeoTIFF georeference (may be empty).

    Single-band files come back as ``(1, H, W)``; pixel-interleaved (``YXS``) files
    are transposed to channels-first. The dict holds ``pixel_scale``, ``tiepoint``,
    ``geo_keys`` (GeoKeyDirectory as ``{key_id: value}``) when present.
    """
    import tifffile

    path = check_file(path, "TIFF file")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
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
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as e:
        raise ValueError(f"could not read TIFF {path}: {e}; is it a valid (Geo)TIFF?") from e
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and axes.endswith("S"):  # (H, W, C) pixel-interleaved
        arr = np.moveaxis(arr, -1, 0)
    elif arr.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D or 3-D raster, got shape {arr.shape} (axes {axes!r}).")
    return arr, geo


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


def read_pil(path: str | Path, palette_as_rgb: bool = False) -> np.ndarray:
    """Read PNG/JPEG with Pillow: ``(H, W)`` for single-band/palette, ``(H, W, C)`` otherwise.

    Palette ("P") images return their palette *indices* (mmseg label PNGs are often
    palette images) unless ``palette_as_rgb``; 16-bit greyscale keeps its values.
    """
    from PIL import Image, UnidentifiedImageError

    path = check_file(path, "image file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P" and palette_as_rgb:
                im = im.convert("RGB")
            elif im.mode == "RGBA":
                im = im.convert("RGB")
            elif im.mode in ("LA", "PA"):
                im = im.getchannel(0)
            elif im.mode == "CMYK" or im.mode == "YCbCr":
                im = im.convert("RGB")
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"could not read image {path}: {e}; is it a valid PNG/JPEG file?") from e
    return arr


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


def read_label_raster(path: str | Path) -> np.ndarray:
    """A label image as ``(H, W)`` (single band) or ``(3, H, W)`` (RGB colour code)."""
    arr = read_raster(path)
    if arr.shape[0] == 1:
        return arr[0]
    if arr.shape[0] >= 3:
        return arr[:3]
    raise ValueError(f"{path}: label image has {arr.shape[0]} bands; expected 1 (class ids) or 3 (RGB colour code).")


def to_unit_float(arr: np.ndarray, path: str | Path = "") -> np.ndarray:
    """Integer image -> float32 in [0, 1] by its dtype's range (uint8 / 255, uint16 / 65535)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)
    raise ValueError(
        f"{path}: cannot scale image of dtype {arr.dtype} to [0, 1]; expected 8/16-bit unsigned or float pixels."
    )


def read_optical(path: str | Path) -> np.ndarray:
    """An 8/16-bit image file -> ``(C, H, W)`` float32 in [0, 1]."""
    return to_unit_float(read_raster(path, palette_as_rgb=True), path)


def check_same_size(image_hw: tuple[int, int], other_hw: tuple[int, int], image_path, other_path) -> None:
    if tuple(image_hw) != tuple(other_hw):
        raise ValueError(
            f"size mismatch: {image_path} is {image_hw[0]}x{image_hw[1]} (HxW) but {other_path} is "
            f"{other_hw[0]}x{other_hw[1]}; image and mask must be co-registered at the same size."
        )


def unknown_values_error(path, values, allowed: str) -> ValueError:
    values = sorted({int(v) if np.ndim(v) == 0 else tuple(int(x) for x in v) for v in values})
    shown = values[:20]
    more = f" (and {len(values) - 20} more)" if len(values) > 20 else ""
    return ValueError(f"{path}: unknown label value(s) {shown}{more}; allowed: {allowed}. Is the encoding right?")
