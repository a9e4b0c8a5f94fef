"""The referring explorer: one expression's prediction drawn, and the widget that redraws it."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from rslab.data.sample import ReferringExpression, Sample
from rslab.viz.referring import referring_explorer, show_expression


def _scene(size=16):
    left = np.zeros((size, size), bool)
    left[4:10, 1:6] = True
    return Sample(optical=np.random.default_rng(0).random((3, size, size), dtype=np.float32),
                  referring=[ReferringExpression("the left square", left, "a"),
                             ReferringExpression("the river", ~left, "b")])


class Segmenter:
    """A fake model: the left square for any text, a ValueError for an empty one; records its calls."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, image, text):
        self.calls.append(text)
        if not text.strip():
            raise ValueError("the expression is empty")
        return _scene(image.shape[-1]).referring[0].mask


def _outlined(fig: Figure) -> bool:
    """True when the prediction panel carries the ground-truth contour."""
    return len(fig.axes[1].collections) > 0


def test_show_expression_outlines_a_known_expression_only(capsys):
    scene, seg = _scene(), Segmenter()
    fig = show_expression(scene, "the left square ", seg)
    assert isinstance(fig, Figure) and _outlined(fig) and "IoU 1.00" in fig.axes[1].get_title()
    assert "this scene's expressions: the left square; the river" in capsys.readouterr().out
    other = show_expression(scene, "the red roof", seg)
    assert not _outlined(other) and "IoU 0.00" in other.axes[1].get_title()  # no reference: empty ground truth
    assert seg.calls == ["the left square ", "the red roof"]


def test_show_expression_prints_a_refused_expression(capsys):
    assert show_expression(_scene(), "  ", Segmenter()) is None
    assert "cannot segment: the expression is empty" in capsys.readouterr().out


def test_show_expression_bad_inputs():
    with pytest.raises(ValueError, match="sample must be a Sample"):
        show_expression(np.zeros((3, 8, 8)), "x", Segmenter())
    with pytest.raises(ValueError, match="segment must be a callable"):
        show_expression(_scene(), "x", "model")


def test_explorer_redraws_on_each_change():
    pytest.importorskip("ipywidgets")
    samples, seg = [_scene(), _scene(), _scene()], Segmenter()
    box = referring_explorer(samples, [(2, 0), (0, 1), (2, 1)], seg)
    picker, text_box = box.children[0].children
    assert [v for _, v in picker.options] == [0, 2] and text_box.value == "the left square"
    assert seg.calls == ["the left square"]  # drawn once when built
    text_box.value = "the river"
    picker.value = 2
    assert seg.calls == ["the left square", "the river", "the river"]


def test_explorer_bad_inputs():
    pytest.importorskip("ipywidgets")
    with pytest.raises(ValueError, match="index is empty"):
        referring_explorer([_scene()], [], Segmenter())
    with pytest.raises(ValueError, match="segment must be a callable"):
        referring_explorer([_scene()], [(0, 0)], None)
