"""The full profile's recipe pieces on tiny official-layout data: streamed scenes, the lazy VITA pool,
the CLIP teacher and the same-size SAR encoder (device-following checked on the meta device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rslab.data.catalog import open_dataset
from rslab.data.catalog_testing import write_tiny_dataset


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for i, name in enumerate(("loveda", "sen12ms", "sen1floods11")):
        write_tiny_dataset(name, root, seed=i, n=4, size=32)
    return root


def test_catalog_scene_pool_reads_lazily_and_counts_presence(data_root):
    from rslab.data.tree import load_tree
    from rslab.recipes.vita import CatalogScenePool

    reader = open_dataset("loveda", data_root, "train")
    pool = CatalogScenePool(reader, load_tree("loveda"), size=16, indices=range(3))
    assert len(pool) == 3 and pool.channels == 3 and pool.presence[2].shape == (3, 7)
    x = pool.images("optical")[[0, 2]]
    assert x.shape == (2, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(pool.images("optical")[1], pool.optical[1])  # cached: the same values again
    lab = pool.level_labels(1)[np.array([0, 1])]
    assert lab.shape == (2, 16, 16) and set(lab.unique().tolist()) <= {0, 1, 2, 255}
    with pytest.raises(ValueError, match="no SAR"):
        pool.images("sar")


def test_streamed_scenes_pretrain_one_step(data_root):
    from rslab.models.backbone import BackboneConfig, UnifiedBackbone
    from rslab.models.qsacl import ContrastiveSSL, QSACLConfig
    from rslab.recipes.qsacl import CatalogScenes, catalog_probe_tensors, pretrain, pretrain_config

    pairs = open_dataset("sen12ms", data_root, None)
    opt, sar = CatalogScenes(pairs, "optical", 32), CatalogScenes(pairs, "sar", 32)
    assert opt[0].shape == (4, 32, 32) and sar[0].shape == (2, 32, 32) and float(sar[0].abs().max()) <= 1
    cfg = QSACLConfig.tiny(num_queries=2, global_size=16, local_size=16)
    student = ContrastiveSSL(UnifiedBackbone(BackboneConfig.tiny()), cfg)
    trainer = pretrain(student, {"optical": opt, "sar": sar}, pretrain_config(2), batch_size=2, gsd=10.0)
    assert trainer.step == 2 and all(np.isfinite(h["loss"]) for h in trainer.history if "loss" in h)
    x, s, y = catalog_probe_tensors(open_dataset("sen1floods11", data_root, "test"), 16, limit=2)
    assert x.shape == (2, 4, 16, 16) and s.shape == (2, 2, 16, 16) and y.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="in-memory scenes"):
        pretrain(student, {"optical": opt}, pretrain_config(1), batch_size=2,
                 alt_scenes={"optical": torch.zeros(4, 4, 32, 32)})


def test_clip_teacher_and_sar_vit_follow_their_device():
    open_clip = pytest.importorskip("open_clip")
    from rslab.recipes.alignment import CLIPImageTower, SARViT, TeacherSARModel

    clip = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True, device="meta")
    for p in clip.parameters():
        p.requires_grad_(False)
    tower = CLIPImageTower(clip)
    assert tower.mean.device.type == "meta"
    assert tower(torch.rand(2, 3, 32, 32)).device.type == "meta"  # CPU input follows the tower
    with pytest.raises(ValueError, match="R, G, B first"):
        tower(torch.rand(2, 2, 32, 32))
    sar = SARViT("ViT-B-16", True).to("meta")
    assert sar.visual.conv1.in_channels == 2 and sar(torch.randn(1, 2, 32, 32, device="meta")).shape == (1, 512)
    with pytest.raises(ValueError, match="must be frozen"):
        TeacherSARModel(sar, sar)
    model = TeacherSARModel(tower, sar)
    model.train()
    assert not model.optical.training and model.sar.training
