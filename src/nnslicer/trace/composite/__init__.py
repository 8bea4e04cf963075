"""Composite layers expanded while tracing into operators that have rules (docs/spec.md §4).

A layer PyTorch computes in one fused call (``nn.LSTM``, ``nn.MultiheadAttention``,
``F.scaled_dot_product_attention``) is traced as the equations it computes, with the layer's
own parameters, so the sliced model gives the original's outputs and synapses keep the
module's parameter names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import nn

from ..graph import select_output
from . import block_linear as blocks
from .attention import multi_head_attention, scaled_dot_product_attention
from .embedding_bag import embedding_bag
from .recurrent import unroll


class CompositeLayers:
    """Tables of expansions: module classes and functions to Python code that traces into
    operators with rules. ``node_functions`` stay one node each (they have rules)."""

    def __init__(self, modules: dict[type, Callable[..., Any]] | None = None,
                 functions: dict[Any, Callable[..., Any]] | None = None):
        self.modules = dict(modules or {})
        self.functions = dict(functions or {})
        self.node_functions: tuple[Callable[..., Any], ...] = (blocks.block_linear,
                                                               select_output)
        #: modules whose functions the expansions call (the tracer keeps those one node)
        self.node_modules = (blocks,)

    def module_expansion(self, module: nn.Module) -> Callable[..., Any] | None:
        kind = type(module)
        for parent in kind.__mro__:
            expand = self.modules.get(parent)
            if expand is not None and (parent is kind or kind.forward is parent.forward):
                return expand
        return None

    def function_expansion(self, fn: Any) -> Callable[..., Any] | None:
        return self.functions.get(fn)


def default_composites() -> CompositeLayers:
    """LSTM, GRU, RNN, MultiheadAttention, scaled_dot_product_attention, EmbeddingBag."""
    return CompositeLayers(
        modules={nn.LSTM: unroll, nn.GRU: unroll, nn.RNN: unroll,
                 nn.MultiheadAttention: multi_head_attention, nn.EmbeddingBag: embedding_bag},
        functions={F.scaled_dot_product_attention: scaled_dot_product_attention},
    )
