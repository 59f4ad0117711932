"""ManualSGD must equal torch.optim.SGD bit for bit (torch.equal), not approximately."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.models import CIFAR2MLP, clone_model
from helpers.optim import ManualSGD


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def random_batches(n_steps: int, seed: int = 1, batch: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 7, generator=gen), torch.randint(0, 3, (batch,), generator=gen))
            for _ in range(n_steps)]


def train_step(model: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def assert_params_equal(a: nn.Module, b: nn.Module, where: str) -> None:
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), f"{name} differs {where} (max |diff| {(pa - pb).abs().max():.3g})"


def run_side_by_side(settings: dict, n_steps: int = 20, torch_kwargs: dict | None = None,
                     scheduler=None) -> None:
    """Train two copies in lockstep; compare losses and every parameter after every step."""
    ref, mine = small_net(), small_net()
    opt_ref = torch.optim.SGD(ref.parameters(), **settings, **(torch_kwargs or {}))
    opt_mine = ManualSGD(mine.parameters(), **settings)
    sched = [scheduler(opt_ref), scheduler(opt_mine)] if scheduler else []
    for step, (x, y) in enumerate(random_batches(n_steps)):
        loss_ref = train_step(ref, opt_ref, x, y)
        loss_mine = train_step(mine, opt_mine, x, y)
        for s in sched:
            s.step()
        assert torch.equal(loss_ref, loss_mine), f"loss differs at step {step} with {settings}"
        assert_params_equal(ref, mine, f"after step {step} with {settings}")
    assert not torch.equal(small_net().state_dict()["0.weight"], mine.state_dict()["0.weight"]) or \
        settings["lr"] == 0, "parameters did not move: the comparison proves nothing"


def valid_settings():
    grid = itertools.product(
        (0.1, 0.037),              # lr
        (0.0, 0.5, 0.9),           # momentum
        (0.0, 0.3),                # dampening
        (0.0, 1e-4, 5e-2),         # weight_decay
        (False, True),             # nesterov
    )
    for lr, momentum, dampening, weight_decay, nesterov in grid:
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        yield {"lr": lr, "momentum": momentum, "dampening": dampening,
               "weight_decay": weight_decay, "nesterov": nesterov}


SETTINGS = list(valid_settings())


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k[:3]}{v}" for k, v in s.items()))
def test_bit_identical_to_torch_sgd_default(settings):
    run_side_by_side(settings)


@pytest.mark.parametrize("foreach", [False, True])
def test_bit_identical_to_torch_sgd_foreach_and_single_tensor(foreach):
    for settings in SETTINGS[::3]:
        run_side_by_side(settings, n_steps=10, torch_kwargs={"foreach": foreach})


def test_settings_grid_covers_every_term():
    assert len(SETTINGS) >= 40
    for key in ("momentum", "dampening", "weight_decay"):
        assert any(s[key] != 0 for s in SETTINGS), key
    assert any(s["nesterov"] for s in SETTINGS)
    assert any(s["dampening"] and s["momentum"] and s["weight_decay"] for s in SETTINGS)


def test_bit_identical_with_cosine_schedule():
    run_side_by_side({"lr": 0.2, "momentum": 0.9, "dampening": 0.0, "weight_decay": 5e-4,
                      "nesterov": True}, n_steps=20,
                     scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20))


def test_bit_identical_with_parameter_groups():
    ref, mine = small_net(), small_net()

    def groups(model):
        return [{"params": model[0].parameters(), "lr": 0.3, "momentum": 0.8, "weight_decay": 1e-3},
                {"params": model[2].parameters(), "nesterov": True, "momentum": 0.5},
                {"params": model[4].parameters()}]

    opt_ref = torch.optim.SGD(groups(ref), lr=0.05, momentum=0.9)
    opt_mine = ManualSGD(groups(mine), lr=0.05, momentum=0.9)
    for x, y in random_batches(15):
        train_step(ref, opt_ref, x, y)
        train_step(mine, opt_mine, x, y)
        assert_params_equal(ref, mine, "with parameter groups")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_bit_identical_on_cifar2_mlp(device):
    """On CUDA torch.optim.SGD defaults to its foreach kernels; ManualSGD must still match."""
    torch.manual_seed(0)
    ref = CIFAR2MLP().to(device)
    mine = clone_model(ref)
    settings = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}
    opt_ref = torch.optim.SGD(ref.parameters(), **settings)
    opt_mine = ManualSGD(mine.parameters(), **settings)
    gen = torch.Generator().manual_seed(3)
    for step in range(4):
        x = torch.randn(64, 3, 32, 32, generator=gen).to(device)
        y = torch.randint(0, 2, (64,), generator=gen).to(device)
        train_step(ref, opt_ref, x, y)
        train_step(mine, opt_mine, x, y)
        assert_params_equal(ref, mine, f"on CIFAR2MLP after step {step}")


def test_first_momentum_buffer_is_the_gradient_then_dampened():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = ManualSGD([p], lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.25)
    p.grad = torch.tensor([0.5, 1.0])
    opt.step()
    g1 = torch.tensor([0.5, 1.0]) + 0.25 * torch.tensor([1.0, -2.0])   # g + lambda * theta
    assert torch.allclose(opt.state[p]["momentum_buffer"], g1)          # b_1 = g_1, undamped
    theta1 = torch.tensor([1.0, -2.0]) - 0.1 * g1
    assert torch.allclose(p.detach(), theta1)
    p.grad = torch.tensor([1.0, 1.0])
    opt.step()
    g2 = torch.tensor([1.0, 1.0]) + 0.25 * theta1
    b2 = 0.9 * g1 + 0.5 * g2                                              # mu b + (1 - tau) g
    assert torch.allclose(opt.state[p]["momentum_buffer"], b2)
    assert torch.allclose(p.detach(), theta1 - 0.1 * b2)


def test_step_leaves_gradient_untouched_and_skips_params_without_grad():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = ManualSGD([a, b], lr=0.5, momentum=0.9, weight_decay=0.1, nesterov=True)
    a.grad = torch.full((3,), 2.0)
    opt.step()
    assert torch.equal(a.grad, torch.full((3,), 2.0))
    assert torch.equal(b.detach(), torch.ones(3))
    assert b not in opt.state


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_matches_torch(set_to_none):
    for opt_cls in (torch.optim.SGD, ManualSGD):
        p = nn.Parameter(torch.ones(2))
        p.grad = torch.ones(2)
        opt_cls([p], lr=0.1).zero_grad(set_to_none=set_to_none)
        if set_to_none:
            assert p.grad is None, opt_cls
        else:
            assert torch.equal(p.grad, torch.zeros(2)), opt_cls


def test_zero_grad_default_sets_none():
    p = nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    ManualSGD([p], lr=0.1).zero_grad()
    assert p.grad is None


BAD = [
    {"lr": -0.1},
    {"lr": 0.1, "momentum": -0.5},
    {"lr": 0.1, "weight_decay": -1e-4},
    {"lr": 0.1, "nesterov": True},                                    # nesterov without momentum
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},  # nesterov with dampening
]


@pytest.mark.parametrize("kwargs", BAD, ids=str)
def test_rejects_what_torch_rejects(kwargs):
    params = [nn.Parameter(torch.ones(1))]
    with pytest.raises(ValueError):
        torch.optim.SGD(params, **kwargs)
    with pytest.raises(ValueError) as err:
        ManualSGD(params, **kwargs)
    bad_name = next(k for k in ("nesterov", "weight_decay", "momentum", "lr") if k in kwargs)
    assert bad_name in str(err.value)


def test_state_dict_round_trip_continues_identically():
    ref, mine = small_net(), small_net()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    opt_mine = ManualSGD(mine.parameters(), lr=0.1, momentum=0.9)
    batches = random_batches(10)
    for x, y in batches[:5]:
        train_step(ref, opt_ref, x, y)
        train_step(mine, opt_mine, x, y)
    resumed = ManualSGD(mine.parameters(), lr=0.1, momentum=0.9)
    resumed.load_state_dict(opt_mine.state_dict())
    for x, y in batches[5:]:
        train_step(ref, opt_ref, x, y)
        train_step(mine, resumed, x, y)
    assert_params_equal(ref, mine, "after resuming from a state_dict")
