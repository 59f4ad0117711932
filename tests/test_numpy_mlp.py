"""Notebook 05's NumPy MLP (via load_defs): gradients, stability, save/load, training, and its graders."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.grading import (
    grade_activations,
    grade_numpy_backward,
    grade_numpy_forward,
    grade_numpy_update,
    grade_overfitting,
    numerical_gradient,
    rel_error,
)
from helpers.notebook import load_defs

nb = load_defs("05_numpy_mlp_mnist")
NumpyMLP, PARAM_NAMES = nb.NumpyMLP, nb.PARAM_NAMES
N_IN, N_HIDDEN, N_OUT, BATCH = 12, 7, 5, 9


def _problem(seed=0, batch=BATCH, cls=None):
    """A float64 network with non-zero biases and a batch (X, one-hot Y, labels) of unit-scale inputs."""
    rng = np.random.default_rng(seed + 100)
    net = (cls or NumpyMLP)(N_IN, N_HIDDEN, N_OUT, seed=seed, dtype=np.float64)
    net.b1[:] = rng.normal(0, 0.5, N_HIDDEN)
    net.b2[:] = rng.normal(0, 0.5, N_OUT)
    X = rng.normal(0, 1, (batch, N_IN))
    labels = rng.integers(0, N_OUT, batch)
    return net, X, nb.one_hot(labels, N_OUT, dtype=np.float64), labels


def _summed_loss(net, X, labels):
    return nb.cross_entropy(net.forward(X), labels) * len(X)


def _grads(net):
    return {name: getattr(net, f"{name}_grad").copy() for name in PARAM_NAMES}


def test_taught_code_lives_in_the_notebook_only():
    import helpers

    assert not hasattr(helpers, "numpy_mlp")
    with pytest.raises(ModuleNotFoundError):
        import helpers.numpy_mlp  # noqa: F401
    assert nb.__skipped__ == []


def test_init_follows_the_recipe():
    net = NumpyMLP(seed=3)
    assert net.W1.shape == (784, 64) and net.W2.shape == (64, 10)
    assert net.W1.dtype == np.float32 and net.b2.dtype == np.float32
    assert not net.b1.any() and not net.b2.any()
    assert abs(net.W1.std() - 0.1) < 0.005 and abs(net.W1.mean()) < 0.005
    same, other = NumpyMLP(seed=3, dtype=np.float64), NumpyMLP(seed=4)
    np.testing.assert_allclose(same.W1, net.W1, rtol=1e-6)
    assert not np.allclose(other.W1, net.W1)
    assert all(not getattr(net, f"{n}_grad").any() for n in PARAM_NAMES) and net.n_accumulated == 0


def test_forward_gives_probabilities():
    net, X, _, _ = _problem()
    P = net.forward(X)
    assert P.shape == (BATCH, N_OUT) and net.H.shape == (BATCH, N_HIDDEN)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    assert (P > 0).all()


def test_gradients_match_central_finite_differences():
    net, X, Y, labels = _problem()
    net.reset_grad()
    net.forward(X)
    net.update_grad(Y)
    for name in PARAM_NAMES:
        numeric = numerical_gradient(lambda _: _summed_loss(net, X, labels), getattr(net, name), h=1e-5)
        err = rel_error(getattr(net, f"{name}_grad"), numeric)
        assert err <= 1e-7, f"{name}: rel_error {err:.2e}"


@pytest.mark.parametrize("cls_name, act", [("NumpyMLP", torch.sigmoid), ("ReluMLP", torch.relu)])
def test_gradients_match_torch_autograd(cls_name, act):
    net, X, Y, labels = _problem(seed=1, cls=getattr(nb, cls_name))
    net.reset_grad()
    net.forward(X)
    net.update_grad(Y)
    t = {name: torch.tensor(getattr(net, name), requires_grad=True) for name in PARAM_NAMES}
    logits = act(torch.from_numpy(X) @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
    loss = F.cross_entropy(logits, torch.from_numpy(labels), reduction="sum")
    loss.backward()
    assert _summed_loss(net, X, labels) == pytest.approx(loss.item(), rel=1e-12)
    for name in PARAM_NAMES:
        err = rel_error(getattr(net, f"{name}_grad"), t[name].grad)
        assert err <= 1e-10, f"{name}: rel_error {err:.2e}"


def test_update_grad_accumulates_and_update_params_uses_the_batch_mean():
    net, X, Y, _ = _problem()
    net.reset_grad()
    net.forward(X)
    net.update_grad(Y)
    whole = _grads(net)
    net.reset_grad()
    for part in (slice(0, 4), slice(4, BATCH)):  # two calls build the same mini-batch
        net.forward(X[part])
        net.update_grad(Y[part])
    assert net.n_accumulated == BATCH
    for name in PARAM_NAMES:
        np.testing.assert_allclose(getattr(net, f"{name}_grad"), whole[name], rtol=1e-12, atol=1e-14)
    before = {k: v.copy() for k, v in net.params().items()}
    net.update_params(0.3)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(net.params()[name], before[name] - 0.3 * whole[name] / BATCH, rtol=1e-12)
    net.reset_grad()
    assert net.n_accumulated == 0 and not any(g.any() for g in _grads(net).values())


def test_integer_labels_equal_one_hot_targets():
    net, X, Y, labels = _problem()
    net.reset_grad()
    net.forward(X)
    net.update_grad(labels)
    from_labels = _grads(net)
    net.reset_grad()
    net.forward(X)
    net.update_grad(Y)
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(getattr(net, f"{name}_grad"), from_labels[name])


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
    net.update_grad(Y)
    with pytest.raises(ValueError, match="lr"):
        net.update_params(-0.1)
    with pytest.raises(ValueError, match="n_hidden"):
        NumpyMLP(n_hidden=0)
    with pytest.raises(ValueError, match="dtype"):
        NumpyMLP(dtype=np.int32)
    with pytest.raises(ValueError, match="labels"):
        nb.one_hot(np.array([0, 5]), 5)


@pytest.mark.parametrize("big", [1000.0, -1000.0])
def test_softmax_and_cross_entropy_are_stable_for_huge_logits(big):
    logits = np.array([[big, 0.0, -big], [0.0, big, big], [big, big, big]])
    targets = np.array([2, 0, 1])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        P = nb.softmax(logits)
        H = nb.sigmoid(logits)
        loss = nb.cross_entropy(P, targets)
    assert np.isfinite(P).all() and np.isfinite(loss) and np.isfinite(H).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_allclose(P, torch.softmax(torch.tensor(logits), 1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(H, torch.sigmoid(torch.tensor(logits)).numpy(), rtol=1e-12, atol=1e-300)
    per_sample = F.cross_entropy(torch.tensor(logits), torch.tensor(targets), reduction="none").numpy()
    fine = per_sample < 700  # beyond that, P underflows to 0 in float64 and the floor caps the loss near 708
    assert nb.cross_entropy(P[fine], targets[fine]) == pytest.approx(per_sample[fine].mean(), rel=1e-12)
    assert 700 < nb.cross_entropy(P[~fine], targets[~fine]) < 710 if (~fine).any() else True


def test_network_is_stable_when_its_logits_reach_1000():
    for dtype in (np.float32, np.float64):
        net = NumpyMLP(4, 3, 2, seed=0, dtype=dtype)
        net.W1[:] = 1000.0  # hidden pre-activations of +-thousands saturate the sigmoid
        net.W2[:] = [[1000.0, -1000.0]] * 3
        X = np.array([[1.0, 1, 1, 1], [-1, -1, -1, -1]])
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            P = net.forward(X)
            loss = nb.cross_entropy(P, np.array([1, 0]))
            net.reset_grad()
            net.update_grad(np.array([1, 0]))
        assert np.abs(net.H @ net.W2 + net.b2).max() == pytest.approx(3000.0)
        assert np.isfinite(P).all() and np.isfinite(loss) and loss > 40  # the sample with P = 0 costs >= 87 (float32)
        assert all(np.isfinite(g).all() for g in _grads(net).values())


def test_save_load_round_trip_is_identical(tmp_path):
    net, X, _, _ = _problem()
    path = net.save(tmp_path / "net.npz")
    other = NumpyMLP(N_IN, N_HIDDEN, N_OUT, seed=99, dtype=np.float64).load(path)
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(other.params()[name], net.params()[name])
        assert other.params()[name].dtype == np.float64
    np.testing.assert_array_equal(other.forward(X), net.forward(X))
    np.testing.assert_array_equal(other.predict(X, batch_size=4), net.forward(X).argmax(axis=1))
    rebuilt = NumpyMLP.from_file(path, dtype=np.float64)
    assert isinstance(rebuilt, NumpyMLP) and isinstance(nb.ReluMLP.from_file(path), nb.ReluMLP)
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
    good = {k: v.copy() for k, v in net.params().items()}
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


def _blobs(n, seed):
    """Four well-separated Gaussian classes in 16 dimensions: X (n, 16) float32, y (n,)."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(0, 2.0, (4, 16))
    y = rng.integers(0, 4, n)
    return (centers[y] + rng.normal(0, 1.0, (n, 16))).astype(np.float32), y


def test_train_numpy_learns_and_is_reproducible():
    (X, y), (Xv, yv) = _blobs(600, 1), _blobs(200, 2)
    histories, weights = [], []
    for _ in range(2):
        net = NumpyMLP(16, 8, 4, seed=0)
        histories.append(nb.train_numpy(net, X, y, Xv, yv, lr=0.5, epochs=4, batch_size=32, seed=1))
        weights.append(net.W1.copy())
    history = histories[0]
    assert set(history) == {"train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
    assert all(len(v) == 4 for v in history.values())
    assert history["val_acc"][-1] > 0.9 and history["train_loss"][-1] < history["train_loss"][0]
    assert histories[0]["val_loss"] == histories[1]["val_loss"]
    np.testing.assert_array_equal(weights[0], weights[1])
    other_seed, net = NumpyMLP(16, 8, 4, seed=0), NumpyMLP(16, 8, 4, seed=0)
    nb.train_numpy(other_seed, X, y, Xv, yv, lr=0.5, epochs=1, batch_size=32, seed=2)
    nb.train_numpy(net, X, y, Xv, yv, lr=0.5, epochs=1, batch_size=32, seed=1)
    assert not np.array_equal(other_seed.W1, net.W1)  # the seed drives the shuffling
    loss, acc = nb.evaluate(net, Xv, yv, batch_size=7)
    assert acc == pytest.approx(float((net.predict(Xv) == yv).mean())) and loss > 0


def test_train_numpy_rejects_bad_arguments():
    (X, y), net = _blobs(50, 1), NumpyMLP(16, 8, 4, seed=0)
    assert len(nb.train_numpy(net, X, y, X, y, epochs=1, batch_size=1000)["train_acc"]) == 1
    with pytest.raises(ValueError, match="epochs"):
        nb.train_numpy(net, X, y, X, y, epochs=0)
    with pytest.raises(ValueError, match="batch_size"):
        nb.train_numpy(net, X, y, X, y, batch_size=0)
    with pytest.raises(ValueError, match="784 inputs"):
        nb.train_numpy(NumpyMLP(), X, y, X, y, epochs=1)


# ---------------------------------------------------------------- graders


def _run(grader, *args, **kwargs):
    """(passed, printed lines) of one grader call."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            grader(*args, **kwargs)
            passed = True
        except AssertionError:
            passed = False
    return passed, out.getvalue().splitlines()


def _failed(lines):
    return [line for line in lines if line.startswith("FAIL")]


def test_graders_pass_the_notebook_solution():
    for grader, args in ((grade_activations, (nb.sigmoid, nb.sigmoid_grad, nb.softmax)),
                         (grade_numpy_forward, (nb.NumpyMLP,)), (grade_numpy_backward, (nb.NumpyMLP,)),
                         (grade_numpy_update, (nb.NumpyMLP,)), (grade_overfitting, (nb.is_overfitting,))):
        passed, lines = _run(grader, *args)
        assert passed and lines and not _failed(lines), lines
    assert _run(grade_numpy_update, nb.SumStepMLP, mean=False, grade_id="05-drop-mean-check")[0]


def test_activation_grader_names_the_broken_function():
    passed, lines = _run(grade_activations, nb.sigmoid, lambda H: H * (1 + H), nb.softmax)
    assert not passed and len(_failed(lines)) == 1 and "sigmoid_grad" in _failed(lines)[0]
    passed, lines = _run(grade_activations, lambda Z: 1 / (1 + np.exp(-Z)), nb.sigmoid_grad, nb.softmax)
    assert not passed and all("sigmoid" in line and "grad" not in line for line in _failed(lines))
    assert "overflow" in _failed(lines)[0]
    passed, lines = _run(grade_activations, nb.sigmoid, nb.sigmoid_grad, lambda Z: np.exp(Z) / np.exp(Z).sum(1))
    assert not passed and all("softmax" in line for line in _failed(lines))


def test_forward_grader_fails_a_transposed_or_missing_piece():
    class NoBias(NumpyMLP):
        def forward(self, X):
            self.X, self.H = X, nb.sigmoid(X @ self.W1 + self.b1)
            self.P = nb.softmax(self.H @ self.W2)
            return self.P

    passed, lines = _run(grade_numpy_forward, NoBias)
    assert not passed and [line.split(":")[0] for line in _failed(lines)] == ["FAIL  P (probabilities)"]


def test_backward_grader_names_the_tensor_with_a_flipped_sign():
    class Flipped(NumpyMLP):
        def update_grad(self, y):
            NumpyMLP.update_grad(self, y)
            self.b1_grad = -self.b1_grad

    passed, lines = _run(grade_numpy_backward, Flipped)
    failed = _failed(lines)
    assert not passed and len(failed) == 2 and all(line.startswith("FAIL  b1_grad") for line in failed)


def test_backward_grader_is_independent_of_forward_and_activations():
    class BrokenForward(NumpyMLP):
        def forward(self, X):
            raise NotImplementedError()

    assert _run(grade_numpy_backward, BrokenForward)[0]
    nb_globals = NumpyMLP.__init__.__globals__
    saved = nb_globals["sigmoid_grad"], nb_globals["softmax"], nb_globals["sigmoid"]
    try:
        nb_globals["sigmoid_grad"] = nb_globals["softmax"] = nb_globals["sigmoid"] = lambda Z: 0 * Z
        assert _run(grade_numpy_backward, NumpyMLP)[0] and _run(grade_numpy_forward, NumpyMLP)[0]
    finally:
        nb_globals["sigmoid_grad"], nb_globals["softmax"], nb_globals["sigmoid"] = saved


def test_update_grader_fails_a_missing_mean_and_a_wrong_signature():
    passed, lines = _run(grade_numpy_update, nb.SumStepMLP)  # the sum where the mean is expected
    assert not passed and len(_failed(lines)) == 4
    passed, lines = _run(grade_numpy_update, NumpyMLP, mean=False)
    assert not passed and {line.split(":")[0][6:] for line in _failed(lines)} == set(PARAM_NAMES)

    class WrongSignature(NumpyMLP):
        def __init__(self, sizes):
            super().__init__(*sizes)

    passed, lines = _run(grade_numpy_update, WrongSignature)
    assert not passed and "NumpyMLP(12, 7, 5" in _failed(lines)[0]


def test_overfitting_grader_rejects_the_90_percent_rule():
    passed, lines = _run(grade_overfitting, lambda history: history["train_acc"][-1] > 0.9)
    assert not passed and len(_failed(lines)) == 2
