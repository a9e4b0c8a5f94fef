"""rslab.weights: resolution order, cache layouts, never downloading unless allowed, and errors
that name every place looked. Tiny fake files in tmp dirs; every cache env var points into tmp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rslab import weights as W


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    for var in ("RSLAB_WEIGHTS_DIR", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "TORCH_HOME"):
        monkeypatch.delenv(var, raising=False)
    dirs = {"home": tmp_path / "home", "hf": tmp_path / "hf", "torch": tmp_path / "torch", "w": tmp_path / "w"}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("HOME", str(dirs["home"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs["hf"]))
    monkeypatch.setenv("TORCH_HOME", str(dirs["torch"]))

    def no_download(name, kind):  # nothing may touch the network unless a test says so
        raise AssertionError(f"download attempted for {name!r} ({kind})")

    monkeypatch.setattr(W, "_download", no_download)
    return dirs


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def hf_snapshot_file(cache: Path, repo: str, rev: str, filename: str, mtime: float | None = None) -> Path:
    path = touch(cache / f"models--{repo.replace('/', '--')}" / "snapshots" / rev / filename, rev)
    if mtime is not None:
        os.utime(path.parent, (mtime, mtime))
    return path


# --- kind="file" -------------------------------------------------------------------------------

def test_file_resolution_order(isolated_caches, monkeypatch, tmp_path):
    name = "sam2.1_hiera_tiny.pt"
    in_torch = touch(isolated_caches["torch"] / "hub" / "checkpoints" / name)
    assert W.find_weights(name) == in_torch.resolve()
    in_env = touch(isolated_caches["w"] / name)
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(isolated_caches["w"]))
    assert W.find_weights(name) == in_env.resolve()  # $RSLAB_WEIGHTS_DIR before the library cache
    explicit = touch(tmp_path / "mine" / "custom.pt")
    assert W.find_weights(name, path=explicit) == explicit.resolve()  # explicit file first
    in_dir = touch(tmp_path / "mine" / name)
    assert W.find_weights(name, path=tmp_path / "mine") == in_dir.resolve()  # explicit folder


def test_missing_file_error_lists_every_place_and_how_to_get_it(isolated_caches, monkeypatch, tmp_path):
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(isolated_caches["w"]))
    with pytest.raises(FileNotFoundError) as err:
        W.find_weights("sam2.1_hiera_small.pt", path=tmp_path)
    msg = str(err.value)
    for place in (tmp_path / "sam2.1_hiera_small.pt", isolated_caches["w"] / "sam2.1_hiera_small.pt",
                  isolated_caches["torch"] / "hub" / "checkpoints" / "sam2.1_hiera_small.pt"):
        assert str(place) in msg
    assert W.KNOWN_FILES["sam2.1_hiera_small.pt"] in msg and "allow_download=True" in msg
    assert msg.index(str(tmp_path / "sam2")) < msg.index(str(isolated_caches["w"]))  # listed in search order


def test_unset_weights_dir_is_mentioned_and_bad_inputs_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"RSLAB_WEIGHTS_DIR \(not set\)"):
        W.find_weights("unknown.bin")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        W.find_weights("x.pt", path=tmp_path / "nope")
    with pytest.raises(ValueError, match="kind"):
        W.find_weights("x.pt", kind="onnx")
    with pytest.raises(ValueError, match="org/model"):
        W.find_weights("just-a-name", kind="hf")
    with pytest.raises(ValueError, match="model/tag"):
        W.find_weights("ViT-B-32", kind="open_clip")


def test_download_only_when_allowed(isolated_caches, monkeypatch):
    name = "sam2.1_hiera_base_plus.pt"
    calls = []

    def fake_download(n, kind):
        calls.append((n, kind))
        touch(W.torch_checkpoints_dir() / n)

    monkeypatch.setattr(W, "_download", fake_download)
    with pytest.raises(FileNotFoundError):
        W.find_weights(name)
    assert calls == []
    found = W.find_weights(name, allow_download=True)
    assert calls == [(name, "file")] and found.parent == W.torch_checkpoints_dir().resolve()


def test_failed_download_is_reported(monkeypatch):
    def offline(n, kind):
        raise OSError("no network")

    monkeypatch.setattr(W, "_download", offline)
    with pytest.raises(FileNotFoundError, match="download attempt failed: OSError: no network"):
        W.find_weights("org/model", kind="hf", allow_download=True)


# --- kind="hf" ---------------------------------------------------------------------------------

def test_hf_cache_prefers_main_revision(isolated_caches):
    cache = isolated_caches["hf"]
    old = hf_snapshot_file(cache, "org/model", "aaa", "config.json", mtime=1_000)
    hf_snapshot_file(cache, "org/model", "bbb", "config.json", mtime=2_000)
    assert W.find_weights("org/model", kind="hf").name == "bbb"  # no refs/main: the newest
    touch(cache / "models--org--model" / "refs" / "main", "aaa\n")
    assert W.find_weights("org/model", kind="hf") == old.parent.resolve()


def test_hf_empty_snapshot_is_not_a_hit_and_hf_home_is_followed(isolated_caches, monkeypatch, tmp_path):
    (isolated_caches["hf"] / "models--org--model" / "snapshots" / "abc").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="models--org--model"):
        W.find_weights("org/model", kind="hf")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    snap = hf_snapshot_file(tmp_path / "hfhome" / "hub", "org/model", "r1", "model.safetensors")
    assert W.find_weights("org/model", kind="hf") == snap.parent.resolve()


@pytest.mark.parametrize("layout", ["org--model", "org/model", "model"])
def test_hf_weights_dir_layouts(isolated_caches, monkeypatch, layout):
    hf_snapshot_file(isolated_caches["hf"], "org/model", "r1", "config.json")  # loses to the env dir
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(isolated_caches["w"]))
    cfg = touch(isolated_caches["w"] / layout / "config.json")
    assert W.find_weights("org/model", kind="hf") == cfg.parent.resolve()


def test_minilm_path_is_the_offline_package_unless_overridden(isolated_caches, monkeypatch):
    path = W.minilm_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(isolated_caches["w"]))
    mine = touch(isolated_caches["w"] / "sentence-transformers--all-MiniLM-L6-v2" / "config.json")
    assert W.minilm_path() == mine.parent.resolve()


# --- kind="timm" and kind="open_clip" (names resolved through the libraries' own configs) -------

def test_timm_hf_cache_then_torch_checkpoint(isolated_caches, monkeypatch):
    name = "resnet18.a1_in1k"  # hf_hub_id timm/resnet18.a1_in1k; legacy URL resnet18_a1_0-d63eafa0.pth
    legacy = touch(isolated_caches["torch"] / "hub" / "checkpoints" / "resnet18_a1_0-d63eafa0.pth")
    assert W.find_weights(name, kind="timm") == legacy.resolve()
    hub = hf_snapshot_file(isolated_caches["hf"], "timm/resnet18.a1_in1k", "r1", "model.safetensors")
    assert W.find_weights(name, kind="timm") == hub.resolve()
    monkeypatch.setenv("RSLAB_WEIGHTS_DIR", str(isolated_caches["w"]))
    flat = touch(isolated_caches["w"] / f"{name}.safetensors")
    assert W.find_weights(name, kind="timm") == flat.resolve()
    with pytest.raises(ValueError, match="timm has no pretrained config"):
        W.find_weights("no_such_model_xyz", kind="timm")


def test_open_clip_hf_cache_and_url_cache(isolated_caches):
    hub = hf_snapshot_file(isolated_caches["hf"], "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "r1",
                           "open_clip_model.safetensors")
    assert W.find_weights("ViT-B-32/laion2b_s34b_b79k", kind="open_clip") == hub.resolve()
    # RN50/openai has a plain URL too: open_clip keeps those in ~/.cache/clip
    url_file = touch(isolated_caches["home"] / ".cache" / "clip" / "RN50.pt")
    assert W.find_weights("RN50:openai", kind="open_clip") == url_file.resolve()
    with pytest.raises(ValueError, match="no pretrained tag"):
        W.find_weights("ViT-B-32/not_a_tag", kind="open_clip")
    with pytest.raises(FileNotFoundError, match="hf download timm/vit_base_patch32_clip_224.openai"):
        W.find_weights("ViT-B-32/openai", kind="open_clip")
