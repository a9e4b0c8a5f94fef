"""Figures, explorer and reports of optical-SAR alignment (notebook 01, SkySense-VITA stage 1).

- :func:`show_sar_neighbours`: one SAR tile, its nearest optical tiles and its text scores;
- :func:`sar_explorer`: that figure, with a slider over the tiles at a live kernel (ipywidgets);
- :func:`alignment_report` / :func:`paper_alignment_report`: the run's numbers as Markdown.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from matplotlib.figure import Figure

from rslab.viz.display import LabFigure, show
from rslab.viz.report import Report, report
from rslab.viz.sar import optical_to_display, sar_to_display
from rslab.viz.widgets import HEADLESS_NOTE, widgets_enabled

__all__ = ["alignment_report", "paper_alignment_report", "sar_explorer", "show_sar_neighbours"]


def show_sar_neighbours(i: int, sar_db: torch.Tensor, optical: torch.Tensor, sim_sar_opt: torch.Tensor,
                        text_scores: torch.Tensor, class_names: Sequence[str], targets: torch.Tensor,
                        k: int = 4) -> Figure:
    """SAR tile ``i``, the ``k`` optical tiles closest to it (``sim_sar_opt`` (N, N): cosine of SAR row
    vs optical column; its own partner's title in green) and its cosine to each class prompt
    (``text_scores`` (N, C); the true class ``targets[i]`` in green)."""
    n = len(sar_db)
    if not 0 <= i < n:
        raise ValueError(f"i must index one of the {n} SAR tiles, got {i}")
    if sim_sar_opt.shape != (n, len(optical)) or text_scores.shape != (n, len(class_names)):
        raise ValueError(f"need sim_sar_opt ({n}, {len(optical)}) and text_scores ({n}, {len(class_names)}), got "
                         f"{tuple(sim_sar_opt.shape)} and {tuple(text_scores.shape)}")
    top = sim_sar_opt[i].argsort(descending=True)[:k].tolist()
    fig = LabFigure(figsize=(14, 2.6), layout="constrained")
    axes = fig.subplots(1, k + 2, gridspec_kw={"width_ratios": [1] * (k + 1) + [1.4]})
    axes[0].imshow(sar_to_display(sar_db[i].numpy(), "rgb"))
    axes[0].set_title(f"SAR #{i}")
    for ax, j in zip(axes[1 : k + 1], top):
        ax.imshow(optical_to_display(optical[j].numpy()))
        ax.set_title(("match " if j == i else "") + f"#{j}  cos {sim_sar_opt[i, j]:.2f}", fontsize=9,
                     color="green" if j == i else "black")
    for ax in axes[: k + 1]:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].barh(list(class_names), text_scores[i].numpy(),
                  color=["C2" if c == int(targets[i]) else "C7" for c in range(len(class_names))])
    axes[-1].set_xlabel("cosine to class prompt")
    axes[-1].set_title("text scores (green = true class)", fontsize=9)
    return show(fig)


def sar_explorer(sar_db: torch.Tensor, optical: torch.Tensor, f_sar: torch.Tensor, f_opt: torch.Tensor,
                 class_emb: torch.Tensor, class_names: Sequence[str], targets: torch.Tensor):
    """:func:`show_sar_neighbours` of the first tile (the static figure), then, at a live kernel
    (:func:`~rslab.viz.widgets.widgets_enabled`), a slider that redraws it for any tile; headless runs
    print :data:`~rslab.viz.widgets.HEADLESS_NOTE` instead. ``f_sar`` / ``f_opt`` (N, D) and
    ``class_emb`` (C, D) are L2-normalised embeddings. Returns the widget, or None when headless."""
    if f_sar.shape != f_opt.shape or len(f_sar) != len(sar_db) or len(f_opt) != len(optical):
        raise ValueError(f"need paired (N, D) embeddings of the {len(sar_db)} tiles, got f_sar {tuple(f_sar.shape)} "
                         f"and f_opt {tuple(f_opt.shape)}")
    sim_sar_opt = f_sar @ f_opt.T
    text_scores = f_sar @ class_emb.T
    show_sar_neighbours(0, sar_db, optical, sim_sar_opt, text_scores, class_names, targets)
    if not widgets_enabled():  # headless runs build no widgets (rslab.viz.widgets)
        print(HEADLESS_NOTE)
        return None
    import ipywidgets as widgets
    from IPython.display import display

    slider = widgets.IntSlider(0, 0, len(sar_db) - 1, description="SAR tile")
    out = widgets.Output()

    def on_slide(change) -> None:
        with out:
            out.clear_output(wait=True)
            show_sar_neighbours(change["new"], sar_db, optical, sim_sar_opt, text_scores, class_names, targets)

    slider.observe(on_slide, names="value")
    box = widgets.VBox([slider, out])
    display(box)
    return box


def _metric(metrics: Mapping[str, float], key: str) -> float:
    if key not in metrics:
        raise ValueError(f"metrics lacks {key!r}; the report needs the notebook's metrics (have {sorted(metrics)})")
    return metrics[key]


def alignment_report(metrics: Mapping[str, float], n_eval: int, n_classes: int) -> Report:
    """The synthetic-world run's numbers: SAR -> optical R@1 / R@5 and zero-shot accuracy (training and
    held-out class names) before vs after alignment, and the optical teacher's, on ``n_eval`` held-out
    pairs of ``n_classes`` balanced classes (chance 1 / n_eval and 1 / n_classes)."""
    if n_eval < 1 or n_classes < 1:
        raise ValueError(f"n_eval and n_classes must be >= 1, got {n_eval} and {n_classes}")
    m = {k: _metric(metrics, key) for k, key in [
        ("r1_before", "sar2opt_r1_before"), ("r1_after", "sar2opt_r1_after"), ("r5_before", "sar2opt_r5_before"),
        ("r5_after", "sar2opt_r5_after"), ("zs_before", "sar_zeroshot_acc_before"),
        ("zs_after", "sar_zeroshot_acc_after"), ("zsh_before", "sar_zeroshot_acc_heldout_synonyms_before"),
        ("zsh_after", "sar_zeroshot_acc_heldout_synonyms_after"), ("zs_opt", "optical_zeroshot_acc_train"),
        ("zsh_opt", "optical_zeroshot_acc_heldout")]}
    return report(
        "On {n_eval} held-out pairs, SAR -> optical **R@1 went from {r1_before:.3f} to {r1_after:.3f}** "
        "(R@5 {r5_before:.3f} -> {r5_after:.3f}; chance R@1 is {chance:.3f}). Zero-shot classification of SAR "
        "by text prompts went from **{zs_before:.3f} to {zs_after:.3f}** with the training class names and "
        "from {zsh_before:.3f} to {zsh_after:.3f} with names held out of training (chance {zs_chance:.3f}); "
        "the optical teacher it copies scores {zs_opt:.3f} and {zsh_opt:.3f}. "
        "The project's target for R@1 on the smoke profile is 0.8.",
        n_eval=n_eval, chance=1 / n_eval, zs_chance=1 / n_classes, **m)


def paper_alignment_report(metrics: Mapping[str, float], n_eval: int, pair_dataset: str, n_chips: int,
                           eval_dataset: str) -> Report:
    """The full profile's numbers: SAR -> optical R@1 / R@5 on ``n_eval`` held-out ``pair_dataset`` pairs and
    water / not-water zero-shot on ``n_chips`` ``eval_dataset`` chips, before vs after, and the teacher's."""
    if n_eval < 1:
        raise ValueError(f"n_eval must be >= 1, got {n_eval}")
    m = {k: _metric(metrics, key) for k, key in [
        ("r1_before", "sar2opt_r1_before"), ("r1_after", "sar2opt_r1_after"), ("r5_before", "sar2opt_r5_before"),
        ("r5_after", "sar2opt_r5_after"), ("zs_before", "sar_zeroshot_acc_before"),
        ("zs_after", "sar_zeroshot_acc_after"), ("zs_opt", "optical_zeroshot_acc")]}
    return report(
        "On {n_eval} held-out {pairs} pairs, SAR -> optical **R@1 went from {r1_before:.3f} to {r1_after:.3f}** "
        "(R@5 {r5_before:.3f} -> {r5_after:.3f}; chance R@1 is {chance:.3f}). Zero-shot water / not-water on "
        "{n_chips} {chips} chips went from **{zs_before:.3f} to {zs_after:.3f}**; the frozen optical teacher "
        "scores {zs_opt:.3f}.",
        n_eval=n_eval, pairs=pair_dataset, chance=1 / n_eval, n_chips=n_chips, chips=eval_dataset, **m)

