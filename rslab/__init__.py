"""rslab: a notebook-first lab for multi-modal remote sensing segmentation.

Dependencies point one way: ``data -> models -> losses/curriculum -> train -> notebooks``.
"""

__version__ = "0.1.0"
