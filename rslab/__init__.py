"""rslab: a notebook-first lab for multi-modal remote sensing segmentation.

Dependencies point one way, from the notebooks down to the data: ``notebooks -> recipes ->
train / models -> losses, curriculum, metrics, viz, weights -> data -> io``. Recipes hold every
loop (training, selection, scoring) and bring a model and the engine (``train``, which knows no
model) together. ``book/architecture.md`` lists what each layer may import and where each paper
equation lives; ``tests/test_layers.py`` checks the imports.
"""

__version__ = "0.1.0"
