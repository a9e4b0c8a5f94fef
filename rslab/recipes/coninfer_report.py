"""ConInfer's evaluation loops and tables on held-out scenes (notebook 05).

Every function here runs ConInfer (:func:`rslab.models.coninfer.refine_maps`, pools of
``pool_images`` images) with settings chosen on validation scenes
(:func:`rslab.recipes.coninfer_fit.choose_on_validation`) and scores it with
:func:`rslab.metrics.pixel_miou`; nothing is chosen on the test scenes.

* :func:`ablation_settings` / :func:`run_ablation`: the paper's Tab. 4 ablation (prior,
  context-only, decoupled, joint in both readings of Sec. 3.4), and :func:`per_class_table`.
* :func:`class_gains` / :func:`compare_word`: the words of the run's report.
* :func:`evaluate_levels`: the same prior and settings at every level of the semantic tree,
  with the mixture weights of Eq. 5 fixed uniform (the paper's footnote) or re-estimated.
* :func:`prior_context_grid`: every prior against every context, both joint modes;
  :func:`fallback_result`: the run without notebook 03's model.
* :func:`objective_floors`: the floor of Eq. 8 for the mixture after each z-update
  (twice the Bhattacharyya distance between prior and context posterior).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from rslab.metrics import pixel_miou
from rslab.models import coninfer as ci
from rslab.recipes import coninfer as rc
from rslab.recipes.coninfer_fit import PRIOR_TEMPERATURES, fit_temperature

__all__ = ["consensus_setting", "ablation_settings", "run_ablation", "per_class_table", "compare_word",
           "class_gains", "evaluate_levels", "level_lines", "prior_context_grid", "fallback_result",
           "prior_context_table", "bhattacharyya_floor", "objective_floors", "JOINT_MODES"]

#: The two readings of the joint step (:mod:`rslab.models.coninfer`): the public code and the paper as written.
JOINT_MODES = ("reference", "paper")


def consensus_setting(mode: str, temperature: float, n_iter: int = 10) -> ci.ConInferConfig:
    """The :class:`~rslab.models.coninfer.ConInferConfig` of notebook 05: ``mode``, ``n_iter`` EM
    iterations (Sec. 4.2), consensus temperature ``T`` of Eq. 11, features z-scored and
    unit-normalised per pool (as in the validation grid)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (the consensus T of Eq. 11), got {temperature}")
    return ci.ConInferConfig(mode=mode, n_iter=n_iter, temperature=temperature, standardize=True)


def ablation_settings(tau: dict[str, float], n_iter: int = 10) -> dict[str, ci.ConInferConfig]:
    """The four ConInfer rows of the ablation (Tab. 4): context-only, decoupled and joint with the
    reference temperature ``tau["reference"]``, joint (paper) with ``tau["paper"]``."""
    missing = [m for m in JOINT_MODES if m not in tau]
    if missing:
        raise ValueError(f"tau needs a consensus temperature per mode {JOINT_MODES}; missing {missing}")
    return {"context_only": consensus_setting("context_only", tau["reference"], n_iter),
            "decoupled": consensus_setting("decoupled", tau["reference"], n_iter),
            "joint_reference": consensus_setting("reference", tau["reference"], n_iter),
            "joint_paper": consensus_setting("paper", tau["paper"], n_iter)}


def run_ablation(prior: torch.Tensor, features: torch.Tensor, settings: dict[str, ci.ConInferConfig], labels,
                 num_classes: int, pool_images: int = 16) -> tuple[dict, dict, dict]:
    """Each setting on (B, K, h, w) ``prior`` and (B, D, h, w) ``features``, pools of ``pool_images``.

    Returns ``(probs, fits, scores)``: name -> (B, K, h, w) probabilities (``"prior"`` first), name
    -> the per-pool :class:`~rslab.models.coninfer.ConInferResult` list, name -> ``pixel_miou``'s
    ``(mIoU, per-class IoU)`` against (B, H, W) ``labels``.
    """
    if not settings:
        raise ValueError("settings is empty: pass name -> ConInferConfig (ablation_settings)")
    probs, fits = {"prior": prior}, {}
    for name, cfg in settings.items():
        probs[name], fits[name] = ci.refine_maps(prior, features, cfg, pool_images=pool_images)
    return probs, fits, {name: pixel_miou(p, labels, num_classes) for name, p in probs.items()}


def per_class_table(scores: dict, class_names: Sequence[str]) -> str:
    """IoU (%) per class (rows) and setting (columns), with the mIoU last."""
    if not scores:
        raise ValueError("scores is empty: pass name -> (mIoU, per-class IoU)")
    lines = [f"{'class':>24} " + " ".join(f"{n:>12}" for n in scores)]
    for c, cname in enumerate(class_names):
        lines.append(f"{cname:>24} " + " ".join(f"{100 * scores[n][1][c]:12.1f}" for n in scores))
    lines.append(f"{'mIoU':>24} " + " ".join(f"{100 * scores[n][0]:12.1f}" for n in scores))
    return "\n".join(lines)


def compare_word(value: float, reference: float, tolerance: float = 0.005) -> str:
    """``"above"``, ``"below"`` or ``"level with"`` ``reference`` (within ``tolerance``)."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    return "above" if value > reference + tolerance else ("below" if value < reference - tolerance else "level with")


def class_gains(scores: dict, name: str, class_names: Sequence[str], n: int = 3) -> tuple[str, str]:
    """The ``n`` largest per-class gains and losses (IoU points) of setting ``name`` over the prior,
    as text (``"water +12, road +3"``, or ``"none"``); classes absent from both are skipped."""
    if name not in scores or "prior" not in scores:
        raise ValueError(f"scores needs 'prior' and {name!r}; has {sorted(scores)}")
    new, old = scores[name][1], scores["prior"][1]
    gains = sorted((100 * (new[c] - old[c]), cname) for c, cname in enumerate(class_names)
                   if np.isfinite(new[c]) and np.isfinite(old[c]))
    up = ", ".join(f"{c} {g:+.0f}" for g, c in gains[::-1][:n] if g > 0) or "none"
    down = ", ".join(f"{c} {g:+.0f}" for g, c in gains[:n] if g < 0) or "none"
    return up, down


def _share(class_map: torch.Tensor, num_classes: int) -> np.ndarray:
    return np.bincount(class_map.argmax(1).ravel().numpy(), minlength=num_classes) / class_map[:, 0].numel()


def evaluate_levels(encoder, text_encoder, tree, val, test, features: torch.Tensor,
                    settings: dict[str, ci.ConInferConfig], patch: int, prior_temperature: float | None = None,
                    pool_images: int = 16, levels: Sequence[int] = (1, 2, 3)
                    ) -> tuple[dict[int, dict], dict[int, dict]]:
    """The text prior and this run's settings at every tree level, on the test scenes.

    Per level: the class prompts (training synonyms) are embedded by ``text_encoder``, the prior
    ``softmax(cos / T)`` of ``encoder`` is calibrated on the validation scenes (its own T, unless
    ``prior_temperature`` fixes it), and ConInfer runs in both joint modes with the mixture weights
    of Eq. 5 uniform (the paper) and re-estimated from z (``mixture_weights="estimated"``, a
    deviation, for diagnosis). ``val`` / ``test``: ``(scenes, optical)`` pairs; ``features``: this
    run's context of the test scenes; ``settings``: :func:`ablation_settings` (the joint rows).

    Returns ``(rows, details)``: level -> ``classes``, ``prior_temperature``, ``prior`` and
    ``joint_<mode>[_estimated_weights]`` mIoU; level -> ``names``, ``per_class`` and ``share`` (setting
    -> per-class IoU / share of the area each class is given; ``truth`` too).
    """
    missing = [f"joint_{m}" for m in JOINT_MODES if f"joint_{m}" not in settings]
    if missing:
        raise ValueError(f"settings lacks {missing} (ablation_settings gives them)")
    (val_scenes, val_optical), (test_scenes, test_optical) = val, test
    rows, details = {}, {}
    for lv in levels:
        names = tree.names(lv)
        k = len(names)
        emb = text_encoder.prompt_embeddings([tree.synonyms(n, "train") for n in names])
        lut = tree.level_lut(lv)
        sc = {sp: rc.text_prior_maps(encoder, x, emb, "optical", temperature=1.0).clamp_min(1e-12).log()
              for sp, x in (("val", val_optical), ("test", test_optical))}
        vlab = torch.stack([ci.patch_labels(lut[s.labels], patch, k) for s in val_scenes])
        t = float(prior_temperature) if prior_temperature else fit_temperature(sc["val"], vlab, PRIOR_TEMPERATURES)[0]
        p = torch.softmax(sc["test"] / t, 1)
        lab = np.stack([lut[s.labels] for s in test_scenes])
        m_p, iou_p = pixel_miou(p, lab, k)
        row = {"classes": k, "prior_temperature": t, "prior": m_p}
        per_class = {"prior": iou_p}
        share = {"truth": np.bincount(lab[lab != 255].ravel(), minlength=k) / (lab != 255).sum(),
                 "prior": _share(p, k)}
        for mode in JOINT_MODES:
            for pi in ("uniform", "estimated"):   # estimated: Eq. 5 weights re-estimated (a deviation, diagnosis only)
                cfg = dataclasses.replace(settings[f"joint_{mode}"], mixture_weights=pi)
                z, _ = ci.refine_maps(p, features, cfg, pool_images=pool_images)
                m_l, iou_l = pixel_miou(z, lab, k)
                row[f"joint_{mode}" + ("" if pi == "uniform" else "_estimated_weights")] = m_l
                per_class[f"{mode[:3]} {pi[:3]}."] = iou_l
                share[f"{mode[:3]} {pi[:3]}."] = _share(z, k)
        rows[lv], details[lv] = row, {"names": list(names), "per_class": per_class, "share": share}
    return rows, details


def level_lines(rows: dict[int, dict], details: dict[int, dict], detail: int | None = 1) -> str:
    """One line per level of :func:`evaluate_levels` (mIoU %), and for level ``detail`` the IoU and
    the share of the area of every class per setting (where uniform mixture weights split a
    dominant class)."""
    lines = []
    for lv, row in rows.items():
        lines.append(f"level {lv} ({row['classes']:2d} classes, prior T {row['prior_temperature']}): "
                     f"prior {100 * row['prior']:.1f}, joint reference {100 * row['joint_reference']:.1f} "
                     f"(estimated weights {100 * row['joint_reference_estimated_weights']:.1f}), "
                     f"joint paper {100 * row['joint_paper']:.1f} "
                     f"(estimated weights {100 * row['joint_paper_estimated_weights']:.1f})")
        if lv == detail:
            per_class, share = details[lv]["per_class"], details[lv]["share"]
            lines.append(f"  level {lv} per class, IoU % (share of area %):")
            lines.append(f"  {'class':>12} " + " ".join(f"{n:>17}" for n in per_class))
            for c, cname in enumerate(details[lv]["names"]):
                cells = " ".join(f"{100 * per_class[n][c]:7.1f} ({100 * share[n][c]:5.1f}%)" for n in per_class)
                lines.append(f"  {cname:>12} {cells}   truth {100 * share['truth'][c]:.1f}%")
    return "\n".join(lines)


def prior_context_grid(priors: dict[str, torch.Tensor], contexts: dict[str, torch.Tensor], labels, num_classes: int,
                       tau_of: dict[str, dict[str, float]], n_iter: int = 10, pool_images: int = 16,
                       done: dict[tuple[str, str], dict[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """Every prior against every context, both joint modes, each context at its validation-chosen
    consensus temperature per mode (``tau_of``). ``done``: (prior, context) -> mode -> mIoU already
    measured with the same settings (this run's pair), not run again.

    Returns ``"<prior>+<context>"`` -> {"prior": mIoU, "reference": mIoU, "paper": mIoU}.
    """
    missing = [c for c in contexts if c not in tau_of]
    if missing:
        raise ValueError(f"tau_of has no consensus temperatures for contexts {missing}")
    done = done or {}
    table = {}
    for pname, pmaps in priors.items():
        base = pixel_miou(pmaps, labels, num_classes)[0]
        for cname, fmaps in contexts.items():
            row = {"prior": base}
            for mode in JOINT_MODES:
                if (pname, cname) in done:   # this run's pair: the ablation ran the same settings
                    row[mode] = done[(pname, cname)][mode]
                    continue
                z, _ = ci.refine_maps(pmaps, fmaps, consensus_setting(mode, tau_of[cname][mode], n_iter),
                                      pool_images=pool_images)
                row[mode] = pixel_miou(z, labels, num_classes)[0]
            table[f"{pname}+{cname}"] = row
    return table


def fallback_result(table: dict[str, dict[str, float]], fallback_row: dict | None, prior_source: str) -> dict | None:
    """The test result of the context chosen on validation without notebook 03's model
    (:attr:`~rslab.recipes.coninfer_fit.ValidationChoice.fallback`), from :func:`prior_context_grid`;
    None when there is no fallback."""
    if fallback_row is None:
        return None
    key = f"{prior_source}+{fallback_row['features']}"
    if key not in table:
        raise ValueError(f"{key!r} is not in the prior-context table ({sorted(table)})")
    fb = table[key]
    return {"context": fallback_row["features"], "mode": fallback_row["mode"],
            "temperature": fallback_row["temperature"], "miou_prior": fb["prior"],
            "miou_joint": fb[fallback_row["mode"]], "validation_miou": fallback_row["miou"]}


def prior_context_table(table: dict[str, dict[str, float]]) -> str:
    """:func:`prior_context_grid` as text: mIoU (%) of the prior and both joint modes, and the gains."""
    lines = [f"{'prior + context':>30} {'prior':>7} {'ref.':>7} {'paper':>7}   gain ref. / paper (points)"]
    for key, r in table.items():
        lines.append(f"{key:>30} {100 * r['prior']:7.1f} {100 * r['reference']:7.1f} {100 * r['paper']:7.1f}   "
                     f"{100 * (r['reference'] - r['prior']):+5.1f} / {100 * (r['paper'] - r['prior']):+5.1f}")
    return "\n".join(lines)


def bhattacharyya_floor(prior: torch.Tensor, posterior: torch.Tensor) -> float:
    """The smallest value of Eq. 8 over z for a fixed mixture: with ``z ∝ sqrt(p q)`` (the exact
    minimiser of Eq. 7), ``KL(z||p) + KL(z||q) = -2 log sum_k sqrt(p_k q_k)``, twice the
    Bhattacharyya distance; averaged over the (N, K) patches. ``prior`` is renormalised."""
    if prior.ndim != 2 or prior.shape != posterior.shape:
        raise ValueError(f"prior and posterior must both be (N, K), got {tuple(prior.shape)} and "
                         f"{tuple(posterior.shape)}")
    p = prior / prior.sum(1, keepdim=True)
    return float((-2 * torch.log((p.clamp_min(1e-12) * posterior.clamp_min(1e-12)).sqrt().sum(1))).mean())


def objective_floors(prior: torch.Tensor, features: torch.Tensor, config: ci.ConInferConfig,
                     n_updates: int) -> list[float]:
    """:func:`bhattacharyya_floor` for the context posterior q after each of ``n_updates`` z-updates
    (the fit re-run with ``n_iter = 0, 1, ...``) on one pool: (N, K) ``prior``, (N, D) ``features``."""
    if n_updates < 1:
        raise ValueError(f"n_updates must be >= 1, got {n_updates}")
    return [bhattacharyya_floor(prior, ci.coninfer(prior, features, dataclasses.replace(config, n_iter=i)).posterior)
            for i in range(n_updates)]
