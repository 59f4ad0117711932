"""Hand-written gradients and the gradient checks that keep them honest.

Three sections:

* **Gradient checks** (used by every notebook that writes a gradient by hand):
  ``numerical_gradient`` (central finite differences, NumPy or torch),
  ``rel_error``, ``autograd_gradients`` and ``finite_difference_gradients``.
* **Graders of notebooks 01 and 02**: the matrix chain (loss, gradients, central differences)
  and ``backpropagation`` for :class:`helpers.models.MyNet`, each against autograd, finite
  differences and a pinned hand-computed case. The taught code itself lives in the notebooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
# Matrix chain (notebook 01): graders; the reference loss runs one sample at a time
# --------------------------------------------------------------------------------------
def _chain_loss(X, A, B, C):
    return sum(((C @ (torch.sigmoid(A @ x) * (B @ x))) ** 2).sum() for x in X) / X.shape[0]


def _chain_problems():
    """``(label, X, A, B, C)``, float64, N != K: standard inputs, then 5*randn+12 with a second seed."""
    for seed, N, K, scale, shift in ((0, 5, 3, 1, 0), (1, 7, 4, 5, 12)):
        gen = torch.Generator().manual_seed(seed)
        X = scale * torch.randn(N, K, generator=gen, dtype=torch.float64) + shift
        yield (f"N={N}, K={K}, X={scale}*randn+{shift}", X,
               *(torch.randn(K, K, generator=gen, dtype=torch.float64) / K**0.5 for _ in range(3)))


PINNED_CHAIN = [torch.tensor(v, dtype=torch.float64) for v in ([[1.0], [2.0]], [[0.0]], [[1.0]], [[2.0]])]


def _compare_each(ex: Exercise, names, got, reference, tol: float, where: str) -> None:
    for name, g, r in zip(names, got, reference):
        err = rel_error(g, r)
        ex.check(f"{name} {where}", err <= tol, f"rel. error {err:.1e}, tolerance {tol:.0e}")


def grade_matrix_chain_loss(fn: Callable) -> None:
    """``matrix_chain_loss(X, A, B, C)``: a 0-dim tensor equal to the per-sample definition; a pinned case."""
    with Exercise("01-matrix-chain-loss-check") as ex:
        ex.signature(fn, ["X", "A", "B", "C"])
        for label, X, A, B, C in _chain_problems():
            if ex.shape(f"loss ({label})", L := ex.call(f"loss ({label})", fn, X, A, B, C), ()):
                _compare_each(ex, ["loss"], [L], [_chain_loss(X, A, B, C)], AUTOGRAD_TOL, f"vs per-sample sum ({label})")
        L = ex.call("pinned case", fn, *PINNED_CHAIN)
        _compare_each(ex, ["loss"], [L], [2.5], 1e-15, "pinned X=[[1],[2]], A=0, B=1, C=2")


def grade_matrix_chain_grads(fn: Callable) -> None:
    """``matrix_chain_grads``: shapes, then dA, dB, dC each vs autograd and finite differences; a pinned case."""
    with Exercise("01-matrix-chain-grads-check") as ex:
        ex.signature(fn, ["X", "A", "B", "C"])
        for i, (label, X, A, B, C) in enumerate(_chain_problems()):
            got = ex.call(f"matrix_chain_grads ({label})", fn, X, A, B, C)
            shapes = [ex.shape(f"d{n}", g, M.shape) for n, g, M in zip("ABC", [*(got or ()), None, None], (A, B, C))]
            if got is None or not all(shapes):
                continue
            loss = lambda *M, X=X: _chain_loss(X, *M)  # noqa: E731 - the grader's loss, never the student's
            auto = autograd_gradients(loss, A, B, C)
            _compare_each(ex, ["dA", "dB", "dC"], got, auto, AUTOGRAD_TOL, f"vs autograd ({label})")
            if i == 0:
                fd = finite_difference_gradients(loss, A, B, C)
                _compare_each(ex, ["dA", "dB", "dC"], got, fd, FINITE_DIFF_TOL, f"vs finite differences ({label})")
        got = ex.call("pinned case", fn, *PINNED_CHAIN) or [None] * 3
        _compare_each(ex, ["dA", "dB", "dC"], got, [4.5, 5.0, 2.5], 1e-15, "pinned X=[[1],[2]], A=0, B=1, C=2")


def grade_central_difference(fn: Callable) -> None:
    """``central_difference(f, x, h)``: exact on a quadratic (a one-sided difference is not), O(h²) on sin."""
    with Exercise("01-central-difference-check") as ex:
        ex.signature(fn, ["f", "x", "h"])
        x = torch.tensor([[0.3, -1.2, 2.0], [0.5, 0.0, -0.7]], dtype=torch.float64)
        c, x_before = torch.arange(1.0, 7.0, dtype=torch.float64).view(2, 3), x.clone()
        for name, f, exact, h in (("Σ c x²", lambda t: (c * t**2).sum(), 2 * c * x, 1e-3),
                                  ("Σ sin x", lambda t: torch.sin(t).sum(), torch.cos(x), 1e-5)):
            if ex.shape(f"gradient of {name}", got := ex.call(f"gradient of {name}", fn, f, x, h), x.shape):
                _compare_each(ex, [f"gradient of {name}"], [got], [exact], 1e-9, f"vs exact derivative, h={h:g}")
        ex.check("x unchanged after the calls", torch.equal(x, x_before), "restore each perturbed element")


def grade_dropped_mean(fn: Callable) -> None:
    """``rel_error_without_mean(N)``: the rel. error of N·g against g, as measured here on a random g."""
    with Exercise("01-dropped-mean-check") as ex:
        g, Ns = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), (1, 2, 6, 100)
        _compare_each(ex, [f"N={N}" for N in Ns], [ex.call(f"N={N}", fn, N) for N in Ns],
                      [rel_error(N * g, g) for N in Ns], 1e-12, "vs measured rel. error")


def grade_derivative_errors(fn: Callable) -> None:
    """``derivative_errors(f, df, x, hs)`` on f = exp·sin at 0.7: autograd exact to 4 ulp, FD errors as measured."""
    with Exercise("01-derivative-errors-check") as ex:
        f, df = (lambda t: torch.exp(t) * torch.sin(t)), (lambda t: torch.exp(t) * (torch.sin(t) + torch.cos(t)))
        x, hs = torch.tensor(0.7, dtype=torch.float64), [0.1, 0.01, 0.001]  # truncation dominates at these h
        auto, fd = ex.call("derivative_errors", fn, f, df, x, hs) or (np.nan, [np.nan] * 3)
        ex.check("autograd error <= 4 ulp", 0 <= auto <= 4 * np.spacing(float(df(x))), f"got {auto}")
        want = [abs(float((f(x + h) - f(x - h)) / (2 * h) - df(x))) for h in hs]
        _compare_each(ex, [f"FD error at h={h:g}" for h in hs], fd, want, 1e-3, "vs measured")


# --------------------------------------------------------------------------------------
# MLP backprop (notebook 02): graders against autograd and finite differences, float64
# --------------------------------------------------------------------------------------
def _mynet(sizes, activations, seed: int):
    from helpers.models import MyNet

    torch.manual_seed(seed)
    return MyNet(sizes, activations, dtype=torch.float64)


def _run_backprop(ex: Exercise, fn: Callable, model, x, y, where: str, clear: bool = True):
    """No-grad forward, then the student's ``fn``: the list of ``.grad`` if each has its parameter's shape."""
    if clear:
        model.zero_grad(set_to_none=True)
    with torch.no_grad():
        y_pred = model(x)
    if ex.call(f"backpropagation ({where})", lambda: (fn(model, y, y_pred), True)[1]) is None:
        return None
    bad = [f"{n}.grad is {None if p.grad is None else tuple(p.grad.shape)}, expected {tuple(p.shape)}"
           for n, p in model.named_parameters() if p.grad is None or p.grad.shape != p.shape]
    ok = ex.check(f"every .grad has its parameter's shape ({where})", not bad, "; ".join(bad))
    return [p.grad.detach().clone() for p in model.parameters()] if ok else None


def grade_backpropagation(fn: Callable) -> None:
    """``backpropagation(model, y_true, y_pred)``: each ``.grad`` vs autograd and finite differences; worked example."""
    with Exercise("02-backpropagation-check") as ex, torch.random.fork_rng(devices=[]):
        ex.signature(fn, ["model", "y_true", "y_pred"])
        for seed, scale, shift in ((0, 1, 0), (1, 5, 12)):
            model = _mynet([4, 6, 5, 5, 3], ["relu", "tanh", "sigmoid", "identity"], seed)
            x, y = scale * torch.randn(7, 4, dtype=torch.float64) + shift, torch.randn(7, 3, dtype=torch.float64)
            names, where = [f"{n}.grad" for n, _ in model.named_parameters()], f"N=7, x={scale}*randn+{shift}"
            if (got := _run_backprop(ex, fn, model, x, y, where)) is None:
                continue
            auto = torch.autograd.grad(((model(x) - y) ** 2).sum(), list(model.parameters()))
            _compare_each(ex, names, got, auto, AUTOGRAD_TOL, f"vs autograd ({where})")
            if seed == 0:
                with torch.no_grad():
                    sse = lambda _, m=model, x=x, y=y: ((m(x) - y) ** 2).sum()  # noqa: E731
                    fd = [numerical_gradient(sse, p.data, 1e-6) for p in model.parameters()]
                _compare_each(ex, names, got, fd, FINITE_DIFF_TOL, f"vs finite differences ({where})")
                again = _run_backprop(ex, fn, model, x, y, "called twice", clear=False)
                ex.check("a second call overwrites .grad (no adding)",
                         again is not None and all(map(torch.equal, again, got)))
        tiny = _mynet([2, 2, 1], ["relu", "identity"], 0)
        with torch.no_grad():
            for p, v in zip(tiny.parameters(), ([[0.5, -1.0], [1.5, 0.25]], [0.1, -0.2], [[1.0, -2.0]], [0.3])):
                p.copy_(torch.tensor(v, dtype=torch.float64))
        x, y = torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[0.5]], dtype=torch.float64)
        got = _run_backprop(ex, fn, tiny, x, y, "worked example")
        want = [torch.tensor(w, dtype=torch.float64) for w in ([[0, 0], [15.2, 30.4]], [0, 15.2], [[0, -13.68]], [-7.6])]
        if got is not None:
            _compare_each(ex, [f"{n}.grad" for n, _ in tiny.named_parameters()], got, want, 1e-12, "worked example")


def grade_transposed_gradient(fn: Callable) -> None:
    """"Break it": ``fn`` transposes each square weight gradient; grade_backpropagation must fail on those alone."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as report, contextlib.suppress(AssertionError):
        grade_backpropagation(fn)
    fails = {ln[6:].split(" (")[0].split(":")[0] for ln in report.getvalue().splitlines() if ln.startswith("FAIL")}
    want = {"layers.2.weight.grad vs autograd", "layers.2.weight.grad vs finite differences",
            "layers.0.weight.grad worked example"}  # the square layers: 5 x 5 in [4, 6, 5, 5, 3], 2 x 2 in [2, 2, 1]
    with Exercise("02-transposed-gradient-check") as ex:
        ex.check("grade_backpropagation fails exactly on the square weight gradients", fails == want,
                 f"failed: {sorted(fails)}; expected: {sorted(want)}")


def grade_layer_error_norms(fn: Callable) -> None:
    """``layer_error_norms(model, x, y_true)``: ‖Δˡ‖ of each layer vs autograd's ∂C/∂zˡ, batch 1 and 9."""
    with Exercise("02-layer-error-norms-check") as ex, torch.random.fork_rng(devices=[]):
        model = _mynet([4, 6, 6, 6, 2], ["sigmoid", "relu", "tanh", "identity"], 0)
        for N in (1, 9):
            x, y = torch.randn(N, 4, dtype=torch.float64), torch.randn(N, 2, dtype=torch.float64)
            got = ex.call(f"layer_error_norms (batch {N})", fn, model, x, y)
            want = [d.norm() for d in torch.autograd.grad(((model(x) - y) ** 2).sum(), model.z)]
            if ex.check(f"one norm per layer (batch {N})", got is not None and len(got) == 4, f"got {got}"):
                _compare_each(ex, [f"‖δ^{n}‖" for n in range(1, 5)], got, want, 1e-10, f"vs autograd (batch {N})")


# --------------------------------------------------------------------------------------
# Batch norm (notebook 06): graders against nn.BatchNorm1d and autograd, in float64
# --------------------------------------------------------------------------------------
def _close(ex: Exercise, name: str, got, ref: torch.Tensor, tol: float = AUTOGRAD_TOL) -> bool:
    """One line: ``got`` (or ``got[0]`` of a tuple) is a tensor shaped like ``ref`` within ``rel_error <= tol``."""
    got = got[0] if isinstance(got, tuple) and got else got
    shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
    if shape != tuple(ref.shape):
        return ex.check(name, False, f"expected a tensor of shape {tuple(ref.shape)}, got {shape}")
    return ex.check(name, rel_error(got, ref) <= tol, f"rel. error {rel_error(got, ref):.1e}")


def _bn_inputs(seed: int, N: int, D: int) -> list[torch.Tensor]:
    """float64 ``x`` (N x D, 5 randn + 12), ``gamma`` (D, 1 + randn), ``beta`` (D, 0.5 + randn), ``dout`` (N x D)."""
    g = torch.Generator().manual_seed(seed)
    return [a * torch.randn(s, generator=g, dtype=torch.float64) + b
            for s, a, b in (((N, D), 5, 12), (D, 1, 1), (D, 1, 0.5), ((N, D), 1, 0))]


def grade_batchnorm_forward(batchnorm_forward: Callable) -> None:
    """Two training batches, then eval mode, against ``nn.BatchNorm1d``; then the hand case x = [1, 3]."""
    with Exercise("06-batchnorm-forward-check") as ex:
        ex.signature(batchnorm_forward, ["x", "gamma", "beta", "running_mean", "running_var", "momentum", "eps"])
        x, gamma, beta, _ = _bn_inputs(seed=0, N=6, D=4)
        bn = torch.nn.BatchNorm1d(4, dtype=torch.float64)  # momentum 0.1, eps 1e-5, running stats start at 0, 1
        bn.weight.data, bn.bias.data, mean, var = gamma, beta, bn.running_mean.clone(), bn.running_var.clone()
        for name, batch, training in (("batch 1", x, True), ("batch 2", 3 - 0.5 * x, True), ("eval", x, False)):
            out = ex.call(f"out ({name})", batchnorm_forward, batch, gamma, beta, mean, var, 0.1, 1e-5, training)
            _close(ex, f"out ({name})", out, bn.train(training)(batch).detach())
            _close(ex, f"running_mean (after {name})", mean, bn.running_mean)
            _close(ex, f"running_var (after {name})", var, bn.running_var)
        stats = torch.tensor([0.0, 1.0], dtype=torch.float64)  # by hand: mean 2, variance 1 (biased), 2 (unbiased)
        out = ex.call("hand case", batchnorm_forward, torch.tensor([[1.0], [3.0]], dtype=torch.float64),
                      2 * stats[1:], stats[1:].clone(), stats[:1], stats[1:])
        _close(ex, "hand case x = [1, 3], gamma 2, beta 1 -> out [-1, 3]", out, torch.tensor([[-1.0], [3.0]], dtype=torch.float64), 1e-5)
        _close(ex, "hand case -> running_mean 0.2, running_var 1.1", stats, torch.tensor([0.2, 1.1], dtype=torch.float64))


def grade_batchnorm_backward(batchnorm_backward: Callable) -> None:
    """``(dx, dgamma, dbeta)`` against autograd through ``F.batch_norm``; the grader builds the cache itself."""
    with Exercise("06-batchnorm-backward-check") as ex:
        ex.signature(batchnorm_backward, ["dout", "cache"])
        x, gamma, beta, dout = _bn_inputs(seed=1, N=7, D=3)
        x_hat = torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-5)
        cache = (x_hat, gamma, 1 / torch.sqrt(x.var(0, unbiased=False) + 1e-5))  # the layout of the docstring
        loss = lambda *p: (torch.nn.functional.batch_norm(p[0], None, None, p[1], p[2], True) * dout).sum()  # noqa: E731
        res = ex.call("batchnorm_backward", batchnorm_backward, dout, cache)
        res = res if isinstance(res, tuple) and len(res) == 3 else (None,) * 3
        for name, got, ref in zip(("dx", "dgamma", "dbeta"), res, autograd_gradients(loss, x, gamma, beta)):
            _close(ex, f"{name} vs autograd", got, ref)


def grade_eval_logits(eval_logits: Callable) -> None:
    """``eval_logits(model, x)`` for a batch-norm + dropout model handed over in training mode."""
    with Exercise("06-forget-eval-check") as ex, torch.random.fork_rng():
        torch.manual_seed(0)
        x, nn = 5 * torch.randn(9, 5, dtype=torch.float64) + 12, torch.nn
        model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
        model(x + 1)  # in training mode: the running statistics move away from 0 and 1
        before, reference = [t.clone() for t in model.state_dict().values()], model.eval()(x).detach()
        out = ex.call("eval_logits", eval_logits, model.train(), x)
        _close(ex, "logits in eval mode (running statistics, no dropout)", out, reference)
        ex.check("running_mean, running_var unchanged", all(map(torch.equal, model.state_dict().values(), before)))
        ex.check("model back in training mode", model.training)
        ex.check("no autograd graph kept", isinstance(out, torch.Tensor) and not out.requires_grad)


# --------------------------------------------------------------------------------------
# SGD (notebook 03): the student's update against torch.optim.SGD on the same small net
# --------------------------------------------------------------------------------------
SGD_SETTINGS = {"plain": {}, "momentum": {"momentum": 0.9}, "dampening": {"momentum": 0.9, "dampening": 0.3},
                "weight decay": {"weight_decay": 0.05}, "nesterov": {"momentum": 0.9, "nesterov": True},
                "combined": {"momentum": 0.8, "dampening": 0.2, "weight_decay": 0.01},
                "nesterov + weight decay": {"momentum": 0.5, "weight_decay": 0.01, "nesterov": True}}
BAD_SGD_SETTINGS = [{"lr": -0.1}, {"lr": 0.1, "momentum": -0.5}, {"lr": 0.1, "weight_decay": -1e-4},
                    {"lr": 0.1, "nesterov": True}, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}]


def sgd_trajectory(make_opt: Callable, lr_decay: float = 1.0, zero_grad: bool = True) -> list[dict]:
    """Parameters of a seeded 40-30-10 ReLU net after each of 4 steps on one batch by ``make_opt(params)``
    (an optimizer, or a function ``step()``), with an ExponentialLR(gamma=lr_decay) schedule if lr_decay != 1."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(40, 30), torch.nn.ReLU(), torch.nn.Linear(30, 10))
        x, y = torch.randn(16, 40), torch.randn(16, 10)
    opt, trajectory = make_opt(net.parameters()), []
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay) if lr_decay != 1 else None
    for _ in range(4):
        if zero_grad:
            net.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        getattr(opt, "step", opt)()
        if schedule is not None:
            schedule.step()  # writes the new lr into opt.param_groups
        trajectory.append({name: p.detach().clone() for name, p in net.named_parameters()})
    return trajectory


def _check_trajectory(ex: Exercise, name: str, make_opt: Callable, reference: dict, exact: bool = True,
                      lr_decay: float = 1.0, ref_zero_grad: bool = True) -> bool:
    """One check: ``make_opt`` follows ``torch.optim.SGD(**reference)`` step by step (torch.equal or allclose)."""
    ref = sgd_trajectory(lambda ps: torch.optim.SGD(ps, **reference), lr_decay, ref_zero_grad)
    got = ex.call(name, sgd_trajectory, make_opt, lr_decay)
    same = torch.equal if exact else lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    for step, (g, r) in enumerate(zip(got or [], ref), start=1):
        if bad := [k for k in r if not same(g[k], r[k])]:
            return ex.check(name, False, f"after step {step}, {bad[0]} differs in {(g[bad[0]] != r[bad[0]]).sum()} "
                                         f"of {r[bad[0]].numel()} elements")
    return got is not None and ex.check(name, True, f"{'torch.equal' if exact else 'allclose'} to torch.optim.SGD "
                                                    f"after each of {len(ref)} steps")


def _raised(opt_cls, kwargs: dict) -> str:
    try:
        opt_cls([torch.nn.Parameter(torch.ones(1))], **kwargs)
    except Exception as err:  # noqa: BLE001 - whatever happens is reported
        return f"{type(err).__name__}({str(err)!r})"
    return "no error"


def grade_sgd_step(sgd_step: Callable) -> None:
    """``sgd_step(params, lr)`` vs ``torch.optim.SGD(params, lr)``, allclose: ``p - lr*g`` rounds its own way."""
    import functools

    with Exercise("03-sgd-step-check") as ex:
        if ex.signature(sgd_step, ["params", "lr"]):
            for lr in (0.1, 0.02):
                _check_trajectory(ex, f"lr={lr}", lambda ps, lr=lr: functools.partial(sgd_step, list(ps), lr),
                                  {"lr": lr}, exact=False)


def grade_manual_sgd(cls) -> None:
    """``ManualSGD`` vs ``torch.optim.SGD`` by torch.equal: each setting, a changing lr, invalid settings."""
    with Exercise("03-manual-sgd-check") as ex:
        ex.check("subclass of torch.optim.Optimizer", isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer))
        ex.signature(cls, ["params", "lr", "momentum", "dampening", "weight_decay", "nesterov"])
        for name, kw in [*SGD_SETTINGS.items(), ("combined, ExponentialLR schedule (lr halved each step)", SGD_SETTINGS["combined"])]:
            _check_trajectory(ex, name, lambda ps, kw=kw: cls(ps, lr=0.1, **kw), {"lr": 0.1, **kw},
                              lr_decay=0.5 if "halved" in name else 1.0)
        for bad in BAD_SGD_SETTINGS:
            expected, got = _raised(torch.optim.SGD, bad), _raised(cls, bad)
            ex.check(f"{bad} rejected as torch does", expected == got, f"expected {expected}, got {got}")


def grade_forgot_zero_grad(settings: dict) -> None:
    """``settings``: keyword arguments of torch.optim.SGD(lr=0.1, ...) that redo a plain-SGD loop without zero_grad."""
    with Exercise("03-forgot-zero-grad-check") as ex:
        _check_trajectory(ex, f"SGD(lr=0.1, **{settings!r}) vs plain SGD without zero_grad",
                          lambda ps: torch.optim.SGD(ps, lr=0.1, **settings), {"lr": 0.1}, exact=False, ref_zero_grad=False)


# --------------------------------------------------------------------------------------
# NumPy MLP (notebook 05)
# --------------------------------------------------------------------------------------
def _reference_activations(cls):
    """Swap the notebook's sigmoid, sigmoid_grad and softmax for torch's while another region is graded."""
    from unittest import mock
    return mock.patch.dict(cls.__init__.__globals__, {"sigmoid_grad": lambda H: H * (1 - H),
                                                      "sigmoid": lambda Z: torch.sigmoid(torch.as_tensor(Z)).numpy(),
                                                      "softmax": lambda Z: torch.softmax(torch.as_tensor(Z), 1).numpy()})


def _numpy_problem(ex: Exercise, cls, act=torch.sigmoid):
    """float64 cls(12, 7, 5) with biases != 0; X = 5 randn + 12 (9 x 12), labels y, torch copies of W1, b1, W2, b2."""
    net = ex.call("NumpyMLP(12, 7, 5, seed=0, dtype=float64)", cls, 12, 7, 5, 0, np.float64)
    rng = np.random.default_rng(100)
    if net is not None:
        net.b1, net.b2 = rng.normal(0, 0.5, 7), rng.normal(0, 0.5, 5)
    X, y = torch.tensor(5 * rng.normal(size=(9, 12)) + 12), torch.tensor(rng.integers(0, 5, 9))
    return net, X, y, [torch.tensor(getattr(net, n, np.zeros(1)), requires_grad=True) for n in ("W1", "b1", "W2", "b2")]


def _compare(ex: Exercise, name: str, mine, ref: torch.Tensor, tol: float = 1e-12, what: str = "torch") -> None:
    """One line: ``mine`` against ``ref``, first its shape, then rel_error <= tol."""
    if getattr(mine, "shape", None) != tuple(ref.shape):
        return ex.check(name, False, f"expected shape {tuple(ref.shape)}, got {getattr(mine, 'shape', type(mine))}")
    ex.check(name, rel_error(mine, ref) <= tol, f"rel. error {rel_error(mine, ref):.1e} vs {what}")


def grade_activations(sigmoid, sigmoid_grad, softmax) -> None:
    """sigmoid, softmax and sigmoid_grad(H) vs torch (float64), with rows of ±1000, without overflow."""
    Z = torch.tensor(np.r_[[[1000, 0, -1000, 3], [-1000] * 4], np.random.default_rng(0).normal(2, 5, (4, 4))],
                     requires_grad=True)
    H, P = torch.sigmoid(Z), torch.softmax(Z, 1)
    with Exercise("05-activations-check") as ex, np.errstate(over="raise", invalid="raise", divide="raise"):
        _compare(ex, "sigmoid(Z)", ex.call("sigmoid", sigmoid, Z.detach().numpy().copy()), H)
        _compare(ex, "softmax(Z)", ex.call("softmax", softmax, Z.detach().numpy().copy()), P)
        _compare(ex, "sigmoid_grad(H)", ex.call("sigmoid_grad", sigmoid_grad, H.detach().numpy().copy()),
                 torch.autograd.grad(H.sum(), Z)[0], what="autograd")


def grade_numpy_forward(cls) -> None:
    """forward(X) of ``cls``: its H and P vs torch (float64), with torch's sigmoid and softmax swapped in."""
    with Exercise("05-forward-check") as ex, _reference_activations(cls):
        net, X, _, (W1, b1, W2, b2) = _numpy_problem(ex, cls)
        if net is not None and ex.call("forward(X)", net.forward, X.numpy()) is not None:
            _compare(ex, "H (hidden activations)", getattr(net, "H", None), torch.sigmoid(X @ W1 + b1))
            _compare(ex, "P (probabilities)", getattr(net, "P", None), torch.softmax(torch.sigmoid(X @ W1 + b1) @ W2 + b2, 1))


def grade_numpy_backward(cls, act=torch.sigmoid, grade_id: str = "05-backward-check") -> None:
    """update_grad(y), given reference X, H, P: each *_grad vs autograd and vs central finite differences."""
    with Exercise(grade_id) as ex, _reference_activations(cls):
        net, X, y, params = _numpy_problem(ex, cls, act)
        if net is None:
            return

        def summed_loss(W1, b1, W2, b2):
            return torch.nn.functional.cross_entropy(act(X @ W1 + b1) @ W2 + b2, y, reduction="sum")

        fd = finite_difference_gradients(summed_loss, *(p.detach() for p in params))
        summed_loss(*params).backward()
        net.X, net.H = X.numpy(), act(X @ params[0] + params[1]).detach().numpy()
        net.P = torch.softmax(torch.from_numpy(net.H) @ params[2] + params[3], 1).detach().numpy()
        if ex.call("update_grad(y)", lambda: net.reset_grad() or net.update_grad(y.numpy()) or 1):
            for name, p, g in zip(("W1", "b1", "W2", "b2"), params, fd):
                _compare(ex, f"{name}_grad", getattr(net, f"{name}_grad", None), p.grad, 1e-10, "autograd")
                _compare(ex, f"{name}_grad", getattr(net, f"{name}_grad", None), g, 1e-7, "finite differences")


def grade_numpy_update(cls, mean: bool = True, grade_id: str = "05-update-check") -> None:
    """update_params(0.3) after 9 samples vs torch.optim.SGD on the batch-mean gradient (``mean=False``: the sum)."""
    with Exercise(grade_id) as ex:
        net, _, _, params = _numpy_problem(ex, cls)
        if net is None:
            return
        for name, p in zip(("W1", "b1", "W2", "b2"), params):
            p.grad = torch.randn(p.shape, dtype=torch.float64)
            setattr(net, f"{name}_grad", p.grad.numpy().copy())
            p.grad /= 9 if mean else 1  # torch steps on the batch mean (or the sum)
        net.n_accumulated = 9
        torch.optim.SGD(params, lr=0.3).step()
        if ex.call("update_params(0.3)", lambda: net.update_params(0.3) or 1):
            for name, p in zip(("W1", "b1", "W2", "b2"), params):
                _compare(ex, name, getattr(net, name, None), p, what="torch.optim.SGD")


def grade_overfitting(fn) -> None:
    """``fn(history) -> bool`` must flag a train/val accuracy gap, whatever the training accuracy."""
    with Exercise("05-overfitting-check") as ex:
        for train, val, expected in ((0.99, 0.985, False), (0.99, 0.85, True), (0.75, 0.6, True), (0.6, 0.6, False)):
            got = ex.call("is_overfitting", fn, {"train_acc": [0.5, train], "val_acc": [0.5, val]})
            ex.check(f"train acc {train}, val acc {val}", got is not None and bool(got) == expected, f"expected {expected}, got {got}")
