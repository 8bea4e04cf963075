"""Element-wise activation rule: s = sign(C)·sign(Δy)·sign(f'(x))·sign(Δx) (SPEC §4)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Rule

if TYPE_CHECKING:
    from ..backward.step import Step


def _param(step: Step, name: str, position: int, default: float) -> float:
    """An activation's parameter from its module, or from the functional call's arguments."""
    if step.module is not None:
        return float(getattr(step.module, name, default))
    return float(step.arg(position, name, default))


def _constant(sign: float) -> Callable[[Step, Tensor], Tensor]:
    return lambda step, x: torch.full_like(x, sign, dtype=torch.float64)


def _negative_part(name: str, default: float) -> Callable[[Step, Tensor], Tensor]:
    """1 for x > 0, else the sign of the parameter scaling the negative side."""
    def sign(step: Step, x: Tensor) -> Tensor:
        scale = _param(step, name, 1, default)
        below = float((scale > 0) - (scale < 0))
        return torch.where(x > 0, 1.0, below).to(torch.float64)
    return sign


def _hardtanh(step: Step, x: Tensor) -> Tensor:
    if isinstance(step.module, nn.ReLU6) or step.node.target is F.relu6:
        lo, hi = 0.0, 6.0
    else:
        lo, hi = _param(step, "min_val", 1, -1.0), _param(step, "max_val", 2, 1.0)
    return ((x > lo) & (x < hi)).to(torch.float64)


def _silu(step: Step, x: Tensor) -> Tensor:
    # f' = σ(x)·(1 + x·(1 − σ(x))); σ > 0, so the bracket decides
    return (1 + x.double() * torch.sigmoid(-x.double())).sign()


def _gelu(step: Step, x: Tensor) -> Tensor | None:
    approximate = step.module.approximate if step.module is not None else step.kwargs.get(
        "approximate", "none")
    if approximate != "none":
        return None
    # f' = Φ(x) + x·φ(x) = φ(x)·(Φ(x)/φ(x) + x); the Mills ratio stays finite where Φ underflows
    xd = x.double()
    mills = math.sqrt(math.pi / 2) * torch.special.erfcx(-xd / math.sqrt(2))
    return (mills + xd).sign()


def _hardswish(step: Step, x: Tensor) -> Tensor:
    return torch.where(x >= 3, 1.0, torch.where(x <= -3, 0.0, (2 * x.double() + 3).sign()))


def _hardsigmoid(step: Step, x: Tensor) -> Tensor:
    return ((x > -3) & (x < 3)).to(torch.float64)


# sign(f'(x)) in closed form, so saturated units (tanh(25) == 1.0) keep their true sign;
# activations missing here use autograd
_DERIVATIVE_SIGN: dict[object, Callable[[Step, Tensor], Tensor | None]] = {}
for _keys, _fn in (
    ((nn.ReLU, F.relu, torch.relu, "relu"), lambda step, x: (x > 0).to(torch.float64)),
    ((nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid", nn.Tanh, torch.tanh, F.tanh, "tanh",
      nn.Softplus, F.softplus, nn.SELU, F.selu), _constant(1.0)),
    ((nn.LeakyReLU, F.leaky_relu), _negative_part("negative_slope", 0.01)),
    ((nn.ELU, F.elu, nn.CELU, F.celu), _negative_part("alpha", 1.0)),
    ((nn.ReLU6, F.relu6, nn.Hardtanh, F.hardtanh), _hardtanh),
    ((nn.SiLU, F.silu), _silu),
    ((nn.GELU, F.gelu), _gelu),
    ((nn.Hardswish, F.hardswish), _hardswish),
    ((nn.Hardsigmoid, F.hardsigmoid), _hardsigmoid),
):
    _DERIVATIVE_SIGN.update(dict.fromkeys(_keys, _fn))


class ActivationRule(Rule):
    """Any element-wise f registered for this rule."""

    family = "activation"

    def _derivative_sign(self, step: Step, x_arg: object) -> Tensor:
        x = step.value(x_arg)
        target = type(step.module) if step.module is not None else step.node.target
        closed_form = _DERIVATIVE_SIGN.get(target)
        sign = closed_form(step, x) if closed_form is not None else None
        if sign is not None:
            return sign
        leaf = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = step.call({x_arg.name: leaf})
            (grad,) = torch.autograd.grad(out.sum(), leaf)
        return grad.sign().to(torch.float64)

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        gain = self._derivative_sign(step, x_arg)
        signs = step.policy.pointwise(step.c_out.sign(), step.delta_out, gain, step.delta(x_arg))
        step.send(x_arg, signs)
