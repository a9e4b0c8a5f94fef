"""The named weights registry: every entry's official layout (random weights written by
rslab.weights_testing) is found through $RSLAB_WEIGHTS_DIR and loaded into the right architecture;
wrong layouts, hash mismatches and missing files are refused with messages naming the file; the
CLI and the generated book page."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rslab import weights as W
from rslab.weights_testing import random_state_dict, write_official_weights

CONTRACT_NAMES = ("clip-vit-b16-openai", "clip-vit-b16-laion2b", "sam2.1-hiera-tiny", "sam2.1-hiera-small",
                  "sam2.1-hiera-base-plus", "sam2.1-hiera-large", "dinov2-vitb14", "dinov2-vitl14",
                  "beit3-base", "beit3-large", "minilm-l6-v2")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch) -> Path:
    """Every cache points into tmp; no download may happen; sha256 checks are on."""
    for var in ("RSLAB_WEIGHTS_DIR", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "RSLAB_SKIP_SHA256"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(name, kind):
        raise AssertionError(f"download attempted for {name!r} ({kind})")

    monkeypatch.setattr(W, "_download", no_download)
    return tmp_path


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """write(name, file=None) -> path: each random official file is written once per module."""
    root = tmp_path_factory.mktemp("weights")
    written: dict[tuple[str, str | None], Path] = {}

    def write(name: str, file: str | None = None) -> Path:
        if (name, file) not in written:
            written[name, file] = write_official_weights(name, root / (file or "default"), seed=0, file=file)
        return written[name, file]

    yield write
    shutil.rmtree(root, ignore_errors=True)  # gigabytes with the slow entries: not kept by pytest


def _first_float(sd):
    return next((k, v) for k, v in sd.items() if v.is_floating_point() and v.ndim >= 2)


def _assert_loaded_from(model, written: dict, key_map=lambda k: k):
    """The model holds the file's numbers (not a random init): compare one weight matrix."""
    k, v = _first_float(written)
    got = model.state_dict()[key_map(k)]
    assert torch.equal(got.float().cpu(), v.float()), k


# --- the registry itself -----------------------------------------------------------------------------

def test_contract_names_and_entries_are_complete():
    assert set(CONTRACT_NAMES) <= set(W.WEIGHTS)
    for e in W.WEIGHTS.values():
        assert e.family in W.FAMILIES and e.files and e.paper_model
        # official releases say where to download; the project's stand-ins how to remake them
        assert e.url.startswith("https://") or (e.family == "standin" and f"rslab pretrain {e.name}" in e.url)
        assert W.get_entry(e.name) is e
    assert W.get_entry("clip-vit-b16-openai").config["quick_gelu"] is True
    assert W.get_entry("clip-vit-b16-laion2b").config["quick_gelu"] is False
    assert W.get_entry("sam2.1-hiera-large").config["sam2_config"] == "configs/sam2.1/sam2.1_hiera_l.yaml"
    assert W.get_entry("sam2.1-hiera-base-plus").files == ("sam2.1_hiera_base_plus.pt",)
    assert W.get_entry("dinov2-vitl14").config["timm"] == "vit_large_patch14_dinov2.lvd142m"
    with pytest.raises(ValueError, match="known names: clip-vit-b16-openai"):
        W.get_entry("clip-vit-b16")
    with pytest.raises(TypeError):
        W.WEIGHTS["beit3-base"].config["depth"] = 1  # entries are read-only
    with pytest.raises(ValueError, match="family"):
        W.WeightsEntry("x", "onnx", ("x.onnx",), "p", "https://x", None)
    with pytest.raises(ValueError, match="sha256"):
        W.WeightsEntry("x", "sam2", ("x.pt",), "p", "https://x", "abc")


def test_registry_facts_match_the_libraries_own_configs():
    """URLs, hub repos, file names, configs and QuickGELU agree with open_clip's, sam2's and timm's
    own pretrained configs (the registry restates them so that nothing heavy is imported to list it)."""
    import inspect

    import open_clip
    import sam2
    import timm
    import yaml
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES
    from sam2.modeling.backbones.hieradet import Hiera

    for e in (e for e in W.WEIGHTS.values() if e.family in ("openai_clip", "open_clip")):
        cfg = open_clip.get_pretrained_cfg(e.config["model"], e.config["open_clip_tag"])
        assert cfg["hf_hub"].rstrip("/") == e.hf_repo, e.name
        assert bool(cfg.get("quick_gelu", False)) is e.config["quick_gelu"], e.name
        assert e.url in (cfg["url"], f"https://huggingface.co/{e.hf_repo}"), e.name
        mc = open_clip.get_model_config(e.config["model"])
        vision = mc["vision_cfg"]
        built = (mc["embed_dim"], vision["width"], vision["layers"], vision["patch_size"], vision["image_size"])
        assert built == tuple(e.config[k] for k in ("embed_dim", "width", "layers", "patch_size", "image_size")), e.name
    openai = W.WEIGHTS["clip-vit-b16-openai"]
    assert openai.url.endswith("/" + openai.files[0]) and openai.sha256 in openai.url
    hiera_default_stages = inspect.signature(Hiera.__init__).parameters["stages"].default
    for e in (e for e in W.WEIGHTS.values() if e.family == "sam2"):
        assert HF_MODEL_ID_TO_FILENAMES[e.hf_repo] == (e.config["sam2_config"], e.files[0]), e.name
        trunk = yaml.safe_load((Path(sam2.__file__).parent / e.config["sam2_config"]).read_text())[
            "model"]["image_encoder"]["trunk"]
        assert trunk["embed_dim"] == e.config["hiera_embed_dim"], e.name
        assert tuple(trunk.get("stages", hiera_default_stages)) == e.config["hiera_stages"], e.name
    for e in (e for e in W.WEIGHTS.values() if e.family == "timm"):
        cfg = timm.models.get_pretrained_cfg(e.config["timm"])
        assert cfg.hf_hub_id == e.hf_repo and cfg.input_size[-1] == e.config["img_size"], e.name
        with torch.device("meta"):
            vit = timm.create_model(e.config["timm"], pretrained=False)
        assert vit.patch_embed.patch_size == (e.config["patch_size"],) * 2, e.name
        assert (vit.embed_dim, len(vit.blocks)) == (e.config["embed_dim"], e.config["depth"]), e.name
        meta_files = [f for f in e.files if f in W.KNOWN_FILES]
        assert [W.KNOWN_FILES[f] for f in meta_files] == ([cfg.url] if cfg.url else []), e.name
    for e in W.WEIGHTS.values():
        assert all((ROOT / "notebooks" / f"{stem}.ipynb").is_file() for stem in e.used_by), e.name


# --- every family: official file -> found via $RSLAB_WEIGHTS_DIR -> the right architecture ---------

def test_openai_clip_torchscript_is_found_and_built_with_quick_gelu(official, monkeypatch):
    from rslab.models.maskclip import is_quick_gelu, load_openai_clip

    path = official("clip-vit-b16-openai")
    assert path.name == "ViT-B-16.pt" and W._is_torchscript(path)  # OpenAI's container
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(path.parent))
    assert W.find("clip-vit-b16-openai") == path.resolve()
    model = W.load("clip-vit-b16-openai", verify=False)
    assert is_quick_gelu(model)
    assert len(model.visual.transformer.resblocks) == 12 and model.visual.conv1.kernel_size == (16, 16)
    assert model.text_projection.shape == (512, 512)
    _assert_loaded_from(model, W.read_checkpoint(path))
    # the random file cannot match OpenAI's published sha256: refused unless the check is skipped
    with pytest.raises(ValueError) as err:
        W.load("clip-vit-b16-openai")
    msg = str(err.value)
    assert str(path.resolve()) in msg and W.WEIGHTS["clip-vit-b16-openai"].sha256 in msg
    assert W.file_sha256(path) in msg
    monkeypatch.setenv("RSLAB_SKIP_SHA256", "1")
    clip, tok = load_openai_clip(path)  # MaskCLIP's loader: OpenAI's own file accepted
    assert is_quick_gelu(clip) and tok is not None
    with pytest.raises(ValueError, match="QuickGELU"):
        load_openai_clip(path, quick_gelu=False)
    with pytest.raises(ValueError, match="QuickGELU"):
        W.load("clip-vit-b16-openai", quick_gelu=False)


def test_openai_clip_open_clip_layout_in_its_hub_folder(official, monkeypatch):
    from rslab.models.maskclip import is_quick_gelu

    path = official("clip-vit-b16-openai", "open_clip_pytorch_model.bin")
    assert path.parent.name == "timm--vit_base_patch16_clip_224.openai"
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(path.parent.parent))
    assert W.find("clip-vit-b16-openai") == path.resolve()
    model = W.load("clip-vit-b16-openai")  # sha256 applies to ViT-B-16.pt only: nothing to check here
    assert is_quick_gelu(model)
    _assert_loaded_from(model, W.read_checkpoint(path))


def test_laion_clip_is_plain_gelu_and_generic_names_are_not_taken_loose(official, monkeypatch, tmp_path):
    from rslab.models.maskclip import is_quick_gelu

    path = official("clip-vit-b16-laion2b")
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "open_clip_model.safetensors").symlink_to(path)
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(loose))
    with pytest.raises(FileNotFoundError):  # a generic name loose in a shared folder is ambiguous
        W.find("clip-vit-b16-laion2b")
    assert W.find("clip-vit-b16-laion2b", path=loose) == path.resolve()  # an explicit folder is not
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(path.parent.parent))
    model = W.load("clip-vit-b16-laion2b")
    assert not is_quick_gelu(model)
    _assert_loaded_from(model, W.read_checkpoint(path))


def _hiera(model):
    trunk = model.image_encoder.trunk
    return trunk.patch_embed.proj.out_channels, len(trunk.blocks)


SAM2_DEFAULT = ["sam2.1-hiera-tiny"]
SAM2_SLOW = ["sam2.1-hiera-small", "sam2.1-hiera-base-plus", "sam2.1-hiera-large"]


@pytest.mark.parametrize("name", SAM2_DEFAULT + [pytest.param(n, marks=pytest.mark.slow) for n in SAM2_SLOW])
def test_sam2_checkpoint_loads_into_its_hiera(official, monkeypatch, name):
    entry = W.get_entry(name)
    path = official(name)
    assert path.name == entry.files[0]
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(path.parent))
    model = W.load(name)
    assert _hiera(model) == (entry.config["hiera_embed_dim"], sum(entry.config["hiera_stages"]))
    _assert_loaded_from(model, torch.load(path, weights_only=True)["model"])


@pytest.mark.parametrize("name,file", [
    ("dinov2-vitb14", None), ("dinov2-vitb14", "dinov2_vitb14_pretrain.pth"),
    pytest.param("dinov2-vitl14", None, marks=pytest.mark.slow),
    pytest.param("dinov3-vitl16-sat493m", None, marks=pytest.mark.slow)])
def test_dino_loads_through_timm(official, monkeypatch, name, file):
    entry = W.get_entry(name)
    path = official(name, file)
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(path.parent if file else path.parent.parent))
    assert W.find(name) == path.resolve()
    model = W.load(name)
    assert model.patch_embed.patch_size == (entry.config["patch_size"],) * 2
    assert model.embed_dim == entry.config["embed_dim"] and len(model.blocks) == entry.config["depth"]
    written = W.read_checkpoint(path)
    assert torch.equal(model.blocks[0].attn.qkv.weight, written["blocks.0.attn.qkv.weight"].float())


@pytest.mark.parametrize("name", ["beit3-base", pytest.param("beit3-large", marks=pytest.mark.slow)])
def test_beit3_release_loads_into_the_union_encoder(official, monkeypatch, name):
    from rslab.models.beit3 import BEiT3

    entry = W.get_entry(name)
    path = official(name)
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(path.parent))
    model = W.load(name)
    assert isinstance(model, BEiT3) and len(model.encoder.layers) == entry.config["depth"]
    assert model.cfg.embed_dim == entry.config["embed_dim"]
    written = torch.load(path, weights_only=True)["model"]
    assert all(k.startswith("beit3.") for k in written)
    _assert_loaded_from(model, written, key_map=lambda k: k[len("beit3."):])
    with torch.no_grad():
        out = model(text_ids=torch.tensor([[0, 100, 2]]))
    assert out["tokens"].shape == (1, 3, entry.config["embed_dim"]) and out["split"] == 0


def test_minilm_entry_is_always_found_and_a_written_copy_wins(official, monkeypatch):
    assert (W.find("minilm-l6-v2") / "config.json").is_file()  # the packaged copy
    folder = official("minilm-l6-v2")
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(folder.parent))
    assert W.find("minilm-l6-v2") == folder.resolve()
    model = W.load("minilm-l6-v2")
    assert model.config.hidden_size == 384


# --- errors --------------------------------------------------------------------------------------

def test_wrong_layouts_are_refused_naming_the_file(official, tmp_path):
    sam = official("sam2.1-hiera-tiny")
    with pytest.raises(ValueError) as err:
        W.load("clip-vit-b16-openai", path=sam, verify=False)
    assert str(sam.resolve()) in str(err.value) and "SAM2 checkpoint" in str(err.value)
    dino = official("dinov2-vitb14")
    with pytest.raises(ValueError, match="SAM 2.1 checkpoint") as err:
        W.load("sam2.1-hiera-tiny", path=dino)
    assert str(dino.resolve()) in str(err.value)
    with pytest.raises(ValueError, match="BEiT-3 release") as err:
        W.load("beit3-base", path=dino)
    assert str(dino.resolve()) in str(err.value)
    # a state dict missing keys
    sd = W.read_checkpoint(dino)
    sd.pop("blocks.3.attn.qkv.weight")
    broken = tmp_path / "broken" / "model.safetensors"
    broken.parent.mkdir()
    from safetensors.torch import save_file
    save_file(sd, str(broken))
    with pytest.raises(ValueError, match=r"keys missing \(first: blocks.3.attn.qkv.weight") as err:
        W.load("dinov2-vitb14", path=broken)
    assert str(broken.resolve()) in str(err.value)
    # the right family, the wrong size: shapes are named
    small = tmp_path / "small.pt"
    sd = torch.load(sam, weights_only=True)
    torch.save(sd, small)
    with pytest.raises(ValueError, match="sam2.1-hiera-large.*(missing|shape)") as err:
        W.load("sam2.1-hiera-large", path=small)
    assert str(small.resolve()) in str(err.value)
    # not a weights file at all
    junk = tmp_path / "ViT-B-16.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read it") as err:
        W.load("clip-vit-b16-openai", path=junk, verify=False)
    assert str(junk.resolve()) in str(err.value)


def test_sha256_match_and_mismatch(tmp_path, monkeypatch):
    f = tmp_path / "sam2.1_hiera_tiny.pt"
    f.write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    assert W.file_sha256(f) == digest
    entry = dataclasses.replace(W.WEIGHTS["sam2.1-hiera-tiny"], sha256=digest)
    monkeypatch.setitem(W.WEIGHTS, entry.name, entry)
    assert W.verify_sha256(entry.name, f) is True
    assert W.verify_sha256(entry.name, tmp_path / "other_name.pt") is False  # only files[0] is published
    bad = dataclasses.replace(entry, sha256="0" * 64)
    monkeypatch.setitem(W.WEIGHTS, entry.name, bad)
    with pytest.raises(ValueError, match=f"{f}: sha256 mismatch.*expected 0{{64}}, got {digest}"):
        W.verify_sha256(entry.name, f)
    monkeypatch.setenv("RSLAB_SKIP_SHA256", "1")
    assert W.verify_sha256(entry.name, f) is False


def test_require_lists_every_missing_entry_in_one_error(tmp_path, monkeypatch, official):
    wdir = tmp_path / "w"
    wdir.mkdir()
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(wdir))
    present = official("sam2.1-hiera-tiny")
    (wdir / present.name).symlink_to(present)
    names = ["sam2.1-hiera-tiny", "clip-vit-b16-openai", "sam2.1-hiera-large", "beit3-large", "dinov2-vitb14"]
    with pytest.raises(FileNotFoundError) as err:
        W.require(names)
    msg = str(err.value)
    assert msg.startswith("4 of 5 required weights missing")
    for n in names[1:]:
        e = W.get_entry(n)
        assert f"weights {n!r}" in msg and e.files[0] in msg
    for where in (wdir / "ViT-B-16.pt", wdir / "sam2.1_hiera_large.pt", wdir / "beit3_large_patch16_224.pth",
                  wdir / "timm--vit_base_patch14_dinov2.lvd142m" / "model.safetensors"):
        assert str(where) in msg
    for url in (W.OPENAI_VIT_B16_URL, W.KNOWN_FILES["sam2.1_hiera_large.pt"],
                W.KNOWN_FILES["beit3_large_patch16_224.pth"]):
        assert url in msg
    assert "weights 'sam2.1-hiera-tiny'" not in msg
    assert W.require(["sam2.1-hiera-tiny"]) == {"sam2.1-hiera-tiny": (wdir / present.name).resolve()}
    with pytest.raises(ValueError, match=r"unknown weights name\(s\) \['nope'\]"):
        W.require(["sam2.1-hiera-tiny", "nope"])
    with pytest.raises(FileNotFoundError, match="path given does not exist"):
        W.find("beit3-base", path=tmp_path / "absent")


def test_find_order_explicit_path_then_env_dir_then_cache(tmp_path, monkeypatch, official):
    src = official("sam2.1-hiera-tiny")
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / src.name).symlink_to(src)
    assert W.find("sam2.1-hiera-tiny") == src.resolve()  # via the torch hub cache
    for sub in ("env", "env/sam2.1-hiera-tiny", "mine"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    env_file = tmp_path / "env" / "sam2.1-hiera-tiny" / src.name  # the entry's own sub-folder
    env_file.write_bytes(b"x")
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(tmp_path / "env"))
    assert W.find("sam2.1-hiera-tiny") == env_file.resolve()
    mine = tmp_path / "mine" / "custom.pt"
    mine.write_bytes(b"y")
    assert W.find("sam2.1-hiera-tiny", path=mine) == mine.resolve()


def test_beit3_companion_tokenizer_file_is_found_beside_the_weights(tmp_path, monkeypatch):
    wdir = tmp_path / "w"
    (wdir / "beit3-base").mkdir(parents=True)
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(wdir))
    with pytest.raises(FileNotFoundError, match="beit3.spm"):
        W.find_companion("beit3-base")
    spm = wdir / "beit3-base" / "beit3.spm"
    spm.write_bytes(b"spm")
    assert W.find_companion("beit3-base") == spm.resolve()
    with pytest.raises(ValueError, match="no companion"):
        W.find_companion("dinov2-vitb14")


# --- the BEiT-3 module (multiway semantics) ------------------------------------------------------

@pytest.mark.parametrize("name", ["beit3-base", "beit3-large"])
def test_beit3_layout_matches_timms_reading_of_the_release(name):
    """timm converts the same release files into its vision-only ViT: our parameter names and shapes,
    'beit3.'-prefixed, give every tensor of timm's model except its classifier (fc_norm, head)."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    from rslab.models.beit3 import BEiT3

    with torch.device("meta"):
        ours = BEiT3(W.beit3_config(name))
        vit = timm.create_model(name.replace("-", "_") + "_patch16_224", pretrained=False)
    release = {"model": {f"beit3.{k}": v for k, v in ours.state_dict().items()}}
    converted, target = checkpoint_filter_fn(release, vit), vit.state_dict()
    assert {k.split(".")[0] for k in set(target) - set(converted)} == {"fc_norm", "head"}
    assert all(converted[k].shape == v.shape for k, v in target.items() if k in converted)
    with pytest.raises(ValueError, match="not a BEiT-3 release"):
        W.beit3_config("dinov2-vitb14")


def test_beit3_multiway_routing_and_padding():
    from rslab.models.beit3 import BEiT3, BEiT3Config

    torch.manual_seed(0)
    cfg = BEiT3Config(img_size=32, patch_size=16, vocab_size=50, embed_dim=32, depth=2, heads=4, mlp_dim=64,
                      max_text_positions=16)
    model = BEiT3(cfg).eval()
    img, ids = torch.randn(2, 3, 32, 32), torch.randint(3, 50, (2, 5))
    with torch.no_grad():
        joint = model(images=img, text_ids=ids)
        assert joint["split"] == 5 and joint["tokens"].shape == (2, 10, 32)  # 1 CLS + 4 patches, 5 words
        # changing a padded word leaves every other token unchanged; an unpadded one does not
        pad = torch.zeros(2, 5, dtype=torch.bool)
        pad[:, -1] = True
        a = model(images=img, text_ids=ids, text_padding_mask=pad)["tokens"]
        ids2 = ids.clone()
        ids2[:, -1] = 1
        b = model(images=img, text_ids=ids2, text_padding_mask=pad)["tokens"]
        assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)
        c = model(images=img, text_ids=ids2)["tokens"]
        assert not torch.allclose(joint["tokens"][:, :5], c[:, :5], atol=1e-4)
        # image tokens use the vision experts A: zeroing the text experts B leaves image-only output alone
        alone = model(images=img)["tokens"]
        for layer in model.encoder.layers:
            torch.nn.init.zeros_(layer.ffn.B.fc1.weight)
        assert torch.equal(alone, model(images=img)["tokens"])
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        model(images=torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="images, text_ids or both"):
        model()


# --- CLI and book page -----------------------------------------------------------------------------

def _cli(*args, env_extra=None, tmp_path=None):
    import os
    env = {**os.environ, **(env_extra or {})}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "rslab.cli", "weights", *args], capture_output=True,
                          text=True, timeout=180, env=env, cwd=ROOT)


def test_cli_list_find_and_check(tmp_path, official):
    wdir = tmp_path / "w"
    wdir.mkdir()
    src = official("sam2.1-hiera-tiny")
    (wdir / src.name).symlink_to(src)
    proc = _cli("list", env_extra={"RSLAB_WEIGHTS_DIR": str(wdir)})
    assert proc.returncode == 0, proc.stderr
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines()[2:]}
    assert set(lines) == set(W.WEIGHTS)
    assert "found" in lines["sam2.1-hiera-tiny"] and "missing" in lines["sam2.1-hiera-large"]
    assert "sam2.1_hiera_large.pt" in lines["sam2.1-hiera-large"] and "04" in lines["sam2.1-hiera-large"]
    proc = _cli("find", "sam2.1-hiera-large", env_extra={"RSLAB_WEIGHTS_DIR": str(wdir)})
    assert proc.returncode == 2 and str(wdir / "sam2.1_hiera_large.pt") in proc.stderr
    proc = _cli("check", str(wdir), "--name", "sam2.1-hiera-tiny", "sam2.1-hiera-large")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 of 2 found, 1 verified, 0 failed" in proc.stdout and "loads (" in proc.stdout
    (wdir / "sam2.1_hiera_large.pt").symlink_to(src)  # the tiny file under the large name: refused
    proc = _cli("check", str(wdir), "--name", "sam2.1-hiera-tiny", "sam2.1-hiera-large")
    assert proc.returncode == 1 and "1 failed" in proc.stdout and "sam2.1_hiera_large.pt" in proc.stdout


def test_book_page_is_generated_from_the_registry():
    page = ROOT / "book" / "weights.md"
    assert page.read_text() == W.registry_markdown(), (
        "book/weights.md is stale: run "
        "python -c 'from rslab.weights import write_registry_page; write_registry_page()'")
    text = page.read_text()
    for e in W.WEIGHTS.values():
        assert f"## `{e.name}`" in text
        assert e.url in text if e.family != "standin" else f"`rslab pretrain {e.name}`" in text
    assert W.WEIGHTS["clip-vit-b16-openai"].sha256 in text
    assert "weights" in (ROOT / "book" / "_toc.yml").read_text()


def test_random_state_dict_is_seeded():
    tmpl = {"a": torch.empty(3, 4, device="meta"), "n": torch.empty(2, dtype=torch.long, device="meta")}
    x, y, z = random_state_dict(tmpl, 0), random_state_dict(tmpl, 0), random_state_dict(tmpl, 1)
    assert torch.equal(x["a"], y["a"]) and not torch.equal(x["a"], z["a"]) and x["n"].dtype == torch.long
    assert 0.005 < x["a"].std() < 0.05


def test_beit3_tokenizer_reads_the_spm_with_xlmr_ids(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    from rslab.models.beit3 import beit3_tokenizer
    from rslab.weights_testing import write_test_spm

    path = write_test_spm(tmp_path / "beit3.spm")
    tok = beit3_tokenizer(path)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    text = "the building near the river"
    ids = tok([text, "car"])["input_ids"]
    assert ids[0] == [0] + [i + 1 for i in sp.encode(text)] + [2]  # <s> ... </s>, fairseq offset 1
    assert tok.pad_token_id == 1 and tok.decode(ids[0]) == text
    assert 3 in tok("§", add_special_tokens=False)["input_ids"]  # sentencepiece's <unk> is XLM-R's 3
    assert all(i != 1 for i in ids[0])
    bad = tmp_path / "bad.spm"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a sentencepiece model"):
        beit3_tokenizer(bad)
    with pytest.raises(FileNotFoundError, match="beit3.spm"):
        beit3_tokenizer(tmp_path / "missing" / "beit3.spm")


def test_require_with_companions_reports_the_missing_tokenizer(tmp_path, monkeypatch):
    wdir = tmp_path / "w"
    wdir.mkdir()
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(wdir))
    (wdir / "beit3_base_patch16_224.pth").write_bytes(b"x")  # find() does not read files
    assert W.require(["beit3-base"]) == {"beit3-base": (wdir / "beit3_base_patch16_224.pth").resolve()}
    with pytest.raises(FileNotFoundError) as err:
        W.require(["beit3-base"], companions=True)
    msg = str(err.value)
    assert "0 of 1 required weights missing (none), 1 companion file(s) missing" in msg
    assert str(wdir / "beit3.spm") in msg and W.KNOWN_FILES["beit3.spm"] in msg
    (wdir / "beit3.spm").write_bytes(b"spm")
    assert "beit3-base" in W.require(["beit3-base"], companions=True)


def test_download_only_when_allowed_then_found(tmp_path, monkeypatch):
    calls = []

    def fake_download(name, kind):  # what the library downloaders do: fill their cache
        calls.append((name, kind))
        target = W.torch_checkpoints_dir() / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")

    monkeypatch.setattr(W, "_download", fake_download)
    with pytest.raises(FileNotFoundError, match="allow_download=True"):
        W.find("beit3-large")
    assert calls == []
    path = W.find("beit3-large", allow_download=True)
    assert calls == [("beit3_large_patch16_224.pth", "file")] and path.name == "beit3_large_patch16_224.pth"

    def offline(name, kind):
        raise OSError("no network")

    monkeypatch.setattr(W, "_download", offline)
    with pytest.raises(FileNotFoundError, match="download attempt failed: OSError: no network"):
        W.find("sam2.1-hiera-small", allow_download=True)
