"""mmsegmentation-style folders: ``img_dir/[split/]*`` beside ``ann_dir/[split/]*``.

This is the layout mmsegmentation's converters write for LoveDA, ISPRS Potsdam and
ISPRS Vaihingen (and the one ``real_samples/loveda`` uses). Images and masks pair
by file stem: ``img_dir/train/42.png`` <-> ``ann_dir/train/42.png``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..sample import Sample
from ._io import IMAGE_SUFFIXES, check_same_size, read_label_raster, read_optical
from .labels import ISPRS_CLASSES, LOVEDA_CLASSES, decode_isprs, decode_loveda

#: encoding name -> (class names, label decoder, ground sampling distance in m, band names)
ENCODINGS = {
    "loveda": (LOVEDA_CLASSES, decode_loveda, 0.3, ("R", "G", "B")),
    "potsdam": (ISPRS_CLASSES, decode_isprs, 0.05, ("R", "G", "B")),
    # mmseg's Vaihingen tiles are the false-colour IRRG orthophotos (NIR, R, G).
    "vaihingen": (ISPRS_CLASSES, decode_isprs, 0.09, ("NIR", "R", "G")),
}


class MMSegFolder(Sequence):
    """Image/mask pairs of an mmseg-style folder, read lazily as :class:`Sample`.

    Args:
        root: folder holding ``img_dir/`` and ``ann_dir/``.
        split: optional subfolder (``"train"``, ``"val"``, ``"test"``) under both.
        encoding: how masks are coded, which fixes the class ids:

            - ``"loveda"``: raw LoveDA PNG, 0 no-data -> 255, 1..7 -> 0..6
              (:data:`LOVEDA_CLASSES`: background, building, road, water, barren,
              forest, agriculture).
            - ``"potsdam"`` / ``"vaihingen"``: either the official RGB colour code
              (impervious (255,255,255), building (0,0,255), low vegetation
              (0,255,255), tree (0,255,0), car (255,255,0), clutter (255,0,0); black
              boundary -> 255) or mmseg's converted single-band PNG (0 ignore, 1..6
              classes; we apply mmseg's ``reduce_zero_label`` so ids are 0..5 and 0 ->
              255). The form is detected per file from its band count.
              Ids follow :data:`ISPRS_CLASSES`.
        with_labels: ``False`` for unlabelled splits (LoveDA test): ``ann_dir`` is not read.

    Each Sample has ``optical`` (C, H, W) float32 in [0, 1] (8-bit / 255), ``labels``
    (H, W) int64, and ``meta`` with ``source``, ``label_source``, ``dataset``,
    ``class_names``, ``gsd_m`` and ``bands``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        encoding: str = "loveda",
        with_labels: bool = True,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; choose one of {sorted(ENCODINGS)}.")
        self.root = Path(root)
        self.split = split
        self.encoding = encoding
        self.class_names, self._decode, self.gsd_m, self.bands = ENCODINGS[encoding]
        self.with_labels = with_labels

        img_dir = self.root / "img_dir"
        ann_dir = self.root / "ann_dir"
        if split is not None:
            img_dir, ann_dir = img_dir / split, ann_dir / split
        if not img_dir.is_dir():
            raise FileNotFoundError(
                f"image folder not found: {img_dir}; an mmseg-style root holds img_dir/[split/] and ann_dir/[split/]."
            )
        images = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}.")
        self.images: list[Path] = images
        self.masks: list[Path | None] = [None] * len(images)
        if with_labels:
            if not ann_dir.is_dir():
                raise FileNotFoundError(
                    f"mask folder not found: {ann_dir}; pass with_labels=False for an unlabelled split."
                )
            by_stem = {p.stem: p for p in ann_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
            missing = [p.name for p in images if p.stem not in by_stem]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image(s) in {img_dir} have no mask in {ann_dir} (same file stem): {missing[:5]}"
                )
            self.masks = [by_stem[p.stem] for p in images]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images in {self.root}")
        image_path, mask_path = self.images[index], self.masks[index]
        optical = read_optical(image_path)
        labels = None
        if mask_path is not None:
            raw = read_label_raster(mask_path)
            raw_hw = raw.shape[-2:] if raw.ndim == 2 else raw.shape[1:]
            check_same_size(optical.shape[1:], raw_hw, image_path, mask_path)
            if raw.ndim == 3:
                raw = np.moveaxis(raw, 0, -1)  # (H, W, 3) for the colour decoders
            labels = self._decode(raw, mask_path)
        return Sample(
            optical=optical,
            labels=labels,
            meta={
                "source": str(image_path),
                "label_source": str(mask_path) if mask_path else None,
                "dataset": self.encoding,
                "class_names": self.class_names,
                "gsd_m": self.gsd_m,
                "bands": self.bands[: optical.shape[0]],
            },
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"MMSegFolder(root={str(self.root)!r}, split={self.split!r}, encoding={self.encoding!r}, n={len(self)})"
