"""helpers.models.MyNet, notebook 02's backpropagation (imported defs-only from the notebook) and the 02 graders."""

import random
import runpy

import pytest
import torch
from torch import nn

from helpers import grading as bp
from helpers.config import REPO_ROOT
from helpers.models import MYNET_ACTIVATIONS, MyNet
from helpers.notebook import load_defs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nb():
    return load_defs("02_manual_backprop_mlp")


def random_architecture(seed: int) -> tuple[list[int], list[str]]:
    """Depth 1-5, widths 1-64, activations drawn from all four."""
    rng = random.Random(seed)
    depth = rng.randint(1, 5)
    sizes = [rng.randint(1, 64) for _ in range(depth + 1)]
    return sizes, [rng.choice(MYNET_ACTIVATIONS) for _ in range(depth)]


# Edge cases first (depth 1, width 1, width 64, each activation at the output), then random ones.
ARCHITECTURES = [
    ([1, 1], ["identity"]),
    ([3, 2], ["relu"]),
    ([1, 64, 1], ["tanh", "sigmoid"]),
    ([64, 1, 64], ["sigmoid", "tanh"]),
    ([5, 8, 8, 8, 8, 3], ["relu", "tanh", "sigmoid", "identity", "relu"]),
] + [random_architecture(seed) for seed in range(20)]


def _data(model: MyNet, batch: int, seed: int, dtype):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, model.sizes[0], generator=gen, dtype=dtype),
            torch.randn(batch, model.sizes[-1], generator=gen, dtype=dtype))


def _autograd(model, x, y):
    model.zero_grad(set_to_none=True)
    ((model(x) - y) ** 2).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def _manual(nb, model, x, y):
    with torch.no_grad():
        y_pred = model(x)
    nb.backpropagation(model, y, y_pred)
    return [p.grad.clone() for p in model.parameters()]


# ---------------------------------------------------------------- MyNet
def test_mynet_layers_and_stored_forward_values():
    torch.manual_seed(0)
    model = MyNet([2, 3, 3, 2], ["relu", "tanh", "sigmoid"], dtype=torch.float64)
    assert isinstance(model.layers, nn.ModuleList) and len(model.layers) == 3
    assert all(isinstance(layer, nn.Linear) for layer in model.layers)
    assert [(m.in_features, m.out_features) for m in model.layers] == [(2, 3), (3, 3), (3, 2)]
    x = torch.randn(4, 2, dtype=torch.float64)
    out = model(x)
    assert out.shape == (4, 2) and out.dtype == torch.float64
    assert len(model.z) == 3 and len(model.a) == 4 and model.a[0] is x
    assert [tuple(t.shape) for t in model.z] == [(4, 3), (4, 3), (4, 2)]
    assert torch.equal(model.z[0], x @ model.layers[0].weight.T + model.layers[0].bias)
    for z, a, f in zip(model.z, model.a[1:], (torch.relu, torch.tanh, torch.sigmoid)):
        assert torch.equal(a, f(z))
    assert model.a[-1] is out


@pytest.mark.parametrize(
    "sizes, activations, message",
    [
        ([2, 3, 2], ["relu"], "one activation per layer: sizes .* make 2 layer"),
        ([2, 3], ["relu", "relu"], "got 2 activation"),
        ([2, 3], ["softplus"], r"unknown activation\(s\) \['softplus'\]; valid choices: relu, tanh, sigmoid, identity"),
        ([2], [], "at least two positive ints"),
        ([2, 0], ["relu"], "at least two positive ints"),
    ],
)
def test_mynet_rejects_bad_configuration(sizes, activations, message):
    with pytest.raises(ValueError, match=message):
        MyNet(sizes, activations)


def test_mynet_rejects_wrong_input_width():
    with pytest.raises(ValueError, match=r"expects input N x 3, got shape \(5, 2\)"):
        MyNet([3, 1], ["identity"])(torch.zeros(5, 2))


# ---------------------------------------------------------------- backprop vs autograd
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: "-".join(map(str, a[0])) + "_" + "-".join(a[1]))
@pytest.mark.parametrize("batch", [1, 17])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_backprop_matches_autograd(nb, arch, batch, dtype):
    sizes, activations = arch
    torch.manual_seed(len(sizes) * 100 + batch)
    model = MyNet(sizes, activations, dtype=dtype)
    x, y = _data(model, batch, seed=batch, dtype=dtype)
    reference = _autograd(model, x, y)
    manual = _manual(nb, model, x, y)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for p, g in zip(model.parameters(), manual):
        assert g.shape == p.shape and g.dtype == p.dtype and not g.requires_grad
    # per parameter, so a small wrong bias gradient cannot hide behind a large weight gradient
    for m, r in zip(manual, reference):
        assert bp.rel_error(m, r) <= tol


@pytest.mark.parametrize("arch", ARCHITECTURES[:3] + ARCHITECTURES[5:9])
def test_backprop_matches_finite_differences(nb, arch):
    sizes, activations = arch
    sizes = [min(n, 24) for n in sizes]  # keep it fast: two forward passes per parameter
    torch.manual_seed(1)
    model = MyNet(sizes, activations, dtype=torch.float64)
    x, y = _data(model, 5, seed=2, dtype=torch.float64)
    manual = _manual(nb, model, x, y)
    with torch.no_grad():
        numeric = [bp.numerical_gradient(lambda _: ((model(x) - y) ** 2).sum(), p.data, 1e-6) for p in model.parameters()]
    for m, n in zip(manual, numeric):
        assert bp.rel_error(m, n) <= bp.FINITE_DIFF_TOL


def test_relu_derivative_at_exactly_zero_is_zero_like_autograd(nb):
    model = MyNet([2, 2, 1], ["relu", "identity"], dtype=torch.float64)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.25]]))
        model.layers[0].bias.copy_(torch.tensor([0.0, 0.1]))
        model.layers[1].weight.copy_(torch.tensor([[2.0, -3.0]]))
        model.layers[1].bias.copy_(torch.tensor([0.5]))
    x = torch.tensor([[2.0, 2.0], [1.0, 3.0]], dtype=torch.float64)  # first hidden unit: z = 0 and z = -2
    y = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    reference = _autograd(model, x, y)
    manual = _manual(nb, model, x, y)
    assert model.z[0][0, 0] == 0.0  # the kink is hit exactly
    for m, r in zip(manual, reference):
        assert torch.equal(m, r)
    # relu'(0) = 0: the unit at its kink passes no gradient to its weights or bias (z <= 0 in both rows)
    assert torch.all(manual[0][0] == 0) and manual[1][0] == 0
    assert torch.all(manual[0][1] != 0)  # the other hidden unit does get gradient


def test_backprop_overwrites_grad_instead_of_accumulating(nb):
    torch.manual_seed(0)
    model = MyNet([3, 4, 2], ["tanh", "identity"], dtype=torch.float64)
    x, y = _data(model, 6, seed=0, dtype=torch.float64)
    first = _manual(nb, model, x, y)
    second = _manual(nb, model, x, y)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_backprop_rejects_missing_forward_and_wrong_shapes(nb):
    model = MyNet([3, 2], ["identity"])
    with pytest.raises(ValueError, match="call y_pred = model"):
        nb.backpropagation(model, torch.zeros(4, 2), torch.zeros(4, 2))
    y_pred = model(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"shape of the last forward output \(4, 2\)"):
        nb.backpropagation(model, torch.zeros(4, 3), y_pred)


def test_exercise_solutions(nb):
    torch.manual_seed(0)
    model = MyNet([3, 3, 2], ["tanh", "identity"], dtype=torch.float64)
    x, y = _data(model, 4, seed=0, dtype=torch.float64)
    reference = _autograd(model, x, y)
    model(x)
    nb.backpropagation_transposed(model, y, None)
    assert torch.equal(model.layers[0].weight.grad, reference[0].T) and torch.equal(model.layers[1].weight.grad, reference[2])
    # at batch 1, BP3 says ∂C/∂b^l = δ^l, so ‖δ^l‖ is the norm of autograd's bias gradient
    norms = nb.layer_error_norms(model, x[:1], y[:1])
    bias_grads = _autograd(model, x[:1], y[:1])[1::2]
    assert norms == pytest.approx([float(g.norm()) for g in bias_grads], rel=1e-12)


# ---------------------------------------------------------------- graders

@pytest.mark.parametrize("grader, name", [
    (bp.grade_backpropagation, "backpropagation"), (bp.grade_transposed_gradient, "backpropagation_transposed"),
    (bp.grade_layer_error_norms, "layer_error_norms")])
def test_graders_pass_the_notebook_solutions(nb, capsys, grader, name):
    grader(getattr(nb, name))
    assert "FAIL" not in capsys.readouterr().out


def test_backprop_grader_names_the_wrong_tensor(nb, fails_only_on):
    def sign_flipped_bias(model, y_true, y_pred):
        nb.backpropagation(model, y_true, y_pred)
        model.layers[1].bias.grad = -model.layers[1].bias.grad

    fails_only_on(bp.grade_backpropagation, sign_flipped_bias, "02-backpropagation-check", "layers.1.bias.grad")


def test_backprop_grader_catches_accumulation_wrong_shapes_and_stubs(nb, capsys, fail_lines):
    def accumulating(model, y_true, y_pred):
        nb.backpropagation(model, y_true, y_pred)
        for p in model.parameters():
            p.grad = 2 * p.grad if getattr(p, "_seen", False) else p.grad
            p._seen = True

    with pytest.raises(AssertionError):
        bp.grade_backpropagation(accumulating)
    assert any("a second call overwrites .grad" in line for line in fail_lines())

    def no_bias_grads(model, y_true, y_pred):
        nb.backpropagation(model, y_true, y_pred)
        model.layers[0].bias.grad = None

    with pytest.raises(AssertionError):
        bp.grade_backpropagation(no_bias_grads)
    assert any(line.startswith("FAIL  layers.0.bias.grad vs autograd") and "expected a tensor of shape (6,), got None"
               in line for line in fail_lines())

    def stub(model, y_true, y_pred):
        raise NotImplementedError()

    with pytest.raises(AssertionError):
        bp.grade_backpropagation(stub)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "stopped by" not in out  # a failed check, never a grader crash

    with pytest.raises(AssertionError):
        bp.grade_backpropagation(lambda model, y_pred: None)
    assert "expected (model, y_true, y_pred, ...), got (model, y_pred)" in capsys.readouterr().out


def test_exercise_graders_reject_wrong_answers(nb, fail_lines):
    with pytest.raises(AssertionError, match="02-transposed-gradient-check"):
        bp.grade_transposed_gradient(nb.backpropagation)  # nothing transposed: nothing fails
    with pytest.raises(AssertionError, match="02-layer-error-norms-check"):
        bp.grade_layer_error_norms(lambda model, x, y_true: nb.layer_error_norms(model, x, y_true)[::-1])
    assert any(line.startswith("FAIL  ‖δ^1‖") for line in fail_lines())


def test_bench_times_the_notebook_backprop(nb):
    time_backprop = runpy.run_path(str(REPO_ROOT / "bench" / "bench_backprop.py"))["time_backprop"]
    model = MyNet([8, 16, 4], ["relu", "identity"])
    result = time_backprop(nb.backpropagation, model, batch_size=32, repeats=3, warmup=1)
    for key in ("manual_s", "autograd_s", "manual_step_s", "autograd_step_s"):
        assert result[key] > 0
    assert result["ratio"] == pytest.approx(result["manual_s"] / result["autograd_s"])
    with pytest.raises(ValueError, match="batch_size >= 1"):
        time_backprop(nb.backpropagation, model, batch_size=0)
