"""How close does a full-size CIFAR-2 MLP epoch come to the machine's fp32 matmul rate?

One epoch = ``helpers.train.train(..., epochs=1)`` on the full-size CIFAR-2 split
(9,000 training images forward + backward + SGD step, then 1,000 validation images
forward), exactly the code path of notebook 03. Its FLOP rate is compared with two
fp32 matmul rates measured in the same process, right before and right after the epoch:

* ``square``: ``torch.mm`` of two n x n matrices (n = 1024 by default), the machine's
  practical GEMM peak;
* ``own``: the model's own GEMMs at that batch size (forward ``addmm`` of each layer,
  backward weight-gradient and input-gradient ``mm``), with nothing else in between.

FLOPs are the multiply-adds of the matmuls the epoch really performs (2 per
multiply-add): per training image ``2 * sum(in*out)`` forward, ``2 * sum(in*out)`` for
the weight gradients and ``2 * sum(in*out)`` for the input gradients of every layer
except the first (the images need no gradient); per validation image ``2 * sum(in*out)``.
That is 6.7 MFLOP per training image, less than the rule of thumb ``6 x params``
(9.9 MFLOP) which would flatter the ratio. Element-wise work (ReLU, softmax, the SGD
update) is not counted: it is the overhead the ratio exposes.

Data: the synthetic CIFAR-2 stand-in of real size (``HELPERS_DATA_SOURCE=offline``) or
real CIFAR-2 if present; both are 3 x 32 x 32 float32 tensors, so timings are the same.

    .venv/bin/python bench/bench_mlp_throughput.py                # defaults below
    .venv/bin/python bench/bench_mlp_throughput.py --threads 1 2 --batch-sizes 128 512
    .venv/bin/python bench/bench_mlp_throughput.py --threads 1 --clock cpu   # on a busy machine
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from helpers.config import seed_everything
from helpers.data import load_cifar2
from helpers.models import CIFAR2MLP
from helpers.notebook import load_defs
from helpers.train import train

SIZES = (3072, 512, 128, 32, 2)


def layer_macs(sizes=SIZES) -> list[int]:
    """Multiply-adds per image of each linear layer: in * out."""
    return [n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def epoch_flops(n_train: int, n_eval: int, sizes=SIZES) -> int:
    """Matmul FLOPs of one epoch: train forward + backward (no input gradient for layer 1), eval forward."""
    macs = layer_macs(sizes)
    train_per_image = 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])
    eval_per_image = 2 * sum(macs)
    return n_train * train_per_image + n_eval * eval_per_image


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def square_matmul_rate(n: int = 1024, clock=time.perf_counter, min_seconds: float = 0.3) -> float:
    """GFLOP/s of ``torch.mm`` on two n x n float32 matrices (2 n^3 FLOPs per product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    reps, start = 0, clock()
    while (elapsed := clock() - start) < min_seconds:
        torch.mm(a, b, out=out)
        reps += 1
    return 2 * n**3 * reps / elapsed / 1e9


def own_gemm_rate(batch_size: int, sizes=SIZES, clock=time.perf_counter, min_seconds: float = 0.3) -> float:
    """GFLOP/s of the model's own GEMMs for one training batch, run back to back."""
    layers = [(torch.randn(n_out, n_in), torch.randn(n_out)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    acts = [torch.randn(batch_size, n) for n in sizes]
    grads_out = [torch.randn(batch_size, n) for n in sizes[1:]]

    def one_batch() -> None:
        for i, (w, b) in enumerate(layers):
            torch.addmm(b, acts[i], w.t())            # forward: B x in @ in x out
            torch.mm(grads_out[i].t(), acts[i])       # weight gradient: out x B @ B x in
            if i > 0:
                torch.mm(grads_out[i], w)             # input gradient: B x out @ out x in

    macs = layer_macs(sizes)
    flops = batch_size * (4 * sum(macs) + 2 * sum(macs[1:]))
    one_batch()
    reps, start = 0, clock()
    while (elapsed := clock() - start) < min_seconds:
        one_batch()
        reps += 1
    return flops * reps / elapsed / 1e9


def time_epoch(splits, batch_size: int, optimizer_name: str, clock=time.perf_counter) -> float:
    """Seconds of one ``train`` epoch (train pass + validation pass) from a fresh model."""
    seed_everything(0)
    model = CIFAR2MLP()
    make = torch.optim.SGD if optimizer_name == "torch" else load_defs("03_cifar2_mlp_sgd").ManualSGD
    optimizer = make(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
    start = clock()
    train(model, splits, optimizer, epochs=1, batch_size=batch_size, seed=0,
          loss_fn=F.cross_entropy, device="cpu", progress=False)
    return clock() - start


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                   help="torch intra-op thread counts to compare (default: torch's default)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; medians are printed")
    p.add_argument("--square", type=int, default=1024, help="n of the n x n baseline matmul")
    p.add_argument("--optimizer", choices=("torch", "manual"), default="torch")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall: elapsed time (default); cpu: this process's CPU time, which on a machine "
                        "busy with other work measures the work done (use with --threads 1)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    splits = load_cifar2(quick=False)
    n_train, n_eval = len(splits.train), len(splits.val)
    flops = epoch_flops(n_train, n_eval)
    print(f"data: {splits.source}; epoch = {n_train} train + {n_eval} val images "
          f"{tuple(splits.train.x.shape[1:])}; {flops / 1e9:.1f} GFLOP of matmuls per epoch")
    clock = CLOCKS[args.clock]
    print(f"optimizer: {args.optimizer}; clock: {args.clock}; repeats: {args.repeats} (interleaved); "
          f"torch {torch.__version__}")
    results: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for _ in range(args.repeats):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for bs in args.batch_sizes:
                square_before = square_matmul_rate(args.square, clock)
                own_before = own_gemm_rate(bs, clock=clock)
                seconds = time_epoch(splits, bs, args.optimizer, clock)
                square_after = square_matmul_rate(args.square, clock)
                own_after = own_gemm_rate(bs, clock=clock)
                results.setdefault((threads, bs), []).append(
                    (seconds, (square_before + square_after) / 2, (own_before + own_after) / 2))
    print(f"\n{'threads':>7} {'batch':>5} {'epoch s':>8} {'epoch GFLOP/s':>13} "
          f"{'square mm':>9} {'ratio':>6} {'own GEMMs':>9} {'ratio':>6}")
    for (threads, bs), runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        rate = flops / seconds / 1e9
        ratio_square = statistics.median(flops / r[0] / 1e9 / r[1] for r in runs)
        ratio_own = statistics.median(flops / r[0] / 1e9 / r[2] for r in runs)
        print(f"{threads:>7} {bs:>5} {seconds:>8.2f} {rate:>13.1f} "
              f"{statistics.median(r[1] for r in runs):>9.1f} {ratio_square:>6.0%} "
              f"{statistics.median(r[2] for r in runs):>9.1f} {ratio_own:>6.0%}")
    print("\nratio = epoch FLOP rate / matmul rate measured around that epoch (median over repeats).")


if __name__ == "__main__":
    main()
