"""Notebook 03's SGD: ``sgd_step`` and ``ManualSGD`` (bit for bit equal to torch.optim.SGD), and their graders.

The code under test is the notebook's own, reached by a defs-only import; the graders come from
``helpers.grading``. A grader must pass the notebook's solution and fail a broken one with an
AssertionError, its printed lines naming the setting that broke.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.grading import grade_forgot_zero_grad, grade_manual_sgd, grade_sgd_step
from helpers.models import CIFAR2MLP, clone_model
from helpers.notebook import load_defs, notebook_path

NOTEBOOK = "03_cifar2_mlp_sgd"
nb = load_defs(NOTEBOOK)
ManualSGD = nb.ManualSGD


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


# --------------------------------------------------------------------------------------
# ManualSGD == torch.optim.SGD, bit for bit
# --------------------------------------------------------------------------------------
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


def test_step_returns_the_closure_loss():
    p = nn.Parameter(torch.ones(2))
    opt = ManualSGD([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 2.0
    assert torch.allclose(p.detach(), torch.full((2,), 0.8))


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


BAD = [
    {"lr": -0.1},
    {"lr": 0.1, "momentum": -0.5},
    {"lr": 0.1, "weight_decay": -1e-4},
    {"lr": 0.1, "nesterov": True},                                    # nesterov without momentum
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},  # nesterov with dampening
]


@pytest.mark.parametrize("kwargs", BAD, ids=str)
def test_rejects_what_torch_rejects_with_torchs_message(kwargs):
    params = [nn.Parameter(torch.ones(1))]
    with pytest.raises(ValueError) as expected:
        torch.optim.SGD(params, **kwargs)
    with pytest.raises(ValueError) as err:
        ManualSGD(params, **kwargs)
    assert str(err.value) == str(expected.value)


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


# --------------------------------------------------------------------------------------
# sgd_step: the plain update
# --------------------------------------------------------------------------------------
def test_sgd_step_is_plain_sgd_up_to_rounding():
    ref, mine = small_net(), small_net()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    for x, y in random_batches(10):
        train_step(ref, opt_ref, x, y)
        mine.zero_grad()
        F.cross_entropy(mine(x), y).backward()
        nb.sgd_step(list(mine.parameters()), 0.1)
    for p, q in zip(ref.parameters(), mine.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(small_net()[0].weight, mine[0].weight), "training did not move the weights"


def test_sgd_step_in_place_skips_missing_grads_and_checks_lr():
    a, b = nn.Parameter(torch.tensor([1.0, 2.0])), nn.Parameter(torch.ones(2))
    a.grad = torch.tensor([10.0, -10.0])
    a_storage = a.data_ptr()
    nb.sgd_step([a, b], 0.01)
    assert torch.allclose(a.detach(), torch.tensor([0.9, 2.1]))
    assert a.data_ptr() == a_storage and a.requires_grad and a.grad is not None
    assert torch.equal(b.detach(), torch.ones(2))
    with pytest.raises(ValueError, match="lr"):
        nb.sgd_step([a], -0.1)


# --------------------------------------------------------------------------------------
# The graders: the notebook's solution passes; a broken copy fails, naming what broke
# --------------------------------------------------------------------------------------
def _cell_source(marker: str) -> str:
    cells = json.loads(notebook_path(NOTEBOOK).read_text())["cells"]
    found = [c for c in cells if c["cell_type"] == "code" and marker in "".join(c["source"])]
    assert len(found) == 1, f"expected one code cell containing {marker!r}, found {len(found)}"
    return "".join(found[0]["source"])


def broken(name: str, old: str, new: str):
    """The notebook's definition ``name`` with ``old`` replaced by ``new`` in its cell."""
    source = _cell_source(f"{'class' if name[0].isupper() else 'def'} {name}(")
    assert source.count(old) == 1, f"{old!r} not found exactly once in the cell of {name}"
    namespace = {"torch": torch}
    exec(source.replace(old, new), namespace)
    return namespace[name]


def test_notebook_solutions_pass_their_graders(capsys):
    grade_sgd_step(nb.sgd_step)
    grade_manual_sgd(ManualSGD)
    grade_forgot_zero_grad(nb.FORGOT_ZERO_GRAD)
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert out.count("PASS") >= 2 + 2 + 8 + 5 + 1


BROKEN_MANUAL_SGD = [
    # (what is broken, old, new, the settings whose check must fail)
    ("weight decay sign", "g.add(p, alpha=weight_decay)", "g.add(p, alpha=-weight_decay)",
     ["weight decay", "combined", "nesterov + weight decay"]),
    ("nesterov as p - lr*g", "g = g.add(buf, alpha=mu)", "g = g + mu * buf", ["nesterov"]),
    ("dampened first buffer", 'state["momentum_buffer"] = g.clone()',
     'state["momentum_buffer"] = g.clone() * (1 - dampening)', ["dampening", "combined"]),
    ("lr from the defaults, not the group", 'lr, mu, dampening = group["lr"]',
     'lr, mu, dampening = self.defaults["lr"]', ["ExponentialLR schedule"]),
]


@pytest.mark.parametrize("what, old, new, failing", BROKEN_MANUAL_SGD, ids=[b[0] for b in BROKEN_MANUAL_SGD])
def test_grade_manual_sgd_names_the_broken_setting(capsys, what, old, new, failing):
    with pytest.raises(AssertionError, match="03-manual-sgd-check"):
        grade_manual_sgd(broken("ManualSGD", old, new))
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    for setting in failing:
        assert any(setting in line for line in failed), f"{what}: no FAIL line names {setting!r}:\n" + "\n".join(lines)
    assert any(line.startswith("PASS  plain") for line in lines), f"{what}: plain SGD should still pass"


def test_grade_manual_sgd_reports_a_stub_and_a_wrong_signature_without_crashing(capsys):
    stub = broken("ManualSGD", _cell_source("class ManualSGD(").split("### BEGIN SOLUTION")[1].split(
        "### END SOLUTION")[0], "\n                raise NotImplementedError()\n                ")
    with pytest.raises(AssertionError):
        grade_manual_sgd(stub)
    out = capsys.readouterr().out
    assert "FAIL  momentum: not implemented yet" in out
    assert "PASS  {'lr': -0.1} rejected as torch does" in out  # the checks outside the region still pass

    class NotAnOptimizer:
        def __init__(self, params, learning_rate):
            pass

    with pytest.raises(AssertionError):
        grade_manual_sgd(NotAnOptimizer)
    out = capsys.readouterr().out
    assert "FAIL  subclass of torch.optim.Optimizer" in out
    assert "FAIL  signature of NotAnOptimizer" in out


def test_grade_sgd_step_fails_a_sign_flip_and_a_rebinding_update(capsys):
    for old, new in [("p -= lr * p.grad", "p += lr * p.grad"), ("p -= lr * p.grad", "p = p - lr * p.grad")]:
        with pytest.raises(AssertionError, match="03-sgd-step-check"):
            grade_sgd_step(broken("sgd_step", old, new))
        out = capsys.readouterr().out
        assert "FAIL  lr=0.1: after step 1, 0.weight differs" in out, out


def test_grade_sgd_step_wrong_signature(capsys):
    with pytest.raises(AssertionError):
        grade_sgd_step(lambda parameters, learning_rate: None)
    assert "FAIL  signature of" in capsys.readouterr().out


@pytest.mark.parametrize("settings", [{"momentum": 0.9}, {}, {"momentum": 1.0, "dampening": 0.5}, {"lr": 1.0}],
                         ids=str)
def test_grade_forgot_zero_grad_fails_wrong_answers(capsys, settings):
    with pytest.raises(AssertionError, match="03-forgot-zero-grad-check"):
        grade_forgot_zero_grad(settings)
    assert "FAIL  SGD(lr=0.1" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# The notebook's experiments
# --------------------------------------------------------------------------------------
def test_momentum_beats_plain_sgd_on_the_ill_conditioned_quadratic():
    losses = {name: 0.5 * (nb.QUADRATIC_CURVATURES * nb.quadratic_path(200, 0.0125, **kw) ** 2).sum(1)
              for name, kw in {"plain": {}, "momentum": {"momentum": 0.9},
                               "nesterov": {"momentum": 0.9, "nesterov": True}}.items()}
    assert losses["plain"][0] == 100.0  # f(-10, 1) = (1 * 100 + 100 * 1) / 2
    assert losses["momentum"][-1] < 1e-4 * losses["plain"][-1]
    assert losses["nesterov"][-1] < losses["momentum"][-1]
    assert nb.steps_to(losses["plain"]) is None and nb.steps_to(torch.tensor([1.0, 1e-7])) == 1


def test_ridge_fit_interpolates_without_decay_and_shrinks_with_it():
    x = torch.linspace(-1, 1, 10, dtype=torch.float64)
    y = torch.sin(3 * x)
    w0 = nb.ridge_fit(x, y, 9, 0.0)
    assert nb.rmse(w0, x, y) < 1e-8
    norms = [nb.ridge_fit(x, y, 9, lam).norm().item() for lam in (1e-6, 1e-3, 1e-1, 10.0)]
    assert norms == sorted(norms, reverse=True)
    X = nb.polynomial_features(x, 9)
    assert X.shape == (10, 10) and torch.equal(X[:, 0], torch.ones(10, dtype=torch.float64))


def test_double_well_momentum_can_leave_the_global_basin():
    assert nb.double_well(torch.tensor(-1.47)) < nb.double_well(torch.tensor(1.35))
    plain, heavy = nb.double_well_path(-2.5, 0.0), nb.double_well_path(-2.5, 0.9)
    assert plain.shape == heavy.shape == (3001,) and plain[0] == -2.5
    assert abs(plain[-1] + 1.47) < 0.01         # plain SGD stays in the global basin
    assert abs(heavy[-1] - 1.35) < 0.01         # momentum 0.9 carries it into the local one
