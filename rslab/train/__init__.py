"""The training engine (``accelerate`` underneath): ``Trainer`` + ``TrainConfig``, the warm-up +
cosine schedule, the EMA teacher, checkpoints that resume exactly, and the history/plots.

See ``book/training.md`` (the book's "Training" page) for the design and multi-GPU use.
"""

from .checkpoint import check_state_dict_compatible, find_resumable, list_checkpoints, load_weights, verify_checkpoint
from .data import auto_num_workers, make_loader
from .ema import EMA, cosine_momentum
from .engine import NonFiniteLossError, RunEstimate, TrainConfig, Trainer, default_optimizer
from .history import load_history, plot_history
from .isolated import fit_preserving_rng
from .schedule import constant_with_warmup, cosine_with_warmup, warmup_cosine_factor

__all__ = [
    "Trainer", "TrainConfig", "fit_preserving_rng", "NonFiniteLossError", "default_optimizer", "RunEstimate",
    "make_loader", "auto_num_workers",
    "EMA", "cosine_momentum",
    "cosine_with_warmup", "constant_with_warmup", "warmup_cosine_factor",
    "load_history", "plot_history",
    "load_weights", "list_checkpoints", "find_resumable", "verify_checkpoint", "check_state_dict_compatible",
]
