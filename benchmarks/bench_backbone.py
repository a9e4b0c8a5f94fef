"""SkySense V2 unified backbone: parameters and CPU speed of the presets and of the options
(APM, modality prompts, MoE), plus one QSACL pre-training step.

- ``base`` parameter count on the meta device (no memory): dense/active vs all experts, to
  compare with the paper's 665 M.
- tiny-preset variants: forward ms (no grad, batch 8, 128 px optical at 1 m GSD) and params,
  via :func:`rslab.models.backbone.profile_variants`.
- QSACL train step (tiny, batch 16, 1 global 64 px + 1 local 32 px view, student fwd/bwd +
  teacher fwd): seconds per step, the number that sizes the smoke profile (< 3 min in total).

Times are wall-clock with ``torch.set_num_threads(1)``; on a shared machine they vary.
Run: ``python -m benchmarks.bench_backbone`` (or ``python -m benchmarks``).
"""

from __future__ import annotations

import time

import torch


def main() -> dict:
    from rslab.models.backbone import BackboneConfig, UnifiedBackbone, option_variants, preset_sizes, profile_variants
    from rslab.models.qsacl import ContrastiveSSL, QSACLConfig, pretraining_loss
    from rslab.train import EMA

    torch.set_num_threads(1)
    results: dict = {}
    results.update(preset_sizes())
    print(f"base : {results['base_params_active_M']:.1f} M active (paper: 665 M), "
          f"{results['base_params_all_experts_M']:.1f} M with all experts; small: {results['small_params_M']:.1f} M")

    for row in profile_variants(option_variants(), image_size=128, batch_size=8, gsd=1.0, repeats=5):
        print(f"{row['name']:12s} params {row['params_M']:.3f} M (active {row['active_params_M']:.3f} M) "
              f"forward {row['forward_ms']:.1f} ms  grids {row['stage_sizes']}")
        results[f"forward_ms_{row['name']}"] = row["forward_ms"]
        results[f"params_M_{row['name']}"] = row["params_M"]

    torch.manual_seed(0)
    student = ContrastiveSSL(UnifiedBackbone(BackboneConfig.tiny()), QSACLConfig(num_local=1))
    ema = EMA(student, momentum=(0.9, 0.99), total_steps=10)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    images = torch.rand(16, 4, 128, 128)
    times = []
    for step in range(4):
        t0 = time.perf_counter()
        out = pretraining_loss(student, ema.model, images, "optical", 1.0, torch.Generator().manual_seed(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        ema.update(student, step)
        times.append(time.perf_counter() - t0)
    results["qsacl_step_s"] = sorted(times[1:])[1]
    print(f"QSACL step (tiny, B=16, 64+32 px views): {results['qsacl_step_s']:.3f} s")
    return results


if __name__ == "__main__":
    main()
