"""Sparse Mixture-of-Experts feed-forward layer (SkySense V2, Sec. 3, "MoE extension").

SkySense V2 replaces the FFN of the last ``L = 6`` Transformer blocks with

    MOE(x) = sum_{i in T} G_i(x) * E_i(x),      G(x) = softmax(W_g x),  T = top-k(G(x))

with ``M = 8`` experts and ``k = 1``. timm has no MoE layer, so the router is written
here; each expert is timm's ``Mlp``. The router is trained with the Switch-Transformer
load-balancing loss (Fedus et al. 2022, Eq. 4), which the paper does not spell out but
which any top-1 router needs so that it does not collapse onto one expert:

    L_balance = M * sum_i f_i * P_i

where ``f_i`` is the fraction of tokens sent to expert ``i`` and ``P_i`` the mean router
probability of expert ``i``. It equals 1 for a perfectly uniform router and ``M`` when all
tokens go to one expert. The layer keeps its last value in ``self.aux_loss`` so the
backbone can sum it over blocks (:meth:`UnifiedBackbone.moe_aux_loss`).

No expert capacity limit is applied (no token is dropped): at the sizes this project
trains, the per-expert loop is cheap and dropping tokens would only add noise.
"""

from __future__ import annotations

import torch
from timm.layers import Mlp
from torch import nn


class MoEMlp(nn.Module):
    """Top-k routed mixture of ``num_experts`` timm ``Mlp`` experts.

    Signature-compatible with timm's ``Mlp`` (``in_features``, ``hidden_features``,
    ``act_layer``...), so it can be handed to ``timm.models.vision_transformer.Block`` as
    ``mlp_layer`` via ``functools.partial(MoEMlp, num_experts=8, top_k=1)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] | None = None,
        bias: bool = True,
        drop: float = 0.0,
        num_experts: int = 8,
        top_k: int = 1,
        **_unused,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.num_experts = num_experts
        self.top_k = top_k
        self.router = nn.Linear(in_features, num_experts, bias=False)
        self.experts = nn.ModuleList(
            Mlp(in_features, hidden_features, out_features, act_layer=act_layer, norm_layer=norm_layer, bias=bias,
                drop=drop)
            for _ in range(num_experts)
        )
        self.aux_loss: torch.Tensor = torch.zeros(())
        self.last_counts: torch.Tensor = torch.zeros(num_experts)  # tokens per expert, last call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])  # (T, C)
        probs = self.router(tokens).softmax(dim=-1)  # G(x): (T, M)
        gate, expert_idx = probs.topk(self.top_k, dim=-1)  # (T, k)

        out = tokens.new_zeros(tokens.shape[0], self.experts[0].fc2.out_features)
        for e, expert in enumerate(self.experts):
            token_pos, slot = (expert_idx == e).nonzero(as_tuple=True)
            if token_pos.numel() == 0:
                continue
            out.index_add_(0, token_pos, gate[token_pos, slot, None] * expert(tokens[token_pos]))

        # Switch load balancing: f_i from the hard top-1 choice, P_i from the soft router.
        counts = torch.bincount(expert_idx[:, 0], minlength=self.num_experts).to(probs.dtype)
        frac_tokens = counts / max(tokens.shape[0], 1)
        mean_prob = probs.mean(dim=0)
        self.aux_loss = self.num_experts * (frac_tokens * mean_prob).sum()
        self.last_counts = counts.detach()
        return out.reshape(*shape[:-1], -1)
