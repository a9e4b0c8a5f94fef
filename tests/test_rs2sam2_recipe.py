"""RS2-SAM2 training, evaluation at original resolution, ablation, saving (tiny model at 32 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from rslab.data.referring import ReferringDataset  # noqa: E402
from rslab.data.sample import ReferringExpression, Sample  # noqa: E402
from rslab.models.rs2sam2 import RS2SAM2Config  # noqa: E402
from rslab.recipes import rs2sam2 as rt  # noqa: E402

CFG = RS2SAM2Config.tiny(image_size=32, union_image_size=32, union_dim=32, union_heads=2, train_hiera=True)


class FakeTokens:
    """Stands in for MiniLMTokenEncoder: deterministic (B, L, 384) states per expression."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        length = max(len(t.split()) for t in texts)
        states = torch.zeros(len(texts), length, 384)
        pad = torch.ones(len(texts), length, dtype=torch.bool)
        for i, t in enumerate(texts):
            for j, w in enumerate(t.split()):
                g = torch.Generator().manual_seed(sum(map(ord, w)))
                states[i, j] = torch.randn(384, generator=g)
                pad[i, j] = False
        return states, pad


def _square(size, top, left, side):
    m = np.zeros((size, size), bool)
    m[top:top + side, left:left + side] = True
    return m


def _dataset(n_images=4, size=48):
    """Bright square on the left or right; the expression says which."""
    samples = []
    for i in range(n_images):
        img = np.full((3, size, size), 0.2, np.float32)
        left = _square(size, 8, 4, 16)
        right = _square(size, 24, 28, 16)
        img[:, left] = 0.9
        img[:, right] = 0.6
        samples.append(Sample(optical=img, referring=[ReferringExpression("the left square", left, "a"),
                                                      ReferringExpression("the right square", right, "b")]))
    return ReferringDataset(samples)


class QuadrantModel(torch.nn.Module):
    """Predicts the top-left quadrant of a 16 px model input, whatever the text (a metric oracle)."""

    def __init__(self):
        super().__init__()
        self.cfg = RS2SAM2Config.tiny(image_size=16)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images, states, pad):
        logits = torch.full((images.shape[0], 1, 16, 16), -10.0)
        logits[:, :, :8, :8] = 10.0
        return {"masks": logits}


def test_make_batches_covers_every_item_once_per_epoch():
    st = _dataset(3).stacked(32)
    enc = FakeTokens()
    batches = rt.make_batches(st, enc, batch_size=2, seed=5)
    assert sorted(set(enc.calls[0])) == ["the left square", "the right square"]  # encoded once, up front
    epoch0 = list(batches(0))
    assert len(epoch0) == 3 and all(b["images"].shape == (2, 3, 32, 32) for b in epoch0)
    seen = torch.cat([b["targets"].flatten(1).sum(1) for b in epoch0])
    assert sorted(seen.tolist()) == sorted(st["targets"].flatten(1).sum(1).tolist())
    again = list(batches(0))
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(epoch0, again))  # deterministic
    assert not all(torch.equal(a["targets"], b["targets"]) for a, b in zip(epoch0, batches(1)))  # reshuffled
    assert epoch0[0]["text_pad"].dtype == torch.bool
    with pytest.raises(ValueError, match="batch"):
        rt.make_batches(st, enc, batch_size=64)


def test_evaluate_scores_at_original_resolution():
    """Hand case: a 16 px top-left-quadrant prediction upsampled to 32 px masks."""
    a = _square(32, 0, 0, 16)                 # exactly the quadrant: IoU 1
    b = np.zeros((32, 32), bool)
    b[:8, :] = True                           # inter 8*16 = 128, union 256 + 256 - 128 = 384: IoU 1/3
    img = np.zeros((3, 32, 32), np.float32)
    data = ReferringDataset([Sample(optical=img, referring=[ReferringExpression("a", a, "x"),
                                                            ReferringExpression("b", b, "y")])])
    out = rt.evaluate_referring(QuadrantModel(), data, FakeTokens(), batch_size=1, by_class=True)
    assert out["n"] == 2
    assert out["miou"] == pytest.approx((1 + 1 / 3) / 2)
    assert out["oiou"] == pytest.approx((256 + 128) / (256 + 384))
    assert out["pr50"] == 0.5 and out["pr90"] == 0.5
    assert out["by_class"]["x"]["miou"] == pytest.approx(1.0)
    assert out["empty"] == 0.0
    assert out["area_ratio"] == pytest.approx((256 + 256) / (256 + 256))  # 256 predicted px per expression


def test_evaluate_reports_empty_predictions():
    class EmptyModel(QuadrantModel):
        def forward(self, images, states, pad):
            return {"masks": torch.full((images.shape[0], 1, 16, 16), -10.0)}

    img = np.zeros((3, 32, 32), np.float32)
    data = ReferringDataset([Sample(optical=img, referring=[ReferringExpression("a", _square(32, 0, 0, 16), "x")])])
    out = rt.evaluate_referring(EmptyModel(), data, FakeTokens())
    assert out["empty"] == 1.0 and out["area_ratio"] == 0.0 and out["miou"] == 0.0



def test_stream_batches_match_stacked_tensors():
    data = _dataset(3)
    st = data.stacked(32)
    epoch = list(rt.stream_batches(data, FakeTokens(), batch_size=2, image_size=32, seed=1)(0))
    assert len(epoch) == 3 and all(b["images"].shape == (2, 3, 32, 32) and b["targets"].shape == (2, 32, 32)
                                   for b in epoch)
    key = lambda img, tgt: (round(float(img.sum()), 3), float(tgt.sum()))  # noqa: E731
    streamed = sorted(key(i, t) for b in epoch for i, t in zip(b["images"], b["targets"]))
    assert streamed == sorted(key(i, t) for i, t in zip(st["images"], st["targets"]))
    with pytest.raises(ValueError, match="only 6"):
        rt.stream_batches(data, FakeTokens(), batch_size=8, image_size=32)

def test_fused_default_optimizer_matches_the_unfused_one():
    from rslab.train.engine import default_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model[1].weight.requires_grad_(False)
    opt, ref = default_optimizer(model, 1e-3, 0.05, fused=True), default_optimizer(model, 1e-3, 0.05)
    assert [len(g["params"]) for g in opt.param_groups] == [len(g["params"]) for g in ref.param_groups]
    assert [g["weight_decay"] for g in opt.param_groups] == [g["weight_decay"] for g in ref.param_groups]
    assert opt.defaults["fused"] and not ref.defaults["fused"]
    x = torch.randn(5, 3)
    # one step of each on copies gives the same parameters (same AdamW update, fused or not)
    import copy
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    oa, ob = default_optimizer(a, 1e-2, 0.05, fused=True), default_optimizer(b, 1e-2, 0.05)
    for m, o in ((a, oa), (b, ob)):
        m(x).pow(2).sum().backward()
        o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    with pytest.raises(ValueError, match="no trainable"):
        default_optimizer(torch.nn.Linear(2, 2).requires_grad_(False), 1e-3, 0.0, fused=True)


@pytest.fixture(scope="module")
def ablation():
    """Two rows, two steps each: shared by the tests below (building SAM2 takes a while)."""
    data = _dataset(4)
    result = rt.run_ablation(CFG, data, data, FakeTokens(),
                             rt.RS2SAM2TrainConfig(max_steps=2, batch_size=4, progress=False),
                             rows=["baseline", "full"], log=None)
    return data, result


def test_ablation_rows_share_budget_and_report(ablation):
    data, result = ablation
    assert list(result.metrics) == ["baseline", "full"]
    base, full = result.models["baseline"], result.models["full"]
    assert base.mpg is None and base.text_guidance is None and base.criterion.weights.boundary == 0
    assert full.mpg is not None and full.criterion.weights.boundary == pytest.approx(0.2)
    for row in ("baseline", "full"):
        losses = [r["loss"] for r in result.histories[row] if "loss" in r]
        assert losses and all(np.isfinite(losses))
        assert [r["step"] for r in result.histories[row] if "loss" in r][-1] == 2  # same budget
        assert set(result.metrics[row]) >= {"miou", "oiou", "pr50", "pr70", "pr90", "n"}
        assert result.metrics[row]["n"] == len(data)
    assert "tbl" not in result.histories["baseline"][-1] and "tbl" in result.histories["full"][-1]
    flat = result.flat()
    assert {"miou_baseline", "miou_full", "oiou_full", "pr50_full", "pr90_baseline"} <= set(flat)
    assert flat["miou_full"] == result.metrics["full"]["miou"]
    table = result.table()
    assert "| SAM2 + union encoder (baseline) |" in table and "+ all (RS2-SAM2)" in table
    with pytest.raises(ValueError, match="unknown ablation rows"):
        rt.run_ablation(CFG, data, data, FakeTokens(), rows=["everything"])


def test_training_moves_the_trained_parts(ablation):
    _, result = ablation
    trained = result.models["full"]
    assert not trained.training
    torch.manual_seed(0)  # the initialisation train_rs2sam2 uses for seed 0
    fresh = rt.RS2SAM2(trained.cfg)
    moved = {n for (n, p), (_, q) in zip(trained.named_parameters(), fresh.named_parameters()) if not torch.equal(p, q)}
    assert any(n.startswith("union.") for n in moved) and any(".bhfm." in n for n in moved)
    assert any(n.startswith("mpg.") for n in moved) and any(n.startswith("sam.sam_mask_decoder.") for n in moved)
    assert not any(n.startswith("sam.memory_encoder.") for n in moved)  # video memory: frozen, unused


def test_save_load_roundtrip(ablation, tmp_path):
    data, result = ablation
    model = result.models["full"]
    weights = rt.save_rs2sam2(model, tmp_path / "m")
    assert weights.name == "model.safetensors" and (tmp_path / "m" / "config.json").is_file()
    again = rt.load_rs2sam2(tmp_path / "m")
    assert again.cfg == model.cfg
    assert rt.evaluate_referring(again, data, FakeTokens()) == result.metrics["full"]
    with pytest.raises(FileNotFoundError, match="save_rs2sam2"):
        rt.load_rs2sam2(tmp_path / "absent")


def test_segment_validates_inputs():
    model = QuadrantModel()
    enc = FakeTokens()
    img = np.zeros((4, 32, 32), np.float32)  # RGB + NIR: the first three bands are used
    mask = rt.segment(model, enc, img, "the field")
    assert mask.shape == (32, 32) and mask.dtype == bool and mask[:16, :16].all() and not mask[16:].any()
    with pytest.raises(ValueError, match="empty"):
        rt.segment(model, enc, img, "  ")
    with pytest.raises(ValueError, match="not RGB"):
        rt.segment(model, enc, np.zeros((2, 32, 32), np.float32), "the lake")
    with pytest.raises(ValueError, match="C, H, W"):
        rt.segment(model, enc, np.zeros((32, 32), np.float32), "the lake")


def test_train_config_validation():
    with pytest.raises(ValueError, match="steps"):
        rt.RS2SAM2TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        rt.RS2SAM2TrainConfig(batch_size=0)
    assert rt.RS2SAM2TrainConfig(max_steps=5, warmup_steps=50).warmup_steps == 5


# ------------------------------------------------------------------------------------------------
# The stand-in for SAM2's pre-training


def test_sample_prompts_point_box_and_mask():
    masks = torch.zeros(3, 32, 32)
    masks[:, 4:12, 18:30] = 1.0  # rows 4..11, columns 18..29
    g = torch.Generator().manual_seed(0)
    pts = rt.sample_prompts(masks, rt.StandinPretrainConfig(p_point=1.0, p_box=0.0), 8, g)
    assert (pts["labels"][:, 0] == 1).all() and not pts["has_mask"].any()
    x, y = pts["coords"][:, 0, 0].long(), pts["coords"][:, 0, 1].long()
    assert bool((masks[torch.arange(3), y, x] == 1).all())  # (x, y) pixel inside the segment
    neg = pts["labels"][:, 1] == 0
    if neg.any():
        xn, yn = pts["coords"][neg, 1, 0].long(), pts["coords"][neg, 1, 1].long()
        assert bool((masks[neg.nonzero().flatten(), yn, xn] == 0).all())
    box = rt.sample_prompts(masks, rt.StandinPretrainConfig(p_point=0.0, p_box=1.0, box_jitter=0.0), 8, g)
    assert (box["labels"][:, :2] == torch.tensor([2, 3])).all() and (box["labels"][:, 2] == -1).all()
    assert torch.allclose(box["coords"][0, :2], torch.tensor([[18.0, 4.0], [29.0, 11.0]]))
    dense = rt.sample_prompts(masks, rt.StandinPretrainConfig(p_point=0.0, p_box=0.0), 8, g)
    assert dense["has_mask"].all() and (dense["labels"] == -1).all() and dense["mask_inputs"].shape == (3, 1, 8, 8)
    assert dense["mask_inputs"][0, 0, 1:3, 5:7].mean() > 2 and dense["mask_inputs"][0, 0, 5:, :3].mean() < -2
    with pytest.raises(ValueError, match="foreground"):
        rt.sample_prompts(torch.zeros(2, 8, 8), rt.StandinPretrainConfig(), 4, g)


def test_standin_checkpoint_made_reused_and_loadable(tmp_path):
    from rslab.data.synthetic import SyntheticWorld, WorldConfig
    from rslab.models.rs2sam2 import load_sam2_checkpoint

    world = SyntheticWorld(WorldConfig(size=64, nir=False), seed=0)
    cfg = RS2SAM2Config.tiny(image_size=32, union_image_size=32, union_dim=32, union_heads=2)
    pcfg = rt.StandinPretrainConfig(max_steps=2, images_per_step=2, prompts_per_image=2, min_area_frac=0.02)
    path = tmp_path / "standin" / "sam2_standin.pt"
    made = rt.standin_checkpoint(path, cfg, world, range(1, 5), pcfg, eval_indices=range(5, 7))
    assert not made.reused and path.is_file() and path.with_name(path.name + ".json").is_file()
    assert not list(path.parent.glob("*.tmp*"))  # written atomically: no temporary file left
    prov = made.provenance
    assert prov["key"]["scene_indices"] == [1, 4, 4] and "not Meta" in prov["not"] and prov["pretrain_s"] > 0
    stamp = path.stat().st_mtime_ns
    again = rt.standin_checkpoint(path, cfg, world, range(1, 5), pcfg)
    assert again.reused and path.stat().st_mtime_ns == stamp
    other = rt.standin_checkpoint(path, cfg, world, range(1, 5), dataclasses_replace(pcfg, max_steps=3))
    assert not other.reused and other.provenance["key"]["pretrain"]["max_steps"] == 3
    # it loads like an official SAM2 checkpoint: only the RS2-SAM2 adapters are missing
    torch.manual_seed(1)
    model = rt.RS2SAM2(cfg)
    report = load_sam2_checkpoint(model, path)
    assert report["missing"] and all(".bhfm." in k for k in report["missing"]) and not report["unexpected"]
    saved = torch.load(path, weights_only=True)["model"]
    key = "image_encoder.trunk.blocks.0.attn.qkv.weight"
    assert torch.equal(model.sam.state_dict()[key], saved[key])
    with pytest.raises(ValueError, match="held-out"):
        rt.standin_checkpoint(tmp_path / "x.pt", cfg, world, range(1, 5), pcfg, eval_indices=[4, 5])


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_new_parts_get_their_own_learning_rate():
    torch.manual_seed(0)
    model = rt.RS2SAM2(CFG)
    assert (rt.is_new_part("union.blocks.0.attn.qkv.weight")
            and rt.is_new_part("sam.image_encoder.trunk.blocks.1.bhfm.down.weight"))
    assert not rt.is_new_part("sam.sam_mask_decoder.iou_token.weight")
    from rslab.train import default_optimizer

    opt = default_optimizer(model, 1e-3, 0.1, fused=True, lr_scale=rt.new_part_lr_scale(4.0))
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert by_id[id(names["union.text_in.weight"])]["lr"] == pytest.approx(4e-3)
    assert by_id[id(names["sam.sam_mask_decoder.iou_token.weight"])]["lr"] == pytest.approx(1e-3)
    assert by_id[id(names["union.text_in.bias"])]["weight_decay"] == 0.0
    assert by_id[id(names["union.text_in.weight"])]["weight_decay"] == pytest.approx(0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="new_lr_mult"):
        rt.RS2SAM2TrainConfig(new_lr_mult=0)


def test_interrupted_ablation_resumes_and_skips_finished_rows(tmp_path, monkeypatch):
    """A re-run on the same out_dir skips finished rows and resumes an interrupted one from its
    checkpoint; the numbers equal an uninterrupted run's. Row budgets may differ (row_steps)."""
    data = _dataset(4)
    tcfg = rt.RS2SAM2TrainConfig(max_steps=2, batch_size=4, progress=False, checkpoint_every=1)
    kw = dict(rows=["baseline", "full"], log=None, row_steps={"full": 3})
    reference = rt.run_ablation(CFG, data, data, FakeTokens(), tcfg, **kw)
    assert reference.steps == {"baseline": 2, "full": 3} and "| 3 |" in reference.table()

    real_eval = rt.evaluate_referring
    calls = []

    def stop_on_full(model, *a, **k):  # the run "dies" after training the full row, before it is scored
        calls.append(model.cfg.use_mpg)
        if model.cfg.use_mpg:
            raise KeyboardInterrupt
        return real_eval(model, *a, **k)

    monkeypatch.setattr(rt, "evaluate_referring", stop_on_full)
    with pytest.raises(KeyboardInterrupt):
        rt.run_ablation(CFG, data, data, FakeTokens(), tcfg, out_dir=tmp_path, **kw)
    assert (tmp_path / "baseline" / "metrics.json").is_file() and not (tmp_path / "full" / "metrics.json").exists()
    assert (tmp_path / "full" / "train" / "checkpoints").is_dir()
    monkeypatch.setattr(rt, "evaluate_referring", real_eval)

    trained = []
    real_train = rt.train_rs2sam2
    monkeypatch.setattr(rt, "train_rs2sam2",
                        lambda cfg, *a, **k: trained.append(cfg.use_mpg) or real_train(cfg, *a, **k))
    again = rt.run_ablation(CFG, data, data, FakeTokens(), tcfg, out_dir=tmp_path, **kw)
    assert trained == [True]                        # the baseline row was skipped
    for row in ("baseline", "full"):                # finished rows keep model, metrics, history; no checkpoints
        assert not (tmp_path / row / "train" / "checkpoints").exists()
        assert (tmp_path / row / "model" / "model.safetensors").is_file()
        assert (tmp_path / row / "train" / "history.jsonl").is_file()
    assert again.metrics == reference.metrics       # resumed training gives the uninterrupted numbers
    assert [r["loss"] for r in again.histories["full"] if "loss" in r] == \
        [r["loss"] for r in reference.histories["full"] if "loss" in r]
    trained.clear()
    changed = rt.run_ablation(CFG, data, data, FakeTokens(), tcfg, out_dir=tmp_path, **{**kw, "row_steps": {"full": 2}})
    assert trained == [True] and changed.steps["full"] == 2  # other settings: that row is retrained from step 0
    assert [r["step"] for r in changed.histories["full"] if "loss" in r][-1] == 2
    kept = rt.run_ablation(CFG, data, data, FakeTokens(), tcfg, out_dir=tmp_path / "kept", keep_checkpoints=True,
                           **{**kw, "rows": ["baseline"]})
    assert kept.metrics["baseline"] == reference.metrics["baseline"]
    assert (tmp_path / "kept" / "baseline" / "train" / "checkpoints").is_dir()
    with pytest.raises(ValueError, match="row_steps"):
        rt.run_ablation(CFG, data, data, FakeTokens(), tcfg, rows=["full"], row_steps={"everything": 3})


def test_expression_lengths_are_checked_before_training():
    class Tok(FakeTokens):
        max_tokens = 4
        truncate = False

        def lengths(self, texts):
            return [len(t.split()) + 2 for t in texts]

    enc = Tok()
    assert rt.check_expression_lengths(enc, ["a b", "a b"]) == {"n": 1, "too_long": 0, "max_tokens_seen": 4}
    with pytest.raises(ValueError, match="1 of 2 distinct expressions exceed the 4-token limit"):
        rt.check_expression_lengths(enc, ["a b", "the very long one"])
    with pytest.warns(UserWarning, match="truncated to 4 tokens"):
        out = rt.check_expression_lengths(enc, ["a b", "the very long one"], on_long="truncate")
    assert enc.truncate and out["too_long"] == 1 and out["max_tokens_seen"] == 6


def test_expression_texts_of_readers_without_reading_images(tmp_path, monkeypatch):
    from rslab.data.catalog import open_dataset
    from rslab.data.catalog_testing import write_tiny_dataset

    for name in ("rrsisd", "refsegrs"):
        write_tiny_dataset(name, tmp_path, n=2, size=32)
        data = ReferringDataset.from_reader(open_dataset(name, tmp_path, "train"))
        expected = data.texts  # reads every image
        reader = type(data.samples)
        monkeypatch.setattr(reader, "__getitem__", lambda self, i: pytest.fail("an image was read"))
        assert rt.expression_texts(data) == expected and len(expected) >= 2
        monkeypatch.undo()
    synthetic = _dataset(2)
    assert rt.expression_texts(synthetic) == synthetic.texts
