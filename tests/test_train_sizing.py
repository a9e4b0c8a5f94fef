"""rslab.train sizing: the pre-run estimate, torch.compile, loaders with workers and pinned memory."""

from __future__ import annotations

import pytest
import torch
from test_train import assert_same_weights, make_model, make_trainer, weights
from torch.utils.data import TensorDataset

from rslab.train import TrainConfig, auto_num_workers, make_loader

torch.set_num_threads(1)


def test_estimate_reports_the_run_and_leaves_training_unchanged(capsys):
    a = make_trainer(max_steps=8, grad_accum_steps=2)
    est = a.estimate(warmup=2, tokens_per_sample=5)
    printed = capsys.readouterr().out
    assert "8 steps (8 to go)" in printed and "16 samples" in printed and "80 tokens" in printed
    assert "timed warm-up" in printed and "expected" in printed
    assert est.samples_per_step == 8 * 2 and est.tokens_per_step == 80 and est.step_s > 0
    assert est.expected_s == pytest.approx(est.step_s * 8) and est.precision == "no"
    a.fit()
    b = make_trainer(max_steps=8, grad_accum_steps=2)
    b.fit()
    assert_same_weights(weights(a.model), weights(b.model))  # the warm-up changed nothing
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    untimed = make_trainer(max_steps=8).estimate(warmup=0, show=False)
    assert untimed.step_s is None and untimed.expected_s is None and "not timed" in str(untimed)
    with pytest.raises(ValueError, match="warmup"):
        a.estimate(warmup=-1)


def test_estimate_counts_the_steps_a_resumed_run_has_done(tmp_path):
    make_trainer(out_dir=tmp_path, max_steps=4, checkpoint_every=2).fit()
    est = make_trainer(out_dir=tmp_path, max_steps=10).estimate(warmup=1, show=False)
    assert est.done == 4 and est.expected_s == pytest.approx(est.step_s * 6)


def test_batchnorm_statistics_restored_after_the_estimate():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    before = weights(model)
    make_trainer(model=model, max_steps=3).estimate(warmup=2, show=False)
    assert_same_weights(before, weights(model))


def test_compile_trains_identically_and_keeps_state_dict_names(tmp_path):
    # the "eager" backend runs TorchDynamo's capture without code generation: the same numbers
    a = make_trainer(out_dir=tmp_path / "a", max_steps=6, compile="eager")
    a.fit()
    b = make_trainer(max_steps=6)
    b.fit()
    assert a.model._compiled_call_impl is not None
    assert_same_weights(weights(a.model), weights(b.model))
    assert set(a.model.state_dict()) == set(make_model().state_dict())  # no "_orig_mod." prefix in checkpoints
    with pytest.raises(ValueError, match="compile"):
        TrainConfig(max_steps=1, compile=3)


def test_make_loader_defaults_and_worker_order():
    assert auto_num_workers("cpu") == 0
    ds = TensorDataset(torch.arange(20.0)[:, None])
    plain = make_loader(ds, 4, shuffle=True, device="cpu", generator=torch.Generator().manual_seed(3))
    assert plain.num_workers == 0 and plain.pin_memory is False
    workers = make_loader(ds, 4, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(3))
    assert [b[0].flatten().tolist() for b in plain] == [b[0].flatten().tolist() for b in workers]
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(ds, 4, num_workers=-1)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)
    with pytest.raises(ValueError, match="pin_memory"):
        make_loader(ds, 2, pin_memory="yes")
