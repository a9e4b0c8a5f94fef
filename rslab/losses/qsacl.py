"""The QSACL objective of SkySense V2 (Sec. 3.2, Eq. 3 of arXiv:2507.13812).

Given ``m`` learnable queries that aggregate each view's features by cross-attention, the
student's aggregated embeddings ``z_i^g`` (global view) and ``z_i^l`` (local view) are
contrasted with the EMA teacher's embeddings of the *other* view, query by query:

    L_QSACL = 1 / (2m) * sum_{i=1..m} [ L_CL(z_i^g, z_i^{l'}) + L_CL(z_i^l, z_i^{g'}) ]

(primes = teacher). ``L_CL`` is InfoNCE over the batch (MoCo-v3 style, the form the paper's
"contrastive loss" takes for an EMA teacher): for query ``i``, sample ``b``'s student
embedding must pick out sample ``b``'s teacher embedding of the same query among the
teacher embeddings of that query for every sample in the batch. Queries are contrasted only
with the same query (Eq. 3 pairs "aggregated features sharing the same query").

With ``m = 1`` and global average pooling instead of queries this is exactly the plain
image-level contrastive baseline, which is how the notebook builds its comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["per_query_info_nce", "qsacl_loss"]


def _check_embeddings(name: str, z: torch.Tensor) -> None:
    if not isinstance(z, torch.Tensor) or z.ndim != 3:
        raise ValueError(f"{name} must be a (B, m, D) tensor of per-query embeddings, "
                         f"got shape {getattr(z, 'shape', None)}")
    if z.shape[0] < 2:
        raise ValueError(f"{name} has batch size {z.shape[0]}; InfoNCE needs >= 2 samples (the others are negatives)")


def per_query_info_nce(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """``L_CL`` for every query at once: returns a (m,) tensor, one InfoNCE per query.

    ``student``, ``teacher``: (B, m, D); both are L2-normalised here and the teacher is
    detached (it is updated by EMA, never by gradients). Row ``b`` of query ``i`` has its
    positive at teacher sample ``b``; the other ``B - 1`` samples' query-``i`` embeddings are
    the negatives.
    """
    _check_embeddings("student", student)
    _check_embeddings("teacher", teacher)
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} embeddings must match")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s = F.normalize(student, dim=-1)
    t = F.normalize(teacher.detach(), dim=-1)
    logits = torch.einsum("bqd,cqd->qbc", s, t) / temperature  # (m, B, B)
    m, B, _ = logits.shape
    target = torch.arange(B, device=logits.device).repeat(m)
    ce = F.cross_entropy(logits.reshape(m * B, B), target, reduction="none")
    return ce.view(m, B).mean(dim=1)


def qsacl_loss(
    student_global: list[torch.Tensor],
    student_local: list[torch.Tensor],
    teacher_global: list[torch.Tensor],
    teacher_local: list[torch.Tensor],
    temperature: float = 0.2,
) -> torch.Tensor:
    """Eq. 3, averaged over queries, both directions, and every (global, local) view pair.

    Each argument is a list (one entry per view of that kind, multi-crop) of (B, m, D)
    embeddings; student ones should already have passed through the predictor.
    """
    if not student_global or not student_local:
        raise ValueError("qsacl_loss needs at least one global and one local view")
    if len(student_global) != len(teacher_global) or len(student_local) != len(teacher_local):
        raise ValueError("student and teacher must embed the same views (matching list lengths)")
    terms = []
    for zg, zg_t in zip(student_global, teacher_global):
        for zl, zl_t in zip(student_local, teacher_local):
            # (1/2m) sum_i [L_CL(z_i^g, z_i^l') + L_CL(z_i^l, z_i^g')]
            terms.append(0.5 * (per_query_info_nce(zg, zl_t, temperature).mean()
                                + per_query_info_nce(zl, zg_t, temperature).mean()))
    return torch.stack(terms).mean()
