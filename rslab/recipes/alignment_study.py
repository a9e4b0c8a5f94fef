"""The steps of SkySense-VITA stage 1 as notebook 01 runs them, around the training loops of
:mod:`rslab.recipes.alignment`.

Synthetic-world tutorial (ci / smoke profiles):

- :func:`alignment_encoder_config` -- one encoder size for the optical tower trained here and for E_SAR;
- :func:`train_optical_tower` -- the stand-in optical-text space when none is loaded (locked-text tuning);
- :class:`SARAlignmentRuns` -- stage-1 runs that differ only in the loss weights and the steps, all from
  the same initial E_SAR (the headline run, its "before" encoder and the ablation of L_CL / L_CMA);
- :func:`train_ceiling_students` -- the ceiling measurement (label-map and optical students);
- :func:`real_chip_scores` -- retrieval and water zero-shot on the tiles of one real Sentinel-1/2 chip.

Full profile (a frozen CLIP tower as E_opt, SEN12MS pairs, Sen1Floods11 chips):

- :func:`time_alignment_step` -- one step's forward + backward, for the plan printed before training;
- :func:`evaluate_paper_alignment` -- retrieval and water zero-shot before vs after alignment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from rslab.data.augment import SARViewAugment
from rslab.data.pairs import pairs_to_tensors, restyled_scenes, tile_pairs
from rslab.losses.contrastive import ImageAlignmentLoss
from rslab.metrics import retrieval_scores, zero_shot_accuracy
from rslab.models.alignment import (
    OpticalTextModel,
    SARAlignmentModel,
    embed_inputs,
    embed_optical,
    embed_sar,
    one_hot_labels,
    scene_texts,
)
from rslab.models.encoders import ImageEncoder, ImageEncoderConfig, preprocess_optical
from rslab.recipes.alignment import (
    TeacherSARModel,
    embed_pairs,
    train_bank_student,
    train_locked_text,
    train_sar_alignment,
)
from rslab.recipes.budget import time_step
from rslab.train import TrainConfig

ENCODER_PRESETS = ("tiny", "small", "base")


def alignment_encoder_config(preset: str, in_chans: int, image_size: int, embed_dim: int | None = None,
                             depth: int | None = None, num_heads: int | None = None,
                             sar_depth: int | None = None, out_dim: int = 384) -> ImageEncoderConfig:
    """The :class:`ImageEncoderConfig` ``preset`` (tiny | small | base) for ``in_chans`` channels at
    ``image_size`` px, projecting into the ``out_dim``-d text space (384: MiniLM).

    ``embed_dim``, ``depth`` and ``num_heads`` override the preset (None keeps its value); a 2-channel
    (SAR) encoder takes ``sar_depth`` blocks instead of ``depth`` when it is given."""
    if preset not in ENCODER_PRESETS:
        raise ValueError(f"preset must be one of {ENCODER_PRESETS}, got {preset!r}")
    if in_chans < 1 or image_size < 1:
        raise ValueError(f"in_chans and image_size must be >= 1, got {in_chans} and {image_size}")
    sizes = dict(embed_dim=embed_dim, depth=sar_depth if in_chans == 2 and sar_depth is not None else depth,
                 num_heads=num_heads)
    return getattr(ImageEncoderConfig, preset)(in_chans, img_size=image_size, out_dim=out_dim,
                                               **{k: v for k, v in sizes.items() if v is not None})


def train_optical_tower(world, samples: Sequence, text_encoder, tree, level: int, encoder_config: ImageEncoderConfig,
                        config: TrainConfig, layout_captions: int = 0, layout_repeat: int = 1, batch_size: int = 64,
                        crop: int | None = 48, colour: float = 0.0, view_weight: float = 0.0,
                        text_seed: int = 0) -> tuple[ImageEncoder, list[dict]]:
    """An optical encoder in an optical-text space, trained here: locked-text tuning (LiT) of a new
    :class:`OpticalTextModel` against the frozen ``text_encoder`` on the texts of ``samples``
    (:func:`~rslab.models.alignment.scene_texts` at tree ``level``: caption, class prompts and
    ``layout_captions`` layout paraphrases drawn with ``text_seed``), with the image-image term of
    weight ``view_weight`` against the same ground in another style of ``world``
    (:func:`~rslab.data.pairs.restyled_scenes`). Flips and rotations are off when layout captions say
    where things lie. Not the paper's: its E_opt is a pretrained CLIP tower (notebook 01, step 2).

    Returns the encoder (eval mode; freeze it before aligning SAR to it) and the training history."""
    if not samples:
        raise ValueError("samples must hold at least one scene of `world` to train the optical tower on")
    if encoder_config.in_chans != 4:
        raise ValueError(f"the optical tower takes RGB+NIR (in_chans=4), got encoder_config.in_chans="
                         f"{encoder_config.in_chans}")
    texts = scene_texts(samples, tree, level, layout_captions=layout_captions, layout_repeat=layout_repeat,
                        seed=text_seed)
    text_encoder.encode(sorted({t for per_scene in texts for t in per_scene}, key=len))  # one batched pass
    model = OpticalTextModel(encoder_config)
    history = train_locked_text(
        model, pairs_to_tensors(samples)[0], [text_encoder.encode(t) for t in texts], texts=texts,
        batch_size=batch_size, crop=crop, colour=colour, view_weight=view_weight,
        optical_other=pairs_to_tensors(restyled_scenes(world, samples))[0],
        dihedral=layout_captions == 0,  # a flip would falsify "a river in the north-west"
        config=config,
    )
    return model.encoder.eval(), history


@dataclass(eq=False)
class SARAlignmentRuns:
    """Stage-1 runs (L_img, SkySense-VITA Sec. "Image-level Alignment Pre-training") on one set of
    pairs that differ only in the loss weights and the number of steps.

    Every run starts from the same E_SAR: the global torch seed is set to ``init_seed`` right before
    the encoder is built, so :meth:`initial_encoder` is the untrained "before" encoder of every
    :meth:`train` run. The optimiser and data order follow ``seed`` (:class:`~rslab.train.TrainConfig`).
    """

    optical_encoder: ImageEncoder
    sar_config: ImageEncoderConfig
    optical: torch.Tensor
    sar_db: torch.Tensor
    augment: SARViewAugment
    lr: float
    temperature: float
    seed: int
    init_seed: int
    batch_size: int = 64
    optical_bank: bool = False
    init_from_optical: bool = False
    warmup_steps: int = 10
    log_every: int = 25

    def __post_init__(self) -> None:
        if self.optical.ndim != 4 or self.sar_db.ndim != 4 or len(self.optical) != len(self.sar_db):
            raise ValueError(f"optical and sar_db must be (N, C, H, W) pairs, got {tuple(self.optical.shape)} and "
                             f"{tuple(self.sar_db.shape)}")
        if self.sar_config.in_chans != 2:
            raise ValueError(f"sar_config must take 2 channels (VV, VH), got in_chans={self.sar_config.in_chans}")

    def _model(self) -> SARAlignmentModel:
        torch.manual_seed(self.init_seed)  # the same initial SAR encoder for every run
        return SARAlignmentModel(self.optical_encoder, self.sar_config, init_from_optical=self.init_from_optical)

    def initial_encoder(self) -> ImageEncoder:
        """E_SAR as every run starts it (untrained): the "before" of the before/after comparison."""
        return self._model().sar

    def train(self, lambda_cl: float, lambda_cma: float, steps: int) -> tuple[SARAlignmentModel, list[dict]]:
        """Train a fresh E_SAR for ``steps`` steps on L_img = lambda_cl L_CL + lambda_cma L_CMA; returns the
        model (frozen E_opt + trained E_SAR, in eval mode) and the training history."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        model = self._model()
        history = train_sar_alignment(
            model, self.optical, self.sar_db, ImageAlignmentLoss(lambda_cl, lambda_cma, self.temperature),
            batch_size=self.batch_size, augment=self.augment, optical_bank=self.optical_bank,
            config=TrainConfig(max_steps=steps, lr=self.lr, warmup_steps=min(self.warmup_steps, steps), seed=self.seed,
                               log_every=self.log_every, progress=False),
        )
        return model, history


def train_ceiling_students(optical_encoder: ImageEncoder, optical_train: torch.Tensor, optical_eval: torch.Tensor,
                           labels_train: np.ndarray, labels_eval: np.ndarray, num_classes: int,
                           student_config: ImageEncoderConfig, config: TrainConfig, batch_size: int = 64,
                           temperature: float = 0.07, init_seed: int = 0) -> dict[str, dict[int, float]]:
    """The ceiling measurement of notebook 01 (ours, not the paper's): students trained with the SAR
    encoder's L_CMA against the frozen bank of ``optical_encoder``'s training features, given the exact
    label map ("label map": one-hot leaf labels of ``num_classes``) or the optical image ("optical")
    instead of SAR (:func:`~rslab.recipes.alignment.train_bank_student`).

    Each student has ``student_config``'s size (the SAR encoder's) with its own input channels and
    starts from the global torch seed ``init_seed``. Returns, per student, its held-out retrieval
    scores ``{1: R@1, 5: R@5}`` against the optical embeddings of ``optical_eval``."""
    if len(labels_train) != len(optical_train) or len(labels_eval) != len(optical_eval):
        raise ValueError(f"need one label map per image: {len(labels_train)} for {len(optical_train)} training and "
                         f"{len(labels_eval)} for {len(optical_eval)} held-out images")
    bank = embed_optical(optical_encoder, optical_train)
    f_opt_eval = embed_optical(optical_encoder, optical_eval)
    students = {
        "label map": (one_hot_labels(labels_train, num_classes), one_hot_labels(labels_eval, num_classes)),
        "optical": (preprocess_optical(optical_train), preprocess_optical(optical_eval)),
    }
    scores = {}
    for name, (x_train, x_eval) in students.items():
        torch.manual_seed(init_seed)
        student = ImageEncoder(replace(student_config, in_chans=x_train.shape[1]))
        train_bank_student(student, x_train, bank, batch_size=batch_size, temperature=temperature, config=config)
        scores[name] = retrieval_scores(embed_inputs(student, x_eval), f_opt_eval, ks=(1, 5))
    return scores


def percentile_stretch(optical: torch.Tensor, low: float = 0.02, high: float = 0.98) -> torch.Tensor:
    """(N, C, H, W) images stretched per band between the ``low`` and ``high`` quantiles of that band
    over all N images, clipped to [0, 1] (real reflectance to the synthetic world's range)."""
    if optical.ndim != 4 or not 0 <= low < high <= 1:
        raise ValueError(f"need (N, C, H, W) images and 0 <= low < high <= 1, got {tuple(optical.shape)}, "
                         f"low={low}, high={high}")
    lo = torch.quantile(optical.transpose(0, 1).flatten(1), low, dim=1).view(1, -1, 1, 1)
    hi = torch.quantile(optical.transpose(0, 1).flatten(1), high, dim=1).view(1, -1, 1, 1)
    return ((optical - lo) / (hi - lo)).clamp(0, 1)


def _water_accuracy(f: torch.Tensor, class_prompts: torch.Tensor, water_index: int, water: torch.Tensor) -> dict:
    """Water / not-water accuracy: predicted water when the water prompt wins over every other class."""
    pred_water = ((f @ class_prompts.T).argmax(1) == water_index).long()
    return zero_shot_accuracy(torch.eye(2)[pred_water], torch.eye(2), water)


def real_chip_scores(chip, tile: int, optical_encoder: ImageEncoder, sar_encoders: dict[str, ImageEncoder],
                     class_prompts: torch.Tensor, water_index: int, water_label: int = 1,
                     ignore_index: int = 255) -> dict:
    """SAR -> optical tile retrieval and water / not-water zero-shot on one real co-registered chip
    (a Sen1Floods11 ``Sample``) cut into ``tile`` px tiles, for each SAR encoder in ``sar_encoders``.

    The optical input is Sentinel-2 B4, B3, B2, B8 (RGB + NIR) after :func:`percentile_stretch`. A tile
    is water when over half its labelled pixels are ``water_label``; it is predicted water when row
    ``water_index`` of ``class_prompts`` (C, D) is the closest class prompt. Returns ``{"sar": {name:
    {"r1", "r5", "acc", "balanced_acc"}}, "optical_balanced_acc", "n_tiles", "n_water"}``."""
    if not 0 <= water_index < len(class_prompts):
        raise ValueError(f"water_index must index one of the {len(class_prompts)} class prompts, got {water_index}")
    real = tile_pairs(chip, tile, optical_bands=(3, 2, 1, 7))
    if "labels" not in real:
        raise ValueError("the chip needs labels (water / not water) to score the zero-shot classification")
    optical = percentile_stretch(real["optical"])
    labelled = (real["labels"] != ignore_index).float().sum((1, 2)).clamp_min(1)
    water = ((real["labels"] == water_label).float().sum((1, 2)) / labelled > 0.5).long()
    f_opt = embed_optical(optical_encoder, optical)
    out = {"sar": {}, "n_tiles": len(water), "n_water": int(water.sum())}
    for name, encoder in sar_encoders.items():
        f_sar = embed_sar(encoder, real["sar"])
        r = retrieval_scores(f_sar, f_opt, ks=(1, 5))
        out["sar"][name] = {"r1": r[1], "r5": r[5], **_water_accuracy(f_sar, class_prompts, water_index, water)}
    out["optical_balanced_acc"] = _water_accuracy(f_opt, class_prompts, water_index, water)["balanced_acc"]
    return out


# --------------------------------------------------------------------------------------------
# Full profile: a frozen CLIP tower as E_opt, SEN12MS pairs, Sen1Floods11 chips
# --------------------------------------------------------------------------------------------


def time_alignment_step(model: TeacherSARModel, pairs: torch.utils.data.Dataset, loss_fn: ImageAlignmentLoss,
                        augment: SARViewAugment, batch_size: int, device: torch.device | str,
                        repeats: int = 1) -> float:
    """Seconds of one L_img training step's forward + backward (:func:`~rslab.recipes.budget.time_step`)
    on the first ``batch_size`` pairs of ``pairs`` (``(optical, sar_db)`` items), augmented as in training."""
    if len(pairs) < 1 or batch_size < 1:
        raise ValueError(f"need at least one pair and batch_size >= 1, got {len(pairs)} pairs, batch_size={batch_size}")
    probe_opt, probe_sar = (torch.stack(x) for x in zip(*[pairs[i] for i in range(min(batch_size, len(pairs)))]))

    def one_step() -> torch.Tensor:
        opt_a, sar_a, sar_b = augment(probe_opt.to(device), probe_sar.to(device))
        out = model(opt_a, sar_a, sar_b)
        return loss_fn(out["f_sar_a"], out["f_sar_b"], out["f_opt"])

    return time_step(one_step, model.sar, repeats=repeats)


def evaluate_paper_alignment(model: TeacherSARModel, unaligned_sar: nn.Module,
                             eval_pairs: torch.utils.data.Dataset, flood_chips: torch.utils.data.Dataset,
                             water_prompts: torch.Tensor, num_workers: int = 0,
                             ignore_index: int = 255) -> tuple[dict[str, float], int, int]:
    """What SAR inherited in the paper's setup, before (``unaligned_sar``) vs after (``model.sar``):
    SAR -> optical R@1 / R@5 on the held-out ``eval_pairs``, and zero-shot water / not-water of the
    labelled ``flood_chips`` (a chip is water when over half its labelled pixels are; ``water_prompts``
    (2, D): row 0 not water, row 1 water); the frozen optical teacher's zero-shot too.

    Returns ``(metrics, n_chips, n_water)``: the notebook's metric names (``sar2opt_r1_before``, ...,
    ``optical_zeroshot_balanced_acc``) and how many chips were scored and were water."""
    if water_prompts.ndim != 2 or len(water_prompts) != 2:
        raise ValueError(f"water_prompts must be (2, D): not water, water; got {tuple(water_prompts.shape)}")
    # the optical tower is frozen: it runs once per dataset; the "before" pass runs only the SAR encoder
    after = embed_pairs(model, eval_pairs, num_workers=num_workers)
    before = {**embed_pairs(model, eval_pairs, sar_encoder=unaligned_sar, num_workers=num_workers, optical=False),
              "optical": after["optical"]}
    flood_emb = {"after": embed_pairs(model, flood_chips, num_workers=num_workers)}
    if "labels" not in flood_emb["after"]:
        raise ValueError("flood_chips must yield labels (optical, sar, labels) to score water zero-shot")
    flood_emb["before"] = embed_pairs(model, flood_chips, sar_encoder=unaligned_sar, num_workers=num_workers,
                                      optical=False)
    labels = flood_emb["after"]["labels"]
    labelled = (labels != ignore_index).flatten(1).sum(1)
    keep = labelled > 0
    water_y = (((labels == 1).flatten(1).sum(1)) > labelled // 2).long()[keep]
    metrics = {}
    for tag, emb in (("before", before), ("after", after)):
        r = retrieval_scores(emb["sar"], emb["optical"], ks=(1, 5))
        zs = zero_shot_accuracy(flood_emb[tag]["sar"][keep], water_prompts, water_y)
        metrics[f"sar2opt_r1_{tag}"], metrics[f"sar2opt_r5_{tag}"] = r[1], r[5]
        metrics[f"sar_zeroshot_acc_{tag}"], metrics[f"sar_zeroshot_balanced_acc_{tag}"] = zs["acc"], zs["balanced_acc"]
    zs_opt = zero_shot_accuracy(flood_emb["after"]["optical"][keep], water_prompts, water_y)
    metrics["optical_zeroshot_acc"], metrics["optical_zeroshot_balanced_acc"] = zs_opt["acc"], zs_opt["balanced_acc"]
    return metrics, int(keep.sum()), int(water_y.sum())
