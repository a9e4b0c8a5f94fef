"""Every public train / evaluate / predict path that a notebook calls, with the model on a device
other than its inputs' (rslab.testing.device.other_device): any op mixing devices raises, so a
CPU-only run catches what would fail on a GPU ("Expected all tensors to be on the same device")."""

import numpy as np
import pytest
import torch
from fakes import HashText as _HashText
from torch import nn

from rslab.testing.device import DeviceMismatchError, OtherDeviceTensor, other_device


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
    from rslab.recipes.vita import VITARecipe, evaluate, text_name_transfer, train

    model = _vita()
    ref = evaluate(model, small_pool, small_pool, _HashText(), level=1, batch_size=3, other_style=False)
    with other_device(trainer=True) as dev:
        model.to(dev)
        got = evaluate(model, small_pool, small_pool, _HashText(), level=1, batch_size=3, other_style=False)
        assert got == pytest.approx(ref, abs=1e-6)  # the same numbers, computed "on the device"
        text_name_transfer(model, small_pool, small_pool, _HashText(), level=1)
        # what notebook 03's evaluation did before: an episode built on the CPU fed to the model as is
        from rslab.data.episodes import make_episode

        ep = make_episode(small_pool, [0, 1], small_pool, 1, "optical", np.random.default_rng(0))
        with pytest.raises(DeviceMismatchError):
            model(ep.target, ep.modality, ep.prompt_images, ep.prompt_masks, ep.modality, None, modes=("V",),
                  ctx_valid=ep.ctx_valid)
        train(model, small_pool, _HashText(), VITARecipe(max_steps=2, batch_size=2, num_points=64), progress=False)
        assert next(model.parameters()).device == dev


# ---- notebook 01: SAR-optical alignment

def _toy_pairs(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    optical = torch.rand(n, 4, 16, 16, generator=g)
    sar = torch.stack([optical[:, 3] * 20 - 25, optical[:, 0] * 15 - 28], dim=1)
    return optical, sar, torch.arange(n) % 4


def test_alignment_recipes_on_another_device():
    from rslab.data.augment import SARViewAugment
    from rslab.losses.contrastive import ImageAlignmentLoss
    from rslab.metrics import retrieval_scores, zero_shot_accuracy
    from rslab.models.alignment import OpticalTextModel, SARAlignmentModel, embed_inputs, embed_optical, embed_sar
    from rslab.models.encoders import ImageEncoder, ImageEncoderConfig
    from rslab.recipes.alignment import train_bank_student, train_locked_text, train_sar_alignment
    from rslab.train import TrainConfig

    tiny = dict(embed_dim=32, depth=1, num_heads=2, img_size=16, out_dim=16)
    torch.manual_seed(0)
    optical, sar, labels = _toy_pairs(32, seed=1)
    text = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    cfg = lambda: TrainConfig(max_steps=2, lr=1e-3, progress=False)  # noqa: E731
    with other_device(trainer=True) as dev:
        optical_model = OpticalTextModel(ImageEncoderConfig(in_chans=4, **tiny))
        train_locked_text(optical_model, optical, text[labels], cfg(), texts=[str(c) for c in labels.tolist()],
                          batch_size=16, crop=8)
        assert next(optical_model.parameters()).device == dev
        f_opt = embed_optical(optical_model.encoder, optical)
        assert _on_cpu(f_opt)
        zero_shot_accuracy(f_opt, text, labels)
        model = SARAlignmentModel(optical_model.encoder, ImageEncoderConfig(in_chans=2, **tiny))
        for bank in (False, True):
            train_sar_alignment(model, optical, sar, ImageAlignmentLoss(lambda_cl=0.5, lambda_cma=1.0), cfg(),
                                batch_size=16, augment=SARViewAugment(crop=8, looks=(8.0, 16.0)), optical_bank=bank)
        f_sar = embed_sar(model.sar, sar)
        assert _on_cpu(f_sar) and _on_cpu(embed_optical(model.optical, optical))
        retrieval_scores(f_sar, f_opt)
        student = ImageEncoder(ImageEncoderConfig(in_chans=4, **tiny))
        train_bank_student(student, optical, f_opt, cfg(), batch_size=16)
        assert _on_cpu(embed_inputs(student, optical))


# ---- notebook 02: QSACL pre-training and the linear probe

def test_qsacl_pretrain_and_linear_probe_on_another_device():
    from rslab.models.backbone import BackboneConfig, UnifiedBackbone
    from rslab.models.qsacl import ContrastiveSSL, QSACLConfig, feature_diagnostics, query_attention_maps
    from rslab.recipes.qsacl import linear_probe_miou, pretrain, pretrain_config

    torch.manual_seed(0)
    cfg = QSACLConfig(num_queries=2, hidden_dim=32, proj_dim=16, num_local=1, global_size=64, local_size=32)
    scenes = torch.rand(4, 4, 64, 64)
    labels = torch.randint(0, 3, (4, 64, 64))
    with other_device(trainer=True) as dev:
        student = ContrastiveSSL(UnifiedBackbone(BackboneConfig.tiny(embed_dim=16, depths=(1, 1, 1, 1),
                                                                     num_heads=(1, 2, 2, 4))), cfg)
        trainer = pretrain(student, {"optical": scenes}, pretrain_config(2, device="auto"), batch_size=2)
        assert next(trainer.model.parameters()).device == dev
        assert next(trainer.ema_model.parameters()).device == dev
        out = linear_probe_miou(student.backbone, scenes, labels, scenes, labels, 3, "optical", gsd=1.0, steps=2)
        assert _on_cpu(out["pred"]) and np.isfinite(out["miou"])
        feature_diagnostics(out["test_features"])
        assert _on_cpu(query_attention_maps(student, scenes[:2], "optical", 1.0))


# ---- notebook 04: RS2-SAM2

def test_rs2sam2_train_evaluate_segment_and_standin_on_another_device(tmp_path):
    pytest.importorskip("sam2")
    from rslab.data.referring import ReferringDataset, promptable_segments
    from rslab.data.sample import ReferringExpression, Sample
    from rslab.data.synthetic import SyntheticWorld, WorldConfig
    from rslab.models.rs2sam2 import RS2SAM2Config
    from rslab.recipes import rs2sam2 as rt

    cfg = RS2SAM2Config.tiny(image_size=32, union_image_size=32, union_dim=32, union_heads=2, train_hiera=True)

    def tokens(texts):
        states = torch.stack([torch.randn(3, 384, generator=torch.Generator().manual_seed(len(t))) for t in texts])
        return states, torch.zeros(len(texts), 3, dtype=torch.bool)

    samples = []
    for i in range(2):
        img = np.full((3, 48, 48), 0.2, np.float32)
        mask = np.zeros((48, 48), bool)
        mask[8:24, 4 + 8 * i:20 + 8 * i] = True
        img[:, mask] = 0.9
        samples.append(Sample(optical=img, referring=[ReferringExpression("the bright square", mask, "a")]))
    data = ReferringDataset(samples)
    with other_device(trainer=True) as dev:
        trained = rt.train_rs2sam2(cfg, data, tokens, rt.RS2SAM2TrainConfig(max_steps=1, batch_size=2, progress=False))
        assert next(trained.model.parameters()).device == dev
        metrics = rt.evaluate_referring(trained.model, data, tokens)
        assert 0.0 <= metrics["miou"] <= 1.0
        mask = rt.segment(trained.model, tokens, samples[0].optical, "the bright square")
        assert mask.shape == (48, 48)
        assert _on_cpu(rt.predict_logits(trained.model, tokens, torch.rand(1, 3, 32, 32), ["x"]))

        world = SyntheticWorld(WorldConfig(size=64, nir=False), seed=0)
        segs = promptable_segments(world, range(1, 3), cfg.image_size, min_area_frac=0.02)
        pcfg = rt.StandinPretrainConfig(max_steps=1, images_per_step=2, prompts_per_image=2, min_area_frac=0.02)
        model, history, _, _ = rt.pretrain_sam2_standin(dataclasses_replace(cfg, train_hiera=False), segs, pcfg)
        assert next(model.parameters()).device == dev
        path = tmp_path / "sam2.pt"
        torch.save({"model": {k: v.cpu() for k, v in model.sam.state_dict().items()}}, path)
        out = rt.evaluate_promptable(dataclasses_replace(cfg, train_hiera=False), path, segs, device=dev)
        assert set(out) >= {"point", "box", "mask"}


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


# ---- notebook 05: ConInfer's branches (text prior, MaskCLIP*, contexts)

def test_coninfer_branches_and_maskclip_on_another_device():
    pytest.importorskip("open_clip")
    timm = pytest.importorskip("timm")
    from rslab.models.backbone import build_backbone
    from rslab.models.encoders import ImageEncoder, ImageEncoderConfig
    from rslab.models.maskclip import MaskClipConfig, MaskClipSegmenter, tiny_open_clip
    from rslab.recipes import coninfer as rc

    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig.tiny(4, embed_dim=32, depth=1, num_heads=2, img_size=32, out_dim=16)).eval()
    backbone = build_backbone("tiny").eval()
    vita = _vita().eval()
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0).eval()
    seg = MaskClipSegmenter(tiny_open_clip(seed=0, image_size=64), config=MaskClipConfig(input_size=64))
    classes = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    optical, sar = torch.rand(2, 4, 64, 64), torch.rand(2, 2, 64, 64) * 2 - 1
    with torch.no_grad():
        ref_prior = rc.text_prior_maps(enc, optical, classes)
        ref_probs = seg.class_probs(optical[:, :3], ["background", "water"])
    with other_device() as dev:
        for m in (enc, backbone, vita, vit, seg.clip):
            m.to(dev)
        prior = rc.text_prior_maps(enc, optical, classes)
        assert _on_cpu(prior) and torch.allclose(prior, ref_prior, atol=1e-6)
        contexts = rc.build_contexts(["backbone[0]", "vita", "text_tokens+backbone[0]"],
                                     {"optical": optical, "sar": sar}, (8, 8), backbone=backbone, encoder=enc,
                                     vita=vita, gsd=1.0)
        assert _on_cpu(contexts)
        assert _on_cpu(rc.encoder_token_maps(enc, optical))
        assert _on_cpu(rc.vit_token_maps(vit, optical[:, :3], size=32, batch_size=1))
        probs = seg.class_probs(optical[:, :3], ["background", "water"])
        assert _on_cpu(probs) and torch.allclose(probs, ref_probs, atol=1e-6)
        assert _on_cpu(seg.predict(optical[:, :3], ["background", "water"]))
