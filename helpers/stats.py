"""Paired comparison of two classifiers on one test set: is the difference in accuracy larger than its noise?

Two models evaluated on the *same* examples make correlated errors: most examples are right (or wrong) for both.
The standard error of a single accuracy, sqrt(p(1-p)/n), ignores that and overstates the noise of a difference.
The paired comparison works with the per-example differences d_i = a_i - b_i (each -1, 0 or +1) instead:

- ``diff`` = mean(d) = accuracy(a) - accuracy(b);
- ``se`` = std(d, ddof=1) / sqrt(n), the standard error of that mean (the sample standard deviation, ddof=1);
- ``significant``: |diff| > 2 se (about a 95% two-sided normal interval that excludes 0);
- ``mcnemar_p``: McNemar's exact test, which uses only the discordant examples (right for one model, wrong for
  the other): under "no difference" each of those m examples is equally likely to favour a or b, so the count
  favouring a is Binomial(m, 1/2); the two-sided p-value doubles the smaller tail (capped at 1).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["compare_paired", "describe_paired", "mcnemar_exact"]


def _as_bool_vector(x, name):
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array with one entry per test example, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a paired comparison needs at least one example.")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (True where the model is right), got values other than 0/1 "
                             f"(dtype {arr.dtype}).")
        arr = arr.astype(bool)
    return arr


def mcnemar_exact(n_a_only, n_b_only):
    """Two-sided exact McNemar p-value for the discordant counts (b = n_a_only, c = n_b_only).

    p = min(1, 2 * sum_{k=0}^{min(b, c)} C(b+c, k) / 2^(b+c)); p = 1 when there are no discordant examples.
    """
    b, c = int(n_a_only), int(n_b_only)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got {b} and {c}.")
    m = b + c
    if m == 0:
        return 1.0
    term, tail = 1, 1  # C(m, 0)
    for k in range(min(b, c)):
        term = term * (m - k) // (k + 1)  # C(m, k + 1), exact in integers
        tail += term
    return min(1.0, 2 * tail / 2**m)


def compare_paired(correct_a, correct_b):
    """Compare two models on the same examples from their per-example correctness.

    correct_a, correct_b: boolean arrays (NumPy or torch) of equal length n >= 1, True where that model got the
    example right. Returns a dict: ``diff`` (accuracy of a minus accuracy of b), ``se`` (standard error of the
    paired difference, std(a_i - b_i, ddof=1) / sqrt(n); 0 for n = 1), ``significant`` (|diff| > 2 se; False
    when both are 0), ``acc_a``, ``acc_b``, ``n``, ``n_a_only`` and ``n_b_only`` (examples only a, or only b,
    got right) and ``mcnemar_p`` (exact two-sided McNemar p-value).
    """
    a = _as_bool_vector(correct_a, "correct_a")
    b = _as_bool_vector(correct_b, "correct_b")
    if len(a) != len(b):
        raise ValueError(f"correct_a and correct_b must have one entry per example of the same set, "
                         f"got lengths {len(a)} and {len(b)}.")
    n = len(a)
    d = a.astype(np.int64) - b.astype(np.int64)
    diff = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    n_a_only, n_b_only = int((d == 1).sum()), int((d == -1).sum())
    return {"diff": diff, "se": se, "significant": bool(abs(diff) > 2 * se),
            "acc_a": float(a.mean()), "acc_b": float(b.mean()), "n": n,
            "n_a_only": n_a_only, "n_b_only": n_b_only, "mcnemar_p": mcnemar_exact(n_a_only, n_b_only)}


def describe_paired(name_a, name_b, result):
    """A sentence fragment for a result of ``compare_paired``, in percentage points, e.g.
    "A beats B by 0.80 points (± 0.30 se, paired; McNemar p = 0.008)" or
    "A and B differ by 0.10 points (± 0.20 se, paired): within noise".
    """
    diff, se = 100 * result["diff"], 100 * result["se"]
    detail = f"± {se:.2f} se, paired; McNemar p = {result['mcnemar_p']:.2g}"
    if not result["significant"]:
        return f"{name_a} and {name_b} differ by {diff:+.2f} points ({detail}): within noise"
    winner, loser = (name_a, name_b) if diff > 0 else (name_b, name_a)
    return f"{winner} beats {loser} by {abs(diff):.2f} points ({detail})"
