"""Shared test settings.

pytest-xdist runs two workers on a 2-core machine; each worker (and each notebook kernel it
starts) uses one thread, since oversubscribed OpenMP threads slow torch down by an order of
magnitude rather than speeding it up.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
