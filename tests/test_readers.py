"""Readers: write tiny files in each dataset's format, read them back, check values and errors."""

import json
import pickle

import numpy as np
import pytest
import tifffile
from PIL import Image

from rslab.data.readers import (
    DEEPGLOBE_CLASSES,
    ISPRS_CLASSES,
    LOVEDA_CLASSES,
    RRSISD,
    MMSegFolder,
    RefSegRS,
    find_sen1floods11_chip,
    polygons_to_mask,
    read_deepglobe,
    read_sen1floods11,
    real_samples_dir,
    rle_decode,
    rle_encode,
    s2_rgb,
)
from rslab.data.readers.coco_mask import rle_counts_from_string, rle_counts_to_string
from rslab.data.sample import IGNORE_INDEX

IGN = IGNORE_INDEX


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------- mmseg folders


def test_loveda_folder_with_split(tmp_path):
    img = _rgb(2, 4)
    raw = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    _png(tmp_path / "img_dir/train/a.png", img)
    _png(tmp_path / "ann_dir/train/a.png", raw)
    ds = MMSegFolder(tmp_path, split="train", encoding="loveda")
    assert len(ds) == 1 and ds.num_classes == 7 and ds.class_names == LOVEDA_CLASSES
    s = ds[0]
    np.testing.assert_array_equal(s.labels, [[IGN, 0, 1, 2], [3, 4, 5, 6]])
    assert s.labels.dtype == np.uint8  # smallest type holding the ids and 255
    assert s.optical.shape == (3, 2, 4) and s.optical.dtype == np.float32
    np.testing.assert_allclose(s.optical, np.moveaxis(img, -1, 0) / 255.0, atol=1e-7)
    assert LOVEDA_CLASSES[s.labels[0, 3]] == "road"  # raw 3 = road
    assert s.meta["gsd_m"] == 0.3


def test_potsdam_rgb_labels_with_compression_noise(tmp_path):
    # impervious, building, low veg, tree / car, clutter, boundary(black), impervious (noisy)
    lab = np.array(
        [[[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0]],
         [[255, 255, 0], [255, 0, 0], [0, 0, 0], [250, 131, 200]]],
        dtype=np.uint8,
    )
    _png(tmp_path / "img_dir/x.png", _rgb(2, 4))
    _png(tmp_path / "ann_dir/x.png", lab)
    s = MMSegFolder(tmp_path, encoding="potsdam")[0]
    np.testing.assert_array_equal(s.labels, [[0, 1, 2, 3], [4, 5, IGN, 0]])
    assert ISPRS_CLASSES[1] == "building" and ISPRS_CLASSES[4] == "car"


def test_vaihingen_mmseg_index_png_reduce_zero_label(tmp_path):
    raw = np.array([[0, 1, 2, 3], [4, 5, 6, 255]])
    _png(tmp_path / "img_dir/val/t.png", _rgb(2, 4))
    _png(tmp_path / "ann_dir/val/t.png", raw)
    s = MMSegFolder(tmp_path, "val", encoding="vaihingen")[0]
    np.testing.assert_array_equal(s.labels, [[IGN, 0, 1, 2], [3, 4, 5, IGN]])
    assert s.meta["bands"] == ("NIR", "R", "G")
    # the same ids saved as a palette ("P") PNG, as mmseg's converters often do: indices are read
    pal = Image.fromarray(raw.astype(np.uint8), mode="P")
    pal.putpalette([c for i in range(256) for c in (i, 255 - i, 0)])
    pal.save(tmp_path / "ann_dir/val/t.png")
    np.testing.assert_array_equal(MMSegFolder(tmp_path, "val", encoding="vaihingen")[0].labels, s.labels)


def test_mmseg_folder_iterates_in_sorted_order_and_unlabelled_split(tmp_path):
    for name in ("b", "a"):
        _png(tmp_path / f"img_dir/test/{name}.png", _rgb(3, 3))
    ds = MMSegFolder(tmp_path, "test", with_labels=False)
    assert [p.name for p in ds.images] == ["a.png", "b.png"]
    assert all(s.labels is None for s in ds)
    with pytest.raises(IndexError):
        ds[2]


def test_mmseg_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown encoding"):
        MMSegFolder(tmp_path, encoding="cityscapes")
    with pytest.raises(FileNotFoundError, match="img_dir"):
        MMSegFolder(tmp_path)
    _png(tmp_path / "img_dir/a.png", _rgb(2, 4))
    with pytest.raises(FileNotFoundError, match="with_labels=False"):
        MMSegFolder(tmp_path)
    (tmp_path / "ann_dir").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no mask .*\['a.png'\]"):
        MMSegFolder(tmp_path)
    # size mismatch
    _png(tmp_path / "ann_dir/a.png", np.ones((2, 3)))
    with pytest.raises(ValueError, match="size mismatch.*2x4.*2x3"):
        MMSegFolder(tmp_path)[0]
    # unknown label values are listed
    _png(tmp_path / "ann_dir/a.png", np.array([[1, 9, 9, 12], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \[9, 12\]"):
        MMSegFolder(tmp_path)[0]
    # unreadable file
    (tmp_path / "ann_dir/a.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="could not read image .*a.png"):
        MMSegFolder(tmp_path)[0]


def test_isprs_unknown_colour_listed(tmp_path):
    _png(tmp_path / "img_dir/a.png", _rgb(1, 2))
    _png(tmp_path / "ann_dir/a.png", np.array([[[255, 0, 255], [0, 0, 255]]]))
    with pytest.raises(ValueError, match=r"\(255, 0, 255\)"):
        MMSegFolder(tmp_path, encoding="potsdam")[0]
    _png(tmp_path / "ann_dir/a.png", np.array([[7, 1]]))
    with pytest.raises(ValueError, match=r"\[7\]"):
        MMSegFolder(tmp_path, encoding="potsdam")[0]


# ----------------------------------------------------------------- DeepGlobe


def test_deepglobe_colour_code(tmp_path):
    colours = [(0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0),
               (20, 140, 250)]  # last: noisy water -> thresholds to (0, 255, 255)=urban
    mask = np.array(colours, dtype=np.uint8).reshape(2, 4, 3)
    sat = _png(tmp_path / "1_sat.png", _rgb(2, 4))
    s = read_deepglobe(sat, _png(tmp_path / "1_mask.png", mask))
    np.testing.assert_array_equal(s.labels, [[0, 1, 2, 3], [4, 5, IGN, 0]])
    assert DEEPGLOBE_CLASSES[4] == "water"
    assert s.optical.shape == (3, 2, 4)
    assert read_deepglobe(sat).labels is None


def test_deepglobe_errors(tmp_path):
    sat = _png(tmp_path / "1_sat.png", _rgb(2, 4))
    with pytest.raises(FileNotFoundError, match="nope_mask.png"):
        read_deepglobe(sat, tmp_path / "nope_mask.png")
    with pytest.raises(ValueError, match="size mismatch"):
        read_deepglobe(sat, _png(tmp_path / "m.png", np.zeros((3, 4, 3))))
    with pytest.raises(ValueError, match="single-band"):
        read_deepglobe(sat, _png(tmp_path / "g.png", np.zeros((2, 4))))
    with pytest.raises(ValueError, match="3-band"):
        read_deepglobe(_png(tmp_path / "grey_sat.png", np.zeros((2, 4))))


# ----------------------------------------------------------------- Sen1Floods11

WEST, NORTH, STEP = -0.78, 38.13, 0.0001


def _geotags(n_keys_model_type=2):
    keys = (1, 1, 0, 3, 1024, 0, 1, n_keys_model_type, 1025, 0, 1, 1, 2048, 0, 1, 4326)
    return [
        (33550, "d", 3, (STEP, STEP, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, WEST, NORTH, 0.0), True),
        (34735, "H", len(keys), keys, True),
    ]


def _write_chip(tmp_path, h=4, w=5, s1_bands=2, s2_bands=13, label_hw=None, geo=True):
    rng = np.random.default_rng(1)
    s1 = rng.uniform(-25, 0, (s1_bands, h, w)).astype(np.float32)
    s1[0, 0, 0] = np.nan
    s2 = rng.integers(0, 5000, (s2_bands, h, w)).astype(np.int16)
    lh, lw = label_hw or (h, w)
    label = np.zeros((lh, lw), np.int16)
    label[0, :] = -1
    label[1, :2] = 1
    tags = _geotags() if geo else []
    paths = {}
    for key, name, arr in (("s1_path", "S1Hand", s1), ("s2_path", "S2Hand", s2), ("label_path", "LabelHand", label)):
        paths[key] = tmp_path / f"Chip_1_{name}.tif"
        kw = {"planarconfig": "separate"} if arr.ndim == 3 else {}
        tifffile.imwrite(paths[key], arr, photometric="minisblack", extratags=tags, **kw)
    return paths, s1, s2, label


def test_sen1floods11_values_and_bounds(tmp_path):
    paths, s1, s2, _ = _write_chip(tmp_path)
    assert find_sen1floods11_chip(tmp_path) == paths
    s = read_sen1floods11(**paths)
    assert s.sar.shape == (2, 4, 5) and s.sar.dtype == np.float32
    assert np.isnan(s.sar[0, 0, 0])  # nodata kept as NaN
    np.testing.assert_array_equal(s.sar[:, 1:], s1[:, 1:])
    assert s.optical.shape == (13, 4, 5) and s.optical.dtype == np.float32
    np.testing.assert_allclose(s.optical, s2 / 10000.0, rtol=1e-6)
    expected = np.zeros((4, 5), np.int64)
    expected[0] = IGN
    expected[1, :2] = 1
    np.testing.assert_array_equal(s.labels, expected)
    west, south, east, north = s.bounds
    assert west == pytest.approx(WEST) and north == pytest.approx(NORTH)
    assert east == pytest.approx(WEST + 5 * STEP) and south == pytest.approx(NORTH - 4 * STEP)


def test_sen1floods11_without_georeference_or_optional_files(tmp_path):
    paths, *_ = _write_chip(tmp_path, geo=False)
    s = read_sen1floods11(paths["s1_path"])
    assert s.bounds is None and s.optical is None and s.labels is None


def test_sen1floods11_projected_crs_gives_no_degree_bounds(tmp_path):
    paths, *_ = _write_chip(tmp_path)
    keys = (1, 1, 0, 1, 1024, 0, 1, 1)  # GTModelTypeGeoKey = projected
    tifffile.imwrite(paths["s1_path"], np.full((2, 4, 5), -12.0, np.float32), photometric="minisblack",
                     planarconfig="separate", extratags=_geotags()[:2] + [(34735, "H", len(keys), keys, True)])
    s = read_sen1floods11(paths["s1_path"])
    assert s.bounds is None and s.meta["crs_extent"][0] == pytest.approx(WEST)
    # tiepoint and scale but no GeoKeyDirectory: CRS unknown, so no degree bounds either
    tifffile.imwrite(paths["s1_path"], np.full((2, 4, 5), -12.0, np.float32), photometric="minisblack",
                     planarconfig="separate", extratags=_geotags()[:2])
    assert read_sen1floods11(paths["s1_path"]).bounds is None


def test_sen1floods11_errors(tmp_path):
    for sub in "abc":
        (tmp_path / sub).mkdir()
    paths, *_ = _write_chip(tmp_path / "a", s1_bands=3)
    with pytest.raises(ValueError, match="2 bands"):
        read_sen1floods11(paths["s1_path"])
    paths, *_ = _write_chip(tmp_path / "b", s2_bands=4)
    with pytest.raises(ValueError, match="13 bands.*got 4"):
        read_sen1floods11(paths["s1_path"], paths["s2_path"])
    paths, *_ = _write_chip(tmp_path / "c", label_hw=(4, 6))
    with pytest.raises(ValueError, match="size mismatch"):
        read_sen1floods11(paths["s1_path"], label_path=paths["label_path"])
    tifffile.imwrite(paths["label_path"], np.tile(np.array([0, 1, 3, -5, 0], np.int16), (4, 1)))
    with pytest.raises(ValueError, match=r"\[-5, 3\]"):
        read_sen1floods11(paths["s1_path"], label_path=paths["label_path"])
    with pytest.raises(FileNotFoundError, match="missing_S1Hand.tif"):
        read_sen1floods11(tmp_path / "missing_S1Hand.tif")
    (tmp_path / "bad_S1Hand.tif").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not read TIFF .*bad_S1Hand"):
        read_sen1floods11(tmp_path / "bad_S1Hand.tif")


def test_s2_rgb_uses_b4_b3_b2_with_percentile_stretch():
    optical = np.zeros((13, 1, 101), np.float32)
    optical[3, 0] = np.linspace(0.0, 1.0, 101)  # B4: 2nd pct 0.02, 98th pct 0.98
    optical[2, 0] = 0.5  # B3 constant
    optical[1, 0] = np.linspace(1.0, 0.0, 101)  # B2 reversed
    rgb = s2_rgb(optical)
    assert rgb.shape == (3, 1, 101)
    assert rgb[0, 0, 2] == pytest.approx(0.0, abs=1e-5)
    assert rgb[0, 0, 98] == pytest.approx(1.0, abs=1e-5)
    assert rgb[0, 0, 50] == pytest.approx(0.5, abs=1e-5)
    assert rgb[2, 0, 0] == 1.0 and rgb[2, 0, 100] == 0.0
    assert np.all(rgb[1] == 0.0)  # constant band has no spread
    with pytest.raises(ValueError, match="13"):
        s2_rgb(np.zeros((3, 2, 2)))


# ----------------------------------------------------------------- COCO masks


def test_rle_string_hand_decoded():
    # counts 1,2,3,1 -> "1","2","3", then 1 - counts[1] = -1 -> 5-bit 31 (sign bit set) + 48 = "O"
    assert rle_counts_to_string([1, 2, 3, 1]) == "123O"
    assert rle_counts_from_string("123O") == [1, 2, 3, 1]
    mask = rle_decode({"size": [1, 7], "counts": "123O"})
    np.testing.assert_array_equal(mask, [[0, 1, 1, 0, 0, 0, 1]])


def test_rle_is_column_major():
    # counts [1, 2, 1] over a 2x2 mask in Fortran order: (0,0)=0, (1,0)=1, (0,1)=1, (1,1)=0
    np.testing.assert_array_equal(rle_decode({"size": [2, 2], "counts": [1, 2, 1]}), [[0, 1], [1, 0]])


def test_rle_multi_character_counts_roundtrip():
    # 100 = 0b11_00100: groups 4, 3 -> chr(4+32+48), chr(3+48) = "T3"
    assert rle_counts_to_string([100]) == "T3"
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((37, 23)) < rng.random()
        mask[:10, :7] = True
        np.testing.assert_array_equal(rle_decode(rle_encode(mask)), mask)


def test_rle_errors():
    with pytest.raises(ValueError, match="sum to 3"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError, match="'size' and 'counts'"):
        rle_decode([1, 2])


def test_polygon_mask_pixel_centre_rule():
    # Pixel (r, c) is inside when its centre (c + .5, r + .5) is: corners 1 and 3 -> pixels 1..2
    # (what pycocotools gives; checked against pycocotools 2.0.11 on 2000 random polygons).
    mask = polygons_to_mask([[1, 1, 3, 1, 3, 3, 1, 3]], 5, 5)
    expected = np.zeros((5, 5), bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(mask, expected)
    # corners 1.2 and 3.7: centres 1.5, 2.5, 3.5 inside -> pixels 1..3
    mask = polygons_to_mask([[1.2, 1.2, 3.7, 1.2, 3.7, 3.7, 1.2, 3.7]], 6, 6)
    expected = np.zeros((6, 6), bool)
    expected[1:4, 1:4] = True
    np.testing.assert_array_equal(mask, expected)
    # right triangle (0,0)-(4,0)-(0,4): centres with x + y < 4 are in; those exactly on the
    # hypotenuse (x + y = 4, e.g. (1.5, 2.5)) are out -> rows 0..2 hold 3, 2, 1 pixels.
    tri = polygons_to_mask([[0, 0, 4, 0, 0, 4]], 4, 4)
    np.testing.assert_array_equal(tri, [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    # two polygons of one object are unioned; one partly outside the image is clipped
    two = polygons_to_mask([[0, 0, 1, 0, 1, 1, 0, 1], [3, 3, 9, 3, 9, 9, 3, 9]], 5, 5)
    assert two.sum() == 1 + 4 and two[0, 0] and two[4, 4]
    with pytest.raises(ValueError, match="even number"):
        polygons_to_mask([[1, 1, 3]], 5, 5)


# ----------------------------------------------------------------- referring datasets


def _write_rrsisd(root):
    root.mkdir(parents=True, exist_ok=True)
    _png(root / "images/00001.jpg", _rgb(4, 6))
    _png(root / "images/00002.jpg", _rgb(4, 6, seed=3))
    rle_mask = np.zeros((4, 6), bool)
    rle_mask[2:, 4:] = True
    instances = {
        "images": [{"id": 1, "file_name": "00001.jpg", "height": 4, "width": 6},
                   {"id": 2, "file_name": "00002.jpg", "height": 4, "width": 6}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
            {"id": 11, "image_id": 1, "category_id": 4, "segmentation": rle_encode(rle_mask)},
            {"id": 12, "image_id": 2, "category_id": 3, "segmentation": {"size": [4, 6], "counts": [20, 4]}},
        ],
        "categories": [{"id": 3, "name": "airplane"}, {"id": 4, "name": "vehicle"}],
    }
    (root / "instances.json").write_text(json.dumps(instances))
    refs = [
        {"ref_id": 0, "image_id": 1, "ann_id": 10, "split": "train", "category_id": 3,
         "sentences": [{"raw": "The airplane on the top left", "sent": "the airplane on the top left", "sent_id": 0},
                       {"sent": "a plane at upper left", "sent_id": 1}]},
        {"ref_id": 1, "image_id": 1, "ann_id": 11, "split": "test", "category_id": 4,
         "sentences": [{"raw": "vehicle lower right", "sent_id": 2}]},
        {"ref_id": 2, "image_id": 2, "ann_id": 12, "split": "train", "category_id": 3,
         "sentences": [{"raw": "plane in the last column", "sent_id": 3}]},
    ]
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return rle_mask


def test_rrsisd_reader(tmp_path):
    rle_mask = _write_rrsisd(tmp_path / "rrsisd")
    train = RRSISD(tmp_path / "rrsisd", split="train")
    assert len(train) == 3  # 2 sentences + 1 sentence
    s0, s1, s2 = list(train)
    assert s0.referring[0].text == "The airplane on the top left"
    assert s1.referring[0].text == "a plane at upper left"  # falls back to "sent"
    assert s0.referring[0].target_class == "airplane" and s0.referring[0].instance_id == 10
    poly = np.zeros((4, 6), bool)
    poly[0:2, 0:2] = True  # square with corners 0 and 2: pixel centres 0.5 and 1.5
    np.testing.assert_array_equal(s0.referring[0].mask, poly)
    last_col = np.zeros((4, 6), bool)
    last_col[:, 5] = True  # uncompressed counts [20, 4]: the last 4 pixels in column-major order
    np.testing.assert_array_equal(s2.referring[0].mask, last_col)
    assert s0.optical.shape == (3, 4, 6) and s0.shape == (4, 6)
    test = RRSISD(tmp_path / "rrsisd", split="test")
    np.testing.assert_array_equal(test[0].referring[0].mask, rle_mask)
    assert test[0].meta["ref_id"] == 1


def test_rrsisd_errors(tmp_path):
    _write_rrsisd(tmp_path)
    with pytest.raises(ValueError, match=r"splits present: \['test', 'train'\]"):
        RRSISD(tmp_path, split="val")
    (tmp_path / "images").rename(tmp_path / "imgs")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        RRSISD(tmp_path, split="test")
    ds = RRSISD(tmp_path, split="test", image_dir=tmp_path / "imgs")
    assert len(ds) == 1

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        RRSISD(tmp_path, split="test", image_dir=tmp_path / "imgs")
    (tmp_path / "refs(unc).p").unlink()
    with pytest.raises(FileNotFoundError, match=r"refs\(unc\).p"):
        RRSISD(tmp_path)


def test_refsegrs_reader(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images/17.tif", _rgb(3, 4), photometric="rgb")
    tifffile.imwrite(tmp_path / "masks/17.tif", np.array([[0, 40, 50, 51], [255, 0, 0, 0], [0, 0, 0, 200]], np.uint8))
    _png(tmp_path / "images/18.png", _rgb(3, 4, seed=5))
    _png(tmp_path / "masks/18.png", np.full((3, 4), 255))
    (tmp_path / "output_phrase_test.txt").write_text("17 road along the river\n\n18 vehicle\n17 the  road\n")
    ds = RefSegRS(tmp_path, "test")
    assert len(ds) == 3
    s = ds[0]
    assert s.referring[0].text == "road along the river"
    np.testing.assert_array_equal(s.referring[0].mask,
                                  [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]])  # > 50, not >= 50
    assert s.optical.shape == (3, 3, 4)
    assert ds[1].referring[0].mask.all()
    assert ds[2].referring[0].text == "the road"


def test_refsegrs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="output_phrase_val.txt"):
        RefSegRS(tmp_path, "val")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "output_phrase_test.txt").write_text("lonely\n")
    with pytest.raises(ValueError, match="line 1"):
        RefSegRS(tmp_path)
    (tmp_path / "output_phrase_test.txt").write_text("5 a building\n")
    _png(tmp_path / "images/5.png", _rgb(3, 4))
    with pytest.raises(FileNotFoundError, match="no mask for id '5'"):
        RefSegRS(tmp_path)[0]
    _png(tmp_path / "masks/5.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="size mismatch"):
        RefSegRS(tmp_path)[0]


# ----------------------------------------------------------------- real_samples_dir


def test_real_samples_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RSLAB_REAL_SAMPLES", str(tmp_path))
    assert real_samples_dir() == tmp_path
    monkeypatch.setenv("RSLAB_REAL_SAMPLES", str(tmp_path / "absent"))
    assert real_samples_dir() is None
