"""Episodes for in-context segmentation: annotations, prompt sourcing, names, set targets."""

import numpy as np
import pytest
import torch

from rslab.data.episodes import ScenePool, annotation_from_mask, class_names_for, make_episode, region_names
from rslab.data.synthetic import SyntheticWorld, WorldConfig


@pytest.fixture(scope="module")
def pool():
    return ScenePool(SyntheticWorld(WorldConfig(size=64), seed=0), range(10), min_pixels=8)


def test_box_annotation_is_the_bounding_box():
    m = torch.zeros(8, 8, dtype=torch.bool)
    m[2, 3] = m[5, 6] = True
    box = annotation_from_mask(m, "box", np.random.default_rng(0))
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 3:7] = True
    assert torch.equal(box, expected)
    assert torch.equal(annotation_from_mask(m, "mask", np.random.default_rng(0)), m)


def test_point_annotation_is_clicks_inside_the_object():
    m = torch.zeros(32, 32, dtype=torch.bool)
    m[4:20, 6:26] = True
    pts = annotation_from_mask(m, "point", np.random.default_rng(0), n_points=5)
    assert pts.any() and not (pts & ~m).any()  # clicks stay on the object
    assert 5 <= int(pts.sum()) <= 45  # five 3x3 discs at most
    empty = torch.zeros(4, 4, dtype=torch.bool)
    assert not annotation_from_mask(empty, "box", np.random.default_rng(0)).any()
    with pytest.raises(ValueError, match="annotation"):
        annotation_from_mask(m, "scribble", np.random.default_rng(0))


def test_pool_indexes_class_presence_per_level(pool):
    for level in (1, 2, 3):
        lab = pool.level_labels(level)
        k = pool.tree.num_classes(level)
        for s in range(len(pool)):
            counts = torch.bincount(lab[s][lab[s] != 255].flatten(), minlength=k)[:k]
            assert np.array_equal(pool.presence[level][s], (counts >= 8).numpy())
    with pytest.raises(ValueError, match="modality"):
        pool.images("lidar")


def test_episode_prompts_come_from_other_scenes_and_match_labels(pool):
    rng = np.random.default_rng(0)
    ep = make_episode(pool, [0, 1], pool, 2, "sar", rng, exclude={0, 1})
    k = pool.tree.num_classes(2)
    assert ep.target.shape == (2, 2, 64, 64) and ep.prompt_masks.shape[1] == k
    assert ep.prompt_images.shape[0] == int(ep.ctx_valid[0].sum())  # one shot per valid class
    assert len(ep.class_names) == k and ep.level == 2 and ep.modality == "sar"
    lab = pool.level_labels(2)
    for s in range(ep.prompt_images.shape[0]):
        c = int(ep.prompt_masks[s].flatten(1).any(1).nonzero()[0])  # the class this shot prompts
        # the prompt image is a scene of the pool other than the targets, and its mask is class c there
        j = [i for i in range(len(pool)) if torch.equal(pool.sar[i], ep.prompt_images[s])]
        assert j and j[0] not in (0, 1)
        assert torch.equal(ep.prompt_masks[s, c], lab[j[0]] == c)
    # set targets: one binary mask per prompted class present in each target
    for b, t in enumerate(ep.set_targets()):
        for c, m in zip(t["labels"].tolist(), t["masks"]):
            assert ep.ctx_valid[b, c] and torch.equal(m.bool(), ep.target_labels[b] == c)


def test_episode_can_prompt_a_subset_of_classes_by_name(pool):
    ep = make_episode(pool, [0], pool, 1, "optical", np.random.default_rng(0), classes=["water", "vegetation"],
                      exclude={0})
    names = pool.tree.names(1)
    valid = [names[i] for i in ep.ctx_valid[0].nonzero().flatten().tolist()]
    assert set(valid) <= {"water", "vegetation"} and valid
    with pytest.raises(ValueError, match="no class or synonym"):
        make_episode(pool, [0], pool, 1, "optical", np.random.default_rng(0), classes=["volcano"])
    with pytest.raises(ValueError, match="not a class at level"):
        make_episode(pool, [0], pool, 1, "optical", np.random.default_rng(0), classes=["car"])


def test_heldout_names_are_never_training_names(pool):
    tree = pool.tree
    held = class_names_for(tree, 3, "heldout", np.random.default_rng(0))
    train = {n.lower() for name in tree.names(3) for n in tree.synonyms(name, "train")}
    assert not {h.lower() for h in held} & train
    assert class_names_for(tree, 1, "canonical", np.random.default_rng(0)) == tree.names(1)
    with pytest.raises(ValueError, match="names split"):
        class_names_for(tree, 1, "test", np.random.default_rng(0))


def test_region_names_join_nodes_with_the_same_pixels_and_never_heldout(pool):
    tree = pool.tree
    # built-up has a single child (building): both name the same pixels; road is a plain leaf
    own = tree.synonyms("built-up", "train")  # canonical name first, then the training synonyms
    assert region_names(tree, "built-up")[: len(own)] == own
    assert set(region_names(tree, "built-up")) == {*own, *tree.synonyms("building", "train")}
    assert set(region_names(tree, "bare soil")) == set(region_names(tree, "bare land"))
    assert region_names(tree, "road") == tree.synonyms("road", "train")
    assert "residential building" not in region_names(tree, "building")  # a child with fewer pixels
    held = {h.lower() for node in (m for r in tree.roots for m in r.walk()) for h in node.heldout}
    rng = np.random.default_rng(0)
    for level in (1, 2, 3):
        for _ in range(20):
            names = class_names_for(tree, level, "region", rng)
            assert not {n.lower() for n in names} & held
            assert ([set(tree.leaf_ids(tree.find(n))) for n in names]
                    == [set(tree.leaf_ids(c)) for c in tree.nodes(level)])
    with pytest.raises(ValueError, match="no class or synonym"):
        region_names(tree, "volcano")


def test_episode_is_deterministic_and_validated(pool):
    a = make_episode(pool, [2, 3], pool, 3, "optical", np.random.default_rng(5), annotation="box", exclude={2, 3})
    b = make_episode(pool, [2, 3], pool, 3, "optical", np.random.default_rng(5), annotation="box", exclude={2, 3})
    assert torch.equal(a.prompt_masks, b.prompt_masks) and a.class_names == b.class_names
    with pytest.raises(ValueError, match="shots"):
        make_episode(pool, [0], pool, 1, "optical", np.random.default_rng(0), shots=0)
    moved = a.to("cpu")
    assert moved.level == a.level and torch.equal(moved.target, a.target)


def test_train_names_draw_each_training_name_equally_often(pool):
    tree = pool.tree
    rng = np.random.default_rng(0)
    options = tree.synonyms("built-up", "train")  # canonical name + training synonyms, each once
    counts = {n: 0 for n in options}
    draws = 2000
    for _ in range(draws):
        counts[class_names_for(tree, 1, "train", rng)[tree.names(1).index("built-up")]] += 1
    assert set(counts) == set(options)
    for n, c in counts.items():  # uniform: the canonical name is not drawn twice as often
        assert abs(c / draws - 1 / len(options)) < 0.05, (n, c)
