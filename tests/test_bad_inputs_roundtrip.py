"""Property-based round trips (hypothesis) of every label encoding, COCO RLE and the value checks.

For random label maps: encode the ids the way each dataset stores them (in memory and through a
real file), decode with the reader's decoder, and get the same ids back -- or, for a map that is
all ignore, the documented error.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _bad_inputs import png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rslab.data.readers import (
    DEEPGLOBE_COLOURS,
    ISPRS_COLOURS,
    MMSegFolder,
    decode_deepglobe,
    decode_isprs_index,
    decode_isprs_rgb,
    decode_loveda,
    decode_sen1floods11,
    rle_decode,
    rle_encode,
)
from rslab.data.readers.checks import optical_to_unit, sar_to_db
from rslab.data.readers.coco_mask import rle_counts_from_string, rle_counts_to_string
from rslab.data.sample import IGNORE_INDEX as IGN

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


def id_maps(num_classes: int):
    values = st.sampled_from(list(range(num_classes)) + [IGN])
    return st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
        lambda hw: arrays(np.uint8, hw, elements=values))


def _check(decode, encoded, ids):
    if (ids == IGN).all():
        with pytest.raises(ValueError, match="nothing but ignore"):
            decode(encoded)
        return
    out = decode(encoded)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, ids)


@FAST
@given(id_maps(7))
def test_loveda_round_trip(ids):
    raw = np.where(ids == IGN, 0, ids + 1).astype(np.uint8)
    _check(lambda r: decode_loveda(r, "m.png"), raw, ids)


@FAST
@given(id_maps(6))
def test_isprs_index_round_trip(ids):
    raw = np.where(ids == IGN, 0, ids + 1).astype(np.uint8)
    _check(lambda r: decode_isprs_index(r, "m.png"), raw, ids)


@FAST
@given(id_maps(6), st.integers(0, 40))
def test_isprs_colour_round_trip_with_noise(ids, noise):
    table = np.array(list(ISPRS_COLOURS) + [(0, 0, 0)] * 250, np.int16)
    rgb = table[np.where(ids == IGN, 6, ids)]
    jitter = np.random.default_rng(noise).integers(-noise, noise + 1, rgb.shape)
    rgb = np.clip(rgb + jitter, 0, 255).astype(np.uint8)  # compression-like noise stays on its side of 128
    _check(lambda r: decode_isprs_rgb(r, "m.png"), rgb, ids)


@FAST
@given(id_maps(6))
def test_deepglobe_colour_round_trip(ids):
    table = np.array(list(DEEPGLOBE_COLOURS) + [(0, 0, 0)] * 250, np.uint8)
    _check(lambda r: decode_deepglobe(r, "m.png"), table[np.where(ids == IGN, 6, ids)], ids)


@FAST
@given(id_maps(2))
def test_sen1floods11_round_trip(ids):
    raw = np.where(ids == IGN, -1, ids.astype(np.int16)).astype(np.int16)
    _check(lambda r: decode_sen1floods11(r, "l.tif"), raw, ids)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(ids=id_maps(6), form=st.sampled_from(["index", "colour", "palette", "grey_rgb"]))
def test_isprs_file_round_trip_every_form(tmp_path_factory, ids, form):
    root = tmp_path_factory.mktemp("isprs")
    png(root / "img_dir/a.png", np.zeros((*ids.shape, 3), np.uint8))
    index = np.where(ids == IGN, 0, ids + 1).astype(np.uint8)
    colours = np.array(list(ISPRS_COLOURS) + [(0, 0, 0)], np.uint8)[np.where(ids == IGN, 6, ids)]
    if form == "index":
        png(root / "ann_dir/a.png", index)
    elif form == "colour":
        png(root / "ann_dir/a.png", colours)
    elif form == "palette":  # palette entries = the official colours, indices = class ids
        png(root / "ann_dir/a.png", np.where(ids == IGN, 6, ids).astype(np.uint8),
            palette=list(ISPRS_COLOURS) + [(0, 0, 0)])
    else:
        png(root / "ann_dir/a.png", np.repeat(index[..., None], 3, axis=2))
    ds = MMSegFolder(root, encoding="potsdam")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if (ids == IGN).all():
            with pytest.raises(ValueError, match="nothing but ignore|grey"):
                ds[0]
            return
        if form == "grey_rgb" and np.isin(index, (0, 255)).all():
            # a grey image of only 0/255 is a valid colour code (black/white): read as colours
            return
        labels = ds[0].labels
    np.testing.assert_array_equal(labels, ids)


@FAST
@given(arrays(np.bool_, st.tuples(st.integers(1, 10), st.integers(1, 10))))
def test_rle_round_trip(mask):
    rle = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(rle), mask)
    counts = rle_counts_from_string(rle["counts"])
    assert rle_counts_to_string(counts) == rle["counts"]
    np.testing.assert_array_equal(rle_decode({"size": rle["size"], "counts": counts}), mask)


@FAST
@given(arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))))
def test_optical_uint8_and_uint16_scales(arr):
    np.testing.assert_array_equal(optical_to_unit(arr), arr.astype(np.float32) / 255.0)
    wide = arr.astype(np.uint16) * 257  # 8 -> 16 bit the usual way
    if wide.max() > 255:
        np.testing.assert_allclose(optical_to_unit(wide), arr / 255.0, rtol=1e-6)


@FAST
@given(arrays(np.float32, st.tuples(st.just(2), st.integers(1, 6), st.integers(1, 6)),
              elements=st.floats(-40, 10, width=32)))
def test_sar_db_linear_round_trip(db):
    if db.max() >= 0:  # dB data with every value >= 0 is indistinguishable from linear power
        db = db - float(db.max()) - 0.5
    np.testing.assert_array_equal(sar_to_db(db), db)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = sar_to_db((10.0 ** (db.astype(np.float64) / 10.0)).astype(np.float32))
    np.testing.assert_allclose(back, db, atol=1e-3)
