"""helpers.numpy_mlp: gradients (finite differences, torch autograd), stability, save/load, training."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.backprop import numerical_gradient, rel_error
from helpers.numpy_mlp import (
    PARAM_NAMES,
    NumpyMLP,
    _subset,
    confusion_matrix,
    cross_entropy,
    most_confused_pairs,
    one_hot,
    softmax,
    split_arrays,
    train_network,
)

N_IN, N_HIDDEN, N_OUT, BATCH = 12, 7, 5, 9


def _problem(seed=0, batch=BATCH):
    """A float64 network and a batch (X, one-hot Y) with inputs of unit scale."""
    rng = np.random.default_rng(seed + 100)
    net = NumpyMLP(N_IN, N_HIDDEN, N_OUT, seed=seed, dtype=np.float64)
    # Non-zero biases so their gradients are exercised too.
    net.b1[:] = rng.normal(0, 0.5, N_HIDDEN)
    net.b2[:] = rng.normal(0, 0.5, N_OUT)
    X = rng.normal(0, 1, (batch, N_IN))
    labels = rng.integers(0, N_OUT, batch)
    return net, X, one_hot(labels, N_OUT, dtype=np.float64), labels


def _summed_loss(net, X, Y):
    net.forward(X)
    return net.loss(Y) * len(X)


def test_init_follows_the_recipe():
    net = NumpyMLP(seed=3)
    assert net.W1.shape == (784, 64) and net.W2.shape == (64, 10)
    assert net.W1.dtype == np.float32
    assert not net.b1.any() and not net.b2.any()
    assert abs(net.W1.std() - 0.1) < 0.005 and abs(net.W1.mean()) < 0.005
    same, other = NumpyMLP(seed=3, dtype=np.float64), NumpyMLP(seed=4)
    np.testing.assert_allclose(same.W1, net.W1, rtol=1e-6)
    assert not np.allclose(other.W1, net.W1)


def test_forward_gives_probabilities():
    net, X, _, _ = _problem()
    P = net.forward(X)
    assert P.shape == (BATCH, N_OUT)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    assert (P > 0).all()


def test_gradients_match_central_finite_differences():
    net, X, Y, _ = _problem()
    net.reset_grad()
    net.forward(X)
    net.update_grad(Y)
    for name in PARAM_NAMES:
        numeric = numerical_gradient(lambda _: _summed_loss(net, X, Y), getattr(net, name), h=1e-5)
        err = rel_error(getattr(net, f"{name}_grad"), numeric)
        assert err <= 1e-7, f"{name}: rel_error {err:.2e}"


def test_gradients_match_torch_autograd():
    net, X, Y, labels = _problem(seed=1)
    net.reset_grad()
    net.forward(X)
    net.update_grad(Y)
    t = {name: torch.tensor(getattr(net, name), requires_grad=True) for name in PARAM_NAMES}
    hidden = torch.sigmoid(torch.from_numpy(X) @ t["W1"] + t["b1"])
    logits = hidden @ t["W2"] + t["b2"]
    loss = F.cross_entropy(logits, torch.from_numpy(labels), reduction="sum")
    loss.backward()
    assert net.loss(Y) * BATCH == pytest.approx(loss.item(), rel=1e-12)
    for name in PARAM_NAMES:
        err = rel_error(getattr(net, f"{name}_grad"), t[name].grad)
        assert err <= 1e-10, f"{name}: rel_error {err:.2e}"


def test_update_grad_accumulates_and_update_params_uses_the_batch_mean():
    net, X, Y, _ = _problem()
    net.reset_grad()
    net.forward(X)
    net.update_grad(Y)
    whole = {k: v.copy() for k, v in net.grads().items()}
    net.reset_grad()
    for part in (slice(0, 4), slice(4, BATCH)):  # two calls build the same mini-batch
        net.forward(X[part])
        net.update_grad(Y[part])
    assert net.n_accumulated == BATCH
    for name in PARAM_NAMES:
        np.testing.assert_allclose(net.grads()[name], whole[name], rtol=1e-12, atol=1e-14)
    before = {k: v.copy() for k, v in net.params().items()}
    net.update_params(0.3)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(net.params()[name], before[name] - 0.3 * whole[name] / BATCH, rtol=1e-12)
    net.reset_grad()
    assert net.n_accumulated == 0 and not any(g.any() for g in net.grads().values())


def test_integer_labels_equal_one_hot_targets():
    net, X, Y, labels = _problem()
    net.reset_grad()
    net.forward(X)
    net.update_grad(labels)
    from_labels = {k: v.copy() for k, v in net.grads().items()}
    net.reset_grad()
    net.forward(X)
    net.update_grad(Y)
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(net.grads()[name], from_labels[name])


def test_misuse_gives_clear_errors():
    net, X, Y, _ = _problem()
    with pytest.raises(RuntimeError, match="forward"):
        net.update_grad(Y)
    with pytest.raises(ValueError, match=f"B x {N_IN}"):
        net.forward(X[:, :3])
    net.forward(X)
    with pytest.raises(ValueError, match="one-hot"):
        net.update_grad(Y[:3])
    net.reset_grad()
    with pytest.raises(RuntimeError, match="update_grad"):
        net.update_params(0.1)
    with pytest.raises(ValueError, match="n_hidden"):
        NumpyMLP(n_hidden=0)
    with pytest.raises(ValueError, match="labels"):
        one_hot(np.array([0, 5]), 5)


@pytest.mark.parametrize("big", [1000.0, -1000.0])
def test_softmax_and_cross_entropy_are_stable_for_huge_logits(big):
    logits = np.array([[big, 0.0, -big], [0.0, big, big], [big, big, big]])
    targets = np.array([2, 0, 1])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        P = softmax(logits)
        loss = cross_entropy(logits, targets)
    assert np.isfinite(P).all() and np.isfinite(loss).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(targets), reduction="none")
    np.testing.assert_allclose(loss, expected.numpy(), rtol=1e-12)


def test_network_is_stable_when_its_logits_reach_1000():
    for dtype in (np.float32, np.float64):
        net = NumpyMLP(4, 3, 2, seed=0, dtype=dtype)
        net.W1[:] = 1000.0  # hidden pre-activations of +-thousands saturate the sigmoid
        net.W2[:] = [[1000.0, -1000.0]] * 3
        X = np.array([[1.0, 1, 1, 1], [-1, -1, -1, -1]])
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            P = net.forward(X)
            loss = net.loss(np.array([1, 0]))
            net.reset_grad()
            net.update_grad(np.array([1, 0]))
        assert np.abs(net.logits()).max() == pytest.approx(3000.0)
        assert np.isfinite(P).all() and np.isfinite(loss) and loss > 1000
        assert all(np.isfinite(g).all() for g in net.grads().values())


def test_save_load_round_trip_is_identical(tmp_path):
    net, X, _, _ = _problem()
    path = net.save(tmp_path / "net.npz")
    other = NumpyMLP(N_IN, N_HIDDEN, N_OUT, seed=99, dtype=np.float64).load(path)
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(other.params()[name], net.params()[name])
        assert other.params()[name].dtype == np.float64
    np.testing.assert_array_equal(other.forward(X), net.forward(X))
    rebuilt = NumpyMLP.from_file(path, dtype=np.float64)
    assert (rebuilt.n_in, rebuilt.n_hidden, rebuilt.n_out) == (N_IN, N_HIDDEN, N_OUT)
    np.testing.assert_array_equal(rebuilt.W2, net.W2)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(PARAM_NAMES)


def _write(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_load_rejects_bad_files(tmp_path):
    net = NumpyMLP(N_IN, N_HIDDEN, N_OUT, dtype=np.float64)
    good = net.params()
    with pytest.raises(ValueError, match=r"missing array\(s\) \['b2'\]"):
        net.load(_write(tmp_path / "missing.npz", W1=good["W1"], b1=good["b1"], W2=good["W2"]))
    wrong_size = NumpyMLP(N_IN, N_HIDDEN + 1, N_OUT).save(tmp_path / "wider.npz")
    with pytest.raises(ValueError, match="W1 has shape"):
        net.load(wrong_size)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        net.load(_write(tmp_path / "inconsistent.npz", **{**good, "b1": np.zeros(3)}))
    with pytest.raises(ValueError, match="finite floats"):
        net.load(_write(tmp_path / "nan.npz", **{**good, "W2": np.full_like(good["W2"], np.nan)}))
    with pytest.raises(ValueError, match="not a network file"):
        net.load(_write(tmp_path / "pickled.npz", **{**good, "b2": np.array([{"a": 1}] * N_OUT, dtype=object)}))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a network file"):
        net.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="no network file"):
        net.load(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match=".npz"):
        net.save(tmp_path / "net.pkl")
    np.testing.assert_array_equal(net.W1, good["W1"])  # failed loads leave the network untouched


def _blob_splits(n_train=600, n_val=200, seed=0):
    """Four well-separated Gaussian classes as 1 x 4 x 4 'images' in helpers.data's Split layout."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (4, 16))

    def split(n):
        y = rng.integers(0, 4, n)
        x = centers[y] + rng.normal(0, 1.0, (n, 16))
        return SimpleNamespace(x=torch.tensor(x, dtype=torch.float32).reshape(n, 1, 4, 4),
                               y=torch.tensor(y), name="blobs")

    return SimpleNamespace(train=split(n_train), val=split(n_val), test=split(n_val))


def test_train_network_learns_and_is_reproducible():
    splits = _blob_splits()
    histories, weights = [], []
    for _ in range(2):
        net = NumpyMLP(16, 8, 4, seed=0)
        histories.append(train_network(net, splits, lr=0.5, epochs=4, batch_size=32, seed=1, progress=False))
        weights.append(net.W1.copy())
    history = histories[0]
    assert set(history) == {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert all(len(v) == 4 for v in history.values())
    assert history["val_acc"][-1] > 0.9 and history["train_loss"][-1] < history["train_loss"][0]
    assert histories[0]["val_loss"] == histories[1]["val_loss"]
    np.testing.assert_array_equal(weights[0], weights[1])
    other_seed = NumpyMLP(16, 8, 4, seed=0)
    train_network(other_seed, splits, lr=0.5, epochs=1, batch_size=32, seed=2, progress=False)
    net = NumpyMLP(16, 8, 4, seed=0)
    train_network(net, splits, lr=0.5, epochs=1, batch_size=32, seed=1, progress=False)
    assert not np.array_equal(other_seed.W1, net.W1)  # the seed drives the shuffling


def test_train_network_n_train_and_bad_arguments():
    splits = _blob_splits()
    net = NumpyMLP(16, 8, 4, seed=0)
    history = train_network(net, splits, lr=0.5, epochs=1, batch_size=1000, seed=0, n_train=50, progress=False)
    assert len(history["train_acc"]) == 1
    with pytest.raises(ValueError, match="n_train"):
        train_network(net, splits, epochs=1, n_train=10_000, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train_network(net, splits, epochs=0, progress=False)
    with pytest.raises(ValueError, match="784 inputs"):
        train_network(NumpyMLP(), splits, epochs=1, progress=False)
    X, y = split_arrays(splits.val, np.float64, limit=5)
    assert X.shape == (5, 16) and X.dtype == np.float64 and y.dtype == np.int64


def test_n_train_draws_a_seeded_subset_across_classes():
    y = np.repeat(np.arange(4), 50)  # ordered by class, like some stored splits
    X = np.arange(200, dtype=np.float32)[:, None]
    Xs, ys = _subset(X, y, 40, seed=0)
    assert len(ys) == 40 and len(np.unique(ys)) == 4
    np.testing.assert_array_equal(Xs[:, 0].astype(int), np.sort(Xs[:, 0]).astype(int))
    np.testing.assert_array_equal(y[Xs[:, 0].astype(int)], ys)
    np.testing.assert_array_equal(_subset(X, y, 40, seed=0)[1], ys)
    assert not np.array_equal(_subset(X, y, 40, seed=1)[0], Xs)


def test_confusion_matrix_and_most_confused_pairs():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 2, 2, 0, 0, 0])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 2], [3, 0, 1]]
    assert most_confused_pairs(cm, ["a", "b", "c"], k=2) == [("c", "a", 3), ("b", "c", 2)]
