"""Element-wise activation rule: s = sign(C)·sign(Δy)·sign(f'(x))·sign(Δx) (SPEC §4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Rule

if TYPE_CHECKING:
    from ..backward.step import Step

# Activations whose derivative sign is simply "x > 0"; the rest use autograd for f'(x).
_RELU_LIKE = {nn.ReLU, F.relu, torch.relu, "relu"}


class ActivationRule(Rule):
    """Any element-wise f registered for this rule; sign(f'(x)) comes from autograd."""

    family = "activation"

    def _derivative_sign(self, step: Step, x_arg: object) -> Tensor:
        x = step.value(x_arg)
        target = type(step.module) if step.module is not None else step.node.target
        if target in _RELU_LIKE:
            return (x > 0).to(torch.float64)
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
