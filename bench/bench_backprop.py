"""Manual backprop (helpers.backprop.backpropagation) vs loss.backward() on the same MyNet.

Prints, per batch size, the median time of the backward pass and of the whole step
(forward + backward) for both, measured interleaved in the same run, and the ratio
manual / autograd. Target (issue 3): ratio <= 1.1 for batch sizes >= 256.

    python bench/bench_backprop.py [--repeats 31] [--dtype float32] [--threads N] [--batch-sizes 1 64 256 1024 4096]
"""

from __future__ import annotations

import argparse

import torch

from helpers.backprop import time_backprop
from helpers.config import run_header, seed_everything, settings
from helpers.models import MyNet

SIZES = [256, 512, 512, 256, 10]
ACTIVATIONS = ["relu", "tanh", "sigmoid", "identity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(run_header())
    seed_everything()
    device = settings().device
    model = MyNet(SIZES, ACTIVATIONS, dtype=getattr(torch, args.dtype)).to(device)
    print(f"MyNet {SIZES} {ACTIVATIONS}, {args.dtype}, device={device}, torch threads={torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved repeats")
    print(f"{'batch':>6} | {'manual bwd':>11} {'autograd bwd':>12} {'ratio':>6} | "
          f"{'manual step':>11} {'autograd step':>13} {'ratio':>6}")
    worst = 0.0
    for n in args.batch_sizes:
        r = time_backprop(model, n, repeats=args.repeats)
        print(f"{n:>6} | {r['manual_s'] * 1e3:>9.3f}ms {r['autograd_s'] * 1e3:>10.3f}ms {r['ratio']:>6.2f} | "
              f"{r['manual_step_s'] * 1e3:>9.3f}ms {r['autograd_step_s'] * 1e3:>11.3f}ms {r['step_ratio']:>6.2f}")
        if n >= 256:
            worst = max(worst, r["ratio"])
    if worst:
        verdict = "meets" if worst <= 1.1 else "MISSES"
        print(f"worst backward ratio at batch >= 256: {worst:.2f} ({verdict} the <= 1.1 target)")


if __name__ == "__main__":
    main()
