"""helpers.models.make_model: the MNIST zoo (softmax / MLP / LeNet-5 x plain / dropout / batchnorm)."""

import pytest
import torch
from torch import nn

from helpers.checkpoint import load_checkpoint, save_checkpoint
from helpers.models import (
    CIFAR2MLP,
    MODEL_KINDS,
    MODEL_VARIANTS,
    count_parameters,
    layer_parameter_counts,
    make_model,
)

ALL = [(k, v) for k in MODEL_KINDS for v in MODEL_VARIANTS]


def _linear(n_in, n_out, bias=True):
    return n_in * n_out + (n_out if bias else 0)


def _conv(c_in, c_out, k, bias=True):
    return c_in * c_out * k * k + (c_out if bias else 0)


# Parameter counts from the architecture, layer by layer (batchnorm: 2 per feature, no bias before it).
EXPECTED_PARAMETERS = {
    ("softmax", "plain"): _linear(784, 10),
    ("softmax", "dropout"): _linear(784, 10),
    ("softmax", "batchnorm"): 2 * 784 + _linear(784, 10),
    ("mlp", "plain"): _linear(784, 256) + _linear(256, 128) + _linear(128, 10),
    ("mlp", "dropout"): _linear(784, 256) + _linear(256, 128) + _linear(128, 10),
    ("mlp", "batchnorm"): _linear(784, 256, False) + 2 * 256 + _linear(256, 128, False) + 2 * 128
    + _linear(128, 10),
    ("lenet", "plain"): _conv(1, 6, 5) + _conv(6, 16, 5) + _linear(400, 120) + _linear(120, 84)
    + _linear(84, 10),
    ("lenet", "dropout"): _conv(1, 6, 5) + _conv(6, 16, 5) + _linear(400, 120) + _linear(120, 84)
    + _linear(84, 10),
    ("lenet", "batchnorm"): _conv(1, 6, 5, False) + 2 * 6 + _conv(6, 16, 5, False) + 2 * 16
    + _linear(400, 120, False) + 2 * 120 + _linear(120, 84, False) + 2 * 84 + _linear(84, 10),
}


@pytest.mark.parametrize("kind,variant", ALL)
def test_every_model_maps_images_to_ten_logits(kind, variant):
    torch.manual_seed(0)
    model = make_model(kind, variant)
    x = torch.randn(5, 1, 28, 28)
    for mode in (True, False):
        model.train(mode)
        out = model(x)
        assert out.shape == (5, 10)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind,variant", ALL)
def test_parameter_counts_follow_the_architecture(kind, variant):
    assert count_parameters(make_model(kind, variant)) == EXPECTED_PARAMETERS[(kind, variant)]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_variants_contain_exactly_their_regulariser(kind):
    def has(model, cls):
        return any(isinstance(m, cls) for m in model.modules())

    bn = (nn.BatchNorm1d, nn.BatchNorm2d)
    plain, drop, norm = (make_model(kind, v) for v in MODEL_VARIANTS)
    assert not has(plain, nn.Dropout) and not has(plain, bn)
    assert has(drop, nn.Dropout) and not has(drop, bn)
    assert has(norm, bn) and not has(norm, nn.Dropout)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_output_layer_is_a_plain_linear_layer(kind):
    for variant in MODEL_VARIANTS:
        last = list(make_model(kind, variant).children())[-1]
        assert isinstance(last, nn.Linear) and last.out_features == 10 and last.bias is not None


def test_lenet_feature_map_shapes():
    model = make_model("lenet", "plain").eval()
    shapes = []
    x = torch.zeros(2, 1, 28, 28)
    for layer in model:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.Flatten)):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (400,)]


def test_dropout_is_placed_before_every_fully_connected_layer_of_lenet():
    layers = list(make_model("lenet", "dropout").children())
    linear_idx = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
    assert len(linear_idx) == 3
    assert all(isinstance(layers[i - 1], nn.Dropout) for i in linear_idx)


def test_softmax_dropout_drops_inputs_and_batchnorm_normalises_inputs():
    drop = list(make_model("softmax", "dropout").children())
    norm = list(make_model("softmax", "batchnorm").children())
    assert [type(m) for m in drop] == [nn.Flatten, nn.Dropout, nn.Linear]
    assert [type(m) for m in norm] == [nn.Flatten, nn.BatchNorm1d, nn.Linear]
    assert norm[1].num_features == 784


def test_dropout_probability_is_configurable():
    model = make_model("mlp", "dropout", p=0.5)
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.5}


@pytest.mark.parametrize("kind,variant", [("transformer", "plain"), ("LeNet", "plain"), (["mlp"], "plain")])
def test_unknown_kind_lists_the_options(kind, variant):
    with pytest.raises(ValueError, match="softmax, mlp, lenet"):
        make_model(kind, variant)


@pytest.mark.parametrize("variant", ["dropuot", "layernorm", "", ["plain"]])
def test_unknown_variant_lists_the_options(variant):
    with pytest.raises(ValueError, match="plain, dropout, batchnorm"):
        make_model("mlp", variant)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_dropout_probability_is_rejected(p):
    with pytest.raises(ValueError, match="0 <= p < 1"):
        make_model("lenet", "dropout", p=p)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_dropout_and_batchnorm_outputs_depend_on_the_mode(kind):
    torch.manual_seed(1)
    x = torch.randn(16, 1, 28, 28)
    drop = make_model(kind, "dropout")
    drop.train()
    assert not torch.equal(drop(x), drop(x))  # a fresh mask per call
    drop.eval()
    assert torch.equal(drop(x), drop(x))
    norm = make_model(kind, "batchnorm")
    norm.train()
    full = norm(x)
    norm.eval()
    # Train mode normalises with the batch's statistics, eval mode with running ones.
    assert not torch.allclose(full, norm(x))


def _train_a_few_steps(model, x, y, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_save_load_round_trip_gives_identical_predictions(tmp_path, variant):
    torch.manual_seed(2)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    trained = _train_a_few_steps(make_model("lenet", variant), x, y)
    path = save_checkpoint(trained, tmp_path / "lenet.pt")
    torch.manual_seed(3)
    fresh = make_model("lenet", variant).eval()
    assert not torch.equal(fresh(x), trained(x))
    load_checkpoint(fresh, path)
    assert torch.equal(fresh(x), trained(x))
    for name, tensor in trained.state_dict().items():  # batchnorm running stats travel too
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_checkpoint_of_one_variant_does_not_load_into_another(tmp_path):
    from helpers.checkpoint import CheckpointError

    path = save_checkpoint(make_model("lenet", "batchnorm"), tmp_path / "bn.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(make_model("lenet", "plain"), path)


def test_layer_parameter_counts_of_the_cifar2_mlp():
    rows = layer_parameter_counts(CIFAR2MLP())
    assert [(layer, n) for _name, layer, n in rows] == [
        ("Linear 3072->512", 3072 * 512 + 512),
        ("Linear 512->128", 512 * 128 + 128),
        ("Linear 128->32", 128 * 32 + 32),
        ("Linear 32->2", 32 * 2 + 2),
    ]
    assert sum(n for *_, n in rows) == count_parameters(CIFAR2MLP()) == 1_643_234


@pytest.mark.parametrize("kind,variant", ALL)
def test_layer_counts_add_up_to_the_total(kind, variant):
    model = make_model(kind, variant)
    assert sum(n for *_, n in layer_parameter_counts(model)) == count_parameters(model)
