"""Batch norm by hand (notebook 06) and its graders: the notebook's solution passes, broken versions fail by name."""

import json

import pytest
import torch
import torch.nn.functional as F

from helpers.grading import (
    finite_difference_gradients,
    grade_batchnorm_backward,
    grade_batchnorm_forward,
    grade_eval_logits,
    rel_error,
)
from helpers.notebook import load_defs, notebook_path

NB = "06_mnist_model_zoo"


@pytest.fixture(scope="module")
def nb():
    return load_defs(NB)


def broken(name: str, old: str, new: str):
    """The notebook's ``name`` with ``old`` replaced by ``new`` in its cell (``old`` must occur once)."""
    cells = json.loads(notebook_path(NB).read_text())["cells"]
    source = next("".join(c["source"]) for c in cells
                  if c["cell_type"] == "code" and f"def {name}(" in "".join(c["source"]))
    assert source.count(old) == 1, f"{old!r} not found once in the cell of {name}"
    namespace = {"torch": torch}
    exec(source.replace(old, new), namespace)
    return namespace[name]


def report(grader, fn, capsys) -> tuple[bool, set[str], set[str]]:
    """(passed, names of failed checks, names of passed checks) of one grader run."""
    try:
        grader(fn)
        passed = True
    except AssertionError:
        passed = False
    lines = capsys.readouterr().out.splitlines()
    names = lambda verdict: {ln[6:].split(":")[0] for ln in lines if ln.startswith(verdict)}  # noqa: E731
    return passed, names("FAIL"), names("PASS")


def data(seed, N=5, D=3):
    g = torch.Generator().manual_seed(seed)
    x = 5 * torch.randn(N, D, generator=g, dtype=torch.float64) + 12
    gamma, beta = 1 + torch.randn(2, D, generator=g, dtype=torch.float64)
    return x, gamma, beta


# ---------------------------------------------------------------------------- the taught code


@pytest.mark.parametrize("seed,N,D", [(0, 5, 3), (1, 2, 7), (2, 64, 10)])
def test_forward_matches_batchnorm1d_in_training_and_eval_mode(nb, seed, N, D):
    x, gamma, beta = data(seed, N, D)
    bn = torch.nn.BatchNorm1d(D, momentum=0.2, eps=1e-3, dtype=torch.float64)
    bn.weight.data, bn.bias.data = gamma.clone(), beta.clone()
    mean, var = torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64)
    for batch in (x, 2 * x - 7, x.flip(0)):
        out, _ = nb.batchnorm_forward(batch, gamma, beta, mean, var, momentum=0.2, eps=1e-3)
        assert rel_error(out, bn.train()(batch).detach()) < 1e-12
    assert rel_error(mean, bn.running_mean) < 1e-12 and rel_error(var, bn.running_var) < 1e-12
    out, _ = nb.batchnorm_forward(x, gamma, beta, mean, var, momentum=0.2, eps=1e-3, training=False)
    assert rel_error(out, bn.eval()(x).detach()) < 1e-12
    assert rel_error(mean, bn.running_mean) < 1e-12  # eval mode leaves the running averages alone


def test_forward_normalises_each_feature_and_returns_the_documented_cache(nb):
    x, gamma, beta = data(3, N=8, D=4)
    mean, var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    out, (x_hat, cache_gamma, inv_std) = nb.batchnorm_forward(x, gamma, beta, mean, var)
    assert torch.allclose(x_hat.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(x_hat, F.batch_norm(x, None, None, training=True, eps=1e-5), atol=1e-12)
    assert torch.equal(cache_gamma, gamma)
    assert torch.allclose(inv_std, 1 / torch.sqrt(x.var(0, unbiased=False) + 1e-5), atol=1e-14)
    assert torch.allclose(out, gamma * x_hat + beta, atol=1e-12)


@pytest.mark.parametrize("bad", ["1-D x", "one row in training", "gamma", "running_var"])
def test_forward_rejects_wrong_shapes_with_expected_and_received(nb, bad):
    x, gamma, beta = data(4, N=6, D=3)
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    args = {"x": x, "gamma": gamma, "beta": beta, "running_mean": mean, "running_var": var}
    args.update({"1-D x": {"x": x[0]}, "one row in training": {"x": x[:1]}, "gamma": {"gamma": gamma[:2]},
                 "running_var": {"running_var": torch.ones(4, dtype=torch.float64)}}[bad])
    with pytest.raises(ValueError, match="shape"):
        nb.batchnorm_forward(**args)


def test_forward_accepts_one_row_in_eval_mode(nb):
    x, gamma, beta = data(5, N=1, D=3)
    out, _ = nb.batchnorm_forward(x, gamma, beta, torch.zeros(3).double(), torch.ones(3).double(), training=False)
    assert out.shape == (1, 3)


@pytest.mark.parametrize("seed,N,D", [(0, 4, 3), (1, 9, 2)])
def test_backward_matches_autograd_and_finite_differences(nb, seed, N, D):
    x, gamma, beta = data(seed, N, D)
    dout = torch.randn(N, D, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    _, cache = nb.batchnorm_forward(x, gamma, beta, torch.zeros(D).double(), torch.ones(D).double())
    manual = nb.batchnorm_backward(dout, cache)

    def loss(x_, g_, b_):
        return (F.batch_norm(x_, None, None, g_, b_, training=True, eps=1e-5) * dout).sum()

    leaves = [t.clone().requires_grad_(True) for t in (x, gamma, beta)]
    auto = torch.autograd.grad(loss(*leaves), leaves)
    numeric = finite_difference_gradients(loss, x, gamma, beta, h=1e-6)
    for name, m, a, n in zip(("dx", "dgamma", "dbeta"), manual, auto, numeric):
        assert m.shape == a.shape, name
        assert rel_error(m, a) < 1e-12, name
        assert rel_error(m, n) < 1e-6, name


def test_backward_rejects_mismatched_shapes(nb):
    x, gamma, beta = data(6, N=4, D=3)
    _, cache = nb.batchnorm_forward(x, gamma, beta, torch.zeros(3).double(), torch.ones(3).double())
    with pytest.raises(ValueError, match="dout"):
        nb.batchnorm_backward(torch.ones(4, 2, dtype=torch.float64), cache)


# ---------------------------------------------------------------------------- the graders


def test_the_notebook_solutions_pass_their_graders(nb, capsys):
    for grader, fn in ((grade_batchnorm_forward, nb.batchnorm_forward),
                       (grade_batchnorm_backward, nb.batchnorm_backward),
                       (grade_eval_logits, nb.eval_logits)):
        passed, failed, ok = report(grader, fn, capsys)
        assert passed and not failed and ok, (grader.__name__, failed)


FORWARD_BUGS = {
    # bug: (old, new, a check that must fail, a check that must still pass)
    "biased running variance": ("momentum * var * N / (N - 1)", "momentum * var",
                                "running_var (after batch 1)", "out (batch 1)"),
    "momentum weights the old value": ("(1 - momentum) * running_mean + momentum * mu",
                                       "momentum * running_mean + (1 - momentum) * mu",
                                       "running_mean (after batch 1)", "out (batch 1)"),
    "running mean rebound, not updated in place": ("running_mean[:] = ", "running_mean = ",
                                                   "running_mean (after batch 1)", "running_var (after batch 1)"),
    "eval mode uses batch statistics": ("mu, var = running_mean, running_var", "mu, var = x.mean(0), x.var(0, unbiased=False)",
                                        "out (eval)", "out (batch 2)"),
    "unbiased variance to normalise": ("var = ((x - mu) ** 2).mean(dim=0)", "var = x.var(dim=0)",
                                       "out (batch 1)", "running_mean (after batch 1)"),
    "shift forgotten": ("out = gamma * x_hat + beta", "out = gamma * x_hat", "out (batch 1)", "running_var (after batch 1)"),
}


@pytest.mark.parametrize("bug", FORWARD_BUGS)
def test_a_broken_forward_fails_naming_the_tensor(capsys, bug):
    old, new, must_fail, must_pass = FORWARD_BUGS[bug]
    passed, failed, ok = report(grade_batchnorm_forward, broken("batchnorm_forward", old, new), capsys)
    assert not passed
    assert must_fail in failed and must_pass in ok, (failed, ok)


BACKWARD_BUGS = {
    "sign flip in dx": ("dx = inv_std * (dx_hat - dx_hat.mean(dim=0)", "dx = -inv_std * (dx_hat - dx_hat.mean(dim=0)", "dx"),
    "mean term forgotten in dx": (" - dx_hat.mean(dim=0)", "", "dx"),
    "dgamma without x_hat": ("dgamma = (dout * x_hat).sum(dim=0)", "dgamma = dout.sum(dim=0)", "dgamma"),
    "dbeta averaged": ("dbeta = dout.sum(dim=0)", "dbeta = dout.mean(dim=0)", "dbeta"),
}


@pytest.mark.parametrize("bug", BACKWARD_BUGS)
def test_a_broken_backward_fails_exactly_the_wrong_tensor(capsys, bug):
    old, new, wrong = BACKWARD_BUGS[bug]
    passed, failed, ok = report(grade_batchnorm_backward, broken("batchnorm_backward", old, new), capsys)
    assert not passed
    assert failed == {f"{wrong} vs autograd", f"{wrong} vs finite differences"}, failed


def test_wrong_shapes_and_signatures_fail_without_crashing_the_grader(capsys):
    keepdim = broken("batchnorm_backward", "dgamma = (dout * x_hat).sum(dim=0)",
                     "dgamma = (dout * x_hat).sum(dim=0, keepdim=True)")
    passed, failed, _ = report(grade_batchnorm_backward, keepdim, capsys)
    assert not passed and failed == {"dgamma vs autograd", "dgamma vs finite differences"}
    assert "expected a tensor of shape (3,), got shape (1, 3)" in "".join(grade_output(grade_batchnorm_backward, keepdim, capsys))

    def no_eps(x, gamma, beta, running_mean, running_var, momentum=0.1):
        return x, None

    passed, failed, _ = report(grade_batchnorm_forward, no_eps, capsys)
    assert not passed and "signature of no_eps" in failed and "out (batch 1)" in failed
    passed, failed, _ = report(grade_batchnorm_backward, lambda dout: dout, capsys)
    assert not passed and {"dx vs autograd", "dgamma vs autograd", "dbeta vs autograd"} <= failed


def grade_output(grader, fn, capsys) -> list[str]:
    with pytest.raises(AssertionError):
        grader(fn)
    return capsys.readouterr().out.splitlines()


def test_a_stub_reports_not_implemented(capsys):
    def stub(dout, cache):
        raise NotImplementedError()

    lines = grade_output(grade_batchnorm_backward, stub, capsys)
    assert any("not implemented yet" in ln for ln in lines)


EVAL_BUGS = {
    "forgot eval()": ("    model.eval()\n", "", {"logits in eval mode (running statistics, no dropout)",
                                                  "running_mean, running_var unchanged"}),
    "mode not restored": ("    model.train(was_training)\n", "", {"model back in training mode"}),
    "graph kept": ("    with torch.no_grad():\n        logits = model(x)", "    logits = model(x)",
                   {"no autograd graph kept"}),
}


@pytest.mark.parametrize("bug", EVAL_BUGS)
def test_a_broken_eval_logits_fails_by_name(capsys, bug):
    old, new, wrong = EVAL_BUGS[bug]
    passed, failed, _ = report(grade_eval_logits, broken("eval_logits", old, new), capsys)
    assert not passed and failed == wrong, failed


def test_eval_grader_leaves_the_global_random_state_alone(nb, capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    grade_eval_logits(nb.eval_logits)
    capsys.readouterr()
    assert torch.equal(torch.rand(3), expected)
