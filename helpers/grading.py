"""Gradient checks (relative error, finite differences, autograd), then the graders of notebooks 01, 02, 03, 05, 06.

Each grader takes the student's function or class and prints one PASS/FAIL line per check; a FAIL line ends with
``hint: ...`` where the answer differs from the reference in a recognisable way (a constant factor, a flipped sign,
a transpose, or a known mistake the grader names). ``seed`` picks other inputs and shapes: check cells call each
grader with the default seed, and again, in nbgrader's hidden tests, with ``seed=1``."""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
from collections.abc import Callable, Sequence
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from helpers.models import MyNet

AUTOGRAD_TOL = 1e-10  # manual vs autograd, float64
FINITE_DIFF_TOL = 1e-6  # manual vs central finite differences, float64
F64 = torch.float64


def _flat(x) -> np.ndarray:
    """Tensor, array, number or a sequence of them -> one flat float64 NumPy array."""
    if isinstance(x, (list, tuple)):
        return np.concatenate([_flat(p) for p in x]) if x else np.zeros(0)
    x = x.detach().cpu().double() if isinstance(x, torch.Tensor) else x
    return np.asarray(x, dtype=np.float64).ravel()


def rel_error(a, b) -> float:
    """``max|a - b| / max(|a| + |b|)`` of equal-sized arrays, tensors or sequences of them; 0 if both are 0."""
    a, b = _flat(a), _flat(b)
    if a.shape != b.shape:
        raise ValueError(f"rel_error needs equal sizes, got {a.size} and {b.size} elements.")
    scale = np.max(np.abs(a) + np.abs(b), initial=0.0)
    return float(np.max(np.abs(a - b), initial=0.0) / max(scale, 1e-300))


def numerical_gradient(f: Callable, x, h: float = 1e-5):
    """Central differences of a scalar ``f`` at ``x`` (array or tensor, perturbed in place and restored)."""
    if h <= 0:
        raise ValueError(f"step h must be > 0, got {h}.")
    is_tensor = isinstance(x, torch.Tensor)
    if is_tensor and (x.requires_grad or not x.is_contiguous()):
        raise ValueError("numerical_gradient perturbs x in place: pass x.detach().contiguous() (or a clone).")
    grad = torch.zeros_like(x) if is_tensor else np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.shape[0]):
        old = flat_x[i].item()
        flat_x[i] = old + h
        f_plus = float(f(x))
        flat_x[i] = old - h
        flat_g[i] = (f_plus - float(f(x))) / (2 * h)
        flat_x[i] = old
    return grad


def autograd_gradients(loss_fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gradients of the scalar ``loss_fn(*tensors)`` with respect to each tensor (on detached copies)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    return torch.autograd.grad(loss_fn(*leaves), leaves)


def finite_difference_gradients(loss_fn: Callable, *tensors, h: float = 1e-5) -> tuple:
    """Central-difference gradients of ``loss_fn(*tensors)`` with respect to each tensor (on copies)."""
    copies = [t.detach().clone() for t in tensors]
    return tuple(numerical_gradient(lambda x, i=i: loss_fn(*copies[:i], x, *copies[i + 1:]), copies[i], h)
                 for i in range(len(copies)))


def _items(result, n: int) -> list:
    """The first ``n`` items of a student's result, None for each missing one (all, if it has no items)."""
    try:
        items = list(result)
    except TypeError:
        items = []
    return (items + [None] * n)[:n]


def _as_array(x) -> np.ndarray | None:
    try:
        return np.asarray(x.detach().cpu().double() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def hint(got, ref, factors: dict[str, float] | None = None, tol: float = 1e-6) -> str:
    """What a wrong ``got`` is, when it is a recognisable variant of ``ref``: a transpose, a flipped sign, or
    a constant factor (named after one of ``factors``, e.g. ``{"N": 7}``, where it matches); else ''."""
    g, r = _as_array(got), _as_array(ref)
    if g is None or r is None or not np.all(np.isfinite(g)) or not np.any(r):
        return ""
    if g.ndim == 2 and g.shape == r.T.shape and g.shape[0] != 1 and rel_error(g.T, r) <= tol:
        return "hint: transposed: the result equals the reference's transpose (is a .T missing or extra?)"
    if g.shape != r.shape:
        return ""
    c = float(np.vdot(g, r) / np.vdot(r, r))
    if abs(c - 1) <= tol or abs(c) <= tol or rel_error(g, c * r) > tol:
        return ""
    if abs(c + 1) <= tol:
        return "hint: the sign is flipped"
    for name, value in (factors or {}).items():
        if abs(c - value) <= tol * abs(value):
            return f"hint: ×{c:g} (= {name}): is 1/{name} missing?"
        if abs(c * value - 1) <= tol:
            return f"hint: ×1/{value:g} (= 1/{name}): is 1/{name} applied twice?"
    return f"hint: off by a constant factor ×{c:.4g}" if r.size > 1 else ""  # one number is a multiple of any


class Exercise(contextlib.AbstractContextManager):
    """``with Exercise(grade_id) as ex:`` one printed line per check, AssertionError at the end if any failed.

    ``seed`` != 0 (nbgrader's hidden tests) tags each line ``[seed N]``; ``factors`` (e.g. ``{"N": 7}``) names
    the constants a FAIL line's hint may recognise."""

    def __init__(self, grade_id: str, seed: int = 0):
        self.grade_id = grade_id
        self.tag = f" [seed {seed}]" if seed else ""
        self.failures: list[str] = []
        self.factors: dict[str, float] = {}

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        passed = bool(passed)
        print(f"{'PASS' if passed else 'FAIL'}  {name}{self.tag}" + (f": {detail}" if detail else ""))
        if not passed:
            self.failures.append(name)
        return passed

    def call(self, name: str, fn: Callable, *args):
        """``fn(*args)``, or a failed check naming the exception (then None)."""
        try:
            return fn(*args)
        except NotImplementedError:
            self.check(name, False, "not implemented yet (the solution region still raises NotImplementedError)")
        except Exception as err:  # noqa: BLE001 - any student error is a failed check
            self.check(name, False, f"raised {type(err).__name__}: {err}")
        return None

    def runs(self, name: str, fn: Callable, *args) -> bool:
        """:meth:`call` of a function called for its side effects: True if it returned."""
        return self.call(name, lambda: fn(*args) or True) is not None

    def signature(self, fn: Callable, params: Sequence[str]) -> bool:
        """Check that ``fn`` takes the named parameters first, in this order."""
        try:
            names = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            names = ["?"]
        ok = names[:len(params)] == list(params)
        return self.check(f"signature of {getattr(fn, '__name__', fn)}", ok,
                          "" if ok else f"expected ({', '.join(params)}, ...), got ({', '.join(names)})")

    def close(self, name: str, got, ref, tol: float = AUTOGRAD_TOL, mistakes: dict | None = None) -> bool:
        """Check that ``got`` has the shape of ``ref`` (a tensor, array or number) and ``rel_error <= tol``.

        ``mistakes``: {hint: wrong reference}; a failing ``got`` that matches one gets that hint."""
        shape, want = None if got is None else tuple(np.shape(got)), tuple(np.shape(ref))
        if shape != want:
            expected = "a number or a 0-dim tensor" if want == () else f"a tensor of shape {want}"
            got_text = "None (nothing returned)" if got is None else f"shape {shape}"
            return self.check(name, False, f"expected {expected}, got {got_text}" + self._hint(got, ref, mistakes))
        err = rel_error(got, ref)
        return self.check(name, err <= tol, f"rel. error {err:.1e}, tolerance {tol:.0e}" +
                          ("" if err <= tol else self._hint(got, ref, mistakes)))

    def _hint(self, got, ref, mistakes: dict | None) -> str:
        for text, wrong in (mistakes or {}).items():
            if got is not None and np.shape(got) == np.shape(wrong) and rel_error(got, wrong) <= 1e-6:
                return f"; hint: {text}"
        found = hint(got, ref, self.factors)
        return f"; {found}" if found else ""

    def close_each(self, names: Sequence[str], got, refs: Sequence, tol: float = AUTOGRAD_TOL, where: str = ""):
        """:meth:`close` on the items of ``got`` and ``refs``, checks named ``f"{name} {where}"``."""
        for name, g, r in zip(names, _items(got, len(names)), refs):
            self.close(f"{name} {where}".rstrip(), g, r, tol)

    def gradients(self, names, got, loss: Callable, tensors, where: str = "", fd_step: float = 0,
                  fd_tol: float = FINITE_DIFF_TOL) -> None:
        """``got``, one gradient per tensor, vs autograd of ``loss(*tensors)`` (and finite differences if fd_step)."""
        where = f" ({where})" if where else ""
        self.close_each(names, got, autograd_gradients(loss, *tensors), AUTOGRAD_TOL, f"vs autograd{where}")
        if fd_step:
            fd = finite_difference_gradients(loss, *tensors, h=fd_step)
            self.close_each(names, got, fd, fd_tol, f"vs finite differences{where}")

    def __exit__(self, exc_type, exc, tb) -> None:
        """Raise AssertionError listing the failed checks; an error of the grader itself counts as one."""
        if exc is not None and not isinstance(exc, AssertionError):
            self.check("grader", False, f"stopped by {exc_type.__name__}: {exc}")
        if self.failures and not isinstance(exc, AssertionError):
            raise AssertionError(f"{self.grade_id}: {len(self.failures)} check(s) failed: {', '.join(self.failures)}")


def _chain_loss(X, A, B, C):
    """Mean over the rows x of X (N x K), one at a time, of ‖C(σ(Ax) ⊙ Bx)‖²; A, B, C: K x K."""
    return sum(((C @ (torch.sigmoid(A @ x) * (B @ x))) ** 2).sum() for x in X) / X.shape[0]


CHAIN_SHAPES = {0: ((5, 3), (7, 4)), 1: ((6, 2), (9, 5))}  # seed -> (N, K) of the two problems


def _chain_problems(seed: int = 0):
    """``(label, X, A, B, C)``, float64, N != K: standard inputs, then 5*randn+12 with a second seed."""
    shapes = CHAIN_SHAPES.get(seed, ((seed % 5 + 4, seed % 3 + 2), (seed % 7 + 6, seed % 4 + 3)))
    for (N, K), (offset, scale, shift) in zip(shapes, ((0, 1, 0), (1, 5, 12))):
        gen = torch.Generator().manual_seed(2 * seed + offset)
        X = scale * torch.randn(N, K, generator=gen, dtype=F64) + shift
        A, B, C = (torch.randn(K, K, generator=gen, dtype=F64) / K**0.5 for _ in range(3))
        yield f"N={N}, K={K}, X={scale}*randn+{shift}", X, A, B, C


def _pinned_chain():
    """The worked case X = (1, 2)ᵀ, A = 0, B = 1, C = 2 (K = 1, N = 2): L = 2.5, (dA, dB, dC) = (4.5, 5, 2.5)."""
    return [torch.tensor(v, dtype=F64) for v in ([[1.0], [2.0]], [[0.0]], [[1.0]], [[2.0]])]


def grade_matrix_chain_loss(fn: Callable, seed: int = 0) -> None:
    """``matrix_chain_loss(X, A, B, C)``: a 0-dim tensor equal to the per-sample definition; a pinned case."""
    with Exercise("01-matrix-chain-loss-check", seed) as ex:
        ex.signature(fn, ["X", "A", "B", "C"])
        for label, X, A, B, C in _chain_problems(seed):
            ex.factors = {"N": X.shape[0]}
            L = ex.call(f"loss ({label})", fn, X, A, B, C)
            ex.close(f"loss vs per-sample sum ({label})", L, _chain_loss(X, A, B, C))
        ex.close("loss pinned X=[[1],[2]], A=0, B=1, C=2", ex.call("pinned case", fn, *_pinned_chain()), 2.5, 1e-15)


def grade_matrix_chain_grads(fn: Callable, seed: int = 0) -> None:
    """``matrix_chain_grads``: dA, dB, dC vs autograd (and finite differences, first problem); the pinned case."""
    names = ["dA", "dB", "dC"]
    with Exercise("01-matrix-chain-grads-check", seed) as ex:
        ex.signature(fn, ["X", "A", "B", "C"])
        for i, (label, X, A, B, C) in enumerate(_chain_problems(seed)):
            ex.factors = {"N": X.shape[0]}
            if (got := ex.call(f"matrix_chain_grads ({label})", fn, X, A, B, C)) is not None:
                loss = functools.partial(_chain_loss, X)  # the grader's loss, never the student's
                ex.gradients(names, got, loss, (A, B, C), label, fd_step=1e-5 if i == 0 else 0)
        ex.factors = {"N": 2}
        by_hand = [torch.tensor([[g]], dtype=F64) for g in (4.5, 5.0, 2.5)]
        got = ex.call("pinned case", fn, *_pinned_chain())
        ex.close_each(names, got, by_hand, 1e-12, "pinned X=[[1],[2]], A=0, B=1, C=2 (by hand 4.5, 5, 2.5)")


def grade_central_difference(fn: Callable, seed: int = 0) -> None:
    """``central_difference(f, x, h)``: exact on a quadratic (a one-sided difference is not), O(h²) on sin."""
    with Exercise("01-central-difference-check", seed) as ex:
        ex.signature(fn, ["f", "x", "h"])
        x = torch.tensor([[0.3, -1.2, 2.0], [0.5, 0.0, -0.7]], dtype=F64)
        if seed:
            x = torch.randn(2, 3, dtype=F64, generator=torch.Generator().manual_seed(seed))
        c, x_before = torch.arange(1.0, 7.0, dtype=F64).view(2, 3), x.clone()
        for name, f, exact, h in (("Σ c x²", lambda t: (c * t**2).sum(), 2 * c * x, 1e-3),
                                  ("Σ sin x", lambda t: torch.sin(t).sum(), torch.cos(x), 1e-5)):
            got = ex.call(f"gradient of {name}", fn, f, x, h)
            ex.close(f"gradient of {name} vs exact derivative, h={h:g}", got, exact, 1e-9)
        ex.check("x unchanged after the calls", torch.equal(x, x_before), "restore each perturbed element")


def grade_dropped_mean(fn: Callable, seed: int = 0) -> None:
    """``rel_error_without_mean(N)``: the rel. error of N·g against g, as measured here on a random g."""
    with Exercise("01-dropped-mean-check", seed) as ex:
        g = torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(seed))
        Ns = (1, 2, 6, 100) if not seed else (3, 9, 50 + seed)
        ex.close_each([f"N={N}" for N in Ns], [ex.call(f"N={N}", fn, N) for N in Ns],
                      [rel_error(N * g, g) for N in Ns], 1e-12, "vs measured rel. error")


def grade_derivative_errors(fn: Callable, seed: int = 0) -> None:
    """``derivative_errors(f, df, x, hs)`` on f = exp·sin at 0.7: autograd exact to 4 ulp, FD errors as measured."""
    with Exercise("01-derivative-errors-check", seed) as ex:
        f, df = (lambda t: torch.exp(t) * torch.sin(t)), (lambda t: torch.exp(t) * (torch.sin(t) + torch.cos(t)))
        x, hs = torch.tensor(0.7 + 0.4 * seed, dtype=F64), [0.1, 0.01, 0.001]  # truncation dominates at these h
        auto, fd = _items(ex.call("derivative_errors", fn, f, df, x, hs), 2)
        ulp = np.spacing(float(df(x)))
        ex.check("autograd error <= 4 ulp", auto is not None and 0 <= auto <= 4 * ulp, f"got {auto}")
        want = [abs(float((f(x + h) - f(x - h)) / (2 * h) - df(x))) for h in hs]
        ex.close_each([f"FD error at h={h:g}" for h in hs], fd, want, 1e-3, "vs measured")


def _sse(model, x, y, *params):
    """``((model(x) - y) ** 2).sum()`` with the model's parameters replaced by ``params``, in their order."""
    names = [name for name, _ in model.named_parameters()]
    return ((functional_call(model, dict(zip(names, params)), x) - y) ** 2).sum()


def _backprop_grads(ex: Exercise, fn: Callable, model, x, y, where: str):
    """No-grad forward, then the student's ``fn``: the ``.grad`` of each parameter, or None if ``fn`` failed."""
    with torch.no_grad():
        y_pred = model(x)
    if ex.runs(f"backpropagation ({where})", fn, model, y, y_pred):
        return [p.grad if p.grad is None else p.grad.clone() for p in model.parameters()]
    return None


# seed -> (layer sizes, batch): layers.2 is the one square weight (5 x 5, 6 x 6), as grade_transposed_gradient expects
BACKPROP_NETS = {0: ([4, 6, 5, 5, 3], 7), 1: ([3, 7, 6, 6, 2], 11)}


def grade_backpropagation(fn: Callable, seed: int = 0) -> None:
    """``backpropagation(model, y_true, y_pred)``: each ``.grad`` vs autograd and finite differences; worked example."""
    sizes, N = BACKPROP_NETS[seed % len(BACKPROP_NETS)]
    with Exercise("02-backpropagation-check", seed) as ex, torch.random.fork_rng(devices=[]):
        ex.signature(fn, ["model", "y_true", "y_pred"])
        for offset, scale, shift, fd_step in ((0, 1, 0, 1e-6), (1, 5, 12, 0)):  # finite differences on the first
            torch.manual_seed(2 * seed + offset)
            model = MyNet(sizes, ["relu", "tanh", "sigmoid", "identity"], dtype=F64)
            x, y = scale * torch.randn(N, sizes[0], dtype=F64) + shift, torch.randn(N, sizes[-1], dtype=F64)
            where, params = f"N={N}, x={scale}*randn+{shift}", dict(model.named_parameters())
            if (got := _backprop_grads(ex, fn, model, x, y, where)) is None:
                continue
            sse = functools.partial(_sse, model, x, y)
            ex.gradients([f"{k}.grad" for k in params], got, sse, params.values(), where, fd_step)
            if offset == 0 and None not in got:
                again = _backprop_grads(ex, fn, model, x, y, "called twice")
                ex.check("a second call overwrites .grad (no adding)", again is not None and
                         all(a is not None and torch.equal(a, g) for a, g in zip(again, got)))
        tiny = MyNet([2, 2, 1], ["relu", "identity"], dtype=F64)
        W1_b1_W2_b2 = torch.tensor([0.5, -1, 1.5, 0.25, 0.1, -0.2, 1, -2, 0.3], dtype=F64)
        torch.nn.utils.vector_to_parameters(W1_b1_W2_b2, tiny.parameters())
        x, y = torch.tensor([[1.0, 2.0]], dtype=F64), torch.tensor([[0.5]], dtype=F64)
        by_hand = [torch.tensor(g, dtype=F64) for g in ([[0, 0], [15.2, 30.4]], [0, 15.2], [[0, -13.68]], [-7.6])]
        if (got := _backprop_grads(ex, fn, tiny, x, y, "worked example")) is not None:
            ex.close_each([f"{n}.grad" for n, _ in tiny.named_parameters()], got, by_hand, 1e-12, "worked example")


def grade_transposed_gradient(fn: Callable, seed: int = 0) -> None:
    """"Break it": ``fn`` transposes each square weight gradient; grade_backpropagation must fail on those alone."""
    with contextlib.redirect_stdout(io.StringIO()) as report, contextlib.suppress(AssertionError):
        grade_backpropagation(fn, seed)
    fails = {ln[6:].split(" (")[0].split(":")[0].split(" [seed")[0]
             for ln in report.getvalue().splitlines() if ln.startswith("FAIL")}
    want = {"layers.2.weight.grad vs autograd", "layers.2.weight.grad vs finite differences",
            "layers.0.weight.grad worked example"}  # the square layers of BACKPROP_NETS, and 2 x 2 in [2, 2, 1]
    with Exercise("02-transposed-gradient-check", seed) as ex:
        ex.check("grade_backpropagation fails exactly on the square weight gradients", fails == want,
                 f"failed: {sorted(fails)}; expected: {sorted(want)}")


def grade_layer_error_norms(fn: Callable, seed: int = 0) -> None:
    """``layer_error_norms(model, x, y_true)``: ‖δˡ‖ of each layer (numbers or 0-dim tensors) vs autograd's
    ∂C/∂zˡ, batch 1 and 9 (other widths and batch 5 with ``seed``)."""
    with Exercise("02-layer-error-norms-check", seed) as ex, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        n_in, width = (4, 6) if not seed else (5, 3)
        model = MyNet([n_in, width, width, width, 2], ["sigmoid", "relu", "tanh", "identity"], dtype=F64)
        for N in ((1, 9) if not seed else (1, 5)):
            x, y = torch.randn(N, n_in, dtype=F64), torch.randn(N, 2, dtype=F64)
            got = ex.call(f"layer_error_norms (batch {N})", fn, model, x, y)
            want = [d.norm() for d in torch.autograd.grad(((model(x) - y) ** 2).sum(), model.z)]
            ex.close_each([f"‖δ^{n}‖" for n in range(1, 5)], got, want, 1e-10, f"vs autograd (batch {N})")


SGD_SETTINGS = {"plain": {}, "momentum": {"momentum": 0.9}, "dampening": {"momentum": 0.9, "dampening": 0.3},
                "weight decay": {"weight_decay": 0.05}, "nesterov": {"momentum": 0.9, "nesterov": True},
                "combined": {"momentum": 0.8, "dampening": 0.2, "weight_decay": 0.01},
                "nesterov + weight decay": {"momentum": 0.5, "weight_decay": 0.01, "nesterov": True}}
BAD_SGD_SETTINGS = [{"lr": -0.1}, {"lr": 0.1, "momentum": -0.5}, {"lr": 0.1, "weight_decay": -1e-4},
                    {"lr": 0.1, "nesterov": True}, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}]


def _sgd_trajectory(make_opt: Callable, lr_decay: float = 1.0, zero_grad: bool = True, seed: int = 0) -> list[dict]:
    """Parameters of a seeded 40-30-10 ReLU net (24-17-5 with ``seed``) after each of 4 steps of
    ``make_opt(params)`` on one batch."""
    n_in, hidden, n_out = (40, 30, 10) if not seed else (24, 17, 5)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_out))
        x, y = torch.randn(16, n_in), torch.randn(16, n_out)
    opt, trajectory = make_opt(net.parameters()), []  # an optimizer, or a function step()
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


def _sgd_dampened_first_step(params, **settings) -> torch.optim.SGD:
    """A known mistake, for hints: torch's SGD with each momentum buffer starting at 0, so that the first step
    gives buf = (1 - dampening) g instead of buf = g."""
    opt = torch.optim.SGD(params, **settings)
    for group in opt.param_groups:
        for p in group["params"]:
            opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    return opt


def _same_trajectory(got: list[dict], ref: list[dict], same: Callable) -> bool:
    return len(got) == len(ref) and all(same(g[k], r[k]) for g, r in zip(got, ref) for k in r)


def _check_trajectory(ex: Exercise, name: str, make_opt: Callable, reference: dict, exact: bool = True,
                      lr_decay: float = 1.0, ref_zero_grad: bool = True, seed: int = 0) -> bool:
    """One check: ``make_opt`` follows ``torch.optim.SGD(**reference)`` step by step (torch.equal or allclose)."""
    ref = _sgd_trajectory(lambda ps: torch.optim.SGD(ps, **reference), lr_decay, ref_zero_grad, seed)
    got = ex.call(name, _sgd_trajectory, make_opt, lr_decay, True, seed)
    same = torch.equal if exact else functools.partial(torch.allclose, rtol=1e-5, atol=1e-7)
    for step, (g, r) in enumerate(zip(got or [], ref), start=1):
        if bad := [k for k in r if not same(g[k], r[k])]:
            found = ""
            if reference.get("momentum") and reference.get("dampening"):
                wrong = _sgd_trajectory(lambda ps: _sgd_dampened_first_step(ps, **reference), lr_decay, True, seed)
                close = functools.partial(torch.allclose, rtol=1e-5, atol=1e-7)
                if _same_trajectory(got, wrong, close):
                    found = ("; hint: the momentum buffer was dampened on its first step: torch starts it as "
                             "buf = g, and applies (1 - dampening) only from the second step on")
            return ex.check(name, False, f"after step {step}, {bad[0]} differs in {(g[bad[0]] != r[bad[0]]).sum()} "
                                         f"of {r[bad[0]].numel()} elements{found}")
    how = "torch.equal" if exact else "allclose"
    return got is not None and ex.check(name, True, f"{how} to torch.optim.SGD after each of {len(ref)} steps")


def _raised(opt_cls, kwargs: dict) -> str:
    """The error ``opt_cls(params, **kwargs)`` raises, as ``ValueError('...')``, or ``no error``."""
    try:
        opt_cls([torch.nn.Parameter(torch.ones(1))], **kwargs)
    except Exception as err:  # noqa: BLE001 - whatever happens is reported
        return f"{type(err).__name__}({str(err)!r})"
    return "no error"


def grade_sgd_step(sgd_step: Callable, seed: int = 0) -> None:
    """``sgd_step(params, lr)`` vs ``torch.optim.SGD(params, lr)``, allclose: ``p - lr*g`` rounds its own way."""
    with Exercise("03-sgd-step-check", seed) as ex:
        if ex.signature(sgd_step, ["params", "lr"]):
            for lr in ((0.1, 0.02) if not seed else (0.05, 0.3)):
                _check_trajectory(ex, f"lr={lr}", lambda ps, lr=lr: functools.partial(sgd_step, list(ps), lr),
                                  {"lr": lr}, exact=False, seed=seed)


def grade_manual_sgd(cls, seed: int = 0) -> None:
    """``ManualSGD`` vs ``torch.optim.SGD`` by torch.equal: each setting, a changing lr, invalid settings."""
    with Exercise("03-manual-sgd-check", seed) as ex:
        ex.check("subclass of torch.optim.Optimizer", isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer))
        ex.signature(cls, ["params", "lr", "momentum", "dampening", "weight_decay", "nesterov"])
        schedule = "combined, ExponentialLR schedule (lr halved each step)"
        for name, kw in [*SGD_SETTINGS.items(), (schedule, SGD_SETTINGS["combined"])]:
            _check_trajectory(ex, name, lambda ps, kw=kw: cls(ps, lr=0.1, **kw), {"lr": 0.1, **kw},
                              lr_decay=0.5 if name == schedule else 1.0, seed=seed)
        for bad in BAD_SGD_SETTINGS:
            expected, got = _raised(torch.optim.SGD, bad), _raised(cls, bad)
            ex.check(f"{bad} rejected as torch does", expected == got, f"expected {expected}, got {got}")


def grade_forgot_zero_grad(settings: dict, seed: int = 0) -> None:
    """``settings``: keyword arguments of torch.optim.SGD(lr=0.1, ...) that redo a plain-SGD loop without zero_grad."""
    with Exercise("03-forgot-zero-grad-check", seed) as ex:
        _check_trajectory(ex, f"SGD(lr=0.1, **{settings!r}) vs plain SGD without zero_grad",
                          lambda ps: torch.optim.SGD(ps, lr=0.1, **settings), {"lr": 0.1}, exact=False,
                          ref_zero_grad=False, seed=seed)


PARAM_NAMES = ("W1", "b1", "W2", "b2")


NUMPY_SHAPES = {0: (12, 7, 5, 9), 1: (10, 6, 4, 8)}  # seed -> (inputs, hidden, classes, batch)


@contextlib.contextmanager
def _numpy_problem(ex: Exercise, cls, seed: int = 0):
    """``(net, X, y, [W1, b1, W2, b2])``: float64 ``cls(12, 7, 5)`` (other sizes with ``seed``), batch 9, biases
    != 0; torch's activations swapped in."""
    n_in, n_hidden, n_out, N = NUMPY_SHAPES[seed % len(NUMPY_SHAPES)]
    ex.factors = {"N": N}
    with mock.patch.dict(cls.__init__.__globals__, {"sigmoid_grad": lambda H: H * (1 - H),
                                                    "sigmoid": lambda Z: torch.sigmoid(torch.as_tensor(Z)).numpy(),
                                                    "softmax": lambda Z: torch.softmax(torch.as_tensor(Z), 1).numpy()}):
        net = ex.call(f"NumpyMLP({n_in}, {n_hidden}, {n_out}, seed={seed}, dtype=float64)", cls, n_in, n_hidden,
                      n_out, seed, np.float64)
        rng = np.random.default_rng(100 + seed)
        if net is not None:
            net.b1, net.b2 = rng.normal(0, 0.5, n_hidden), rng.normal(0, 0.5, n_out)
        X, y = torch.tensor(5 * rng.normal(size=(N, n_in)) + 12), torch.tensor(rng.integers(0, n_out, N))
        yield net, X, y, [torch.tensor(getattr(net, n, np.zeros(1))) for n in PARAM_NAMES]


def grade_activations(sigmoid, sigmoid_grad, softmax, seed: int = 0) -> None:
    """sigmoid, softmax and sigmoid_grad(H) vs torch (float64), with rows of ±1000, without overflow."""
    Z = torch.tensor(np.r_[[[1000, 0, -1000, 3], [-1000] * 4], np.random.default_rng(seed).normal(2, 5, (4, 4))],
                     requires_grad=True)
    H, P = torch.sigmoid(Z), torch.softmax(Z, 1)
    dH = torch.autograd.grad(H.sum(), Z)[0]
    with Exercise("05-activations-check", seed) as ex, np.errstate(over="raise", invalid="raise", divide="raise"):
        for name, fn, arg, ref in (("sigmoid(Z)", sigmoid, Z, H), ("softmax(Z)", softmax, Z, P),
                                   ("sigmoid_grad(H)", sigmoid_grad, H, dH)):
            ex.close(name, ex.call(name, fn, arg.detach().numpy().copy()), ref, 1e-12)


def grade_numpy_forward(cls, seed: int = 0) -> None:
    """forward(X) of ``cls``: its H and P vs torch (float64), with torch's sigmoid and softmax swapped in."""
    with Exercise("05-forward-check", seed) as ex, _numpy_problem(ex, cls, seed) as (net, X, _, (W1, b1, W2, b2)):
        if net is not None and ex.call("forward(X)", net.forward, X.numpy()) is not None:
            H = torch.sigmoid(X @ W1 + b1)
            ex.close("H (hidden activations)", getattr(net, "H", None), H, 1e-12)
            ex.close("P (probabilities)", getattr(net, "P", None), torch.softmax(H @ W2 + b2, 1), 1e-12)


def grade_numpy_backward(cls, seed: int = 0) -> None:
    """update_grad(y), given reference X, H, P: each *_grad vs autograd and vs central finite differences."""
    with Exercise("05-backward-check", seed) as ex, _numpy_problem(ex, cls, seed) as (net, X, y, (W1, b1, W2, b2)):
        if net is None:
            return
        net.X, net.H = X.numpy(), torch.sigmoid(X @ W1 + b1).numpy()
        net.P = torch.softmax(torch.from_numpy(net.H) @ W2 + b2, 1).numpy()
        if ex.runs("update_grad(y)", net.update_grad, y.numpy()):
            def loss(W1, b1, W2, b2):
                return F.cross_entropy(torch.sigmoid(X @ W1 + b1) @ W2 + b2, y, reduction="sum")

            names = [f"{n}_grad" for n in PARAM_NAMES]
            ex.gradients(names, [getattr(net, n, None) for n in names], loss, (W1, b1, W2, b2), fd_step=1e-5,
                         fd_tol=1e-7)


def grade_numpy_update(cls, mean: bool = True, grade_id: str = "05-update-check", seed: int = 0) -> None:
    """update_params(0.3) after N samples vs torch.optim.SGD on the batch-mean gradient (``mean=False``: the sum)."""
    with Exercise(grade_id, seed) as ex, _numpy_problem(ex, cls, seed) as (net, X, _, params):
        if net is None:
            return
        N = X.shape[0]
        for name, p in zip(PARAM_NAMES, params):
            p.grad = torch.randn(p.shape, dtype=F64)
            setattr(net, f"{name}_grad", p.grad.numpy().copy())
            p.grad /= N if mean else 1  # torch steps on the batch mean (or the sum)
        net.n_accumulated = N
        torch.optim.SGD(params, lr=0.3).step()
        if ex.runs("update_params(0.3)", net.update_params, 0.3):
            ex.close_each(PARAM_NAMES, [getattr(net, n, None) for n in PARAM_NAMES], params, 1e-12)


def grade_overfitting(fn, seed: int = 0) -> None:
    """``fn(history) -> bool`` must flag a train/val accuracy gap, whatever the training accuracy."""
    cases = ((0.99, 0.985, False), (0.99, 0.85, True), (0.75, 0.6, True), (0.6, 0.6, False)) if not seed else \
        ((0.97, 0.96, False), (1.0, 0.9, True), (0.55, 0.45, True), (0.7, 0.72, False))
    with Exercise("05-overfitting-check", seed) as ex:
        for train, val, expected in cases:
            got = ex.call("is_overfitting", fn, {"train_acc": [0.5, train], "val_acc": [0.5, val]})
            ex.check(f"train acc {train}, val acc {val}", got is not None and bool(got) == expected,
                     f"expected {expected}, got {got}")


def _bn_inputs(seed: int, N: int, D: int) -> list[torch.Tensor]:
    """float64 ``x`` (N x D, 5 randn + 12), ``gamma`` (D, 1 + randn), ``beta`` (D, 0.5 + randn), ``dout`` (N x D)."""
    g = torch.Generator().manual_seed(seed)
    return [a * torch.randn(s, generator=g, dtype=F64) + b
            for s, a, b in (((N, D), 5, 12), (D, 1, 1), (D, 1, 0.5), ((N, D), 1, 0))]


BN_PARAMS = ["x", "gamma", "beta", "running_mean", "running_var", "momentum", "eps", "training"]
N_MINUS_1 = "the variance divides by N-1 here; batch norm normalises with the biased variance (divide by N)"
N_NOT_N_MINUS_1 = "the running variance takes the unbiased batch variance (divide by N-1), as torch does"


def _bn_mistakes(batch, gamma, beta, var_before, training: bool) -> tuple[dict, dict]:
    """Known wrong answers for hints: (out normalised with the unbiased variance, running_var fed the biased one)."""
    if not training:
        return {}, {}
    var_n, var_n1 = batch.var(0, unbiased=False), batch.var(0, unbiased=True)
    out = gamma * (batch - batch.mean(0)) / torch.sqrt(var_n1 + 1e-5) + beta
    return {N_MINUS_1: out}, {N_NOT_N_MINUS_1: 0.9 * var_before + 0.1 * var_n}


def grade_batchnorm_forward(batchnorm_forward: Callable, seed: int = 0) -> None:
    """Two training batches, then eval mode, against ``nn.BatchNorm1d``; then the worked case of the text."""
    N, D = (6, 4) if not seed else (5, 3)
    with Exercise("06-batchnorm-forward-check", seed) as ex:
        ex.signature(batchnorm_forward, BN_PARAMS)
        x, gamma, beta, _ = _bn_inputs(seed=seed, N=N, D=D)
        bn = torch.nn.BatchNorm1d(D, dtype=F64)  # momentum 0.1, eps 1e-5, running stats start at 0, 1
        bn.weight.data, bn.bias.data, mean, var = gamma, beta, bn.running_mean.clone(), bn.running_var.clone()
        for name, batch, training in (("batch 1", x, True), ("batch 2", 3 - 0.5 * x, True), ("eval", x, False)):
            wrong_out, wrong_var = _bn_mistakes(batch, gamma, beta, var.clone(), training)
            out, _ = _items(ex.call(f"out ({name})", batchnorm_forward, batch, gamma, beta, mean, var, 0.1, 1e-5,
                                    training), 2)  # (out, cache)
            ref = bn.train(training)(batch).detach()  # in training mode, updates bn.running_mean and running_var
            ex.close(f"out ({name})", out, ref, mistakes=wrong_out)
            ex.close(f"running_mean (after {name})", mean, bn.running_mean)
            ex.close(f"running_var (after {name})", var, bn.running_var, mistakes=wrong_var)
        x, gamma, beta, mean, var = (torch.tensor(v, dtype=F64) for v in ([[1.0], [3.0]], [2.0], [1.0], [0.0], [1.0]))
        out, _ = _items(ex.call("worked case", batchnorm_forward, x, gamma, beta, mean, var, 0.1, 1e-5, True), 2)
        by_hand = torch.tensor([[-1.0], [3.0]], dtype=F64)  # mu = 2, sigma^2 = 1: x_hat = [-1, 1], y = 2 x_hat + 1
        ex.close_each(["out", "running_mean", "running_var"], [out, mean, var],
                      [by_hand, torch.tensor([0.2], dtype=F64), torch.tensor([1.1], dtype=F64)], 1e-5,
                      "worked case x=[1, 3], gamma=2, beta=1 (by hand [-1, 3], 0.2, 1.1)")


def grade_batchnorm_backward(batchnorm_backward: Callable, seed: int = 0) -> None:
    """``(dx, dgamma, dbeta)`` vs autograd and finite differences through ``F.batch_norm``, from our own cache."""
    with Exercise("06-batchnorm-backward-check", seed) as ex:
        ex.signature(batchnorm_backward, ["dout", "cache"])
        x, gamma, beta, dout = _bn_inputs(seed=1 + 10 * seed, N=7 + seed, D=3 + seed)
        ex.factors = {"N": x.shape[0]}
        x_hat = F.batch_norm(x, None, None, training=True, eps=1e-5)
        cache = (x_hat, gamma, 1 / torch.sqrt(x.var(0, unbiased=False) + 1e-5))  # the layout of the docstring
        got = ex.call("batchnorm_backward", batchnorm_backward, dout, cache)
        loss = lambda *p: (F.batch_norm(p[0], None, None, p[1], p[2], True) * dout).sum()  # noqa: E731
        ex.gradients(["dx", "dgamma", "dbeta"], got, loss, (x, gamma, beta), fd_step=1e-6)


def grade_eval_logits(eval_logits: Callable, seed: int = 0) -> None:
    """``eval_logits(model, x)`` for a batch-norm + dropout model handed over in training mode."""
    with Exercise("06-forget-eval-check", seed) as ex, torch.random.fork_rng():
        torch.manual_seed(seed)
        x, nn = 5 * torch.randn(9 - seed, 5, dtype=F64) + 12, torch.nn
        model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
        model(x + 1)  # in training mode: the running statistics move away from 0 and 1
        before, reference = [t.clone() for t in model.state_dict().values()], model.eval()(x).detach()
        out = ex.call("eval_logits", eval_logits, model.train(), x)
        stats_moved = not torch.equal(model[1].running_mean, before[4])  # only a forward in training mode moves them
        forgot = {"eval() forgotten: the model ran in training mode (batch statistics, dropout); call model.eval() "
                  "first": out} if stats_moved and out is not None else {}
        ex.close("logits in eval mode (running statistics, no dropout)", out, reference, mistakes=forgot)
        ex.check("running_mean, running_var unchanged", all(map(torch.equal, model.state_dict().values(), before)))
        ex.check("model back in training mode", model.training)
        ex.check("no autograd graph kept", isinstance(out, torch.Tensor) and not out.requires_grad)
