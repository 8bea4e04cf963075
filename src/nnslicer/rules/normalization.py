"""Normalization with the sample's own statistics: LayerNorm, GroupNorm, InstanceNorm, RMSNorm.

The statistics are held fixed: each output point has one edge, to the same input point, with
the point's affine weight γ_i as its gain (1 without one); the coupling of the points through
the mean and variance is dropped: s = sign(C)·sign(Δy)·sign(γ_i·Δx) (docs/spec.md §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.instancenorm import _InstanceNorm

from .base import Rule
from .ruleset import Entry, ops
from .scale import broadcast_channels

if TYPE_CHECKING:
    from ..backward.step import Step

_LAST_DIMS = (nn.LayerNorm, F.layer_norm)  # γ spans the normalized (last) dims
_RMS = tuple(x for x in (getattr(nn, "RMSNorm", None), getattr(F, "rms_norm", None)) if x)
_PER_CHANNEL = (nn.GroupNorm, F.group_norm, nn.InstanceNorm1d, nn.InstanceNorm2d,
                nn.InstanceNorm3d, F.instance_norm)
#: where the affine weight of each functional form sits (position, keyword)
_FUNCTION_WEIGHT = {F.layer_norm: (2, "weight"), F.group_norm: (2, "weight"),
                    F.instance_norm: (3, "weight")}
if _RMS:
    _FUNCTION_WEIGHT[F.rms_norm] = (2, "weight")


class NormalizationRule(Rule):
    """A normalization layer with its statistics held fixed (see the module docstring)."""

    family = "scale"
    channels = "pins"  # LayerNorm mixes a token's features; GroupNorm couples its group

    def _weight(self, step: Step) -> Any:
        if step.module is not None:
            return getattr(step.module, "weight", None)
        position, keyword = _FUNCTION_WEIGHT[step.node.target]
        return step.value(step.arg(position, keyword))

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        dx = step.delta(x_arg)
        weight = self._weight(step)
        if weight is None:
            gain: Tensor = torch.ones((), dtype=torch.float64, device=dx.device)
        else:  # per channel (dim 1) for GroupNorm/InstanceNorm, else over the last dims
            weight = weight.detach().to(torch.float64)
            per_channel = isinstance(step.module, nn.GroupNorm | _InstanceNorm) or (
                step.node.target in (F.group_norm, F.instance_norm))
            gain = broadcast_channels(weight, dx) if per_channel else weight
        signs = step.policy.pointwise(step.c_out, step.delta_out, gain, dx)
        step.send(x_arg, signs)


ENTRIES: list[Entry] = [
    (ops(*_LAST_DIMS, *_RMS, *_PER_CHANNEL), NormalizationRule()),
]
