"""A two-layer MLP written from scratch in NumPy: forward, gradients, update, save/load.

The network is the classic exercise ``784 -> 64 (sigmoid) -> 10 (softmax)`` trained with
cross-entropy::

    H = sigmoid(X W1 + b1)          X: B x n_in,   W1: n_in x n_hidden,  H: B x n_hidden
    P = softmax(H W2 + b2)          W2: n_hidden x n_out,                P: B x n_out
    L = -sum_i sum_k Y_ik log P_ik  Y: B x n_out one-hot targets

and the hand-derived gradients (``D2`` and ``D1`` are the per-sample error signals)::

    D2 = P - Y                          dL/dW2 = H^T D2,  dL/db2 = sum_i D2_i
    D1 = (D2 W2^T) * H * (1 - H)        dL/dW1 = X^T D1,  dL/db1 = sum_i D1_i

Gradient scaling (a deliberate choice): ``update_grad(y)`` *accumulates sums* over the
samples it has seen since ``reset_grad()`` (so several calls can build one mini-batch),
and ``update_params(lr)`` divides by that sample count. The learning rate therefore
multiplies the *batch-mean* gradient and does not need retuning when the batch size
changes.

Speed: training runs in float32 (the default ``dtype``; float64 for gradient checks),
every intermediate lives in a preallocated buffer reused across batches, the matrix
products go to BLAS through ``np.matmul``, and no Python loop runs over samples.
"""

from __future__ import annotations

import contextlib
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

PARAM_NAMES = ("W1", "b1", "W2", "b2")
INIT_STD = 0.1


# --------------------------------------------------------------------------- pieces


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Elementwise ``1 / (1 + exp(-z))``; finite for any finite ``z`` (exp overflow -> exactly 0)."""
    out = np.negative(z, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax`` of a B x C array, shifted by the row max (stable for +-1000)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax of a B x C array, shifted by the row max so ``exp`` never overflows."""
    out = np.subtract(logits, logits.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy ``-sum_k Y_k log softmax(z)_k`` (B,), from logits (B x C).

    ``targets``: one-hot / probability rows (B x C) or integer labels (B,). Computed from
    the log-softmax, never ``log(P)``, so logits of +-1000 give finite values.
    """
    logp = log_softmax(logits)
    if targets.ndim == 1:
        return -logp[np.arange(len(targets)), targets]
    return -(targets * logp).sum(axis=1)


def one_hot(labels: np.ndarray, n_classes: int, dtype=np.float32, out: np.ndarray | None = None) -> np.ndarray:
    """Integer labels (B,) -> one-hot rows (B x n_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= n_classes)):
        raise ValueError(f"labels must be a 1-D array of integers in [0, {n_classes}), got shape {labels.shape}.")
    if out is None:
        out = np.zeros((len(labels), n_classes), dtype=dtype)
    else:
        out[...] = 0
    out[np.arange(len(labels)), labels] = 1
    return out


# --------------------------------------------------------------------------- network


class NumpyMLP:
    """``n_in -> n_hidden (sigmoid) -> n_out (softmax)`` with cross-entropy, in pure NumPy.

    Weights ``W1`` (n_in x n_hidden), ``W2`` (n_hidden x n_out) ~ N(0, 0.1^2) and biases 0,
    drawn in float64 from ``numpy.random.default_rng(seed)`` and cast to ``dtype`` (so a
    float32 and a float64 network with the same seed start from the same weights).

    Course interface, one mini-batch::

        net.reset_grad(); net.forward(X); net.update_grad(Y); net.update_params(lr)
    """

    def __init__(self, n_in: int = 784, n_hidden: int = 64, n_out: int = 10, seed: int | None = 0,
                 dtype=np.float32):
        for name, value in (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}.")
        self.n_in, self.n_hidden, self.n_out = int(n_in), int(n_hidden), int(n_out)
        rng = np.random.default_rng(seed)
        self.W1 = rng.normal(0.0, INIT_STD, (self.n_in, self.n_hidden)).astype(self.dtype)
        self.b1 = np.zeros(self.n_hidden, dtype=self.dtype)
        self.W2 = rng.normal(0.0, INIT_STD, (self.n_hidden, self.n_out)).astype(self.dtype)
        self.b2 = np.zeros(self.n_out, dtype=self.dtype)
        self._capacity = 0
        self._batch = 0  # rows of the last forward pass
        self._x: np.ndarray | None = None
        self.reset_grad()

    # ---- shapes and buffers
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Expected shape of every parameter."""
        return {"W1": (self.n_in, self.n_hidden), "b1": (self.n_hidden,),
                "W2": (self.n_hidden, self.n_out), "b2": (self.n_out,)}

    def params(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def grads(self) -> dict[str, np.ndarray]:
        """Accumulated (summed) gradients, keyed like ``params()``."""
        return {name: getattr(self, f"{name}_grad") for name in PARAM_NAMES}

    def _ensure_capacity(self, batch: int) -> None:
        """(Re)allocate the per-batch buffers when a larger batch arrives; views serve smaller ones."""
        if batch <= self._capacity:
            return
        dt = self.dtype
        self._h = np.empty((batch, self.n_hidden), dt)       # hidden activations H
        self._d1 = np.empty((batch, self.n_hidden), dt)      # hidden error signal D1
        self._tmp1 = np.empty((batch, self.n_hidden), dt)    # H * (1 - H)
        self._logits = np.empty((batch, self.n_out), dt)
        self._p = np.empty((batch, self.n_out), dt)          # softmax probabilities P
        self._d2 = np.empty((batch, self.n_out), dt)         # output error signal D2 = P - Y
        self._capacity = batch

    # ---- forward
    def _forward(self, X: np.ndarray) -> np.ndarray:
        """Forward pass into the internal buffers; returns a *view* of P (B x n_out)."""
        X = np.asarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.n_in:
            raise ValueError(f"X must be B x {self.n_in} (flatten images first), got shape {X.shape}.")
        B = len(X)
        self._ensure_capacity(B)
        h, logits, p = self._h[:B], self._logits[:B], self._p[:B]
        np.matmul(X, self.W1, out=h)
        h += self.b1
        sigmoid(h, out=h)
        np.matmul(h, self.W2, out=logits)
        logits += self.b2
        softmax(logits, out=p)
        self._x, self._batch = X, B
        return p

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Softmax probabilities P (B x n_out) for inputs X (B x n_in); remembers what backprop needs."""
        return self._forward(X).copy()

    def logits(self) -> np.ndarray:
        """Output pre-activations (B x n_out) of the last forward pass (a copy)."""
        return self._logits[: self._batch].copy()

    def loss(self, y: np.ndarray) -> float:
        """Mean cross-entropy of the last forward pass against ``y`` (one-hot B x n_out or labels B)."""
        return float(cross_entropy(self._logits[: self._batch], self._targets(y)).mean())

    def predict(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Predicted class indices (N,), computed in chunks of ``batch_size`` rows."""
        X = np.asarray(X)
        return np.concatenate([self._forward(X[i:i + batch_size]).argmax(axis=1)
                               for i in range(0, len(X), batch_size)]) if len(X) else np.zeros(0, np.int64)

    # ---- gradients and update
    def reset_grad(self) -> None:
        """Zero the accumulated gradients (in place, buffers are reused) and the sample count."""
        for name in PARAM_NAMES:
            grad = getattr(self, f"{name}_grad", None)
            param = getattr(self, name)
            if grad is None or grad.shape != param.shape or grad.dtype != param.dtype:
                setattr(self, f"{name}_grad", np.zeros_like(param))
                setattr(self, f"_{name}_step", np.empty_like(param))
            else:
                grad.fill(0)
        self.n_accumulated = 0

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
            y = one_hot(y, self.n_out, dtype=self.dtype)
        if y.shape != (self._batch, self.n_out):
            raise ValueError(
                f"y must be one-hot {self._batch} x {self.n_out} or {self._batch} integer labels "
                f"(matching the last forward pass), got shape {y.shape}.")
        return y

    def update_grad(self, y: np.ndarray) -> None:
        """Backpropagate the last forward pass and *add* the summed gradients to ``*_grad``.

        ``y``: one-hot targets (B x n_out) or integer labels (B,). Adds B to ``n_accumulated``.
        """
        if self._x is None:
            raise RuntimeError("update_grad(y) needs a forward(X) first.")
        y = self._targets(y)
        B = self._batch
        x, h, p = self._x, self._h[:B], self._p[:B]
        d2, d1, tmp = self._d2[:B], self._d1[:B], self._tmp1[:B]
        np.subtract(p, y, out=d2)                            # D2 = P - Y
        np.matmul(d2, self.W2.T, out=d1)                     # D2 W2^T
        np.subtract(1, h, out=tmp)
        tmp *= h                                             # sigmoid'(z) = H (1 - H)
        d1 *= tmp                                            # D1 = (D2 W2^T) * H (1 - H)
        if self.n_accumulated == 0:                          # fresh batch: write, don't add
            np.matmul(h.T, d2, out=self.W2_grad)             # H^T D2
            np.matmul(x.T, d1, out=self.W1_grad)             # X^T D1
            np.sum(d2, axis=0, out=self.b2_grad)
            np.sum(d1, axis=0, out=self.b1_grad)
        else:
            self.W2_grad += h.T @ d2
            self.W1_grad += x.T @ d1
            self.b2_grad += d2.sum(axis=0)
            self.b1_grad += d1.sum(axis=0)
        self.n_accumulated += B

    def update_params(self, lr: float) -> None:
        """Gradient step with the batch-mean gradient: ``theta -= lr * grad_sum / n_accumulated``."""
        if self.n_accumulated == 0:
            raise RuntimeError("update_params(lr) needs update_grad(y) first (no gradient accumulated).")
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a positive finite number, got {lr!r}.")
        scale = self.dtype.type(lr / self.n_accumulated)
        for name in PARAM_NAMES:
            step = getattr(self, f"_{name}_step")
            np.multiply(getattr(self, f"{name}_grad"), scale, out=step)
            param = getattr(self, name)
            param -= step

    # ---- persistence
    def save(self, path: str | Path) -> Path:
        """Write the four parameters to an ``.npz`` file (no pickle); returns the path."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"save path must end in .npz, got {str(path)!r}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, **self.params())
        return path

    def load(self, path: str | Path) -> NumpyMLP:
        """Load parameters saved by ``save`` into this network (shapes must match); returns self."""
        arrays = read_params(path)
        expected = self.shapes()
        for name in PARAM_NAMES:
            if arrays[name].shape != expected[name]:
                raise ValueError(
                    f"{path}: {name} has shape {arrays[name].shape}, this network needs {expected[name]} "
                    f"(n_in={self.n_in}, n_hidden={self.n_hidden}, n_out={self.n_out}); "
                    f"use NumpyMLP.from_file(path) to build a network of the saved size.")
        for name in PARAM_NAMES:
            setattr(self, name, arrays[name].astype(self.dtype, copy=True))
        self.reset_grad()
        self._x = None
        return self

    @classmethod
    def from_file(cls, path: str | Path, dtype=np.float32) -> NumpyMLP:
        """A new network with the sizes and weights stored in ``path``."""
        arrays = read_params(path)
        n_in, n_hidden = arrays["W1"].shape
        net = cls(n_in, n_hidden, arrays["W2"].shape[1], seed=0, dtype=dtype)
        return net.load(path)


def read_params(path: str | Path) -> dict[str, np.ndarray]:
    """Read and validate ``W1, b1, W2, b2`` from an ``.npz`` (consistent shapes, finite floats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no network file at {path}.")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            missing = [n for n in PARAM_NAMES if n not in data.files]
            if missing:
                raise KeyError(missing)
            arrays = {name: data[name] for name in PARAM_NAMES}
    except KeyError as err:
        raise ValueError(f"{path}: missing array(s) {err.args[0]}; a network file holds {list(PARAM_NAMES)}.") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a network file saved by NumpyMLP.save ({err}).") from None
    W1, b1, W2, b2 = (arrays[n] for n in PARAM_NAMES)
    if W1.ndim != 2 or W2.ndim != 2 or b1.shape != (W1.shape[1],) or W2.shape[0] != W1.shape[1] \
            or b2.shape != (W2.shape[1],):
        raise ValueError(f"{path}: inconsistent shapes W1 {W1.shape}, b1 {b1.shape}, W2 {W2.shape}, "
                         f"b2 {b2.shape}; expected n_in x h, (h,), h x n_out, (n_out,).")
    for name, arr in arrays.items():
        if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
            raise ValueError(f"{path}: {name} must hold finite floats, got dtype {arr.dtype}.")
    return arrays


# --------------------------------------------------------------------------- data and training


def split_arrays(split, dtype=np.float32, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A ``helpers.data`` Split (x: N x C x H x W tensor, y: N) -> (X: N x CHW ``dtype``, y: N int64).

    ``limit`` keeps the first ``limit`` samples.
    """
    x, y = split.x, split.y
    if limit is not None:
        if not 1 <= limit <= len(y):
            raise ValueError(f"limit must be in [1, {len(y)}] for split {getattr(split, 'name', '')!r}, got {limit}.")
        x, y = x[:limit], y[:limit]
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    y = y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y)
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=dtype), y.astype(np.int64)


def evaluate(net: NumpyMLP, X: np.ndarray, y: np.ndarray, batch_size: int = 4096) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` on (X: N x n_in, y: N labels)."""
    if len(X) == 0:
        raise ValueError("evaluate needs at least one sample.")
    total_loss, correct = 0.0, 0
    for i in range(0, len(X), batch_size):
        net._forward(X[i:i + batch_size])
        yb = y[i:i + batch_size]
        logits = net._logits[: net._batch]
        total_loss += float(cross_entropy(logits, yb).sum())
        correct += int((logits.argmax(axis=1) == yb).sum())
    return total_loss / len(X), correct / len(X)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """C x C counts, rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same shape.")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def most_confused_pairs(cm: np.ndarray, classes, k: int = 3) -> list[tuple[str, str, int]]:
    """The ``k`` largest off-diagonal cells as (true class, predicted class, count), largest first."""
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, -1)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:k]
    rows, cols = np.unravel_index(order, cm.shape)
    return [(str(classes[i]), str(classes[j]), int(cm[i, j])) for i, j in zip(rows, cols)]


DEFAULT_LR = 0.5
DEFAULT_EPOCHS = 20
DEFAULT_BATCH_SIZE = 32


def blas_threads(n: int | None):
    """Context manager limiting NumPy's BLAS to ``n`` threads (``None``: leave as is).

    The products here are small (B x 784 by 784 x 64); on a busy machine a multi-threaded
    BLAS spends more time waking threads than multiplying.
    """
    if n is None:
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(n), user_api="blas")


def train_network(net: NumpyMLP, splits, lr: float = DEFAULT_LR, epochs: int = DEFAULT_EPOCHS,
                  batch_size: int = DEFAULT_BATCH_SIZE, seed: int | None = None, n_train: int | None = None,
                  progress: bool | None = None, threads: int | None = 1) -> dict[str, list[float]]:
    """Mini-batch SGD on ``splits.train`` (a ``helpers.data`` DataSplits); returns the history.

    Each epoch shuffles the training set with ``numpy.random.default_rng([seed, epoch])``,
    one-hot encodes each batch and runs ``reset_grad, forward, update_grad, update_params(lr)``
    (``lr`` scales the batch-mean gradient). ``n_train`` trains on a seeded random subset of
    ``n_train`` training images ("the first n images" of a shuffled set; helpers.data may store
    a split ordered by class, where a plain slice would hold only a few classes).
    History (per epoch): ``train_loss``/``train_acc`` (running means over the epoch's batches),
    ``val_loss``/``val_acc`` (after the epoch), ``lr`` and ``seconds`` (training time, no eval).
    ``progress``: a tqdm bar over epochs; ``None`` shows it only in a terminal or notebook.
    ``threads``: BLAS threads while training (see ``blas_threads``; 1 is fastest for small batches).
    """
    from tqdm import tqdm

    from helpers.config import show_progress  # lazy: the model itself needs NumPy only

    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if seed is None:
        from helpers.config import settings
        seed = settings().seed
    X, y = split_arrays(splits.train, net.dtype)
    if n_train is not None:
        X, y = _subset(X, y, n_train, seed)
    Xv, yv = split_arrays(splits.val, net.dtype)
    if X.shape[1] != net.n_in or int(y.max()) >= net.n_out:
        raise ValueError(f"the network takes {net.n_in} inputs and {net.n_out} classes; the data has "
                         f"{X.shape[1]} features and labels up to {int(y.max())}.")
    batch_size = min(int(batch_size), len(X))
    history: dict[str, list[float]] = {k: [] for k in
                                       ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")}
    with blas_threads(threads):
        _train_epochs(net, X, y, Xv, yv, lr, epochs, batch_size, seed, history,
                      tqdm(range(epochs), desc="epochs", disable=not show_progress(progress), file=sys.stderr))
    return history


def _subset(X: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows drawn without replacement by ``default_rng(seed)``, kept in their original order."""
    if int(n) != n or not 1 <= n <= len(y):
        raise ValueError(f"n_train must be an integer in [1, {len(y)}], got {n!r}.")
    keep = np.sort(np.random.default_rng(seed).permutation(len(y))[: int(n)])
    return X[keep], y[keep]


def _train_epochs(net, X, y, Xv, yv, lr, epochs, batch_size, seed, history, bar) -> None:
    xb = np.empty((batch_size, net.n_in), net.dtype)
    yb = np.empty((batch_size, net.n_out), net.dtype)
    for epoch in bar:
        order = np.random.default_rng([seed, epoch]).permutation(len(X))
        loss_sum, correct = 0.0, 0
        start = time.perf_counter()
        for i in range(0, len(X), batch_size):
            idx = order[i:i + batch_size]
            B = len(idx)
            np.take(X, idx, axis=0, out=xb[:B])
            labels = y[idx]
            one_hot(labels, net.n_out, out=yb[:B])
            net.reset_grad()
            net._forward(xb[:B])
            logits = net._logits[:B]
            loss_sum += float(cross_entropy(logits, yb[:B]).sum())
            correct += int((logits.argmax(axis=1) == labels).sum())
            net.update_grad(yb[:B])
            net.update_params(lr)
        seconds = time.perf_counter() - start
        val_loss, val_acc = evaluate(net, Xv, yv)
        for key, value in (("train_loss", loss_sum / len(X)), ("train_acc", correct / len(X)),
                           ("val_loss", val_loss), ("val_acc", val_acc), ("lr", lr), ("seconds", seconds)):
            history[key].append(float(value))
        bar.set_postfix(train_acc=f"{correct / len(X):.3f}", val_acc=f"{val_acc:.3f}")
