"""Training recipes of SkySense-VITA stage 1 (notebook 01): locked-text tuning of the optical
encoder, then image-level SAR alignment with L_img (paper Sec. "Image-level Alignment Pre-training").

The models, data helpers and evaluation live in :mod:`rslab.models.alignment`; this module adds the
loss (:mod:`rslab.losses.contrastive`) and the :class:`~rslab.train.Trainer`.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from rslab.data.augment import SARViewAugment, colour_jitter, paired_dihedral, paired_random_crop
from rslab.data.pairs import check_pairs
from rslab.data.readers import s2_rgb
from rslab.data.readers.pairs import crop_pair
from rslab.losses.contrastive import ImageAlignmentLoss, info_nce, locked_text_loss
from rslab.models.alignment import OpticalTextModel, SARAlignmentModel, embed_optical, global_embedding
from rslab.models.encoders import OpenCLIPTextEncoder, freeze, preprocess_sar
from rslab.train import TrainConfig, Trainer
from rslab.weights import get_entry, load


def _loader(n: int, batch_size: int, seed: int):
    """Shuffled batches of sample indices (the tensors stay in memory; augmentation is batched)."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (contrastive losses need negatives), got {batch_size}")
    if n < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} training pairs, got {n}")
    return DataLoader(TensorDataset(torch.arange(n)), batch_size=batch_size, shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(seed))


def _moved_once(t: torch.Tensor):
    """``get(device)`` -> ``t`` on ``device``, copied at most once per device. The trainer
    (accelerate) places the model after a recipe is set up, so a frozen bank can only learn its
    device inside the step; moving it there every step would copy it every step."""
    copies: dict[torch.device, torch.Tensor] = {}

    def get(device: torch.device) -> torch.Tensor:
        if device not in copies:
            copies[device] = t.to(device)
        return copies[device]

    return get


def train_locked_text(
    model: OpticalTextModel,
    optical: torch.Tensor,
    text_embeddings: Sequence[torch.Tensor] | torch.Tensor,
    config: TrainConfig,
    texts: Sequence[Sequence[str]] | None = None,
    batch_size: int = 64,
    crop: int | None = 48,
    colour: float = 0.0,
    view_weight: float = 0.0,
    view_temperature: float = 0.1,
    optical_other: torch.Tensor | None = None,
    dihedral: bool = True,
) -> list[dict]:
    """Locked-text tuning (LiT): pull each optical image towards the frozen embedding of one of its texts.

    Runs :class:`rslab.train.Trainer` on :func:`~rslab.losses.contrastive.locked_text_loss`, plus,
    when ``view_weight > 0``, ``view_weight`` x an image-image InfoNCE between two augmented views of
    each image (SimCLR). Why the second term: a pretrained CLIP tower -- what the paper freezes --
    tells *scenes* apart, not only their caption; LiT on a few hundred synthetic captions alone
    gives an embedding that knows the composition but is dominated by colour (regional style),
    which SAR cannot see. The view term with colour jitter makes it content-discriminative and
    style-invariant, as a pretrained encoder would be.

    Args:
        optical: (N, C, H, W) images in [0, 1].
        text_embeddings: per image, a (T_i, D) tensor of its candidate texts' embeddings (caption,
            class prompts...); one is drawn at random each time the image is used. A single (N, D)
            tensor means one text per image.
        config: the :class:`~rslab.train.TrainConfig` (steps, lr, out_dir for checkpoints...).
        texts: the strings behind ``text_embeddings`` (same nesting); identical strings in a batch
            are then positives of each other rather than negatives.
        crop: random crop size (then random flips/rotations), or None.
        colour: strength of :func:`~rslab.data.augment.colour_jitter` on every view (0: none).
        view_weight / view_temperature: weight and temperature of the image-image term (0: LiT only).
        optical_other: optional (N, C, H, W) second acquisition of the same ground (another date or
            regional style); the second view is then cut from it instead of from ``optical``.
        dihedral: random flips / 90-degree rotations of every view. Turn off when the texts say
            where things are (layout captions: "a river in the north-west"), which a flip would falsify.
    Returns the training history.
    """
    if view_weight < 0 or view_temperature <= 0:
        raise ValueError(f"need view_weight >= 0 and view_temperature > 0, got {view_weight}, {view_temperature}")
    if optical_other is not None and optical_other.shape != optical.shape:
        raise ValueError(f"optical_other must match optical's shape {tuple(optical.shape)}, "
                         f"got {tuple(optical_other.shape)}")
    if optical.ndim != 4 or not torch.isfinite(optical).all():
        raise ValueError(f"optical must be a finite (N, C, H, W) tensor, got shape {tuple(optical.shape)}")
    if isinstance(text_embeddings, torch.Tensor):
        text_embeddings = [t[None] for t in text_embeddings]
        texts = None if texts is None else [[t] for t in texts]
    if len(text_embeddings) != optical.shape[0]:
        raise ValueError(f"need one text set per image: {len(text_embeddings)} sets for {optical.shape[0]} images")
    if texts is not None and [len(t) for t in texts] != [len(e) for e in text_embeddings]:
        raise ValueError("texts and text_embeddings must have the same nesting (one string per embedding row).")

    def loss_fn(m: OpticalTextModel, batch) -> tuple[torch.Tensor, dict]:
        device = next(m.parameters()).device  # the Trainer may have moved the model to a GPU
        idx = batch[0].tolist()
        picks = [int(torch.randint(len(text_embeddings[i]), ())) for i in idx]
        f_text = torch.stack([text_embeddings[i][j] for i, j in zip(idx, picks)]).to(device)
        batch_texts = None if texts is None else [texts[i][j] for i, j in zip(idx, picks)]
        images = optical[idx].to(device)

        def view(x: torch.Tensor) -> torch.Tensor:
            if crop is not None:
                (x,) = paired_random_crop(x, size=crop)
            if dihedral:
                (x,) = paired_dihedral(x)
            return colour_jitter(x, colour)

        if view_weight > 0:  # both views in one forward pass
            others = images if optical_other is None else optical_other[idx].to(device)
            f_both, temperature = m(torch.cat([view(images), view(others)]))
            f_img, f_img_b = f_both.chunk(2)
        else:
            f_img, temperature = m(view(images))
        loss_text = locked_text_loss(f_img, f_text, temperature, batch_texts)
        logs = {"temperature": temperature.detach(), "loss_text": loss_text.detach()}
        if view_weight == 0:
            return loss_text, logs
        loss_view = info_nce(f_img, f_img_b, view_temperature)
        logs["loss_view"] = loss_view.detach()
        return loss_text + view_weight * loss_view, logs

    trainer = Trainer(model, loss_fn, _loader(optical.shape[0], batch_size, config.seed), config)
    history = trainer.fit()
    model.eval()
    return history


def train_sar_alignment(
    model: SARAlignmentModel,
    optical: torch.Tensor,
    sar_db: torch.Tensor,
    loss_fn: ImageAlignmentLoss,
    config: TrainConfig,
    batch_size: int = 64,
    augment: SARViewAugment | None = None,
    optical_bank: bool = False,
) -> list[dict]:
    """Stage-1 alignment: train E_SAR only, minimising L_img on (x_opt, x^a_SAR, x^b_SAR) triplets.

    Pairs whose SAR is mostly nodata are dropped (see :func:`check_pairs`); the remaining NaNs are
    masked out of the pooling. Runs :class:`rslab.train.Trainer`; returns the history.

    ``optical_bank=True``: the frozen optical features of all (whole, un-augmented) training images
    are computed once before training, and L_CMA contrasts each SAR view a against all of them
    (:func:`~rslab.losses.contrastive.cross_modal_alignment_loss` with ``index``: N - 1 negatives instead of
    B - 1, and no optical forward pass per step). View a then gets only the radiometric SAR
    augmentation (speckle, dB offset), no crop or flip, so that it stays co-registered with its
    cached optical feature; view b keeps the full augmentation.
    """
    augment = augment or SARViewAugment()
    keep = check_pairs(optical, sar_db)
    optical, sar_db = optical[keep], sar_db[keep]
    if any(p.requires_grad for p in model.optical.parameters()):
        raise ValueError("the optical encoder must be frozen for indirect alignment; build it via SARAlignmentModel.")
    need_b, need_opt = loss_fn.lambda_cl > 0, loss_fn.lambda_cma > 0
    bank = None
    if optical_bank and need_opt:
        bank = _moved_once(embed_optical(model.optical, optical))

    def step(m: SARAlignmentModel, batch) -> tuple[torch.Tensor, dict]:
        idx = batch[0].cpu()
        device = next(m.parameters()).device
        if bank is not None:
            sar = sar_db[idx].to(device)
            sar_a = augment.radiometric(sar)
            sar_b = augment.radiometric(augment.geometric(sar)[0]) if need_b else None
            out = m(None, sar_a, sar_b)
            loss = loss_fn(out["f_sar_a"], out["f_sar_b"], None, optical_bank=bank(device), index=idx.to(device))
            return loss, {k: v for k, v in loss_fn.last.items() if k != "loss"}
        opt_a, sar_a, sar_b = augment(optical[idx].to(device), sar_db[idx].to(device))
        out = m(opt_a if need_opt else None, sar_a, sar_b if need_b else None)
        loss = loss_fn(out["f_sar_a"], out["f_sar_b"], out["f_opt"])
        return loss, {k: v for k, v in loss_fn.last.items() if k != "loss"}

    trainer = Trainer(model, step, _loader(optical.shape[0], batch_size, config.seed), config)
    history = trainer.fit()
    model.eval()
    return history


def train_bank_student(
    encoder: nn.Module,
    inputs: torch.Tensor,
    bank: torch.Tensor,
    config: TrainConfig,
    batch_size: int = 64,
    temperature: float = 0.07,
) -> list[dict]:
    """Ceiling diagnostic: train a fresh ``encoder`` to pick out its row of a frozen feature ``bank``.

    The same L_CMA as the SAR alignment with ``optical_bank=True`` (InfoNCE of each embedding
    against all N bank rows, :func:`~rslab.losses.contrastive.info_nce` with ``index``), but the
    student sees ``inputs``: any model-ready ``(N, C, H, W)`` tensor co-registered with the bank's
    images -- e.g. the one-hot label map (what a perfect SAR sensor could at most reveal: the
    layout) or the optical image itself. Comparing such students with the SAR one tells whether
    SAR retrieval is limited by the SAR encoder or by what the frozen teacher's embedding encodes.
    Not part of the paper: a measurement of what the stand-in teacher allows.
    """
    if not isinstance(encoder, nn.Module) or not any(p.requires_grad for p in encoder.parameters()):
        raise ValueError("encoder must be an nn.Module with trainable parameters")
    if inputs.ndim != 4 or not torch.isfinite(inputs).all():
        raise ValueError(f"inputs must be a finite (N, C, H, W) tensor, got shape {tuple(inputs.shape)}")
    if bank.ndim != 2 or bank.shape[0] != inputs.shape[0]:
        raise ValueError(f"bank must be (N, D) with one row per input ({inputs.shape[0]}), got {tuple(bank.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    bank_on = _moved_once(bank.detach())

    def step(m: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        device = next(m.parameters()).device
        f = global_embedding(m(inputs[batch[0].cpu()].to(device)))  # CPU data, indices from the (GPU) loader
        return info_nce(f, bank_on(device), temperature, index=batch[0].to(device)), {}

    trainer = Trainer(encoder, step, _loader(inputs.shape[0], batch_size, config.seed), config)
    history = trainer.fit()
    encoder.eval()
    return history


# --------------------------------------------------------------------------------------------
# Full profile: a frozen CLIP image tower as E_opt and a SAR encoder of the same size, streamed
# co-registered pairs (SEN12MS), Sen1Floods11 for the zero-shot check
# --------------------------------------------------------------------------------------------


def clip_from_registry(name: str, weights_dir=None, device="cpu"):
    """``(model, text_encoder)``: the open_clip model of registry entry ``name`` (e.g.
    ``"clip-vit-b16-openai"``, built with QuickGELU by :func:`rslab.weights.load`) and its text tower
    as a :class:`~rslab.models.encoders.OpenCLIPTextEncoder` (the tokenizer ships with open_clip)."""
    import open_clip

    entry = get_entry(name)
    if entry.family not in ("openai_clip", "open_clip"):
        raise ValueError(f"{name} is a {entry.family} entry, not a CLIP model")
    model = freeze(load(name, weights_dir, device=device))
    return model, OpenCLIPTextEncoder(model, open_clip.get_tokenizer(entry.config["model"]), device=device)


class CLIPImageTower(nn.Module):
    """CLIP's image tower as the frozen optical encoder E_opt of stage 1 (SkySense-VITA Sec. 3.3).

    ``forward(optical)``: (B, C >= 3, H, W) reflectance-like images in [0, 1] (the first three
    channels are R, G, B) -> (B, D) image embeddings in CLIP's joint space. Inputs are resized to the
    tower's image size and normalised with its mean/std, as CLIP's own preprocessing does."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        visual = getattr(clip_model, "visual", None)
        if visual is None:
            raise ValueError("clip_model must be an open_clip CLIP model (with .visual)")
        self.visual = freeze(visual)
        size = visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        device = next(visual.parameters()).device  # the buffers live where the tower does
        self.register_buffer("mean", torch.tensor(mean, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, device=device).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "CLIPImageTower":
        super().train(False)  # frozen: always in eval mode
        return self

    def forward(self, optical: torch.Tensor) -> torch.Tensor:
        if optical.ndim != 4 or optical.shape[1] < 3:
            raise ValueError(f"optical must be (B, C >= 3, H, W) with R, G, B first, got {tuple(optical.shape)}")
        x = optical[:, :3].to(self.mean.device, self.mean.dtype)
        if tuple(x.shape[-2:]) != self.image_size:
            x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bilinear", antialias=True,
                                                align_corners=False)
        return self.visual((x - self.mean) / self.std)


class SARViT(nn.Module):
    """E_SAR at the size of the CLIP tower: the same ViT (width, depth, heads, output projection), with a
    2-channel patch embedding for (VV, VH). Trained from scratch (open_clip's initialisation) unless
    ``init_from`` gives a tower to copy the blocks from. Input: dB, normalised by
    :func:`~rslab.models.encoders.preprocess_sar` (NaN nodata -> 0), resized to the tower's size."""

    def __init__(self, clip_model_name: str, quick_gelu: bool, init_from: nn.Module | None = None):
        super().__init__()
        import open_clip

        visual = copy.deepcopy(init_from) if init_from is not None else \
            open_clip.create_model(clip_model_name, pretrained=None, force_quick_gelu=quick_gelu).visual
        for p in visual.parameters():
            p.requires_grad_(True)
        conv = visual.conv1
        visual.conv1 = nn.Conv2d(2, conv.out_channels, conv.kernel_size, conv.stride, bias=conv.bias is not None)
        self.visual = visual
        size = visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))

    def forward(self, sar_db: torch.Tensor) -> torch.Tensor:
        x, _ = preprocess_sar(sar_db)
        if tuple(x.shape[-2:]) != self.image_size:
            x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return self.visual(x)


class PairWindows(torch.utils.data.Dataset):
    """Co-registered ``(optical RGB, SAR dB)`` windows of a catalog pair reader, read from disk per item.

    Optical: Sentinel-2 B4, B3, B2 stretched per image between its 2nd and 98th percentile
    (:func:`rslab.data.readers.s2_rgb`: CLIP expects a natural-looking picture; raw TOA reflectance is
    dark); SAR: VV, VH in dB, NaN nodata kept (masked by the encoders). Centre ``size`` window."""

    def __init__(self, reader, size: int, indices: Sequence[int] | None = None):
        self.reader, self.size = reader, int(size)
        self.indices = list(range(len(reader))) if indices is None else [int(i) for i in indices]
        if not self.indices:
            raise ValueError("PairWindows needs at least one pair")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        sample = self.reader[self.indices[i]]
        if sample.optical is None or sample.sar is None:
            raise ValueError(f"{self.reader!r} item {self.indices[i]}: a pair needs optical and SAR")
        optical = s2_rgb(sample.optical) if sample.optical.shape[0] == 13 else np.clip(sample.optical[:3], 0, 1)
        sample.optical = optical
        w = crop_pair(sample, self.size, optical_bands=None)
        out = (torch.from_numpy(np.ascontiguousarray(w["optical"])), torch.from_numpy(np.ascontiguousarray(w["sar"])))
        return out if w["labels"] is None else (*out, torch.from_numpy(np.ascontiguousarray(w["labels"])))


class TeacherSARModel(nn.Module):
    """Frozen teacher E_opt + trainable E_SAR, returning the GAP/global features L_img consumes."""

    def __init__(self, teacher: nn.Module, student: nn.Module):
        super().__init__()
        if any(p.requires_grad for p in teacher.parameters()):
            raise ValueError("the optical teacher must be frozen (indirect alignment trains E_SAR only)")
        self.optical, self.sar = teacher, student

    def train(self, mode: bool = True) -> "TeacherSARModel":
        super().train(mode)
        self.optical.eval()
        return self

    def forward(self, optical: torch.Tensor | None, sar_a: torch.Tensor, sar_b: torch.Tensor | None = None) -> dict:
        f_opt = None
        if optical is not None:
            with torch.no_grad():
                f_opt = self.optical(optical).float()
        return {"f_opt": f_opt, "f_sar_a": self.sar(sar_a), "f_sar_b": None if sar_b is None else self.sar(sar_b)}


def train_teacher_sar_alignment(model: TeacherSARModel, pairs: torch.utils.data.Dataset, loss_fn: ImageAlignmentLoss,
                                config: TrainConfig, batch_size: int = 64, augment: SARViewAugment | None = None,
                                num_workers: int = 0) -> list[dict]:
    """Stage-1 alignment (L_img = lambda_CL L_CL + lambda_CMA L_CMA, SkySense-VITA Sec. 3.3) on pairs
    streamed from disk: ``pairs`` yields ``(optical (3, S, S), sar_db (2, S, S))``; ``num_workers``
    DataLoader workers read them (pinned memory on a GPU). Only E_SAR learns."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (contrastive losses need negatives), got {batch_size}")
    if len(pairs) < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} training pairs, got {len(pairs)}")
    augment = augment or SARViewAugment()
    need_b, need_opt = loss_fn.lambda_cl > 0, loss_fn.lambda_cma > 0
    loader = DataLoader(pairs, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
                        pin_memory=not config.cpu and torch.cuda.is_available(),
                        generator=torch.Generator().manual_seed(config.seed))

    def step(m: TeacherSARModel, batch) -> tuple[torch.Tensor, dict]:
        device = next(m.sar.parameters()).device
        optical, sar = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        opt_a, sar_a, sar_b = augment(optical, sar)
        out = m(opt_a if need_opt else None, sar_a, sar_b if need_b else None)
        loss = loss_fn(out["f_sar_a"], out["f_sar_b"], out["f_opt"])
        return loss, {k: v for k, v in loss_fn.last.items() if k != "loss"}

    history = Trainer(model, step, loader, config).fit()
    model.eval()
    return history


@torch.no_grad()
def embed_pairs(model: TeacherSARModel, pairs: torch.utils.data.Dataset, sar_encoder: nn.Module | None = None,
                batch_size: int = 64, num_workers: int = 0, optical: bool = True) -> dict[str, torch.Tensor]:
    """L2-normalised ``{"optical", "sar"}`` embeddings (N, D) of every pair (on the CPU), computed in
    batches on the model's device; ``sar_encoder`` replaces ``model.sar`` (e.g. the untrained one),
    and ``"labels"`` (N, S, S) comes back when the pairs carry labels. ``optical=False`` skips the
    (frozen) optical tower, e.g. for a second SAR encoder on pairs already embedded."""
    sar_encoder = sar_encoder if sar_encoder is not None else model.sar
    device = next(sar_encoder.parameters()).device
    was = sar_encoder.training
    sar_encoder.eval()
    out: dict[str, list] = {"optical": [], "sar": [], "labels": []}
    for batch in DataLoader(pairs, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        if optical:
            out["optical"].append(F.normalize(model.optical(batch[0].to(device)).float(), dim=-1).cpu())
        out["sar"].append(F.normalize(sar_encoder(batch[1].to(device)).float(), dim=-1).cpu())
        if len(batch) > 2:
            out["labels"].append(batch[2])
    sar_encoder.train(was)
    return {k: torch.cat(v) for k, v in out.items() if v}
