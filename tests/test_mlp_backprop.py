"""helpers.models.MyNet and helpers.backprop.backpropagation (notebook 02)."""

import random

import pytest
import torch
from torch import nn

from helpers import backprop as bp
from helpers.models import MYNET_ACTIVATIONS, MyNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def _grads(model):
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
def test_backprop_matches_autograd(arch, batch, dtype):
    sizes, activations = arch
    torch.manual_seed(len(sizes) * 100 + batch)
    model = MyNet(sizes, activations, dtype=dtype)
    x, y = _data(model, batch, seed=batch, dtype=dtype)
    bp.autograd_backward(model, x, y)
    reference = _grads(model)
    bp.manual_backward(model, x, y)
    manual = _grads(model)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for p, g in zip(model.parameters(), manual):
        assert g.shape == p.shape and g.dtype == p.dtype
    # per parameter, so a small wrong bias gradient cannot hide behind a large weight gradient
    for m, r in zip(manual, reference):
        assert bp.rel_error(m, r) <= tol


@pytest.mark.parametrize("arch", ARCHITECTURES[:3] + ARCHITECTURES[5:9])
def test_backprop_matches_finite_differences(arch):
    sizes, activations = arch
    if max(sizes) > 24:  # keep it fast: finite differences cost two forward passes per parameter
        sizes = [min(n, 24) for n in sizes]
    torch.manual_seed(1)
    model = MyNet(sizes, activations, dtype=torch.float64)
    x, y = _data(model, 5, seed=2, dtype=torch.float64)
    checks = bp.check_backprop(model, x, y, finite_differences=True)
    assert [c.passed for c in checks] == [True, True], [str(c) for c in checks]


def test_relu_derivative_at_exactly_zero_is_zero_like_autograd():
    model = MyNet([2, 2, 1], ["relu", "identity"], dtype=torch.float64)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.25]]))
        model.layers[0].bias.copy_(torch.tensor([0.0, 0.1]))
        model.layers[1].weight.copy_(torch.tensor([[2.0, -3.0]]))
        model.layers[1].bias.copy_(torch.tensor([0.5]))
    x = torch.tensor([[2.0, 2.0], [1.0, 3.0]], dtype=torch.float64)  # first hidden unit: z = 0 and z = -2
    y = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    bp.autograd_backward(model, x, y)
    reference = _grads(model)
    y_pred = model(x)
    assert model.z[0][0, 0] == 0.0  # the kink is hit exactly
    bp.backpropagation(model, y, y_pred)
    manual = _grads(model)
    for m, r in zip(manual, reference):
        assert torch.equal(m, r)
    # relu'(0) = 0: the unit at its kink passes no gradient to its weights or bias (z <= 0 in both rows)
    assert torch.all(manual[0][0] == 0) and manual[1][0] == 0
    assert torch.all(manual[0][1] != 0)  # the other hidden unit does get gradient


def test_backprop_overwrites_grad_instead_of_accumulating():
    torch.manual_seed(0)
    model = MyNet([3, 4, 2], ["tanh", "identity"], dtype=torch.float64)
    x, y = _data(model, 6, seed=0, dtype=torch.float64)
    bp.manual_backward(model, x, y)
    first = _grads(model)
    buffers = [p.grad for p in model.parameters()]
    bp.manual_backward(model, x, y)
    for p, g, buf in zip(model.parameters(), first, buffers):
        assert torch.equal(p.grad, g)
        assert p.grad is buf  # the existing buffer was reused
        assert not p.grad.requires_grad


def test_check_backprop_catches_a_wrong_gradient():
    torch.manual_seed(0)
    model = MyNet([3, 4, 2], ["sigmoid", "identity"], dtype=torch.float64)
    x, y = _data(model, 6, seed=0, dtype=torch.float64)
    bp.autograd_backward(model, x, y)
    reference = _grads(model)
    bp.manual_backward(model, x, y)
    wrong = _grads(model)
    wrong[0] = -wrong[0]  # a sign error in one layer
    assert not bp.check_gradients(wrong, reference, 1e-4).passed
    assert bp.check_gradients(_grads(model), reference, 1e-10).passed


def test_backprop_rejects_missing_forward_and_wrong_shapes():
    model = MyNet([3, 2], ["identity"])
    with pytest.raises(ValueError, match="call y_pred = model"):
        bp.backpropagation(model, torch.zeros(4, 2), torch.zeros(4, 2))
    y_pred = model(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"shape of the last forward output \(4, 2\)"):
        bp.backpropagation(model, torch.zeros(4, 3), y_pred)
    with pytest.raises(ValueError, match="float64 or float32"):
        bp.autograd_tolerance(torch.float16)


def test_time_backprop_reports_both_sides():
    model = MyNet([8, 16, 4], ["relu", "identity"])
    result = bp.time_backprop(model, batch_size=32, repeats=3, warmup=1)
    for key in ("manual_s", "autograd_s", "manual_step_s", "autograd_step_s"):
        assert result[key] > 0
    assert result["ratio"] == pytest.approx(result["manual_s"] / result["autograd_s"])
    assert result["batch_size"] == 32
    with pytest.raises(ValueError, match="batch_size >= 1"):
        bp.time_backprop(model, batch_size=0)
