"""A tiny, fully seeded training run used by tests/test_train_resume.py and test_train_ddp.py.

    python tests/train_scripts/tiny_run.py OUT_DIR [--steps 24] [--dropout 0.2] [--batch 8] [--accum 2]
    torchrun --nproc_per_node 2 tests/train_scripts/tiny_run.py OUT_DIR --dropout 0 --batch 16 --accum 1
    python tests/train_scripts/tiny_run.py OUT_DIR --notebook-launcher 2 ...   # as from Jupyter

Prints ``step N`` after every optimiser step (the resume test kills the process on those lines)
and, at the end, writes ``final_rank<R>.safetensors`` with the model (and EMA) weights of
each process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, when run as a plain script
from rslab.train import EMA, TrainConfig, Trainer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=88)
    parser.add_argument("--step-sleep", type=float, default=0.0, help="seconds to pause after each step")
    parser.add_argument("--notebook-launcher", type=int, default=0, metavar="N",
                        help="run through accelerate.notebook_launcher with N processes (the Jupyter path)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.notebook_launcher:
        from accelerate import notebook_launcher

        notebook_launcher(train, args=(args,), num_processes=args.notebook_launcher)
    else:
        train(args)


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)

    # data and model come from their own generator, independent of the training RNG
    g = torch.Generator().manual_seed(1234)
    # default 88 samples / 8 = 11 batches per epoch: epochs end in the middle of an accumulated step
    x = torch.randn(args.samples, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch, shuffle=True)
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.GELU(), torch.nn.Dropout(args.dropout),
                                torch.nn.Linear(32, 2))
    ema = EMA(model, momentum=(0.9, 1.0))

    def loss_fn(m, batch):
        inputs, targets = batch
        logits = m(inputs)
        with torch.no_grad():
            agree = (ema.model(inputs).argmax(1) == targets).float().mean()
        return F.cross_entropy(logits, targets), {"teacher_acc": agree}

    config = TrainConfig(max_steps=args.steps, lr=3e-2, warmup_steps=4, grad_accum_steps=args.accum,
                         clip_grad_norm=0.5, log_every=1, checkpoint_every=args.checkpoint_every, keep_last=2,
                         seed=args.seed, out_dir=args.out_dir, progress=False, cpu=True)
    def announce(trainer, record):
        if "loss" in record:
            print(f"step {record['step']}", flush=True)
            time.sleep(args.step_sleep)  # slows the run so a test can kill it at a chosen point

    trainer = Trainer(model, loss_fn, loader, config, ema=ema, callbacks=[announce])
    trainer.fit(resume=True)
    rank = trainer.accelerator.process_index
    weights = {f"model.{k}": v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
    weights |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in trainer.ema_model.state_dict().items()}
    save_file(weights, str(Path(args.out_dir) / f"final_rank{rank}.safetensors"))
    print("done", flush=True)


if __name__ == "__main__":
    main()
