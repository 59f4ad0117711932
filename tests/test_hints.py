"""Hints on FAIL lines (each on the mutation it names, none on other wrong answers) and the hidden-test seeds."""

import numpy as np
import pytest
import torch

from helpers import grading
from helpers.notebook import load_defs


@pytest.fixture(scope="module")
def defs():
    return {n: load_defs(n) for n in ("01_matrix_chain_backprop", "02_manual_backprop_mlp", "03_cifar2_mlp_sgd",
                                      "05_numpy_mlp_mnist", "06_mnist_model_zoo")}


def hints_of(grader, broken, capsys) -> list[str]:
    with pytest.raises(AssertionError):
        grader(broken)
    fails = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FAIL")]
    assert fails, "the mutation must fail"
    return [ln.split("hint: ", 1)[1] if "hint: " in ln else "" for ln in fails]


def mutate_grads(fn, change):
    return lambda X, A, B, C: (change(fn(X, A, B, C)[0], X), *fn(X, A, B, C)[1:])


def test_factor_hint_names_N(defs, capsys):
    grads = defs["01_matrix_chain_backprop"].matrix_chain_grads
    hints = hints_of(grading.grade_matrix_chain_grads, mutate_grads(grads, lambda dA, X: dA * X.shape[0]), capsys)
    assert hints[0] == "×5 (= N): is 1/N missing?" and "×7 (= N): is 1/N missing?" in hints


def test_sign_hint(defs, capsys):
    grads = defs["01_matrix_chain_backprop"].matrix_chain_grads
    hints = hints_of(grading.grade_matrix_chain_grads, mutate_grads(grads, lambda dA, X: -dA), capsys)
    assert hints and all(h == "the sign is flipped" for h in hints)


def test_transposed_hint(defs, capsys):
    grads = defs["01_matrix_chain_backprop"].matrix_chain_grads
    hints = hints_of(grading.grade_matrix_chain_grads, mutate_grads(grads, lambda dA, X: dA.T), capsys)
    assert hints and all(h.startswith("transposed") for h in hints)


def test_no_hint_for_a_wrong_answer_of_no_known_kind(defs, capsys):
    grads = defs["01_matrix_chain_backprop"].matrix_chain_grads
    noisy = mutate_grads(grads, lambda dA, X: dA + 0.01 * torch.randn(dA.shape, dtype=dA.dtype))
    assert hints_of(grading.grade_matrix_chain_grads, noisy, capsys) == ["", "", "", ""]


def test_variance_hint(defs, capsys):
    forward = defs["06_mnist_model_zoo"].batchnorm_forward

    def unbiased(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5, training=True):
        out, cache = forward(x, gamma, beta, running_mean, running_var, momentum, eps, training)
        if training:
            out = gamma * (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=True) + eps) + beta
        return out, cache

    hints = [h for h in hints_of(grading.grade_batchnorm_forward, unbiased, capsys) if h]
    assert hints and all(h.startswith("the variance divides by N-1") for h in hints)


def test_dampened_first_step_hint(capsys):
    class DampenedFirstStep(torch.optim.SGD):
        def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False):
            super().__init__(params, lr, momentum, dampening, weight_decay, nesterov)
            for group in self.param_groups:
                for p in group["params"]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)

    hinted = [h for h in hints_of(grading.grade_manual_sgd, DampenedFirstStep, capsys) if h]
    assert len(hinted) == 3 and all(h.startswith("the momentum buffer was dampened on its first step") for h in hinted)


def test_eval_forgotten_hint(capsys):
    def no_eval(model, x):
        with torch.no_grad():
            return model(x)

    hints = hints_of(grading.grade_eval_logits, no_eval, capsys)
    assert hints[0].startswith("eval() forgotten")
    assert all(h == "" for h in hints[1:])  # the running-statistics line names the effect, not a hint


def test_hint_function_needs_an_exact_relation():
    ref = torch.arange(1.0, 7.0).view(2, 3)
    assert grading.hint(ref * 3, ref, {"N": 3}) == "hint: ×3 (= N): is 1/N missing?"
    assert grading.hint(ref / 3, ref, {"N": 3}) == "hint: ×1/3 (= 1/N): is 1/N applied twice?"
    assert grading.hint(ref * 2.5, ref) == "hint: off by a constant factor ×2.5"
    assert grading.hint(ref + 1, ref) == "" and grading.hint(None, ref) == ""
    assert grading.hint(np.zeros((2, 3)), ref) == ""


def test_hidden_seed_passes_with_the_reference(defs, capsys):
    """Every grader with ``seed=1`` (the hidden tests) passes the notebooks' own solutions."""
    nb1, nb2, nb3 = defs["01_matrix_chain_backprop"], defs["02_manual_backprop_mlp"], defs["03_cifar2_mlp_sgd"]
    nb5, nb6 = defs["05_numpy_mlp_mnist"], defs["06_mnist_model_zoo"]
    calls = [(grading.grade_matrix_chain_loss, nb1.matrix_chain_loss),
             (grading.grade_matrix_chain_grads, nb1.matrix_chain_grads),
             (grading.grade_central_difference, nb1.central_difference),
             (grading.grade_dropped_mean, nb1.rel_error_without_mean),
             (grading.grade_derivative_errors, nb1.derivative_errors),
             (grading.grade_backpropagation, nb2.backpropagation),
             (grading.grade_transposed_gradient, nb2.backpropagation_transposed),
             (grading.grade_layer_error_norms, nb2.layer_error_norms),
             (grading.grade_sgd_step, nb3.sgd_step), (grading.grade_manual_sgd, nb3.ManualSGD),
             (grading.grade_forgot_zero_grad, nb3.FORGOT_ZERO_GRAD),
             (grading.grade_numpy_forward, nb5.NumpyMLP), (grading.grade_numpy_backward, nb5.NumpyMLP),
             (grading.grade_numpy_update, nb5.NumpyMLP), (grading.grade_overfitting, nb5.is_overfitting),
             (grading.grade_batchnorm_forward, nb6.batchnorm_forward),
             (grading.grade_batchnorm_backward, nb6.batchnorm_backward), (grading.grade_eval_logits, nb6.eval_logits)]
    for grader, solution in calls:
        grader(solution, seed=1)
    grading.grade_activations(nb5.sigmoid, nb5.sigmoid_grad, nb5.softmax, seed=1)
    grading.grade_numpy_update(nb5.SumStepMLP, mean=False, grade_id="05-drop-mean-check", seed=1)
    out = capsys.readouterr().out
    assert "FAIL" not in out and out.count("[seed 1]") > 50
