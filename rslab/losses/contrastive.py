"""Contrastive losses: InfoNCE and the image-level alignment objective of SkySense-VITA stage 1.

SkySense-VITA, Sec. "Image-level Alignment Pre-training": the optical encoder E_opt is frozen and
only the SAR encoder E_SAR is trained. For a registered pair (x_opt, x_SAR), two augmented SAR
views x^a_SAR, x^b_SAR are encoded and globally average-pooled into f_opt, f^a_SAR, f^b_SAR, and

    L_img = lambda_CL * L_CL(f^a_SAR, f^b_SAR) + lambda_CMA * L_CMA(f^a_SAR, f_opt)

with L_CL an intra-SAR contrastive loss (robust SAR features) and L_CMA a cross-modal alignment
loss anchoring SAR to the fixed optical space. The summary we follow does not spell out the form
of either term; we use the symmetric InfoNCE of CLIP for both (in-batch negatives), the usual
choice for this kind of alignment, and say so here rather than pretend it is the paper's formula.

:func:`locked_text_loss` is the same InfoNCE against a frozen text tower (LiT, "locked-image/text
tuning"), used to put a small optical encoder into the MiniLM text space when no pretrained CLIP
is available (default profile).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{names[0]} and {names[1]} must be (B, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must match: row i of each is one pair; "
            "project both into the same embedding size."
        )
    if a.shape[0] < 2:
        raise ValueError("contrastive losses need a batch of at least 2 pairs (the others are the negatives).")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError(f"{names[0]} or {names[1]} contains NaN/inf; check the inputs for nodata.")


def _check_bank(query: torch.Tensor, bank: torch.Tensor, index) -> torch.Tensor:
    """Validate a query batch against a bank of keys; return ``index`` as a long tensor."""
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(f"need (B, D) queries and an (M, D) bank of the same D, "
                         f"got {tuple(query.shape)}, {tuple(bank.shape)}")
    index = torch.as_tensor(index, device=query.device).long()
    if index.shape != (query.shape[0],):
        raise ValueError(f"index must be ({query.shape[0]},): one bank row per query, got {tuple(index.shape)}")
    if len(index) and (index.min() < 0 or index.max() >= bank.shape[0]):
        raise ValueError(f"index values must lie in [0, {bank.shape[0]}), got {int(index.min())}..{int(index.max())}")
    if index.unique().numel() != index.numel():
        raise ValueError("index rows must be distinct: each query has exactly one positive in the bank")
    if query.shape[0] < 1 or bank.shape[0] < 2:
        raise ValueError(f"need at least 1 query and 2 bank rows (a positive and a negative), "
                         f"got {query.shape[0]}, {bank.shape[0]}")
    if not (torch.isfinite(query).all() and torch.isfinite(bank).all()):
        raise ValueError("query or bank contains NaN/inf; check the inputs for nodata.")
    return index


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float | torch.Tensor = 0.1,
    symmetric: bool = True,
    positives: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE between paired rows of ``a`` and ``b`` (both ``(B, D)``, normalised here).

    ``logits = norm(a) @ norm(b).T / temperature``; row i's positive is column i, every other
    column a negative. ``symmetric`` averages the a->b and b->a cross-entropies (CLIP).
    ``positives`` (optional ``(B, B)`` bool) marks extra positives, e.g. identical captions in a
    batch: row i's loss becomes ``-log sum_{j positive} softmax(logits_i)_j`` (multi-positive
    InfoNCE), so a true match is never pushed away as a negative.

    ``index`` (optional ``(B,)``, distinct rows) makes ``b`` a *bank* of keys ``(M, D)``: row i's
    positive is ``b[index[i]]`` and every other bank row a negative (M - 1 negatives instead of
    B - 1); the b->a direction runs over the batch's keys ``b[index]``. ``index = arange(B)`` with
    ``b`` the batch is the plain in-batch loss.
    """
    if index is None:
        _check_pair(a, b, ("a", "b"))
    else:
        if positives is not None:
            raise ValueError("positives is not supported together with a bank (index).")
        index = _check_bank(a, b, index)
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    n = a.shape[0]
    if positives is None:
        target = torch.arange(n, device=a.device)
        loss_ab = F.cross_entropy(logits, target if index is None else index)
        # b->a: the keys of this batch (columns ``index`` of the logits) against the batch's queries
        logits_ba = logits.T if index is None else logits[:, index].T
        loss_ba = F.cross_entropy(logits_ba, target) if symmetric else None
    else:
        if positives.shape != (n, n) or positives.dtype != torch.bool:
            raise ValueError(f"positives must be a ({n}, {n}) bool tensor, "
                             f"got {positives.dtype} {tuple(positives.shape)}")
        pos = positives | torch.eye(n, dtype=torch.bool, device=a.device)
        loss_ab = _multi_positive_nll(logits, pos)
        loss_ba = _multi_positive_nll(logits.T, pos.T) if symmetric else None
    return loss_ab if loss_ba is None else 0.5 * (loss_ab + loss_ba)


def _multi_positive_nll(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    log_prob = logits.log_softmax(dim=1)
    return -torch.logsumexp(log_prob.masked_fill(~pos, float("-inf")), dim=1).mean()


def intra_sar_contrastive_loss(f_sar_a: torch.Tensor, f_sar_b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """L_CL(f^a_SAR, f^b_SAR): two augmented views of the same SAR image are positives."""
    _check_pair(f_sar_a, f_sar_b, ("f_sar_a", "f_sar_b"))
    return info_nce(f_sar_a, f_sar_b, temperature)


def cross_modal_alignment_loss(
    f_sar: torch.Tensor, f_opt: torch.Tensor, temperature: float = 0.1, index: torch.Tensor | None = None
) -> torch.Tensor:
    """L_CMA(f^a_SAR, f_opt): the SAR feature must pick out its registered optical feature.

    ``f_opt`` comes from the frozen optical encoder; it is detached here so that, even if a caller
    forgets to freeze it, only the SAR side moves (the optical-text space stays fixed: "indirect
    alignment").

    With ``index`` (B,), ``f_opt`` is a *bank* (N, D) of the cached features of every training
    optical image and SAR row i must pick out ``f_opt[index[i]]`` among all N (see :func:`info_nce`;
    MoCo-like, but with no stale keys). Possible only because E_opt is frozen: its features of the
    training images never change, so they are computed once.
    """
    if index is None:
        _check_pair(f_sar, f_opt, ("f_sar", "f_opt"))
    return info_nce(f_sar, f_opt.detach(), temperature, index=index)


def locked_text_loss(
    f_img: torch.Tensor, f_text: torch.Tensor, temperature: float | torch.Tensor = 0.07, texts: list[str] | None = None
) -> torch.Tensor:
    """CLIP loss against frozen text embeddings (LiT). ``texts`` (the strings) lets identical
    captions in a batch count as positives of each other instead of as negatives."""
    _check_pair(f_img, f_text, ("f_img", "f_text"))
    positives = None
    if texts is not None:
        if len(texts) != f_img.shape[0]:
            raise ValueError(f"got {len(texts)} texts for a batch of {f_img.shape[0]} images")
        ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        idx = torch.tensor([ids[t] for t in texts], device=f_img.device)
        positives = idx[:, None] == idx[None, :]
    return info_nce(f_img, f_text.detach(), temperature, positives=positives)


class ImageAlignmentLoss(nn.Module):
    """L_img = lambda_CL * L_CL(f^a_SAR, f^b_SAR) + lambda_CMA * L_CMA(f^a_SAR, f_opt).

    Setting a weight to 0 gives the ablations (L_CMA only: ``lambda_cl=0``; L_CL only:
    ``lambda_cma=0``). ``forward`` returns the total and logs each term in ``self.last``.
    """

    def __init__(self, lambda_cl: float = 1.0, lambda_cma: float = 1.0, temperature: float = 0.1):
        super().__init__()
        if lambda_cl < 0 or lambda_cma < 0 or lambda_cl + lambda_cma == 0:
            raise ValueError(f"weights must be >= 0 and not both 0, got lambda_cl={lambda_cl}, lambda_cma={lambda_cma}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.lambda_cl, self.lambda_cma, self.temperature = lambda_cl, lambda_cma, temperature
        self.last: dict[str, float] = {}

    def forward(self, f_sar_a: torch.Tensor, f_sar_b: torch.Tensor | None, f_opt: torch.Tensor | None,
                optical_bank: torch.Tensor | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
        """``optical_bank`` (N, D) + ``index`` (B,) instead of ``f_opt``: L_CMA against the cached
        features of all N training optical images (:func:`cross_modal_alignment_loss` with ``index``)."""
        if (optical_bank is None) != (index is None):
            raise ValueError("pass optical_bank and index together (or neither).")
        total = f_sar_a.new_zeros(())
        self.last = {}
        if self.lambda_cl > 0:
            if f_sar_b is None:
                raise ValueError("lambda_cl > 0 needs the second SAR view f_sar_b.")
            l_cl = intra_sar_contrastive_loss(f_sar_a, f_sar_b, self.temperature)
            total = total + self.lambda_cl * l_cl
            self.last["loss_cl"] = float(l_cl.detach())
        if self.lambda_cma > 0:
            keys = f_opt if optical_bank is None else optical_bank
            if keys is None:
                raise ValueError("lambda_cma > 0 needs the frozen optical feature f_opt (or optical_bank and index).")
            l_cma = cross_modal_alignment_loss(f_sar_a, keys, self.temperature, index=index)
            total = total + self.lambda_cma * l_cma
            self.last["loss_cma"] = float(l_cma.detach())
        self.last["loss"] = float(total.detach())
        return total
