"""Stand-in foundations: the recipes retrain at toy size here (so they cannot rot), the shipped files
match their model cards and load through the weights registry like official files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from rslab import weights as W
from rslab.cli import main as cli
from rslab.recipes import standins as S

SHIPPED_BUDGET_BYTES = 40 * 1024 * 1024


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Both stand-ins pretrained at ci size into a temporary folder."""
    out = tmp_path_factory.mktemp("standins")
    return out, {name: S.pretrain(name, "ci", out_dir=out, progress=False) for name in S.STANDINS}


@pytest.mark.parametrize("name", sorted(S.STANDINS))
def test_ci_pretraining_writes_fp16_weights_and_a_card_that_describes_them(made, name):
    out, paths = made
    path = paths[name]
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == W.file_sha256(path) and card["bytes"] == path.stat().st_size
    assert card["command"] == f"rslab pretrain {name} --size ci"
    assert card["settings"]["max_steps"] == S.STANDINS[name].sizes["ci"]["max_steps"]
    assert card["stands_in_for"] == W.STANDINS[name][0] and card["used_by"] == list(W.STANDINS[name][1])
    assert card["metrics"] and all(isinstance(v, (int, float)) for v in card["metrics"].values())
    assert card["wall_s"] > 0 and card["data"]["worlds"]
    with safe_open(str(path), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    md = path.with_suffix(".md").read_text()
    assert card["sha256"] in md and "What it is not" in md


def test_registry_loads_a_remade_standin_from_a_weights_folder_with_its_own_card(made):
    out, paths = made
    encoder = W.load("optical-text-standin", path=out)
    from rslab.models.encoders import ImageEncoder

    assert isinstance(encoder, ImageEncoder) and not encoder.training
    assert encoder.cfg.embed_dim == S.STANDINS["optical-text-standin"].sizes["ci"]["embed_dim"]
    emb = encoder(torch.rand(2, 4, 64, 64)).embedding
    assert emb.shape == (2, 384) and torch.isfinite(emb).all()
    sam = W.load("sam2-standin-tiny-64", path=out)
    assert sam.image_size == S.STANDINS["sam2-standin-tiny-64"].sizes["ci"]["image_size"]


def test_registry_refuses_a_standin_whose_file_does_not_match_its_card(made, tmp_path):
    out, paths = made
    bad = tmp_path / "optical-text-standin.safetensors"
    bad.write_bytes(paths["optical-text-standin"].read_bytes()[:-10])
    (tmp_path / "optical-text-standin.json").write_text(paths["optical-text-standin"].with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="sha256 mismatch"):
        W.load("optical-text-standin", path=tmp_path)


def test_a_finished_run_resumes_instead_of_retraining(made, monkeypatch, tmp_path):
    out, paths = made
    name = "sam2-standin-tiny-64"
    before = W.file_sha256(paths[name])
    card = paths[name].with_suffix(".json").read_text()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a stand-in already made with these settings was prepared or trained again")

    standin = S.STANDINS[name]
    monkeypatch.setitem(S.STANDINS, name, S.Standin(name, standin.sizes, must_not_run, standin.architecture))
    again = S.pretrain(name, "ci", out_dir=out, progress=False)
    assert again == paths[name] and W.file_sha256(again) == before
    assert paths[name].with_suffix(".json").read_text() == card   # the card is not rewritten
    monkeypatch.undo()
    # without the finished file, the same work folder resumes: the engine finds the last checkpoint
    copy = tmp_path / "out"
    copy.mkdir()
    again = S.pretrain(name, "ci", out_dir=copy, work_dir=out / ".work" / f"{name}-ci", progress=False)
    assert W.file_sha256(again) == before


def test_a_work_folder_of_other_settings_is_refused(made):
    out, _ = made
    with pytest.raises(ValueError, match="other settings"):
        S.pretrain("sam2-standin-tiny-64", "ci", out_dir=out, progress=False, max_steps=5)


def test_bad_names_sizes_and_settings_are_refused():
    with pytest.raises(ValueError, match="no stand-in named"):
        S.get_standin("clip")
    with pytest.raises(ValueError, match="size must be one of"):
        S.STANDINS["sam2-standin-tiny-64"].settings("huge")
    with pytest.raises(ValueError, match="unknown settings"):
        S.STANDINS["sam2-standin-tiny-64"].settings("ci", stepz=3)
    assert cli(["pretrain", "clip", "--size", "ci"]) == 2
    assert cli(["pretrain", "sam2-standin-tiny-64", "--size", "ci", "--set", "steps"]) == 2


def test_cli_lists_the_standins(capsys):
    assert cli(["pretrain", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in S.STANDINS)


SHIPPED = [n for n in S.STANDINS if (W.STANDIN_DIR / f"{n}.safetensors").is_file()]


def test_every_standin_is_shipped_within_the_size_budget():
    assert sorted(SHIPPED) == sorted(S.STANDINS), "run `rslab pretrain NAME` for the missing stand-ins"
    total = sum((W.STANDIN_DIR / f"{n}.safetensors").stat().st_size for n in SHIPPED)
    assert total <= SHIPPED_BUDGET_BYTES, f"shipped stand-ins take {total / 2**20:.1f} MiB (budget 40 MiB)"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_standin_matches_its_card_and_was_made_by_the_shipped_recipe(name):
    card = W.standin_card(name)
    path = W.find(name)
    assert path == (W.STANDIN_DIR / f"{name}.safetensors").resolve()
    assert W.verify_sha256(name, path), "the card's sha256 must be checked"
    assert card["size"] == "shipped" and card["command"].startswith(f"rslab pretrain {name}")
    shipped = json.loads(json.dumps(S.STANDINS[name].sizes["shipped"]))
    differs = {k for k in shipped if card["settings"].get(k) != shipped[k]}
    assert card["command"] != f"rslab pretrain {name}" or not differs, (
        f"the card's settings differ from the recipe's shipped settings in {sorted(differs)}: remake the file")
    assert W.load(name) is not None
    summary = W.standin_summary(name)  # what the notebooks print
    assert card["command"] in summary and f"{card['settings']['max_steps']} steps" in summary


def test_summary_of_a_standin_without_card_says_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setattr(W, "STANDIN_DIR", tmp_path)
    assert "rslab pretrain optical-text-standin" in W.standin_summary("optical-text-standin")


def test_readme_table_is_generated_from_the_cards():
    readme = (W.STANDIN_DIR.parents[1] / "README.md").read_text()
    start, end = readme.index(S.README_START) + len(S.README_START), readme.index(S.README_END)
    assert readme[start:end].strip() == S.standins_table().strip(), (
        "README's stand-in table is stale: run `rslab pretrain --readme`")
