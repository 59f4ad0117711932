"""helpers.backprop: the gradient checker and the matrix chain of notebook 01 (float64)."""

import numpy as np
import pytest
import torch

from helpers import backprop as bp

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- gradient checker
def test_rel_error_zero_for_equal_and_one_for_opposite():
    a = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert bp.rel_error(a, a.clone()) == 0.0
    assert bp.rel_error(a, -a) == pytest.approx(1.0)
    assert bp.rel_error(np.zeros(3), np.zeros(3)) == 0.0  # tiny guard: no 0/0


def test_rel_error_definition_and_sequences():
    a = np.array([1.0, 4.0])
    b = np.array([1.5, 4.0])
    assert bp.rel_error(a, b) == pytest.approx(0.5 / 8.0)
    # tuples are compared as one concatenated vector
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


def test_check_gradients_pass_and_fail_lines():
    ok = bp.check_gradients(np.ones(3), np.ones(3), 1e-10, "same")
    bad = bp.check_gradients(np.ones(3), -np.ones(3), 1e-10, "sign flipped")
    assert ok.passed and str(ok).startswith("PASS")
    assert not bad.passed and str(bad).startswith("FAIL")
    nan = bp.check_gradients(np.array([np.nan]), np.array([1.0]), 1e-10)
    assert not nan.passed


# ---------------------------------------------------------------- matrix chain
def _loop_loss(X, A, B, C):
    """The chain one sample at a time, straight from the definition (column vectors)."""
    total = 0.0
    for x in X:
        y = A @ x
        u = torch.sigmoid(y)
        v = B @ x
        w = C @ (u * v)
        total = total + (w @ w)
    return total / X.shape[0]


@pytest.mark.parametrize("K", [1, 3])
def test_batched_loss_matches_per_sample_definition(K):
    X, A, B, C = bp.random_chain(K, N=5, seed=3)
    assert bp.rel_error(bp.matrix_chain_loss(X, A, B, C), _loop_loss(X, A, B, C)) < 1e-14


@pytest.mark.parametrize("K", [1, 2, 5, 10, 20])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_manual_grads_match_autograd(K, seed):
    X, A, B, C = bp.random_chain(K, N=7, seed=seed)
    manual = bp.matrix_chain_grads(X, A, B, C)
    auto = bp.autograd_gradients(lambda A_, B_, C_: bp.matrix_chain_loss(X, A_, B_, C_), A, B, C)
    for dM, M in zip(manual, (A, B, C)):
        assert dM.shape == M.shape and dM.dtype == torch.float64
    assert bp.rel_error(manual, auto) <= bp.AUTOGRAD_TOL
    # each matrix on its own too, so a wrong dC cannot hide behind large dA
    for m, a in zip(manual, auto):
        assert bp.rel_error(m, a) <= bp.AUTOGRAD_TOL


@pytest.mark.parametrize("K,seed", [(1, 0), (1, 1), (2, 0), (4, 1), (6, 2)])
def test_manual_grads_match_finite_differences(K, seed):
    autograd_check, fd_check = bp.check_matrix_chain(K, seed=seed, N=6)
    assert autograd_check.passed and fd_check.passed
    assert fd_check.error <= bp.FINITE_DIFF_TOL


def test_checker_catches_a_transposed_gradient():
    X, A, B, C = bp.random_chain(4, N=6, seed=0)
    dA, dB, dC = bp.matrix_chain_grads(X, A, B, C)
    auto = bp.autograd_gradients(lambda A_, B_, C_: bp.matrix_chain_loss(X, A_, B_, C_), A, B, C)
    assert not bp.check_gradients((dA.T, dB, dC), auto, bp.FINITE_DIFF_TOL).passed


@pytest.mark.parametrize(
    "shapes, bad",
    [
        (((4, 3), (3, 3), (3, 3), (2, 2)), "C must be K x K = 3 x 3"),
        (((4, 3), (3, 2), (3, 3), (3, 3)), r"A must be K x K = 3 x 3 .* got A of shape \(3, 2\)"),
        (((3,), (3, 3), (3, 3), (3, 3)), r"X must be N x K .* got shape \(3,\)"),
        (((0, 3), (3, 3), (3, 3), (3, 3)), "N >= 1"),
    ],
)
def test_wrong_shapes_name_expected_and_received(shapes, bad):
    X, A, B, C = (torch.zeros(s, dtype=torch.float64) for s in shapes)
    for fn in (bp.matrix_chain_loss, bp.matrix_chain_grads):
        with pytest.raises(ValueError, match=bad):
            fn(X, A, B, C)


def test_descent_manual_and_autograd_agree_and_decrease():
    X, A, B, C = bp.random_chain(5, N=32, seed=0)
    manual_losses, manual_final = bp.matrix_chain_descent(X, A, B, C, lr=0.3, epochs=40)
    auto_losses, auto_final = bp.matrix_chain_descent(X, A, B, C, lr=0.3, epochs=40, gradients="autograd")
    assert len(manual_losses) == 41
    assert manual_losses[-1] < 0.1 * manual_losses[0]
    assert np.allclose(manual_losses, auto_losses, rtol=1e-10, atol=0)
    for m, a in zip(manual_final, auto_final):
        assert torch.max(torch.abs(m - a)) <= 1e-10
    assert not torch.equal(manual_final[0], A)  # it moved, and the inputs were not modified in place
    with pytest.raises(ValueError, match="valid choices: manual, autograd"):
        bp.matrix_chain_descent(X, A, B, C, lr=0.1, epochs=1, gradients="numeric")
