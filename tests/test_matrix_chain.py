"""Notebook 01's matrix chain (imported defs-only from the notebook), the gradient checker and the 01 graders."""

import numpy as np
import pytest
import torch

from helpers import grading as bp
from helpers.notebook import load_defs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nb():
    return load_defs("01_matrix_chain_backprop")


def _weights_only(nb, X):
    return lambda A_, B_, C_: nb.matrix_chain_loss(X, A_, B_, C_)


# ---------------------------------------------------------------- gradient checker (helpers.grading)
def test_rel_error_zero_for_equal_and_one_for_opposite():
    a = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert bp.rel_error(a, a.clone()) == 0.0
    assert bp.rel_error(a, -a) == pytest.approx(1.0)
    assert bp.rel_error(np.zeros(3), np.zeros(3)) == 0.0  # tiny guard: no 0/0


def test_rel_error_definition_and_sequences():
    a = np.array([1.0, 4.0])
    b = np.array([1.5, 4.0])
    assert bp.rel_error(a, b) == pytest.approx(0.5 / 8.0)
    assert bp.rel_error((a, np.ones(2)), (b, np.ones(2))) == pytest.approx(0.5 / 8.0)
    with pytest.raises(ValueError, match="equal sizes"):
        bp.rel_error(np.ones(2), np.ones(3))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_numerical_gradient_of_known_function(kind):
    # f(x) = Σ sin(x) x²  ->  f'(x) = cos(x) x² + 2 x sin(x)
    values = np.array([[0.3, -1.2], [2.0, 0.0]])
    if kind == "torch":
        x = torch.tensor(values)
        f = lambda t: (torch.sin(t) * t**2).sum()  # noqa: E731
    else:
        x = values.copy()
        f = lambda t: (np.sin(t) * t**2).sum()  # noqa: E731
    grad = bp.numerical_gradient(f, x, h=1e-5)
    exact = np.cos(values) * values**2 + 2 * values * np.sin(values)
    assert type(grad) is type(x) and tuple(grad.shape) == values.shape
    assert bp.rel_error(grad, exact) < 1e-9
    assert bp.rel_error(x, values) == 0.0  # x restored after perturbation


def test_numerical_gradient_rejects_bad_input():
    with pytest.raises(ValueError, match="h must be > 0"):
        bp.numerical_gradient(lambda t: t.sum(), np.ones(2), h=0.0)
    with pytest.raises(ValueError, match="detach"):
        bp.numerical_gradient(lambda t: t.sum(), torch.ones(2, requires_grad=True))


def test_autograd_gradients_leaves_inputs_untouched():
    a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    b = torch.tensor([3.0, -1.0], dtype=torch.float64)
    da, db = bp.autograd_gradients(lambda x, y: (x * y).sum(), a, b)
    assert torch.equal(da, b) and torch.equal(db, a)
    assert not a.requires_grad and a.grad is None


# ---------------------------------------------------------------- the notebook's matrix chain
def test_defs_only_import_skips_the_lesson(nb):
    for name in ("matrix_chain_loss", "matrix_chain_grads", "central_difference", "gradient_descent",
                 "rel_error_without_mean", "derivative_errors"):
        assert callable(getattr(nb, name))
    assert not hasattr(nb, "runs") and not hasattr(nb, "record")  # training and records were not run


def _loop_loss(X, A, B, C):
    """The chain one sample at a time, straight from the definition (column vectors)."""
    total = 0.0
    for x in X:
        w = C @ (torch.sigmoid(A @ x) * (B @ x))
        total = total + (w @ w)
    return total / X.shape[0]


@pytest.mark.parametrize("K", [1, 3])
def test_batched_loss_matches_per_sample_definition(nb, K):
    X, A, B, C = nb.random_chain(K, N=5, seed=3)
    L = nb.matrix_chain_loss(X, A, B, C)
    assert L.shape == () and bp.rel_error(L, _loop_loss(X, A, B, C)) < 1e-14


@pytest.mark.parametrize("K", [1, 2, 5, 10, 20])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_manual_grads_match_autograd(nb, K, seed):
    X, A, B, C = nb.random_chain(K, N=7, seed=seed)
    manual = nb.matrix_chain_grads(X, A, B, C)
    auto = bp.autograd_gradients(_weights_only(nb, X), A, B, C)
    for dM, M in zip(manual, (A, B, C)):
        assert dM.shape == M.shape and dM.dtype == torch.float64
    for m, a in zip(manual, auto):  # each matrix on its own: a wrong dC cannot hide behind a large dA
        assert bp.rel_error(m, a) <= bp.AUTOGRAD_TOL


def test_manual_grads_float32_match_autograd(nb):
    X, A, B, C = nb.random_chain(6, N=9, seed=4, dtype=torch.float32)
    for m, a in zip(nb.matrix_chain_grads(X, A, B, C), bp.autograd_gradients(_weights_only(nb, X), A, B, C)):
        assert m.dtype == torch.float32 and bp.rel_error(m, a) <= 1e-4


@pytest.mark.parametrize("K,seed", [(1, 0), (1, 1), (2, 0), (4, 1), (6, 2)])
def test_manual_grads_match_finite_differences(nb, K, seed):
    X, A, B, C = nb.random_chain(K, N=6, seed=seed)
    numeric = bp.finite_difference_gradients(_weights_only(nb, X), A, B, C)
    for m, n in zip(nb.matrix_chain_grads(X, A, B, C), numeric):
        assert bp.rel_error(m, n) <= bp.FINITE_DIFF_TOL


def test_shifted_inputs_and_n_not_k(nb):
    gen = torch.Generator().manual_seed(5)
    X = 5 * torch.randn(9, 4, generator=gen, dtype=torch.float64) + 12
    _, A, B, C = nb.random_chain(4, N=9, seed=5)
    for m, a in zip(nb.matrix_chain_grads(X, A, B, C), bp.autograd_gradients(_weights_only(nb, X), A, B, C)):
        assert bp.rel_error(m, a) <= bp.AUTOGRAD_TOL


def test_a_transposed_gradient_is_caught(nb):
    X, A, B, C = nb.random_chain(4, N=6, seed=0)
    dA, dB, dC = nb.matrix_chain_grads(X, A, B, C)
    auto = bp.autograd_gradients(_weights_only(nb, X), A, B, C)
    assert bp.rel_error((dA.T, dB, dC), auto) > bp.FINITE_DIFF_TOL


@pytest.mark.parametrize(
    "shapes, bad",
    [
        (((4, 3), (3, 3), (3, 3), (2, 2)), "C must be K x K = 3 x 3"),
        (((4, 3), (3, 2), (3, 3), (3, 3)), r"A must be K x K = 3 x 3 .* got A of shape \(3, 2\)"),
        (((3,), (3, 3), (3, 3), (3, 3)), r"X must be N x K .* got shape \(3,\)"),
        (((0, 3), (3, 3), (3, 3), (3, 3)), "N >= 1"),
    ],
)
def test_wrong_shapes_name_expected_and_received(nb, shapes, bad):
    X, A, B, C = (torch.zeros(s, dtype=torch.float64) for s in shapes)
    for fn in (nb.matrix_chain_loss, nb.matrix_chain_grads):
        with pytest.raises(ValueError, match=bad):
            fn(X, A, B, C)


def test_central_difference_known_function_and_restores_x(nb):
    x = torch.tensor([[0.3, -1.2], [2.0, 0.0]], dtype=torch.float64)
    before = x.clone()
    grad = nb.central_difference(lambda t: (torch.sin(t) * t**2).sum(), x, 1e-5)
    exact = torch.cos(before) * before**2 + 2 * before * torch.sin(before)
    assert grad.shape == x.shape and bp.rel_error(grad, exact) < 1e-9
    assert torch.equal(x, before)
    scalar = nb.central_difference(lambda t: t**3, torch.tensor(2.0, dtype=torch.float64), 1e-4)
    assert abs(float(scalar) - 12.0) < 1e-7
    with pytest.raises(ValueError, match="h must be > 0"):
        nb.central_difference(lambda t: t.sum(), x, 0.0)


def test_gradient_descent_manual_and_autograd_agree_and_decrease(nb):
    X, A, B, C = nb.random_chain(5, N=32, seed=0)
    manual_losses, manual_final = nb.gradient_descent(X, A, B, C, nb.matrix_chain_grads, 0.3, 40)
    auto_losses, auto_final = nb.gradient_descent(X, A, B, C, nb.autograd_chain_grads, 0.3, 40)
    assert len(manual_losses) == 41
    assert manual_losses[-1] < 0.1 * manual_losses[0]
    assert np.allclose(manual_losses, auto_losses, rtol=1e-10, atol=0)
    for m, a in zip(manual_final, auto_final):
        assert torch.max(torch.abs(m - a)) <= 1e-10
    assert not torch.equal(manual_final[0], A)  # it moved, and the inputs were not modified in place
    with pytest.raises(ValueError, match="lr > 0"):
        nb.gradient_descent(X, A, B, C, nb.matrix_chain_grads, 0.0, 1)


def test_exercise_solutions(nb):
    for N in (1, 3, 50):
        g = torch.randn(3, 3, dtype=torch.float64)
        assert nb.rel_error_without_mean(N) == pytest.approx(bp.rel_error(N * g, g), abs=1e-15)
    f = torch.exp
    auto, fd = nb.derivative_errors(f, f, torch.tensor(0.5, dtype=torch.float64), [1e-2, 1e-5])
    assert auto <= 4e-16 * np.exp(0.5) and len(fd) == 2 and fd[0] > fd[1] > 0


# ---------------------------------------------------------------- graders

@pytest.mark.parametrize("grader, name", [
    (bp.grade_matrix_chain_loss, "matrix_chain_loss"), (bp.grade_matrix_chain_grads, "matrix_chain_grads"),
    (bp.grade_central_difference, "central_difference"), (bp.grade_dropped_mean, "rel_error_without_mean"),
    (bp.grade_derivative_errors, "derivative_errors")])
def test_graders_pass_the_notebook_solutions(nb, capsys, grader, name):
    grader(getattr(nb, name))
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("PASS") >= 4


def test_grads_grader_names_the_wrong_tensor(nb, fails_only_on):
    def sign_flipped_dB(X, A, B, C):
        dA, dB, dC = nb.matrix_chain_grads(X, A, B, C)
        return dA, -dB, dC

    fails_only_on(bp.grade_matrix_chain_grads, sign_flipped_dB, "01-matrix-chain-grads-check", "dB")


def test_grads_grader_catches_a_dropped_mean_and_a_transpose(nb, fail_lines):
    with pytest.raises(AssertionError):
        bp.grade_matrix_chain_grads(lambda X, A, B, C: tuple(X.shape[0] * g for g in nb.matrix_chain_grads(X, A, B, C)))
    assert {line[6:8] for line in fail_lines()} == {"dA", "dB", "dC"}

    def transposed_dA(X, A, B, C):
        dA, dB, dC = nb.matrix_chain_grads(X, A, B, C)
        return dA.T, dB, dC

    with pytest.raises(AssertionError):
        bp.grade_matrix_chain_grads(transposed_dA)
    fails = fail_lines()
    assert fails and all(line.startswith("FAIL  dA") for line in fails)


def test_grads_grader_does_not_use_the_student_loss(nb, monkeypatch, fail_lines):
    monkeypatch.setattr(nb, "matrix_chain_loss", lambda *args: torch.tensor(0.0))
    bp.grade_matrix_chain_grads(nb.matrix_chain_grads)  # a broken loss region fails only its own exercise
    assert not fail_lines()


def test_graders_report_wrong_signature_shape_and_stub(nb, capsys):
    with pytest.raises(AssertionError):
        bp.grade_matrix_chain_grads(lambda X, A, B: None)
    out = capsys.readouterr().out
    assert "FAIL  signature of <lambda>: expected (X, A, B, C, ...), got (X, A, B)" in out

    with pytest.raises(AssertionError):
        bp.grade_matrix_chain_grads(lambda X, A, B, C: (torch.zeros(2, 2),) * 3)
    assert "FAIL  dA vs autograd (N=5, K=3, X=1*randn+0): expected a tensor of shape (3, 3), got shape (2, 2)" \
        in capsys.readouterr().out

    def stub(X, A, B, C):
        raise NotImplementedError()

    for grader in (bp.grade_matrix_chain_loss, bp.grade_matrix_chain_grads):
        with pytest.raises(AssertionError):
            grader(stub)
        out = capsys.readouterr().out
        assert "not implemented yet" in out and "stopped by" not in out  # a failed check, never a grader crash


def test_loss_and_central_difference_graders_reject_wrong_code(nb, fail_lines):
    with pytest.raises(AssertionError):
        bp.grade_matrix_chain_loss(lambda X, A, B, C: X.shape[0] * nb.matrix_chain_loss(X, A, B, C))  # sum, not mean
    assert all(line.startswith("FAIL  loss") for line in fail_lines())

    def forward_difference(f, x, h=1e-5):
        grad = torch.zeros_like(x)
        for i in np.ndindex(*x.shape):
            f0 = float(f(x))
            x[i] += h
            grad[i] = (float(f(x)) - f0) / h
            x[i] -= h
        return grad

    with pytest.raises(AssertionError):
        bp.grade_central_difference(forward_difference)
    assert any("gradient of Σ c x²" in line for line in fail_lines())


def test_exercise_graders_reject_wrong_answers(nb, fail_lines):
    with pytest.raises(AssertionError):
        bp.grade_dropped_mean(lambda N: 1.0)
    assert any(line.startswith("FAIL  N=2") for line in fail_lines())

    def forward_errors(f, df, x, hs):
        exact = float(df(x))
        return 0.0, [abs(float((f(x + h) - f(x)) / h) - exact) for h in hs]

    with pytest.raises(AssertionError):
        bp.grade_derivative_errors(forward_errors)
    assert any("FD error at h=0.1" in line for line in fail_lines())
