"""Every public train / evaluate / predict path that a notebook calls, with the model on a device
other than its inputs' (rslab.testing.device.other_device): any op mixing devices raises, so a
CPU-only run catches what would fail on a GPU ("Expected all tensors to be on the same device")."""

import numpy as np
import pytest
import torch
from torch import nn

from rslab.testing.device import OTHER_DEVICE, DeviceMismatchError, OtherDeviceTensor, other_device


def _on_cpu(x):
    """True when every tensor in a nested result is a plain CPU tensor (results come back once)."""
    if isinstance(x, torch.Tensor):
        return not isinstance(x, OtherDeviceTensor) and x.device.type == "cpu"
    if isinstance(x, dict):
        return all(_on_cpu(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(_on_cpu(v) for v in x)
    return True


# ---- the checker itself


def test_checker_raises_on_mixed_devices_and_computes_real_numbers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # (a live autograd graph would hold the weights: Module.to could not swap them)
        ref = model(x)
    weight = model[0].weight
    with other_device() as dev:
        model.to(dev)
        assert model[0].weight is weight and model[0].weight.device == dev  # optimiser references survive
        with pytest.raises(DeviceMismatchError, match="convolution"):
            model(x)
        y = model(x.to(dev))
        assert y.device == dev
        assert torch.equal(y.detach().cpu(), ref)  # real data underneath
        y.mean().backward()
        assert model[0].weight.grad.device == dev
        assert (y * torch.tensor(2.0)).device == dev  # a 0-dim CPU tensor may mix, as on CUDA
        assert torch.zeros(3, device=dev).device == dev
        with pytest.raises(RuntimeError):
            y.detach().numpy()  # as for a CUDA tensor


def test_checker_places_the_trainer_model_and_batches_on_the_other_device():
    from rslab.train import TrainConfig, Trainer

    seen = []

    def loss_fn(m, batch):
        seen.append(batch[0].device)
        return nn.functional.mse_loss(m(batch[0]), batch[1])

    data = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(2)]
    with other_device(trainer=True) as dev:
        model = nn.Linear(3, 1)
        trainer = Trainer(model, loss_fn, data, TrainConfig(max_steps=2, progress=False))
        trainer.fit()
        assert trainer.device == dev and model.weight.device == dev and seen == [dev, dev]


# ---- notebook 03: VITA (the evaluation built CPU inputs for a model on the GPU)

class _HashText:
    """A deterministic stand-in text encoder (embeddings on the CPU, as MiniLM's are)."""

    dim = 16

    def prompt_embeddings(self, names, templates=None):
        vecs = [torch.randn(16, generator=torch.Generator().manual_seed(sum(map(ord, n)))) for n in names]
        return torch.nn.functional.normalize(torch.stack(vecs), dim=-1)


def _vita():
    from rslab.models.vita import VITA, VITAConfig

    torch.manual_seed(0)
    return VITA(VITAConfig.tiny(dim=32, text_dim=16, num_queries=4, former_layers=1, decoder_layers=2, heads=4,
                                ffn_dim=64, encoder_widths=(8, 16, 32)))


@pytest.fixture(scope="module")
def small_pool():
    from rslab.data.episodes import ScenePool
    from rslab.data.synthetic import SyntheticWorld, WorldConfig

    return ScenePool(SyntheticWorld(WorldConfig(size=64), seed=0), range(6), min_pixels=8)


def test_vita_train_evaluate_segment_on_another_device(small_pool):
    from rslab.recipes.vita import VITARecipe, evaluate, segment, text_name_transfer, train

    model = _vita()
    ref = evaluate(model, small_pool, small_pool, _HashText(), level=1, batch_size=3, other_style=False)
    with other_device(trainer=True) as dev:
        model.to(dev)
        got = evaluate(model, small_pool, small_pool, _HashText(), level=1, batch_size=3, other_style=False)
        assert got == pytest.approx(ref, abs=1e-6)  # the same numbers, computed "on the device"
        text_name_transfer(model, small_pool, small_pool, _HashText(), level=1)
        target = small_pool.scenes["optical"][:2] if hasattr(small_pool, "scenes") else None
        train(model, small_pool, _HashText(), VITARecipe(steps=2, batch_size=2, num_points=64), progress=False)
        assert next(model.parameters()).device == dev
