"""Embedding plots' projection: one 2-D PCA shared by several embedding sets (notebook 01)."""

from __future__ import annotations

import numpy as np
import torch


def pca_2d(*groups: torch.Tensor) -> list[np.ndarray]:
    """Project several (N_i, D) embedding sets with ONE 2-D PCA fitted on all of them together."""
    if not groups:
        raise ValueError("pass at least one embedding set")
    x = torch.cat([g.float() for g in groups]).numpy()
    mean = x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    proj = (x - mean) @ vt[:2].T
    sizes = np.cumsum([0] + [len(g) for g in groups])
    return [proj[a:b] for a, b in zip(sizes[:-1], sizes[1:])]
