"""Benchmark the CPU choices of notebook 06 (MNIST model zoo); prints measured ratios.

Each comparison times one training epoch (forward, backward, SGD step over in-memory
batches, exactly what ``helpers.train.train`` does per batch) on a slice of real
Fashion-MNIST, for both sides in the same run, interleaved and repeated; it reports
the median seconds per 10,000 images and the ratio. Compared:

1. intra-op threads: 1 vs 2, and 2 with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of
   spinning while they wait; the variable must be set before the process starts, so that case
   runs in a child process), for the MLP and LeNet-5 with batchnorm, batch 128;
2. memory format: ``channels_last`` vs the default contiguous NCHW (LeNet-5), 1 thread, batch 128;
3. batch size: 128 / 256 / 512 (MLP and LeNet-5), 1 thread, relative to 128.

Notebook 06 uses: 1 thread (``THREADS``), batch 128 for all nine, contiguous NCHW.

Timings are noisy on a shared machine; the ratios of interleaved runs are what counts.
Usage: ``python bench/bench_zoo.py [--n-train 6000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from helpers.data import batches, load_fashion_mnist
from helpers.models import make_model


def epoch_seconds(kind: str, variant: str, split, batch_size: int, channels_last: bool = False,
                  threads: int = 1) -> float:
    """Wall time of one training epoch over ``split`` for a fresh model (after one warm-up batch)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = make_model(kind, variant)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            model = model.to(memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()

        def step(x, y):
            opt.zero_grad()
            F.cross_entropy(model(x.contiguous(memory_format=fmt)), y).backward()
            opt.step()

        step(split.x[:batch_size], split.y[:batch_size])  # warm-up (allocations, kernel choice)
        start = time.perf_counter()
        for x, y in batches(split, batch_size, shuffle=True, seed=1):
            step(x, y)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)


def epoch_seconds_in_child(env: dict[str, str], n_train: int, **case) -> float:
    """``epoch_seconds`` in a fresh interpreter with extra environment variables ``env``."""
    argv = [sys.executable, __file__, "--child", "--n-train", str(n_train),
            *[f"{k}={v}" for k, v in case.items()]]
    out = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _run_case(split, case: dict) -> float:
    case = dict(case)
    env = case.pop("env", None)
    if env is None:
        return epoch_seconds(split=split, **case)
    return epoch_seconds_in_child(env, len(split), **case)


def compare(title: str, cases: dict[str, dict], split, repeats: int, baseline: str) -> None:
    """Time every case ``repeats`` times, interleaved; print median s/10k images and ratio to baseline."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, kwargs in cases.items():
            times[name].append(_run_case(split, kwargs))
    per_10k = {name: statistics.median(t) * 10_000 / len(split) for name, t in times.items()}
    print(f"\n{title}")
    for name, sec in per_10k.items():
        ratio = sec / per_10k[baseline]
        print(f"  {name:28s} {sec:7.2f} s / 10k images   x{ratio:.2f} of {baseline}")


def training_slice(n_train: int):
    """The first ``n_train`` images of real Fashion-MNIST's training split (normalised)."""
    splits = load_fashion_mnist(quick=False, source="offline")
    n = min(n_train, len(splits.train))
    split = type(splits.train)(splits.train.x[:n].clone(), splits.train.y[:n].clone(),
                               splits.train.classes, "train")
    return splits.source, split


def child(n_train: int, assignments: list[str]) -> None:
    """Print the seconds of one epoch for the case given as ``key=value`` words (child process)."""
    case = dict(a.split("=", 1) for a in assignments)
    kwargs = {"kind": case["kind"], "variant": case["variant"], "batch_size": int(case["batch_size"]),
              "threads": int(case.get("threads", 1)), "channels_last": case.get("channels_last") == "True"}
    print(epoch_seconds(split=training_slice(n_train)[1], **kwargs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=6000, help="training images per timed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("case", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.n_train, args.case)
    source, split = training_slice(args.n_train)
    print(f"data: {source}, {len(split)} training images per timed epoch; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads by default; median of {args.repeats} interleaved repeats")

    for kind in ("mlp", "lenet"):
        base = dict(kind=kind, variant="batchnorm", batch_size=128)
        compare(f"{kind} (batchnorm), batch 128: intra-op threads",
                {"1 thread": dict(base, threads=1), "2 threads": dict(base, threads=2),
                 "2 threads, OMP passive": dict(base, threads=2, env={"OMP_WAIT_POLICY": "PASSIVE"})},
                split, args.repeats, baseline="2 threads")
    for variant in ("plain", "batchnorm"):
        compare(f"LeNet-5 ({variant}), batch 128, 1 thread: memory format",
                {"contiguous (NCHW)": dict(kind="lenet", variant=variant, batch_size=128),
                 "channels_last": dict(kind="lenet", variant=variant, batch_size=128, channels_last=True)},
                split, args.repeats, baseline="contiguous (NCHW)")
    for kind in ("mlp", "lenet"):
        compare(f"{kind} (plain), 1 thread: batch size",
                {f"batch {b}": dict(kind=kind, variant="plain", batch_size=b) for b in (128, 256, 512)},
                split, args.repeats, baseline="batch 128")


if __name__ == "__main__":
    main()
