"""Tests for notebook 02's study recipes (rslab.recipes.qsacl_study): the data it builds, one
pre-training run per method from the same initialisation, and the probes of several backbones."""

from __future__ import annotations

import pytest
import torch

from rslab.models.backbone import BackboneConfig, UnifiedBackbone
from rslab.models.qsacl import ContrastiveSSL, QSACLConfig
from rslab.recipes import qsacl_study as qs
from rslab.recipes.qsacl import linear_probe_miou, pretrain, pretrain_config


@pytest.fixture(scope="module")
def data() -> qs.StudyData:
    return qs.synthetic_study_data(64, n_pretrain=4, n_probe_train=2, n_probe_test=2, other_styles=2, log=None)


@pytest.fixture(scope="module")
def backbone_cfg() -> BackboneConfig:
    return BackboneConfig.tiny(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))


def _ssl_cfg(**kw) -> QSACLConfig:
    return QSACLConfig(num_queries=2, hidden_dim=16, proj_dim=8, num_local=1, global_size=32, local_size=32, **kw)


def test_check_study_datasets_needs_the_real_pair():
    assert qs.check_study_datasets("synthetic", "synthetic") == {}
    with pytest.raises(ValueError, match="pretrain_dataset='sen12ms' with probe_dataset='sen1floods11'"):
        qs.check_study_datasets("sen12ms", "synthetic")


def test_check_study_datasets_lists_every_missing_dataset(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        qs.check_study_datasets("sen12ms", "sen1floods11", tmp_path)
    assert "sen12ms" in str(err.value) and "sen1floods11" in str(err.value)


def test_synthetic_study_data_shapes_and_splits(data):
    assert data.pretrain["optical"].shape == (4, 4, 64, 64) and data.pretrain["sar"].shape == (4, 2, 64, 64)
    assert data.alt_scenes["optical"].shape == (4, 2, 4, 64, 64) and data.alt_scenes["sar"].shape == (4, 2, 2, 64, 64)
    # the probe's labelled scenes are the first pre-training scenes; the held-out ones are other scenes
    assert torch.equal(data.probe_train.optical, data.pretrain["optical"][:2])
    assert torch.equal(data.probe_train.sar, data.pretrain["sar"][:2])
    assert not any(torch.equal(t, p) for t in data.probe_test.optical for p in data.pretrain["optical"])
    assert data.probe_test.labels.dtype == torch.long and data.probe_test.labels.shape == (2, 64, 64)
    assert int(data.probe_test.labels.max()) < data.num_classes and data.gsd == 1.0
    # a restyled copy keeps the ground (same size) but not the colours
    assert not torch.equal(data.alt_scenes["optical"][:, 0], data.pretrain["optical"])
    assert float(data.pretrain["sar"].abs().max()) <= 1.0  # normalised SAR, never raw dB
    optical, sar_db, labels = data.example
    assert optical.shape == (4, 64, 64) and sar_db.shape == (2, 64, 64) and labels.shape == (64, 64)
    assert torch.equal(torch.as_tensor(labels).long(), data.probe_test.labels[0])


def test_synthetic_study_data_is_deterministic_and_plain_without_styles(data):
    again = qs.synthetic_study_data(64, n_pretrain=4, n_probe_train=2, n_probe_test=2, other_styles=0, log=None)
    assert again.alt_scenes is None
    assert torch.equal(again.pretrain["optical"], data.pretrain["optical"])
    assert torch.equal(again.probe_test.labels, data.probe_test.labels)


def test_synthetic_study_data_refuses_bad_sizes():
    with pytest.raises(ValueError, match="n_pretrain must be an int >= 2"):
        qs.synthetic_study_data(64, n_pretrain=1, n_probe_train=1, n_probe_test=1, log=None)
    with pytest.raises(ValueError, match="test_start"):
        qs.synthetic_study_data(64, n_pretrain=4, n_probe_train=2, n_probe_test=1, test_start=2, log=None)
    with pytest.raises(ValueError, match="modality must be 'optical' or 'sar'"):
        qs.ProbeScenes(torch.zeros(1), torch.zeros(1), torch.zeros(1)).images("lidar")


def test_pretrain_method_is_the_seeded_pretrain_run(data, backbone_cfg):
    config = pretrain_config(1, seed=3)
    torch.manual_seed(123)  # whatever the global state before, config.seed decides the initialisation
    trainer, seconds = qs.pretrain_method(backbone_cfg, _ssl_cfg(), data, config, batch_size=2)
    assert seconds > 0 and trainer.history
    # the same as seeding by hand, building the student and calling the recipe (what a notebook did)
    torch.manual_seed(3)
    student = ContrastiveSSL(UnifiedBackbone(backbone_cfg), _ssl_cfg())
    by_hand = pretrain(student, data.pretrain, config, batch_size=2, gsd=data.gsd, alt_scenes=data.alt_scenes)
    for got, expected in [(trainer.model, by_hand.model), (trainer.ema_model, by_hand.ema_model)]:
        expected = expected.state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in got.state_dict().items())
    with pytest.raises(ValueError, match="data must be a StudyData"):
        qs.pretrain_method(backbone_cfg, _ssl_cfg(), {"optical": data.pretrain["optical"]}, config)


def test_print_pretrain_plan_measures_a_qsacl_step(data, backbone_cfg, capsys):
    plan = qs.print_pretrain_plan(backbone_cfg, _ssl_cfg(), data, steps=10, batch_size=2, device="cpu")
    assert plan["steps"] == 10 and plan["images_per_step"] == 2 * (1 + 1) and plan["seconds_per_step"] > 0
    assert "10 steps x 4 images per step on cpu" in capsys.readouterr().out
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        qs.print_pretrain_plan(backbone_cfg, _ssl_cfg(), data, steps=10, batch_size=1, device="cpu")


def test_probe_backbones_order_and_same_probe_as_linear_probe_miou(data, backbone_cfg):
    torch.manual_seed(0)
    a, b = UnifiedBackbone(backbone_cfg), UnifiedBackbone(backbone_cfg)
    probes = qs.probe_backbones({"a": a, "b": b}, data, steps=2)
    assert list(probes) == ["a", "b", "a_sar", "b_sar"]
    direct = linear_probe_miou(b, data.probe_train.sar, data.probe_train.labels, data.probe_test.sar,
                               data.probe_test.labels, data.num_classes, "sar", data.gsd, steps=2)
    assert probes["b_sar"]["miou"] == direct["miou"] and torch.equal(probes["b_sar"]["pred"], direct["pred"])
    assert all(0.0 <= r["miou"] <= 1.0 for r in probes.values())
    with pytest.raises(ValueError, match="backbones must map at least one name"):
        qs.probe_backbones({}, data)


def test_probe_shipped_standins_probes_both_modalities(capsys):
    data = qs.synthetic_study_data(64, n_pretrain=2, n_probe_train=2, n_probe_test=2, other_styles=0, log=None)
    lines = []
    out = qs.probe_shipped_standins(data, "cpu", steps=1, names=("qsacl",), log=lines.append)
    assert list(out) == ["qsacl", "qsacl_sar"] and all(0.0 <= r["miou"] <= 1.0 for r in out.values())
    assert len(lines) == 1 and lines[0].startswith("backbone-qsacl-standin")
