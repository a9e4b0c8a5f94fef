"""Reference points for referring segmentation (notebook 04): what knowing only the class scores.

The data side (expressions, filters, the dataset) is :mod:`rslab.data.referring`; the metrics are
:class:`rslab.metrics.ReferringMeter` (mIoU, oIoU, Pr@X). This recipe loops over a world's scenes
and scores two class-only oracles with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rslab.data.referring import ReferringFilter
from rslab.metrics import ReferringMeter

__all__ = ["class_oracle_scores"]


def class_oracle_scores(world, indices: Sequence[int], filter: ReferringFilter | None = None) -> dict[str, dict]:
    """How far knowing only the referred *class* gets: two oracles on the world's scenes.

    - ``class_union``: predict every object of the referred class (semantic segmentation);
    - ``largest_of_class``: predict the largest object of the referred class.
    Both are scored with :class:`~rslab.metrics.ReferringMeter` on the expressions ``filter``
    keeps. A model that recognises classes but cannot tell objects of one class apart scores
    about as much as these; the gap to 1 is what spatial, size and colour words are needed for.
    """
    filter = filter or ReferringFilter()
    meters = {"class_union": ReferringMeter(), "largest_of_class": ReferringMeter()}
    for i in indices:
        s = world.scene(int(i))
        inst_class = np.asarray(s.meta.get("instance_class", ()))
        if s.instances is None or not len(inst_class):
            raise ValueError("class_oracle_scores needs scenes with instances and meta['instance_class'] "
                             "(a SyntheticWorld)")
        inst = np.asarray(s.instances)
        for e in (s.referring[j] for j in filter.select(s.referring)):  # the expressions from_world keeps
            ids = np.flatnonzero(inst_class == inst_class[e.instance_id])
            ids = ids[np.isin(ids, np.unique(inst))]
            areas = np.array([(inst == k).sum() for k in ids])
            gt = np.asarray(e.mask, dtype=bool)
            meters["class_union"].update(np.isin(inst, ids), gt)
            meters["largest_of_class"].update(inst == ids[int(np.argmax(areas))], gt)
    if not meters["class_union"].ious:
        raise ValueError("no expressions kept in these scenes; widen the filter")
    return {k: m.compute() for k, m in meters.items()}
