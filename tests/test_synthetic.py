"""The synthetic optical/SAR world: determinism, shapes, coverage, SAR physics and text."""

import re

import numpy as np
import pytest

from rslab.data.sar import db_to_linear
from rslab.data.synthetic import SyntheticWorld, WorldConfig, load_sample_npz, main, save_sample_npz
from rslab.data.synthetic_render import apply_speckle

RES, IND, ROAD, CAR, TRUCK, RIVER, LAKE, BROAD, CONIF, CROP, GRASS, BARE = range(12)


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(WorldConfig(size=128), seed=3)


@pytest.fixture(scope="module")
def scenes(world):
    return [world.scene(i) for i in range(16)]


def test_deterministic_by_seed_and_index():
    a = SyntheticWorld(WorldConfig(size=96), seed=5).scene(7)
    b = SyntheticWorld(WorldConfig(size=96), seed=5).scene(7)
    for field in ("optical", "sar", "labels", "instances"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.caption == b.caption and a.bounds == b.bounds
    assert [r.text for r in a.referring] == [r.text for r in b.referring]
    it = list(SyntheticWorld(WorldConfig(size=96), seed=5).scenes(2, start=7))
    np.testing.assert_array_equal(it[0].sar, a.sar)
    assert it[1].meta["index"] == 8
    c = SyntheticWorld(WorldConfig(size=96), seed=6).scene(7)
    d = SyntheticWorld(WorldConfig(size=96), seed=5).scene(8)
    assert not np.array_equal(a.labels, c.labels) and not np.array_equal(a.optical, c.optical)
    assert not np.array_equal(a.labels, d.labels)


def test_overrides_change_only_their_part(world):
    base = world.scene(2)
    other_style = world.scene(2, style=(base.meta["style"] + 1) % 4)
    np.testing.assert_array_equal(base.labels, other_style.labels)
    assert np.abs(base.optical - other_style.optical).mean() > 0.02  # regional appearance differs
    looks = world.scene(2, n_looks=16)
    np.testing.assert_array_equal(base.optical, looks.optical)
    assert not np.array_equal(base.sar, looks.sar) and looks.meta["n_looks"] == 16


def test_shapes_dtypes_and_ranges(scenes):
    s = scenes[0]
    assert s.optical.shape == (4, 128, 128) and s.optical.dtype == np.float32
    assert s.sar.shape == (2, 128, 128) and s.sar.dtype == np.float32
    assert s.labels.shape == (128, 128) and s.labels.dtype == np.int64
    assert s.instances.dtype == np.int32 and s.shape == (128, 128)
    for s in scenes:
        assert 0.0 <= s.optical.min() and s.optical.max() <= 1.0
        assert np.isfinite(s.sar).all() and -60 < s.sar.min() and s.sar.max() < 30
        assert s.labels.min() >= 0 and s.labels.max() <= 11
        assert set(s.meta) >= {"seed", "index", "style", "n_looks", "gsd_m", "tree"}
        assert s.meta["tree"] == "synthetic" and 0 <= s.meta["style"] < 4
    no_nir = SyntheticWorld(WorldConfig(size=64, nir=False), seed=0).scene(0)
    assert no_nir.optical.shape == (3, 64, 64)


def test_label_coverage(scenes):
    per_scene = [len(np.unique(s.labels)) for s in scenes]
    assert np.mean(per_scene) >= 6
    seen = set().union(*(np.unique(s.labels).tolist() for s in scenes))
    assert seen == set(range(12)), f"classes never drawn: {set(range(12)) - seen}"
    assert len({s.meta["style"] for s in scenes}) == 4
    # instances belong to one class each, as recorded in meta
    for s in scenes[:4]:
        cls = s.meta["instance_class"]
        ids = np.unique(s.instances)
        ids = ids[ids > 0]
        for i in ids:
            assert np.all(s.labels[s.instances == i] == cls[i])


def _class_mean(scenes, fn, classes):
    vals = [fn(s)[np.isin(s.labels, classes)] for s in scenes]
    return float(np.concatenate(vals).mean())


def test_sar_physics(scenes):
    vv = lambda s: s.sar[0]
    ratio = lambda s: s.sar[1] - s.sar[0]
    water_vv = _class_mean(scenes, vv, [RIVER, LAKE])
    building_vv = _class_mean(scenes, vv, [RES, IND])
    assert water_vv < building_vv - 12, (water_vv, building_vv)  # specular water vs double bounce
    veg = _class_mean(scenes, ratio, [BROAD, CONIF, CROP, GRASS])
    for cls in (BARE, ROAD, RIVER):
        assert veg > _class_mean(scenes, ratio, [cls]) + 1.0, cls  # volume scattering raises VH/VV


def test_speckle_statistics():
    rng = np.random.default_rng(0)
    flat = np.full((2, 200, 200), 0.05, np.float32)
    cvs = []
    for looks in (1, 4, 16):
        x = apply_speckle(flat, looks, rng).astype(np.float64)
        assert abs(x.mean() / 0.05 - 1) < 0.02  # mean-preserving
        cvs.append(x.std() / x.mean())
        assert abs(cvs[-1] - 1 / np.sqrt(looks)) < 0.03
    assert cvs[0] > cvs[1] > cvs[2]
    with pytest.raises(ValueError):
        apply_speckle(flat, 0, rng)


def test_speckle_over_river_matches_looks():
    world = SyntheticWorld(WorldConfig(size=128), seed=0)
    index = next(i for i in range(60) if (world.scene(i, n_looks=1).labels == RIVER).sum() > 800)
    cvs = []
    for looks in (1, 4, 16):
        s = world.scene(index, n_looks=looks)
        lin = db_to_linear(s.sar[0][s.labels == RIVER].astype(np.float64))
        cvs.append(lin.std() / lin.mean())
        assert abs(cvs[-1] * np.sqrt(looks) - 1) < 0.12, (looks, cvs[-1])
    assert cvs[0] > cvs[1] > cvs[2]


def test_optical_nir_and_shadows(scenes):
    nir = lambda s: s.optical[3]
    assert _class_mean(scenes, nir, [BROAD, CONIF, GRASS]) > 4 * _class_mean(scenes, nir, [RIVER, LAKE])
    ndvi = lambda s: (s.optical[3] - s.optical[0]) / (s.optical[3] + s.optical[0] + 1e-6)
    assert _class_mean(scenes, ndvi, [BROAD, CONIF]) > 0.3 > _class_mean(scenes, ndvi, [RIVER, LAKE, ROAD, RES, IND])


def test_referring_masks_are_their_instances(scenes, world):
    n_expr = 0
    for s in scenes:
        texts = [r.text for r in s.referring]
        assert len(texts) == len(set(texts))
        area = np.bincount(s.instances.ravel())
        for r in s.referring:
            n_expr += 1
            assert r.mask.dtype == bool and r.mask.any()
            np.testing.assert_array_equal(r.mask, s.instances == r.instance_id)
            cls = int(s.meta["instance_class"][r.instance_id])
            assert world.tree.leaves[cls].name == r.target_class
            same_class = [i for i in range(1, len(area)) if s.meta["instance_class"][i] == cls and area[i] > 0]
            if r.text.startswith("the largest"):
                assert area[r.instance_id] == max(area[i] for i in same_class)
            if r.text.startswith("the leftmost"):
                cols = {i: np.nonzero(s.instances == i)[1].mean() for i in same_class}
                assert min(cols, key=cols.get) == r.instance_id
    assert n_expr >= 4 * len(scenes)


def _heldout_pattern(tree):
    words = [w for leaf in tree._nodes for w in tree.synonyms(leaf, "heldout")]
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.I)


def test_text_uses_train_synonyms_by_default(scenes, world):
    pattern = _heldout_pattern(world.tree)
    for s in scenes:
        for text in [s.caption] + [r.text for r in s.referring]:
            assert not pattern.search(text), text
    river_words = re.compile("|".join(world.tree.synonyms("river")))
    for s in scenes:
        assert bool(river_words.search(s.caption)) == bool((s.labels == RIVER).any()), s.caption


def test_heldout_text_option():
    world = SyntheticWorld(WorldConfig(size=128, text_split="heldout"), seed=3)
    pattern = _heldout_pattern(world.tree)
    hits = sum(bool(pattern.search(r.text)) for i in range(6) for r in world.scene(i).referring)
    assert hits >= 10


def test_bounds_and_large_scene():
    world = SyntheticWorld(WorldConfig(size=128, gsd_m=2.0), seed=1)
    s = world.scene(0)
    west, south, east, north = s.bounds
    assert west < east and south < north
    height_m = (north - south) * 111_320
    assert abs(height_m - 256) < 1  # 128 px * 2 m
    assert s.bounds == world.scene(0).bounds and s.bounds != world.scene(1).bounds
    big = world.large_scene(size=512, index=0)
    assert big.labels.shape == (512, 512) and big.meta["scene_type"] == "mixed" and big.meta["large"]
    assert len(np.unique(big.labels)) >= 10


def test_config_validation():
    with pytest.raises(ValueError, match="n_looks"):
        WorldConfig(n_looks=0)
    with pytest.raises(ValueError, match="size"):
        WorldConfig(size=10)
    with pytest.raises(ValueError, match="text_split"):
        WorldConfig(text_split="test")
    world = SyntheticWorld(WorldConfig(size=64), seed=0)
    with pytest.raises(ValueError, match="style"):
        world.scene(0, style=9)
    with pytest.raises(ValueError, match="index"):
        world.scene(-1)
    with pytest.raises(ValueError, match="seed"):
        SyntheticWorld(seed=-2)


def test_npz_roundtrip_and_cli(tmp_path):
    s = SyntheticWorld(WorldConfig(size=64), seed=0).scene(1)
    back = load_sample_npz(save_sample_npz(s, tmp_path / "a.npz"))
    np.testing.assert_array_equal(back.labels, s.labels)
    np.testing.assert_allclose(back.optical, s.optical, atol=1e-3)
    np.testing.assert_allclose(back.sar, s.sar, atol=0.05)
    assert [r.text for r in back.referring] == [r.text for r in s.referring]
    assert back.meta["index"] == 1
    written = main(["--out", str(tmp_path / "cli"), "--n", "2", "--size", "64"])
    assert len(written) == 4 and all(p.exists() for p in written)
