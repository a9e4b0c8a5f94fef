"""Referring segmentation, interactively: type an expression for a scene and see the predicted mask.

:func:`show_expression` draws one (scene, expression) prediction next to the scene's own
expressions; :func:`referring_explorer` wraps it in ipywidgets (a scene picker and a text box) for a
live kernel. Both take the model as a plain ``segment(image, text) -> mask`` callable, e.g.
``functools.partial(rslab.recipes.rs2sam2.segment, model, encoder)``, so this module needs no model
code (viz imports only data and io: book/architecture.md).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure

from rslab.data.sample import Sample
from rslab.viz.figures import show_mask_prediction

__all__ = ["referring_explorer", "show_expression"]

Segmenter = Callable[[np.ndarray, str], np.ndarray]


def show_expression(sample: Sample, text: str, segment: Segmenter) -> Figure | None:
    """Print ``sample``'s own expressions, segment ``text`` on its RGB image and draw the prediction.

    The ground truth is outlined when ``text`` is one of the scene's expressions (surrounding
    spaces ignored); any other text is drawn without a reference (an all-empty ground truth).
    ``segment`` is called as ``segment(sample.optical, text)``; a ``ValueError`` from it (an empty
    or over-long expression) is printed, not raised, and ``None`` returned: a typo in the text box
    must not break the explorer."""
    if not isinstance(sample, Sample) or sample.optical is None:
        raise ValueError(f"sample must be a Sample with an optical image, got {type(sample).__name__}")
    if not callable(segment):
        raise ValueError(f"segment must be a callable segment(image, text) -> mask, got {type(segment).__name__}; "
                         "e.g. functools.partial(rslab.recipes.rs2sam2.segment, model, encoder)")
    known = {e.text: e.mask for e in sample.referring}
    print("this scene's expressions:", "; ".join(known))
    try:
        pred = segment(sample.optical, text)
    except ValueError as err:
        print("cannot segment:", err)
        return None
    gt = known.get(text.strip(), np.zeros_like(pred))
    return show_mask_prediction(sample.optical[:3].transpose(1, 2, 0), gt, pred, text)


def referring_explorer(samples: Sequence[Sample], index: Sequence[tuple[int, int]], segment: Segmenter):
    """An ipywidgets explorer: pick a scene, type an expression, press Enter, see the mask.

    ``samples`` and ``index`` are a :class:`rslab.data.referring.ReferringDataset`'s (``data.samples``,
    ``data.index``: its ``(scene, expression)`` pairs); the picker lists the scenes ``index`` uses
    and the text box starts on the first scene's first expression. Each change redraws
    :func:`show_expression` in the explorer's output area. Returns the widget (a ``VBox``), already
    drawn once; display it with ``IPython.display.display``. Needs ipywidgets (build it only at a live
    kernel: :func:`rslab.viz.widgets.widgets_enabled`)."""
    import ipywidgets as widgets
    from IPython.display import clear_output

    scene_ids = sorted({int(i) for i, _ in index})
    if not scene_ids:
        raise ValueError("index is empty: give the (scene, expression) pairs of a ReferringDataset (data.index)")
    if not callable(segment):
        raise ValueError(f"segment must be a callable segment(image, text) -> mask, got {type(segment).__name__}")
    picker = widgets.Dropdown(options=[(f"held-out scene {i}", i) for i in scene_ids], description="scene")
    text_box = widgets.Text(value=samples[scene_ids[0]].referring[0].text, description="expression",
                            continuous_update=False, layout=widgets.Layout(width="60%"))
    out = widgets.Output()

    def redraw(*_):
        with out:
            clear_output(wait=True)
            show_expression(samples[picker.value], text_box.value, segment)

    picker.observe(redraw, names="value")
    text_box.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([picker, text_box]), out])
