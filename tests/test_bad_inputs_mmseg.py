"""Bad and real-format inputs for mmseg-style folders (LoveDA, ISPRS Potsdam / Vaihingen).

Every case writes the files it needs, then checks the error type and that the message names
the file and the problem (or, for a documented conversion, the warning and the values).
"""

from __future__ import annotations

import numpy as np
import pytest
from _bad_inputs import jpg, png, raises, rgb, tif, truncate, warns
from PIL import Image

from rslab.data.readers import ISPRS_COLOURS, MMSegFolder
from rslab.data.sample import IGNORE_INDEX as IGN

LOVEDA_RAW = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], np.uint8)


def _pair(root, image, mask, stem="a", img_ext=".png", mask_ext=".png"):
    write_img = {".png": png, ".jpg": jpg, ".tif": tif}[img_ext]
    image_path = write_img(root / "img_dir" / f"{stem}{img_ext}", image)
    mask_path = (png if mask_ext == ".png" else tif)(root / "ann_dir" / f"{stem}{mask_ext}", mask)
    return image_path, mask_path


# ------------------------------------------------------------------ mask encodings


def test_loveda_palette_png_decodes_by_index(tmp_path):
    # mmseg writes index masks as palette PNGs; the palette is only for display
    pal = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (255, 255, 0), (0, 0, 255), (159, 129, 183), (0, 255, 0),
           (255, 195, 128)]
    _, m = _pair(tmp_path, rgb(2, 4), LOVEDA_RAW)
    png(m, LOVEDA_RAW, palette=pal)
    assert Image.open(m).mode == "P"
    s = MMSegFolder(tmp_path, encoding="loveda")[0]
    np.testing.assert_array_equal(s.labels, [[IGN, 0, 1, 2], [3, 4, 5, 6]])


def test_isprs_palette_png_with_official_colours_decodes_by_colour(tmp_path):
    # indices 0..5 whose palette entries are the ISPRS colours in a *different* order than the ids
    order = [3, 0, 5, 1, 4, 2]
    pal = [ISPRS_COLOURS[i] for i in order]
    idx = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    _, m = _pair(tmp_path, rgb(2, 3), idx)
    png(m, idx, palette=pal)
    s = MMSegFolder(tmp_path, encoding="potsdam")[0]
    np.testing.assert_array_equal(s.labels, np.array(order)[idx])  # by colour, not by index


def test_isprs_palette_png_with_foreign_colours_decodes_by_index(tmp_path):
    idx = np.array([[0, 1, 2], [3, 4, 6]], np.uint8)
    pal = [(10 * i, 20, 30) for i in range(7)]  # a display palette: not the official colours
    _, m = _pair(tmp_path, rgb(2, 3), idx)
    png(m, idx, palette=pal)
    s = MMSegFolder(tmp_path, encoding="vaihingen")[0]
    np.testing.assert_array_equal(s.labels, [[IGN, 0, 1], [2, 3, 5]])  # mmseg index convention


def test_grey_mask_saved_as_rgb_is_an_index_mask_with_warning(tmp_path):
    grey = np.repeat(LOVEDA_RAW[..., None], 3, axis=2)
    _, m = _pair(tmp_path, rgb(2, 4), grey)
    s = warns(lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[m], problem="three identical channels")
    np.testing.assert_array_equal(s.labels, [[IGN, 0, 1, 2], [3, 4, 5, 6]])


def test_isprs_grey_index_saved_as_rgb_is_not_read_as_colours(tmp_path):
    idx = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    _, m = _pair(tmp_path, rgb(2, 3), np.repeat(idx[..., None], 3, axis=2))
    s = warns(lambda: MMSegFolder(tmp_path, encoding="potsdam")[0], names=[m], problem="index mask")
    np.testing.assert_array_equal(s.labels, [[0, 1, 2], [3, 4, 5]])


def test_loveda_colour_mask_refused(tmp_path):
    colour = np.zeros((2, 4, 3), np.uint8)
    colour[0, :, 0] = 255
    colour[1, :, 2] = 255
    _, m = _pair(tmp_path, rgb(2, 4), colour)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[m], problem="single-band class ids")


def test_isprs_unknown_colour_named_with_pixel_count(tmp_path):
    lab = np.full((4, 4, 3), 255, np.uint8)
    lab[:2, :3] = (255, 0, 255)  # magenta: no ISPRS class
    _, m = _pair(tmp_path, rgb(4, 4), lab)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="potsdam")[0], names=[m, "(255, 0, 255)"],
           problem=r"x 6 px")


def test_isprs_photo_given_as_mask_refused(tmp_path):
    _, m = _pair(tmp_path, rgb(16, 16), rgb(16, 16, seed=3))
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="potsdam")[0], names=[m], problem="not pure colours")


@pytest.mark.parametrize("encoding, raw", [
    ("loveda", np.zeros((3, 4), np.uint8)),                      # all no-data
    ("potsdam", np.zeros((3, 4), np.uint8)),                     # all boundary (index form)
    ("potsdam", np.zeros((3, 4, 3), np.uint8)),                  # all black (colour form)
    ("vaihingen", np.full((3, 4), 255, np.uint8)),               # all ignore
])
def test_mask_that_is_all_ignore_is_an_error(tmp_path, encoding, raw):
    _, m = _pair(tmp_path, rgb(3, 4), raw)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding=encoding)[0], names=[m], problem="nothing but ignore")


def test_binary_0_1_mask_for_isprs_index_is_not_read_as_empty(tmp_path):
    # a 0/1 mask in index form reads as "ignore + impervious"; a 0/255 one would be all ignore
    _, m = _pair(tmp_path, rgb(2, 2), np.array([[0, 255], [255, 0]], np.uint8))
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="potsdam")[0], names=[m], problem="nothing but ignore")


def test_loveda_binary_0_255_mask_names_the_binary_form(tmp_path):
    _, m = _pair(tmp_path, rgb(2, 2), np.array([[0, 255], [255, 1]], np.uint8))
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[m, "[255]"],
           problem="binary 0/255")


def test_unknown_index_values_listed_with_counts(tmp_path):
    _, m = _pair(tmp_path, rgb(2, 4), np.array([[1, 9, 9, 2], [12, 1, 1, 1]], np.uint8))
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[m, "[9, 12]"],
           problem="2 px, 1 px")


def test_two_band_mask_refused(tmp_path):
    img, _ = _pair(tmp_path, rgb(3, 4), np.zeros((3, 4), np.uint8))
    m = tif(tmp_path / "ann_dir/a.tif", np.ones((2, 3, 4), np.uint8))
    (tmp_path / "ann_dir/a.png").unlink()
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[m], problem="2 bands")


# ------------------------------------------------------------------ optical values and bands


def test_16bit_optical_scaled_by_65535(tmp_path):
    img = (np.arange(24, dtype=np.uint16).reshape(2, 4, 3) * 2000)
    _pair(tmp_path, img, LOVEDA_RAW, img_ext=".tif")
    # a (2, 4, 3) array is written as 2 bands of 4x3 unless told RGB
    tif(tmp_path / "img_dir/a.tif", img, photometric="rgb")
    s = MMSegFolder(tmp_path, encoding="loveda")[0]
    np.testing.assert_allclose(s.optical, np.moveaxis(img, -1, 0) / 65535.0, rtol=1e-6)


def test_8bit_values_in_16bit_file_scaled_by_255_with_warning(tmp_path):
    img = rgb(2, 4).astype(np.uint16)
    tif(tmp_path / "img_dir/a.tif", img, photometric="rgb")
    png(tmp_path / "ann_dir/a.png", LOVEDA_RAW)
    p = tmp_path / "img_dir/a.tif"
    s = warns(lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[p], problem="8-bit values")
    np.testing.assert_allclose(s.optical, np.moveaxis(img, -1, 0) / 255.0, rtol=1e-6)


def test_float_0_255_optical_scaled_with_warning(tmp_path):
    img = rgb(2, 4).astype(np.float32)
    tif(tmp_path / "img_dir/a.tif", img, photometric="rgb")
    png(tmp_path / "ann_dir/a.png", LOVEDA_RAW)
    s = warns(lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=["a.tif"], problem="scaled by 1/255")
    assert 0.0 <= s.optical.min() and s.optical.max() <= 1.0


def test_float_optical_already_scaled_is_kept(tmp_path):
    img = np.random.default_rng(0).random((2, 4, 3)).astype(np.float32)
    tif(tmp_path / "img_dir/a.tif", img, photometric="rgb")
    png(tmp_path / "ann_dir/a.png", LOVEDA_RAW)
    s = MMSegFolder(tmp_path, encoding="loveda")[0]
    np.testing.assert_array_equal(s.optical, np.moveaxis(img, -1, 0))


@pytest.mark.parametrize("values, problem", [
    ((-0.5, 0.5), "range -0.5"),            # negative reflectance
    ((0.0, 1.5), "range 0..1.5"),           # ambiguous: bright reflectance or 8-bit?
    ((0.0, 4000.0), "range 0..4000"),       # DN stored as float
])
def test_float_optical_out_of_range_refused_with_observed_range(tmp_path, values, problem):
    img = np.full((2, 4, 3), values[0], np.float32)
    img[0, 0, 0] = values[1]
    p = tif(tmp_path / "img_dir/a.tif", img, photometric="rgb")
    png(tmp_path / "ann_dir/a.png", LOVEDA_RAW)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[p], problem=problem)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_optical_refused(tmp_path, bad):
    img = np.full((2, 4, 3), 0.5, np.float32)
    img[1, 2, 0] = bad
    p = tif(tmp_path / "img_dir/a.tif", img, photometric="rgb")
    png(tmp_path / "ann_dir/a.png", LOVEDA_RAW)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[p], problem="NaN and .* inf")


def test_negative_int16_optical_refused(tmp_path):
    img = np.full((2, 4, 3), 100, np.int16)
    img[0, 0, 0] = -3
    p = tif(tmp_path / "img_dir/a.tif", img, photometric="rgb")
    png(tmp_path / "ann_dir/a.png", LOVEDA_RAW)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[p], problem="negative values")


def test_grey_image_refused_for_rgb_format(tmp_path):
    p = png(tmp_path / "img_dir/a.png", rgb(2, 4)[..., 0])
    png(tmp_path / "ann_dir/a.png", LOVEDA_RAW)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[p], problem="greyscale")


def test_two_band_image_refused(tmp_path):
    p = tif(tmp_path / "img_dir/a.tif", np.zeros((2, 2, 4), np.uint8))
    png(tmp_path / "ann_dir/a.png", LOVEDA_RAW)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[p], problem="3 bands .* got 2")


def test_four_band_loveda_refused_but_potsdam_rgbir_named(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (4, 2, 4), dtype=np.uint8)
    p = tif(tmp_path / "img_dir/a.tif", img)
    png(tmp_path / "ann_dir/a.png", np.array([[1, 2, 3, 4], [5, 6, 1, 2]], np.uint8))
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[p], problem="got 4")
    s = MMSegFolder(tmp_path, encoding="potsdam")[0]
    assert s.meta["bands"] == ("R", "G", "B", "NIR") and s.optical.shape == (4, 2, 4)


def test_rgba_png_drops_alpha_keeps_rgb_names(tmp_path):
    rgba = np.concatenate([rgb(2, 4), np.full((2, 4, 1), 128, np.uint8)], axis=2)
    _pair(tmp_path, rgba, LOVEDA_RAW)
    s = MMSegFolder(tmp_path, encoding="loveda")[0]
    assert s.optical.shape == (3, 2, 4) and s.meta["bands"] == ("R", "G", "B")


# ------------------------------------------------------------------ damaged files


def test_truncated_png_image_names_file(tmp_path):
    img, _ = _pair(tmp_path, rgb(64, 64), np.ones((64, 64), np.uint8))
    truncate(img)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[img], problem="truncated")


def test_truncated_jpeg_image_names_file(tmp_path):
    img, _ = _pair(tmp_path, rgb(64, 64), np.ones((64, 64), np.uint8), img_ext=".jpg")
    truncate(img)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[img], problem="truncated")


def test_truncated_png_mask_names_file(tmp_path):
    _, m = _pair(tmp_path, rgb(64, 64), np.random.default_rng(0).integers(0, 8, (64, 64), dtype=np.uint8))
    truncate(m, 0.6)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[m], problem="truncated")


def test_not_an_image_names_file(tmp_path):
    _, m = _pair(tmp_path, rgb(4, 4), np.ones((4, 4), np.uint8))
    m.write_bytes(b"<html>404 not found</html>")
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[m], problem="valid PNG")


def test_decompression_bomb_png_names_file_and_fix(tmp_path, monkeypatch):
    img, _ = _pair(tmp_path, rgb(64, 64), np.ones((64, 64), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 > 2 * limit: Pillow's bomb error
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[img, "MAX_IMAGE_PIXELS"],
           problem="decompression bomb")


# ------------------------------------------------------------------ ambiguous folders


def test_duplicate_mask_stems_refused(tmp_path):
    _pair(tmp_path, rgb(2, 4), LOVEDA_RAW)
    tif(tmp_path / "ann_dir/a.tif", LOVEDA_RAW)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda"), names=["a.png", "a.tif", "ann_dir"],
           problem="more than one file")


def test_duplicate_image_stems_refused(tmp_path):
    _pair(tmp_path, rgb(2, 4), LOVEDA_RAW)
    jpg(tmp_path / "img_dir/a.jpg", rgb(2, 4))
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda"), names=["a.jpg", "a.png", "img_dir"],
           problem="more than one file")


def test_masks_without_images_reported(tmp_path):
    _pair(tmp_path, rgb(2, 4), LOVEDA_RAW)
    png(tmp_path / "ann_dir/orphan.png", LOVEDA_RAW)
    raises(FileNotFoundError, lambda: MMSegFolder(tmp_path, encoding="loveda"), names=["orphan.png"],
           problem="no image")


def test_images_without_masks_reported(tmp_path):
    _pair(tmp_path, rgb(2, 4), LOVEDA_RAW)
    png(tmp_path / "img_dir/lonely.png", rgb(2, 4))
    raises(FileNotFoundError, lambda: MMSegFolder(tmp_path, encoding="loveda"), names=["lonely.png"],
           problem="no mask")


def test_empty_image_file_refused(tmp_path):
    with pytest.warns(UserWarning, match="zero-size"):  # tifffile writes it, with a warning
        p = tif(tmp_path / "img_dir/a.tif", np.zeros((3, 0, 4), np.uint8))
    png(tmp_path / "ann_dir/a.png", LOVEDA_RAW)
    raises(ValueError, lambda: MMSegFolder(tmp_path, encoding="loveda")[0], names=[p], problem="empty")
