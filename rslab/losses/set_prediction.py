"""Set-prediction loss of query-based segmenters (Mask2Former recipe, used by VITA-Decoder).

Each image has ``Q`` predicted (class, mask) pairs and ``G`` ground-truth segments. A Hungarian
matching (``scipy.optimize.linear_sum_assignment``) on the cost

    C = w_cls * (-p(class)) + w_mask * BCE(mask) + w_dice * Dice(mask)

pairs queries with segments; matched queries learn their class and mask, unmatched ones learn the
"no-object" class (down-weighted by ``no_object_weight``). Mask costs and losses are computed on
``num_points`` sampled points rather than full masks (Mask2Former, Sec. 3.3 "point loss"):
uniform points for matching, and for the loss importance sampling that favours the points where
the prediction is most uncertain (``|logit|`` small), as Mask2Former does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def point_sample(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``masks (B, Q, H, W)`` at ``coords (B, P, 2)`` in [0, 1] (x, y) -> (B, Q, P)."""
    grid = coords[:, None] * 2.0 - 1.0  # (B, 1, P, 2) in [-1, 1]
    return F.grid_sample(masks, grid, mode="bilinear", align_corners=False)[:, :, 0]


def dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise Dice loss between ``(..., Q, P)`` logits and ``(..., G, P)`` binary targets -> ``(..., Q, G)``."""
    prob = logits.sigmoid()
    numerator = 2 * prob @ targets.transpose(-1, -2)
    denominator = prob.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def bce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean BCE between ``(..., Q, P)`` logits and ``(..., G, P)`` binary targets -> ``(..., Q, G)``."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.transpose(-1, -2) + neg @ (1 - targets).transpose(-1, -2)) / logits.shape[-1]


@dataclass
class SetCriterionWeights:
    """Mask2Former's defaults: class 2, mask (BCE) 5, Dice 5, no-object 0.1."""

    cls: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    no_object: float = 0.1


class SetCriterion:
    """Hungarian-matched class + point-sampled mask losses.

    ``__call__(class_logits, mask_logits, targets)``:
        class_logits: ``(B, Q, K + 1)``; the last column is "no object".
        mask_logits: ``(B, Q, H, W)``.
        targets: list of B dicts with ``labels`` ``(G,)`` long in [0, K) and ``masks`` ``(G, H', W')``.
    Returns ``(loss, logs)``.
    """

    def __init__(self, weights: SetCriterionWeights | None = None, num_points: int = 1024,
                 oversample: float = 3.0, importance: float = 0.75):
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        if not (oversample >= 1 and 0 <= importance <= 1):
            raise ValueError("oversample must be >= 1 and importance in [0, 1]")
        self.w = weights or SetCriterionWeights()
        self.num_points, self.oversample, self.importance = num_points, oversample, importance

    @torch.no_grad()
    def match(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
              targets: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Hungarian matching per image: ``[(query_idx, target_idx)]``.

        The cost matrices of the whole batch are computed at once (ground truths padded to the
        largest ``G``; ``num_points`` uniform points per image), then one
        ``linear_sum_assignment`` per image on its ``(Q, G_b)`` block.
        """
        from scipy.optimize import linear_sum_assignment

        sizes = [int(t["labels"].numel()) for t in targets]
        empty = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
        g_max = max(sizes, default=0)
        if g_max == 0:
            return [empty for _ in targets]
        b, device = len(targets), mask_logits.device
        gt_size = next(t["masks"].shape[-2:] for t in targets if t["labels"].numel())
        gt_masks = torch.zeros(b, g_max, *gt_size, device=device)
        labels = torch.zeros(b, g_max, dtype=torch.long, device=device)
        for i, (t, g) in enumerate(zip(targets, sizes)):
            if g:
                gt_masks[i, :g] = t["masks"].float()
                labels[i, :g] = t["labels"]
        coords = torch.rand(b, self.num_points, 2, device=device)
        pred = point_sample(mask_logits.float(), coords)  # (B, Q, P)
        gt = point_sample(gt_masks, coords)  # (B, G, P)
        prob = class_logits.float().softmax(-1)  # (B, Q, K + 1)
        cls_cost = -torch.gather(prob, 2, labels[:, None, :].expand(-1, prob.shape[1], -1))  # (B, Q, G)
        cost = self.w.cls * cls_cost + self.w.mask * bce_cost(pred, gt) + self.w.dice * dice_cost(pred, gt)
        cost = cost.cpu().numpy()
        indices = []
        for i, g in enumerate(sizes):
            if g == 0:
                indices.append(empty)
                continue
            rows, cols = linear_sum_assignment(cost[i, :, :g])
            indices.append((rows.astype(np.int64), cols.astype(np.int64)))
        return indices

    def _importance_points(self, logits: torch.Tensor) -> torch.Tensor:
        """``(M, P, 2)`` points for ``(M, 1, H, W)`` logits: uncertain ones plus uniform ones."""
        m = logits.shape[0]
        n_over = int(self.num_points * self.oversample)
        cand = torch.rand(m, n_over, 2, device=logits.device)
        uncertainty = -point_sample(logits, cand)[:, 0].abs()
        n_imp = int(self.importance * self.num_points)
        idx = uncertainty.topk(n_imp, dim=1).indices
        chosen = torch.gather(cand, 1, idx[..., None].expand(-1, -1, 2))
        uniform = torch.rand(m, self.num_points - n_imp, 2, device=logits.device)
        return torch.cat([chosen, uniform], 1)

    def __call__(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, targets: list[dict]):
        if class_logits.ndim != 3 or mask_logits.ndim != 4 or class_logits.shape[:2] != mask_logits.shape[:2]:
            raise ValueError(
                f"class_logits must be (B, Q, K+1) and mask_logits (B, Q, H, W) with the same B, Q; got "
                f"{tuple(class_logits.shape)} and {tuple(mask_logits.shape)}"
            )
        if len(targets) != class_logits.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {class_logits.shape[0]}")
        num_classes = class_logits.shape[-1] - 1
        for t in targets:
            if t["labels"].numel() and (t["labels"].min() < 0 or t["labels"].max() >= num_classes):
                raise ValueError(f"target labels must be in [0, {num_classes}), got {t['labels'].tolist()}")
        indices = self.match(class_logits, mask_logits, targets)

        # classification: matched queries -> their class, the rest -> no object
        target_classes = torch.full(class_logits.shape[:2], num_classes, dtype=torch.long, device=class_logits.device)
        for b, (rows, cols) in enumerate(indices):
            target_classes[b, torch.as_tensor(rows, device=class_logits.device)] = (
                targets[b]["labels"][torch.as_tensor(cols)])
        weight = torch.ones(num_classes + 1, device=class_logits.device)
        weight[-1] = self.w.no_object
        loss_cls = F.cross_entropy(class_logits.flatten(0, 1).float(), target_classes.flatten(), weight=weight)

        # masks: point losses on matched pairs
        pred = torch.cat([mask_logits[b, torch.as_tensor(r)] for b, (r, _) in enumerate(indices)], 0)
        gt = torch.cat([targets[b]["masks"][torch.as_tensor(c)] for b, (_, c) in enumerate(indices)], 0)
        if pred.shape[0] == 0:
            zero = mask_logits.sum() * 0.0
            loss_mask = loss_dice = zero
        else:
            with torch.no_grad():
                coords = self._importance_points(pred[:, None].detach().float())
            pred_pts = point_sample(pred[:, None].float(), coords)[:, 0]
            gt_pts = point_sample(gt[:, None].float(), coords)[:, 0]
            loss_mask = F.binary_cross_entropy_with_logits(pred_pts, gt_pts)
            prob = pred_pts.sigmoid()
            loss_dice = (1 - (2 * (prob * gt_pts).sum(-1) + 1) / (prob.sum(-1) + gt_pts.sum(-1) + 1)).mean()
        loss = self.w.cls * loss_cls + self.w.mask * loss_mask + self.w.dice * loss_dice
        logs = {"loss_cls": float(loss_cls.detach()), "loss_mask": float(loss_mask.detach()),
                "loss_dice": float(loss_dice.detach())}
        return loss, logs
