"""Notebook 01's explorer figure, headless explorer and reports (rslab.viz.alignment)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from rslab.viz.alignment import alignment_report, paper_alignment_report, sar_explorer, show_sar_neighbours
from rslab.viz.widgets import HEADLESS_ENV, HEADLESS_NOTE

CLASSES = ["water", "forest", "road"]


def tiles(n: int = 5):
    g = torch.Generator().manual_seed(0)
    sar = torch.rand(n, 2, 16, 16, generator=g) * 20 - 25
    optical = torch.rand(n, 4, 16, 16, generator=g)
    f = F.normalize(torch.randn(n, 8, generator=g), dim=-1)
    return sar, optical, f


def test_neighbours_figure_marks_the_true_partner_and_class():
    sar, optical, f = tiles()
    sim = f @ f.T  # each SAR tile's closest optical tile is its own partner
    scores = torch.rand(5, len(CLASSES))
    fig = show_sar_neighbours(2, sar, optical, sim, scores, CLASSES, torch.tensor([0, 1, 2, 0, 1]))
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert fig.axes[1].get_title().startswith("match #2") and fig.axes[1].title.get_color() == "green"
    assert [t.get_text() for t in fig.axes[5].get_yticklabels()] == CLASSES
    with pytest.raises(ValueError, match="i must index"):
        show_sar_neighbours(5, sar, optical, sim, scores, CLASSES, torch.zeros(5))
    with pytest.raises(ValueError, match="text_scores"):
        show_sar_neighbours(0, sar, optical, sim, scores[:, :2], CLASSES, torch.zeros(5))


def test_explorer_draws_the_static_figure_and_no_widget_when_headless(monkeypatch, capsys):
    monkeypatch.setenv(HEADLESS_ENV, "1")
    sar, optical, f = tiles()
    assert sar_explorer(sar, optical, f, f, F.normalize(torch.randn(3, 8), dim=-1), CLASSES, torch.zeros(5)) is None
    assert HEADLESS_NOTE in capsys.readouterr().out
    with pytest.raises(ValueError, match="paired"):
        sar_explorer(sar, optical, f, f[:4], torch.randn(3, 8), CLASSES, torch.zeros(5))


METRICS = {"sar2opt_r1_before": 0.05, "sar2opt_r1_after": 0.5, "sar2opt_r5_before": 0.25, "sar2opt_r5_after": 0.9,
           "sar_zeroshot_acc_before": 0.2, "sar_zeroshot_acc_after": 0.7,
           "sar_zeroshot_acc_heldout_synonyms_before": 0.2, "sar_zeroshot_acc_heldout_synonyms_after": 0.6,
           "optical_zeroshot_acc_train": 0.9, "optical_zeroshot_acc_heldout": 0.8, "optical_zeroshot_acc": 0.85}


def test_reports_fill_in_the_run_numbers():
    text = alignment_report(METRICS, n_eval=100, n_classes=5)
    assert "**R@1 went from 0.050 to 0.500**" in text and "chance R@1 is 0.010" in text and "(chance 0.200)" in text
    assert "scores 0.900 and 0.800" in text
    paper = paper_alignment_report(METRICS, 4, "sen12ms", 3, "sen1floods11")
    assert "On 4 held-out sen12ms pairs" in paper and "3 sen1floods11 chips went from **0.200 to 0.700**" in paper
    with pytest.raises(ValueError, match="sar2opt_r1_after"):
        alignment_report({k: v for k, v in METRICS.items() if k != "sar2opt_r1_after"}, 100, 5)
    with pytest.raises(ValueError, match="n_eval"):
        paper_alignment_report(METRICS, 0, "sen12ms", 3, "sen1floods11")
