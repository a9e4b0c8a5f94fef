"""rslab: a notebook-first lab for multi-modal remote sensing segmentation.

Dependencies point one way: ``io -> data -> losses/curriculum/metrics/viz/weights -> models ->
recipes -> notebooks`` (``train``, the engine, needs only ``io``; recipes bring model and engine
together). ``book/architecture.md`` lists what each layer may import; ``tests/test_layers.py``
checks it.
"""

__version__ = "0.1.0"
