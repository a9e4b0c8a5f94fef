"""Training and evaluation recipes of the notebooks: data + model + loss + ``rslab.train``.

Dependencies point one way: ``data -> models -> losses/curriculum -> train -> recipes -> notebooks``.
"""
