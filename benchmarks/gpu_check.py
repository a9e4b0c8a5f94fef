"""`make gpu-check`: each notebook's full-profile model for a few steps on synthetic inputs.

Nothing is downloaded: every model is built in memory with random weights (the architecture is
what costs time and memory, not the values). For each notebook it reports:

- ``step_s``: median seconds of a training step (forward + backward + AdamW) after warm-up steps,
  with bf16 autocast where the GPU supports it (fp32 otherwise, and on the CPU), as
  :class:`rslab.train.Trainer` trains; notebook 05 is training-free, so its "step" is one
  inference batch (MaskCLIP* prior + DINOv2 context);
- ``images_per_s``: batch size / step_s;
- ``peak_gpu_mem_gib``: ``torch.cuda.max_memory_allocated`` over that notebook's steps;
- ``agreement``: one forward pass of the same weights on the same input in fp32 on the CPU and on
  the device (TF32 off for it, eval mode), ``max |gpu - cpu| / max |cpu|``; it passes below
  ``--tolerance`` (default 1e-3: fp32 kernels differ in summation order, not more).

Usage::

    python -m benchmarks.gpu_check                      # on the GPU, full sizes (<= 10 min on one H100)
    python -m benchmarks.gpu_check --device cpu --tiny  # the same code path with tiny models (tests)

Writes a JSON report (``--out``, default ``build/gpu_check.json``) and prints one line per notebook.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

NOTEBOOKS = ("01_sar_alignment", "02_qsacl_pretraining", "03_vita_sga", "04_rs2sam2", "05_coninfer_inference")


@dataclass
class Case:
    """One notebook's model: ``build()`` -> module, ``batch(device)`` -> inputs, ``loss(model, batch)``
    -> scalar (None: inference only), ``forward(model, batch)`` -> a tensor to compare CPU vs device."""

    notebook: str
    what: str
    batch_size: int
    build: Callable[[], torch.nn.Module]
    batch: Callable[[torch.device], Any]
    forward: Callable[[torch.nn.Module, Any], torch.Tensor]
    loss: Callable[[torch.nn.Module, Any], torch.Tensor] | None


def _gen(device: torch.device, seed: int = 0) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def _rand(shape, device, seed=0, scale=1.0, shift=0.0) -> torch.Tensor:
    return (torch.rand(shape, generator=_gen(device, seed)) * scale + shift).to(device)


def cases(tiny: bool) -> list[Case]:
    """The five notebooks' full-profile models (``tiny``: the same code with CPU-sized presets)."""
    out = []

    # 01: the SAR encoder at the optical tower's size (ViT-B/16 widths, 224 px), trained against a
    # frozen optical embedding bank with InfoNCE (SkySense-VITA stage 1, Eq. of L_img)
    from rslab.losses.contrastive import info_nce
    from rslab.models.alignment import global_embedding
    from rslab.models.encoders import ImageEncoder, ImageEncoderConfig

    enc_cfg = (ImageEncoderConfig.tiny(2, img_size=32, out_dim=32) if tiny else ImageEncoderConfig.base(2))
    size01, b01 = (32, 4) if tiny else (224, 256)

    def batch01(device):
        return {"sar": _rand((b01, 2, size01, size01), device, 1, 30.0, -30.0),
                "bank": F.normalize(_rand((b01, enc_cfg.out_dim), device, 2) - 0.5, dim=-1)}

    out.append(Case("01_sar_alignment", f"SAR ImageEncoder {enc_cfg.embed_dim}d x {enc_cfg.depth} at {size01} px",
                    b01, lambda: ImageEncoder(enc_cfg), batch01,
                    lambda m, b: global_embedding(m(b["sar"])),
                    lambda m, b: info_nce(global_embedding(m(b["sar"])), b["bank"], 0.07)))

    # 02: the UnifiedBackbone (base: Swin-H widths, MoE) + QSACL head, one pre-training step (Eq. 3)
    from rslab.models.backbone import BackboneConfig, UnifiedBackbone
    from rslab.models.qsacl import ContrastiveSSL, QSACLConfig, pretraining_loss
    from rslab.train import EMA

    if tiny:
        bb_cfg, q_cfg = BackboneConfig.tiny(), QSACLConfig.tiny(global_size=64, local_size=32, num_local=1)
        size02, b02 = 64, 2
    else:
        bb_cfg, q_cfg = BackboneConfig.base(), QSACLConfig.base()
        size02, b02 = 256, 32

    def build02():
        model = ContrastiveSSL(UnifiedBackbone(bb_cfg), q_cfg)
        model.teacher = EMA(model, (0.996, 1.0), total_steps=1000).model  # the EMA teacher rides along
        return model

    out.append(Case("02_qsacl_pretraining",
                    f"UnifiedBackbone {bb_cfg.embed_dim}d {bb_cfg.depths} + QSACL at {size02} px",
                    b02, build02, lambda d: _rand((b02, 4, size02, size02), d, 3),
                    lambda m, x: m.backbone(x, modality="optical", gsd=1.0)[-1],
                    lambda m, x: pretraining_loss(m, m.teacher, x, "optical", 1.0,
                                                  torch.Generator().manual_seed(0))["loss"]))

    # 03: VITA (base head, CLIP B/16 text width 512) on one episode, all three modes
    from rslab.models.vita import VITA, VITAConfig

    v_cfg = (VITAConfig.tiny(dim=32, text_dim=16, num_queries=4, former_layers=1, decoder_layers=2, heads=4, ffn_dim=64,
                             encoder_widths=(8, 16, 32)) if tiny else VITAConfig.base())
    size03, b03, k03 = (64, 2, 3) if tiny else (256, 16, 6)

    def batch03(device):
        masks = torch.zeros(k03, k03, size03, size03, dtype=torch.bool)
        for c in range(k03):
            masks[c, c, c * size03 // k03:(c + 1) * size03 // k03] = True
        return {"target": _rand((b03, 4, size03, size03), device, 4),
                "prompts": _rand((k03, 4, size03, size03), device, 5),
                "masks": masks.to(device), "text": F.normalize(_rand((k03, v_cfg.text_dim), device, 6) - 0.5, dim=-1)}

    def fwd03(m, b, modes=("V", "T", "F")):
        return m(b["target"], "optical", b["prompts"], b["masks"], "optical", b["text"], modes=modes)

    out.append(Case("03_vita_sga",
                    f"VITA dim {v_cfg.dim}, {v_cfg.num_queries} queries, {v_cfg.decoder_layers} decoder layers "
                    f"at {size03} px", b03, lambda: VITA(v_cfg), batch03,
                    lambda m, b: fwd03(m, b, ("F",))["final"]["F"]["mask_logits"],
                    lambda m, b: sum(o[mode]["mask_logits"].float().pow(2).mean()
                                     + o[mode]["class_logits"].float().pow(2).mean()
                                     for o in [fwd03(m, b)["final"]] for mode in "VTF")))

    # 04: RS2-SAM2 as the paper: SAM 2.1 Hiera-L at 1024 px (frozen Hiera + BHFM), BEiT-3-Large union encoder
    try:
        import sam2  # noqa: F401
        have_sam2 = True
    except ImportError:
        have_sam2 = False
    if have_sam2:
        from rslab.models.rs2sam2 import RS2SAM2, RS2SAM2Config

        if tiny:
            import dataclasses

            r_cfg = dataclasses.replace(RS2SAM2Config.tiny(image_size=64), union_encoder="beit3", union_dim=32,
                                        union_depth=2, union_heads=2, union_image_size=32, union_patch=16)
            b04 = 2
        else:
            r_cfg, b04 = RS2SAM2Config.base().with_beit3("large"), 4

        def batch04(device):
            ids = torch.randint(4, 1000, (b04, 20), generator=_gen(device, 7))
            ids[:, 0], ids[:, -1] = 0, 2
            return {"images": _rand((b04, 3, r_cfg.image_size, r_cfg.image_size), device, 8), "ids": ids.to(device),
                    "pad": torch.zeros(b04, 20, dtype=torch.bool, device=device),
                    "target": (_rand((b04, r_cfg.image_size, r_cfg.image_size), device, 9) > 0.7).float()}

        out.append(Case("04_rs2sam2", f"RS2-SAM2: {Path(r_cfg.sam2_config).stem} at {r_cfg.image_size} px, "
                        f"BEiT-3 {r_cfg.union_dim}d x {r_cfg.union_depth}", b04, lambda: RS2SAM2(r_cfg), batch04,
                        lambda m, b: m(b["images"], b["ids"], b["pad"])["masks"],
                        lambda m, b: m.loss(m(b["images"], b["ids"], b["pad"]), b["target"])[0]))

    # 05: ConInfer's branches, training-free: MaskCLIP* on OpenAI CLIP ViT-B/16 (QuickGELU) + DINOv2-B context
    import open_clip
    import timm

    from rslab.models.maskclip import MaskClipConfig, MaskClipSegmenter, tiny_open_clip

    size05, b05 = (64, 2) if tiny else (448, 32)

    class Branches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            clip = (tiny_open_clip(seed=0, image_size=size05) if tiny
                    else open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True))
            self.seg = MaskClipSegmenter(clip, config=MaskClipConfig(input_size=size05))
            self.clip = clip
            self.dino = timm.create_model("vit_small_patch14_dinov2" if tiny else "vit_base_patch14_dinov2",
                                          pretrained=False, num_classes=0, dynamic_img_size=True,
                                          img_size=size05 // 16 * 14 if tiny else 518)

        def forward(self, x):
            pix = self.seg.preprocess(x)
            feats = self.seg.dense_features(pix)
            ctx = self.dino.forward_features(F.interpolate(x, size=(size05 // 16 * 14,) * 2, mode="bilinear",
                                                           align_corners=False))
            return torch.cat([feats.flatten(1), ctx.flatten(1)], 1)

    out.append(Case("05_coninfer_inference", f"MaskCLIP* {'tiny CLIP' if tiny else 'ViT-B/16 QuickGELU'} + "
                    f"DINOv2 {'S' if tiny else 'B'}/14 at {size05} px (inference)", b05, Branches,
                    lambda d: _rand((b05, 3, size05, size05), d, 10), lambda m, x: m(x), None))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(case: Case, device: torch.device, steps: int, warmup: int, tolerance: float) -> dict[str, Any]:
    torch.manual_seed(0)
    model = case.build()
    row: dict[str, Any] = {"notebook": case.notebook, "model": case.what, "batch_size": case.batch_size,
                           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
    # CPU vs device agreement of one fp32 forward, same weights, same input (batch of 1)
    model.eval()
    with torch.no_grad():
        x_cpu = case.batch(torch.device("cpu"))
        x_cpu = _first(x_cpu)
        ref = case.forward(model, x_cpu).float()
        model.to(device)
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            got = case.forward(model, _to(x_cpu, device)).float().cpu()
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    row["agreement"] = {"max_rel_diff": err, "tolerance": tolerance, "ok": err <= tolerance}

    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    row["precision"] = "bf16 autocast" if bf16 else "fp32"
    batch = case.batch(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    if case.loss is not None:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda" or None)
        for i in range(warmup + steps):
            _sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = case.loss(model, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        row["loss_finite"] = bool(torch.isfinite(loss.detach()).item())
    else:
        with torch.no_grad():
            for i in range(warmup + steps):
                _sync(device)
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    case.forward(model, batch)
                _sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    row.update(kind="train step" if case.loss is not None else "inference batch", steps=steps,
               step_s=round(step_s, 4), images_per_s=round(case.batch_size / step_s, 2))
    if device.type == "cuda":
        row["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    del model, batch
    return row


def _first(batch: Any) -> Any:
    """The first sample of every tensor in ``batch`` (keeps shared prompts of notebook 03 whole)."""
    if isinstance(batch, torch.Tensor):
        return batch[:1]
    return {k: (v if k in ("prompts", "masks", "text", "bank") else v[:1]) for k, v in batch.items()}


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    return {k: v.to(device) for k, v in batch.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="CPU-sized models (proves the script; not a measurement)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per notebook")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, cuDNN autotuning)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max relative CPU-vs-device difference")
    parser.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 04 05")
    parser.add_argument("--out", default="build/gpu_check.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or not args.tolerance > 0:
        parser.error("need --steps >= 1, --warmup >= 0 and --tolerance > 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU (use --device cpu --tiny to check the script on a CPU)")
    if device.type == "cpu" and not args.tiny:
        print("warning: full-size models on the CPU take a long time; add --tiny to check the script", file=sys.stderr)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "torch": torch.__version__, "tiny": args.tiny, "steps": args.steps, "warmup": args.warmup,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "notebooks": []}
    t_start = time.perf_counter()
    for case in cases(args.tiny):
        if args.only and not any(case.notebook.startswith(p) for p in args.only):
            continue
        t0 = time.perf_counter()
        try:
            row = run_case(case, device, args.steps, args.warmup, args.tolerance)
        except torch.OutOfMemoryError as err:
            row = {"notebook": case.notebook, "model": case.what, "error": f"out of memory: {str(err).splitlines()[0]}"}
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        report["notebooks"].append(row)
        mem = f", peak {row['peak_gpu_mem_gib']} GiB" if "peak_gpu_mem_gib" in row else ""
        if "error" in row:
            print(f"{case.notebook}: FAILED {row['error']}")
        else:
            agree = row["agreement"]
            print(f"{case.notebook}: {row['model']}: {row['kind']} {row['step_s']:.3f} s "
                  f"({row['images_per_s']} img/s, batch {row['batch_size']}, {row['precision']}{mem}); "
                  f"CPU vs {device.type} {agree['max_rel_diff']:.1e} ({'ok' if agree['ok'] else 'ABOVE'} "
                  f"tolerance {agree['tolerance']:g})")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    report["ok"] = all("error" not in r and r["agreement"]["ok"] for r in report["notebooks"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"report: {out} ({'all ok' if report['ok'] else 'see failures above'}, {report['wall_s']} s)")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
