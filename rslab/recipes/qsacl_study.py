"""Notebook 02's study (SkySense V2, QSACL): the scenes it pre-trains and probes on, one
pre-training run per method from the same initialisation, and the frozen-feature linear probe of
several backbones on optical and on SAR input.

The optimisation itself (pre-training with an EMA teacher, the probe) is :mod:`rslab.recipes.qsacl`;
this module runs it the way the notebook compares methods: same data, same initialisation, same
probe for every backbone.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rslab import weights
from rslab.data.catalog import open_dataset, require_datasets
from rslab.data.pairs import pairs_to_tensors, restyled_scenes
from rslab.data.readers import SEN1FLOODS11_CLASSES
from rslab.data.readers.pairs import crop_pair
from rslab.data.sar import normalize_sar
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.data.tree import load_tree
from rslab.models.backbone import BackboneConfig, UnifiedBackbone
from rslab.models.qsacl import ContrastiveSSL, QSACLConfig, pretraining_loss
from rslab.recipes.budget import print_budget, time_step
from rslab.recipes.qsacl import CatalogScenes, catalog_probe_tensors, linear_probe_miou, pretrain
from rslab.train import TrainConfig, Trainer
from rslab.viz import flat_tree

__all__ = ["REAL_DATASETS", "ProbeScenes", "StudyData", "check_study_datasets", "synthetic_study_data",
           "catalog_study_data", "study_data", "pretrain_method", "print_pretrain_plan", "probe_backbone",
           "probe_backbones", "probe_shipped_standins"]

#: The real-data setup of the full profile: (pre-training pairs, probe chips), both Sentinel-1/2 at 10 m.
REAL_DATASETS = ("sen12ms", "sen1floods11")
MODALITIES = ("optical", "sar")


@dataclass
class ProbeScenes:
    """Labelled scenes of the linear probe: ``optical`` (N, 4, H, W) in [0, 1], ``sar`` (N, 2, H, W)
    normalised by :func:`rslab.data.sar.normalize_sar`, ``labels`` (N, H, W) class ids."""

    optical: torch.Tensor
    sar: torch.Tensor
    labels: torch.Tensor

    def images(self, modality: str) -> torch.Tensor:
        """The images of ``modality`` ("optical" or "sar")."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be 'optical' or 'sar', got {modality!r}")
        return self.optical if modality == "optical" else self.sar


@dataclass
class StudyData:
    """Everything notebook 02 trains and probes on.

    ``pretrain``: modality -> unlabelled scenes (an (N, C, H, W) tensor, or a ``Dataset`` streamed
    from disk); ``alt_scenes``: modality -> (N, K, C, H, W) other renderings of the same ground, or
    None (plain multi-crop); ``probe_train`` / ``probe_test``: the probe's labelled and held-out
    scenes; ``example``: one held-out scene as numpy (optical, SAR in dB, labels) for a figure.
    """

    pretrain: dict
    alt_scenes: dict | None
    probe_train: ProbeScenes
    probe_test: ProbeScenes
    tree: object
    num_classes: int
    gsd: float
    example: tuple


def check_study_datasets(pretrain_dataset: str, probe_dataset: str, data_root=None) -> dict[str, Path]:
    """``{name: folder}`` of the real datasets the run needs ({} when both are "synthetic").

    Real data means SEN12MS pairs for pre-training with Sen1Floods11 chips for the probe (both
    Sentinel-1/2 at 10 m); every missing dataset is named in one ``FileNotFoundError``
    (:func:`rslab.data.catalog.require_datasets`), before anything is trained.
    """
    real = [d for d in (pretrain_dataset, probe_dataset) if d != "synthetic"]
    if not real:
        return {}
    if (pretrain_dataset, probe_dataset) != REAL_DATASETS:
        raise ValueError(f"real data needs pretrain_dataset={REAL_DATASETS[0]!r} with probe_dataset="
                         f"{REAL_DATASETS[1]!r} (both Sentinel-1/2 at 10 m), got {pretrain_dataset!r} and "
                         f"{probe_dataset!r}")
    return require_datasets(real, data_root)


def _synthetic_scenes(world: SyntheticWorld, start: int, n: int):
    """Scenes ``start`` .. ``start + n - 1`` of ``world`` and their optical, normalised SAR and label tensors."""
    scenes = [world.scene(i) for i in range(start, start + n)]
    optical, sar_db = pairs_to_tensors(scenes)
    labels = torch.tensor(np.stack([s.labels for s in scenes]), dtype=torch.long)
    return scenes, optical, normalize_sar(sar_db), labels


def synthetic_study_data(scene_size: int, n_pretrain: int, n_probe_train: int, n_probe_test: int,
                         other_styles: int = 3, seed: int = 0, test_start: int = 100_000,
                         log: Callable[[str], None] | None = print) -> StudyData:
    """The synthetic world's scenes (1 m GSD): scenes 0 .. ``n_pretrain - 1`` for pre-training (images
    only), the first ``n_probe_train`` of them with labels for the probe, ``n_probe_test`` held-out
    scenes from index ``test_start`` on, and the pre-training scenes re-rendered in ``other_styles``
    other regional styles (same layout, other colours; 0 = none). ``log`` gets one line per step."""
    for name, n, least in [("n_pretrain", n_pretrain, 2), ("n_probe_train", n_probe_train, 1),
                           ("n_probe_test", n_probe_test, 1), ("other_styles", other_styles, 0)]:
        if not isinstance(n, (int, np.integer)) or n < least:
            raise ValueError(f"{name} must be an int >= {least}, got {n!r}")
    if n_probe_train > n_pretrain:
        raise ValueError(f"n_probe_train={n_probe_train} must be <= n_pretrain={n_pretrain}: the probe's labelled "
                         "scenes are the first pre-training scenes")
    if test_start < max(n_pretrain, n_probe_train):
        raise ValueError(f"test_start={test_start} would reuse pre-training or probe scenes as held-out ones; "
                         f"pass test_start >= {max(n_pretrain, n_probe_train)}")
    log = log or (lambda line: None)
    world = SyntheticWorld(WorldConfig(size=scene_size), seed=seed)
    gsd = world.config.gsd_m  # metres per pixel; drives Adaptive Patch Merging
    t0 = time.perf_counter()
    pre_scenes, pre_opt, pre_sar, pre_lab = _synthetic_scenes(world, 0, n_pretrain)  # unlabelled use only
    # the probe's labelled subset: the first pre-training scenes
    probe_opt, probe_sar, probe_lab = (x[:n_probe_train].clone() for x in (pre_opt, pre_sar, pre_lab))
    test_scenes, test_opt, test_sar, test_lab = _synthetic_scenes(world, test_start, n_probe_test)
    log(f"{n_pretrain + n_probe_test} scenes in {time.perf_counter() - t0:.1f} s; {world.num_classes} classes; "
        f"GSD {gsd} m")

    t0 = time.perf_counter()
    alt_opt, alt_sar = [], []
    for k in range(1, other_styles + 1):
        optical, sar_db = pairs_to_tensors(restyled_scenes(world, pre_scenes, offset=k))
        alt_opt.append(optical)
        alt_sar.append(normalize_sar(sar_db))
    alt_scenes = {"optical": torch.stack(alt_opt, 1), "sar": torch.stack(alt_sar, 1)} if other_styles else None
    log(f"{other_styles} restyled copies of the pre-training scenes in {time.perf_counter() - t0:.1f} s")
    s = test_scenes[0]
    return StudyData(pretrain={"optical": pre_opt, "sar": pre_sar}, alt_scenes=alt_scenes,
                     probe_train=ProbeScenes(probe_opt, probe_sar, probe_lab),
                     probe_test=ProbeScenes(test_opt, test_sar, test_lab), tree=load_tree("synthetic"),
                     num_classes=world.num_classes, gsd=gsd, example=(s.optical, s.sar, s.labels))


def catalog_study_data(data_root, scene_size: int, n_pretrain: int, n_probe_train: int, n_probe_test: int,
                       log: Callable[[str], None] | None = print) -> StudyData:
    """The full profile's real data: SEN12MS pairs streamed from disk for pre-training (the first
    ``n_pretrain``), Sen1Floods11 train / test chips for the probe (centre ``scene_size`` windows,
    10 m GSD, two classes: not water / water). No restyled views (``alt_scenes=None``)."""
    pretrain_dataset, probe_dataset = REAL_DATASETS
    log = log or (lambda line: None)
    pairs = open_dataset(pretrain_dataset, data_root, None, limit=n_pretrain)
    scenes = {m: CatalogScenes(pairs, m, scene_size) for m in MODALITIES}
    probe_train = ProbeScenes(*catalog_probe_tensors(open_dataset(probe_dataset, data_root, "train"),
                                                     scene_size, n_probe_train))
    probe_test = ProbeScenes(*catalog_probe_tensors(open_dataset(probe_dataset, data_root, "test"),
                                                    scene_size, n_probe_test))
    gsd = 10.0
    log(f"pre-training: {len(pairs)} {pretrain_dataset} pairs (streamed); probe: {len(probe_train.labels)} train / "
        f"{len(probe_test.labels)} test {probe_dataset} chips; {scene_size} px windows, GSD {gsd} m")
    w = crop_pair(open_dataset(probe_dataset, data_root, "test")[0], scene_size)
    return StudyData(pretrain=scenes, alt_scenes=None, probe_train=probe_train, probe_test=probe_test,
                     tree=flat_tree(SEN1FLOODS11_CLASSES, ["#d9d9d9", "#2166ac"], name="sen1floods11"),
                     num_classes=len(SEN1FLOODS11_CLASSES), gsd=gsd, example=(w["optical"], w["sar"], w["labels"]))


def study_data(pretrain_dataset: str, probe_dataset: str, data_root, *, scene_size: int, n_pretrain: int,
               n_probe_train: int, n_probe_test: int, other_styles: int = 3, seed: int = 0,
               log: Callable[[str], None] | None = print) -> StudyData:
    """The notebook's data: :func:`synthetic_study_data` when both datasets are "synthetic", else
    :func:`catalog_study_data` (checked by :func:`check_study_datasets`)."""
    if pretrain_dataset == "synthetic" and probe_dataset == "synthetic":
        return synthetic_study_data(scene_size, n_pretrain, n_probe_train, n_probe_test, other_styles, seed, log=log)
    check_study_datasets(pretrain_dataset, probe_dataset, data_root)
    return catalog_study_data(data_root, scene_size, n_pretrain, n_probe_train, n_probe_test, log=log)


def pretrain_method(backbone_cfg: BackboneConfig, ssl_cfg: QSACLConfig, data: StudyData, config: TrainConfig,
                    batch_size: int = 16, num_workers: int = 0) -> tuple[Trainer, float]:
    """Pre-train a fresh :class:`UnifiedBackbone` with ``ssl_cfg`` (QSACL or the image-level
    baseline, Sec. 3.2 of SkySense V2) on ``data.pretrain`` (and its ``alt_scenes``) with
    :func:`rslab.recipes.qsacl.pretrain`. The global torch seed is set to ``config.seed`` first, so
    every method starts from the same backbone initialisation. Returns ``(trainer, seconds)``."""
    if not isinstance(backbone_cfg, BackboneConfig) or not isinstance(ssl_cfg, QSACLConfig):
        raise ValueError(f"backbone_cfg must be a BackboneConfig and ssl_cfg a QSACLConfig, got "
                         f"{type(backbone_cfg).__name__} and {type(ssl_cfg).__name__}")
    if not isinstance(data, StudyData):
        raise ValueError(f"data must be a StudyData (e.g. from study_data(...)), got {type(data).__name__}")
    torch.manual_seed(config.seed)  # same backbone initialisation for every method
    student = ContrastiveSSL(UnifiedBackbone(backbone_cfg), ssl_cfg)
    t0 = time.perf_counter()
    trainer = pretrain(student, data.pretrain, config, batch_size=batch_size, gsd=data.gsd,
                       alt_scenes=data.alt_scenes, num_workers=num_workers)
    return trainer, time.perf_counter() - t0


def print_pretrain_plan(backbone_cfg: BackboneConfig, ssl_cfg: QSACLConfig, data: StudyData, steps: int,
                        batch_size: int, device: str, seed: int = 0) -> dict:
    """Before hours of training: measure one QSACL step (forward + backward on a batch of the
    optical pre-training scenes) and print the run's plan (:func:`rslab.recipes.budget.print_budget`)."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (InfoNCE negatives), got {batch_size}")
    student = ContrastiveSSL(UnifiedBackbone(backbone_cfg), ssl_cfg).to(device)
    teacher = copy.deepcopy(student).eval()
    scenes = data.pretrain["optical"]
    batch = torch.stack([scenes[i % len(scenes)] for i in range(batch_size)]).to(device)
    seconds = time_step(lambda: pretraining_loss(student, teacher, batch, "optical", data.gsd,
                                                 torch.Generator().manual_seed(seed))["loss"], student)
    return print_budget("QSACL pre-training (then the same for the image-level baseline)", steps,
                        batch_size * (ssl_cfg.num_global + ssl_cfg.num_local), seconds, device)


def probe_backbone(backbone: UnifiedBackbone, data: StudyData, modality: str, steps: int = 300) -> dict:
    """The frozen-feature linear probe (:func:`rslab.recipes.qsacl.linear_probe_miou`) of ``backbone``
    on ``modality``: fit on ``data.probe_train``, mIoU on ``data.probe_test``."""
    train, test = data.probe_train, data.probe_test
    return linear_probe_miou(backbone, train.images(modality), train.labels, test.images(modality), test.labels,
                             data.num_classes, modality, data.gsd, steps=steps)


def probe_backbones(backbones: dict[str, UnifiedBackbone], data: StudyData, steps: int = 300) -> dict[str, dict]:
    """:func:`probe_backbone` of every backbone, optical first (key = its name), then SAR (key =
    name + "_sar"), each backbone given exactly the same probe."""
    if not backbones:
        raise ValueError("backbones must map at least one name to a UnifiedBackbone")
    return {name if modality == "optical" else f"{name}_sar": probe_backbone(backbone, data, modality, steps)
            for modality in MODALITIES for name, backbone in backbones.items()}


def probe_shipped_standins(data: StudyData, device, steps: int = 300, names: tuple[str, ...] = ("qsacl", "contrastive"),
                           log: Callable[[str], None] | None = print) -> dict[str, dict]:
    """Probe the shipped long-pretrained stand-ins ``backbone-<name>-standin`` (tiny preset, synthetic
    world) like :func:`probe_backbones`: keys ``name`` (optical) and ``name + "_sar"``. ``log`` gets
    each stand-in's model-card summary."""
    out = {}
    for name in names:
        entry = f"backbone-{name}-standin"
        if log:
            log(weights.standin_summary(entry))
        out |= probe_backbones({name: weights.load(entry).to(device)}, data, steps)
    return out
