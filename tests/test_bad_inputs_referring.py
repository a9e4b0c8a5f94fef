"""Bad inputs for the referring readers (RRSIS-D's COCO annotations, RefSegRS masks) and COCO decoding."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from _bad_inputs import jpg, png, raises, rgb, tif, warns

from rslab.data.readers import RRSISD, RefSegRS, polygons_to_mask, rle_decode, rle_encode


def _rrsisd(root, segmentation, image_size=(8, 8)):
    h, w = image_size
    jpg(root / "images/1.jpg", rgb(h, w))
    instances = {"images": [{"id": 1, "file_name": "1.jpg", "height": h, "width": w}],
                 "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": segmentation}],
                 "categories": [{"id": 1, "name": "ship"}]}
    (root / "instances.json").write_text(json.dumps(instances))
    refs = [{"ref_id": 3, "image_id": 1, "ann_id": 7, "split": "test", "category_id": 1,
             "sentences": [{"raw": "the ship", "sent_id": 0}]}]
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs))
    return RRSISD(root, split="test")


@pytest.mark.parametrize("segmentation, problem", [
    ([[0, 0, float("nan"), 0, 4, 4, 0, 4]], "NaN/inf coordinates"),
    ([[0, 0, 4, 0, float("inf"), 4]], "NaN/inf coordinates"),
    ([[2, 2, 2, 2, 2, 2, 2, 2]], "degenerate"),
    ([[0, 0, 2, 2, 4, 4, 6, 6]], "degenerate"),       # collinear
    ([[0, 0, 4, 0, 4]], "even number >= 6"),
    ([[40, 40, 50, 40, 50, 50]], "outside the 8x8 image"),
    ([], "empty"),
    ([["a", "b", "c", "d", "e", "f"]], "not a flat list of numbers"),
])
def test_bad_polygons_name_file_and_annotation(tmp_path, segmentation, problem):
    ds = _rrsisd(tmp_path, segmentation)
    raises(ValueError, lambda: ds[0], names=["instances.json", "annotation 7"], problem=problem)


@pytest.mark.parametrize("rle, problem", [
    ({"size": [8, 8], "counts": [10, 5]}, "sum to 15"),
    ({"size": [8, 8], "counts": [10, -5, 59]}, "negative run"),
    ({"size": [8, 8], "counts": "0?\x7f"}, "invalid character"),
    ({"size": [8, 8], "counts": "a"}, "truncated COCO RLE|sum to"),
    ({"size": [8, 8], "counts": [10.5, 53.5]}, "whole run lengths"),
    ({"size": [0, 8], "counts": []}, "positive"),
    ({"size": "8x8", "counts": [64]}, "size"),
    ({"size": [4, 4], "counts": [10, 6]}, "differs from the image size"),
    ({"counts": [64]}, "'size' and 'counts'"),
])
def test_corrupt_rle_names_file_and_annotation(tmp_path, rle, problem):
    ds = _rrsisd(tmp_path, rle)
    raises(ValueError, lambda: ds[0], names=["instances.json", "annotation 7"], problem=problem)


def test_rle_that_decodes_to_empty_mask_refused(tmp_path):
    ds = _rrsisd(tmp_path, rle_encode(np.zeros((8, 8), bool)))
    raises(ValueError, lambda: ds[0], names=["annotation 7"], problem="empty mask")


def test_valid_polygon_partly_outside_is_clipped(tmp_path):
    ds = _rrsisd(tmp_path, [[-3, -3, 4, -3, 4, 4, -3, 4]])
    mask = ds[0].referring[0].mask
    assert mask[:4, :4].all() and not mask[4:].any()


def test_rle_round_trip_on_reader_path(tmp_path):
    m = np.zeros((8, 8), bool)
    m[2:5, 3:7] = True
    ds = _rrsisd(tmp_path, rle_encode(m))
    np.testing.assert_array_equal(ds[0].referring[0].mask, m)


def test_polygons_to_mask_direct_call_names_problem():
    raises(ValueError, lambda: polygons_to_mask([[0, 0, np.nan, 1, 1, 1]], 4, 4), problem="polygon 0 has NaN")
    raises(ValueError, lambda: rle_decode({"size": [2, 2], "counts": [1, 1]}), problem="sum to 2 but size 2x2")


# ------------------------------------------------------------------ RefSegRS


def _refsegrs(root, mask, image=None, mask_ext=".tif"):
    h, w = np.asarray(mask).shape[:2]
    (root / "output_phrase_test.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "output_phrase_test.txt").write_text("5 the road on the left\n")
    tif(root / "images/5.tif", rgb(h, w) if image is None else image, photometric="rgb")
    (tif if mask_ext == ".tif" else png)(root / f"masks/5{mask_ext}", mask)
    return RefSegRS(root, "test")


def test_refsegrs_0_1_mask_read_with_warning_not_empty(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[:, :2] = 1
    ds = _refsegrs(tmp_path, mask)
    s = warns(lambda: ds[0], names=["5.tif"], problem="0/1")
    assert s.referring[0].mask.sum() == 12


def test_refsegrs_0_255_mask_thresholded(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[:, :2] = 255
    assert _refsegrs(tmp_path, mask)[0].referring[0].mask.sum() == 12


def test_refsegrs_empty_mask_refused(tmp_path):
    ds = _refsegrs(tmp_path, np.zeros((6, 6), np.uint8))
    raises(ValueError, lambda: ds[0], names=["masks/5.tif", "the road on the left"], problem="no foreground")


def test_refsegrs_mask_out_of_range_refused(tmp_path):
    mask = np.zeros((6, 6), np.uint16)
    mask[0, 0] = 4000
    ds = _refsegrs(tmp_path, mask)
    raises(ValueError, lambda: ds[0], names=["5.tif"], problem="expected 0/255")


def test_refsegrs_duplicate_mask_files_refused(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[:3] = 255
    ds = _refsegrs(tmp_path, mask)
    png(tmp_path / "masks/5.png", mask)
    raises(ValueError, lambda: ds[0], names=["5.tif", "5.png"], problem="2 files for id")


def test_refsegrs_grey_image_refused(tmp_path):
    mask = np.full((6, 6), 255, np.uint8)
    (tmp_path / "images").mkdir(parents=True)
    ds = _refsegrs(tmp_path, mask)
    tif(tmp_path / "images/5.tif", rgb(6, 6)[..., 0])
    raises(ValueError, lambda: ds[0], names=["images/5.tif"], problem="got 1")


def test_duplicate_coco_ids_refused(tmp_path):
    _rrsisd(tmp_path, [[0, 0, 4, 0, 4, 4]])
    data = json.loads((tmp_path / "instances.json").read_text())
    data["annotations"].append(dict(data["annotations"][0], segmentation=[[4, 4, 8, 4, 8, 8]]))
    (tmp_path / "instances.json").write_text(json.dumps(data))
    raises(ValueError, lambda: RRSISD(tmp_path, split="test"), names=["instances.json", "annotations id 7"],
           problem="more than once")
