"""Selection rules: max pooling and max/min over dims. The edge goes to the input point
PyTorch selects (``return_indices`` / the indices ``torch.max(x, dim)`` returns; among equal
points, the one PyTorch returns): s = sign(C)·sign(Δy)·sign(Δx) (docs/spec.md §4)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..trace.graph import select_output
from .base import Rule, pool_dims, unsupported
from .ruleset import Entry, ItemOf, Where, ops

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OperatorGraph, OpNode


class MaxPoolRule(Rule):
    """MaxPool1d/2d and AdaptiveMaxPool1d/2d, module or functional."""

    family = "selection"
    channels = "passes"

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
        idx = self._indices(step, x.detach())  # flat positions within each pooled plane
        plane = math.prod(x.shape[-pool_dims(step):])
        rows = x.numel() // plane
        flat_idx = idx.reshape(rows, -1)
        dx_sel = step.delta(x_arg).reshape(rows, -1).gather(1, flat_idx)
        c = step.c_out.reshape(rows, -1)
        dy = step.delta_out.reshape(rows, -1)
        signs = step.policy.pointwise(c, dy, torch.ones((), dtype=dy.dtype), dx_sel)
        contrib = torch.zeros(rows, plane, dtype=torch.int64, device=x.device)
        contrib.scatter_add_(1, flat_idx, signs)
        step.send(x_arg, contrib.view(x.shape))


_MAX_WITH_INDICES = (torch.max, "max", torch.min, "min")
_REDUCING = (torch.amax, "amax", torch.amin, "amin")


def _dims(node_args: tuple, kwargs: dict) -> tuple[object, ...] | None:
    """Reduced dims of max/min(x, dim) (None: over everything)."""
    dim = node_args[1] if len(node_args) > 1 else kwargs.get("dim")
    if dim is None:
        return None
    return tuple(dim) if isinstance(dim, tuple | list) else (dim,)


class MaxOverDimsRule(Rule):
    """``torch.max(x, dim)[0]`` / ``.values``, ``amax(x, dims)`` and their min twins: the
    point PyTorch selects along the reduced dims (for amax over several dims, the index
    ``torch.max`` returns over those dims flattened)."""

    family = "selection"
    channels = "pins"

    def several_outputs(self, node: OpNode) -> bool:
        return node.target in _MAX_WITH_INDICES

    def _call(self, step: Step) -> tuple[object, tuple[int, ...], bool, bool]:
        """(input, reduced dims, keepdim, whether it is a min)."""
        args = step.args[2:] if step.node.target is select_output else step.args
        kwargs = step.kwargs
        fn = step.args[0] if step.node.target is select_output else step.node.target
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        return args[0], _dims(args, kwargs), bool(keepdim), fn in ("min", torch.min,
                                                                    "amin", torch.amin)

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if _dims(node.operands, node.fx_node.kwargs) is None:
            raise unsupported(node, "max/min over all dims mixes the samples of a batch (or of "
                              "two tensors: not a selection); give dim=")

    def backward(self, step: Step) -> None:
        x_arg, dims, keepdim, is_min = self._call(step)
        x = step.value(x_arg).detach()
        dims = sorted({d % x.dim() for d in dims})
        kept = [d for d in range(x.dim()) if d not in dims]
        order = (*kept, *dims)
        flat = x.permute(order).reshape(*[x.shape[d] for d in kept], -1)
        idx = (flat.min(-1) if is_min else flat.max(-1)).indices  # the point PyTorch returns
        ids = torch.arange(x.numel(), device=x.device).view(x.shape).permute(order)
        ids = ids.reshape(*[x.shape[d] for d in kept], -1)
        source = ids.gather(-1, idx.unsqueeze(-1)).squeeze(-1).reshape(-1)
        dx_sel = step.delta(x_arg).reshape(-1)[source]
        c = step.c_out.reshape(-1)
        dy = step.delta_out.reshape(-1)
        signs = step.policy.pointwise(c, dy, torch.ones((), dtype=dy.dtype), dx_sel)
        contrib = torch.zeros(x.numel(), dtype=torch.int64, device=x.device)
        contrib.index_add_(0, source, signs)
        step.send(x_arg, contrib.view(x.shape))


def _over_dims(node: OpNode) -> bool:
    """max(x, dim), not the element-wise max of two input-dependent tensors."""
    dims = _dims(node.operands, node.fx_node.kwargs)
    return dims is not None and not any(node.is_live_arg(d) for d in dims)


_over = MaxOverDimsRule()

ENTRIES: list[Entry] = [
    (ops(nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, F.max_pool1d,
         F.max_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d), MaxPoolRule()),
    (ItemOf(_MAX_WITH_INDICES, 0), _over),
    (ops(*_REDUCING), _over),
    (ops(*_MAX_WITH_INDICES) & Where(_over_dims, "max(x, dim)"), _over),
]
