"""Notebook 03's ``ManualSGD`` against ``torch.optim.SGD``: time of a full-size epoch, and of the update alone.

One epoch = ``helpers.train.train(..., epochs=1)`` on the full-size CIFAR-2 split with the
notebook's configuration (``CONFIG``: batch size, lr, momentum, weight decay, Nesterov), exactly
the code path of notebook 03. The two optimizers alternate (torch, manual, torch, ...) so that a
machine busy with other work slows both alike; medians over ``--repeats`` are compared.

The update alone: ``optimizer.step()`` on the CIFAR-2 MLP's 1.6 M parameters with fixed
gradients, the part of the epoch where the two differ. For reference, torch's multi-tensor
(``foreach``) SGD, its default on CUDA, is timed as well.

    .venv/bin/python bench/bench_manual_sgd.py                  # 5 repeats, torch's default threads
    .venv/bin/python bench/bench_manual_sgd.py --threads 1 --repeats 9   # on a busy machine

Data: the synthetic CIFAR-2 stand-in (``HELPERS_DATA_SOURCE=offline``) or real CIFAR-2 if present;
both are 3 x 32 x 32 float32 tensors of the same size, so the timings are the same.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from helpers.config import seed_everything
from helpers.data import load_cifar2
from helpers.models import CIFAR2MLP
from helpers.notebook import load_defs
from helpers.train import train

nb = load_defs("03_cifar2_mlp_sgd")
OPTIMIZERS = {
    "torch.optim.SGD": torch.optim.SGD,  # on CPU tensors torch defaults to its per-tensor loop, as ManualSGD
    "ManualSGD": nb.ManualSGD,
    "SGD foreach=True": lambda params, **kw: torch.optim.SGD(params, foreach=True, **kw),  # CUDA's default
}
SGD_ARGS = {k: nb.CONFIG[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov")}


def epoch_seconds(splits, make_optimizer, batch_size: int) -> float:
    """Wall time of one ``train`` epoch (train pass + validation pass) from a fresh, seeded model."""
    seed_everything(0)
    model = CIFAR2MLP()
    optimizer = make_optimizer(model.parameters(), **SGD_ARGS)
    start = time.perf_counter()
    train(model, splits, optimizer, epochs=1, batch_size=batch_size, seed=0, device="cpu", progress=False)
    return time.perf_counter() - start


def step_seconds(make_optimizer, steps: int = 20) -> float:
    """Mean wall time of ``optimizer.step()`` on the CIFAR-2 MLP with fixed random gradients."""
    seed_everything(0)
    model = CIFAR2MLP()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = make_optimizer(model.parameters(), **SGD_ARGS)
    optimizer.step()  # the first step creates the momentum buffers
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; medians are compared")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_cifar2(quick=False)
    batch_size = nb.CONFIG["batch_size"]
    print(f"data: {splits.source}; epoch = {len(splits.train)} train + {len(splits.val)} val images, "
          f"batch {batch_size}; {SGD_ARGS}; {args.threads} threads; torch {torch.__version__}")
    epochs = {name: [] for name in OPTIMIZERS}
    steps = {name: [] for name in OPTIMIZERS}
    for _ in range(args.repeats):
        for name, make in OPTIMIZERS.items():
            epochs[name].append(epoch_seconds(splits, make, batch_size))
            steps[name].append(step_seconds(make))
    for name in OPTIMIZERS:
        print(f"{name:17s} epoch {statistics.median(epochs[name]):.3f} s   "
              f"step {1e3 * statistics.median(steps[name]):.2f} ms   (medians of {args.repeats})")
    epoch_ratio = statistics.median(m / t for m, t in zip(epochs["ManualSGD"], epochs["torch.optim.SGD"]))
    step_ratio = statistics.median(m / t for m, t in zip(steps["ManualSGD"], steps["torch.optim.SGD"]))
    print(f"ratio ManualSGD / torch.optim.SGD: epoch {epoch_ratio:.2f} (target <= 1.3), step alone {step_ratio:.2f}")


if __name__ == "__main__":
    main()
