"""One training epoch of notebook 05's NumPy MLP vs the same network in torch on the CPU.

The NumPy side is the notebook's own ``NumpyMLP`` and ``train_numpy`` (reached with
``helpers.notebook.load_defs``). Both sides: 784 -> 64 sigmoid -> 10 softmax, cross-entropy,
plain SGD on the batch-mean gradient, the same initial weights, a fresh shuffle per epoch,
running loss/accuracy bookkeeping. Data: the training + validation images of
``settings().mnist_dataset`` (60,000 with real MNIST); a smaller stand-in is repeated up to
``--n-images`` rows, and the printed data source says so. Epochs are interleaved (numpy,
torch, numpy, torch, ...) so machine noise hits both; the script prints each time and the
ratio of the medians.

    .venv/bin/python bench/bench_numpy_mlp.py [--repeats 5] [--batch-size 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from helpers.config import settings
from helpers.data import load_dataset
from helpers.notebook import load_defs


def torch_twin(net) -> nn.Sequential:
    """The same network in torch, starting from the NumPy network's weights."""
    model = nn.Sequential(nn.Linear(net.n_in, net.n_hidden), nn.Sigmoid(), nn.Linear(net.n_hidden, net.n_out))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(net.W1.T.copy()))
        model[0].bias.copy_(torch.from_numpy(net.b1))
        model[2].weight.copy_(torch.from_numpy(net.W2.T.copy()))
        model[2].bias.copy_(torch.from_numpy(net.b2))
    return model


def torch_epoch(model: nn.Module, opt: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor,
                batch_size: int, seed: int) -> tuple[float, float]:
    """One epoch of SGD in torch; returns (seconds, running accuracy)."""
    start = time.perf_counter()
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    loss_sum, correct = 0.0, 0
    for i in range(0, len(X), batch_size):
        idx = order[i:i + batch_size]
        xb, yb = X.index_select(0, idx), y.index_select(0, idx)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
    return time.perf_counter() - start, correct / len(X)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--n-images", type=int, default=60_000)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for BOTH sides (torch.set_num_threads, NumPy's BLAS); default 1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nb = load_defs("05_numpy_mlp_mnist")

    data = load_dataset(settings().mnist_dataset, quick=False)
    x = torch.cat([data.train.x, data.val.x]).flatten(1)
    y = torch.cat([data.train.y, data.val.y])
    reps = -(-args.n_images // len(y))
    X, y = x.repeat(reps, 1)[:args.n_images].contiguous(), y.repeat(reps)[:args.n_images].contiguous()
    X_np, y_np = X.numpy(), y.numpy()
    X_val, y_val = X_np[:1000], y_np[:1000]  # evaluation is not timed
    print(f"data: {data.source}; {len(y):,} training images" + (f" ({reps}x repeated)" if reps > 1 else "")
          + f"; batch size {args.batch_size}, lr {args.lr}")
    print(f"threads: {args.threads} on both sides; torch {torch.__version__}, numpy {np.__version__}")

    net = nb.NumpyMLP(seed=0)
    model = torch_twin(net)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    np_times, torch_times = [], []
    with threadpool_limits(args.threads, user_api="blas"):
        for r in range(args.repeats):
            hist = nb.train_numpy(net, X_np, y_np, X_val, y_val, lr=args.lr, epochs=1, batch_size=args.batch_size,
                                  seed=r)
            t_torch, acc_torch = torch_epoch(model, opt, X, y, args.batch_size, seed=r)
            np_times.append(hist["seconds"][0])
            torch_times.append(t_torch)
            print(f"epoch {r + 1}: numpy {hist['seconds'][0]:.3f} s (train acc {hist['train_acc'][0]:.3f})   "
                  f"torch {t_torch:.3f} s (train acc {acc_torch:.3f})")
    t_np, t_t = statistics.median(np_times), statistics.median(torch_times)
    print(f"median epoch: numpy {t_np:.3f} s, torch {t_t:.3f} s")
    print(f"ratio numpy/torch = {t_np / t_t:.2f}  (target <= 1.5)")


if __name__ == "__main__":
    main()
