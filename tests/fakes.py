"""Test doubles shared by several test files."""

import torch
import torch.nn.functional as F


class HashText:
    """A deterministic stand-in for the frozen MiniLM text encoder (no model load): one fixed random
    unit vector of ``dim`` per string, on the CPU as MiniLM's embeddings are. ``encode`` embeds texts,
    ``prompt_embeddings`` class names (templates are ignored)."""

    dim = 16

    def encode(self, texts):
        rows = [torch.randn(self.dim, generator=torch.Generator().manual_seed(sum(map(ord, t)))) for t in texts]
        return F.normalize(torch.stack(rows), dim=-1)

    def prompt_embeddings(self, names, templates=None):
        return self.encode(names)
