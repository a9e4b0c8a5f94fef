"""Windowed reads of large rasters (scenes of 10,000+ px that should not be loaded as float32).

:func:`open_raster` returns a :class:`WindowedRaster`: ``shape`` ``(C, H, W)``, the stored
``dtype``, and ``raster[:, y0:y1, x0:x1]`` reading only that window, as float32 in [0, 1]
(optical, the scale decided once for the whole file by :func:`.checks.optical_to_unit`'s
rules) or as stored (``kind="raw"``).

How each format is read:

- uncompressed TIFF with contiguous pixel data: memory-mapped (``tifffile.memmap``); a
  window touches only its own pages of the file.
- compressed TIFF (deflate, LZW...) and PNG/JPEG: their codecs cannot decode a window alone
  here (Pillow decodes PNG/JPEG whole; tifffile needs ``zarr`` for windowed decoding of
  compressed tiles), so the file is decoded once and kept in its stored dtype (uint8: 1
  byte per pixel and band, a quarter of float32); windows are converted on demand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checks
from ._io import PIL_SUFFIXES, TIFF_SUFFIXES, _tiff_error, check_file, read_pil, read_tiff


class WindowedRaster:
    """A ``(C, H, W)`` raster read window by window; see :func:`open_raster`."""

    def __init__(self, path: Path, data: np.ndarray, channels_last: bool, kind: str, backend: str) -> None:
        self.path = path
        self._data = data  # (C, H, W) or (H, W, C) when channels_last, in the stored dtype
        self._channels_last = channels_last
        self.kind = kind
        self.backend = backend
        self.dtype = data.dtype
        if data.ndim == 2:
            self.shape = (1, *data.shape)
        elif channels_last:
            self.shape = (data.shape[2], data.shape[0], data.shape[1])
        else:
            self.shape = tuple(data.shape)
        if 0 in self.shape:
            raise ValueError(f"{path}: raster is empty (shape {self.shape}).")
        self._scale: float | None = None

    def __repr__(self) -> str:
        return f"WindowedRaster({str(self.path)!r}, shape={self.shape}, dtype={self.dtype}, backend={self.backend!r})"

    @property
    def ndim(self) -> int:
        return 3

    def raw(self, ys: slice, xs: slice) -> np.ndarray:
        """The stored pixels of a window, ``(C, h, w)``, without conversion."""
        d = self._data
        if d.ndim == 2:
            return np.asarray(d[ys, xs])[None]
        if self._channels_last:
            return np.moveaxis(np.asarray(d[ys, xs, :]), -1, 0)
        return np.asarray(d[:, ys, xs])

    def _unit_scale(self) -> float:
        """One divisor for the whole file (:func:`.checks.optical_scale` of the file's range)."""
        if self._scale is not None:
            return self._scale
        dt = self.dtype
        lo = hi = 0  # uint8, bool and unsupported dtypes: the divisor depends on the dtype alone
        if dt != np.uint8 and (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)):
            lo, hi = np.inf, -np.inf
            rows = max(1, 2**24 // max(1, self.shape[0] * self.shape[2]))  # ~16 M values per block
            for y in range(0, self.shape[1], rows):
                block = self.raw(slice(y, y + rows), slice(None))
                checks.check_finite(block, self.path, "optical image")
                lo, hi = min(lo, block.min().item()), max(hi, block.max().item())
        self._scale = checks.optical_scale(dt, lo, hi, self.path)
        return self._scale

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple) or len(key) != 3 or not all(isinstance(k, slice) for k in key):
            raise IndexError("index a WindowedRaster as raster[:, y0:y1, x0:x1] (three slices)")
        bands, ys, xs = key
        window = self.raw(ys, xs)[bands]
        if self.kind == "raw":
            return window
        return (window.astype(np.float32) / np.float32(self._unit_scale())).astype(np.float32)


def open_raster(path: str | Path, kind: str = "optical") -> WindowedRaster:
    """Open a (possibly very large) raster for windowed reads; see the module docstring.

    ``kind="optical"`` converts windows to float32 in [0, 1] with one scale for the whole file
    (8-bit / 255; 16-bit / 65535 or / 255 when the file holds only 8-bit values; float kept or
    / 255 -- the rules of :func:`.checks.optical_to_unit`, refusals included). ``kind="raw"``
    returns stored values. Damaged files raise a ``ValueError`` naming the file.
    """
    import tifffile

    if kind not in ("optical", "raw"):
        raise ValueError(f"kind must be 'optical' or 'raw', got {kind!r}")
    path = check_file(path, "raster")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, contiguous = series.axes, series.dataoffset is not None
        except Exception as e:
            raise _tiff_error(path, e) from e
        if contiguous and axes in ("YX", "YXS", "SYX", "CYX", "QYX"):
            data = tifffile.memmap(path, mode="r")
            return WindowedRaster(path, data, axes.endswith("S"), kind, "memmap")
        arr = read_tiff(path, whole_size_limit=False)[0]
        return WindowedRaster(path, arr, False, kind, "decoded")
    if suffix in PIL_SUFFIXES:
        arr = read_pil(path, palette_as_rgb=True)
        return WindowedRaster(path, arr, arr.ndim == 3, kind, "decoded")
    raise ValueError(f"{path}: unsupported raster type {suffix!r}; expected one of {TIFF_SUFFIXES + PIL_SUFFIXES}.")
