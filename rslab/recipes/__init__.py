"""Training and evaluation recipes of the notebooks: data + model + loss + ``rslab.train``.

Recipes hold every loop (train, select settings, score); they may import every library layer below
them (data, metrics, losses, curriculum, viz, weights, models, train), and only notebooks import them
(``book/architecture.md``).
"""
