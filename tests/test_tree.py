"""Semantic trees: level mapping, lookup, synonyms and YAML validation."""

import numpy as np
import pytest
import torch

from rslab.data.sample import IGNORE_INDEX
from rslab.data.tree import SemanticTree, available_trees, load_tree


def test_packaged_trees_load():
    assert {"synthetic", "loveda", "deepglobe"} <= set(available_trees())
    syn = load_tree("synthetic")
    assert syn.depth == 3
    assert [syn.num_classes(level) for level in (1, 2, 3)] == [5, 8, 12]
    assert load_tree("synthetic") is syn  # cached


def test_synthetic_level_mapping_hand_written():
    t = load_tree("synthetic")
    leaves = t.names(3)
    # leaf -> (level-1 ancestor, level-2 ancestor), written by hand from the YAML
    expected = {
        "residential building": ("built-up", "building"),
        "industrial building": ("built-up", "building"),
        "road": ("transport", "road"),  # a level-2 leaf is its own level-2 class
        "car": ("transport", "vehicle"),
        "truck": ("transport", "vehicle"),
        "river": ("water", "river"),
        "lake": ("water", "lake"),
        "broadleaf forest": ("vegetation", "forest"),
        "conifer forest": ("vegetation", "forest"),
        "cropland": ("vegetation", "herbaceous vegetation"),
        "grassland": ("vegetation", "herbaceous vegetation"),
        "bare soil": ("bare land", "bare soil"),
    }
    assert sorted(leaves) == sorted(expected)
    lut1, lut2, lut3 = (t.level_lut(level) for level in (1, 2, 3))
    for leaf_id, name in enumerate(leaves):
        l1, l2 = expected[name]
        assert t.names(1)[lut1[leaf_id]] == l1
        assert t.names(2)[lut2[leaf_id]] == l2
        assert lut3[leaf_id] == leaf_id
        assert t.ancestor(name, 1).name == l1 and t.ancestor(leaf_id, 2).name == l2
    # relabelling a map keeps IGNORE_INDEX
    labels = np.array([[0, 3, 255], [11, 5, 8]])
    assert t.to_level(labels, 1).tolist() == [[0, 1, 255], [4, 2, 3]]
    assert t.to_level(torch.as_tensor(labels), 2).tolist() == [[0, 2, 255], [7, 3, 5]]
    assert lut1[200] == IGNORE_INDEX and lut1.shape == (256,)


def test_leaf_ids_and_inner_nodes():
    t = load_tree("synthetic")
    assert t.leaf_ids("vehicle") == [3, 4]
    assert t.leaf_ids("vegetation") == [7, 8, 9, 10]
    assert t.class_id("vehicle") == 2 and t.class_id("forest", 2) == 5
    assert t.ancestor("water", 1).name == "water"
    with pytest.raises(ValueError, match="inner node"):
        t.ancestor("building", 3)
    with pytest.raises(ValueError, match="level"):
        t.level_lut(4)


def test_find_and_synonyms():
    t = load_tree("synthetic")
    assert t.find("Lorry").name == "truck"
    assert t.find("  coniferous   forest ").name == "conifer forest"
    assert t.find("sedan").name == "car"  # held-out synonyms resolve too
    assert t.synonyms("car")[0] == "car" and "automobile" in t.synonyms("car")
    assert "sedan" not in t.synonyms("car", "train")
    assert t.synonyms("car", "heldout") == ["sedan", "motorcar"]
    assert set(t.synonyms("car", "all")) == set(t.synonyms("car")) | {"sedan", "motorcar"}
    with pytest.raises(ValueError, match="Close matches.*lorry"):
        t.find("lorri")
    with pytest.raises(ValueError, match="split"):
        t.synonyms("car", "test")
    # every leaf has at least one held-out name for unseen-synonym tests
    assert all(t.synonyms(leaf, "heldout") for leaf in t.leaves)


@pytest.mark.parametrize("name,order", [
    ("loveda", ["background", "building", "road", "water", "barren", "forest", "agriculture"]),
    ("deepglobe", ["urban", "agriculture", "rangeland", "forest", "water", "barren"]),
])
def test_real_dataset_trees_keep_dataset_order(name, order):
    t = load_tree(name)
    assert t.depth >= 2
    assert t.names(t.depth) == order
    assert t.num_classes(1) < len(order)


def test_loveda_levels():
    t = load_tree("loveda")
    assert t.names(1) == ["background", "built-up", "natural land"]
    assert t.level_lut(1)[:7].tolist() == [0, 1, 1, 2, 2, 2, 2]


def _tree(classes):
    return SemanticTree.from_dict({"name": "t", "classes": classes})


def test_unbalanced_tree_levels():
    t = _tree([{"name": "a", "children": [{"name": "a1", "children": ["a1x", "a1y"]}, "a2"]}, "b"])
    assert t.depth == 3
    assert t.names(1) == ["a", "b"]
    assert t.names(2) == ["a1", "a2", "b"]
    assert t.names(3) == ["a1x", "a1y", "a2", "b"]
    assert t.level_lut(2)[:4].tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("classes,match", [
    ([{"name": "a"}, {"name": "A"}], "duplicate class name"),
    ([{"name": ""}], "empty or missing"),
    ([{"synonyms": ["x"]}], "empty or missing"),
    ([{"name": "a", "children": []}], "empty or not a list"),
    ([{"name": "a", "synonyms": ["x"]}, {"name": "b", "synonyms": ["x"]}], "names both"),
    ([{"name": "a", "synonyms": ["x"], "heldout": ["x"]}], "held-out"),
    ([{"name": "a", "colour": "#ffffff"}], "unknown keys"),
    ([{"name": "a", "id": 1}, {"name": "b", "id": 0}], "declares id"),
    ([], "non-empty list"),
])
def test_validation_errors(classes, match):
    with pytest.raises(ValueError, match=match):
        _tree(classes)


def test_from_yaml_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_tree"):
        SemanticTree.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="'classes'"):
        SemanticTree.from_yaml(bad)
    good = tmp_path / "good.yaml"
    good.write_text("name: mine\nclasses:\n  - name: land\n    children: [field, wood]\n  - water\n")
    t = SemanticTree.from_yaml(good)
    assert t.name == "mine" and t.names(2) == ["field", "wood", "water"]
    with pytest.raises(ValueError, match="unknown tree"):
        load_tree("nope")
