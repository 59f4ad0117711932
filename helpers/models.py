"""The networks of the series. Images come in as N x C x H x W float32; outputs are N x n_classes logits."""

import copy

import torch
from torch import nn


class CIFAR2MLP(nn.Sequential):
    """Flatten, 3072-512-128-32-2 with ReLU between: N x 3 x 32 x 32 -> N x 2 logits; 1,643,234 parameters."""

    def __init__(self, sizes: tuple[int, ...] = (3072, 512, 128, 32, 2)):
        layers: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        super().__init__(*layers[:-1])  # no ReLU on the logits


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_table(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """``(name, shape, count)`` for each trainable parameter, in order."""
    return [(n, tuple(p.shape), p.numel()) for n, p in model.named_parameters() if p.requires_grad]


def layer_parameter_counts(model: nn.Module) -> list[tuple[str, str, int]]:
    """``(name, layer, count)`` per module owning trainable parameters, e.g. ``("1", "Linear 3072->512", n)``"""
    rows = []
    for name, m in model.named_modules():
        if own := [p for p in m.parameters(recurse=False) if p.requires_grad]:
            layer = type(m).__name__
            if isinstance(m, nn.Linear):
                layer = f"Linear {m.in_features}->{m.out_features}"
            elif isinstance(m, nn.Conv2d):
                layer = f"Conv2d {m.in_channels}->{m.out_channels}, {m.kernel_size[0]}x{m.kernel_size[1]}"
            rows.append((name, layer, sum(p.numel() for p in own)))
    return rows


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy with identical weights (for runs that must start from the same point)."""
    return copy.deepcopy(model)


# --- MNIST model zoo (notebook 06): softmax regression, MLP, LeNet-5 x plain/dropout/batchnorm ---

MODEL_KINDS = ("softmax", "mlp", "lenet")
MODEL_VARIANTS = ("plain", "dropout", "batchnorm")
DEFAULT_DROPOUT = {"softmax": 0.2, "mlp": 0.3, "lenet": 0.25}


def _check_variant(variant: str, p: float) -> None:
    if variant not in MODEL_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(MODEL_VARIANTS)}.")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability p={p} must satisfy 0 <= p < 1.")


def _linear_block(n_in: int, n_out: int, variant: str, p: float, hidden: bool = True) -> list[nn.Module]:
    """[Dropout(p)] Linear, then for a hidden layer [BatchNorm1d] ReLU; the linear layer before a batchnorm has no bias."""
    layers: list[nn.Module] = [nn.Dropout(p)] if variant == "dropout" else []
    bn = hidden and variant == "batchnorm"
    layers.append(nn.Linear(n_in, n_out, bias=not bn))
    if bn:
        layers.append(nn.BatchNorm1d(n_out))
    if hidden:
        layers.append(nn.ReLU())
    return layers


class SoftmaxRegression(nn.Sequential):
    """Flatten, linear 784 -> 10: N x 1 x 28 x 28 -> N x 10 logits, 7,850 parameters (plain). ``dropout``
    drops input pixels (probability ``p``); ``batchnorm`` normalises each pixel before the linear layer."""

    def __init__(self, variant: str = "plain", p: float = DEFAULT_DROPOUT["softmax"],
                 n_in: int = 784, n_classes: int = 10):
        _check_variant(variant, p)
        layers: list[nn.Module] = [nn.Flatten()]
        if variant == "batchnorm":
            layers.append(nn.BatchNorm1d(n_in))
        layers += _linear_block(n_in, n_classes, variant, p, hidden=False)
        super().__init__(*layers)


class MLP(nn.Sequential):
    """Flatten, 784-256-128-10 with ReLU between; N x 1 x 28 x 28 -> N x 10 logits, 235,146 parameters (plain).
    ``dropout``: before every linear layer but the first; ``batchnorm``: after each hidden linear layer."""

    def __init__(self, variant: str = "plain", p: float = DEFAULT_DROPOUT["mlp"],
                 sizes: tuple[int, ...] = (784, 256, 128, 10)):
        _check_variant(variant, p)
        if len(sizes) < 3:
            raise ValueError(f"MLP sizes {sizes} need at least input, one hidden and output size.")
        # Dropout acts on hidden activations only; dropping raw pixels is the softmax model's variant.
        first = "plain" if variant == "dropout" else variant
        layers: list[nn.Module] = [nn.Flatten(), *_linear_block(sizes[0], sizes[1], first, p)]
        for n_in, n_out in zip(sizes[1:-2], sizes[2:-1]):
            layers += _linear_block(n_in, n_out, variant, p)
        layers += _linear_block(sizes[-2], sizes[-1], variant, p, hidden=False)
        super().__init__(*layers)


class LeNet5(nn.Sequential):
    """LeNet-5 with ReLU and max pooling: N x 1 x 28 x 28 -> conv 6@5x5 (padding 2), pool -> 6 x 14 x 14
    -> conv 16@5x5, pool -> 16 x 5 x 5 -> flatten 400 -> 120 -> 84 -> N x 10 logits; 61,706 parameters (plain).
    ``dropout``: before each fully connected layer; ``batchnorm``: after each conv and hidden linear layer."""

    def __init__(self, variant: str = "plain", p: float = DEFAULT_DROPOUT["lenet"], n_classes: int = 10):
        _check_variant(variant, p)
        bn = variant == "batchnorm"
        layers: list[nn.Module] = []
        for c_in, c_out, pad in ((1, 6, 2), (6, 16, 0)):
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=5, padding=pad, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
        layers.append(nn.Flatten())
        layers += _linear_block(16 * 5 * 5, 120, variant, p)
        layers += _linear_block(120, 84, variant, p)
        layers += _linear_block(84, n_classes, variant, p, hidden=False)
        super().__init__(*layers)


_MODEL_CLASSES = {"softmax": SoftmaxRegression, "mlp": MLP, "lenet": LeNet5}


def make_model(kind: str, variant: str = "plain", **kwargs) -> nn.Module:
    """A fresh zoo model (``kind`` in MODEL_KINDS, ``variant`` in MODEL_VARIANTS): N x 1 x 28 x 28 -> N x 10 logits.
    Extra keywords go to the class (e.g. ``p=0.5`` for the dropout probability)."""
    if not isinstance(kind, str) or kind not in _MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(MODEL_KINDS)}.")
    _check_variant(variant, 0.0)
    return _MODEL_CLASSES[kind](variant=variant, **kwargs)


# --- MyNet: the configurable MLP whose gradients notebook 02's `backpropagation` computes by hand ---
MYNET_ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
_MYNET_FUNCTIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda z: z}


class MyNet(nn.Module):
    """Fully connected ``sizes[0] -> ... -> sizes[-1]``: ``nn.Linear`` layers in ``self.layers`` (a ModuleList),
    one activation per layer from ``MYNET_ACTIVATIONS`` (the last on the output; ``"identity"``: linear).
    Layer ``l``: ``z_l = a_{l-1} W_lᵀ + b_l``, ``a_l = f_l(z_l)``. ``forward(x)`` (N x sizes[0] -> N x sizes[-1])
    keeps ``self.z = [z_1, ..., z_L]`` and ``self.a = [a_0 = x, ..., a_L]`` (N x sizes[l] each) for manual backprop."""

    def __init__(self, sizes, activations, dtype: torch.dtype | None = None):
        super().__init__()
        sizes, activations = list(sizes), list(activations)
        if len(sizes) < 2 or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes):
            raise ValueError(f"sizes must list at least two positive ints (input, ..., output), got {sizes}.")
        if len(activations) != len(sizes) - 1:
            raise ValueError(f"need one activation per layer: sizes {sizes} make {len(sizes) - 1} layer(s), "
                             f"got {len(activations)} activation(s) {activations}.")
        if unknown := [name for name in activations if name not in MYNET_ACTIVATIONS]:
            raise ValueError(f"unknown activation(s) {unknown}; valid choices: {', '.join(MYNET_ACTIVATIONS)}.")
        self.sizes, self.activations = tuple(sizes), tuple(activations)
        self.layers = nn.ModuleList(nn.Linear(a, b, dtype=dtype) for a, b in zip(sizes[:-1], sizes[1:]))
        self.z: list[torch.Tensor] = []
        self.a: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"MyNet expects input N x {self.sizes[0]}, got shape {tuple(x.shape)}.")
        self.z, self.a = [], [x]
        for layer, name in zip(self.layers, self.activations):
            z = layer(self.a[-1])
            self.z.append(z)
            self.a.append(_MYNET_FUNCTIONS[name](z))
        return self.a[-1]

    def extra_repr(self) -> str:
        return f"activations={list(self.activations)}"
