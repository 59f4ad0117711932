"""Hand-written gradients and the gradient checks that keep them honest.

Three sections:

* **Gradient checks** (used by every notebook that writes a gradient by hand):
  ``numerical_gradient`` (central finite differences, NumPy or torch),
  ``rel_error``, ``autograd_gradients`` and ``check_gradients`` (a PASS/FAIL verdict).
* **Matrix chain** (notebook 01): ``y = A x, u = σ(y), v = B x, z = u ⊙ v, w = C z,
  ℓ = ‖w‖²``, with ``L`` the mean of ``ℓ`` over a batch; loss, gradients and
  gradient descent.
* **MLP backprop** (notebook 02): ``backpropagation(model, y_true, y_pred)`` for
  :class:`helpers.models.MyNet`, the four equations BP1–BP4.

Batches are matrices with one sample per row, so ``y = A x`` for every row of
``X`` (N x K) reads ``Y = X Aᵀ``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

TINY = 1e-300  # guards rel_error against 0/0 when both gradients are exactly zero
AUTOGRAD_TOL = 1e-10  # manual vs autograd, float64
FINITE_DIFF_TOL = 1e-6  # manual vs central finite differences, float64


# --------------------------------------------------------------------------------------
# Gradient checks
# --------------------------------------------------------------------------------------
def _as_float64_array(x) -> np.ndarray:
    """Tensor, array or sequence of them -> one flat float64 NumPy array."""
    if isinstance(x, (list, tuple)):
        parts = [_as_float64_array(p) for p in x]
        return np.concatenate(parts) if parts else np.zeros(0)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def rel_error(a, b) -> float:
    """``max|a - b| / max(max(|a| + |b|), tiny)``: 0 when equal, ~1 when unrelated.

    ``a`` and ``b`` are arrays or tensors of the same shape, or equally long
    sequences of them (e.g. the tuples ``(dA, dB, dC)``), compared as one vector.
    """
    a_flat, b_flat = _as_float64_array(a), _as_float64_array(b)
    if a_flat.shape != b_flat.shape:
        raise ValueError(f"rel_error needs equal sizes, got {a_flat.size} and {b_flat.size} elements.")
    if a_flat.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a_flat) + np.abs(b_flat))), TINY)
    return float(np.max(np.abs(a_flat - b_flat))) / scale


def numerical_gradient(f: Callable, x, h: float = 1e-5):
    """Central finite differences of a scalar function ``f`` at ``x``.

    ``x`` is a NumPy array or torch tensor (float64 recommended). Each element is
    perturbed in place to ``x ± h`` and restored, so ``f`` may be ``f(x)`` or a
    closure over ``x``. Returns an array/tensor shaped like ``x`` with
    ``(f(x + h e_i) - f(x - h e_i)) / 2h`` for each element ``i``. Costs ``2 x.size``
    calls of ``f``: meant for small problems.
    """
    if h <= 0:
        raise ValueError(f"step h must be > 0, got {h}.")
    is_tensor = isinstance(x, torch.Tensor)
    if is_tensor and x.requires_grad:
        raise ValueError("numerical_gradient perturbs x in place: pass x.detach() (or a clone).")
    grad = torch.zeros_like(x) if is_tensor else np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    if is_tensor and flat_x.data_ptr() != x.data_ptr():
        raise ValueError("numerical_gradient needs a contiguous x (call .contiguous()).")
    for i in range(flat_x.shape[0]):
        old = flat_x[i].item()
        flat_x[i] = old + h
        f_plus = float(f(x))
        flat_x[i] = old - h
        f_minus = float(f(x))
        flat_x[i] = old
        flat_g[i] = (f_plus - f_minus) / (2 * h)
    return grad


def autograd_gradients(loss_fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients of the scalar ``loss_fn(*tensors)`` with respect to each tensor, by torch.autograd.

    The inputs are not modified: autograd works on detached copies.
    """
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    loss = loss_fn(*leaves)
    if loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}.")
    return torch.autograd.grad(loss, leaves)


@dataclass(frozen=True)
class GradCheck:
    """Verdict of one gradient comparison; ``str()`` is a mode-independent line."""

    label: str
    error: float
    tol: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.error) and self.error <= self.tol)

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else f"FAIL (rel. error {self.error:.1e})"
        return f"{verdict}  {self.label}: rel. error <= {self.tol:.0e}"


def check_gradients(manual, reference, tol: float, label: str = "gradient") -> GradCheck:
    """Compare ``manual`` with ``reference`` (arrays, tensors or sequences of them) by ``rel_error``."""
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}.")
    return GradCheck(label=label, error=rel_error(manual, reference), tol=tol)


def finite_difference_gradients(loss_fn: Callable, *tensors, h: float = 1e-5) -> tuple:
    """Central-difference gradient of ``loss_fn(*tensors)`` with respect to each tensor.

    Works on copies, so the inputs are left untouched.
    """
    copies = [t.detach().clone() if isinstance(t, torch.Tensor) else np.array(t, dtype=np.float64)
              for t in tensors]
    grads = []
    for i, x in enumerate(copies):
        grads.append(numerical_gradient(lambda _x, i=i: loss_fn(*copies[:i], _x, *copies[i + 1:]), x, h))
    return tuple(grads)


# --------------------------------------------------------------------------------------
# Matrix chain (notebook 01)
# --------------------------------------------------------------------------------------
def _check_chain_shapes(X: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> None:
    if X.dim() != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be N x K with N >= 1 (one sample per row), got shape {tuple(X.shape)}.")
    K = X.shape[1]
    for name, M in (("A", A), ("B", B), ("C", C)):
        if tuple(M.shape) != (K, K):
            raise ValueError(
                f"{name} must be K x K = {K} x {K} to match X of shape {tuple(X.shape)}, "
                f"got {name} of shape {tuple(M.shape)}."
            )


def matrix_chain_forward(X, A, B, C) -> dict[str, torch.Tensor]:
    """Every intermediate of the chain for a batch ``X`` (N x K); each entry is N x K.

    Row-wise: ``Y = X Aᵀ, U = σ(Y), V = X Bᵀ, Z = U ⊙ V, W = Z Cᵀ``.
    """
    _check_chain_shapes(X, A, B, C)
    Y = X @ A.T
    U = torch.sigmoid(Y)
    V = X @ B.T
    Z = U * V
    W = Z @ C.T
    return {"Y": Y, "U": U, "V": V, "Z": Z, "W": W}


def matrix_chain_loss(X, A, B, C) -> torch.Tensor:
    """``L = (1/N) Σ_n ‖w_n‖²`` (a 0-dim tensor) for X N x K and A, B, C K x K."""
    W = matrix_chain_forward(X, A, B, C)["W"]
    return (W * W).sum() / X.shape[0]


def matrix_chain_grads(X, A, B, C) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dL/dA, dL/dB, dL/dC)``, each K x K, by the chain rule backwards through the chain.

    One line per Jacobian of notebook 01 (rows of every N x K matrix are samples):
    ``∂L/∂W = 2W/N``, ``∂L/∂C = (∂L/∂W)ᵀ Z``, ``∂L/∂Z = (∂L/∂W) C``,
    ``∂L/∂U = ∂L/∂Z ⊙ V``, ``∂L/∂V = ∂L/∂Z ⊙ U``, ``∂L/∂Y = ∂L/∂U ⊙ U ⊙ (1 - U)``,
    ``∂L/∂A = (∂L/∂Y)ᵀ X``, ``∂L/∂B = (∂L/∂V)ᵀ X``.
    """
    f = matrix_chain_forward(X, A, B, C)
    N = X.shape[0]
    dW = 2.0 * f["W"] / N  # ℓ = ‖w‖²  ->  ∂ℓ/∂w = 2w; the mean brings 1/N
    dC = dW.T @ f["Z"]  # w = C z  ->  ∂L/∂C = Σ_n (∂L/∂w_n) z_nᵀ
    dZ = dW @ C  # ∂L/∂z = Cᵀ ∂L/∂w, one row per sample
    dU = dZ * f["V"]  # z = u ⊙ v  ->  diagonal Jacobians diag(v), diag(u)
    dV = dZ * f["U"]
    dY = dU * f["U"] * (1.0 - f["U"])  # σ'(y) = σ(y)(1 - σ(y)), diagonal Jacobian
    dA = dY.T @ X  # y = A x  ->  ∂L/∂A = Σ_n (∂L/∂y_n) x_nᵀ
    dB = dV.T @ X  # v = B x  ->  ∂L/∂B = Σ_n (∂L/∂v_n) x_nᵀ
    return dA, dB, dC


def random_chain(K: int, N: int = 8, seed: int = 0, dtype=torch.float64):
    """A reproducible problem ``(X, A, B, C)``: X N x K standard normal, A, B, C K x K scaled by 1/√K."""
    if K < 1 or N < 1:
        raise ValueError(f"need K >= 1 and N >= 1, got K={K}, N={N}.")
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(N, K, generator=gen, dtype=dtype)
    A, B, C = (torch.randn(K, K, generator=gen, dtype=dtype) / K**0.5 for _ in range(3))
    return X, A, B, C


def check_matrix_chain(K: int, seed: int = 0, N: int = 8) -> tuple[GradCheck, GradCheck]:
    """Manual ``(dA, dB, dC)`` vs autograd (≤ 1e-10) and vs finite differences (≤ 1e-6), float64."""
    X, A, B, C = random_chain(K, N=N, seed=seed)
    manual = matrix_chain_grads(X, A, B, C)
    weights_only = lambda A_, B_, C_: matrix_chain_loss(X, A_, B_, C_)  # noqa: E731
    auto = autograd_gradients(weights_only, A, B, C)
    numeric = finite_difference_gradients(weights_only, A, B, C)
    where = f"K={K}, seed={seed}"
    return (check_gradients(manual, auto, AUTOGRAD_TOL, f"manual vs autograd ({where})"),
            check_gradients(manual, numeric, FINITE_DIFF_TOL, f"manual vs finite differences ({where})"))


GRADIENT_SOURCES = ("manual", "autograd")


def matrix_chain_descent(X, A, B, C, lr: float, epochs: int, gradients: str = "manual"):
    """Full-batch gradient descent on A, B, C; returns ``(losses, (A, B, C))``.

    ``losses[0]`` is the loss at the start and ``losses[t]`` after ``t`` steps
    (``epochs + 1`` values). ``gradients`` is ``"manual"`` (:func:`matrix_chain_grads`)
    or ``"autograd"``. The inputs are not modified.
    """
    if gradients not in GRADIENT_SOURCES:
        raise ValueError(f"gradients={gradients!r}; valid choices: {', '.join(GRADIENT_SOURCES)}.")
    if epochs < 0 or not lr > 0:
        raise ValueError(f"need epochs >= 0 and lr > 0, got epochs={epochs}, lr={lr}.")
    A, B, C = (M.detach().clone() for M in (A, B, C))
    weights_only = lambda A_, B_, C_: matrix_chain_loss(X, A_, B_, C_)  # noqa: E731
    losses = [float(matrix_chain_loss(X, A, B, C))]
    for _ in range(epochs):
        if gradients == "manual":
            grads = matrix_chain_grads(X, A, B, C)
        else:
            grads = autograd_gradients(weights_only, A, B, C)
        for M, dM in zip((A, B, C), grads):
            M.sub_(lr * dM)
        losses.append(float(matrix_chain_loss(X, A, B, C)))
    return losses, (A, B, C)

