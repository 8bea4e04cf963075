"""Where the samples of a batch sit in each node's value.

Most values have the batch in dim 0. Some do not: a sequence-first transformer has (L, B, E),
Swin's window attention (B·windows, N, C), multi-head code (B·heads, N, D). Per-point means,
Δ and per-sample results are about one sample, so every live node gets a layout: the dim that
holds the batch and how many entries of that dim belong to one sample (``group``; samples are
batch-major, entries b·group … b·group + group − 1 are sample b, as ``reshape`` gives them).

A layout is read off two runs of the model with 2 and 3 samples: the one dim whose size
changes, in the ratio 2 : 3. A live node whose shape does not change mixes the samples of a
batch (``x.mean(0)`` on a batch-first value, BatchNorm in training mode) and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import UnsupportedOperation

if TYPE_CHECKING:
    from .graph import OperatorGraph


@dataclass(frozen=True)
class BatchLayout:
    """The batch sits in ``dim``; ``group`` consecutive entries of it are one sample."""

    dim: int = 0
    group: int = 1

    @property
    def standard(self) -> bool:
        return self.dim == 0 and self.group == 1

    def samples_first(self, value: Tensor, batch: int) -> Tensor:
        """The value as (batch, *one sample's shape)."""
        if self.standard:
            return value
        if self.group == 1:
            return value.movedim(self.dim, 0)
        return value.unflatten(self.dim, (batch, self.group)).movedim(self.dim, 0)

    def in_place(self, per_sample: Tensor) -> Tensor:
        """Inverse of ``samples_first``: (batch, *sample shape) back to the value's layout."""
        if self.standard:
            return per_sample
        moved = per_sample.movedim(0, self.dim)
        return moved if self.group == 1 else moved.flatten(self.dim, self.dim + 1)

    def broadcast(self, reference: Tensor, batch: int) -> Tensor:
        """A per-point reference shaped (1 or batch, *one sample's shape) in the value's layout,
        ready to subtract from the value."""
        if self.standard:
            return reference
        return self.in_place(reference.expand(batch, *reference.shape[1:]))

    def sample_of(self, flat: Tensor, shape: torch.Size) -> Tensor:
        """Sample index of each flat index into a value of ``shape``."""
        stride = 1
        for size in shape[self.dim + 1:]:
            stride *= size
        return (flat // stride) % shape[self.dim] // self.group


STANDARD = BatchLayout()


def example_batches(example: Tensor) -> tuple[Tensor, Tensor]:
    """Two batches (2 and 3 copies of the example's first sample) that tell apart the sizes
    that depend on the batch size from those that do not."""
    one = example[:1].detach()
    return one.expand(2, *one.shape[1:]).clone(), one.expand(3, *one.shape[1:]).clone()


def layouts_from_values(graph: OperatorGraph, two: dict[str, Any], three: dict[str, Any]
                        ) -> tuple[dict[str, BatchLayout], dict[str, tuple[int, ...]]]:
    """Layouts and per-sample shapes of the live nodes, from their values in runs with 2 and
    3 samples."""
    layouts: dict[str, BatchLayout] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for node in graph.live_nodes():
        a, b = two.get(node.name), three.get(node.name)
        if not isinstance(a, Tensor) or not isinstance(b, Tensor):
            continue
        changed = [d for d, (x, y) in enumerate(zip(a.shape, b.shape, strict=False)) if x != y]
        if a.dim() == b.dim() and len(changed) == 1:
            d = changed[0]
            if a.shape[d] % 2 == 0 and a.shape[d] * 3 == b.shape[d] * 2:
                layout = layouts[node.name] = BatchLayout(d, a.shape[d] // 2)
                shapes[node.name] = tuple(layout.samples_first(a, 2).shape[1:])
                continue
        where = f" (in module '{node.module_path}')" if node.module_path else ""
        if not changed and a.dim() == b.dim():
            raise UnsupportedOperation(
                f"node '{node.name}' ({node.kind}){where} mixes the samples of a batch: its "
                f"shape {tuple(a.shape)} does not grow with the batch (a reduction over the "
                "batch dim, or a layer in training mode); slices are per sample"
            )
        raise UnsupportedOperation(
            f"node '{node.name}' ({node.kind}){where} spreads the batch over several dims "
            f"(shape {tuple(a.shape)} for 2 samples, {tuple(b.shape)} for 3); nnslicer follows "
            "one batch dim per value"
        )
    out = layouts.get(graph.output_name)
    if out is not None and not out.standard:
        raise UnsupportedOperation(
            f"the model output has the batch in dim {out.dim}; nnslicer needs (batch, classes)"
        )
    return layouts, shapes
