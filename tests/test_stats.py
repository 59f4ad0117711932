"""helpers.stats: the paired comparison of two models on one test set."""

import math

import numpy as np
import pytest
import torch

from helpers.stats import compare_paired, describe_paired, mcnemar_exact


def test_identical_models_are_not_significant():
    correct = np.random.default_rng(0).random(10_000) < 0.9
    result = compare_paired(correct, correct.copy())
    assert result["diff"] == 0.0 and result["se"] == 0.0
    assert result["significant"] is False
    assert result["n_a_only"] == result["n_b_only"] == 0
    assert result["mcnemar_p"] == 1.0
    assert "within noise" in describe_paired("A", "B", result)


def test_planted_two_percent_difference_on_10000_examples_is_detected():
    rng = np.random.default_rng(1)
    b = rng.random(10_000) < 0.90
    a = b.copy()
    wrong_b = np.flatnonzero(~b)
    a[rng.choice(wrong_b, 200, replace=False)] = True  # a fixes 200 of b's mistakes: +2 points
    result = compare_paired(a, b)
    assert result["diff"] == pytest.approx(0.02)
    assert result["n_a_only"] == 200 and result["n_b_only"] == 0
    assert result["significant"] is True
    assert result["mcnemar_p"] < 1e-50
    assert describe_paired("A", "B", result).startswith("A beats B by 2.00 points")
    assert describe_paired("B", "A", compare_paired(b, a)).startswith("A beats B by 2.00 points")


def test_se_is_the_sample_std_of_the_paired_differences():
    a = np.array([1, 1, 0, 1, 0, 1, 1, 0], bool)
    b = np.array([1, 0, 0, 1, 1, 0, 1, 0], bool)
    d = a.astype(float) - b.astype(float)
    result = compare_paired(a, b)
    assert result["diff"] == pytest.approx(d.mean())
    assert result["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)))
    assert (result["acc_a"], result["acc_b"], result["n"]) == (5 / 8, 4 / 8, 8)


def test_small_difference_with_many_discordant_examples_is_within_noise():
    # 55 examples only a gets right, 45 only b: diff 0.1 points on 10,000, se about 0.1 points
    a = np.zeros(10_000, bool)
    b = np.zeros(10_000, bool)
    a[:55] = True
    b[55:100] = True
    result = compare_paired(a, b)
    assert result["diff"] == pytest.approx(0.001)
    assert result["significant"] is False
    assert result["mcnemar_p"] > 0.3


def test_mcnemar_hand_checked_cases():
    # b = 1, c = 5: m = 6, P(K <= 1) = (1 + 6) / 64, two-sided 14/64
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(5, 1) == pytest.approx(14 / 64)
    # b = 0, c = 3: 2 * 1/8
    assert mcnemar_exact(0, 3) == pytest.approx(0.25)
    # balanced counts: the doubled tail exceeds 1 and is capped
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    a = np.array([1] * 1 + [0] * 5 + [1] * 10, bool)
    b = np.array([0] * 1 + [1] * 5 + [1] * 10, bool)
    result = compare_paired(a, b)
    assert (result["n_a_only"], result["n_b_only"]) == (1, 5)
    assert result["mcnemar_p"] == pytest.approx(14 / 64)


def test_accepts_torch_and_integer_zero_one_inputs():
    a = torch.tensor([True, False, True, True])
    b = np.array([1, 0, 0, 1])
    result = compare_paired(a, b)
    assert result["diff"] == pytest.approx(0.25)
    assert result["n_a_only"] == 1


@pytest.mark.parametrize(("a", "b", "match"), [
    (np.ones(3, bool), np.ones(4, bool), "lengths 3 and 4"),
    (np.ones((2, 3), bool), np.ones((2, 3), bool), "1-D"),
    (np.zeros(0, bool), np.zeros(0, bool), "empty"),
    (np.array([0.5, 1.0]), np.array([1, 0]), "boolean"),
])
def test_bad_inputs_raise_clear_errors(a, b, match):
    with pytest.raises(ValueError, match=match):
        compare_paired(a, b)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 2)
