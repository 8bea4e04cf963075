"""Element-wise functions and softmax (docs/spec.md §4).

An element-wise f (activations, but also exp, sqrt, x ** c…): s = sign(C)·sign(Δy)·sign(f'(x))·
sign(Δx). Softmax / log-softmax inside the model: each output rises with its own input, the
coupling through the normaliser is dropped, s = sign(C)·sign(Δy)·sign(Δx); as the model's last
operator it is data movement, s = sign(C).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backward import kernels
from .base import Rule
from .ruleset import Entry, live_operands, ops

if TYPE_CHECKING:
    from ..backward.step import Step


def _param(step: Step, name: str, position: int, default: float) -> float:
    """An activation's parameter from its module, or from the functional call's arguments."""
    if step.module is not None:
        return float(getattr(step.module, name, default))
    return float(step.arg(position, name, default))


def _constant(sign: float) -> Callable[[Step, Tensor], Tensor]:
    """A gain of one sign everywhere, as one number (the policy broadcasts it)."""
    return lambda step, x: torch.full((), sign, dtype=torch.float64, device=x.device)


def _inside(x: Tensor, lo: float, hi: float | None = None) -> Tensor:
    """The 0/1 gain lo < x < hi (hi None: no upper bound) as int8, the policy's mask dtype."""
    if (kernels.ENABLED and x.device.type == "cpu" and x.is_contiguous()
            and x.dtype in (torch.float32, torch.float64)):
        flat = x.detach().reshape(-1).numpy()
        return torch.from_numpy(kernels.inside(flat, lo, hi)).view(x.shape)
    inside = x > lo if hi is None else (x > lo) & (x < hi)
    return inside.view(torch.int8)


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
    return _inside(x, lo, hi)


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
    return _inside(x, -3.0, 3.0)


# sign(f'(x)) in closed form, so saturated units (tanh(25) == 1.0) keep their true sign;
# activations missing here use autograd
_DERIVATIVE_SIGN: dict[object, Callable[[Step, Tensor], Tensor | None]] = {}
for _keys, _fn in (
    ((nn.ReLU, F.relu, torch.relu, "relu"), lambda step, x: _inside(x, 0.0)),
    ((nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid", nn.Tanh, torch.tanh, F.tanh, "tanh",
      nn.Softplus, F.softplus, nn.SELU, F.selu), _constant(1.0)),
    ((nn.LeakyReLU, F.leaky_relu), _negative_part("negative_slope", 0.01)),
    ((nn.ELU, F.elu, nn.CELU, F.celu), _negative_part("alpha", 1.0)),
    ((nn.ReLU6, F.relu6, nn.Hardtanh, F.hardtanh), _hardtanh),
    ((nn.SiLU, F.silu), _silu),
    ((nn.GELU, F.gelu), _gelu),
    ((nn.Hardswish, F.hardswish), _hardswish),
    ((nn.Hardsigmoid, F.hardsigmoid), _hardsigmoid),
    ((torch.exp, "exp", torch.log, "log", torch.sqrt, "sqrt", torch.erf, "erf", nn.LogSigmoid,
      F.logsigmoid, nn.Softsign, F.softsign, torch.log1p, "log1p", torch.expm1, "expm1"),
     _constant(1.0)),
    ((torch.rsqrt, "rsqrt", torch.reciprocal, "reciprocal"), _constant(-1.0)),
    ((torch.abs, operator.abs, "abs", torch.square, "square"), lambda step, x: x.double().sign()),
):
    _DERIVATIVE_SIGN.update(dict.fromkeys(_keys, _fn))


class ActivationRule(Rule):
    """Any element-wise f of one input-dependent tensor (other operands constants)."""

    family = "activation"
    channels = "passes"

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
        return grad.nan_to_num(0.0).sign().to(torch.float64)

    def backward(self, step: Step) -> None:
        x_arg = next(a for a in step.node.operands if step.is_live(a))
        gain = self._derivative_sign(step, x_arg)
        signs = step.policy.pointwise(step.c_out, step.delta_out, gain, step.delta(x_arg))
        step.send(x_arg, signs)


class SoftmaxRule(Rule):
    """Softmax / log-softmax: data movement at the model's output, else a gain of +1."""

    family = "activation"
    channels = "pins"

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        c_sign = step.c_out.sign()
        if step.node.name == step.output_name:
            step.send(x_arg, step.policy.movement(c_sign))
            return
        dx = step.delta(x_arg)
        gain = torch.ones((), dtype=torch.float64, device=dx.device)
        step.send(x_arg, step.policy.pointwise(c_sign, step.delta_out, gain, dx))


_ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.Hardtanh, nn.Softplus, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.SELU, nn.CELU, nn.PReLU,
    nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink,
)
_ACTIVATION_FUNCTIONS = (
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.sigmoid,
    F.sigmoid, torch.tanh, F.tanh, F.hardtanh, F.softplus, F.mish, F.hardswish,
    F.hardsigmoid, F.selu, F.celu, F.logsigmoid, F.softsign, F.prelu, torch.exp, torch.log,
    torch.sqrt, torch.rsqrt, torch.reciprocal, torch.abs, torch.square, torch.erf, torch.log1p,
    torch.expm1, torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max, operator.abs,
    F.softshrink, F.hardshrink, F.tanhshrink,
)
_ACTIVATION_METHODS = (
    "relu", "sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "reciprocal", "abs", "square",
    "erf", "log1p", "expm1", "clamp", "clip", "clamp_min", "clamp_max",
)

ENTRIES: list[Entry] = [
    (ops(*_ACTIVATION_MODULES, *_ACTIVATION_FUNCTIONS, *_ACTIVATION_METHODS), ActivationRule()),
    (ops(operator.pow, torch.pow, "pow") & live_operands(1), ActivationRule()),
    (ops(nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
         "softmax", "log_softmax"), SoftmaxRule()),
]
