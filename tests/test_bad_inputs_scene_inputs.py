"""Scene-level inputs of ConInfer's public functions: layout, sizes, values, branch outputs.

Plus property-based tests (hypothesis): random shapes and dtypes into the scene functions either
work with finite outputs of the right shape or raise a ValueError naming the argument.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _bad_inputs import raises
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rslab.models.coninfer as ci
from rslab.models.coninfer_large import refine_large_scene
from rslab.recipes import coninfer as rc

PATCH = 8


def prior_fn(tiles):
    m = torch.nn.functional.avg_pool2d(tiles[:, :3].float(), PATCH)
    protos = torch.tensor([[0.2, 0.2, 0.2], [0.8, 0.8, 0.8]])
    return torch.softmax(-((m[:, None] - protos[None, :, :, None, None]) ** 2).sum(2) * 10, dim=1)


def feature_fn(tiles):
    return torch.stack([ci.patch_statistics(t, PATCH, scales=(1,)) for t in tiles])


def scene(c=3, h=40, w=48, seed=0):
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))


CFG = ci.ConInferConfig(n_iter=2)


# ------------------------------------------------------------------ image layout and values


@pytest.mark.parametrize("fn", ["tile_scene", "patch_statistics", "refine_scene", "refine_large_scene"])
def test_channels_last_scene_refused(fn):
    img = scene().permute(1, 2, 0)  # (H, W, C)
    call = {
        "tile_scene": lambda: ci.tile_scene(img, 16),
        "patch_statistics": lambda: ci.patch_statistics(img, PATCH),
        "refine_scene": lambda: ci.refine_scene(prior_fn, feature_fn, img, tile=16, config=CFG),
        "refine_large_scene": lambda: refine_large_scene(prior_fn, feature_fn, img.numpy(), tile=16, config=CFG),
    }[fn]
    raises(ValueError, call, names=["channels-last"], problem=r"\(C, H, W\)")


@pytest.mark.parametrize("shape", [(3, 0, 16), (0, 16, 16), (3, 16, 0)])
def test_empty_scene_refused(shape):
    raises(ValueError, lambda: ci.tile_scene(torch.zeros(shape), 8), names=["image"], problem="empty")
    raises(ValueError, lambda: refine_large_scene(prior_fn, feature_fn, np.zeros(shape, np.float32), tile=8),
           names=["source"], problem="empty")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_scene_refused(bad):
    img = scene()
    img[1, 3, 4] = bad
    raises(ValueError, lambda: ci.refine_scene(prior_fn, feature_fn, img, tile=16, config=CFG),
           names=["image"], problem="1 NaN/inf")
    raises(ValueError, lambda: ci.patch_statistics(img, PATCH), names=["image"], problem="NaN/inf")
    raises(ValueError, lambda: refine_large_scene(prior_fn, feature_fn, img.numpy(), tile=16, config=CFG),
           names=["source tiles"], problem="NaN/inf")


def test_huge_values_refused():
    img = scene() * 1e20
    raises(ValueError, lambda: ci.patch_statistics(img, PATCH), names=["image"], problem="rescale")


def test_two_dim_and_batched_images_refused():
    raises(ValueError, lambda: ci.tile_scene(torch.zeros(16, 16), 8), names=["image"], problem=r"\(C, H, W\)")
    raises(ValueError, lambda: ci.refine_scene(prior_fn, feature_fn, torch.zeros(1, 3, 16, 16), tile=8),
           names=["image"], problem=r"\(C, H, W\)")


def test_non_integer_tile_refused():
    raises(ValueError, lambda: ci.tile_scene(scene(), 16.5), names=["tile"], problem="integers")


def test_tile_not_multiple_of_patch_refused():
    # 28 px tiles with 8 px patches: a 3x3 grid covers 24 px, 4 px of every tile would be dropped
    img = scene(h=64, w=64)
    raises(ValueError, lambda: ci.refine_scene(prior_fn, feature_fn, img, tile=28, config=CFG),
           names=["tile=28"], problem="not a multiple of the patch grid")
    raises(ValueError, lambda: refine_large_scene(prior_fn, feature_fn, img.numpy(), tile=28, config=CFG),
           names=["tile=28"], problem="not a multiple of the patch grid")


# ------------------------------------------------------------------ branch outputs


@pytest.mark.parametrize("bad_prior, problem", [
    (lambda t: prior_fn(t)[:, :1], "K >= 2"),
    (lambda t: prior_fn(t)[:1], "1 maps for a batch"),
    (lambda t: prior_fn(t) * float("nan"), "NaN/inf"),
    (lambda t: prior_fn(t)[0], r"\(B, C, h, w\)"),
])
def test_bad_prior_fn_output_named(bad_prior, problem):
    raises(ValueError, lambda: ci.refine_scene(bad_prior, feature_fn, scene(), tile=16, config=CFG, batch_tiles=2),
           names=["prior_fn"], problem=problem)


def test_feature_dimension_zero_refused():
    raises(ValueError, lambda: ci.refine_scene(prior_fn, lambda t: feature_fn(t)[:, :0], scene(), tile=16,
                                               config=CFG), names=["feature_fn"], problem="D >= 1")
    raises(ValueError, lambda: ci.coninfer(torch.full((10, 2), 0.5), torch.zeros(10, 0)), names=["features"],
           problem="D = 0")


def test_huge_features_refused():
    raises(ValueError, lambda: ci.coninfer(torch.full((10, 2), 0.5), torch.full((10, 3), 1e20)),
           names=["features"], problem="rescale")


def test_empty_pool_refused():
    raises(ValueError, lambda: ci.coninfer(torch.zeros(0, 2), torch.zeros(0, 3)), names=["N = 0"], problem="empty")


def test_stitch_tiles_refuses_non_finite_maps():
    maps = torch.rand(1, 2, 2, 2)
    maps[0, 0, 0, 0] = float("nan")
    raises(ValueError, lambda: ci.stitch_tiles(maps, [(0, 0)], (16, 16), 16), names=["tile_maps"], problem="NaN")


def test_patch_labels_refuses_float_labels():
    raises(ValueError, lambda: ci.patch_labels(np.zeros((16, 16), np.float32), 8, 2), names=["labels"],
           problem="integer class ids")


def test_recipe_images_channels_last_refused():
    enc = None  # the check runs before the encoder is used
    raises(ValueError, lambda: rc._check_images(torch.zeros(2, 32, 32, 3)), names=["images"],
           problem="channels-last")
    raises(ValueError, lambda: rc._check_images(torch.zeros(2, 3, 0, 32)), names=["images"], problem="empty")
    assert enc is None


def test_recipe_images_keep_sar_nodata_but_refuse_inf():
    x = torch.zeros(1, 2, 16, 16)
    x[0, 0, 0, 0] = float("nan")
    rc._check_images(x)  # SAR nodata: handled downstream
    x[0, 0, 0, 1] = float("inf")
    raises(ValueError, lambda: rc._check_images(x), names=["images"], problem="NaN/inf")


# ------------------------------------------------------------------ large scenes: same answer, bounded types


@pytest.mark.parametrize("stride", [None, 12])
def test_refine_large_scene_matches_refine_scene(stride):
    img = scene(h=40, w=56)
    a = ci.refine_scene(prior_fn, feature_fn, img, tile=16, stride=stride, config=CFG, batch_tiles=3)
    b = refine_large_scene(prior_fn, feature_fn, img.numpy(), tile=16, stride=stride, config=CFG, batch_tiles=5)
    assert b.labels.dtype == np.uint8 and b.labels.shape == (40, 56)
    np.testing.assert_array_equal(b.labels, a.labels.numpy())
    np.testing.assert_array_equal(b.prior_labels, a.prior_labels.numpy())


def test_refine_large_scene_from_windowed_file(tmp_path):
    import tifffile

    from rslab.data.readers import open_raster

    img = (scene(h=32, w=48).numpy() * 255).astype(np.uint8)
    p = tmp_path / "s.tif"
    tifffile.imwrite(p, np.moveaxis(img, 0, -1), photometric="rgb")
    r = open_raster(p)
    a = refine_large_scene(prior_fn, feature_fn, r, tile=16, config=CFG)
    b = refine_large_scene(prior_fn, feature_fn, img.astype(np.float32) / 255.0, tile=16, config=CFG)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_refine_large_scene_pool_tiles():
    res = refine_large_scene(prior_fn, feature_fn, scene(h=32, w=32).numpy(), tile=16, config=CFG, pool_tiles=2)
    assert len(res.results) == 2 and res.tile_probs.shape == (4, 2, 2, 2)
    raises(ValueError, lambda: refine_large_scene(prior_fn, feature_fn, scene().numpy(), tile=16, pool_tiles=0),
           names=["pool_tiles"], problem=">= 1")


# ------------------------------------------------------------------ property-based: random shapes and dtypes

DTYPES = [np.float32, np.float64, np.uint8, np.int16, np.float16]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(0, 5), h=st.integers(0, 40), w=st.integers(0, 40), dtype=st.sampled_from(DTYPES),
       tile=st.integers(1, 24), seed=st.integers(0, 3), channels_last=st.booleans())
def test_tile_scene_random_inputs_work_or_name_the_argument(c, h, w, dtype, tile, seed, channels_last):
    arr = (np.random.default_rng(seed).random((c, h, w)) * 100).astype(dtype)
    if channels_last:
        arr = np.ascontiguousarray(np.moveaxis(arr, 0, -1))
    try:
        tiles, positions = ci.tile_scene(arr, tile)
    except ValueError as e:
        assert "image" in str(e)
        c0, h0, w0 = arr.shape  # only empty or channels-last-looking scenes may be refused
        assert 0 in arr.shape or (w0 < 8 <= c0 and h0 >= 8), str(e)
        return
    assert tiles.shape[1:] == (arr.shape[0], tile, tile) and len(positions) == tiles.shape[0]
    covered = np.zeros(arr.shape[1:], bool)
    for y, x in positions:
        covered[y:y + tile, x:x + tile] = True
    assert covered.all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(1, 48), w=st.integers(1, 48), dtype=st.sampled_from([np.float32, np.float64, np.uint8]),
       tile=st.sampled_from([8, 16, 24]), poison=st.sampled_from([None, "nan", "inf", "huge"]),
       seed=st.integers(0, 3))
def test_refine_scene_random_inputs_finite_or_named_error(h, w, dtype, tile, poison, seed):
    arr = np.random.default_rng(seed).random((3, h, w))
    arr = (arr * 255).astype(dtype) if dtype == np.uint8 else arr.astype(dtype)
    if poison is not None and dtype != np.uint8:
        arr[0, h // 2, w // 2] = {"nan": np.nan, "inf": np.inf, "huge": 1e30}[poison]
    x = torch.from_numpy(arr)
    try:
        res = ci.refine_scene(lambda t: prior_fn(t.float() / (255.0 if dtype == np.uint8 else 1.0)), feature_fn,
                              x, tile=tile, config=CFG, batch_tiles=4)
    except ValueError as e:
        if "the pool has" in str(e):  # a scene of one or two patches: too few for the initialisation
            assert (h // PATCH + (h % PATCH > 0)) * (w // PATCH + (w % PATCH > 0)) <= 64
            return
        assert poison is not None and dtype != np.uint8, str(e)
        assert "image" in str(e) or "feature_fn" in str(e) or "prior_fn" in str(e)
        return
    assert poison is None or dtype == np.uint8
    assert res.probs.shape == (2, h, w) and torch.isfinite(res.probs).all()
    assert torch.allclose(res.probs.sum(0), torch.ones(h, w), atol=1e-4)
