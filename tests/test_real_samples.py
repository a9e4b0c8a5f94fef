"""Readers on the small real samples kept beside the project (skipped when absent).

Location: ``$RSLAB_REAL_SAMPLES`` or ``<project>/../shared/real_samples``.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from rslab.data.readers import (
    LOVEDA_CLASSES,
    MMSegFolder,
    find_sen1floods11_chip,
    read_deepglobe,
    read_sen1floods11,
    s2_rgb,
)
from rslab.data.sample import IGNORE_INDEX

REAL = Path(os.environ.get("RSLAB_REAL_SAMPLES", Path(__file__).resolve().parents[2] / "shared" / "real_samples"))

pytestmark = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"real samples not found at {REAL} (set RSLAB_REAL_SAMPLES to their folder)"
)


def _need(sub: str) -> Path:
    path = REAL / sub
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


def test_loveda_three_tiles():
    ds = MMSegFolder(_need("loveda"), encoding="loveda")
    assert len(ds) == 3
    for sample in ds:
        assert sample.optical.shape == (3, 1024, 1024)
        assert 0.0 <= sample.optical.min() and sample.optical.max() <= 1.0
        values = set(np.unique(sample.labels).tolist())
        assert values <= set(range(len(LOVEDA_CLASSES))) | {IGNORE_INDEX}
        assert len(values - {IGNORE_INDEX}) >= 2  # a real tile has several land-cover classes


def test_deepglobe_scene():
    folder = _need("deepglobe_landcover")
    sample = read_deepglobe(folder / "6399_sat.jpg", folder / "6399_mask.png")
    assert sample.shape == (2448, 2448)
    classes = set(np.unique(sample.labels).tolist()) - {IGNORE_INDEX}
    assert len(classes) >= 3
    assert classes <= set(range(6))


def test_sen1floods11_chip_physics():
    sample = read_sen1floods11(**find_sen1floods11_chip(_need("sen1floods11")))
    assert sample.shape == (512, 512)
    assert sample.sar.shape == (2, 512, 512) and sample.optical.shape == (13, 512, 512)
    finite = sample.sar[np.isfinite(sample.sar)]
    assert -50.0 <= finite.min() and finite.max() <= 30.0  # dB, not linear power

    valid = sample.labels != IGNORE_INDEX
    water = sample.labels == 1
    fraction = water.sum() / valid.sum()
    assert 0.0 < fraction < 1.0

    # Calm open water is a specular reflector: far less VV backscatter than land.
    vv = sample.sar[0]
    vv_water = np.nanmedian(vv[water])
    vv_land = np.nanmedian(vv[valid & ~water])
    assert vv_water < vv_land - 3.0, (vv_water, vv_land)

    # Georeference: Spain, EPSG:4326, ~10 m pixels (512 px ~ 0.046 deg).
    west, south, east, north = sample.bounds
    assert -10 < west < east < 5 and 35 < south < north < 44
    assert east - west == pytest.approx(512 * 8.98315e-05, rel=1e-3)

    rgb = s2_rgb(sample.optical)
    assert rgb.shape == (3, 512, 512) and rgb.min() >= 0.0 and rgb.max() <= 1.0
