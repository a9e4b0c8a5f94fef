"""Readers for real remote-sensing datasets; each returns :class:`rslab.data.sample.Sample`.

=====================  ==========================================  ==========================
dataset                reader                                      label ids
=====================  ==========================================  ==========================
LoveDA                 ``MMSegFolder(root, split, "loveda")``      :data:`LOVEDA_CLASSES`
ISPRS Potsdam          ``MMSegFolder(root, split, "potsdam")``     :data:`ISPRS_CLASSES`
ISPRS Vaihingen        ``MMSegFolder(root, split, "vaihingen")``   :data:`ISPRS_CLASSES`
DeepGlobe Land Cover   ``read_deepglobe(sat_path, mask_path)``     :data:`DEEPGLOBE_CLASSES`
Sen1Floods11           ``read_sen1floods11(s1, s2, label)``        :data:`SEN1FLOODS11_CLASSES`
RRSIS-D (referring)    ``RRSISD(root, split)``                     binary mask per expression
RefSegRS (referring)   ``RefSegRS(root, split)``                   binary mask per expression
=====================  ==========================================  ==========================

Unlabelled pixels are :data:`~rslab.data.sample.IGNORE_INDEX` (255) everywhere; labels are
uint8. Every reader runs the same read-time checks (:mod:`.checks`): what each format accepts,
converts with a :class:`ReadConversionWarning` and refuses is listed in the book's "Data
formats" page. Large scenes: :func:`open_raster` reads windows.
:func:`real_samples_dir` finds the small real samples shipped beside the project.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checks import ReadConversionWarning
from .coco_mask import polygons_to_mask, rle_decode, rle_encode, segmentation_to_mask
from .labels import (
    DEEPGLOBE_CLASSES,
    DEEPGLOBE_COLOURS,
    ISPRS_CLASSES,
    ISPRS_COLOURS,
    LOVEDA_CLASSES,
    POTSDAM_CLASSES,
    SEN1FLOODS11_CLASSES,
    VAIHINGEN_CLASSES,
    decode_deepglobe,
    decode_isprs,
    decode_isprs_index,
    decode_isprs_rgb,
    decode_loveda,
    decode_rgb_labels,
    decode_sen1floods11,
)
from .mmseg import ENCODINGS, MMSegFolder
from .referring import RRSISD, RefSegRS
from .scenes import S2_BANDS, find_sen1floods11_chip, read_deepglobe, read_sen1floods11, s2_rgb
from .windowed import WindowedRaster, open_raster

#: Environment variable that points at the real-samples folder (overrides the default).
REAL_SAMPLES_ENV = "RSLAB_REAL_SAMPLES"


def real_samples_dir() -> Path | None:
    """The folder of real sample files, or ``None`` when it is not on this machine.

    Looked up in order: ``$RSLAB_REAL_SAMPLES``; ``<project root>/../shared/real_samples``
    (the project root being the checkout holding this package); ``<cwd>/../shared/real_samples``
    (notebooks run from the project root). Notebooks and tests must work without it.
    """
    env = os.environ.get(REAL_SAMPLES_ENV)
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    project_root = Path(__file__).resolve().parents[3]
    for candidate in (project_root.parent / "shared" / "real_samples", Path.cwd().parent / "shared" / "real_samples"):
        if candidate.is_dir():
            return candidate
    return None


__all__ = [
    "DEEPGLOBE_CLASSES", "DEEPGLOBE_COLOURS", "ENCODINGS", "ISPRS_CLASSES", "ISPRS_COLOURS", "LOVEDA_CLASSES",
    "MMSegFolder", "POTSDAM_CLASSES", "REAL_SAMPLES_ENV", "RRSISD", "ReadConversionWarning", "RefSegRS", "S2_BANDS",
    "SEN1FLOODS11_CLASSES", "VAIHINGEN_CLASSES", "WindowedRaster", "decode_deepglobe", "decode_isprs",
    "decode_isprs_index", "decode_isprs_rgb", "open_raster",
    "decode_loveda", "decode_rgb_labels", "decode_sen1floods11", "find_sen1floods11_chip", "polygons_to_mask",
    "read_deepglobe", "read_sen1floods11", "real_samples_dir", "rle_decode", "rle_encode", "s2_rgb",
    "segmentation_to_mask",
]
