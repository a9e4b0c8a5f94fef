"""Data: the semantic tree, the synthetic optical/SAR world, real-data readers, transforms.

The common entry points are re-exported here; the readers live in :mod:`rslab.data.readers`.
"""

from rslab.data.sample import IGNORE_INDEX, ReferringExpression, Sample
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.data.tree import SemanticTree, load_tree

__all__ = ["IGNORE_INDEX", "ReferringExpression", "Sample", "SemanticTree", "SyntheticWorld", "WorldConfig",
           "load_tree"]
