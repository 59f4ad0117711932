"""Stochastic gradient descent written by hand, bit for bit equal to ``torch.optim.SGD``.

The update rule is the one in PyTorch's documentation. For each parameter
$\\theta$ with gradient $g = \\nabla_\\theta L$, learning rate $\\gamma$, weight
decay $\\lambda$, momentum $\\mu$ and dampening $\\tau$::

    g <- g + lambda * theta                      (weight decay: L2 penalty folded into g)
    b <- g                                       (first step: the buffer is the gradient)
    b <- mu * b + (1 - tau) * g                  (later steps)
    g <- g + mu * b   if nesterov   else   g <- b
    theta <- theta - gamma * g

Each line of :meth:`ManualSGD.step` is one tensor operation, in the order that
torch's CPU implementation uses, so floating-point rounding is the same and the
two optimizers give ``torch.equal`` parameters after every step.

``ManualSGD`` subclasses :class:`torch.optim.Optimizer` only for the bookkeeping
(``param_groups``, ``state``, ``state_dict``), so learning-rate schedulers and
``helpers.train.train`` accept it exactly like ``torch.optim.SGD``; the update
itself and ``zero_grad`` are written out here.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def check_sgd_hyperparameters(
    lr: float, momentum: float, dampening: float, weight_decay: float, nesterov: bool
) -> None:
    """Raise ``ValueError`` for the settings that ``torch.optim.SGD`` rejects."""
    if lr < 0.0:
        raise ValueError(f"learning rate lr={lr} is negative; use lr >= 0.")
    if momentum < 0.0:
        raise ValueError(f"momentum={momentum} is negative; use momentum >= 0 (typically 0.9).")
    if weight_decay < 0.0:
        raise ValueError(f"weight_decay={weight_decay} is negative; use weight_decay >= 0.")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            f"nesterov=True needs momentum > 0 and dampening == 0, "
            f"got momentum={momentum}, dampening={dampening}."
        )


class ManualSGD(torch.optim.Optimizer):
    """Hand-written SGD with momentum, dampening, weight decay and Nesterov momentum.

    A drop-in replacement for ``torch.optim.SGD(params, lr, momentum, dampening,
    weight_decay, nesterov)``: same arguments, same checks, same results.
    ``params`` is an iterable of tensors or of parameter-group dicts.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
    ):
        check_sgd_hyperparameters(lr, momentum, dampening, weight_decay, nesterov)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            check_sgd_hyperparameters(
                group["lr"], group["momentum"], group["dampening"],
                group["weight_decay"], group["nesterov"],
            )
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: Tensor, group: dict) -> None:
        """One SGD step for one parameter tensor (any shape), in place."""
        lr = group["lr"]
        mu = group["momentum"]
        tau = group["dampening"]
        weight_decay = group["weight_decay"]
        if param.grad.is_sparse:
            raise ValueError("ManualSGD does not support sparse gradients; use torch.optim.SGD.")
        g = param.grad
        if weight_decay != 0:
            # g = g + lambda * theta   (a new tensor: param.grad itself is left untouched)
            g = g.add(param, alpha=weight_decay)
        if mu != 0:
            state = self.state[param]
            buf = state.get("momentum_buffer")
            if buf is None:
                # b_1 = g_1   (no dampening on the first step)
                buf = g.clone()
                state["momentum_buffer"] = buf
            else:
                # b_t = mu * b_{t-1} ...
                buf.mul_(mu)
                # ... + (1 - tau) * g_t
                buf.add_(g, alpha=1 - tau)
            if group["nesterov"]:
                # g = g + mu * b   (look ahead along the velocity)
                g = g.add(buf, alpha=mu)
            else:
                # g = b
                g = buf
        # theta = theta - lr * g
        param.add_(g, alpha=-lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: ``None`` (default, like torch) or zeros in place."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.detach_()
                    param.grad.requires_grad_(False)
                    param.grad.zero_()
