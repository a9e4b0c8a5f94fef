"""Stand-in foundations: models the papers start from, pretrained once by the project on the synthetic world.

Every method in this suite starts from a foundation pretrained at great cost (OpenAI CLIP, SAM2 on
SA-1B). None can be downloaded offline, so the smoke profile starts from **stand-ins**: the same
kind of model, trained once on the stand-in's task over a corpus of synthetic scenes, and shipped
with the package under ``rslab/standins/`` (fp16 safetensors + a model card). The notebooks load
them through :mod:`rslab.weights`, like the official files, and spend their own minutes on their
paper's part.

``rslab pretrain NAME`` runs a recipe (resumable: re-running it continues from the newest
checkpoint under ``--work``) and writes ``<name>.safetensors``, ``<name>.json`` (the card's data)
and ``<name>.md`` (the card). ``--size ci`` trains a toy version in seconds (the tests do, so the
recipes cannot rot).

The corpus: scenes ``STANDIN_SCENES, STANDIN_SCENES + 1, ...`` of the worlds with seeds
``world_seeds``; the notebooks use scene indices far below it, so a stand-in never saw a scene a
notebook trains or evaluates on. The card's metrics come from scenes ``STANDIN_HELDOUT, ...``.

| name | stands in for | used by |
|------|---------------|---------|
| ``optical-text-standin`` | the frozen optical-text tower (OpenAI CLIP ViT-B/16) | 01, 05 (through 01) |
| ``sam2-standin-tiny-64`` | SAM2 pretrained on SA-1B / SA-V (Hiera-L in RS2-SAM2) | 04 |
| ``backbone-qsacl-standin`` | SkySense V2's QSACL backbone, pretrained ten times longer than notebook 02 | 02 |
| ``backbone-contrastive-standin`` | the image-level contrastive baseline, same budget | 02 |

A stand-in is trained with one seed; its card's held-out metrics are a measurement of that one run.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import platform
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rslab.data.pairs import balanced_scenes, pairs_to_tensors, restyled_scenes
from rslab.data.referring import promptable_segments
from rslab.data.sar import normalize_sar
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.io import write_atomically, write_text_atomically
from rslab.metrics import retrieval_scores, zero_shot_accuracy
from rslab.models.alignment import OpticalTextModel, embed_optical, scene_texts
from rslab.models.backbone import BackboneConfig, UnifiedBackbone
from rslab.models.encoders import ImageEncoderConfig, MiniLMTextEncoder
from rslab.models.qsacl import ContrastiveSSL, QSACLConfig
from rslab.models.rs2sam2 import RS2SAM2Config
from rslab.recipes.alignment import train_locked_text
from rslab.recipes.qsacl import linear_probe_miou, pretrain_config
from rslab.recipes.qsacl import pretrain as pretrain_qsacl
from rslab.recipes.rs2sam2 import StandinPretrainConfig, evaluate_promptable, pretrain_sam2_standin
from rslab.train import TrainConfig
from rslab.weights import STANDIN_DIR, file_sha256, standin_card
from rslab.weights import STANDINS as REGISTERED

STANDIN_SCENES = 5_000_000   # first scene index of every stand-in's training corpus
STANDIN_HELDOUT = 6_000_000  # first scene index of the scenes its card is measured on


@dataclass(frozen=True)
class Standin:
    """One stand-in foundation: what it replaces, its settings per size and its recipe.

    ``run(settings, work_dir, progress) -> (model, metrics, data)``: trains (resuming from
    ``work_dir``), measures it on held-out scenes and describes its training data.
    ``architecture(settings)``: the config the loader needs to rebuild the model (stored in the card
    and in the registry entry).
    """

    name: str
    sizes: Mapping[str, Mapping[str, Any]]
    run: Callable[..., tuple[torch.nn.Module, dict[str, float], dict[str, Any]]]
    architecture: Callable[[Mapping[str, Any]], dict[str, Any]]
    task: str = ""
    not_: str = ""  # what it is not

    def __post_init__(self) -> None:
        if self.name not in REGISTERED:
            raise ValueError(f"stand-in {self.name!r} has no entry in rslab.weights.STANDINS")

    @property
    def stands_in_for(self) -> str:
        return REGISTERED[self.name][0]

    @property
    def used_by(self) -> tuple[str, ...]:
        return REGISTERED[self.name][1]

    def settings(self, size: str = "shipped", **overrides: Any) -> dict[str, Any]:
        if size not in self.sizes:
            raise ValueError(f"{self.name}: size must be one of {sorted(self.sizes)}, got {size!r}")
        base = dict(self.sizes[size])
        unknown = sorted(set(overrides) - set(base))
        if unknown:
            raise ValueError(f"{self.name}: unknown settings {unknown}; known: {sorted(base)}")
        return {**base, **overrides}


# --------------------------------------------------------------------------------------------
# The optical-text tower (SkySense-VITA stage 1's frozen CLIP tower; ConInfer's text prior via 01)
# --------------------------------------------------------------------------------------------


def _optical_cfg(s: Mapping[str, Any]):
    return ImageEncoderConfig(in_chans=4, embed_dim=s["embed_dim"], depth=s["depth"], num_heads=s["num_heads"],
                              patch_size=8, out_dim=384, img_size=s["image_size"])


def _optical_architecture(s: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "optical_text", "encoder": dataclasses.asdict(_optical_cfg(s)), "text_encoder": "all-MiniLM-L6-v2"}


def _worlds(world_seeds, image_size: int, **world_kw):
    return [SyntheticWorld(WorldConfig(size=image_size, **world_kw), seed=int(ws)) for ws in world_seeds]


def _run_optical_text(s: Mapping[str, Any], work_dir: Path | None, progress: bool):
    """Locked-text tuning (LiT, :func:`rslab.recipes.alignment.train_locked_text`) with layout captions and
    restyled second views, as notebook 01 step 2 does, on a corpus of many worlds and for far longer."""
    text_encoder = MiniLMTextEncoder()
    images, others, texts = [], [], []
    for world in _worlds(s["world_seeds"], s["image_size"]):
        samples = [world.scene(STANDIN_SCENES + i) for i in range(s["scenes_per_world"])]
        images.append(pairs_to_tensors(samples)[0])
        others.append(pairs_to_tensors(restyled_scenes(world, samples))[0])
        texts += scene_texts(samples, world.tree, 2, layout_captions=s["layout_captions"], layout_repeat=2,
                             seed=int(s["seed"]) + int(world.seed))
    text_encoder.encode(sorted({t for ts in texts for t in ts}, key=len))
    text_emb = [text_encoder.encode(ts) for ts in texts]
    torch.manual_seed(int(s["seed"]))
    model = OpticalTextModel(_optical_cfg(s))
    config = TrainConfig(max_steps=s["max_steps"], lr=s["lr"], warmup_steps=min(s["warmup_steps"], s["max_steps"]),
                         seed=int(s["seed"]), log_every=max(1, s["max_steps"] // 100), progress=progress, cpu=True,
                         checkpoint_every=s["checkpoint_every"], out_dir=work_dir)
    history = train_locked_text(model, torch.cat(images), text_emb, texts=texts, batch_size=s["batch_size"],
                                crop=s["crop"], colour=0.1, view_weight=1.0, optical_other=torch.cat(others),
                                dihedral=False, config=config)
    encoder = model.encoder.eval()
    # held-out scenes: zero-shot dominant-class accuracy (held-out synonyms) and restyled retrieval
    metrics: dict[str, float] = {"final_loss": float(history[-1]["loss"]) if history else float("nan")}
    classes = ["herbaceous vegetation", "bare soil", "road", "forest", "building"]
    accs, r1s = [], []
    for world in _worlds(s["world_seeds"][:3], s["image_size"]):
        evals, y = balanced_scenes(world, classes, s["eval_per_class"], level=2, start=STANDIN_HELDOUT,
                                   text_split="heldout")
        f = embed_optical(encoder, pairs_to_tensors(evals)[0])
        prompts = text_encoder.prompt_embeddings([world.tree.synonyms(c, "heldout") for c in classes])
        accs.append(zero_shot_accuracy(f, prompts, y)["acc"])
        restyled = embed_optical(encoder, pairs_to_tensors(restyled_scenes(world, evals, offset=1))[0])
        r1s.append(retrieval_scores(restyled, f, ks=(1,))[1])
    metrics["zeroshot_acc_heldout_synonyms"] = sum(accs) / len(accs)
    metrics["restyled_r1"] = sum(r1s) / len(r1s)
    metrics["eval_images_per_world"] = len(classes) * s["eval_per_class"]
    data = {"worlds": list(s["world_seeds"]), "scenes_per_world": s["scenes_per_world"],
            "scene_indices": f"{STANDIN_SCENES}..{STANDIN_SCENES + s['scenes_per_world'] - 1}",
            "image_size": s["image_size"], "n_images": sum(int(x.shape[0]) for x in images),
            "n_texts": sum(len(t) for t in texts),
            "texts": "caption, class prompts (training synonyms), layout captions; "
                     "second view: the scene in another style",
            "eval": f"worlds {list(s['world_seeds'][:3])}, balanced held-out scenes from index {STANDIN_HELDOUT}"}
    return encoder, metrics, data


# --------------------------------------------------------------------------------------------
# SAM2 (RS2-SAM2's SAM2, pretrained by Meta on SA-1B / SA-V)
# --------------------------------------------------------------------------------------------


def _sam2_cfg(s: Mapping[str, Any]):
    return RS2SAM2Config.tiny(image_size=s["image_size"], union_image_size=s["image_size"])


def _sam2_architecture(s: Mapping[str, Any]) -> dict[str, Any]:
    cfg = _sam2_cfg(s)
    return {"kind": "sam2", "preset": "tiny", "sam2_config": cfg.sam2_config,
            "sam2_overrides": list(cfg.sam2_overrides),
            "image_size": cfg.image_size}


def _run_sam2(s: Mapping[str, Any], work_dir: Path | None, progress: bool):
    """SAM's promptable segmentation (point / box / coarse-mask prompt -> segment) on the class-agnostic
    segments of the corpus, :func:`rslab.recipes.rs2sam2.pretrain_sam2_standin`."""
    cfg = _sam2_cfg(s)
    worlds = _worlds(s["world_seeds"], max(64, s["image_size"]), nir=False, max_referring=16)
    train = [promptable_segments(w, range(STANDIN_SCENES, STANDIN_SCENES + s["scenes_per_world"]), s["image_size"],
                                 s["min_area_frac"]) for w in worlds]
    segs = concat_segments(train)
    pcfg = StandinPretrainConfig(max_steps=s["max_steps"], images_per_step=s["images_per_step"], lr=s["lr"],
                                 warmup_steps=s["warmup_steps"], min_area_frac=s["min_area_frac"], seed=int(s["seed"]),
                                 progress=progress)
    model, history, _, _ = pretrain_sam2_standin(cfg, segs, pcfg, out_dir=work_dir,
                                                 checkpoint_every=s["checkpoint_every"])
    held = concat_segments([promptable_segments(w, range(STANDIN_HELDOUT, STANDIN_HELDOUT + s["eval_scenes"]),
                                                s["image_size"], s["min_area_frac"]) for w in worlds[:3]])
    losses = [r["loss"] for r in history if "loss" in r]
    metrics = {"final_loss": float(losses[-1]) if losses else float("nan")}
    metrics.update({f"heldout_miou_{k}": float(v) for k, v in evaluate_promptable(cfg, model.sam, held).items()})
    data = {"worlds": list(s["world_seeds"]), "scenes_per_world": s["scenes_per_world"],
            "scene_indices": f"{STANDIN_SCENES}..{STANDIN_SCENES + s['scenes_per_world'] - 1}",
            "image_size": s["image_size"], "n_images": int(segs["images"].shape[0]),
            "n_segments": int(segs["masks"].shape[0]),
            "eval": f"worlds {list(s['world_seeds'][:3])}, {s['eval_scenes']} held-out scenes each "
                    f"from index {STANDIN_HELDOUT}"}
    return model.sam, metrics, data


# --------------------------------------------------------------------------------------------
# The unified backbone, pretrained long with QSACL or the image-level baseline (SkySense V2)
# --------------------------------------------------------------------------------------------


def _backbone_architecture(s: Mapping[str, Any]) -> dict[str, Any]:
    config = getattr(BackboneConfig, s["preset"])()
    return {"kind": "backbone", "preset": s["preset"], "backbone": dataclasses.asdict(config)}


def _backbone_scenes(world, start: int, n: int):
    scenes = [world.scene(start + i) for i in range(n)]
    optical, sar_db = pairs_to_tensors(scenes)
    return scenes, optical, normalize_sar(sar_db), torch.tensor(np.stack([x.labels for x in scenes]), dtype=torch.long)


def _run_backbone(s: Mapping[str, Any], work_dir: Path | None, progress: bool, aggregation: str):
    """Notebook 02's pre-training (same views, heads, optimiser; local crops from the same ground in other
    regional styles) on a corpus of many worlds, ``aggregation`` "query" (QSACL, Eq. 3) or "mean" (the
    image-level baseline); the card's metric is notebook 02's linear probe on held-out scenes."""
    worlds = _worlds(s["world_seeds"], s["scene_size"])
    optical, sar, alt_opt, alt_sar = [], [], [], []
    for world in worlds:
        scenes, o, r, _ = _backbone_scenes(world, STANDIN_SCENES, s["scenes_per_world"])
        optical.append(o)
        sar.append(r)
        restyled = [pairs_to_tensors(restyled_scenes(world, scenes, offset=k))
                    for k in range(1, s["other_styles"] + 1)]
        alt_opt.append(torch.stack([x[0] for x in restyled], 1))
        alt_sar.append(torch.stack([normalize_sar(x[1]) for x in restyled], 1))
    qcfg = QSACLConfig.tiny(aggregation=aggregation, num_queries=8, temperature=0.2, global_size=64, local_size=32,
                            num_local=1, momentum=(0.9, 0.99), intensity_jitter=0.0)
    torch.manual_seed(int(s["seed"]))
    student = ContrastiveSSL(UnifiedBackbone(getattr(BackboneConfig, s["preset"])()), qcfg)
    config = dataclasses.replace(pretrain_config(s["max_steps"], lr=s["lr"], seed=int(s["seed"]), progress=progress),
                                 out_dir=work_dir, checkpoint_every=s["checkpoint_every"])
    gsd = worlds[0].config.gsd_m
    trainer = pretrain_qsacl(student, {"optical": torch.cat(optical), "sar": torch.cat(sar)}, config,
                       batch_size=s["batch_size"], gsd=gsd,
                       alt_scenes={"optical": torch.cat(alt_opt), "sar": torch.cat(alt_sar)})
    backbone = trainer.ema_model.backbone.eval()
    metrics: dict[str, float] = {}
    # held-out probe scenes of the first three worlds, rendered once for both modalities
    probe_sets = [(world, _backbone_scenes(world, STANDIN_HELDOUT, s["probe_train"]),
                   _backbone_scenes(world, STANDIN_HELDOUT + 10_000, s["probe_test"])) for world in worlds[:3]]
    for modality, k in (("optical", 1), ("sar", 2)):  # index of the modality in _backbone_scenes' tuple
        scores = [linear_probe_miou(backbone, tr[k], tr[3], te[k], te[3], world.num_classes, modality, gsd,
                                    steps=s["probe_steps"])["miou"] for world, tr, te in probe_sets]
        metrics[f"probe_miou_{modality}"] = float(sum(scores) / len(scores))
    data = {"worlds": list(s["world_seeds"]), "scenes_per_world": s["scenes_per_world"],
            "scene_indices": f"{STANDIN_SCENES}..{STANDIN_SCENES + s['scenes_per_world'] - 1}",
            "scene_size": s["scene_size"], "n_images": sum(int(x.shape[0]) for x in optical),
            "views": f"notebook 02's: 2 global 64 px, 1 local 32 px cut from one of {s['other_styles']} other styles",
            "eval": f"linear probe (notebook 02's) trained on {s['probe_train']} and scored on {s['probe_test']} "
                    f"held-out scenes of worlds {list(s['world_seeds'][:3])}, mean over the worlds"}
    return backbone, metrics, data


def concat_segments(parts: list[dict]) -> dict:
    """One :func:`~rslab.data.referring.promptable_segments` dict from several (image indices re-based)."""
    if not parts:
        raise ValueError("no segment sets to concatenate")
    offsets, n = [], 0
    for p in parts:
        offsets.append(n)
        n += int(p["images"].shape[0])
    return {"images": torch.cat([p["images"] for p in parts]), "masks": torch.cat([p["masks"] for p in parts]),
            "image_index": torch.cat([p["image_index"] + o for p, o in zip(parts, offsets)]),
            "scene_indices": [i for p in parts for i in p["scene_indices"]]}


STANDINS: dict[str, Standin] = {
    s.name: s
    for s in (
        Standin(
            name="optical-text-standin",
            task="locked-text tuning against frozen all-MiniLM-L6-v2 (captions, class prompts, layout captions) "
                 "plus an image-image InfoNCE between a scene and the same ground in another regional style",
            not_="not CLIP: no natural images, no web captions; "
                 "it knows the synthetic world's classes and layouts only",
            sizes={
                "shipped": dict(world_seeds=tuple(range(8)), scenes_per_world=384, image_size=64, embed_dim=96,
                                depth=4, num_heads=4, max_steps=2000, batch_size=64, crop=48, lr=2e-3,
                                warmup_steps=100, layout_captions=2, eval_per_class=20, checkpoint_every=100, seed=0),
                "ci": dict(world_seeds=(0, 1), scenes_per_world=16, image_size=64, embed_dim=32, depth=1, num_heads=2,
                           max_steps=4, batch_size=8, crop=24, lr=2e-3, warmup_steps=1, layout_captions=1,
                           eval_per_class=2, checkpoint_every=2, seed=0),
            },
            run=_run_optical_text, architecture=_optical_architecture,
        ),
        Standin(
            name="sam2-standin-tiny-64",
            task="SAM's promptable segmentation: one point (plus a negative one half the time), a jittered box or a "
                 "coarse mask in, the segment's mask out, on every object and background piece of the corpus",
            not_="not Meta's SAM2: a 5-block Hiera of width 32 at 64 px that has seen synthetic scenes only",
            sizes={
                "shipped": dict(world_seeds=tuple(range(8)), scenes_per_world=400, image_size=64, max_steps=16000,
                                images_per_step=8, lr=5e-4, warmup_steps=100, min_area_frac=0.01, eval_scenes=40,
                                checkpoint_every=100, seed=0),
                "ci": dict(world_seeds=(0,), scenes_per_world=4, image_size=32, max_steps=3, images_per_step=2,
                           lr=5e-4, warmup_steps=1, min_area_frac=0.01, eval_scenes=2, checkpoint_every=2, seed=0),
            },
            run=_run_sam2, architecture=_sam2_architecture,
        ),
    ) + tuple(
        Standin(
            name=f"backbone-{method}-standin",
            task=f"{what}, notebook 02's recipe (EMA teacher, multi-crop views whose local crops come from the same "
                 "ground in other regional styles, AdamW at the paper's 2e-4) on optical and SAR batches in turn",
            not_="not SkySense V2's weights: a tiny backbone that has seen synthetic scenes only",
            sizes={
                "shipped": dict(world_seeds=tuple(range(8)), scenes_per_world=64, scene_size=128, other_styles=3,
                                preset="tiny", max_steps=1200, batch_size=16, lr=2e-4, probe_train=48, probe_test=32,
                                probe_steps=200, checkpoint_every=100, seed=0),
                "ci": dict(world_seeds=(0,), scenes_per_world=4, scene_size=64, other_styles=1, preset="tiny",
                           max_steps=2, batch_size=2, lr=2e-4, probe_train=2, probe_test=2, probe_steps=2,
                           checkpoint_every=1, seed=0),
            },
            run=functools.partial(_run_backbone, aggregation=aggregation), architecture=_backbone_architecture,
        )
        for method, aggregation, what in (("qsacl", "query", "QSACL (SkySense V2 Eq. 3)"),
                                          ("contrastive", "mean", "image-level contrastive learning"))
    )
}


def get_standin(name: str) -> Standin:
    if name not in STANDINS:
        raise ValueError(f"no stand-in named {name!r}; known: {sorted(STANDINS)} (`rslab pretrain --list`)")
    return STANDINS[name]


def _already_made(weights: Path, settings: Mapping[str, Any]) -> bool:
    """True when ``weights`` and its card exist, the card was written for ``settings`` and its sha256
    is the file's: nothing to train or measure again (not even the data to prepare)."""
    card_path = weights.with_suffix(".json")
    if not (weights.is_file() and card_path.is_file()):
        return False
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return False
    return card.get("settings") == settings and card.get("sha256") == file_sha256(weights)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=STANDIN_DIR.parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def pretrain(name: str, size: str = "shipped", out_dir: str | Path | None = None, work_dir: str | Path | None = None,
             progress: bool = True, **overrides: Any) -> Path:
    """Pretrain stand-in ``name`` and write ``<out_dir>/<name>.safetensors`` (fp16), ``.json`` and ``.md``.

    ``out_dir``: default ``rslab/standins/`` (where the registry finds shipped stand-ins).
    ``work_dir``: the engine's checkpoints (default ``<out_dir>/.work/<name>-<size>``); a run that
    stops resumes from there when started again with the same settings. ``overrides`` change
    settings of ``size`` (e.g. ``max_steps=500``). Returns the weights' path.
    """
    from safetensors.torch import save_file

    standin = get_standin(name)
    s = standin.settings(size, **overrides)
    out_dir = Path(out_dir or STANDIN_DIR)
    work = Path(work_dir) if work_dir else out_dir / ".work" / f"{name}-{size}"
    as_json = json.loads(json.dumps(s))
    weights = out_dir / f"{name}.safetensors"
    if _already_made(weights, as_json):
        if progress:
            print(f"{name}: already made with these settings ({weights}, card {weights.with_suffix('.json').name}); "
                  "delete the file to make it again")
        return weights
    work.mkdir(parents=True, exist_ok=True)
    settings_file = work / "settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != as_json:
        raise ValueError(f"{work} holds a run with other settings ({settings_file}); "
                         "pass another work_dir or delete it")
    write_text_atomically(settings_file, json.dumps(as_json, indent=2))
    t0, c0 = time.perf_counter(), time.process_time()
    model, metrics, data = standin.run(s, work / "train", progress)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # time over every invocation of this run (a stopped run resumes; a finished one only re-measures)
    timing_file = work / "timing.json"
    timing = {"wall_s": 0.0, "cpu_s": 0.0, "invocations": 0}
    if timing_file.is_file():
        timing = json.loads(timing_file.read_text())
    timing = {"wall_s": timing["wall_s"] + wall, "cpu_s": timing["cpu_s"] + cpu,
              "invocations": timing["invocations"] + 1}
    write_text_atomically(timing_file, json.dumps(timing, indent=2))
    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    write_atomically(weights, lambda tmp: save_file(state, str(tmp)))
    weights.chmod(0o644)  # a shipped file: readable by whoever installs the package
    command = f"rslab pretrain {name}" + ("" if size == "shipped" else f" --size {size}") + "".join(
        f" --set {k}={json.dumps(v)}" for k, v in overrides.items())
    card = {
        "name": name, "stands_in_for": standin.stands_in_for, "used_by": list(standin.used_by), "task": standin.task,
        "not": standin.not_, "size": size, "command": command, "settings": as_json,
        "architecture": standin.architecture(s), "data": data, "metrics": metrics,
        "parameters": int(sum(v.numel() for v in state.values())), "dtype": "float16 (loaded as float32)",
        "wall_s": round(timing["wall_s"], 1), "cpu_s": round(timing["cpu_s"], 1),
        "note": f"wall and CPU time summed over {timing['invocations']} invocation(s) of `rslab pretrain`, "
                "data preparation, training and the held-out measurement included",
        "machine": f"{platform.machine()} x{torch.get_num_threads()} threads, torch {torch.__version__}",
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(), "file": weights.name, "bytes": weights.stat().st_size, "sha256": file_sha256(weights),
    }
    write_text_atomically(out_dir / f"{name}.json", json.dumps(card, indent=2) + "\n")
    write_text_atomically(out_dir / f"{name}.md", card_markdown(card))
    return weights


README_START, README_END = "<!-- standins:start -->", "<!-- standins:end -->"


def standins_table() -> str:
    """The README's table of shipped stand-ins, from their model cards (a test keeps the README equal)."""
    rows = ["| stand-in | stands in for | used by | made by | held-out metrics (its card) |", "|---|---|---|---|---|"]
    for name in STANDINS:
        card = standin_card(name)
        what = re.split("[;:]", REGISTERED[name][0])[0].removeprefix("stand-in for ")
        if not card:
            rows.append(f"| `{name}` | {what} | - | not made yet: `rslab pretrain {name}` | - |")
            continue
        metrics = ", ".join(f"{k} {v:.2f}" for k, v in card["metrics"].items()
                            if isinstance(v, float) and k != "final_loss")
        rows.append(f"| `{name}` ({card['bytes'] / 2**20:.1f} MiB) | {what} | "
                    f"{', '.join(u[:2] for u in card['used_by'])} | `{card['command']}`: "
                    f"{card['settings']['max_steps']} steps, {card['wall_s'] / 60:.0f} min on "
                    f"{card['machine'].split(',')[0]} | {metrics} |")
    return "\n".join(rows) + "\n"


def card_markdown(card: Mapping[str, Any]) -> str:
    """The human-readable model card of a stand-in (from its JSON card)."""
    metrics = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                        for k, v in card["metrics"].items())
    settings = ", ".join(f"{k}={v}" for k, v in card["settings"].items())
    data = "\n".join(f"- {k}: {v}" for k, v in card["data"].items())
    return f"""# Stand-in: {card['name']}

{card['stands_in_for'][:1].upper()}{card['stands_in_for'][1:]}. Used by: {', '.join(card['used_by'])}.

**What it is**: {card['task']}. **What it is not**: {card['not']}.

- Made with: `{card['command']}` (seed {card['settings'].get('seed')}, {card['settings'].get('max_steps')} steps)
- Settings: {settings}
- Architecture: `{json.dumps(card['architecture'])}`
- Parameters: {card['parameters']:,} ({card['dtype']}); file `{card['file']}`, {card['bytes']:,} bytes,
  sha256 `{card['sha256']}`
- Time: {card['wall_s']} s wall, {card['cpu_s']} s CPU ({card['note']}) on {card['machine']}
- Made {card['created_utc']} at commit {card['commit']}

## Data

{data}

## Metrics (held-out synthetic scenes)

| metric | value |
|--------|-------|
{metrics}
"""
