"""Benchmark the CPU choices of notebook 06 (MNIST model zoo); prints measured ratios.

Each comparison times one training epoch (forward, backward, SGD step over in-memory
batches, exactly what ``helpers.train.train`` does per batch) on a slice of real
Fashion-MNIST, for both sides in the same run, interleaved and repeated; it reports
the median seconds per 10,000 images and the ratio. Compared:

1. intra-op threads: 1 vs 2 (MLP and LeNet-5 with batchnorm);
2. memory format: ``channels_last`` vs the default contiguous NCHW (LeNet-5), 1 thread;
3. batch size: 128 / 256 / 512 (MLP and LeNet-5), 1 thread, relative to 256.

Notebook 06 uses what wins here: 1 thread (``THREADS``), batch 256, contiguous NCHW.

Timings are noisy on a shared machine; the ratios of interleaved runs are what counts.
Usage: ``python bench/bench_zoo.py [--n-train 6000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
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


def compare(title: str, cases: dict[str, dict], split, repeats: int, baseline: str) -> None:
    """Time every case ``repeats`` times, interleaved; print median s/10k images and ratio to baseline."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, kwargs in cases.items():
            times[name].append(epoch_seconds(split=split, **kwargs))
    per_10k = {name: statistics.median(t) * 10_000 / len(split) for name, t in times.items()}
    print(f"\n{title}")
    for name, sec in per_10k.items():
        ratio = sec / per_10k[baseline]
        print(f"  {name:28s} {sec:7.2f} s / 10k images   x{ratio:.2f} of {baseline}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=6000, help="training images per timed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    splits = load_fashion_mnist(quick=False, source="offline")
    n = min(args.n_train, len(splits.train))
    split = type(splits.train)(splits.train.x[:n].clone(), splits.train.y[:n].clone(),
                               splits.train.classes, "train")
    print(f"data: {splits.source}, {n} training images per timed epoch; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads by default; median of {args.repeats} interleaved repeats")

    for kind in ("mlp", "lenet"):
        compare(f"{kind} (batchnorm), batch 256: intra-op threads",
                {f"{t} thread(s)": dict(kind=kind, variant="batchnorm", batch_size=256, threads=t)
                 for t in (1, 2)},
                split, args.repeats, baseline="2 thread(s)")
    for variant in ("plain", "batchnorm"):
        compare(f"LeNet-5 ({variant}), batch 256, 1 thread: memory format",
                {"contiguous (NCHW)": dict(kind="lenet", variant=variant, batch_size=256),
                 "channels_last": dict(kind="lenet", variant=variant, batch_size=256, channels_last=True)},
                split, args.repeats, baseline="contiguous (NCHW)")
    for kind in ("mlp", "lenet"):
        compare(f"{kind} (plain), 1 thread: batch size",
                {f"batch {b}": dict(kind=kind, variant="plain", batch_size=b) for b in (128, 256, 512)},
                split, args.repeats, baseline="batch 256")

if __name__ == "__main__":
    main()
