"""Torch datasets over the synthetic world (what every notebook trains on)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from rslab.data.sample import Sample
from rslab.data.synthetic import SyntheticWorld
from rslab.data.transforms import sample_to_tensors

__all__ = ["SyntheticSegmentation"]


class SyntheticSegmentation(Dataset):
    """Scenes ``world.scene(i)`` for ``i`` in ``indices`` as dicts of tensors.

    Each item holds the keys of :func:`rslab.data.transforms.sample_to_tensors` (``optical``,
    ``sar``, ``sar_db``, ``sar_valid``, ``labels``, ``valid``, ``instances``) plus ``index`` and
    ``style`` (ints) and ``caption`` (str). ``labels`` are leaf ids, or class ids at tree ``level``
    when given (SkySense-VITA's SGA target c_i^(l), via ``tree.level_lut``).

    referring: ``False`` (default), ``"first"`` or ``"random"`` adds one referring expression per
    item: ``ref_text`` (str), ``ref_mask`` (H, W) bool, ``ref_class`` (str); a scene without one
    gives ``""`` and an empty mask. ``"random"`` draws with ``torch``'s RNG (so it changes per epoch).
    cache: keep generated Samples in memory (before the transform), trading RAM (~1 MB per
    256 px scene) for the ~15 ms of generation per item.
    """

    def __init__(self, world: SyntheticWorld, indices: int | Sequence[int], transform: Callable | None = None,
                 level: int | None = None, referring: bool | str = False, cache: bool = False, **scene_kwargs):
        if not isinstance(world, SyntheticWorld):
            raise ValueError(f"world must be a SyntheticWorld, got {type(world).__name__}.")
        if isinstance(indices, (int, np.integer)):
            indices = range(int(indices))
        self.indices = [int(i) for i in indices]
        if any(i < 0 for i in self.indices):
            raise ValueError("indices must be non-negative scene numbers.")
        if referring not in (False, "first", "random"):
            raise ValueError(f"referring must be False, 'first' or 'random', got {referring!r}.")
        self.world, self.transform, self.referring = world, transform, referring
        self.tree = world.tree
        self.level = level if level is None else self.tree._check_level(level)
        self._lut = torch.from_numpy(self.tree.level_lut(level)) if level is not None else None
        self.scene_kwargs = scene_kwargs
        self._cache: dict[int, Sample] | None = {} if cache else None

    @property
    def num_classes(self) -> int:
        return self.tree.num_classes(self.level)

    @property
    def class_names(self) -> list[str]:
        return self.tree.names(self.level)

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, i: int) -> Sample:
        """The untransformed Sample of item ``i``."""
        index = self.indices[i]
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        s = self.world.scene(index, **self.scene_kwargs)
        if self._cache is not None:
            self._cache[index] = s
        return s

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)} scenes")
        s = self.sample(i)
        if self.transform is not None:
            s = self.transform(s)
        item = sample_to_tensors(s)
        if self._lut is not None:
            item["labels"] = self._lut[item["labels"]]
        item["index"] = self.indices[i]
        item["style"] = int(s.meta.get("style", -1))
        item["caption"] = s.caption
        if self.referring:
            H, W = s.shape
            if s.referring:
                k = 0 if self.referring == "first" else int(torch.randint(len(s.referring), ()))
                r = s.referring[k]
                item.update(ref_text=r.text, ref_mask=torch.from_numpy(np.ascontiguousarray(r.mask)),
                            ref_class=r.target_class)
            else:
                item.update(ref_text="", ref_mask=torch.zeros(H, W, dtype=torch.bool), ref_class="")
        return item
