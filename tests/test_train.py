"""Unit tests of rslab.train: schedule, EMA, the Trainer loop, checkpoints, failures, history.

The kill -9 resume test is in test_train_resume.py, the two-process DDP test in test_train_ddp.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rslab.train import (
    EMA,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    cosine_momentum,
    cosine_with_warmup,
    list_checkpoints,
    load_history,
    load_weights,
    plot_history,
    verify_checkpoint,
    warmup_cosine_factor,
)

torch.set_num_threads(1)


def make_data(n: int = 64, batch: int = 8, seed: int = 1234) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] - x[:, 2] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def make_model(width: int = 16, dropout: float = 0.1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 2))


def ce_loss(model, batch):
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), {"acc": (logits.argmax(1) == y).float().mean()}


def make_trainer(out_dir=None, model=None, data=None, loss_fn=ce_loss, **overrides) -> Trainer:
    cfg = dict(max_steps=12, lr=1e-2, warmup_steps=2, log_every=2, progress=False, cpu=True, out_dir=out_dir)
    cfg.update(overrides)
    return Trainer(model if model is not None else make_model(), loss_fn, data if data is not None else make_data(),
                   TrainConfig(**cfg))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


# ---------------------------------------------------------------------------- schedule and EMA


def test_warmup_cosine_factor_hand_values():
    # warm-up 4 of 12 steps: (s+1)/4, then half a cosine over the remaining 8
    assert [warmup_cosine_factor(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine_factor(4, 4, 12) == 1.0
    assert warmup_cosine_factor(8, 4, 12) == pytest.approx(0.5)          # t = 1/2: (1 + cos(pi/2)) / 2
    assert warmup_cosine_factor(6, 4, 12) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert warmup_cosine_factor(12, 4, 12) == pytest.approx(0.0)
    assert warmup_cosine_factor(8, 4, 12, min_lr_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = cosine_with_warmup(opt, 4, 12)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.5, 1.0, 1.5, 2.0] and lrs[8] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine_factor(0, 13, 12)


def test_ema_momentum_schedule_and_update():
    assert cosine_momentum(0, 10, 0.9, 1.0) == pytest.approx(0.9)
    assert cosine_momentum(5, 10, 0.9, 1.0) == pytest.approx(0.95)
    assert cosine_momentum(10, 10, 0.9, 1.0) == pytest.approx(1.0)
    student = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        student[0].weight.fill_(1.0)
    ema = EMA(student, momentum=(0.9, 1.0), total_steps=10)
    assert ema.model is not student and not any(p.requires_grad for p in ema.model.parameters())
    with torch.no_grad():
        student[0].weight.fill_(3.0)
        student[1].running_mean.fill_(2.0)
        student[1].num_batches_tracked.fill_(7)
    m = ema.update(student, step=0)
    assert m == pytest.approx(0.9)
    assert ema.model[0].weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)
    assert ema.model[1].running_mean.item() == pytest.approx(0.1 * 2.0)   # floats averaged
    assert ema.model[1].num_batches_tracked.item() == 7                  # integers copied
    ema.update(student, step=10)                                         # momentum 1: frozen
    assert ema.model[0].weight.item() == pytest.approx(1.2)
    with pytest.raises(ValueError, match="momentum"):
        EMA(student, momentum=(0.9, 1.5))


# ---------------------------------------------------------------------------- the loop


def test_training_learns_and_is_deterministic():
    t1 = make_trainer(max_steps=30, lr=3e-2)
    h1 = t1.fit()
    t2 = make_trainer(max_steps=30, lr=3e-2)
    h2 = t2.fit()
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]            # same seed: same metrics, bitwise
    assert_same_weights(weights(t1.model), weights(t2.model))
    assert h1[-1]["loss"] < 0.7 * h1[0]["loss"]                          # and it does learn
    assert {"step", "epoch", "loss", "lr", "acc", "samples_per_s", "wall_s"} <= h1[0].keys()
    assert [r["step"] for r in h1] == list(range(2, 31, 2))
    h3 = make_trainer(max_steps=30, lr=3e-2, seed=1).fit()
    assert [r["loss"] for r in h3] != [r["loss"] for r in h1]            # the seed matters


def test_grad_accumulation_matches_the_big_batch():
    big = make_trainer(model=make_model(dropout=0.0), data=make_data(batch=16), max_steps=8, clip_grad_norm=1.0)
    big.fit()
    small = make_trainer(model=make_model(dropout=0.0), data=make_data(batch=8), max_steps=8, clip_grad_norm=1.0,
                         grad_accum_steps=2)
    small.fit()
    for k, v in weights(big.model).items():
        torch.testing.assert_close(weights(small.model)[k], v, rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in small.history] == [r["step"] for r in big.history]


def test_clip_grad_norm_limits_the_update():
    model = nn.Linear(4, 1, bias=False)
    start = model.weight.detach().clone()
    x = torch.full((2, 4), 10.0)
    trainer = Trainer(model, lambda m, b: m(b).pow(2).mean() * 100, [x],
                      TrainConfig(max_steps=1, schedule="constant", lr=1.0, clip_grad_norm=0.1, progress=False,
                                  cpu=True),
                      optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
    trainer.fit()
    # plain SGD with lr 1: the step equals the clipped gradient, whose norm is exactly 0.1
    assert (model.weight.detach() - start).norm().item() == pytest.approx(0.1, rel=1e-5)


def test_data_factory_and_extra_logs():
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(4, 8, 6, generator=g)

    def batches(epoch):  # a function epoch -> batches, deterministic in the epoch
        order = torch.randperm(4, generator=torch.Generator().manual_seed(epoch))
        return [(xs[i], (xs[i][:, 0] > 0).long()) for i in order]

    seen_epochs = []
    trainer = make_trainer(data=lambda e: seen_epochs.append(e) or batches(e), max_steps=10, log_every=5)
    history = trainer.fit()
    assert seen_epochs == [0, 1, 2]                    # 10 steps of 4 batches per epoch
    assert history[-1]["epoch"] == 2 and 0.0 <= history[-1]["acc"] <= 1.0


def test_eval_fn_logged_and_does_not_change_training():
    calls = []

    def eval_fn(model):
        calls.append(model.training)
        torch.rand(100)                                # consumes RNG: must not leak into training
        return {"score": 0.5}

    with_eval = make_trainer(max_steps=8, eval_every=4)
    with_eval.eval_fn = eval_fn
    with_eval.fit()
    plain = make_trainer(max_steps=8)
    plain.fit()
    assert_same_weights(weights(with_eval.model), weights(plain.model))
    assert calls == [False, False] and with_eval.model.training       # eval mode inside, train mode after
    assert [r["step"] for r in with_eval.history if "eval_score" in r] == [4, 8]


def test_bf16_autocast_on_cpu_and_model_left_untouched():
    seen = {}

    def loss_fn(model, batch):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["dtype"] = torch.get_autocast_dtype("cpu")
        return ce_loss(model, batch)

    model = make_model()
    original_forward = model.forward
    trainer = make_trainer(model=model, loss_fn=loss_fn, max_steps=2, mixed_precision="bf16")
    trainer.fit()
    assert seen == {"autocast": True, "dtype": torch.bfloat16}
    assert model.forward == original_forward and model[0].weight.dtype == torch.float32
    seen.clear()
    make_trainer(loss_fn=loss_fn, max_steps=1, warmup_steps=0, mixed_precision="auto").fit()  # auto on CPU: fp32
    assert seen["autocast"] is False


def test_input_validation():
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(max_steps=1, mixed_precision="fp8")
    with pytest.raises(ValueError, match="one-shot iterator"):
        make_trainer(data=iter([torch.zeros(2, 6)]))
    with pytest.raises(ValueError, match="scalar loss"):
        make_trainer(loss_fn=lambda m, b: m(b[0]).sum(1)).fit()
    with pytest.raises(ValueError, match="does not require grad"):
        make_trainer(loss_fn=lambda m, b: torch.tensor(1.0)).fit()


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoints_layout_keep_last_and_stale_temporaries(tmp_path):
    stale = tmp_path / "checkpoints" / ".tmp-step_000004-999"
    stale.mkdir(parents=True)
    trainer = make_trainer(tmp_path, max_steps=10, checkpoint_every=3, keep_last=2, ema_momentum=(0.9, 1.0))
    trainer.fit()
    assert not stale.exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000009", "step_000010"]  # 10 = final
    last = tmp_path / "checkpoints" / "step_000010"
    assert sorted(p.name for p in last.iterdir()) == ["ema.safetensors", "manifest.json", "model.safetensors",
                                                      "state.pt"]
    assert verify_checkpoint(last) is None
    state = torch.load(last / "state.pt", weights_only=True)
    assert state["step"] == 10 and state["config"]["max_steps"] == 10 and len(state["rng"]) == 1
    restored = load_weights(make_model(), tmp_path)
    assert_same_weights(weights(restored), weights(trainer.model))
    assert_same_weights(weights(load_weights(make_model(), last, ema=True)), weights(trainer.ema_model))


def test_resume_after_damage_uses_previous_checkpoint_and_matches(tmp_path):
    reference = make_trainer(None, max_steps=12)
    reference.fit()
    first = make_trainer(tmp_path, max_steps=12, checkpoint_every=4, keep_last=3)
    first.fit()
    model_file = tmp_path / "checkpoints" / "step_000012" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:-100])               # truncated
    (tmp_path / "checkpoints" / "step_000008" / "manifest.json").unlink()  # never completed
    assert "truncated" in verify_checkpoint(model_file.parent)
    calls = []
    resumed = make_trainer(tmp_path, max_steps=12, checkpoint_every=4, keep_last=3,
                           loss_fn=lambda m, b: calls.append(1) or ce_loss(m, b))
    with pytest.warns(UserWarning, match="skipping damaged checkpoint") as caught:
        history = resumed.fit()
    assert len(calls) == 8                                               # restarted from step 4
    assert any("step_000012" in str(w.message) for w in caught) and any("step_000008" in str(w.message) for w in caught)
    assert_same_weights(weights(resumed.model), weights(reference.model))
    assert [r["loss"] for r in history] == [r["loss"] for r in reference.history]
    assert verify_checkpoint(model_file.parent) is None                  # rewritten intact


def test_finished_run_is_not_retrained(tmp_path):
    done = make_trainer(tmp_path, max_steps=6)
    done.fit()
    calls = []
    again = make_trainer(tmp_path, max_steps=6, model=make_model(seed=5),
                         loss_fn=lambda m, b: calls.append(1) or ce_loss(m, b))
    history = again.fit()
    assert calls == [] and again.step == 6
    assert_same_weights(weights(again.model), weights(done.model))
    assert history == done.history
    with pytest.warns(UserWarning, match="deleting the previous run"):
        make_trainer(tmp_path, max_steps=2).fit(resume=False)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002"]


def test_checkpoint_of_another_config_lists_mismatched_keys(tmp_path):
    make_trainer(tmp_path, max_steps=2).fit()
    wider = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError) as err:
        make_trainer(tmp_path, max_steps=4, model=wider).fit()
    message = str(err.value)
    assert "0.weight: checkpoint [16, 6] vs model [32, 6]" in message
    assert "3.weight: checkpoint [2, 16] vs model [2, 32]" in message
    assert "missing from checkpoint (2)" in message and "4.weight" in message and "4.bias" in message
    with pytest.raises(ValueError, match="different model configuration"):
        load_weights(wider, tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_weights(make_model(), tmp_path / "nowhere")


# ---------------------------------------------------------------------------- failures


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        loss, logs = ce_loss(model, batch)
        return (loss * float("nan") if len(calls) >= 7 else loss), logs

    trainer = make_trainer(tmp_path, loss_fn=loss_fn, max_steps=20, checkpoint_every=2, log_every=5, keep_last=5)
    with pytest.raises(NonFiniteLossError, match="at step 7") as err:
        trainer.fit()
    assert err.value.step == 7 and err.value.last_checkpoint.name == "step_000006"
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == "step_000006"  # nothing saved after the NaN
    good = load_weights(make_model(), tmp_path)
    assert all(torch.isfinite(v).all() for v in good.state_dict().values())
    assert load_history(tmp_path)[-1] == {"step": 7, "epoch": 0, "loss": "nan", "error": "non-finite loss"}


def test_out_of_memory_names_batch_size_and_suggests_accumulation():
    def loss_fn(model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with pytest.raises(torch.OutOfMemoryError) as err:
        make_trainer(loss_fn=loss_fn, grad_accum_steps=2).fit()
    message = str(err.value)
    assert "batch of 8 samples per device (16 per optimiser step" in message
    assert "grad_accum_steps=4" in message and "Tried to allocate 20.00 GiB" in message


# ---------------------------------------------------------------------------- history


def test_history_file_load_and_plot(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=6, eval_every=3)
    trainer.eval_fn = lambda model: {"acc": 0.25}
    history = trainer.fit()
    assert load_history(tmp_path) == history
    path = tmp_path / "history.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 7, "lo')                                       # torn line of a killed run
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert load_history(path) == history
    fig = plot_history(history)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "eval_acc"]
    assert list(fig.axes[0].lines[0].get_xdata()) == [2, 4, 6]
    assert list(fig.axes[1].lines[0].get_ydata()) == [0.25, 0.25]
    with pytest.raises(ValueError, match="available"):
        plot_history(history, keys=["nope"])
    json.dumps(history)                                                  # plain JSON types only


def test_default_optimizer_groups_by_lr_scale_and_decay():
    """Matrices decay, vectors do not; ``lr_scale`` sets each parameter's rate; the group order is
    fixed (by scale, matrices first) so a saved optimizer state loads back; bad scales fail."""
    from torch import nn

    from rslab.train import default_optimizer

    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    plain = default_optimizer(model, 1e-3, 0.1)
    assert ([(g["lr"], g["weight_decay"], len(g["params"])) for g in plain.param_groups]
            == [(1e-3, 0.1, 2), (1e-3, 0.0, 4)])
    scaled = default_optimizer(model, 1e-3, 0.1, lr_scale=lambda n: 3.0 if n.startswith("2.") else 1.0)
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in scaled.param_groups for p in g["params"]}
    assert (by_id[id(model[2].weight)] == (pytest.approx(3e-3), 0.1)
            and by_id[id(model[2].bias)] == (pytest.approx(3e-3), 0.0))
    assert by_id[id(model[0].weight)] == (1e-3, 0.1) and by_id[id(model[1].weight)] == (1e-3, 0.0)
    assert [g["lr"] for g in scaled.param_groups] == pytest.approx([1e-3, 1e-3, 3e-3, 3e-3])
    with pytest.raises(ValueError, match="lr_scale"):
        default_optimizer(model, 1e-3, 0.1, lr_scale=lambda n: 0.0)
