"""Referring remote-sensing segmentation datasets: RRSIS-D and RefSegRS.

Both yield one :class:`Sample` per (image, expression) pair, holding ``optical``
and exactly one :class:`ReferringExpression` whose ``mask`` is the referred
object(s) -- the (image, text, mask) triplet RS2-SAM2 trains and is evaluated on
(metrics: :mod:`rslab.metrics` ``ReferringMeter``).
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..sample import ReferringExpression, Sample
from ._io import IMAGE_SUFFIXES, check_file, check_same_size, read_mask, read_optical
from .checks import binary_mask, check_bands
from .coco_mask import segmentation_to_mask


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that refuses every class: refs files hold only lists/dicts/str/numbers.

    ``pickle.load`` on a downloaded file can run arbitrary code; a refs file never
    needs a class, so any attempt to load one is treated as a corrupt/hostile file.
    """

    def find_class(self, module, name):
        raise ValueError(f"refusing to unpickle {module}.{name}: refs files should only hold plain data.")


def _load_refs(path: Path) -> list[dict]:
    try:
        refs = _PlainDataUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ValueError(f"could not read refs pickle {path}: {e}") from e
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ValueError(f"{path}: expected a pickled list of ref dicts, got {type(refs).__name__}.")
    return refs


def _by_id(entries, key: str, path: Path) -> dict:
    """COCO entries by ``id``; a missing or repeated id is an error (lookups would pick one silently)."""
    out: dict = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise ValueError(f"{path}: {key}[{i}] has no 'id'.")
        if entry["id"] in out:
            raise ValueError(f"{path}: {key} id {entry['id']!r} appears more than once; ids must be unique.")
        out[entry["id"]] = entry
    return out


class RRSISD(Sequence):
    """RRSIS-D (Liu et al., "Rotated multi-scale interaction network", CVPR 2024).

    RefCOCO-style layout (the ``refer`` API's): a folder with

    - ``refs(unc).p``: pickled list of refs, each ``{"ref_id", "image_id", "ann_id",
      "split", "category_id", "sentences": [{"raw", "sent", "sent_id", ...}, ...]}``;
    - ``instances.json``: COCO ``images`` (``id``, ``file_name``, ``height``,
      ``width``), ``annotations`` (``id``, ``segmentation`` as polygons or RLE,
      ``category_id``) and ``categories``;
    - images in ``image_dir`` (default: the first of ``root/images``,
      ``root/JPEGImages``, ``root/../images/rrsisd/JPEGImages`` that exists).

    Each item is one sentence of one ref in ``split``: ``optical`` (3, H, W) in [0, 1],
    ``referring[0]`` = ``ReferringExpression(text, mask, target_class=category name,
    instance_id=ann_id)``. ``text`` is the sentence's ``raw`` string (``sent`` when
    absent). Masks are decoded here without pycocotools (see :mod:`.coco_mask`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        image_dir: str | Path | None = None,
        refs_file: str = "refs(unc).p",
        instances_file: str = "instances.json",
    ) -> None:
        self.root = Path(root)
        self.split = split
        refs = _load_refs(check_file(self.root / refs_file, "RRSIS-D refs pickle"))
        instances_path = check_file(self.root / instances_file, "RRSIS-D instances.json")
        try:
            instances = json.loads(instances_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"could not parse {instances_path}: {e}") from e
        for key in ("images", "annotations"):
            if key not in instances:
                raise ValueError(f"{instances_path}: missing COCO key {key!r}.")
        self.images = _by_id(instances["images"], "images", instances_path)
        self.annotations = _by_id(instances["annotations"], "annotations", instances_path)
        self.categories = {c["id"]: c["name"] for c in instances.get("categories", [])}

        splits = sorted({str(r.get("split")) for r in refs})
        self.refs = [r for r in refs if r.get("split") == split]
        if not self.refs:
            raise ValueError(f"no refs with split {split!r} in {self.root / refs_file}; splits present: {splits}.")
        self.items: list[tuple[dict, dict]] = []
        for ref in self.refs:
            for key in ("image_id", "ann_id", "sentences"):
                if key not in ref:
                    raise ValueError(f"ref {ref.get('ref_id')} in {refs_file} lacks {key!r}.")
            if ref["image_id"] not in self.images:
                raise ValueError(f"ref {ref.get('ref_id')}: image_id {ref['image_id']} not in {instances_file}.")
            if ref["ann_id"] not in self.annotations:
                raise ValueError(f"ref {ref.get('ref_id')}: ann_id {ref['ann_id']} not in {instances_file}.")
            for sentence in ref["sentences"]:
                self.items.append((ref, sentence))

        if image_dir is None:
            candidates = [self.root / "images", self.root / "JPEGImages",
                          self.root.parent / "images" / "rrsisd" / "JPEGImages"]
            image_dir = next((c for c in candidates if c.is_dir()), None)
            if image_dir is None:
                raise FileNotFoundError(
                    f"RRSIS-D image folder not found; looked in {[str(c) for c in candidates]}. Pass image_dir=."
                )
        self.image_dir = Path(image_dir)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} expressions")
        ref, sentence = self.items[index]
        info = self.images[ref["image_id"]]
        image_path = self.image_dir / info["file_name"]
        optical = read_optical(check_file(image_path, "RRSIS-D image"))
        check_bands(optical.shape[0], (3, 4), image_path, "RRSIS-D image", ("R", "G", "B"))
        if optical.shape[0] == 4:  # drop alpha/extra band
            optical = optical[:3]
        ann = self.annotations[ref["ann_id"]]
        h, w = int(info.get("height", optical.shape[1])), int(info.get("width", optical.shape[2]))
        check_same_size(optical.shape[1:], (h, w), image_path, f"instances.json image {info['id']}")
        where = f"{self.root / 'instances.json'} annotation {ref['ann_id']} (ref {ref.get('ref_id')})"
        if "segmentation" not in ann:
            raise ValueError(f"{where}: no 'segmentation' field.")
        mask = segmentation_to_mask(ann["segmentation"], h, w, where)
        if not mask.any():
            raise ValueError(f"{where}: the segmentation decodes to an empty mask; a referred object needs pixels.")
        text = sentence.get("raw", sentence.get("sent", ""))
        category = self.categories.get(ann.get("category_id", ref.get("category_id")), "")
        expr = ReferringExpression(text=str(text).strip(), mask=mask, target_class=category,
                                   instance_id=int(ref["ann_id"]))
        return Sample(
            optical=optical,
            referring=[expr],
            meta={"source": str(image_path), "dataset": "rrsis_d", "split": self.split,
                  "ref_id": ref.get("ref_id"), "image_id": ref["image_id"], "sent_id": sentence.get("sent_id")},
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]


class RefSegRS(Sequence):
    """RefSegRS (Yuan et al., "RRSIS: Referring Remote Sensing Image Segmentation", TGRS 2024).

    Layout of the released dataset (as read by the authors' loader)::

        root/output_phrase_{train,val,test}.txt   one "image_id phrase words ..." per line
        root/images/{image_id}.tif                 512 x 512 RGB
        root/masks/{image_id}.tif                  greyscale; foreground = value > 50

    The first whitespace-separated token is the image id, the rest is the phrase.
    The same image id can appear on several lines (several phrases). Files with
    ``.png``/``.jpg`` suffixes are accepted too (two files for one id are an error). A 0/1 mask
    is read as such with a warning (never thresholded into an empty mask); a mask with no
    foreground is an error. Items: ``optical`` (3, H, W) in [0, 1]
    and one ``ReferringExpression(text, mask)``; ``target_class`` is left empty
    because the release has no class field.
    """

    FOREGROUND_THRESHOLD = 50

    def __init__(self, root: str | Path, split: str = "test") -> None:
        self.root = Path(root)
        self.split = split
        list_path = check_file(self.root / f"output_phrase_{split}.txt", f"RefSegRS {split} phrase list")
        self.items: list[tuple[str, str]] = []
        for line_no, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.strip().split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{list_path} line {line_no}: expected 'image_id phrase...', got {line!r}.")
            self.items.append((parts[0], " ".join(parts[1:])))
        if not self.items:
            raise ValueError(f"{list_path} holds no expressions.")
        for sub in ("images", "masks"):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(f"RefSegRS folder {self.root / sub} not found.")

    def _find(self, sub: str, image_id: str) -> Path:
        found = [self.root / sub / f"{image_id}{suffix}" for suffix in IMAGE_SUFFIXES]
        found = [p for p in found if p.is_file()]
        if len(found) > 1:
            raise ValueError(f"{len(found)} files for id {image_id!r} in {self.root / sub}: "
                             f"{[p.name for p in found]}; keep one so the pairing does not depend on suffix order.")
        if found:
            return found[0]
        raise FileNotFoundError(f"no {sub[:-1]} for id {image_id!r} in {self.root / sub} (tried {IMAGE_SUFFIXES}).")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} expressions")
        image_id, phrase = self.items[index]
        image_path, mask_path = self._find("images", image_id), self._find("masks", image_id)
        optical = read_optical(image_path)
        check_bands(optical.shape[0], (3, 4), image_path, "RefSegRS image", ("R", "G", "B"))
        optical = optical[:3]
        raw, _palette = read_mask(mask_path)
        raw = raw.astype(np.float32)
        if raw.ndim == 3:  # colour-saved mask: ITU-R 601 luma, as OpenCV's greyscale read
            raw = 0.299 * raw[..., 0] + 0.587 * raw[..., 1] + 0.114 * raw[..., 2]
        check_same_size(optical.shape[1:], raw.shape, image_path, mask_path)
        mask = binary_mask(raw, mask_path, self.FOREGROUND_THRESHOLD)
        if not mask.any():
            raise ValueError(f"{mask_path}: mask has no foreground pixel (values {np.unique(raw)[:6].tolist()}); "
                             f"the phrase {phrase!r} refers to nothing. Is the mask file right?")
        return Sample(
            optical=optical,
            referring=[ReferringExpression(text=phrase, mask=mask)],
            meta={"source": str(image_path), "label_source": str(mask_path), "dataset": "refsegrs",
                  "split": self.split, "image_id": image_id},
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]
