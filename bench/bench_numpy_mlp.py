"""One training epoch of the NumPy MLP vs the same network in torch on the CPU.

Data: real Fashion-MNIST, the 54,000 training + 6,000 validation images = all 60,000
official training images (MNIST itself is not on this machine; same image size).
Both sides: 784 -> 64 sigmoid -> 10 softmax, cross-entropy, plain SGD on the batch-mean
gradient, the default batch size and learning rate of ``helpers.numpy_mlp``, the same
initial weights, a fresh shuffle per epoch, running loss/accuracy bookkeeping. Epochs
are interleaved (numpy, torch, numpy, torch, ...) so machine noise hits both; the
script prints each time and the ratio of the medians.

    .venv/bin/python bench/bench_numpy_mlp.py [--repeats 5] [--batch-size 32] [--threads 1]

Threads: both sides get the same count (default 1). The matrices are small, so on a
shared or busy machine extra threads cost more in wake-ups than they save.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers.data import load_fashion_mnist
from helpers.numpy_mlp import DEFAULT_BATCH_SIZE, DEFAULT_LR, NumpyMLP, train_network


def sixty_thousand(splits) -> SimpleNamespace:
    """train = the 60,000 official training images (train + val), val = the test set."""
    x = torch.cat([splits.train.x, splits.val.x])
    y = torch.cat([splits.train.y, splits.val.y])
    return SimpleNamespace(train=SimpleNamespace(x=x, y=y, name="train60k"), val=splits.test)


def torch_twin(net: NumpyMLP) -> nn.Sequential:
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
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for BOTH sides (torch.set_num_threads, NumPy's BLAS); default 1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = load_fashion_mnist(quick=False)
    data = sixty_thousand(splits)
    X = data.train.x.reshape(len(data.train.y), -1).contiguous()
    print(f"data: {splits.source}; {len(X):,} training images; batch size {args.batch_size}, lr {args.lr}")
    print(f"threads: {args.threads} on both sides (torch {torch.get_num_threads()}); torch {torch.__version__}, "
          f"numpy {np.__version__}")

    net = NumpyMLP(seed=0)
    model = torch_twin(net)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    np_times, torch_times = [], []
    for r in range(args.repeats):
        hist = train_network(net, data, lr=args.lr, epochs=1, batch_size=args.batch_size, seed=r, progress=False,
                             threads=args.threads)
        t_torch, acc_torch = torch_epoch(model, opt, X, data.train.y, args.batch_size, seed=r)
        np_times.append(hist["seconds"][0])
        torch_times.append(t_torch)
        print(f"epoch {r + 1}: numpy {hist['seconds'][0]:.3f} s (train acc {hist['train_acc'][0]:.3f})   "
              f"torch {t_torch:.3f} s (train acc {acc_torch:.3f})")
    t_np, t_t = statistics.median(np_times), statistics.median(torch_times)
    print(f"median epoch: numpy {t_np:.3f} s, torch {t_t:.3f} s")
    print(f"ratio numpy/torch = {t_np / t_t:.2f}  (target <= 1.5)")


if __name__ == "__main__":
    main()
