"""Referring-segmentation datasets: (RGB image, expression, mask) items at original resolution."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from rslab.data.referring import (
    ReferringDataset,
    ReferringFilter,
    collate_referring,
    resize_rgb,
    rgb_image,
    split_scene_indices,
)
from rslab.data.sample import ReferringExpression, Sample


def _mask(h, w, top, left, size):
    m = np.zeros((h, w), bool)
    m[top:top + size, left:left + size] = True
    return m


def _samples():
    """Two 8x8 images: three expressions with targets of 16, 4 and 0 pixels."""
    img0 = np.full((4, 8, 8), 0.5, np.float32)  # RGB + NIR: the NIR band must be dropped
    img0[3] = 9.0
    img1 = np.zeros((3, 8, 8), np.float32)
    img1[0] = 1.0
    s0 = Sample(optical=img0, referring=[
        ReferringExpression("the big field", _mask(8, 8, 0, 0, 4), "cropland", 1),
        ReferringExpression("the tiny car on the right", _mask(8, 8, 6, 6, 2), "car", 2),
    ])
    s1 = Sample(optical=img1, referring=[ReferringExpression("the lake", np.zeros((8, 8), bool), "lake", 3)])
    return [s0, s1]


def test_rgb_image_bands_and_errors():
    rgbn = np.random.default_rng(0).random((4, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(rgb_image(rgbn), rgbn[:3])
    s2 = np.random.default_rng(0).random((13, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(rgb_image(s2, (3, 2, 1)), s2[[3, 2, 1]])
    with pytest.raises(ValueError, match="not RGB"):
        rgb_image(np.zeros((2, 5, 5), np.float32))  # e.g. SAR VV/VH passed as an image
    with pytest.raises(ValueError, match="no optical"):
        rgb_image(None)
    odd = np.array([[[np.nan, 2.0]], [[-1.0, 0.3]], [[0.1, 0.2]]], np.float32)
    np.testing.assert_allclose(rgb_image(odd), [[[0.0, 1.0]], [[0.0, 0.3]], [[0.1, 0.2]]], rtol=1e-6)


def test_filter_keeps_by_area_class_and_words():
    big = ReferringExpression("the big field", _mask(8, 8, 0, 0, 4), "cropland")  # 16 / 64 = 0.25
    small = ReferringExpression("the tiny car on the right", _mask(8, 8, 6, 6, 2), "car")  # 4 / 64
    empty = ReferringExpression("the lake", np.zeros((8, 8), bool), "lake")
    assert ReferringFilter().keep(big) and ReferringFilter().keep(small)
    assert not ReferringFilter().keep(empty)  # nothing to find
    assert ReferringFilter(min_area_frac=0.1).keep(big) and not ReferringFilter(min_area_frac=0.1).keep(small)
    assert not ReferringFilter(classes=("car",)).keep(big)
    assert ReferringFilter(max_words=3).keep(big) and not ReferringFilter(max_words=3).keep(small)
    with pytest.raises(ValueError, match="min_area_frac"):
        ReferringFilter(min_area_frac=1.0)
    with pytest.raises(ValueError, match="max_per_scene"):
        ReferringFilter(max_per_scene=0)


def test_dataset_items_keep_original_resolution():
    ds = ReferringDataset(_samples())
    assert len(ds) == 2 and ds.index == [(0, 0), (0, 1)]  # the empty-mask expression is dropped
    item = ds[1]
    assert item["text"] == "the tiny car on the right" and item["target_class"] == "car" and item["source"] == 0
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert torch.all(item["image"] == 0.5)  # NIR (9.0) is not in the RGB image
    assert item["mask"].dtype == torch.bool and item["mask"].shape == (8, 8) and int(item["mask"].sum()) == 4
    assert ds[-1]["text"] == ds[1]["text"]
    with pytest.raises(IndexError):
        ds[2]
    assert ds.class_counts() == {"cropland": 1, "car": 1}
    assert ReferringDataset(_samples(), filter=ReferringFilter(min_area_frac=0.1)).texts == ["the big field"]
    with pytest.raises(ValueError, match="no referring expressions left"):
        ReferringDataset(_samples(), filter=ReferringFilter(classes=("river",)))


def test_stacked_resizes_images_and_masks():
    ds = ReferringDataset(_samples())
    st = ds.stacked(4)
    assert st["images"].shape == (2, 3, 4, 4) and st["targets"].shape == (2, 4, 4)
    assert st["texts"] == ["the big field", "the tiny car on the right"]
    # the 4x4 field in the top-left corner of 8x8 becomes the 2x2 top-left block at 4x4 (nearest)
    expected = torch.zeros(4, 4)
    expected[:2, :2] = 1
    torch.testing.assert_close(st["targets"][0], expected)
    torch.testing.assert_close(st["targets"][1].sum(), torch.tensor(1.0))
    torch.testing.assert_close(st["images"], torch.full((2, 3, 4, 4), 0.5))  # a flat image stays flat
    with pytest.raises(ValueError, match="size"):
        ds.stacked(0)


def test_resize_rgb_antialiases():
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2
    img = checker.float().expand(1, 3, 16, 16)
    out = resize_rgb(img, 4)
    torch.testing.assert_close(out, torch.full((1, 3, 4, 4), 0.5), atol=0.02, rtol=0)  # no aliasing
    assert resize_rgb(img, 16) is img


class _CountingReader(Sequence):
    """A lazy reader stand-in: one expression per item, counts the images it reads."""

    def __init__(self, n):
        self.n, self.reads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.reads += 1
        return Sample(optical=np.full((3, 6, 10), i / 10, np.float32),
                      referring=[ReferringExpression(f"object {i}", _mask(6, 10, 0, i, 2))])


def test_from_reader_is_lazy_and_keeps_sizes():
    reader = _CountingReader(5)
    ds = ReferringDataset.from_reader(reader, limit=3)
    assert reader.reads == 0 and len(ds) == 3
    item = ds[2]
    assert reader.reads == 1 and item["mask"].shape == (6, 10) and item["text"] == "object 2"
    batch = collate_referring([ds[0], ds[1]])
    assert batch["images"].shape == (2, 3, 6, 10) and batch["texts"] == ["object 0", "object 1"]
    assert [m.shape for m in batch["masks"]] == [(6, 10), (6, 10)]
    with pytest.raises(ValueError, match="no items"):
        ReferringDataset.from_reader(reader, limit=0)


def test_from_world_heldout_split():
    from rslab.data.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(size=64, nir=True), seed=0)
    train_idx, eval_idx = split_scene_indices(3, 2)
    assert set(train_idx).isdisjoint(eval_idx) and list(eval_idx) == [3, 4]
    filt = ReferringFilter(min_area_frac=0.01)
    train = ReferringDataset.from_world(world, train_idx, filt)
    held = ReferringDataset.from_world(world, eval_idx, filt)
    assert {i for i, _ in held.index} <= {0, 1} and held.num_images <= 2
    for k in range(len(train)):
        item = train[k]
        scene = world.scene(train_idx[item["source"]])
        match = [e for e in scene.referring if e.text == item["text"]]
        assert len(match) == 1
        np.testing.assert_array_equal(item["mask"].numpy(), match[0].mask)  # original 64x64 mask
        assert item["mask"].float().mean() >= 0.01
        np.testing.assert_array_equal(item["image"].numpy(), scene.optical[:3])
    with pytest.raises(ValueError):
        split_scene_indices(0, 2)


def test_expression_kinds():
    from rslab.data.referring import expression_kind

    assert expression_kind("the river") == "class only"
    assert expression_kind("the largest crop field") == "size"
    assert expression_kind("the leftmost warehouse") == "extreme position"
    assert expression_kind("the lake in the top left corner") == "grid position"
    assert expression_kind("the crop field nearest the river") == "relation"
    assert expression_kind("the warehouse with a red roof") == "colour"
    assert expression_kind("the pale yellow crop field") == "class only"  # colour words not given
    assert expression_kind("the pale yellow crop field", ["pale yellow"]) == "colour"
    data = ReferringDataset(_samples(), index=[(0, 0), (0, 1)])
    assert data.kind_counts() == {"class only": 1, "grid position": 1}
    with pytest.raises(ValueError, match="non-empty"):
        expression_kind("  ")


def test_class_oracle_scores_on_synthetic_scenes():
    """The class-union oracle is exact for a class that occurs once and never above 1."""
    from rslab.data.referring import expression_kind
    from rslab.data.synthetic import SyntheticWorld, WorldConfig
    from rslab.recipes.referring import class_oracle_scores

    world = SyntheticWorld(WorldConfig(size=64, nir=False), seed=0)
    filt = ReferringFilter(min_area_frac=0.05)
    out = class_oracle_scores(world, range(6), filt)
    assert set(out) == {"class_union", "largest_of_class"}
    n = sum(filt.keep(e) for i in range(6) for e in world.scene(i).referring)
    for m in out.values():
        assert m["n"] == n and 0.0 < m["miou"] <= 1.0
    # expressions of a class that occurs once ("the river") are solved exactly by both oracles
    single = [(i, e) for i in range(6) for e in world.scene(i).referring
              if filt.keep(e) and expression_kind(e.text) == "class only"]
    if single:
        i, e = single[0]
        one = class_oracle_scores(world, [i], ReferringFilter(min_area_frac=0.05, classes=(e.target_class,)))
        assert one["class_union"]["pr50"] > 0
    with pytest.raises(ValueError, match="no expressions"):
        class_oracle_scores(world, range(2), ReferringFilter(classes=("no such class",)))


def test_segment_masks_instances_and_stuff_components():
    from rslab.data.referring import segment_masks

    inst = np.zeros((8, 8), np.int64)
    inst[0:3, 0:3] = 1   # an instance of 9 px
    inst[7, 7] = 2       # an instance of 1 px (dropped by min_area_frac)
    labels = np.zeros((8, 8), np.int64)
    labels[:, 5:] = 4    # a stuff class in two pieces: rows 0-3 and rows 5-7 of columns 5-7
    labels[4, 5:] = 0
    segs = segment_masks(inst, labels, min_area_frac=0.05)
    # instance 1 (9 px); label 0 outside the instances; label 4 in two 4-connected pieces (rows 0-3: 12 px,
    # rows 5-7: 9 px less the 1 px instance 2 at (7, 7) = 8 px)
    assert any(m.sum() == 9 and m[:3, :3].all() for m in segs)
    assert not any(m[7, 7] and m.sum() == 1 for m in segs)
    stuff4 = [m for m in segs if m[:, 5:].any() and not m[:, :5].any()]
    assert len(stuff4) == 2 and sorted(int(m.sum()) for m in stuff4) == [8, 12]  # 4-connected pieces, no instance px
    covered = np.zeros((8, 8), int)
    for m in segs:
        covered += m
    assert covered.max() == 1  # class-agnostic segments do not overlap
    with pytest.raises(ValueError, match="same|one size"):
        segment_masks(inst, labels[:4])
    with pytest.raises(ValueError, match="min_area_frac"):
        segment_masks(inst, labels, 1.0)


def test_promptable_segments_from_world():
    from rslab.data.referring import promptable_segments
    from rslab.data.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(size=64, nir=False), seed=0)
    segs = promptable_segments(world, [1, 2], size=32, min_area_frac=0.02)
    n_img = segs["images"].shape[0]
    assert segs["images"].shape[1:] == (3, 32, 32) and 1 <= n_img <= 2
    assert segs["masks"].shape[1:] == (32, 32) and segs["masks"].shape[0] == segs["image_index"].shape[0] > 2
    assert int(segs["image_index"].min()) == 0 and int(segs["image_index"].max()) == n_img - 1
    assert bool((segs["masks"].flatten(1).sum(1) > 0).all()) and set(segs["masks"].unique().tolist()) <= {0.0, 1.0}
    assert segs["scene_indices"] == [1, 2]
    with pytest.raises(ValueError, match="no scene"):
        promptable_segments(world, [], size=32)
