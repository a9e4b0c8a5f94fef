"""The ``Sample``: what every reader and the synthetic world return.

Field conventions (channels-first, float32 images):

- ``optical``: (C, H, W) float32 reflectance-like values in [0, 1]; C = 3 (RGB) or 4 (RGB+NIR)
  or 13 (Sentinel-2 bands, scaled by 1/10000). ``None`` when the source has no optical image.
- ``sar``: (2, H, W) float32 backscatter in dB, channels (VV, VH); NaN marks nodata.
  See :mod:`rslab.data.sar` for the clip range and normalisation. ``None`` when absent.
- ``labels``: (H, W) integer class ids (int64 from the synthetic world, uint8 from the real-data
  readers) in the sample's tree (leaf level for the synthetic
  world); ``ignore_index`` (255) marks pixels without a label.
- ``instances``: (H, W) int32 instance ids, 0 = no instance. ``None`` when unknown.
- ``caption``: one sentence describing the scene, or ``""``.
- ``referring``: list of :class:`ReferringExpression` (text + binary mask).
- ``bounds``: georeference ``(west, south, east, north)`` in degrees (EPSG:4326), or ``None``.
- ``meta``: free-form dict (source file, region style, seed, GSD in metres...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE_INDEX = 255


@dataclass
class ReferringExpression:
    text: str
    mask: np.ndarray  # (H, W) bool
    target_class: str = ""
    instance_id: int = 0


@dataclass
class Sample:
    optical: np.ndarray | None = None
    sar: np.ndarray | None = None
    labels: np.ndarray | None = None
    instances: np.ndarray | None = None
    caption: str = ""
    referring: list[ReferringExpression] = field(default_factory=list)
    bounds: tuple[float, float, float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the sample, checked consistent across the fields present."""
        shapes = {}
        for name in ("optical", "sar"):
            arr = getattr(self, name)
            if arr is not None:
                shapes[name] = tuple(arr.shape[-2:])
        for name in ("labels", "instances"):
            arr = getattr(self, name)
            if arr is not None:
                shapes[name] = tuple(arr.shape)
        if not shapes:
            raise ValueError("Sample has no image or label field; set optical, sar or labels.")
        distinct = set(shapes.values())
        if len(distinct) != 1:
            raise ValueError(f"Sample fields disagree in size: {shapes}; co-registered fields must share (H, W).")
        return distinct.pop()
