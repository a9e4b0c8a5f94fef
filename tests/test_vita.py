"""SkySense-VITA model: prompt pooling, attention masks, decoupling, inference, input errors."""

import numpy as np
import pytest
import torch
from fakes import HashText as _HashText

from rslab.losses.set_prediction import SetCriterion
from rslab.models.vita import (
    VITA,
    VITAConfig,
    box_to_mask,
    masked_average_pool,
    parameter_breakdown,
    points_to_mask,
    prompt_attention_mask,
    semantic_inference,
)


def _cfg(**kw):
    base = dict(dim=32, text_dim=16, num_queries=4, former_layers=1, decoder_layers=2, heads=4, ffn_dim=64,
                encoder_widths=(8, 16, 32))
    base.update(kw)
    return VITAConfig.tiny(**base)


def _inputs(seed=0, b=2, k=3, size=32):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 4, size, size, generator=g)
    prompts = torch.rand(k, 4, size, size, generator=g)
    masks = torch.zeros(k, k, size, size, dtype=torch.bool)
    for c in range(k):  # shot c annotates class c on a band of rows
        masks[c, c, 4 * c : 4 * c + 8] = True
    text = torch.randn(k, 16, generator=g)
    return target, prompts, masks, text


def test_masked_average_pool_by_hand():
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]])  # (1, 2, 2, 2)
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1  # class 0: top-left pixel
    masks[0, 1, 1, :] = 1  # class 1: bottom row
    out = masked_average_pool(feats, masks)
    assert torch.allclose(out, torch.tensor([[1.0, 10.0], [3.5, 35.0]]))
    # two shots: class 0 annotated only in shot 1 -> only shot 1 counts; class 1 averages both
    feats2 = torch.cat([feats, feats * 2])
    masks2 = torch.zeros(2, 2, 2, 2)
    masks2[1, 0, 0, 1] = 1
    masks2[0, 1, 0, 0] = masks2[1, 1, 0, 0] = 1
    out2 = masked_average_pool(feats2, masks2)
    assert torch.allclose(out2, torch.tensor([[4.0, 40.0], [1.5, 15.0]]))
    # masks finer than the features are area-resized: a 4x4 mask with one quadrant set
    fine = torch.zeros(1, 1, 4, 4)
    fine[0, 0, 2:, 2:] = 1
    assert torch.allclose(masked_average_pool(feats, fine), torch.tensor([[4.0, 40.0]]))


def test_empty_prompt_mask_raises():
    with pytest.raises(ValueError, match="empty in every shot"):
        masked_average_pool(torch.ones(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    # ... unless the class is marked unprompted: its token is zero
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, 0, 0] = 1
    out = masked_average_pool(torch.ones(1, 2, 4, 4), masks, torch.tensor([False, True]))
    assert torch.equal(out[1], torch.zeros(2)) and torch.allclose(out[0], torch.ones(2))
    with pytest.raises(ValueError, match=r"\[0\]"):
        masked_average_pool(torch.ones(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.tensor([False, True]))
    with pytest.raises(ValueError, match="same S"):
        masked_average_pool(torch.ones(2, 2, 4, 4), torch.ones(1, 1, 4, 4))


def test_box_and_point_masks():
    m = box_to_mask(torch.tensor([[1, 2, 3, 4]]), (5, 5))
    expected = torch.zeros(1, 5, 5, dtype=torch.bool)
    expected[0, 2:4, 1:3] = True
    assert torch.equal(m, expected)
    p = points_to_mask([[(2, 2)], []], (5, 5), radius=1)
    assert p[0].sum() == 5 and p[0, 2, 2] and p[0, 1, 2] and not p[0, 1, 1]  # a plus-shaped disc
    assert not p[1].any()


def test_prompt_attention_mask_pattern():
    blocked = prompt_attention_mask(2, "vita")
    allowed = ~blocked
    expected = torch.tensor([
        [1, 1, 0, 0, 0, 0],  # V sees V only
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],  # T sees T only
        [0, 0, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1],  # F sees everything
        [1, 1, 1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)
    assert prompt_attention_mask(2, "naive") is None


def _run(model, prompts, masks, target, text):
    return model(target, "optical", prompts, masks, "optical", text)["final"]


def test_vita_fusion_isolates_text_branch_from_visual_inputs():
    """Perturbing the visual prompt (image and masks) changes V and F but leaves T bit-identical."""
    torch.manual_seed(0)
    model = VITA(_cfg()).eval()
    target, prompts, masks, text = _inputs()
    with torch.no_grad():
        a = _run(model, prompts, masks, target, text)
        b = _run(model, torch.rand_like(prompts), masks.roll(3, dims=-2), target, text)
    assert torch.equal(a["T"]["class_logits"], b["T"]["class_logits"])
    assert torch.equal(a["T"]["mask_logits"], b["T"]["mask_logits"])
    assert not torch.allclose(a["V"]["class_logits"], b["V"]["class_logits"])
    assert not torch.allclose(a["F"]["class_logits"], b["F"]["class_logits"])
    # and the visual branch ignores the text
    with torch.no_grad():
        c = _run(model, prompts, masks, target, torch.randn_like(text))
    assert torch.equal(a["V"]["mask_logits"], c["V"]["mask_logits"])
    assert not torch.allclose(a["F"]["class_logits"], c["F"]["class_logits"])


def test_naive_fusion_leaks_between_branches():
    torch.manual_seed(0)
    model = VITA(_cfg(fusion="naive")).eval()
    target, prompts, masks, text = _inputs()
    with torch.no_grad():
        a = _run(model, prompts, masks, target, text)
        b = _run(model, torch.rand_like(prompts), masks, target, text)
    assert not torch.allclose(a["T"]["class_logits"], b["T"]["class_logits"])


def test_decoder_block_diagonal_isolation():
    torch.manual_seed(0)
    model = VITA(_cfg()).eval()
    target = torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        memory, mask_features = model.features(target, "optical")
        ctx = {m: torch.randn(2, 3, 32) for m in "VTF"}
        valid = torch.ones(2, 3, dtype=torch.bool)
        a = model.decoder(ctx, "VTF", memory, mask_features, valid)["final"]
        b = model.decoder({**ctx, "V": torch.randn(2, 3, 32)}, "VTF", memory, mask_features, valid)["final"]
    for mode in "TF":
        assert torch.allclose(a[mode]["mask_logits"], b[mode]["mask_logits"], atol=1e-6)
    assert not torch.allclose(a["V"]["mask_logits"], b["V"]["mask_logits"])


def test_output_shapes_and_invalid_classes():
    torch.manual_seed(0)
    cfg = _cfg()
    model = VITA(cfg).eval()
    target, prompts, masks, text = _inputs()
    valid = torch.tensor([[True, False, True], [True, True, True]])
    with torch.no_grad():
        out = model(target, "optical", prompts, masks, "optical", text, ctx_valid=valid)
    assert len(out["aux"]) == cfg.decoder_layers
    for mode in "VTF":
        assert out["final"][mode]["class_logits"].shape == (2, cfg.num_queries, 4)
        assert out["final"][mode]["mask_logits"].shape == (2, cfg.num_queries, 8, 8)
        # an unprompted class can never be predicted
        assert (out["final"][mode]["class_logits"][0, :, 1] <= -1e3).all()


def test_prompt_image_of_another_size_is_supported():
    """Prompts are pooled to vectors, so a prompt image may differ in size from the target."""
    torch.manual_seed(0)
    model = VITA(_cfg()).eval()
    target, _, _, text = _inputs(size=32)
    _, prompts, masks, _ = _inputs(size=48)
    with torch.no_grad():
        out = model(target, "optical", prompts, masks, "optical", text)["final"]
    assert out["V"]["mask_logits"].shape[-2:] == (8, 8)


def test_bad_inputs_raise_clear_errors():
    model = VITA(_cfg()).eval()
    target, prompts, masks, text = _inputs()
    with pytest.raises(ValueError, match="prompt modality"):
        model(target, "optical", torch.rand(3, 2, 32, 32), masks, "sar", text)
    with pytest.raises(ValueError, match="prompt mask size"):
        model(target, "optical", prompts, masks[..., :16, :16], "optical", text)
    with pytest.raises(ValueError, match="empty in every shot"):
        model(target, "optical", prompts, torch.zeros_like(masks), "optical", text)
    with pytest.raises(ValueError, match="text_emb"):
        model(target, "optical", prompts, masks, "optical", text[:, :8])
    with pytest.raises(ValueError, match="modes"):
        model(target, "optical", prompts, masks, "optical", text, modes=("X",))
    with pytest.raises(ValueError, match="need text_emb"):
        model(target, "optical", prompts, masks, "optical", None, modes=("F",))
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.rand(2, 4, 40, 40), "optical", prompts, masks, "optical", text)
    with pytest.raises(ValueError, match="optical input"):
        model(torch.rand(2, 3, 32, 32), "optical", None, None, "optical", text, modes=("T",))
    with pytest.raises(ValueError, match="fusion"):
        VITAConfig.tiny(fusion="early")


def test_semantic_inference_by_hand():
    cls = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]]))  # 2 queries, K = 2 + no-object
    masks = torch.tensor([[[[0.0]], [[100.0]]]])  # sigmoid 0.5 and 1
    out = semantic_inference(cls, masks)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.7 * 0.5 + 0.1, 0.2 * 0.5 + 0.1]), atol=1e-6)


def test_base_preset_head_size_is_close_to_the_paper():
    parts = parameter_breakdown(VITA(VITAConfig.base()))
    assert parts["former+decoder"] == parts["vita_former"] + parts["vita_decoder"]
    assert 14e6 < parts["former+decoder"] < 24e6  # the paper: about 18M


def test_tiny_model_overfits_one_episode():
    """Two halves of a target, prompted by the same image: a few steps learn to split them."""
    torch.manual_seed(0)
    model = VITA(_cfg(num_queries=4))
    target = torch.zeros(1, 4, 32, 32)
    target[0, 0, :, :16] = 1.0  # class 0: bright red left half
    target[0, 2, :, 16:] = 1.0  # class 1: bright blue right half
    labels = torch.zeros(32, 32, dtype=torch.long)
    labels[:, 16:] = 1
    masks = torch.stack([labels == 0, labels == 1])[None]  # one shot, both classes
    text = torch.randn(2, 16)
    seg = torch.stack([labels == 0, labels == 1]).float()
    crit = SetCriterion(num_points=128)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(70):
        out = model(target, "optical", target, masks, "optical", text, modes=("V",))
        loss = sum(crit(p["V"]["class_logits"], p["V"]["mask_logits"],
                        [{"labels": torch.tensor([0, 1]), "masks": seg}])[0]
                   for p in [out["final"], *out["aux"]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out = model(target, "optical", target, masks, "optical", text, modes=("V",))["final"]["V"]
    scores = torch.nn.functional.interpolate(semantic_inference(out["class_logits"], out["mask_logits"]), size=(32, 32))
    acc = (scores.argmax(1)[0] == labels).float().mean().item()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert acc > 0.9


# ---------------------------------------------------------------------------------------------
# Recipe: episodes -> loss -> prediction (with a stand-in text encoder, no MiniLM load)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_pool():
    from rslab.data.episodes import ScenePool
    from rslab.data.synthetic import SyntheticWorld, WorldConfig

    return ScenePool(SyntheticWorld(WorldConfig(size=64), seed=0), range(8), min_pixels=8)


def test_episode_factory_is_deterministic_and_follows_the_schedule(small_pool):
    from rslab.recipes.vita import VITARecipe, episode_factory

    rec = VITARecipe(max_steps=6, batch_size=2, level_mode="hard", sar_fraction=0.5)
    a, b = list(episode_factory(small_pool, rec)(0)), list(episode_factory(small_pool, rec)(0))
    assert [e.level for e in a] == [1, 1, 2, 2, 3, 3]
    assert all(torch.equal(x.target, y.target) and x.modality == y.modality for x, y in zip(a, b))
    with pytest.raises(ValueError, match="train_modes"):
        VITARecipe(train_modes=("X",))
    from rslab.data.episodes import region_names

    tree = small_pool.tree
    region = list(episode_factory(small_pool, VITARecipe(max_steps=6, batch_size=2, train_names="region"))(0))
    assert [e.level for e in region] == [
        e.level for e in list(episode_factory(small_pool, VITARecipe(max_steps=6, batch_size=2))(0))]
    assert all(n in region_names(tree, c) for e in region for n, c in zip(e.class_names, tree.names(e.level)))


def test_loss_sums_trained_modes_and_backpropagates(small_pool):
    from rslab.recipes.vita import VITALoss, VITARecipe, episode_factory

    torch.manual_seed(0)
    model = VITA(_cfg())
    ep = next(iter(episode_factory(small_pool, VITARecipe(max_steps=2, batch_size=2, sar_fraction=0.0))(0)))
    torch.manual_seed(1)
    full, logs = VITALoss(_HashText(), VITARecipe(num_points=64))(model, ep)
    torch.manual_seed(1)
    fused, logs_f = VITALoss(_HashText(), VITARecipe(num_points=64, train_modes=("F",)))(model, ep)
    assert set(logs) >= {"loss_V", "loss_T", "loss_F"} and set(logs_f) == {"loss_F", "level"}
    assert torch.isfinite(full) and fused.item() < full.item()
    full.backward()
    assert model.decoder.query_feat.grad is not None and model.former.prototypes.grad is not None


def test_segment_and_predict_give_valid_class_maps(small_pool):
    from rslab.data.episodes import make_episode
    from rslab.recipes.vita import level_to_leaf, predict, segment

    torch.manual_seed(0)
    model = VITA(_cfg()).eval()
    ep = make_episode(small_pool, [0, 1], small_pool, 1, "optical", np.random.default_rng(0), exclude={0, 1})
    for mode in "VTF":
        pred = predict(model, ep, _HashText(), mode)
        assert pred.shape == (2, 64, 64) and bool(ep.ctx_valid[0, pred.unique()].all())
    # one-shot on arbitrary images: class 1 has no annotation, so it is never predicted
    masks = torch.zeros(1, 3, 64, 64, dtype=torch.bool)
    masks[0, 0, :32] = masks[0, 2, 32:] = True
    pred = segment(model, _HashText(), ep.target, "optical", ep.target[:1], masks, ["a", "b", "c"], "V")
    assert pred.shape == (2, 64, 64) and not (pred == 1).any()
    with pytest.raises(ValueError, match="every prompt mask is empty"):
        segment(model, _HashText(), ep.target, "optical", ep.target[:1], torch.zeros_like(masks), None, "V")
    tree = small_pool.tree
    leaf = level_to_leaf(tree, 1)
    assert [tree.to_level(np.array([i]), 1)[0] for i in leaf] == list(range(tree.num_classes(1)))


def test_backbone_adapter_gives_strides_4_8_16():
    from rslab.models.backbone import build_backbone
    from rslab.models.vita import BackboneAdapter

    adapter = BackboneAdapter(build_backbone("tiny"))
    for modality, c in (("optical", 4), ("sar", 2)):
        feats = adapter(torch.rand(1, c, 64, 64), modality)
        assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4)]
        assert [f.shape[1] for f in feats] == adapter.out_channels


class _TemplateText(_HashText):
    """Fake encoder that also honours templates (one vector per formatted sentence, averaged)."""

    def prompt_embeddings(self, names, templates=("a {}",)):
        rows = [super(_TemplateText, self).prompt_embeddings([t.format(n) for t in templates]).mean(0) for n in names]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def test_training_text_prompts_sample_templates_and_noise():
    from rslab.recipes.vita import TRAIN_TEMPLATES, VITALoss, VITARecipe

    names = ["water", "forest", "road"]
    avg = VITALoss(_TemplateText(), VITARecipe()).text_embeddings(names)
    assert torch.allclose(avg, _TemplateText().prompt_embeddings(names))  # default: as at inference
    loss = VITALoss(_TemplateText(), VITARecipe(text_templates="sample"))
    draws = [loss.text_embeddings(names) for _ in range(6)]
    assert all(torch.allclose(d.norm(dim=-1), torch.ones(3)) for d in draws)
    assert any(not torch.allclose(draws[0], d) for d in draws[1:])  # templates vary between steps
    singles = {tuple(_TemplateText().prompt_embeddings([names[0]], [t])[0].tolist()) for t in TRAIN_TEMPLATES}
    assert all(tuple(d[0].tolist()) in singles for d in draws)  # each row is one training template
    noisy = VITALoss(_TemplateText(), VITARecipe(text_noise=0.05)).text_embeddings(names)
    cos = (noisy * avg).sum(-1)
    assert torch.allclose(noisy.norm(dim=-1), torch.ones(3)) and (cos < 0.9999).all() and (cos > 0.5).all()
    with pytest.raises(ValueError, match="text_templates"):
        VITARecipe(text_templates="mean")
    with pytest.raises(ValueError, match="text_noise"):
        VITARecipe(text_noise=-0.1)
    with pytest.raises(ValueError, match="train_names"):
        VITARecipe(train_names="heldout")  # held-out synonyms are never training names


def test_heldout_name_neighbours_flags_names_closer_to_another_class():
    from rslab.data.tree import load_tree
    from rslab.recipes.vita import heldout_name_neighbours

    tree = load_tree("synthetic")

    class _Lookup:  # every name of a class maps to the class's axis, except one planted confusion
        def prompt_embeddings(self, entries):
            rows = []
            for entry in entries:
                name = entry if isinstance(entry, str) else entry[0]
                c = tree.names(1).index(tree.find(name).name if name != "developed land" else "bare land")
                rows.append(torch.nn.functional.one_hot(torch.tensor(c), 5).float())
            return torch.stack(rows)

    rows = heldout_name_neighbours(tree, _Lookup(), 1)
    assert len(rows) == sum(len(tree.synonyms(n, "heldout")) for n in tree.names(1))
    wrong = [r for r in rows if r["nearest"] != r["true"]]
    assert [(r["name"], r["true"], r["nearest"]) for r in wrong] == [("developed land", "built-up", "bare land")]
    assert all(r["sim_true"] == 1.0 for r in rows if r not in wrong)
    with pytest.raises(ValueError, match="level"):
        heldout_name_neighbours(tree, _Lookup(), 4)
    region = heldout_name_neighbours(tree, _Lookup(), 1, train_names="region")  # prototypes incl. same-pixel nodes
    assert [(r["name"], r["nearest"]) for r in region] == [(r["name"], r["nearest"]) for r in rows]
    with pytest.raises(ValueError, match="train_names"):
        heldout_name_neighbours(tree, _Lookup(), 1, train_names="heldout")


def test_evaluate_per_class_matches_miou(small_pool):
    from rslab.recipes.vita import evaluate

    torch.manual_seed(0)
    model = VITA(_cfg())
    kw = dict(level=1, batch_size=4, other_style=False)
    miou = evaluate(model, small_pool, small_pool, _HashText(), **kw)
    per = evaluate(model, small_pool, small_pool, _HashText(), per_class=True, **kw)
    assert set(per) == set("VTF") and all(v.shape == (small_pool.tree.num_classes(1),) for v in per.values())
    assert all(abs(float(np.nanmean(per[m])) - miou[m]) < 1e-9 for m in "VTF")


def test_text_name_transfer_reports_ratio_and_lost_classes(small_pool):
    from rslab.recipes.vita import evaluate, text_name_transfer

    torch.manual_seed(0)
    model = VITA(_cfg())
    out = text_name_transfer(model, small_pool, small_pool, _HashText(), level=1)
    k = small_pool.tree.num_classes(1)
    assert len(out["seen_per_class"]) == len(out["unseen_per_class"]) == k
    seen = evaluate(model, small_pool, small_pool, _HashText(), level=1, modes=("T",), names="canonical")["T"]
    assert abs(out["seen"] - seen) < 1e-9 and abs(out["ratio"] - out["unseen"] / max(seen, 1e-9)) < 1e-9
    for name, a, b in zip(small_pool.tree.names(1), out["seen_per_class"], out["unseen_per_class"]):
        expected = np.isfinite(a) and a >= 0.2 and not (np.nan_to_num(b) >= 0.5 * a)
        assert (name in out["lost"]) == expected
    # the notebook's path: the summary of per-class IoUs from evaluate (all modes evaluated at once) is the same
    from rslab.recipes.vita import name_transfer_summary

    seen_iou = evaluate(model, small_pool, small_pool, _HashText(), level=1, per_class=True)["T"]
    unseen_iou = evaluate(model, small_pool, small_pool, _HashText(), level=1, modes=("T",), names="heldout",
                          per_class=True)["T"]
    again = name_transfer_summary(small_pool.tree.names(1), seen_iou, unseen_iou)
    np.testing.assert_equal(again, out)
    # with every threshold at its loosest, any class seen at all and not matched is lost
    strict = text_name_transfer(model, small_pool, small_pool, _HashText(), level=1, lost_fraction=1.0,
                                min_seen_iou=0.0)
    assert set(out["lost"]) <= set(strict["lost"])
    with pytest.raises(ValueError, match="lost_fraction"):
        text_name_transfer(model, small_pool, small_pool, _HashText(), level=1, lost_fraction=0.0)
