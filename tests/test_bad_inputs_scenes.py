"""Bad and real-format inputs for the single-scene readers: DeepGlobe Land Cover and Sen1Floods11.

Damaged GeoTIFFs are built the way Sen1Floods11 ships them (deflate-compressed tiles), then
truncated or corrupted; the real samples in ``../shared/real_samples`` are re-encoded when present.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from _bad_inputs import png, raises, rgb, tif, truncate, warns

from rslab.data.readers import (
    DEEPGLOBE_COLOURS,
    checks,
    open_raster,
    read_deepglobe,
    read_sen1floods11,
    real_samples_dir,
)
from rslab.data.sample import IGNORE_INDEX as IGN

# ------------------------------------------------------------------------------ DeepGlobe


def _dg(tmp_path, mask, sat=None):
    h, w = np.asarray(mask).shape[:2]
    sat_path = png(tmp_path / "1_sat.png", rgb(h, w) if sat is None else sat)
    return sat_path, png(tmp_path / "1_mask.png", mask)


def test_deepglobe_palette_mask_decodes_by_colour(tmp_path):
    idx = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    sat, m = _dg(tmp_path, idx)
    png(m, idx, palette=list(DEEPGLOBE_COLOURS))
    np.testing.assert_array_equal(read_deepglobe(sat, m).labels, idx)


def test_deepglobe_palette_with_foreign_colours_refused(tmp_path):
    idx = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    sat, m = _dg(tmp_path, idx)
    png(m, idx, palette=[(7, 7, 7)] * 6)
    raises(ValueError, lambda: read_deepglobe(sat, m), names=[m, "(7, 7, 7)"], problem="not in the dataset's colour")


def test_deepglobe_grey_index_mask_as_rgb_refused(tmp_path):
    grey = np.repeat(np.array([[1, 2, 3], [4, 5, 6]], np.uint8)[..., None], 3, axis=2)
    sat, m = _dg(tmp_path, grey)
    raises(ValueError, lambda: read_deepglobe(sat, m), names=[m], problem="grey image saved as RGB")


def test_deepglobe_single_band_mask_refused(tmp_path):
    sat, m = _dg(tmp_path, np.array([[1, 2, 3], [4, 5, 6]], np.uint8))
    raises(ValueError, lambda: read_deepglobe(sat, m), names=[m], problem="single-band")


def test_deepglobe_red_pixels_named_with_count(tmp_path):
    mask = np.zeros((3, 3, 3), np.uint8)
    mask[..., 2] = 255  # water
    mask[0, :2] = (255, 0, 0)  # red: not a DeepGlobe colour
    sat, m = _dg(tmp_path, mask)
    raises(ValueError, lambda: read_deepglobe(sat, m), names=[m, "(255, 0, 0) x 2 px"], problem="not in the dataset")


def test_deepglobe_all_unknown_mask_is_an_error(tmp_path):
    sat, m = _dg(tmp_path, np.zeros((4, 4, 3), np.uint8))
    raises(ValueError, lambda: read_deepglobe(sat, m), names=[m], problem="nothing but ignore")


def test_deepglobe_mask_given_as_satellite_photo_refused(tmp_path):
    sat, m = _dg(tmp_path, rgb(32, 32, seed=5))
    raises(ValueError, lambda: read_deepglobe(sat, m), names=[m], problem="not pure colours")


def test_deepglobe_grey_satellite_image_refused(tmp_path):
    sat, m = _dg(tmp_path, np.zeros((2, 2, 3), np.uint8) + 255, sat=rgb(2, 2)[..., 0])
    raises(ValueError, lambda: read_deepglobe(sat, m), names=[sat], problem="3 bands .* got 1")


def test_deepglobe_size_mismatch_names_both_files(tmp_path):
    sat = png(tmp_path / "1_sat.png", rgb(4, 4))
    m = png(tmp_path / "1_mask.png", np.full((4, 5, 3), 255, np.uint8))
    raises(ValueError, lambda: read_deepglobe(sat, m), names=[sat, m], problem="size mismatch")


# ------------------------------------------------------------------------------ Sen1Floods11


def _chip(tmp_path, s1=None, s2=None, label=None, **kw):
    rng = np.random.default_rng(0)
    s1 = rng.uniform(-25, 0, (2, 8, 8)).astype(np.float32) if s1 is None else s1
    s2 = rng.integers(0, 5000, (13, 8, 8)).astype(np.int16) if s2 is None else s2
    if label is None:
        label = np.zeros((8, 8), np.int16)
        label[:2] = 1
        label[-1] = -1
    paths = {}
    for key, name, arr in (("s1_path", "S1Hand", s1), ("s2_path", "S2Hand", s2), ("label_path", "LabelHand", label)):
        paths[key] = tif(tmp_path / f"Spain_1_{name}.tif", arr, compression="zlib", tile=(16, 16) if key else None,
                         **kw)
    return paths


def test_sen1floods11_linear_power_converted_to_db_with_warning(tmp_path):
    db = np.random.default_rng(0).uniform(-25, 0, (2, 8, 8)).astype(np.float32)
    paths = _chip(tmp_path, s1=(10 ** (db / 10)).astype(np.float32))
    s = warns(lambda: read_sen1floods11(**paths), names=[paths["s1_path"]], problem="linear power")
    np.testing.assert_allclose(s.sar, db, atol=1e-4)


def test_sen1floods11_linear_power_zeros_become_nodata(tmp_path):
    lin = np.full((2, 8, 8), 0.05, np.float32)
    lin[0, 0, 0] = 0.0
    paths = _chip(tmp_path, s1=lin)
    s = warns(lambda: read_sen1floods11(paths["s1_path"]), names=["S1Hand"], problem="1 zero pixel")
    assert np.isnan(s.sar[0, 0, 0]) and np.isfinite(s.sar[0, 1:]).all()


def test_sen1floods11_minus_inf_is_nodata_with_warning(tmp_path):
    s1 = np.full((2, 8, 8), -12.0, np.float32)
    s1[1, 3, 3] = -np.inf
    paths = _chip(tmp_path, s1=s1)
    s = warns(lambda: read_sen1floods11(paths["s1_path"]), names=["S1Hand"], problem="-inf dB")
    assert np.isnan(s.sar[1, 3, 3]) and np.isfinite(s.sar).sum() == 127


def test_sen1floods11_plus_inf_refused(tmp_path):
    s1 = np.full((2, 8, 8), -12.0, np.float32)
    s1[0, 1, 1] = np.inf
    paths = _chip(tmp_path, s1=s1)
    raises(ValueError, lambda: read_sen1floods11(paths["s1_path"]), names=[paths["s1_path"]], problem=r"\+inf")


def test_sen1floods11_all_nan_refused(tmp_path):
    paths = _chip(tmp_path, s1=np.full((2, 8, 8), np.nan, np.float32))
    raises(ValueError, lambda: read_sen1floods11(paths["s1_path"]), names=[paths["s1_path"]],
           problem="no finite pixel")


def test_sen1floods11_integer_dn_refused(tmp_path):
    paths = _chip(tmp_path, s1=np.full((2, 8, 8), 300, np.uint16))
    raises(ValueError, lambda: read_sen1floods11(paths["s1_path"]), names=[paths["s1_path"]],
           problem="digital numbers")


def test_sen1floods11_implausible_db_refused(tmp_path):
    s1 = np.full((2, 8, 8), -12.0, np.float32)
    s1[0, 0, 0] = -300.0  # e.g. a scaled product
    paths = _chip(tmp_path, s1=s1)
    raises(ValueError, lambda: read_sen1floods11(paths["s1_path"]), names=[paths["s1_path"]],
           problem="outside the plausible")


def test_sen1floods11_one_band_sar_refused(tmp_path):
    paths = _chip(tmp_path, s1=np.full((8, 8), -12.0, np.float32))
    raises(ValueError, lambda: read_sen1floods11(paths["s1_path"]), names=[paths["s1_path"], "VV"],
           problem="2 bands")


def test_sen1floods11_s2_with_nan_refused(tmp_path):
    s2 = np.full((13, 8, 8), 0.2, np.float32)
    s2[4, 2, 2] = np.nan
    paths = _chip(tmp_path, s2=s2)
    raises(ValueError, lambda: read_sen1floods11(**paths), names=[paths["s2_path"]], problem="1 NaN")


def test_sen1floods11_s2_float_dn_divided_with_warning(tmp_path):
    s2 = np.full((13, 8, 8), 2500.0, np.float32)
    paths = _chip(tmp_path, s2=s2)
    s = warns(lambda: read_sen1floods11(**paths), names=["S2Hand"], problem="digital numbers")
    np.testing.assert_allclose(s.optical, 0.25)


def test_sen1floods11_s2_band_count_named(tmp_path):
    paths = _chip(tmp_path, s2=np.zeros((4, 8, 8), np.int16))
    raises(ValueError, lambda: read_sen1floods11(**paths), names=[paths["s2_path"], "B8A"], problem="13 bands")


def test_sen1floods11_label_0_255_refused_with_hint(tmp_path):
    label = np.zeros((8, 8), np.uint8)
    label[:3] = 255
    paths = _chip(tmp_path, label=label)
    raises(ValueError, lambda: read_sen1floods11(**paths), names=[paths["label_path"], "[255]"],
           problem="binary 0/255")


def test_sen1floods11_label_all_nodata_refused(tmp_path):
    paths = _chip(tmp_path, label=np.full((8, 8), -1, np.int16))
    raises(ValueError, lambda: read_sen1floods11(**paths), names=[paths["label_path"]], problem="nothing but ignore")


def test_sen1floods11_label_grey_rgb_png_read_as_index(tmp_path):
    paths = _chip(tmp_path)
    lab = np.zeros((8, 8, 3), np.uint8)
    lab[:4] = 1
    paths["label_path"] = png(tmp_path / "Spain_1_LabelHand.png", lab)
    s = warns(lambda: read_sen1floods11(**paths), names=["LabelHand.png"], problem="identical channels")
    assert (s.labels[:4] == 1).all() and (s.labels[4:] == 0).all()


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_deflate_geotiff_names_file(tmp_path, fraction):
    paths = _chip(tmp_path)
    truncate(paths["s1_path"], fraction)
    raises(ValueError, lambda: read_sen1floods11(**paths), names=[paths["s1_path"]],
           problem="truncated or corrupt|damaged")


def test_corrupt_deflate_tile_names_file(tmp_path):
    s1 = np.random.default_rng(0).uniform(-25, 0, (2, 64, 64)).astype(np.float32)
    p = tif(tmp_path / "Spain_1_S1Hand.tif", s1, compression="zlib", tile=(16, 16))
    with tifffile.TiffFile(p) as t:
        offset = t.pages[0].dataoffsets[3]
    data = bytearray(p.read_bytes())
    data[offset:offset + 40] = b"\xff" * 40
    p.write_bytes(bytes(data))
    raises(ValueError, lambda: read_sen1floods11(p), names=[p], problem="could not read TIFF|damaged")


def test_lzw_geotiff_without_codec_names_file_and_fix(tmp_path):
    # Sen1Floods11 ships some chips LZW-compressed; without `imagecodecs` tifffile cannot decode them
    pytest.importorskip("tifffile")
    try:
        import imagecodecs  # noqa: F401
        pytest.skip("imagecodecs installed: LZW decodes")
    except ImportError:
        pass
    p = tif(tmp_path / "Spain_1_S1Hand.tif", np.full((2, 8, 8), -12.0, np.float32))
    data = bytearray(p.read_bytes())
    with tifffile.TiffFile(p) as t:
        tag = t.pages[0].tags["Compression"]
        value_offset = tag.valueoffset
    data[value_offset:value_offset + 2] = (5).to_bytes(2, "little")  # COMPRESSION.LZW
    p.write_bytes(bytes(data))
    raises(ValueError, lambda: read_sen1floods11(p), names=[p, "imagecodecs"], problem="install")


def test_broken_page_chain_names_file(tmp_path):
    """tifffile only logs a next-page offset that points past the end of the file; the reader refuses it."""
    import struct

    p = tif(tmp_path / "Spain_1_S1Hand.tif", np.full((2, 16, 16), -12.0, np.float32), photometric="minisblack")
    with tifffile.TiffFile(p) as t:
        assert len(t.pages) == 2
        second = t.pages[1].offset
    data = bytearray(p.read_bytes())
    at = data.find(struct.pack("<I", second))
    data[at:at + 4] = struct.pack("<I", len(data) + 1000)
    p.write_bytes(bytes(data))
    raises(ValueError, lambda: read_sen1floods11(p), names=[p], problem="damaged TIFF.*invalid page offset")


def test_huge_tiff_header_refused_before_allocating(tmp_path, monkeypatch):
    p = tif(tmp_path / "Spain_1_S1Hand.tif", np.full((2, 64, 64), -12.0, np.float32))
    monkeypatch.setattr(checks, "MAX_IMAGE_PIXELS", 1000)
    raises(ValueError, lambda: read_sen1floods11(p), names=[p, "open_raster"], problem="whole-image limit")


def test_not_a_tiff_names_file(tmp_path):
    p = tmp_path / "Spain_1_S1Hand.tif"
    p.write_bytes(b"GIF89a not a tiff")
    raises(ValueError, lambda: read_sen1floods11(p), names=[p], problem="valid \\(Geo\\)TIFF")


def test_missing_file_is_file_not_found(tmp_path):
    raises(FileNotFoundError, lambda: read_sen1floods11(tmp_path / "nope_S1Hand.tif"), names=["nope_S1Hand.tif"],
           problem="not found")


# ------------------------------------------------------------------------------ windowed reads


def test_open_raster_memmaps_uncompressed_tiff_and_matches_whole_read(tmp_path):
    from rslab.data.readers._io import read_optical

    img = rgb(40, 30)
    p = tif(tmp_path / "big.tif", img, photometric="rgb")
    r = open_raster(p)
    assert r.backend == "memmap" and r.shape == (3, 40, 30)
    np.testing.assert_array_equal(r[:, 5:25, 3:13], read_optical(p)[:, 5:25, 3:13])


def test_open_raster_uses_one_scale_for_the_whole_file(tmp_path):
    img = np.zeros((3, 40, 30), np.uint16)
    img[:, :20] = 200       # the top half alone looks 8-bit ...
    img[:, 20:] = 40000     # ... but the file is 16-bit
    p = tif(tmp_path / "big16.tif", img, compression="zlib")
    r = open_raster(p)
    np.testing.assert_allclose(r[:, 0:10, 0:10], 200 / 65535.0, rtol=1e-6)


def test_open_raster_reads_compressed_tiff_above_the_whole_image_limit(tmp_path, monkeypatch):
    img = np.full((2, 64, 64), -12.0, np.float32)
    p = tif(tmp_path / "Spain_1_S1Hand.tif", img, compression="zlib")
    monkeypatch.setattr(checks, "MAX_IMAGE_PIXELS", 1000)  # read_sen1floods11 refuses it whole (test above)
    r = open_raster(p, kind="raw")
    assert r.backend == "decoded" and r.shape == (2, 64, 64)
    np.testing.assert_array_equal(r[:, 10:20, 30:40], img[:, 10:20, 30:40])
    assert checks.MAX_IMAGE_PIXELS == 1000


def test_open_raster_refuses_out_of_range_float_file(tmp_path):
    img = np.full((3, 16, 16), 0.5, np.float32)
    img[0, 15, 15] = 5000.0
    p = tif(tmp_path / "f.tif", img)
    r = open_raster(p)
    raises(ValueError, lambda: r[:, 0:4, 0:4], names=[p], problem="range 0.5..5000")


# ------------------------------------------------------------------------------ real samples


def _real(sub):
    root = real_samples_dir()
    if root is None or not (root / sub).is_dir():
        pytest.skip(f"real samples ({sub}) not present")
    return root / sub


def test_real_deepglobe_mask_re_encoded_as_grey_is_refused(tmp_path):
    from PIL import Image

    folder = _real("deepglobe_landcover")
    mask = np.asarray(Image.open(folder / "6399_mask.png").convert("RGB"))[:256, :256]
    grey = np.repeat(mask.mean(axis=2).astype(np.uint8)[..., None], 3, axis=2)
    sat = png(tmp_path / "x_sat.png", np.asarray(Image.open(folder / "6399_sat.jpg"))[:256, :256])
    m = png(tmp_path / "x_mask.png", grey)
    raises(ValueError, lambda: read_deepglobe(sat, m), names=[m], problem="grey image saved as RGB|nothing but ignore")


def test_real_sen1floods11_as_linear_power_reads_back_to_the_same_db(tmp_path):
    folder = _real("sen1floods11")
    s1 = tifffile.imread(folder / "Spain_7370579_S1Hand.tif")
    p = tif(tmp_path / "lin_S1Hand.tif", (10 ** (s1 / 10)).astype(np.float32), compression="zlib")
    s = warns(lambda: read_sen1floods11(p), names=[p], problem="linear power")
    np.testing.assert_allclose(s.sar, s1, atol=1e-3)


def test_real_sen1floods11_truncated_copy_names_file(tmp_path):
    folder = _real("sen1floods11")
    p = tmp_path / "Spain_7370579_S1Hand.tif"
    p.write_bytes((folder / "Spain_7370579_S1Hand.tif").read_bytes())
    truncate(p, 0.7)
    raises(ValueError, lambda: read_sen1floods11(p), names=[p], problem="truncated|corrupt|damaged")


def test_real_loveda_mask_shifted_to_zero_based_ids_is_not_silently_read(tmp_path):
    from PIL import Image

    from rslab.data.readers import MMSegFolder

    folder = _real("loveda")
    raw = np.asarray(Image.open(folder / "ann_dir/0.png"))
    png(tmp_path / "img_dir/0.png", np.asarray(Image.open(folder / "img_dir/0.png")))
    # the same mask re-saved as mmseg's reduce_zero_label output (ids 0..6, 255 for no-data): not raw LoveDA
    shifted = np.where(raw == 0, 255, raw.astype(np.int16) - 1).astype(np.uint8)
    shifted[:8] = 255  # a no-data border
    png(tmp_path / "ann_dir/0.png", shifted)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=["ann_dir/0.png", "255"],
           problem="unknown label value")


def test_decoders_keep_ignore_index(tmp_path):
    # sanity: valid data decodes, with ignore where the encoding says
    sat, m = _dg(tmp_path, np.array([[[0, 0, 0], [0, 0, 255]]], np.uint8))
    np.testing.assert_array_equal(read_deepglobe(sat, m).labels, [[IGN, 4]])


# ------------------------------------------------------------------------------ SAR conventions


def test_normalize_sar_refuses_plus_inf_and_treats_minus_inf_as_nodata():
    import torch

    from rslab.data.sar import normalize_sar

    x = np.full((2, 4, 4), -12.0, np.float32)
    x[0, 0, 0] = -np.inf
    for arr in (x, torch.from_numpy(x)):
        out = np.asarray(normalize_sar(arr, nodata_value=0.0))
        assert out[0, 0, 0] == 0.0 and np.isfinite(out).all()
    x[1, 1, 1] = np.inf
    raises(ValueError, lambda: normalize_sar(x), names=["sar"], problem=r"1 \+inf")
    raises(ValueError, lambda: normalize_sar(torch.from_numpy(x)), names=["sar"], problem=r"1 \+inf")


def test_linear_to_db_refuses_db_input():
    import torch

    from rslab.data.sar import linear_to_db

    db = np.full((2, 3, 3), -15.0, np.float32)
    raises(ValueError, lambda: linear_to_db(db), names=["intensity"], problem="already in dB")
    raises(ValueError, lambda: linear_to_db(torch.from_numpy(db)), names=["intensity"], problem="already in dB")
    lin = np.array([[0.0, np.nan, 0.1]], np.float32)
    np.testing.assert_allclose(linear_to_db(lin)[0, [0, 2]], [-60.0, -10.0], rtol=1e-6)


def test_real_samples_read_without_any_conversion_warning():
    import warnings

    from rslab.data.readers import MMSegFolder, find_sen1floods11_chip

    root = real_samples_dir()
    if root is None:
        pytest.skip("real samples not present")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # valid real data: read as documented, nothing converted
        if (root / "loveda").is_dir():
            assert all(s.labels.dtype == np.uint8 for s in MMSegFolder(root / "loveda", encoding="loveda"))
        if (root / "sen1floods11").is_dir():
            s = read_sen1floods11(**find_sen1floods11_chip(root / "sen1floods11"))
            assert s.sar.dtype == np.float32 and s.labels.dtype == np.uint8
        if (root / "deepglobe_landcover").is_dir():
            dg = root / "deepglobe_landcover"
            assert read_deepglobe(dg / "6399_sat.jpg", dg / "6399_mask.png").labels.dtype == np.uint8
