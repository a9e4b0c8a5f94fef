"""rslab.train.fit_preserving_rng: a short fit on the engine that leaves the caller's generators alone."""

import random

import numpy as np
import pytest
import torch

from rslab.recipes.coninfer_fit import fit_patch_classifier
from rslab.train import TrainConfig, fit_preserving_rng


def _model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return torch.nn.Linear(3, 2)


def _fit(seed: int) -> tuple[torch.nn.Module, list]:
    model = _model()
    data = [(torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2)]

    def loss_fn(m, batch):
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    cfg = TrainConfig(max_steps=5, lr=0.1, seed=seed, progress=False, cpu=True, log_every=1)
    return model, fit_preserving_rng(model, loss_fn, data, cfg)


def test_caller_generators_untouched():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    _fit(seed=7)
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


def test_fit_trains_and_is_repeatable():
    model_a, history = _fit(seed=3)
    model_b, _ = _fit(seed=3)
    assert len(history) == 5 and history[-1]["loss"] < history[0]["loss"]
    assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters()))


def test_refuses_a_config_that_is_not_a_trainconfig():
    with pytest.raises(TypeError, match="TrainConfig"):
        fit_preserving_rng(torch.nn.Linear(2, 2), lambda m, b: m(b).sum(), [torch.ones(1, 2)], {"max_steps": 2})


def test_patch_classifier_matches_a_plain_adamw_loop():
    """The classifier on the engine is the same computation as the textbook loop (bit for bit)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 6, generator=g), torch.randint(0, 4, (300,), generator=g)
    y[::5] = 255
    fitted = fit_patch_classifier(x, y, 4, hidden=8, steps=30, batch=64, seed=2)

    keep = y != 255
    xk, yk = x[keep], y[keep]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        reference = type(fitted)(6, 4, 8)
    reference.mean.copy_(xk.mean(0))
    reference.std.copy_(xk.std(0, unbiased=False).clamp_min(1e-6))
    opt = torch.optim.AdamW(reference.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(2)
    for _ in range(30):
        idx = torch.randint(0, len(yk), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(reference(xk[idx]), yk[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for (name, p), q in zip(fitted.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(p, q), name
