"""Max pooling rule: the input point PyTorch selects, s = sign(C)·sign(Δy)·sign(Δx)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Rule, unsupported

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OperatorGraph, OpNode



class MaxPoolRule(Rule):
    """MaxPool1d/2d and AdaptiveMaxPool1d/2d, module or functional."""

    family = "max_pool"

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        flag = (
            getattr(node.module, "return_indices", False)
            if node.module is not None
            else node.fx_node.kwargs.get("return_indices", False)
        )
        if flag:
            raise unsupported(node, "return_indices=True makes a tuple output")

    def _indices(self, step: Step, x: Tensor) -> Tensor:
        m = step.module
        if isinstance(m, nn.MaxPool1d | nn.MaxPool2d):
            fn = F.max_pool1d if isinstance(m, nn.MaxPool1d) else F.max_pool2d
            _, idx = fn(x, m.kernel_size, m.stride, m.padding, m.dilation,
                        ceil_mode=m.ceil_mode, return_indices=True)
            return idx
        if isinstance(m, nn.AdaptiveMaxPool1d | nn.AdaptiveMaxPool2d):
            fn = F.adaptive_max_pool1d if isinstance(m, nn.AdaptiveMaxPool1d) else (
                F.adaptive_max_pool2d
            )
            return fn(x, m.output_size, return_indices=True)[1]
        args = list(step.args)
        args[0] = x
        kwargs = dict(step.kwargs)
        kwargs["return_indices"] = True
        fn = step.node.target
        if fn in (F.adaptive_max_pool1d, F.adaptive_max_pool2d):
            kwargs.pop("return_indices")
            return fn(*args, **kwargs, return_indices=True)[1]
        return fn(*args, **kwargs)[1]

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        x = step.value(x_arg)
        idx = self._indices(step, x.detach())
        B, C = x.shape[:2]
        flat_idx = idx.reshape(B, C, -1)
        dx_sel = step.delta(x_arg).reshape(B, C, -1).gather(2, flat_idx)
        c_sign = step.c_out.reshape(B, C, -1).sign()
        dy = step.delta_out.reshape(B, C, -1)
        signs = step.policy.pointwise(c_sign, dy, torch.ones_like(dy), dx_sel)
        contrib = torch.zeros(B, C, x[0, 0].numel(), dtype=torch.int64, device=x.device)
        contrib.scatter_add_(2, flat_idx, signs)
        step.send(x_arg, contrib.view(x.shape))

