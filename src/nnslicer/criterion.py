"""The criterion of a slice (docs/spec.md §1, §6): which neurons of which samples to explain.

``target`` is None (each sample's top-1 class), an int (that class for every sample), a (B,)
class tensor, a (B, K) bool mask of output neurons, or :class:`Neurons` — points of an
intermediate node.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .errors import InputError

if TYPE_CHECKING:
    from .trace.graph import OperatorGraph


@dataclass(frozen=True)
class Neurons:
    """Points of an intermediate node as the criterion (the paper's "slicing for an
    intermediate neuron").

    ``node``: a node name (``slicer.nodes()`` lists them) or the qualified name of the module
    that produces it. ``index``: an int channel of a feature map (every point of that channel;
    for a (tokens, features) value, that token's row), a tuple naming one point, a bool mask of
    the node's per-sample shape, or a (B, …) bool mask with one mask per sample.
    """

    node: str
    index: int | tuple[int, ...] | Tensor


Target = None | int | Tensor | Neurons


@dataclass(frozen=True)
class Outputs:
    """What a slice computes: the synapses of these weights (None: every weight), and the
    neurons' contributions of every node (``neurons=False``: only of the nodes at or downstream
    of a wanted weight; the nodes upstream of all of them are skipped, which a detector fitting
    on a last layer's synapses does not need)."""

    synapses: frozenset[str] | None = None
    neurons: bool = True


def output_seeds(target: Target, logits: Tensor) -> Tensor:
    """The criterion as a (B, K) bool mask of output neurons per sample."""
    B, K = logits.shape
    if target is None:
        return nn.functional.one_hot(logits.argmax(1), K).bool()
    if isinstance(target, bool) or not isinstance(target, int | Tensor):
        raise InputError(
            f"target must be None, an int, a (B,) class tensor, a (B, K) bool mask or "
            f"nnslicer.Neurons(node, index), got {type(target).__name__}"
        )
    if isinstance(target, int):
        target = torch.full((B,), target, dtype=torch.long)
    target = target.to(logits.device)
    if target.dtype == torch.bool:
        if tuple(target.shape) != (B, K):
            raise InputError(f"a bool target must have shape ({B}, {K}), got {tuple(target.shape)}")
        return target
    if target.is_floating_point() or target.dim() != 1 or target.shape[0] != B:
        raise InputError(
            f"a class target must be an integer tensor of shape ({B},), got "
            f"{target.dtype} {tuple(target.shape)}"
        )
    if ((target < 0) | (target >= K)).any():
        raise InputError(f"target classes must be in [0, {K}) for this model's {K} outputs")
    return nn.functional.one_hot(target.long(), K).bool()


def neuron_mask(target: Neurons, sample_shape: tuple[int, ...], batch: int) -> Tensor:
    """The (batch, *sample_shape) bool mask of a Neurons criterion."""
    index, shape = target.index, tuple(sample_shape)
    mask = torch.zeros((batch, *shape), dtype=torch.bool)
    if isinstance(index, bool):
        raise InputError("Neurons index must be an int, a tuple or a bool mask, got a bool")
    if isinstance(index, int):
        if not shape:
            raise InputError(f"node '{target.node}' holds one number per sample; use index=()")
        if not 0 <= index < shape[0]:
            raise InputError(f"Neurons index {index} is out of range for node '{target.node}' "
                             f"of shape {shape} (channels 0..{shape[0] - 1})")
        mask[:, index] = True
        return mask
    if isinstance(index, tuple):
        if len(index) != len(shape) or not all(
                isinstance(i, int) and 0 <= i < n for i, n in zip(index, shape, strict=True)):
            raise InputError(f"Neurons point {index} does not name a point of node "
                             f"'{target.node}' of shape {shape}")
        mask[(slice(None), *index)] = True
        return mask
    if isinstance(index, Tensor) and index.dtype == torch.bool:
        if tuple(index.shape) == shape:
            return index.cpu().expand(batch, *shape).clone()
        if tuple(index.shape) == (batch, *shape):
            return index.cpu().clone()
        raise InputError(f"a Neurons mask must have shape {shape} or {(batch, *shape)} for node "
                         f"'{target.node}', got {tuple(index.shape)}")
    raise InputError(f"Neurons index must be an int, a tuple of ints or a bool mask, got "
                     f"{type(index).__name__}")


def resolve_target(graph: OperatorGraph, target: Target, batch: int) -> Target:
    """A Neurons criterion with its node resolved and its index as a (batch, …) mask, so
    that it can be split into chunks; other targets as they are."""
    if not isinstance(target, Neurons):
        return target
    node = graph.resolve(target.node)
    shape = graph.sample_shapes[node.name]
    mask = neuron_mask(Neurons(node.name, target.index), shape, batch)
    if not bool(mask.any()):
        warnings.warn(f"the criterion names no point of node '{node.name}': the slice is empty",
                      stacklevel=3)
    return Neurons(node.name, mask)


def criterion_seeds(graph: OperatorGraph, target: Target, values: dict[str, Any],
                    batch: int) -> tuple[dict[str, Tensor], list[int] | None]:
    """C at the criterion's points in the node's own layout, and the class of each sample
    when the criterion is one output class per sample."""
    if isinstance(target, Neurons):
        layout = (graph.layouts or {})[target.node]
        seed = layout.in_place(target.index.to(torch.int64))
        return {target.node: seed.to(values[target.node].device)}, None
    logits = values[graph.output_name]
    seeds = output_seeds(target, logits)
    classes = None
    if bool((seeds.sum(1) == 1).all()):
        classes = seeds.to(torch.int8).argmax(1).tolist()
    elif not bool(seeds.any()):
        warnings.warn("the target mask selects no output neuron: the slice is empty",
                      stacklevel=3)
    return {graph.output_name: seeds.to(torch.int64)}, classes


def split_target(target: Target, start: int, stop: int) -> Target:
    """The rows start:stop of a per-sample target (an int or None applies to every sample)."""
    if isinstance(target, Neurons):
        return Neurons(target.node, target.index[start:stop])
    if isinstance(target, Tensor) and target.dim() >= 1:
        return target[start:stop]
    return target


class ChunkResults:
    """Contributions of consecutive chunks: per sample, kept to be concatenated in chunk order;
    else added up as they arrive (any order: they are integers), so memory does not grow with
    the number of chunks. A chunk's tensors are its own (run_backward allocates them), so the
    first becomes the running total."""

    def __init__(self, per_sample: bool):
        self.per_sample = per_sample
        self._parts: dict[int, dict[str, Tensor]] = {}
        self._total: dict[str, Tensor] | None = None

    def add(self, part: dict[str, Tensor], index: int | None = None) -> None:
        if self.per_sample:
            self._parts[len(self._parts) if index is None else index] = part
        elif self._total is None:
            self._total = part
        else:
            for k, v in part.items():
                self._total[k] += v

    def merged(self) -> dict[str, Tensor]:
        if not self.per_sample:
            return self._total or {}
        parts = [self._parts[i] for i in sorted(self._parts)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
