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

import time
from collections.abc import Callable, Sequence
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
# Exercise reports (every grader uses one)
# --------------------------------------------------------------------------------------
class Exercise:
    """The checks of one exercise: one printed line per check, AssertionError if any failed.

    Use as ``with Exercise("02-backpropagation") as ex: ex.check("dW1", ok, "rel. error 3e-17")``.
    ``ex.call(name, fn, *args)`` runs student code and turns any exception into a failed check
    (returns None), so the remaining checks still run and report.
    """

    def __init__(self, grade_id: str):
        self.grade_id = grade_id
        self.failures: list[str] = []

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        passed = bool(passed)
        print(f"{'PASS' if passed else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))
        if not passed:
            self.failures.append(name)
        return passed

    def call(self, name: str, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)``, or a failed check naming the exception (then None)."""
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            self.check(name, False, "not implemented yet (the solution region still raises NotImplementedError)")
        except Exception as err:  # noqa: BLE001 - any student error is a failed check
            self.check(name, False, f"raised {type(err).__name__}: {err}")
        return None

    def signature(self, fn: Callable, params: Sequence[str]) -> bool:
        """Check that ``fn`` takes the named parameters first, in this order."""
        import inspect

        try:
            names = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            names = None
        ok = names is not None and names[:len(params)] == list(params)
        return self.check(f"signature of {getattr(fn, '__name__', fn)}", ok,
                          f"expected ({', '.join(params)}), got ({', '.join(names or ['?'])})")

    def shape(self, name: str, value, expected: Sequence[int]) -> bool:
        """Check that ``value`` has ``.shape == expected``."""
        got = tuple(getattr(value, "shape", ())) if value is not None else None
        return self.check(f"shape of {name}", got == tuple(expected), f"expected {tuple(expected)}, got {got}")

    def __enter__(self) -> Exercise:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not issubclass(exc_type, AssertionError):
            self.check("grader", False, f"stopped by {exc_type.__name__}: {exc}")
            exc = None
        if exc is None and self.failures:
            raise AssertionError(f"{self.grade_id}: {len(self.failures)} check(s) failed: {', '.join(self.failures)}")
        return exc is None and exc_type is not None


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



# --------------------------------------------------------------------------------------
# MLP backprop (notebook 02)
# --------------------------------------------------------------------------------------
# Nielsen's four equations, with one sample per row (Δ_l is N x n_l, row n = δ_l of sample n):
#   BP1  δ_L = ∇_a C ⊙ f'(z_L)                 here ∇_a C = 2 (ŷ - y) for C = Σ (ŷ - y)²
#   BP2  δ_l = (W_{l+1}ᵀ δ_{l+1}) ⊙ f'(z_l)    batched: Δ_l = (Δ_{l+1} W_{l+1}) ⊙ f'(Z_l)
#   BP3  ∂C/∂b_l = δ_l                          batched: sum of the rows of Δ_l
#   BP4  ∂C/∂W_l = δ_l a_{l-1}ᵀ                 batched: Δ_lᵀ A_{l-1}
def _one(like: torch.Tensor) -> torch.Tensor:
    return torch.ones((), dtype=like.dtype, device=like.device)


def _times_activation_derivative_(delta: torch.Tensor, name: str, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``delta ⊙ f'(z)`` in place, with ``f'`` written from the stored ``z`` or ``a = f(z)``.

    relu'(z) = 1 if z > 0 else 0 (so relu'(0) = 0, as in torch.autograd), which is
    sign(a) because a = max(z, 0) >= 0; tanh'(z) = 1 - a²; sigmoid'(z) = a (1 - a);
    identity'(z) = 1.
    """
    if name == "relu":  # sign(a): a vectorised 0/1 mask (a masked_fill on z <= 0 is ~30x slower on CPU)
        return delta.mul_(torch.sign(a))
    if name == "tanh":  # 1 - a², in one pass: addcmul(1, a, a, value=-1)
        return delta.mul_(torch.addcmul(_one(a), a, a, value=-1.0))
    if name == "sigmoid":  # a - a², in one pass
        return delta.mul_(torch.addcmul(a, a, a, value=-1.0))
    if name == "identity":
        return delta
    raise ValueError(f"unknown activation {name!r}; valid choices: relu, tanh, sigmoid, identity.")


def _write_grad(param: torch.Tensor, compute, *args) -> None:
    """``param.grad = compute(*args)``, reusing an existing ``.grad`` buffer as ``out=``."""
    grad = param.grad
    if grad is not None and grad.shape == param.shape and grad.dtype == param.dtype and grad.is_contiguous():
        compute(*args, out=grad)
    else:
        param.grad = compute(*args)


def _check_backprop_inputs(model, y_true: torch.Tensor, y_pred: torch.Tensor) -> None:
    if not getattr(model, "a", None) or len(model.a) != len(model.layers) + 1:
        raise ValueError("backpropagation needs the activations of a forward pass: call y_pred = model(x) first.")
    out_shape = tuple(model.a[-1].shape)
    if tuple(y_pred.shape) != out_shape or tuple(y_true.shape) != out_shape:
        raise ValueError(
            f"y_true and y_pred must have the shape of the last forward output {out_shape}, "
            f"got y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)}."
        )


@torch.no_grad()
def backpropagation(model, y_true: torch.Tensor, y_pred: torch.Tensor) -> None:
    """Write ``∂L/∂W_l`` and ``∂L/∂b_l`` into ``.grad`` of every layer of ``model``, by hand.

    ``L = ((y_pred - y_true) ** 2).sum()`` (summed over batch and outputs). ``model`` is a
    :class:`helpers.models.MyNet` after ``y_pred = model(x)``: its ``layers``,
    ``activations`` and the stored ``z`` (pre-activations) and ``a`` (activations,
    ``a[0] = x``) of that call are all backprop needs. ``y_true``, ``y_pred``: N x n_out.
    Existing ``.grad`` values are overwritten, not accumulated (unlike ``loss.backward()``).
    """
    _check_backprop_inputs(model, y_true, y_pred)
    layers, names, z, a = model.layers, model.activations, model.z, model.a
    L = len(layers)
    # BP1: output error δ_L = ∂C/∂a_L ⊙ f_L'(z_L), with ∂C/∂a_L = 2 (ŷ - y).
    delta = torch.sub(y_pred, y_true).mul_(2.0)
    _times_activation_derivative_(delta, names[L - 1], z[L - 1], a[L])
    for l in range(L - 1, -1, -1):  # 0-based: layers[l] maps a[l] -> z[l], a[l + 1]
        layer = layers[l]
        # BP4: ∂C/∂W = Δᵀ A_prev (sums the per-sample outer products δ a_prevᵀ).
        _write_grad(layer.weight, torch.mm, delta.t(), a[l])
        # BP3: ∂C/∂b = δ, summed over the batch.
        if layer.bias is not None:
            _write_grad(layer.bias, torch.sum, delta, 0)
        if l > 0:
            # BP2: error of the previous layer, δ_prev = (Wᵀ δ) ⊙ f'(z_prev); batched Δ W.
            delta = torch.mm(delta, layer.weight)
            _times_activation_derivative_(delta, names[l - 1], z[l - 1], a[l])


def sum_squared_error(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """``L = Σ (ŷ - y)²`` over batch and outputs: the loss of notebook 02 (0-dim tensor)."""
    return ((y_pred - y_true) ** 2).sum()


def autograd_backward(model, x: torch.Tensor, y_true: torch.Tensor) -> None:
    """The reference: ``.grad`` of every parameter of ``model`` from ``loss.backward()``, same loss."""
    model.zero_grad(set_to_none=True)
    y_pred = model(x)
    sum_squared_error(y_pred, y_true).backward()


def manual_backward(model, x: torch.Tensor, y_true: torch.Tensor) -> None:
    """Forward (storing z, a) and :func:`backpropagation`: the same ``.grad`` without autograd."""
    with torch.no_grad():
        y_pred = model(x)
    backpropagation(model, y_true, y_pred)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_backprop(model, batch_size: int, repeats: int = 21, warmup: int = 3, seed: int = 0) -> dict[str, float]:
    """Median seconds of one backward pass, manual vs ``loss.backward()``, measured interleaved.

    For each repeat a fresh forward pass is run untimed (with the autograd graph for
    autograd, without it for manual), then only the backward part is timed:
    ``backpropagation(...)`` vs ``sum_squared_error(y_pred, y).backward()``.
    The order of the two alternates between repeats. Also times the whole step
    (forward + backward). Returns medians ``manual_s, autograd_s, ratio`` (manual /
    autograd, backward only) and ``manual_step_s, autograd_step_s, step_ratio``.
    """
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"need batch_size >= 1 and repeats >= 1, got {batch_size} and {repeats}.")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, model.sizes[0], generator=gen, dtype=dtype).to(device)
    y = torch.randn(batch_size, model.sizes[-1], generator=gen, dtype=dtype).to(device)

    def run_manual() -> tuple[float, float]:
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            y_pred = model(x)
        _sync(device)
        t1 = time.perf_counter()
        backpropagation(model, y, y_pred)
        _sync(device)
        t2 = time.perf_counter()
        return t2 - t1, t2 - t0

    def run_autograd() -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        _sync(device)
        t0 = time.perf_counter()
        y_pred = model(x)
        _sync(device)
        t1 = time.perf_counter()
        sum_squared_error(y_pred, y).backward()
        _sync(device)
        t2 = time.perf_counter()
        return t2 - t1, t2 - t0

    for _ in range(warmup):
        run_manual()
        run_autograd()
    manual, auto = [], []
    for rep in range(repeats):
        if rep % 2 == 0:
            manual.append(run_manual())
            auto.append(run_autograd())
        else:
            auto.append(run_autograd())
            manual.append(run_manual())
    m_back, m_step = (float(np.median(v)) for v in zip(*manual))
    a_back, a_step = (float(np.median(v)) for v in zip(*auto))
    return {"batch_size": batch_size, "manual_s": m_back, "autograd_s": a_back, "ratio": m_back / a_back,
            "manual_step_s": m_step, "autograd_step_s": a_step, "step_ratio": m_step / a_step}


def numerical_parameter_gradients(model, x: torch.Tensor, y_true: torch.Tensor, h: float = 1e-6) -> list:
    """Central finite differences of ``sum_squared_error(model(x), y_true)`` for each parameter, in order.

    Perturbs each parameter's data in place and restores it; use float64 and small models.
    """
    def loss(_) -> float:
        with torch.no_grad():
            return float(sum_squared_error(model(x), y_true))

    return [numerical_gradient(loss, p.data, h) for p in model.parameters()]


def autograd_tolerance(dtype: torch.dtype) -> float:
    """Manual vs autograd tolerance: 1e-10 in float64, 1e-4 in float32."""
    if dtype == torch.float64:
        return AUTOGRAD_TOL
    if dtype == torch.float32:
        return 1e-4
    raise ValueError(f"gradient checks run in float64 or float32, got {dtype}.")


def check_backprop(model, x: torch.Tensor, y_true: torch.Tensor, finite_differences: bool = False,
                   label: str = "") -> list[GradCheck]:
    """``backpropagation`` vs ``loss.backward()`` (and, if asked, vs finite differences), all parameters.

    Tolerances: :func:`autograd_tolerance` of the model's dtype; ``FINITE_DIFF_TOL``
    for finite differences (needs float64). Leaves the manual gradients in ``.grad``.
    """
    dtype = next(model.parameters()).dtype
    autograd_backward(model, x, y_true)
    reference = [p.grad.clone() for p in model.parameters()]
    manual_backward(model, x, y_true)
    manual = [p.grad.clone() for p in model.parameters()]
    label = label or f"{list(model.sizes)} {list(model.activations)}, batch {x.shape[0]}"
    checks = [check_gradients(manual, reference, autograd_tolerance(dtype), f"{label}: manual vs autograd")]
    if finite_differences:
        if dtype != torch.float64:
            raise ValueError(f"finite-difference checks need float64, the model is {dtype}.")
        numeric = numerical_parameter_gradients(model, x, y_true)
        checks.append(check_gradients(manual, numeric, FINITE_DIFF_TOL, f"{label}: manual vs finite differences"))
        manual_backward(model, x, y_true)  # leave the manual gradients in .grad
    return checks
