"""Notebook 04's parameters -> an RS2-SAM2 run: inputs check, preset, SAM2 file, text encoder, rows."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from rslab import weights as W
from rslab.models.rs2sam2 import RS2SAM2Config
from rslab.recipes import rs2sam2_setup as setup_mod
from rslab.recipes.rs2sam2 import ABLATION_ROWS
from rslab.recipes.rs2sam2_setup import (
    ablation_row_names,
    require_rs2sam2_inputs,
    rs2sam2_setup,
    union_text_encoder,
)

STANDIN = "sam2-standin-tiny-64"


@pytest.fixture
def no_caches(tmp_path: Path, monkeypatch) -> Path:
    """Every weights cache points into an empty tmp folder; a download attempt fails the test."""
    for var in ("RSLAB_WEIGHTS_DIR", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, sub in (("HOME", "home"), ("HF_HUB_CACHE", "hf"), ("TORCH_HOME", "torch")):
        monkeypatch.setenv(var, str(tmp_path / sub))

    def no_download(name, kind):
        raise AssertionError(f"download attempted for {name!r} ({kind})")

    monkeypatch.setattr(W, "_download", no_download)
    return tmp_path


# ---- ablation rows ---------------------------------------------------------------------------------

def test_ablation_rows_keep_the_table_order_and_both_ends():
    assert ablation_row_names("all") == list(ABLATION_ROWS)
    assert ablation_row_names(" full , tbl_mpg") == ["baseline", "tbl_mpg", "full"]
    assert ablation_row_names("baseline,full") == ["baseline", "full"]


@pytest.mark.parametrize("bad", ["baseline,fulll", "mpg", ["baseline"]])
def test_ablation_rows_refuse_unknown_names(bad):
    with pytest.raises(ValueError, match="rows"):
        ablation_row_names(bad)


# ---- preset and checkpoint -------------------------------------------------------------------------

def test_setup_from_the_shipped_standin_takes_its_sam2_config():
    entry = W.get_entry(STANDIN)
    setup = rs2sam2_setup("tiny", 64, sam2_checkpoint=STANDIN)
    assert setup.cfg == RS2SAM2Config.tiny(image_size=64, train_hiera=False, union_image_size=64,
                                           sam2_config=entry.config["sam2_config"])
    assert Path(setup.checkpoint).is_file() and setup.files == {STANDIN: setup.checkpoint}


@pytest.mark.parametrize("model_size, image_size", [("small", 64), ("tiny", 128)])
def test_setup_refuses_the_standin_at_another_size(model_size, image_size):
    with pytest.raises(ValueError, match=f"{STANDIN} is a tiny SAM2 at 64 px"):
        rs2sam2_setup(model_size, image_size, sam2_checkpoint=STANDIN)


def test_setup_from_a_file_path_or_no_checkpoint(tmp_path):
    file = tmp_path / "my_sam2.pt"
    file.write_bytes(b"")
    setup = rs2sam2_setup("small", 256, train_hiera=True, sam2_checkpoint=str(file))
    assert setup.checkpoint == str(file) and setup.files == {}
    assert setup.cfg == RS2SAM2Config.small(image_size=256, train_hiera=True)  # union encoder keeps its own size
    none = rs2sam2_setup("tiny", 32)
    assert none.checkpoint is None and none.cfg.union_image_size == 32 and none.cfg.union_encoder == "vit"


@pytest.mark.parametrize("kw, match", [({"model_size": "huge"}, "model_size"),
                                       ({"union_encoder": "beit3-xl"}, "union_encoder"),
                                       ({"union_encoder": "clip"}, "union_encoder")])
def test_setup_refuses_unknown_names(kw, match):
    args = {"model_size": "tiny", "image_size": 64} | kw
    with pytest.raises(ValueError, match=match):
        rs2sam2_setup(args.pop("model_size"), args.pop("image_size"), **args)


def test_setup_lists_every_missing_registry_file_at_once(no_caches):
    with pytest.raises(FileNotFoundError) as err:
        rs2sam2_setup("base", 1024, sam2_checkpoint="sam2.1-hiera-large", union_encoder="beit3-large",
                      weights_dir=no_caches / "weights")
    assert "'sam2.1-hiera-large'" in str(err.value) and "'beit3-large'" in str(err.value)


# ---- inputs check ----------------------------------------------------------------------------------

def test_inputs_check_passes_for_the_shipped_standin_on_synthetic_data():
    assert require_rs2sam2_inputs(STANDIN, "vit", "synthetic") is None
    assert require_rs2sam2_inputs(None, "vit", "synthetic") is None  # nothing named, nothing to find


def test_inputs_check_names_missing_weights_and_dataset_in_one_error(no_caches):
    with pytest.raises(FileNotFoundError) as err:
        require_rs2sam2_inputs("sam2.1-hiera-large", "beit3-large", "rrsisd", weights_dir=no_caches / "weights",
                               data_root=no_caches / "data")
    message = str(err.value)
    assert message.startswith("missing inputs of notebook 04")
    assert "weights 'sam2.1-hiera-large'" in message and "weights 'beit3-large'" in message
    assert "- rrsisd:" in message


def test_inputs_check_refuses_an_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of"):
        require_rs2sam2_inputs(None, "vit", "rrsis")


# ---- union encoder tokens --------------------------------------------------------------------------

class _Recorder:
    """Stands in for a token encoder class: records how it was built."""

    def __init__(self, *args, **kw):
        self.args, self.kw = args, kw


def test_vit_union_encoder_reads_minilm_tokens(monkeypatch):
    monkeypatch.setattr(setup_mod, "MiniLMTokenEncoder", _Recorder)
    cfg = RS2SAM2Config.tiny(image_size=64, max_text_tokens=12)
    encoder, prepare = union_text_encoder("vit", cfg)
    assert isinstance(encoder, _Recorder) and encoder.kw == {"max_tokens": 12} and prepare is None


def test_beit3_union_encoder_reads_its_own_tokens_and_loads_its_release(monkeypatch, tmp_path):
    spm = tmp_path / "beit3.spm"
    monkeypatch.setattr(setup_mod, "BEiT3TokenEncoder", _Recorder)
    monkeypatch.setattr(W, "find_companion", lambda name, companion=None, path=None: spm)
    cfg = RS2SAM2Config.tiny(image_size=64).with_beit3("base")
    encoder, prepare = union_text_encoder("beit3-base", cfg, weights_dir=tmp_path, allow_download=False)
    assert encoder.args == (spm,) and encoder.kw == {"max_tokens": cfg.max_text_tokens}
    assert isinstance(prepare, partial) and prepare.func is setup_mod.load_union_weights
    assert prepare.keywords == {"name": "beit3-base", "path": tmp_path, "allow_download": False}


def test_union_encoder_refuses_a_mismatched_config_or_name():
    cfg = RS2SAM2Config.tiny(image_size=64)
    with pytest.raises(ValueError, match="with_beit3"):
        union_text_encoder("beit3-large", cfg)
    with pytest.raises(ValueError, match="union_encoder must be one of"):
        union_text_encoder("bert", cfg)
