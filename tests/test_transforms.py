"""Paired transforms keep optical, SAR, labels, instances and referring masks aligned."""

import re

import numpy as np
import pytest
import torch

from rslab.data.datasets import SyntheticSegmentation
from rslab.data.sample import ReferringExpression, Sample
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.data.transforms import (
    CenterCrop,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRot90,
    crop,
    flip,
    resize,
    rewrite_directions,
    rot90,
    sample_to_tensors,
)

OPT = np.array([0.1, 0.3, 0.5, 0.7, 0.9], np.float32)  # optical value per block class
SAR = np.array([-25.0, -18.0, -12.0, -6.0, 0.0], np.float32)  # VV dB per block class


def block_sample(H=48, W=64) -> Sample:
    """Blocks of 8x8 px with known class; every field is a function of the class."""
    rng = np.random.default_rng(0)
    cls = rng.integers(0, 5, size=(H // 8, W // 8))
    labels = np.kron(cls, np.ones((8, 8), np.int64))
    inst = np.kron(np.arange(cls.size).reshape(cls.shape) + 1, np.ones((8, 8), np.int32)).astype(np.int32)
    optical = np.stack([OPT[labels]] * 3)
    sar = np.stack([SAR[labels], SAR[labels] - 7])
    refs = [ReferringExpression("the block on the left", inst == 1, "x", 1)]
    return Sample(optical=optical, sar=sar.astype(np.float32), labels=labels, instances=inst, referring=refs,
                  bounds=(10.0, 40.0, 11.0, 41.0), meta={})


def marked(s: Sample, r: int, c: int) -> Sample:
    s.optical[:, r, c] = 0.999
    s.sar[:, r, c] = 3.5
    s.labels[r, c] = 9
    s.instances[r, c] = 999
    return s


def where(s: Sample):
    spots = [tuple(np.argwhere(s.optical[0] == np.float32(0.999))[0]),
             tuple(np.argwhere(s.sar[0] == np.float32(3.5))[0]),
             tuple(np.argwhere(s.labels == 9)[0]), tuple(np.argwhere(s.instances == 999)[0])]
    assert len(set(spots)) == 1, spots
    return spots[0]


def test_known_pixel_moves_consistently():
    H, W, r, c = 48, 64, 5, 11
    s = marked(block_sample(H, W), r, c)
    assert where(flip(s, True)) == (r, W - 1 - c)
    assert where(flip(s, False)) == (H - 1 - r, c)
    assert where(rot90(s, 1)) == (W - 1 - c, r)
    assert where(rot90(s, 2)) == (H - 1 - r, W - 1 - c)
    assert where(crop(s, 2, 3, 20, 20)) == (r - 2, c - 3)
    up = resize(s, (96, 128))  # 2x nearest: the marker becomes a 2x2 block in labels
    assert np.argwhere(up.labels == 9).tolist() == [[2 * r + i, 2 * c + j] for i in (0, 1) for j in (0, 1)]
    assert rot90(s, 1).shape == (W, H)


@pytest.mark.parametrize("seed", range(4))
def test_random_resized_crop_keeps_fields_aligned(seed):
    s = block_sample()
    t = Compose([RandomHorizontalFlip(), RandomRot90(), RandomResizedCrop(40, scale=(0.3, 0.8))])
    out = t(s, torch.Generator().manual_seed(seed))
    assert out.shape == (40, 40) and out.optical.shape == (3, 40, 40) and out.sar.shape == (2, 40, 40)
    # away from block borders (where interpolation mixes classes) every field matches its label
    lab = out.labels
    interior = np.ones_like(lab, bool)
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            interior &= np.roll(np.roll(lab, dy, 0), dx, 1) == lab
    interior[:2] = interior[-2:] = False
    interior[:, :2] = interior[:, -2:] = False
    assert interior.sum() > 200
    np.testing.assert_allclose(out.optical[0][interior], OPT[lab[interior]], atol=1e-4)
    np.testing.assert_allclose(out.sar[0][interior], SAR[lab[interior]], atol=1e-3)


def test_sar_resampled_in_linear_intensity():
    s = Sample(sar=np.array([[[-10.0, -20.0], [-20.0, -10.0]]] * 2, np.float32), labels=np.zeros((2, 2), np.int64))
    small = resize(s, 1)
    expected = 10 * np.log10((0.1 + 0.01) / 2)  # -12.6 dB, not the dB mean -15
    np.testing.assert_allclose(small.sar[:, 0, 0], expected, atol=1e-4)


def test_direction_words_follow_the_geometry():
    s = block_sample()
    assert flip(s, True).referring[0].text == "the block on the right"
    rot = lambda d: (-d[1], d[0])  # 90 degrees counter-clockwise
    assert rewrite_directions("the car in the top left corner", rot) == "the car in the bottom left corner"
    assert rewrite_directions("the leftmost house at the top", rot) == "the bottommost house on the left"
    assert rewrite_directions("the largest lake", rot) == "the largest lake"


def test_rewritten_extremes_are_true_after_transforms():
    world = SyntheticWorld(WorldConfig(size=128), seed=2)
    checked = 0
    for i in range(8):
        s = world.scene(i)
        for k, out in enumerate([flip(s, True), flip(s, False), rot90(s, 1), rot90(s, 3)]):
            for r in out.referring:
                np.testing.assert_array_equal(r.mask, out.instances == r.instance_id)
                m = re.match(r"the (leftmost|rightmost|topmost|bottommost) ", r.text)
                if not m:
                    continue
                cls = out.meta["instance_class"]
                ids = [j for j in np.unique(out.instances) if j > 0 and cls[j] == cls[r.instance_id]]
                axis, sign = {"leftmost": (1, 1), "rightmost": (1, -1), "topmost": (0, 1),
                              "bottommost": (0, -1)}[m.group(1)]
                pos = {j: sign * np.nonzero(out.instances == j)[axis].mean() for j in ids}
                assert min(pos, key=pos.get) == r.instance_id, (r.text, k)
                checked += 1
    assert checked >= 10


def test_crop_bounds_and_referring():
    s = block_sample(48, 64)
    out = crop(s, 0, 0, 24, 32)
    np.testing.assert_allclose(out.bounds, (10.0, 40.5, 10.5, 41.0))
    assert out.referring == []
    assert flip(s).bounds is None
    with pytest.raises(ValueError, match="does not fit"):
        crop(s, 40, 0, 20, 20)
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(100)(s)
    assert CenterCrop(16)(s).shape == (16, 16)


def test_sample_to_tensors():
    s = block_sample()
    s.sar[1, 0, 0] = np.nan
    t = sample_to_tensors(s)
    assert t["optical"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    assert t["sar"].min() >= -1 and t["sar"].max() <= 1
    assert not t["sar_valid"][0, 0] and t["sar_valid"].sum() == 48 * 64 - 1
    assert t["sar"][1, 0, 0] == 0 and torch.isnan(t["sar_db"][1, 0, 0])
    # -25 dB maps to (-25 + 30) / 35 * 2 - 1
    i, j = np.argwhere(s.labels == 0)[0]
    assert abs(float(t["sar"][0, i, j]) - (5 / 35 * 2 - 1)) < 1e-6
    assert t["valid"].all()


def test_dataset_levels_collate_and_referring():
    world = SyntheticWorld(WorldConfig(size=64), seed=0)
    leaf = SyntheticSegmentation(world, 4)
    coarse = SyntheticSegmentation(world, [0, 1, 2, 3], level=1, referring="first", cache=True)
    assert coarse.num_classes == 5 and coarse.class_names[0] == "built-up"
    a, b = leaf[1], coarse[1]
    lut = torch.from_numpy(world.tree.level_lut(1))
    assert torch.equal(b["labels"], lut[a["labels"]])
    assert b["labels"].max() < 5
    if b["ref_text"]:
        assert b["ref_mask"].any()
    batch = next(iter(torch.utils.data.DataLoader(coarse, batch_size=4)))
    assert batch["optical"].shape == (4, 4, 64, 64) and batch["ref_mask"].shape == (4, 64, 64)
    assert coarse.sample(0) is coarse.sample(0)  # cached
    with pytest.raises(ValueError, match="referring"):
        SyntheticSegmentation(world, 2, referring="all")
