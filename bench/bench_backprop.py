"""Notebook 02's readable ``backpropagation`` vs ``loss.backward()`` on the same MyNet.

The manual side is the notebook's own code, imported defs-only with ``helpers.notebook.load_defs``.
Prints, per batch size, the median time of the backward pass and of the whole step (forward +
backward) for both, measured interleaved in the same run, and the ratio manual / autograd.
Target (issue 12): backward ratio <= 1.2 for batch sizes >= 256.

    python bench/bench_backprop.py [--repeats 31] [--dtype float32] [--threads N] [--batch-sizes 1 64 256 1024 4096]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from helpers.config import run_header, seed_everything, settings
from helpers.models import MyNet
from helpers.notebook import load_defs

SIZES = [256, 512, 512, 256, 10]
ACTIVATIONS = ["relu", "tanh", "sigmoid", "identity"]
TARGET = 1.2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_backprop(backprop, model, batch_size: int, repeats: int = 21, warmup: int = 3, seed: int = 0) -> dict:
    """Median seconds of one backward pass, ``backprop(model, y, y_pred)`` vs ``loss.backward()``, interleaved.

    Each repeat runs a fresh forward pass untimed (without a graph for ``backprop``, with one for
    autograd), then times only the backward part; the order of the two alternates between repeats.
    Also times the whole step (forward + backward). Returns ``batch_size``, the medians ``manual_s``,
    ``autograd_s``, ``manual_step_s``, ``autograd_step_s`` and the ratios ``ratio`` (backward, manual /
    autograd) and ``step_ratio``.
    """
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"need batch_size >= 1 and repeats >= 1, got {batch_size} and {repeats}.")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, model.sizes[0], generator=gen, dtype=dtype).to(device)
    y = torch.randn(batch_size, model.sizes[-1], generator=gen, dtype=dtype).to(device)

    def timed(forward, backward) -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        y_pred = forward()
        _sync(device)
        t1 = time.perf_counter()
        backward(y_pred)
        _sync(device)
        t2 = time.perf_counter()
        return t2 - t1, t2 - t0

    def run_manual() -> tuple[float, float]:
        return timed(torch.no_grad()(lambda: model(x)), lambda y_pred: backprop(model, y, y_pred))

    def run_autograd() -> tuple[float, float]:
        return timed(lambda: model(x), lambda y_pred: ((y_pred - y) ** 2).sum().backward())

    for _ in range(warmup):
        run_manual()
        run_autograd()
    manual, auto = [], []
    for rep in range(repeats):
        pair = (run_manual, run_autograd) if rep % 2 == 0 else (run_autograd, run_manual)
        for run in pair:
            (manual if run is run_manual else auto).append(run())
    m_back, m_step = (float(np.median(v)) for v in zip(*manual))
    a_back, a_step = (float(np.median(v)) for v in zip(*auto))
    return {"batch_size": batch_size, "manual_s": m_back, "autograd_s": a_back, "ratio": m_back / a_back,
            "manual_step_s": m_step, "autograd_step_s": a_step, "step_ratio": m_step / a_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(run_header())
    seed_everything()
    backpropagation = load_defs("02_manual_backprop_mlp").backpropagation
    device = settings().device
    model = MyNet(SIZES, ACTIVATIONS, dtype=getattr(torch, args.dtype)).to(device)
    print(f"notebook 02's backpropagation vs loss.backward(): MyNet {SIZES} {ACTIVATIONS}, {args.dtype}, "
          f"device={device}, torch threads={torch.get_num_threads()}, median of {args.repeats} interleaved repeats")
    print(f"{'batch':>6} | {'manual bwd':>11} {'autograd bwd':>12} {'ratio':>6} | "
          f"{'manual step':>11} {'autograd step':>13} {'ratio':>6}")
    worst = 0.0
    for n in args.batch_sizes:
        r = time_backprop(backpropagation, model, n, repeats=args.repeats)
        print(f"{n:>6} | {r['manual_s'] * 1e3:>9.3f}ms {r['autograd_s'] * 1e3:>10.3f}ms {r['ratio']:>6.2f} | "
              f"{r['manual_step_s'] * 1e3:>9.3f}ms {r['autograd_step_s'] * 1e3:>11.3f}ms {r['step_ratio']:>6.2f}")
        if n >= 256:
            worst = max(worst, r["ratio"])
    if worst:
        verdict = "meets" if worst <= TARGET else "MISSES"
        print(f"worst backward ratio at batch >= 256: {worst:.2f} ({verdict} the <= {TARGET} target)")


if __name__ == "__main__":
    main()
