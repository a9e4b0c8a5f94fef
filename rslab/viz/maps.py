"""Georeferenced scenes and predictions on an interactive map (leafmap, folium backend).

The image is embedded in the map as a PNG data URI and the basemap is off by default, so
nothing is fetched from a tile server; the saved HTML is one standalone file (the Leaflet
JavaScript itself still loads from a CDN when the file is opened in a browser).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from rslab.viz.palette import colorize_labels


def _check_bounds(bounds) -> tuple[float, float, float, float]:
    if bounds is None or len(bounds) != 4:
        raise ValueError(f"bounds must be (west, south, east, north) in degrees, got {bounds!r}; "
                         "synthetic and real samples carry them in sample.bounds.")
    west, south, east, north = (float(b) for b in bounds)
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ValueError(f"bounds must satisfy -180 <= west < east <= 180 and -90 <= south < north <= 90, "
                         f"got {bounds!r} (order is west, south, east, north).")
    return west, south, east, north


def to_rgba_uint8(image_or_labels: np.ndarray, tree=None, level: int | None = None) -> np.ndarray:
    """An image or a label map -> (H, W, 4) uint8 RGBA, ready to encode as PNG.

    Accepted: (H, W, 3|4) or (3|4, H, W) floats in [0, 1] or uint8; (H, W) integer labels
    (needs ``tree``; ignored pixels become transparent); (H, W) floats in [0, 1] (grey).
    """
    a = np.asarray(image_or_labels)
    if a.ndim == 2 and np.issubdtype(a.dtype, np.integer):
        if tree is None:
            raise ValueError("a 2-D integer array is a label map: pass tree= (and level=) to colour it.")
        return colorize_labels(a, tree, level, alpha=True)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"expected an image (H, W, 3|4), (3|4, H, W) or a label map (H, W), got shape {a.shape}.")
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.shape[-1] == 3:
        a = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    return a


def png_data_uri(rgba: np.ndarray) -> str:
    """(H, W, 3|4) uint8 -> ``data:image/png;base64,...``."""
    from PIL import Image

    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[-1] not in (3, 4):
        raise ValueError(f"expected a uint8 (H, W, 3|4) array, got {rgba.dtype} {rgba.shape}.")
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def scene_map(
    image_or_labels: np.ndarray,
    bounds: tuple[float, float, float, float],
    tree=None,
    level: int | None = None,
    name: str = "scene",
    opacity: float = 0.8,
    basemap: str | None = None,
    m: Any = None,
    max_size: int = 1024,
    height: int = 500,
):
    """Place a georeferenced image or prediction on a ``leafmap.foliumap.Map``.

    ``bounds`` is ``(west, south, east, north)`` in degrees. The array is encoded as a PNG
    data URI (downsampled by striding so its longer side is <= ``max_size``) and added as a
    folium ``ImageOverlay``. ``basemap=None`` (default) adds no tile layer, so the map works
    offline; pass e.g. ``"OpenStreetMap"`` when online. Pass ``m`` to add a further layer
    (say a prediction over the image) to an existing map. Returns the map; display it in a
    notebook by leaving it as the last expression of a cell.
    """
    import folium
    import leafmap.foliumap as leafmap

    west, south, east, north = _check_bounds(bounds)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}.")
    if max_size < 1:
        raise ValueError(f"max_size must be a positive number of pixels, got {max_size}.")
    rgba = to_rgba_uint8(image_or_labels, tree, level)
    step = int(np.ceil(max(rgba.shape[:2]) / max_size))
    rgba = np.ascontiguousarray(rgba[::step, ::step])  # striding keeps label colours exact

    if m is None:
        centre = ((south + north) / 2.0, (west + east) / 2.0)
        m = leafmap.Map(center=centre, zoom=14, tiles=basemap, height=height,
                        draw_control=False, measure_control=False)
    folium.raster_layers.ImageOverlay(
        image=png_data_uri(rgba),
        bounds=[[south, west], [north, east]],
        name=name,
        opacity=opacity,
    ).add_to(m)
    m.fit_bounds([[south, west], [north, east]])
    return m


def save_map_html(m, path: str | Path) -> Path:
    """Write the map as one standalone HTML file (parents created); returns the path."""
    if not hasattr(m, "save"):
        raise ValueError(f"m must be a folium/leafmap map (from scene_map), got {type(m).__name__}.")
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"path should end in .html, got {path}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    m.save(str(path))
    return path
