"""Data-movement rules: every output point has one source point, s = sign(C) (docs/spec.md §4).

Reshaping, permuting, indexing, concatenating, splitting, padding (padding points are
constants), repeating, rolling, flipping, nearest-neighbour upsampling, masking with a constant
mask, and every Dropout / drop-path in eval mode. An expanded or repeated point collects from
all its copies.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Rule, unsupported
from .ruleset import AttributeOf, Entry, FunctionNamed, ItemOf, Where, ops

if TYPE_CHECKING:
    from ..backward.step import Step
    from ..trace.graph import OpNode


class IdentityMovementRule(Rule):
    """Same shape in and out, point i comes from point i (Dropout, Identity, contiguous...).

    ``verify``: the operator is the identity only in eval mode (drop-path / stochastic depth
    functions a model defines itself, ``F.dropout``); the rule checks the values are unchanged.
    """

    family = "movement"
    channels = "passes"

    def __init__(self, verify: bool = False):
        self.verify = verify

    def backward(self, step: Step) -> None:
        x_arg = next(a for a in step.node.operands if step.is_live(a))
        if self.verify and not torch.equal(step.value_out, step.value(x_arg)):
            raise unsupported(step.node, "it changed its input (it is the identity only in eval "
                              "mode: call it with training=False)")
        step.send(x_arg, step.policy.movement(step.c_out.sign()))


class RearrangeRule(Rule):
    """Each output element is a copy of one input element (or a constant), so the backward of
    the operator (its vector-Jacobian product) applied to sign(C) adds exactly sign(C) to each
    source point, summed over copies."""

    family = "movement"

    def __init__(self, several: tuple[object, ...] = ()):
        self.several = several

    def several_outputs(self, node: OpNode) -> bool:
        return node.target in self.several

    def backward(self, step: Step) -> None:
        signs = step.policy.movement(step.c_out.sign()).to(torch.float64)
        leaves: dict[str, Tensor] = {}
        for arg in step.node.fx_node.all_input_nodes:
            value = step.value(arg)
            if step.is_live(arg) and isinstance(value, Tensor) and value.is_floating_point():
                leaves[arg.name] = value.detach().to(torch.float64).requires_grad_(True)
        with torch.enable_grad():
            out = step.call(leaves)
            grads = torch.autograd.grad(out, list(leaves.values()), signs, allow_unused=True)
        for name, grad in zip(leaves, grads, strict=True):
            if grad is not None:
                step.send(_node(step, name), grad.round().to(torch.int64))


class ReshapeRule(RearrangeRule):
    """Flatten, view, reshape, squeeze, unsqueeze, unflatten: the output is the input's points
    in the same (row-major) order, so the signs go back by a reshape — no autograd call (which
    cost ~10x more than the node's inference on small nodes)."""

    def backward(self, step: Step) -> None:
        source = _only_float_source(step)
        out = step.value_out
        if source is None or source[1].numel() != out.numel() or source[1].dtype != out.dtype:
            super().backward(step)  # e.g. view(dtype)
            return
        arg, value = source
        step.send(arg, step.policy.movement(step.c_out.sign()).reshape(value.shape))


class ConcatRule(RearrangeRule):
    """torch.cat: each input's points are one block of the output along ``dim``, so the signs
    are split back (no autograd call)."""

    def backward(self, step: Step) -> None:
        args = step.node.fx_node.args
        parts = args[0] if args else step.node.fx_node.kwargs.get("tensors")
        dim = args[1] if len(args) > 1 else step.node.fx_node.kwargs.get("dim", 0)
        out = step.value_out
        values = [step.value(p) for p in parts] if isinstance(parts, list | tuple) else None
        if (values is None or not isinstance(dim, int)
                or any(not isinstance(v, Tensor) or v.dim() != out.dim() for v in values)):
            super().backward(step)  # legacy empty inputs, a dim given by name...
            return
        signs = step.policy.movement(step.c_out.sign())
        sizes = [v.shape[dim] for v in values]
        for part, value, block in zip(parts, values, signs.split(sizes, dim=dim), strict=True):
            if step.is_live(part) and value.is_floating_point():  # as the general rule
                step.send(part, block)


class PickRule(RearrangeRule):
    """Operators that only pick input points (permute, transpose, indexing, flip, roll,
    expand, repeat…): the signs are added back to the picked points. Which point each output
    point picked is read by running the operator on the input's point indices (one call and
    one scatter instead of an autograd call)."""

    def backward(self, step: Step) -> None:
        source = _only_float_source(step)
        if source is None:
            super().backward(step)
            return
        arg, x = source
        try:
            picked = step.call({arg.name: torch.arange(x.numel(), device=x.device).view(x.shape)})
        except (RuntimeError, TypeError, NotImplementedError):  # no integer form of the op
            picked = None
        if not isinstance(picked, Tensor) or picked.shape != step.c_out.shape:
            super().backward(step)
            return
        signs = step.policy.movement(step.c_out.sign())
        contrib = torch.zeros(x.numel(), dtype=torch.int64, device=x.device)
        contrib.index_add_(0, picked.reshape(-1), signs.reshape(-1))
        step.send(arg, contrib.view(x.shape))


def _only_float_source(step: Step) -> tuple[fx.Node, Tensor] | None:
    """The node's only input-dependent tensor operand and its value, when that is a float
    tensor; None when there are several (live indices, two operands) or it is an integer
    tensor, which the general rule (autograd) sends nothing. Shape sizes do not count."""
    live = [a for a in step.node.fx_node.all_input_nodes
            if step.is_live(a) and isinstance(step.value(a), Tensor)]
    if len(live) != 1 or not step.value(live[0]).is_floating_point():
        return None
    return live[0], step.value(live[0])


def _node(step: Step, name: str) -> fx.Node:
    return next(a for a in step.node.fx_node.all_input_nodes if a.name == name)


_SPLITS = (torch.chunk, "chunk", torch.split, "split", torch.unbind, "unbind",
           torch.tensor_split, "tensor_split", torch.split_with_sizes, "split_with_sizes",
           torch.unsafe_chunk, torch.unsafe_split)

_MOVEMENT_MODULES = (
    nn.Flatten, nn.Unflatten, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d,
    nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.ChannelShuffle, nn.Upsample, nn.Unfold,
)
_MOVEMENT_FUNCTIONS = (
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    torch.cat, torch.concat, torch.concatenate, torch.stack, torch.hstack, torch.vstack,
    torch.roll, torch.flip, torch.fliplr, torch.flipud, torch.rot90, torch.narrow,
    torch.movedim, torch.moveaxis, torch.swapaxes, torch.swapdims, torch.t, torch.unflatten,
    torch.tile, torch.repeat_interleave, torch.index_select, torch.gather, torch.take_along_dim,
    torch.where, torch.masked_fill, torch.select, operator.getitem, F.pad, F.unfold,
    F.pixel_shuffle, F.pixel_unshuffle, torch.channel_shuffle, F.interpolate, F.upsample,
    *_SPLITS[::2],
)
_MOVEMENT_METHODS = (
    "flatten", "view", "reshape", "permute", "transpose", "squeeze", "unsqueeze", "expand",
    "expand_as", "repeat", "repeat_interleave", "roll", "flip", "narrow", "movedim", "moveaxis",
    "swapaxes", "swapdims", "t", "view_as", "reshape_as", "unflatten", "unfold", "masked_fill",
    "index_select", "gather", "select", "tile", "where", *_SPLITS[1::2],
)
_IDENTITY_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                     nn.FeatureAlphaDropout, nn.Identity)
_IDENTITY_METHODS = ("contiguous", "clone", "detach", "float", "double", "half", "type_as",
                     "requires_grad_")
_EVAL_IDENTITY_FUNCTIONS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                            F.feature_alpha_dropout)


def _float_cast(node: OpNode) -> bool:
    """``x.to(...)`` / ``x.type(...)`` that keeps a floating dtype (or only moves devices)."""
    dtypes = [a for a in (*node.operands[1:], *node.fx_node.kwargs.values())
              if isinstance(a, torch.dtype)]
    return all(d.is_floating_point for d in dtypes)


_rearrange = RearrangeRule(several=_SPLITS)
#: operators whose every output point is one input point (none is a constant): the indices
#: of the points (int64) go through them as the values do
_PICKS = (nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle, torch.permute,
          torch.transpose, torch.t, torch.swapaxes, torch.swapdims, torch.movedim,
          torch.moveaxis, torch.flip, torch.fliplr, torch.flipud, torch.roll, torch.rot90,
          torch.narrow, torch.select, operator.getitem, torch.tile, torch.index_select,
          torch.gather, torch.take_along_dim, F.pixel_shuffle, F.pixel_unshuffle,
          torch.channel_shuffle, "permute", "transpose", "t", "swapaxes", "swapdims",
          "movedim", "moveaxis", "flip", "roll", "narrow", "select", "expand", "expand_as",
          "repeat", "tile", "index_select", "gather", "unfold")
_RESHAPES = (nn.Flatten, nn.Unflatten, torch.flatten, torch.reshape, torch.squeeze,
             torch.unsqueeze, torch.unflatten, "flatten", "view", "reshape", "squeeze",
             "unsqueeze", "view_as", "reshape_as", "unflatten")

ENTRIES: list[Entry] = [
    (ops(*_IDENTITY_MODULES, *_IDENTITY_METHODS, torch.clone, torch.detach),
     IdentityMovementRule()),
    (ops("to", "type") & Where(_float_cast, "float cast"), IdentityMovementRule()),
    (ops(*_EVAL_IDENTITY_FUNCTIONS) | FunctionNamed(("stochastic_depth", "drop_path")),
     IdentityMovementRule(verify=True)),
    (ops(*_RESHAPES), ReshapeRule()),
    (ops(*_PICKS), PickRule()),
    (ops(torch.cat, torch.concat, torch.concatenate), ConcatRule()),
    (ops(*_MOVEMENT_MODULES, *_MOVEMENT_FUNCTIONS, *_MOVEMENT_METHODS), _rearrange),
    (AttributeOf(("T", "mT", "H", "mH")), _rearrange),
    (ItemOf(_SPLITS), _rearrange),
]
