"""rslab.viz: colours follow the tree, SAR display is a documented stretch, figures and maps render."""

from __future__ import annotations

import base64
import colorsys
import io
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from rslab import viz
from rslab.data.sample import IGNORE_INDEX, ReferringExpression, Sample
from rslab.data.tree import SemanticTree
from rslab.viz.sar import NODATA_COLOR

# Depth-3, unbalanced: "water" is a leaf at level 1 (its own descendant at levels 2 and 3).
TREE_DICT = {
    "name": "toy",
    "classes": [
        {"name": "built-up", "color": "#ff0000", "children": [
            {"name": "building", "color": "#cc0000", "children": [
                {"name": "house", "color": "#ff8080"},
                {"name": "factory", "color": "#800000"},
            ]},
            {"name": "road", "color": "#808080"},
        ]},
        {"name": "water", "color": "#0000ff"},
        {"name": "vegetation", "children": [
            {"name": "forest", "children": [{"name": "conifer"}, {"name": "broadleaf"}]},
            {"name": "grass"},
        ]},
    ],
}
# leaf ids (depth-first): house 0, factory 1, road 2, water 3, conifer 4, broadleaf 5, grass 6


@pytest.fixture(scope="module")
def tree() -> SemanticTree:
    return SemanticTree.from_dict(TREE_DICT)


def _labels() -> np.ndarray:
    lab = np.array([[0, 1, 2, 3],
                    [4, 5, 6, IGNORE_INDEX],
                    [0, 0, 3, 3],
                    [6, 6, 6, 6]], dtype=np.int64)
    return lab


def _sample(h: int = 32, w: int = 32, seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    labels = np.tile(np.repeat(np.arange(7), int(np.ceil(w / 7)))[:w], (h, 1)).astype(np.int64)
    labels[:2, :2] = IGNORE_INDEX
    sar = rng.uniform(-25, 0, size=(2, h, w)).astype(np.float32)
    sar[:, labels == 3] = -22.0  # water dark
    sar[0, 0, 5] = np.nan
    mask = labels == 0
    return Sample(optical=rng.uniform(0, 1, (3, h, w)).astype(np.float32), sar=sar, labels=labels,
                  caption="a toy scene with a house near the water",
                  referring=[ReferringExpression("the houses", mask, "house")],
                  bounds=(10.0, 45.0, 10.01, 45.01), meta={"style": "temperate"})


# ---------------------------------------------------------------------------- palette
def test_colorize_uses_node_colours_and_level_ancestors(tree):
    lab = _labels()
    leaf = viz.colorize_labels(lab, tree, level=3)
    assert leaf.shape == (4, 4, 3) and leaf.dtype == np.uint8
    assert tuple(leaf[0, 0]) == (0xFF, 0x80, 0x80)  # house, its YAML colour
    assert tuple(leaf[0, 1]) == (0x80, 0x00, 0x00)  # factory
    assert tuple(leaf[0, 3]) == (0, 0, 255)  # water (a level-1 leaf) keeps its colour at level 3
    assert tuple(leaf[1, 3]) == (0, 0, 0)  # IGNORE_INDEX -> black
    lvl1 = viz.colorize_labels(lab, tree, level=1)
    # house, factory and road are all "built-up" at level 1
    assert {tuple(lvl1[0, j]) for j in range(3)} == {(255, 0, 0)}
    lvl2 = viz.colorize_labels(lab, tree, level=2)
    assert tuple(lvl2[0, 0]) == tuple(lvl2[0, 1]) == (0xCC, 0, 0)  # building
    assert tuple(lvl2[0, 2]) == (0x80, 0x80, 0x80)  # road
    rgba = viz.colorize_labels(lab, tree, level=3, alpha=True)
    assert rgba.shape == (4, 4, 4) and rgba[1, 3, 3] == 0 and rgba[0, 0, 3] == 255


def test_derived_colours_are_hue_shifted_from_parent(tree):
    veg = tree.find("vegetation")
    assert veg.color is None  # evenly spaced root hue, derived children
    for node in [tree.find("built-up"), veg]:
        for scheme in ("derived", "yaml"):
            p = np.array(viz.node_color(tree, node, scheme)) / 255
            ph = colorsys.rgb_to_hls(*p)[0]
            kids = [np.array(viz.node_color(tree, c, "derived")) / 255 for c in node.children]
            for k in kids:
                dh = abs(colorsys.rgb_to_hls(*k)[0] - ph)
                assert min(dh, 1 - dh) <= 0.1 + 1e-6, (node.name, dh)
            assert len({tuple(np.round(k, 3)) for k in kids}) == len(kids)  # siblings distinguishable
    # every class at every level has a distinct colour in both schemes
    for scheme in ("derived", "yaml"):
        for level in (1, 2, 3):
            pal = viz.level_palette(tree, level, scheme)
            assert len({tuple(c) for c in pal}) == len(pal)


def test_colorize_rejects_non_leaf_values(tree):
    with pytest.raises(ValueError, match="not leaf ids"):
        viz.colorize_labels(np.array([[0, 7]]), tree)
    with pytest.raises(ValueError, match="integer"):
        viz.colorize_labels(np.zeros((2, 2), np.float32), tree)
    with pytest.raises(ValueError, match="level"):
        viz.colorize_labels(_labels(), tree, level=4)
    with pytest.raises(ValueError, match="SemanticTree"):
        viz.colorize_labels(_labels(), {"not": "a tree"})


def test_label_legend_lists_level_classes(tree):
    assert [h.get_label() for h in viz.label_legend(tree, 1)] == ["built-up", "water", "vegetation"]
    present = np.array([[3, 3], [4, IGNORE_INDEX]])
    assert [h.get_label() for h in viz.label_legend(tree, 2, present=present)] == ["water", "forest"]
    h = viz.label_legend(tree, 3, present=np.array([[1]]))[0]
    np.testing.assert_allclose(h.get_facecolor()[:3], np.array([0x80, 0, 0]) / 255)


def test_overlay_blends_labelled_pixels_only(tree):
    lab = _labels()
    img = np.full((4, 4, 3), 0.2, np.float32)
    np.testing.assert_allclose(viz.overlay(img, lab, tree, alpha=0.0), img)
    out = viz.overlay(img, lab, tree, level=3, alpha=0.5)
    np.testing.assert_allclose(out[0, 3], 0.5 * 0.2 + 0.5 * np.array([0, 0, 1.0]), atol=1e-6)  # water
    np.testing.assert_allclose(out[1, 3], [0.2, 0.2, 0.2])  # ignored pixel keeps the image
    with pytest.raises(ValueError, match="same"):
        viz.overlay(np.zeros((3, 3, 3)), lab, tree)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(img, lab, tree, alpha=1.5)


# ---------------------------------------------------------------------------- SAR display
def test_sar_display_is_the_documented_db_stretch():
    sar = np.array([[[-30.0, 5.0, -12.5, np.nan, -40.0]],
                    [[-30.0, -30.0, -20.0, -20.0, 10.0]]], dtype=np.float32)  # (2, 1, 5)
    vv = viz.sar_to_display(sar, "VV")
    assert vv.shape == (1, 5, 3) and vv.dtype == np.float32
    np.testing.assert_allclose(vv[0, [0, 1, 2, 4], 0], [0.0, 1.0, 0.5, 0.0], atol=1e-6)  # -40 clips to 0
    assert np.all(vv[0, :3, 0] == vv[0, :3, 1])  # grey
    np.testing.assert_allclose(vv[0, 3], NODATA_COLOR)  # NaN in VV -> nodata colour
    vh = viz.sar_to_display(sar, "VH")
    np.testing.assert_allclose(vh[0, 4, 0], 1.0)  # 10 dB clips to 5 dB -> white
    np.testing.assert_allclose(vh[0, 3], NODATA_COLOR)  # nodata if any channel is NaN
    rgb = viz.sar_to_display(sar, "rgb")
    # composite: VH stretched over (-37, -2) dB, ratio VV - VH over (0, 15) dB
    # pixel 1: VV 5 dB (R=1), VH -30 dB (G=7/35), ratio 35 dB clipped to 15 -> B=1
    np.testing.assert_allclose(rgb[0, 1], [1.0, 7 / 35, 1.0], atol=1e-6)
    # pixel 2: VV -12.5 (0.5), VH -20 (17/35), ratio 7.5 dB -> 0.5
    np.testing.assert_allclose(rgb[0, 2], [0.5, 17 / 35, 0.5], atol=1e-6)


def test_nodata_colour_never_occurs_in_valid_sar():
    rng = np.random.default_rng(0)
    sar = rng.uniform(-45, 15, size=(2, 64, 64)).astype(np.float32)
    for ch in ("VV", "VH", "rgb"):
        img = viz.sar_to_display(sar, ch)
        assert not np.any(np.all(np.isclose(img, NODATA_COLOR), axis=-1)), ch


def test_sar_display_validates():
    with pytest.raises(ValueError, match="channel"):
        viz.sar_to_display(np.zeros((2, 4, 4), np.float32), "HH")
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        viz.sar_to_display(np.zeros((3, 4, 4), np.float32))


def test_optical_display_band_choice_and_stretch():
    s2 = np.zeros((13, 8, 8), np.float32)
    ramp = np.arange(64, dtype=np.float32).reshape(8, 8)  # pixel k has value k
    s2[3], s2[2], s2[1] = 0.003 * ramp, 0.002 * ramp, 0.001 * ramp  # B4, B3, B2 (dim TOA values)
    s2[0] = 1.0  # B1 must not be shown
    out = viz.optical_to_display(s2)  # 13 bands -> B4,B3,B2 with a 2-98 % stretch
    lo, hi = 0.02 * 63, 0.98 * 63  # numpy's linear-interpolated percentiles of 0..63
    assert out.shape == (8, 8, 3) and out[0, 0, 0] == 0.0 and out[7, 7, 0] == 1.0
    np.testing.assert_allclose(out[4, 0], (32 - lo) / (hi - lo), rtol=1e-4)  # same for each band
    rgbn = np.random.default_rng(0).uniform(0, 1, (4, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(viz.optical_to_display(rgbn), rgbn[:3].transpose(1, 2, 0))
    with pytest.raises(ValueError, match="channels"):
        viz.optical_to_display(np.zeros((5, 4, 4), np.float32))


# ---------------------------------------------------------------------------- figures
def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def test_show_sample_panels_legend_and_no_pyplot_leak(tree):
    before = plt.get_fignums()
    fig = viz.show_sample(_sample(), tree, level=2)
    assert isinstance(fig, Figure) and plt.get_fignums() == before
    titles = _titles(fig)
    assert titles[0].startswith("optical") and "SAR" in titles[1] and titles[2] == "labels, level 2 of 3"
    legend = fig.axes[2].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == tree.names(2)  # all 5 level-2 classes present
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert Image.open(buf).size[0] > 300


def test_show_sample_without_sar(tree):
    s = _sample()
    s.sar = None
    assert len(_titles(viz.show_sample(s, tree))) == 2


def test_show_levels_one_panel_per_level(tree):
    fig = viz.show_levels(_sample(), tree)
    assert _titles(fig) == ["level 1: 3 classes", "level 2: 5 classes", "level 3: 7 classes"]
    s = _sample()
    s.labels = None
    with pytest.raises(ValueError, match="labels"):
        viz.show_levels(s, tree)


def test_speckle_std_matches_hand_values():
    assert viz.speckle_std_db(1) == pytest.approx(10 / np.log(10) * np.pi / np.sqrt(6), rel=1e-9)  # psi1(1)=pi^2/6
    assert viz.speckle_std_db(4) == pytest.approx(2.3134, abs=1e-3)
    with pytest.raises(ValueError):
        viz.speckle_std_db(0)


def test_show_looks_measures_speckle_against_reference():
    rng = np.random.default_rng(0)
    sigma0 = rng.uniform(0.01, 0.5, size=(2, 128, 128))  # textured, noise-free backscatter
    ref = (10 * np.log10(sigma0)).astype(np.float32)
    sars = {L: (10 * np.log10(sigma0 * rng.gamma(L, 1.0 / L, size=sigma0.shape))).astype(np.float32)
            for L in (1, 4, 16)}
    fig = viz.show_looks(sars, reference=ref, crop=32)
    measured = [float(re.search(r"speckle std ([\d.]+) dB", t).group(1)) for t in _titles(fig)]
    for L, m in zip((1, 4, 16), measured):
        assert m == pytest.approx(viz.speckle_std_db(L), rel=0.05)
    assert fig.axes[0].get_images()[0].get_array().shape[:2] == (32, 32)
    with pytest.raises(ValueError, match="same shape"):
        viz.show_looks(sars, reference=ref[:, :8])


def test_analysis_figures_render(tree):
    s = _sample()
    fig = viz.plot_db_histogram(s.sar, "VV")
    assert [ax.get_xlabel() for ax in fig.axes][1].startswith("VV backscatter (dB)")
    fig = viz.plot_backscatter_by_class([s, _sample(seed=1)], tree, level=1)
    assert fig.axes[0].get_ylabel().startswith("backscatter (dB)")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["built-up", "water", "vegetation"]
    fig = viz.show_class_on_sar(s, tree, "water")
    assert "-22.0 dB inside" in _titles(fig)[2] and _titles(fig)[1] == "SAR VV"
    fig = viz.show_referring(s)
    assert '"the houses"' in _titles(fig)[1]
    assert len(fig.axes[1].patches) == 1  # dashed box around the referred object
    assert fig.axes[1].get_xlim() == (-0.5, 31.5)  # ...which does not widen the view
    fig = viz.show_styles([s, _sample(seed=2)], tree, "house", crop=16)
    assert _titles(fig) == ["style 'temperate'", "style 'temperate'"]
    fig = viz.show_large_scene(_sample(64, 64), tree, max_px=16)
    assert _titles(fig)[0] == "optical (downsampled 4x)"


def test_show_prediction_error_panel_and_accuracy(tree):
    lab = _labels()
    pred = lab.copy()
    pred[0, 0] = 1  # house -> factory: wrong at level 3, right at levels 1-2 (both "building")
    pred[3, :2] = 3  # grass -> water: wrong at every level
    pred[1, 3] = 0  # prediction on an ignored pixel does not count
    img = np.zeros((4, 4, 3), np.float32)
    fig3 = viz.show_prediction(img, lab, pred, tree, level=3)
    assert _titles(fig3)[3] == "errors (red)\npixel accuracy 80.0%"  # 12 of 15 labelled pixels
    err = fig3.axes[3].get_images()[0].get_array()
    np.testing.assert_allclose(err[0, 0], [0.9, 0.1, 0.1])
    np.testing.assert_allclose(err[1, 3], [0, 0, 0])  # ignored
    np.testing.assert_allclose(err[0, 1], [0.75, 0.75, 0.75])
    assert _titles(viz.show_prediction(img, lab, pred, tree, level=2))[3].endswith("86.7%")  # 13 / 15
    with pytest.raises(ValueError, match="share"):
        viz.show_prediction(img, lab, pred[:3], tree)


def test_show_mask_prediction_iou():
    gt = np.zeros((8, 8), bool)
    gt[:4, :4] = True  # 16 px
    pr = np.zeros((8, 8), bool)
    pr[:4, 2:6] = True  # 16 px, 8 overlap -> IoU 8 / 24
    fig = viz.show_mask_prediction(np.zeros((8, 8, 3)), gt, pr, text="the big house")
    assert _titles(fig)[1].endswith("IoU 0.33") and _titles(fig)[0] == '"the big house"'


# ---------------------------------------------------------------------------- maps
def test_png_data_uri_roundtrip():
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    uri = viz.png_data_uri(rgba)
    assert uri.startswith("data:image/png;base64,")
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    np.testing.assert_array_equal(back, rgba)


def test_to_rgba_from_labels_and_images(tree):
    rgba = viz.to_rgba_uint8(_labels(), tree, level=1)
    assert rgba.shape == (4, 4, 4) and rgba[1, 3, 3] == 0 and tuple(rgba[0, 0]) == (255, 0, 0, 255)
    img = viz.to_rgba_uint8(np.ones((3, 4, 5), np.float32))  # channels-first float
    assert img.shape == (4, 5, 4) and img.min() == 255
    with pytest.raises(ValueError, match="tree"):
        viz.to_rgba_uint8(_labels())


def test_scene_map_writes_html_with_bounds_and_overlay(tree, tmp_path):
    s = _sample()
    m = viz.scene_map(viz.optical_to_display(s.optical), s.bounds, name="optical")
    m = viz.scene_map(s.labels, s.bounds, tree=tree, level=1, name="labels", m=m, opacity=0.5)
    path = viz.save_map_html(m, tmp_path / "sub" / "map.html")
    html = path.read_text()
    assert path.is_file()
    assert html.count("data:image/png;base64,") == 2
    assert re.search(r"\[\[45\.0, 10\.0\], \[45\.01, 10\.01\]\]", html)  # [[south, west], [north, east]]
    assert "tile.openstreetmap" not in html  # no basemap: works offline


def test_scene_map_validates(tree, tmp_path):
    img = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="west, south, east, north"):
        viz.scene_map(img, (10.0, 45.0, 9.0, 46.0))
    with pytest.raises(ValueError, match="bounds"):
        viz.scene_map(img, None)
    with pytest.raises(ValueError, match="html"):
        viz.save_map_html(viz.scene_map(img, (0, 0, 1, 1)), tmp_path / "map.png")



# ---------------------------------------------------------------------------- gallery
def test_show_gallery_masks_and_label_maps(tree):
    gt = np.zeros((8, 8), bool)
    gt[:4, :4] = True
    pr = np.zeros((8, 8), bool)
    pr[:4, 2:6] = True  # IoU 8 / 24
    img = np.zeros((8, 8, 3), np.float32)
    fig = viz.show_gallery([{"image": img, "prompt": "the big house", "pred": pr, "gt": gt},
                            {"image": img, "prompt": "support", "pred": gt, "gt": gt, "prompt_image": img,
                             "prompt_mask": gt, "score": 0.5, "score_name": "mIoU"}])
    titles = _titles(fig)
    assert len(titles) == 8 and titles[0] == "input" and titles[1] == "prompt (text)"
    assert titles[2] == "prediction (red)\nIoU 0.33" and titles[6] == "prediction (red)\nmIoU 0.50"
    assert titles[5].startswith("prompt: support")
    lab = _labels()
    pred = lab.copy()
    pred[3, :] = 3  # grass row -> water
    fig = viz.show_gallery([{"image": np.zeros((4, 4, 3)), "prompt": "all classes", "pred": pred, "gt": lab}],
                           tree=tree, level=1)
    # level 1: built-up IoU 5/5, water 3/7, vegetation 3/7 -> mean 0.62
    assert _titles(fig)[2] == "prediction\nmIoU (classes present) 0.62"
    legend = fig.axes[3].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["built-up", "water", "vegetation"]
    with pytest.raises(ValueError, match="lacks"):
        viz.show_gallery([{"image": img, "prompt": "x", "pred": pr}])
    with pytest.raises(ValueError, match="share"):
        viz.show_gallery([{"image": img, "prompt": "x", "pred": pr[:4], "gt": gt}])
    with pytest.raises(ValueError, match="tree="):
        viz.show_gallery([{"image": np.zeros((4, 4, 3)), "prompt": "x", "pred": pred, "gt": lab}])


# ---------------------------------------------------------------------------- report
def test_report_fills_from_values_and_rejects_gaps():
    text = viz.report("mIoU {miou:.3f} after {steps} steps ({frac:.0%})", miou=0.61234, steps=40, frac=0.5)
    assert text == "mIoU 0.612 after 40 steps (50%)" and text._repr_markdown_() == text
    with pytest.raises(ValueError, match="has no value"):
        viz.report("mIoU {miou:.3f}")
    with pytest.raises(ValueError, match="not used"):
        viz.report("mIoU {miou:.3f}", miou=0.5, mioo=0.4)
    with pytest.raises(ValueError, match="finite"):
        viz.report("mIoU {miou:.3f}", miou=float("nan"))
    with pytest.raises(ValueError, match="named placeholders"):
        viz.report("mIoU {}", miou=0.5)
    table = viz.report_table([{"mode": "visual", "mIoU": 0.5}, {"mode": "text|x", "mIoU": float("nan")}],
                             caption="Modes")
    assert table.splitlines() == ["Modes", "", "| mode | mIoU |", "| --- | --- |", "| visual | 0.500 |",
                                  "| text\\|x | n/a |"]
    with pytest.raises(ValueError, match="appear in no row"):
        viz.report_table([{"a": 1}], columns=["b"])


# ---------------------------------------------------------------------------- display in a kernel
def test_figures_display_once_per_cell_in_a_kernel(tmp_path, monkeypatch):
    """In a real kernel: a loop shows every figure, an assignment shows it, a last expression or an
    extra display() in the same cell does not show it twice, and a later cell can show it again."""
    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    setup = ("import os, numpy as np\nimport rslab.viz as viz\nimg = np.zeros((4, 4, 3))\n"
             "def f(t):\n    return viz.show_images([img], [t])")
    cells = [setup,
             "for t in 'ab':\n    f(t)",  # loop: 2
             "fig = f('c')",  # assignment: 1
             "f('d')",  # last expression: 1
             "display(fig)\nfig",  # a later cell: shown again, once
             "g = f('e')\ndisplay(g)\ng",  # shown once
             "print(viz.show_gallery([{'image': img, 'prompt': 'p', 'pred': img[..., 0] > 1, "
             "'gt': img[..., 0] > 1}]) is not None)",
             # a pyplot figure passed to viz.show: drawn once, not again by the inline backend
             "%matplotlib inline\nimport matplotlib.pyplot as plt\np = plt.figure()\nplt.plot([0, 1])\nviz.show(p)\n"
             "print(plt.get_fignums())"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in nb.cells]
    assert images == [0, 2, 1, 1, 1, 1, 1, 1], images
    assert "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip() == "[]"  # closed: nothing left in pyplot
