"""Slow, obviously-correct float64 reference of the slice contract (SPEC.md v2, §2–§4, §6).

Independent of the engine: this package never imports ``nnslicer``. torch is used only to

* trace the model into a ``torch.fx`` graph (node names are fx node names, docs/spec.md §6),
* run the model to get every node's value (recorded as a float64 copy right after the node ran,
  so later in-place operators cannot change it),
* ask PyTorch which input point max pooling / ``torch.max(x, dim)`` selects (SPEC: "the point
  PyTorch selects").

Everything else — profile means (§2), Δ (§3), the edges of every operator, the θ-selection and
the backward accumulation (§4), the unrolled recurrent layers and the decomposed attention (their
internal values computed in float64 from the module's parameters) — is plain Python/NumPy over
points and edges, written to be read next to SPEC.md. It is deliberately slow; tiny models only.
Modules: ``selection`` (θ-selection), ``rules`` (edge tables), ``movement`` (NumPy mirrors of
data movement), ``recurrent`` (LSTM/GRU/RNN), ``attention`` (MultiheadAttention, SDPA,
TransformerEncoderLayer), ``bags`` (EmbeddingBag).

Criteria: ``slice(x, target=...)`` takes the output forms of docs/spec.md §6 and
``ReferenceNeurons(node, index)`` (SPEC's ``nnslicer.Neurons``): ``node`` is a point node's name
(``nodes()``) or the qualified name of the module producing it; ``index`` an int channel (every
point ``[index, ...]`` of the per-sample output; for a ``(F,)`` node that is one point), a tuple
naming one point, a bool mask of the per-sample shape, or a ``(B, ...)`` bool mask (numpy or
torch). C = +1 is seeded on those points only; nodes that are not ancestors of the criterion
node never get a C (so they take no part), and synapses downstream of it stay 0.

Choices where SPEC leaves room (documented so a reviewer can check them):

* θ-selection step 2 sorts by ``|t|`` descending with a *stable* sort, i.e. terms of equal
  magnitude keep their edge order (SPEC does not define the order inside a tie). Only ties of
  equal magnitude and opposite sign can make this matter.
* ``T`` is ``math.fsum`` of the terms (the correctly rounded Σ t_i); ``S_k`` is the running sum
  in sorted order.
* ``k`` starts at 1 (θ ≥ 1 is outside the contract).
* ``sign(f'(x))`` of an activation is the sign of the true derivative, not of its float64
  evaluation: Sigmoid/Tanh are always +1, even where tanh(x) rounds to 1.0 and 1 - tanh² is 0
  in floating point; ELU is sign(alpha) for x <= 0; GELU is -1 left of its root also where
  Φ(x) + xφ(x) underflows. At the kinks it follows PyTorch's backward: ReLU'(0) = 0,
  Hardtanh/ReLU6 are 0 at the bounds, LeakyReLU'(0) = slope, ELU'(0) = alpha.
* Zero-padding positions of a convolution are not points (their Δ is 0), so they contribute no
  edge at all; with Δ = 0 they could never be kept anyway. Likewise padding points of ``F.pad``
  and the constant operand of a ``cat`` are constants: an output point there has no edge.
* Product rule ``a * b``: the edge order is a then b; ``x * x`` has two edges to the same point.
  An operand broadcast over positions (``x * s``, s of shape (B, C, 1, 1)) has an edge from
  every aligned output point. A product with a constant (a scalar, a parameter, a buffer, a
  tensor made without the input) is "multiply by a constant" (scale, the constant's value at the
  point as ``a``); so is ``x / c`` (``a = 1/c``), ``-x`` and ``c - x`` (``a = -1``).
  ``x + c`` / ``x - c`` with a constant tensor is ``+ constant`` (data movement), also when x is
  broadcast by c.
* Matrix product ``a @ b`` (both input-dependent): per-sample operands of rank ≥ 2 with equal
  rank (batch dims broadcast); edges of ``(…, i, j)``: all ``a[…, i, k]`` over k, then all
  ``b[…, k, j]``. With a parameter (or a view of one: ``W.T``, ``W.t()``, ``W[...]``,
  ``W.chunk``, … — the synapse is the parameter element the view reads): ``x @ W``,
  ``F.linear(x, W)`` and also ``W @ x`` (token mixing, e.g. MLP-Mixer), edges in the order of
  the summed index k. A product with a buffer or another constant is not in SPEC's table:
  ``ReferenceUnsupported``.
* ``amax`` over several dims and ``torch.max(x, dim)``: the selected point is the first maximal
  point in row-major order over the reduced dims (what ``torch.max`` over those dims moved last
  and flattened returns; for one dim that is ``torch.max(x, dim).indices``). The indices output
  of ``torch.max`` may not be used.
* Normalization γ_i: LayerNorm/RMSNorm weight broadcast over the trailing (normalized) dims;
  GroupNorm/InstanceNorm weight per channel (per-sample dim 0); no weight → γ = 1. InstanceNorm
  with running statistics in eval is the same formula (sign(γ/√var) = sign(γ)).
* Softmax at the output: the output node itself; anywhere else the softmax rule.
* Constants (get_attr parameters and buffers, ``zeros_like`` …, and any value computed only from
  constants and shapes) are not points: no neurons entry, Δ = 0.
* Embedding: every output point ``(…, d)`` adds ``sign(C)`` to ``weight[token, d]``, whatever
  ``padding_idx`` is (``max_norm`` is unsupported); the (integer) model input stays a point node
  with contributions 0.
* Batch dim: found by running the model once more with one sample added (the dim whose size
  grows by one). Per-sample results put the batch dim first, i.e. a node of shape (T, B, H)
  has per-sample shape (T, H). A node that mixes samples is ``ReferenceUnsupported``.
* Composite layers (``recurrent``, ``attention``): expanded at the first forward for the input
  shapes seen there; another sequence length later is an error. Their internal nodes are point
  nodes (in ``neurons``, names reference-specific, op ``"internal"``); the fx nodes that read
  their outputs (``out[0]``, ``h_n``…) are data movement from the internal nodes.
  EmbeddingBag, scaled_dot_product_attention and TransformerEncoderLayer return a tensor: the
  fx node itself gets the rule of the layer's last operator.
* Dropout of every kind (modules in eval, functions with ``training=False``), Identity,
  ``contiguous``/``clone``/``detach`` are data movement; stochastic depth / drop-path modules
  that return their input in eval trace to nothing.
* Recurrent layers (``recurrent.py``): the terms of a gate's weighted sum are ordered x_t's
  features, then h_{t−1}'s; at the first step h_{−1} = c_{−1} = 0 are constants, so products
  with them are left out and GRU's ``r ⊙ b_hn`` is a scale by the constant ``b_hn``. One node
  per tensor of PyTorch's equations: ``x_t = input[:, t]`` is a slice (movement); a layer after
  a bidirectional one reads ``cat(h_t, h_t_reverse)`` (movement), after a unidirectional one
  ``h_t`` itself.
* Attention (``attention.py``): the per-head split/merge movements are read through directly
  (they are one-to-one, so no synapse or other point changes); the scale ``1/√d`` is a scale
  node after ``q @ kᵀ``.
* docs/spec.md §8 "Beyond the operator table" (nnslicer's extensions), read from the docs:

  - Element-wise functions (``rules._more_derivative_signs``): the closed forms the docs give
    (exp, log, log1p, expm1, sqrt, erf, LogSigmoid, Softsign, Softplus: +1; rsqrt,
    reciprocal: −1; abs, square: sign(x)); the others follow PyTorch's derivative as its
    backward defines it, 0 where that is NaN: clamp/clip/clamp_min/clamp_max pass *at* their
    bounds (PyTorch's ``min <= x <= max``, unlike Hardtanh), Soft/Hardshrink block at ±λ, PReLU
    is its slope ``a`` at x = 0 (per channel, per-sample dim 0), Tanhshrink' is evaluated as
    PyTorch does (``1 − (1 − tanh²)``: 0 for |x| ≲ 1e-8), ``x ** c`` (a number c; ``c ** x`` is
    not covered) is sign(c·x^(c−1)) with ``0^(c−1)`` as PyTorch computes it (±inf keeps its
    sign: sign(c) for c <= 1; 0 for c > 1 and for c = 0; NaN for x < 0 and a fractional c: 0).
  - ``min``/``amin`` over dims: like max, the first minimal point (``torch.min`` over the
    reduced dims flattened).
  - ``masked_fill``, ``torch.where`` with a constant mask: data movement whose filled points
    (and the points of a constant operand) are constants; ``gather``, ``index_select``,
    ``take_along_dim`` with constant indices; nearest / nearest-exact interpolation (the
    source index as ATen computes it, in float32), pixel (un)shuffle, channel shuffle,
    ``Tensor.unfold``, ``F.unfold`` (zero padding: constants), reflect / replicate / circular
    padding: data movement through NumPy mirrors checked against PyTorch's values.
  - Linear-mode interpolation (linear, bilinear, bicubic, trilinear, area): a weighted sum with
    the operator's coefficients computed from PyTorch's formulas (``rules.interp_taps``; not by
    running the operator on impulses — the self-check does that to validate them), one edge
    per distinct source point of the output's plane (taps clamped onto the same point add up),
    in the source's row-major order; no antialias.
  - EmbeddingBag (``bags.py``): the lookup, then the reduction over the non-padding entries
    only (their terms are the lookup points' own Δ; the mean's divisor is the sample's count
    of non-padding entries, one positive factor); constant ``per_sample_weights`` are the sum's
    coefficients; max: among equal values the first entry in bag order.
  - Weights used through a view: any data movement of one parameter is a view (``W.T``,
    ``W[:k]``, ``W.chunk(2)[0]``, ``W.expand``, ``W[[0, 0]]``, and also ``torch.cat([W, W])``,
    ``W.repeat``: each element of the view is the parameter element it copies; repeats add up).
  - Recurrent layers with given initial states: the state of layer l, direction d is the
    movement node ``h0[l·dirs + d]`` (``{module}.l{l}.h0``, like x_t, the literal reading);
    a constant state (a parameter expanded over the batch, zeros) is a constant: its terms in
    the gate sums are left out (Δ = 0) and products with it are scales by it. ``proj_size``:
    ``h_t = W_hr·(o ⊙ tanh(c_t))``, a weighted sum with the synapses ``weight_hr_l*``.
  - Attention masks are constants added to the scaled scores (``+ constant``, data movement);
    where a masked score is −∞ in every sample its Δ is 0 (``_delta``); a boolean mask forbids
    with True in MultiheadAttention and allows with True in scaled_dot_product_attention;
    GQA repeats k and v as PyTorch's documented reference implementation does
    (``repeat_interleave``, a movement that is not one to one).
* Criterion names: a name that is both a node's and a module's is the node. An int index picks
  the per-sample dim 0 (the channel; for a ``(F,)`` node one point).
* Profile sums are float64 torch sums over each batch's samples added batch by batch (like
  the v1 reference), then divided by the count.
* Softmax/log-softmax, LayerNorm/RMSNorm, Linear, activations, scales, products, ``+``/``−``,
  Embedding and data movement also work on nodes whose batch dim is not first (e.g.
  ``(T, B, H)`` around a ``batch_first=False`` LSTM); convolutions, pooling, mean/sum/max over
  dims, matrix products and GroupNorm/InstanceNorm need it first.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from . import movement as mv
from .attention import encoder_layer_expansion, mha_expansion, sdpa_expansion
from .bags import bag_edges, bag_forward, bag_max_sources, embedding_bag_expansion
from .recurrent import rnn_expansion
from .rules import (
    Expansion,
    ReferenceUnsupported,
    Rule,
    act_derivative_sign,
    adaptive_windows,
    addsub_edges,
    avgpool_windows,
    batched_matmul_pairs,
    conv_edges,
    group_norm_np,
    instance_norm_np,
    interp_edges,
    interp_taps,
    layer_norm_np,
    left_matmul_edges,
    linear_edges,
    norm_dim,
    reduce_edges,
    rms_norm_np,
    softmax_np,
    tuple_of,
    window_edges,
)
from .selection import DEAD_OUTPUT_RATIO, theta_select
from .selection import sign as _sign

__all__ = [
    "DEAD_OUTPUT_RATIO",
    "ReferenceNeurons",
    "ReferenceSlice",
    "ReferenceSlicer",
    "ReferenceUnsupported",
    "act_derivative_sign",
    "theta_select",
]


@dataclass
class ReferenceSlice:
    """Point-level neuron contributions and synapse contributions (numpy int64)."""

    neurons: dict[str, np.ndarray]
    synapses: dict[str, np.ndarray]
    per_sample: bool = False


@dataclass(frozen=True)
class ReferenceNeurons:
    """Intermediate-neuron criterion (docs/spec.md §6 ``nnslicer.Neurons(node, index)``).

    ``node``: a point node name or the qualified name of the module producing it. ``index``: an
    int channel, a tuple naming one point, a bool mask of the node's per-sample shape, or a
    ``(B, *per-sample shape)`` bool mask (numpy array or torch tensor)."""

    node: str
    index: Any


@dataclass
class Node:
    """A point node: the model input, an fx node with a rule, or an internal node of a
    composite layer's rewritten form (op ``"internal"``)."""

    name: str
    op: str
    rule: Rule | None
    module: str | None = None


@dataclass
class _Forward:
    """One forward pass: full-batch values and what the rules read from them."""

    values: dict[str, np.ndarray]  # point nodes, float64, batch at self.bdim[name]
    raw: dict[str, Any]  # constants and shapes (fx nodes not input-dependent), as recorded
    pviews: dict[str, np.ndarray] = field(default_factory=dict)  # param view -> flat indices
    maxsel: dict[str, np.ndarray] = field(default_factory=dict)  # (B, n_out) selected sources

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.values[name].shape)


@dataclass
class _Tuple:
    """A node whose value is a tuple of tensors (chunk/split/unbind, torch.max, LSTM …)."""

    kind: str  # "list" | "max" | "composite" | "sub" (a tuple inside a composite's result)
    attrs: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# operator tables
# ---------------------------------------------------------------------------------------------

_SHAPE_METHODS = {"size", "dim", "numel", "nelement", "get_device"}
_SHAPE_ATTRS = {"shape", "ndim", "device", "dtype", "is_cuda"}
_CONST_FUNCTIONS = {
    torch.zeros_like,
    torch.ones_like,
    torch.full_like,
    torch.empty_like,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.empty,
    torch.arange,
    torch.linspace,
    torch.eye,
    torch.tensor,
}
_CONST_METHODS = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"}

# data movement: target -> NumPy mirror with PyTorch's signature (see movement.py)
_MOVE_FUNCTIONS = {
    torch.flatten: mv.flatten,
    torch.reshape: mv.torch_reshape,
    torch.squeeze: mv.squeeze,
    torch.unsqueeze: mv.unsqueeze,
    torch.permute: mv.permute,
    torch.transpose: mv.transpose,
    torch.t: mv.t,
    torch.cat: mv.cat,
    torch.concat: mv.cat,
    torch.concatenate: mv.cat,
    torch.stack: mv.stack,
    torch.narrow: mv.narrow,
    torch.roll: mv.roll,
    torch.flip: mv.flip,
    operator.getitem: mv.getitem,
    F.pad: mv.pad,
    torch.masked_fill: mv.masked_fill,
    torch.where: mv.where,
    torch.gather: mv.gather,
    torch.index_select: mv.index_select,
    torch.take_along_dim: mv.take_along_dim,
    F.pixel_shuffle: mv.pixel_shuffle,
    F.pixel_unshuffle: mv.pixel_unshuffle,
    torch.pixel_shuffle: mv.pixel_shuffle,
    torch.pixel_unshuffle: mv.pixel_unshuffle,
    torch.channel_shuffle: mv.channel_shuffle,
    F.channel_shuffle: mv.channel_shuffle,
    F.unfold: mv.im2col,
}
_MOVE_METHODS = {
    "flatten": mv.flatten,
    "unflatten": mv.unflatten,
    "view": mv.view,
    "reshape": mv.view,
    "contiguous": mv.identity,
    "clone": mv.identity,
    "detach": mv.identity,
    "squeeze": mv.squeeze,
    "unsqueeze": mv.unsqueeze,
    "permute": mv.permute,
    "transpose": mv.transpose,
    "t": mv.t,
    "narrow": mv.narrow,
    "expand": mv.expand,
    "expand_as": mv.expand_as,
    "repeat": mv.repeat,
    "roll": mv.roll,
    "flip": mv.flip,
    "masked_fill": mv.masked_fill,
    "where": mv.where_method,
    "gather": mv.gather,
    "index_select": mv.index_select,
    "unfold": mv.tensor_unfold,
}
_MOVE_ATTRS = {"T": mv.t, "mT": mv.matrix_transpose}
_LIST_FUNCTIONS = {torch.chunk: mv.chunk, torch.split: mv.split, torch.unbind: mv.unbind}
_LIST_METHODS = {"chunk": mv.chunk, "split": mv.split, "unbind": mv.unbind}
_DATA_LIST_OPS = {mv.cat, mv.stack}  # ops whose first argument is a list of data tensors

_ADD = {operator.add, operator.iadd, torch.add}
_SUB = {operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, operator.itruediv, torch.div}
_MATMUL = {operator.matmul, operator.imatmul, torch.matmul, torch.bmm, torch.mm}
_MATMUL_METHODS = {"matmul", "bmm", "mm"}
_SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
_DROPOUT_FUNCTIONS = {
    F.dropout: True,  # value: the default of ``training``
    F.dropout1d: True,
    F.dropout2d: True,
    F.dropout3d: True,
    F.alpha_dropout: False,
    F.feature_alpha_dropout: False,
}
_DROPOUT_MODULES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_PAD_MODES = ("constant", "reflect", "replicate", "circular")
_PAD_MODULES = (
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
)
_NORM_MODULES = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.RMSNorm,
)
_ACT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Hardtanh,  # includes ReLU6
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.LogSigmoid,
    nn.Softsign,
    nn.Softplus,
    nn.Mish,
    nn.PReLU,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Hardshrink,
)

# element-wise functions of docs/spec.md §8 with a closed-form sign of f': "pos" f' > 0,
# "neg" f' < 0, "signx" sign(f') = sign(x)
_CLOSED_FORM_FUNCTIONS = {
    **dict.fromkeys(
        (torch.exp, torch.log, torch.log1p, torch.expm1, torch.sqrt, torch.erf, torch.special.erf),
        "pos",
    ),
    **dict.fromkeys((F.logsigmoid, F.softsign), "pos"),
    **dict.fromkeys((torch.rsqrt, torch.reciprocal), "neg"),
    **dict.fromkeys((torch.abs, operator.abs, torch.square), "signx"),
}
_CLOSED_FORM_METHODS = {
    **dict.fromkeys(("exp", "log", "log1p", "expm1", "sqrt", "erf"), "pos"),
    **dict.fromkeys(("rsqrt", "reciprocal"), "neg"),
    **dict.fromkeys(("abs", "square"), "signx"),
}
_CLAMPS = {torch.clamp: "both", torch.clip: "both", torch.clamp_min: "min", torch.clamp_max: "max"}
_CLAMP_METHODS = {"clamp": "both", "clip": "both", "clamp_min": "min", "clamp_max": "max"}


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _node_inputs(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(a))
    return found


def _act_from_module(m: nn.Module) -> dict[str, Any]:
    if isinstance(m, nn.ReLU):
        return {"fn": "relu"}
    if isinstance(m, nn.Hardtanh):
        return {"fn": "hardtanh", "lo": float(m.min_val), "hi": float(m.max_val)}
    if isinstance(m, nn.LeakyReLU):
        return {"fn": "leaky", "slope": float(m.negative_slope)}
    if isinstance(m, nn.ELU):
        return {"fn": "elu", "alpha": float(m.alpha)}
    if isinstance(m, nn.GELU):
        return {"fn": "gelu", "approximate": m.approximate}
    if isinstance(m, nn.SiLU):
        return {"fn": "silu"}
    if isinstance(m, nn.Sigmoid):
        return {"fn": "sigmoid"}
    if isinstance(m, nn.Tanh):
        return {"fn": "tanh"}
    if isinstance(m, (nn.LogSigmoid, nn.Softsign)):
        return {"fn": "pos"}
    if isinstance(m, nn.Softplus):
        return {"fn": "softplus", "beta": float(m.beta)}
    if isinstance(m, nn.Mish):
        return {"fn": "mish"}
    if isinstance(m, nn.Tanhshrink):
        return {"fn": "tanhshrink"}
    if isinstance(m, (nn.Softshrink, nn.Hardshrink)):
        return {"fn": "shrink", "lambd": float(m.lambd)}
    raise AssertionError(m)


def _scalar_bound(node: fx.Node, a: Any) -> float | None:
    if a is None or isinstance(a, (int, float)):
        return None if a is None else float(a)
    raise ReferenceUnsupported(f"reference: {node.name!r}: clamp bounds must be numbers")


def _act_from_function(node: fx.Node) -> dict[str, Any] | None:
    t = node.target
    if node.op == "call_method":
        return {
            "relu": {"fn": "relu"},
            "relu_": {"fn": "relu"},
            "sigmoid": {"fn": "sigmoid"},
            "tanh": {"fn": "tanh"},
        }.get(t) or _act_from_method(node)
    if t in (F.relu, torch.relu, torch.relu_):
        return {"fn": "relu"}
    if t is F.relu6:
        return {"fn": "hardtanh", "lo": 0.0, "hi": 6.0}
    if t is F.hardtanh:
        return {
            "fn": "hardtanh",
            "lo": float(_arg(node, 1, "min_val", -1.0)),
            "hi": float(_arg(node, 2, "max_val", 1.0)),
        }
    if t is F.leaky_relu:
        return {"fn": "leaky", "slope": float(_arg(node, 1, "negative_slope", 0.01))}
    if t is F.elu:
        return {"fn": "elu", "alpha": float(_arg(node, 1, "alpha", 1.0))}
    if t is F.gelu:
        return {"fn": "gelu", "approximate": _arg(node, 1, "approximate", "none")}
    if t is F.silu:
        return {"fn": "silu"}
    if t in (torch.sigmoid, F.sigmoid):
        return {"fn": "sigmoid"}
    if t in (torch.tanh, F.tanh):
        return {"fn": "tanh"}
    if t in _CLOSED_FORM_FUNCTIONS:
        return {"fn": _CLOSED_FORM_FUNCTIONS[t]}
    if t in _CLAMPS:
        return _clamp_attrs(node, _CLAMPS[t])
    if t is F.softplus:
        return {"fn": "softplus", "beta": float(_arg(node, 1, "beta", 1.0))}
    if t is F.mish:
        return {"fn": "mish"}
    if t is F.tanhshrink:
        return {"fn": "tanhshrink"}
    if t in (F.softshrink, F.hardshrink):
        return {"fn": "shrink", "lambd": float(_arg(node, 1, "lambd", 0.5))}
    if t in (operator.pow, torch.pow):
        return _pow_attrs(node)
    return None


def _clamp_attrs(node: fx.Node, which: str) -> dict[str, Any]:
    """clamp(x, min, max) / clamp_min(x, min) / clamp_max(x, max) with number bounds."""
    if which == "max":
        return {"fn": "clamp", "lo": None, "hi": _scalar_bound(node, _arg(node, 1, "max"))}
    lo = _scalar_bound(node, _arg(node, 1, "min"))
    hi = _scalar_bound(node, _arg(node, 2, "max")) if which == "both" else None
    return {"fn": "clamp", "lo": lo, "hi": hi}


def _pow_attrs(node: fx.Node) -> dict[str, Any]:
    """``x ** c`` with a number c (a constant base ``c ** x`` is not covered)."""
    c = _arg(node, 1, "exponent")
    if not isinstance(c, (int, float)) or isinstance(c, bool):
        raise ReferenceUnsupported(f"reference: {node.name!r}: pow needs a number exponent")
    return {"fn": "pow", "c": float(c)}


def _act_from_method(node: fx.Node) -> dict[str, Any] | None:
    t = node.target
    if t in _CLOSED_FORM_METHODS:
        return {"fn": _CLOSED_FORM_METHODS[t]}
    if t in _CLAMP_METHODS:
        return _clamp_attrs(node, _CLAMP_METHODS[t])
    if t == "pow":
        return _pow_attrs(node)
    return None


def _act_forward(attrs: dict[str, Any], x: float) -> float:
    """f(x) for the activations whose rule reads parameters (NaN: not checked here)."""
    fn = attrs["fn"]
    if fn == "clamp":
        lo = -math.inf if attrs["lo"] is None else attrs["lo"]
        hi = math.inf if attrs["hi"] is None else attrs["hi"]
        return min(max(x, lo), hi)
    if fn == "shrink":
        return math.nan  # Softshrink and Hardshrink differ; their λ is checked by the sign test
    if fn == "prelu":
        return x if x > 0 else attrs["a"] * x
    if fn == "pow":
        try:
            v = math.pow(x, attrs["c"])
        except (ValueError, ZeroDivisionError, OverflowError):
            return math.nan
        return v
    return math.nan


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.raw: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        # Copy now: a later in-place operator must not change this node's value.
        self.raw[n.name] = out.detach().clone() if isinstance(out, torch.Tensor) else out
        return out


def _np(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.float64).numpy() if v.is_floating_point() else v.numpy()
    return v


class ReferenceSlicer:
    """Independent reference of docs/spec.md §2–§4. API mirrors the engine's (docs/spec.md §6)."""

    def __init__(self, model: nn.Module, theta: float = 0.2):
        self.model = model
        self.theta = theta
        self.gm = fx.symbolic_trace(model)
        self.modules = dict(self.gm.named_modules())
        self.fx_nodes = [n for n in self.gm.graph.nodes if n.op != "output"]
        self._by_name = {n.name: n for n in self.fx_nodes}
        outputs = [n for n in self.gm.graph.nodes if n.op == "output"]
        assert len(outputs) == 1
        out = outputs[0].args[0]
        if not isinstance(out, fx.Node):
            raise ReferenceUnsupported("reference: the model must return one tensor")
        self.output_name = out.name
        self.params = {
            name: p.detach().to(torch.float64).numpy().copy()
            for name, p in self.gm.named_parameters()
        }
        self.input_names = [n.name for n in self.fx_nodes if n.op == "placeholder"]
        if len(self.input_names) != 1:
            raise ReferenceUnsupported("reference: exactly one model input supported")
        # Categories: "input", "const" (not input-dependent: constants, shapes), "tuple", "point".
        self.category: dict[str, str] = {}
        self.rules: dict[str, Rule] = {}
        self.tuples: dict[str, _Tuple] = {}
        self.pview_root: dict[str, str] = {}  # constant node -> the parameter it is a view of
        self.pview_call: dict[str, tuple[Any, tuple, dict]] = {}
        self.composites: dict[str, tuple[str, Any]] = {}  # fx node -> (kind, data) to expand
        for node in self.fx_nodes:
            self._categorize(node)
            if self.category[node.name] == "point":
                self.rules[node.name] = self._classify(node)
        self.order: list[Node] = [
            Node(n.name, n.op, self.rules.get(n.name), self._module_of(n))
            for n in self.fx_nodes
            if self.category[n.name] in ("input", "point")
        ]
        self.expansions: dict[str, Expansion] = {}
        self.bdim: dict[str, int | None] | None = None
        self._sums: dict[str, torch.Tensor] | None = None

    # --- graph classification -----------------------------------------------------------

    def _module_of(self, node: fx.Node) -> str | None:
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack") or {}
        return list(stack.values())[-1][0] if stack else None

    def _unsupported(self, node: fx.Node, why: str = "") -> ReferenceUnsupported:
        where = self._module_of(node)
        return ReferenceUnsupported(
            f"reference: no rule for node {node.name!r} ({node.op} {node.target})"
            + (f" in module {where!r}" if where else "")
            + (f": {why}" if why else "")
        )

    def _dep(self, a: Any) -> bool:
        return isinstance(a, fx.Node) and self.category[a.name] != "const"

    def _categorize(self, node: fx.Node) -> None:
        name = node.name
        if node.op == "placeholder":
            self.category[name] = "input"
            return
        if node.op == "get_attr":
            self.category[name] = "const"
            if str(node.target) in self.params:
                self.pview_root[name] = str(node.target)
            return
        t = node.target
        if (
            (node.op == "call_method" and t in _SHAPE_METHODS | _CONST_METHODS)
            or (node.op == "call_function" and t in _CONST_FUNCTIONS)
            or (node.op == "call_function" and t is getattr and node.args[1] in _SHAPE_ATTRS)
        ):
            self.category[name] = "const"
            return
        inputs = _node_inputs(node)
        if not any(self._dep(a) for a in inputs):
            self.category[name] = "const"
            self._track_param_view(node)
            return
        src = node.args[0] if node.args else None
        if isinstance(src, fx.Node) and self.category.get(src.name) == "tuple":
            self.category[name] = self._tuple_member_category(node, src)
            return
        if self._is_tuple_producer(node):
            self.category[name] = "tuple"
            return
        self.category[name] = "point"

    def _movement_of(self, node: fx.Node) -> tuple[Any, bool] | None:
        """(mirror, is_list) of a data-movement call, or None."""
        t = node.target
        if node.op == "call_function":
            if t is getattr and node.args[1] in _MOVE_ATTRS:
                return _MOVE_ATTRS[node.args[1]], False
            if t in _MOVE_FUNCTIONS:
                return _MOVE_FUNCTIONS[t], False
            if t in _LIST_FUNCTIONS:
                return _LIST_FUNCTIONS[t], True
        if node.op == "call_method":
            if t in _MOVE_METHODS:
                return _MOVE_METHODS[t], False
            if t in _LIST_METHODS:
                return _LIST_METHODS[t], True
        return None

    def _track_param_view(self, node: fx.Node) -> None:
        """A constant that is a data movement of one parameter keeps, per element, which
        parameter element it is (so ``x @ W.T`` has W's synapses)."""
        mov = self._movement_of(node)
        src = node.args[0] if node.args else None
        if mov is not None and mov[0] in _DATA_LIST_OPS and isinstance(src, (list, tuple)):
            # cat/stack of views of one parameter (``torch.cat([W, W])``: repeats add up)
            roots = {self.pview_root.get(a.name) if isinstance(a, fx.Node) else None for a in src}
            if len(roots) == 1 and None not in roots:
                self.pview_root[node.name] = roots.pop()
                self.pview_call[node.name] = (mov[0], tuple(node.args), dict(node.kwargs))
            return
        if mov is None or not isinstance(src, fx.Node) or src.name not in self.pview_root:
            return
        if any(a.name in self.pview_root for a in _node_inputs(node)[1:]):
            return
        fn, _ = mov  # a chunk/split of a parameter gives a list; its getitem picks one view
        args = node.args[1:] if node.target is not getattr else ()
        self.pview_root[node.name] = self.pview_root[src.name]
        self.pview_call[node.name] = (fn, (src, *args), dict(node.kwargs))

    def _is_tuple_producer(self, node: fx.Node) -> bool:
        t = node.target
        if node.op == "call_module":
            m = self.modules[t]
            if isinstance(m, (nn.LSTM, nn.GRU, nn.RNN, nn.MultiheadAttention)):
                self.tuples[node.name] = _Tuple("composite", {"module": m})
                return True
            return False
        mov = self._movement_of(node)
        if mov is not None and mov[1]:
            self.tuples[node.name] = _Tuple("list", {"fn": mov[0]})
            return True
        if (node.op == "call_function" and t in (torch.max, torch.min)) or (
            node.op == "call_method" and t in ("max", "min")
        ):
            dim = _arg(node, 1, "dim")
            if isinstance(dim, int):
                self.tuples[node.name] = _Tuple("max", {"min": t in (torch.min, "min")})
                return True
        return False

    def _tuple_member_category(self, node: fx.Node, src: fx.Node) -> str:
        tup = self.tuples[src.name]
        if tup.kind == "composite" and isinstance(tup.attrs["module"], nn.LSTM):
            if node.target is operator.getitem and node.args[1] == 1:
                self.tuples[node.name] = _Tuple("sub", {"root": src.name, "path": (1,)})
                return "tuple"
        return "point"

    def _check_tensor_node(self, node: fx.Node, a: Any) -> None:
        if not self._dep(a) or self.category[a.name] == "tuple":
            raise self._unsupported(node)

    def _const_or_scalar(self, a: Any) -> bool:
        return isinstance(a, (int, float)) or (
            isinstance(a, fx.Node) and self.category[a.name] == "const"
        )

    def _classify(self, node: fx.Node) -> Rule:
        if node.op == "call_module":
            return self._classify_module(node, self.modules[node.target])
        if node.op not in ("call_function", "call_method"):
            raise self._unsupported(node)
        t = node.target
        is_method = node.op == "call_method"
        x = node.args[0] if node.args else None
        if isinstance(x, fx.Node) and self.category[x.name] == "tuple":
            return self._classify_tuple_member(node, x)
        if t in (F.interpolate, F.upsample):
            self._check_tensor_node(node, x)
            return self._interp_rule(
                node,
                x,
                _arg(node, 1, "size"),
                _arg(node, 2, "scale_factor"),
                _arg(node, 3, "mode", "nearest"),
                _arg(node, 4, "align_corners"),
                _arg(node, 5, "recompute_scale_factor"),
                _arg(node, 6, "antialias", False),
            )
        if t is F.prelu:
            w = _arg(node, 1, "weight")
            self._check_tensor_node(node, x)
            if self._dep(w):
                raise self._unsupported(node, "input-dependent PReLU weight")
            return Rule("act", [x.name], attrs={"fn": "prelu", "weight_node": w})
        act = _act_from_function(node)
        if act is not None:
            self._check_tensor_node(node, x)
            return Rule("act", [x.name], attrs=act)
        if (is_method and t in ("add", "add_", "sub", "sub_")) or t in _ADD | _SUB:
            return self._classify_addsub(node, minus=t in _SUB or t in ("sub", "sub_"))
        if (is_method and t in ("mul", "mul_")) or t in _MUL:
            return self._classify_mul(node)
        if (is_method and t in ("div", "div_")) or t in _DIV:
            a, b = node.args[:2] if len(node.args) >= 2 else (None, None)
            if node.kwargs or not self._dep(a) or not self._const_or_scalar(b):
                raise self._unsupported(node, "division by an input-dependent tensor")
            self._check_tensor_node(node, a)
            return Rule("scale", [a.name], attrs={"op": "const", "factor": (b, "div")})
        if (is_method and t == "neg") or t in (operator.neg, torch.neg):
            self._check_tensor_node(node, x)
            return Rule("scale", [x.name], attrs={"op": "const", "a": -1.0})
        if (is_method and t in _MATMUL_METHODS) or t in _MATMUL:
            return self._classify_matmul(node)
        if t is F.linear:
            w, b = _arg(node, 1, "weight"), _arg(node, 2, "bias")
            self._check_tensor_node(node, x)
            if not isinstance(w, fx.Node) or w.name not in self.pview_root or self._dep(b):
                raise self._unsupported(node, "F.linear needs a parameter weight")
            return Rule(
                "wsum", [x.name], [self.pview_root[w.name]], attrs={"op": "linear", "w": w.name}
            )
        if (is_method and t in ("mean", "sum")) or t in (torch.mean, torch.sum):
            self._check_tensor_node(node, x)
            dim = _arg(node, 1, "dim")
            if dim is None or "dtype" in node.kwargs:
                raise self._unsupported(node, "reduces the batch dim")
            return Rule(
                "wsum",
                [x.name],
                attrs={
                    "op": "reduce",
                    "average": t in ("mean", torch.mean),
                    "dims": [dim] if isinstance(dim, int) else list(dim),
                    "keepdim": bool(_arg(node, 2, "keepdim", False)),
                },
            )
        if (is_method and t in ("amax", "amin")) or t in (torch.amax, torch.amin):
            self._check_tensor_node(node, x)
            dim = _arg(node, 1, "dim", ())
            dims = [dim] if isinstance(dim, int) else list(dim)
            if not dims:
                raise self._unsupported(node, "reduces the batch dim")
            keepdim = bool(_arg(node, 2, "keepdim", False))
            return Rule(
                "maxsel",
                [x.name],
                attrs={
                    "op": "dims",
                    "dims": dims,
                    "keepdim": keepdim,
                    "min": t in ("amin", torch.amin),
                },
            )
        if t in (F.layer_norm, F.group_norm, F.instance_norm, F.rms_norm):
            return self._classify_norm_function(node)
        if t is F.embedding:
            w = _arg(node, 1, "weight")
            if not isinstance(w, fx.Node) or w.name not in self.pview_root:
                raise self._unsupported(node, "F.embedding needs a parameter weight")
            if _arg(node, 3, "max_norm") is not None:
                raise self._unsupported(node, "max_norm")
            return Rule("embed", [x.name], [self.pview_root[w.name]], attrs={"w": w.name})
        if t is F.scaled_dot_product_attention:
            return self._classify_sdpa(node)
        if t in _DROPOUT_FUNCTIONS:
            if _arg(node, 2, "training", _DROPOUT_FUNCTIONS[t]):
                raise self._unsupported(node, "dropout in training mode")
            return self._move_rule(node, mv.identity)
        if t is F.adaptive_avg_pool2d or t is F.adaptive_avg_pool1d:
            return Rule("wsum", [x.name], attrs={"op": "adaptive_avg"})
        if (is_method and t in ("softmax", "log_softmax")) or t in _SOFTMAX_FUNCTIONS:
            log = t in ("log_softmax", F.log_softmax, torch.log_softmax)
            return self._softmax_rule(node, x, _arg(node, 1, "dim"), log)
        mov = self._movement_of(node)
        if mov is not None:
            fn, _ = mov
            if fn is mv.pad and _arg(node, 2, "mode", "constant") not in _PAD_MODES:
                raise self._unsupported(node, "padding mode")
            if fn is mv.where and len(node.args) + len(node.kwargs) != 3:
                raise self._unsupported(node, "torch.where(cond) without values")
            if fn in (mv.masked_fill, mv.where, mv.where_method):
                cond = _arg(node, 1, "mask") if fn is not mv.where else _arg(node, 0, "condition")
                if self._dep(cond):
                    raise self._unsupported(node, "a mask that depends on the input")
            if fn in (mv.gather, mv.index_select, mv.take_along_dim):
                index = _arg(node, 2 if fn is not mv.take_along_dim else 1, "index")
                if self._dep(index):
                    raise self._unsupported(node, "indices that depend on the input")
            if fn in (mv.squeeze,) and _arg(node, 1, "dim") is None:
                raise self._unsupported(node, "squeeze without dim")
            return self._move_rule(node, fn)
        raise self._unsupported(node)

    def _interp_rule(self, node, x, size, scale_factor, mode, align_corners, recompute, aa):
        """Nearest modes: data movement; linear, bilinear, bicubic, trilinear, area: a weighted
        sum with the operator's coefficients (docs/spec.md §8)."""
        if aa:
            raise self._unsupported(node, "antialias")
        args = (x, size, scale_factor, mode, align_corners, recompute, aa)
        if mode in ("nearest", "nearest-exact"):
            return self._move_rule_args(node, mv.interpolate_nearest, args)
        if mode not in ("linear", "bilinear", "bicubic", "trilinear", "area"):
            raise self._unsupported(node, f"interpolation mode {mode!r}")
        attrs = {
            "op": "interp",
            "mode": mode,
            "size": size,
            "scale_factor": scale_factor,
            "align_corners": bool(align_corners),
            "recompute": bool(recompute),
        }
        return Rule("wsum", [x.name], attrs=attrs)

    def _move_rule(self, node: fx.Node, fn: Any, pick: int | None = None, **attrs) -> Rule:
        """Data movement through the NumPy mirror ``fn`` called with the node's own args."""
        args = node.args if node.target is not getattr else node.args[:1]
        inputs: list[str] = []
        for a in _node_inputs(node):
            if self._dep(a) and a.name not in inputs:
                if self.category[a.name] == "tuple":
                    raise self._unsupported(node)
                inputs.append(a.name)
        return Rule(
            "move",
            inputs,
            attrs={"op": "mirror", "fn": fn, "args": args, "kwargs": node.kwargs, "pick": pick}
            | attrs,
        )

    def _classify_tuple_member(self, node: fx.Node, src: fx.Node) -> Rule:
        tup = self.tuples[src.name]
        t = node.target
        if t is operator.getitem:
            index = node.args[1]
        elif t is getattr and node.args[1] in ("values", "indices"):
            index = 0 if node.args[1] == "values" else 1
        else:
            raise self._unsupported(node, "reads a tuple")
        if not isinstance(index, int):
            raise self._unsupported(node, "reads a tuple with a non-int index")
        if tup.kind == "list":
            tnode = src
            rule = self._move_rule(tnode, tup.attrs["fn"], pick=index)
            return rule
        if tup.kind == "max":
            if index != 0:
                raise self._unsupported(node, "uses the indices of torch.max/min")
            return Rule(
                "maxsel",
                [src.args[0].name],
                attrs={
                    "op": "dims",
                    "dims": [_arg(src, 1, "dim")],
                    "keepdim": bool(_arg(src, 2, "keepdim", False)),
                    "min": tup.attrs["min"],
                },
            )
        if tup.kind == "composite":
            root, path = src.name, (index,)
        else:
            root, path = tup.attrs["root"], (*tup.attrs["path"], index)
        return Rule("move", [], attrs={"op": "composite", "root": root, "path": path})

    def _classify_addsub(self, node: fx.Node, minus: bool) -> Rule:
        if "alpha" in node.kwargs or len(node.args) != 2:
            raise self._unsupported(node)
        a, b = node.args
        if self._dep(a) and self._dep(b):
            self._check_tensor_node(node, a)
            self._check_tensor_node(node, b)
            return Rule(
                "wsum",
                [a.name, b.name],
                attrs={"op": "add", "signs": [1.0, -1.0 if minus else 1.0]},
            )
        if self._dep(a) and self._const_or_scalar(b):
            self._check_tensor_node(node, a)
            return self._move_rule_on(node, a, b, check="delta")
        if self._dep(b) and self._const_or_scalar(a):
            self._check_tensor_node(node, b)
            if not minus:
                return self._move_rule_on(node, b, a, check="delta")
            # c - x: a scale by -1 (SPEC: "1 - z is a constant minus a tensor")
            return Rule("scale", [b.name], attrs={"op": "const", "a": -1.0, "other": a})
        raise self._unsupported(node)

    def _move_rule_on(self, node: fx.Node, x: fx.Node, c: Any, check: str) -> Rule:
        """``x + c``: every output point reads x's aligned point (x may be broadcast)."""
        others = (c,) if isinstance(c, fx.Node) else ()
        return Rule(
            "move",
            [x.name],
            attrs={
                "op": "mirror",
                "fn": mv.broadcast_with,
                "args": (x, *others),
                "kwargs": {},
                "pick": None,
                "check": check,
            },
        )

    def _classify_mul(self, node: fx.Node) -> Rule:
        if len(node.args) != 2 or node.kwargs:
            raise self._unsupported(node)
        a, b = node.args
        if self._dep(a) and self._dep(b):
            self._check_tensor_node(node, a)
            self._check_tensor_node(node, b)
            return Rule("product", [a.name, b.name])
        src, c = (a, b) if self._dep(a) else (b, a)
        self._check_tensor_node(node, src)
        if not self._const_or_scalar(c):
            raise self._unsupported(node)
        return Rule("scale", [src.name], attrs={"op": "const", "factor": (c, "mul")})

    def _classify_matmul(self, node: fx.Node) -> Rule:
        if len(node.args) != 2 or node.kwargs:
            raise self._unsupported(node)
        a, b = node.args
        if self._dep(a) and self._dep(b):
            self._check_tensor_node(node, a)
            self._check_tensor_node(node, b)
            return Rule("matmul", [a.name, b.name])
        if self._dep(a) and isinstance(b, fx.Node) and b.name in self.pview_root:
            self._check_tensor_node(node, a)
            return Rule(
                "wsum", [a.name], [self.pview_root[b.name]], attrs={"op": "xW", "w": b.name}
            )
        if self._dep(b) and isinstance(a, fx.Node) and a.name in self.pview_root:
            self._check_tensor_node(node, b)
            return Rule(
                "wsum", [b.name], [self.pview_root[a.name]], attrs={"op": "Wx", "w": a.name}
            )
        raise self._unsupported(node, "matrix product with a constant that is not a parameter")

    def _classify_norm_function(self, node: fx.Node) -> Rule:
        t, x = node.target, node.args[0]
        self._check_tensor_node(node, x)

        def const(a: Any) -> Any:
            if self._dep(a):
                raise self._unsupported(node, "input-dependent normalization parameter")
            return a

        if t is F.layer_norm:
            attrs = {
                "op": "layer",
                "shape": tuple(_arg(node, 1, "normalized_shape")),
                "weight": const(_arg(node, 2, "weight")),
                "bias": const(_arg(node, 3, "bias")),
                "eps": _arg(node, 4, "eps", 1e-5),
            }
        elif t is F.rms_norm:
            attrs = {
                "op": "rms",
                "shape": tuple(_arg(node, 1, "normalized_shape")),
                "weight": const(_arg(node, 2, "weight")),
                "eps": _arg(node, 3, "eps"),
            }
        elif t is F.group_norm:
            attrs = {
                "op": "group",
                "groups": int(_arg(node, 1, "num_groups")),
                "weight": const(_arg(node, 2, "weight")),
                "bias": const(_arg(node, 3, "bias")),
                "eps": _arg(node, 4, "eps", 1e-5),
            }
        else:
            attrs = {
                "op": "instance",
                "running_mean": const(_arg(node, 1, "running_mean")),
                "running_var": const(_arg(node, 2, "running_var")),
                "weight": const(_arg(node, 3, "weight")),
                "bias": const(_arg(node, 4, "bias")),
                "use_input_stats": _arg(node, 5, "use_input_stats", True),
                "eps": _arg(node, 7, "eps", 1e-5),
            }
        return Rule("norm", [x.name], attrs=attrs)

    def _classify_sdpa(self, node: fx.Node) -> Rule:
        q, k, v = (_arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
        for a in (q, k, v):
            self._check_tensor_node(node, a)
        mask = _arg(node, 3, "attn_mask")
        if _arg(node, 4, "dropout_p", 0.0) != 0.0:
            raise self._unsupported(node, "attention dropout")
        if mask is not None and (not isinstance(mask, fx.Node) or self._dep(mask)):
            raise self._unsupported(node, "an attention mask that depends on the input")
        options = {
            "scale": _arg(node, 6, "scale"),
            "attn_mask": None if mask is None else mask.name,
            "is_causal": bool(_arg(node, 5, "is_causal", False)),
            "enable_gqa": bool(_arg(node, 7, "enable_gqa", False)),
        }
        self.composites[node.name] = ("sdpa", [q.name, k.name, v.name], options)
        return Rule("matmul", [], attrs={"op": "sdpa"})  # replaced by the expansion's final rule

    def _softmax_rule(self, node: fx.Node, x: Any, dim: Any, log: bool) -> Rule:
        self._check_tensor_node(node, x)
        if node.name == self.output_name:  # SPEC: softmax/log-softmax on the output: movement
            return Rule(
                "move",
                [x.name],
                attrs={
                    "op": "mirror",
                    "fn": mv.identity,
                    "args": (x,),
                    "kwargs": {},
                    "pick": None,
                    "check": "none",
                },
            )
        if dim is None:
            raise self._unsupported(node, "softmax without dim")
        return Rule("softmax", [x.name], attrs={"full_dim": int(dim), "log": log})

    def _classify_module(self, node: fx.Node, m: nn.Module) -> Rule:
        x = node.args[0] if node.args else None
        if isinstance(m, nn.EmbeddingBag):
            return self._classify_embedding_bag(node, m, x)
        if isinstance(m, nn.TransformerEncoderLayer):
            return self._classify_encoder_layer(node, m, x)
        if len(node.args) != 1 or node.kwargs or not isinstance(x, fx.Node):
            raise self._unsupported(node)
        self._check_tensor_node(node, x)
        inputs = [x.name]
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
                raise self._unsupported(node)
            pad = (0,) * len(m.kernel_size) if isinstance(m.padding, str) else m.padding
            return Rule(
                "wsum",
                inputs,
                [f"{node.target}.weight"],
                attrs={
                    "op": "conv",
                    "stride": tuple(m.stride),
                    "padding": tuple(pad),
                    "dilation": tuple(m.dilation),
                    "groups": m.groups,
                },
            )
        if isinstance(m, nn.Linear):
            return Rule("wsum", inputs, [f"{node.target}.weight"], attrs={"op": "linear"})
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.training or not m.track_running_stats:
                raise self._unsupported(node)
            gamma = m.weight.detach().double().numpy() if m.affine else None
            var = m.running_var.detach().double().numpy()
            a = (gamma if gamma is not None else 1.0) / np.sqrt(var + m.eps)
            return Rule("scale", inputs, attrs={"op": "bn", "a": a})
        if isinstance(m, nn.PReLU):
            attrs = {"fn": "prelu", "weight_param": f"{node.target}.weight"}
            return Rule("act", inputs, attrs=attrs)
        if isinstance(m, _ACT_MODULES):
            return Rule("act", inputs, attrs=_act_from_module(m))
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            if m.return_indices:
                raise self._unsupported(node)
            return Rule("maxsel", inputs, attrs={"op": "pool", "module": m})
        if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
            if m.ceil_mode:
                raise self._unsupported(node)
            return Rule("wsum", inputs, attrs={"op": "avg", "module": m})
        if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            return Rule("wsum", inputs, attrs={"op": "adaptive_avg"})
        if isinstance(m, nn.Flatten):
            return self._move_rule_args(node, mv.flatten, (x, m.start_dim, m.end_dim))
        if isinstance(m, nn.Unflatten):
            return self._move_rule_args(node, mv.unflatten, (x, m.dim, tuple(m.unflattened_size)))
        if isinstance(m, (nn.Identity, *_DROPOUT_MODULES)):
            if m.training and not isinstance(m, nn.Identity):
                raise self._unsupported(node, "dropout in training mode")
            return self._move_rule_args(node, mv.identity, (x,))
        if isinstance(m, _PAD_MODULES):
            return self._move_rule_args(node, mv.pad, (x, tuple(m.padding), "constant", m.value))
        if isinstance(m, nn.Upsample):  # incl. UpsamplingNearest2d / UpsamplingBilinear2d
            return self._interp_rule(
                node,
                x,
                m.size,
                m.scale_factor,
                m.mode,
                m.align_corners,
                getattr(m, "recompute_scale_factor", None),
                False,
            )
        if isinstance(m, (nn.ReflectionPad1d, nn.ReflectionPad2d)):
            return self._move_rule_args(node, mv.pad, (x, tuple(m.padding), "reflect"))
        if isinstance(m, (nn.ReplicationPad1d, nn.ReplicationPad2d)):
            return self._move_rule_args(node, mv.pad, (x, tuple(m.padding), "replicate"))
        if isinstance(m, nn.PixelShuffle):
            return self._move_rule_args(node, mv.pixel_shuffle, (x, m.upscale_factor))
        if isinstance(m, nn.PixelUnshuffle):
            return self._move_rule_args(node, mv.pixel_unshuffle, (x, m.downscale_factor))
        if isinstance(m, nn.ChannelShuffle):
            return self._move_rule_args(node, mv.channel_shuffle, (x, m.groups))
        if isinstance(m, nn.Unfold):
            return self._move_rule_args(
                node, mv.im2col, (x, m.kernel_size, m.dilation, m.padding, m.stride)
            )
        if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            return self._softmax_rule(node, x, m.dim, isinstance(m, nn.LogSoftmax))
        if isinstance(m, _NORM_MODULES):
            return self._norm_module_rule(node, m, x)
        if isinstance(m, nn.Embedding):
            if m.max_norm is not None:
                raise self._unsupported(node, "max_norm")
            return Rule("embed", inputs, [f"{node.target}.weight"], attrs={})
        raise self._unsupported(node)

    def _classify_encoder_layer(self, node: fx.Node, m: nn.Module, x: Any) -> Rule:
        if m.training:
            raise self._unsupported(node, "TransformerEncoderLayer in training mode")
        self._check_tensor_node(node, x)
        masks = []
        for i, key in ((1, "src_mask"), (2, "src_key_padding_mask")):
            mask = _arg(node, i, key)
            if mask is not None and (not isinstance(mask, fx.Node) or self._dep(mask)):
                raise self._unsupported(node, f"{key} must be a constant tensor")
            masks.append(None if mask is None else mask.name)
        self.composites[node.name] = ("encoder", [x.name], masks)
        return Rule("norm", [], attrs={"op": "encoder"})  # replaced by the expansion's final

    def _classify_embedding_bag(self, node: fx.Node, m: nn.EmbeddingBag, x: Any) -> Rule:
        offsets = _arg(node, 1, "offsets")
        weights = _arg(node, 2, "per_sample_weights")
        if offsets is not None:
            raise self._unsupported(node, "EmbeddingBag with offsets")
        if not isinstance(x, fx.Node) or self._dep(weights):
            raise self._unsupported(node, "per_sample_weights must be constant")
        self.composites[node.name] = ("bag", [x.name], weights)
        return Rule("wsum", [], attrs={"op": "bag"})  # replaced by the expansion's final rule

    def _move_rule_args(self, node: fx.Node, fn: Any, args: tuple) -> Rule:
        return Rule(
            "move",
            [args[0].name],
            attrs={"op": "mirror", "fn": fn, "args": args, "kwargs": {}, "pick": None},
        )

    def _norm_module_rule(self, node: fx.Node, m: nn.Module, x: fx.Node) -> Rule:
        prefix = str(node.target)
        weight = f"{prefix}.weight" if getattr(m, "weight", None) is not None else None
        bias = f"{prefix}.bias" if getattr(m, "bias", None) is not None else None
        if isinstance(m, nn.LayerNorm):
            attrs = {"op": "layer", "shape": tuple(m.normalized_shape), "eps": m.eps}
        elif isinstance(m, nn.RMSNorm):
            attrs = {"op": "rms", "shape": tuple(m.normalized_shape), "eps": m.eps}
        elif isinstance(m, nn.GroupNorm):
            attrs = {"op": "group", "groups": m.num_groups, "eps": m.eps}
        else:
            running = m.track_running_stats and not m.training
            attrs = {
                "op": "instance",
                "running_mean": m.running_mean if running else None,
                "running_var": m.running_var if running else None,
                "use_input_stats": not running,
                "eps": m.eps,
            }
        attrs["weight_param"], attrs["bias_param"] = weight, bias
        return Rule("norm", [x.name], attrs=attrs)

    # --- forward ------------------------------------------------------------------------------

    def _run(self, x: torch.Tensor) -> dict[str, Any]:
        rec = _Recorder(self.gm)
        with torch.no_grad():
            rec.run(x)
        return rec.raw

    def _probe_batch_dims(self, x: torch.Tensor, raw: dict[str, Any]) -> None:
        """The batch dim of every tensor node: the dim that grows by one with one more sample."""
        more = self._run(torch.cat([x, x[:1]]))
        b = int(x.shape[0])
        bdim: dict[str, int | None] = {}
        for node in self.fx_nodes:
            v, w = raw.get(node.name), more.get(node.name)
            if not isinstance(v, torch.Tensor):
                continue
            diff = (
                [d for d in range(v.dim()) if v.shape[d] != w.shape[d]]
                if v.dim() == w.dim()
                else None
            )
            dep = self.category[node.name] in ("input", "point")
            if diff == [] and not dep:
                bdim[node.name] = None  # a constant without batch dim
            elif diff and len(diff) == 1 and (v.shape[diff[0]], w.shape[diff[0]]) == (b, b + 1):
                bdim[node.name] = diff[0]
            elif dep:
                raise ReferenceUnsupported(
                    f"reference: node {node.name!r} has no single batch dim "
                    f"({tuple(v.shape)} with {b} samples, {tuple(w.shape)} with {b + 1})"
                )
        self.bdim = bdim

    def _expand(self, raw: dict[str, Any]) -> None:
        """Rewrite the composite layers for the shapes of this first forward: their internal
        nodes go where the layer sits in the graph."""
        in_order = {n.name: n for n in self.order}
        order: list[Node] = []
        for n in self.fx_nodes:
            composite = (
                n.name in self.composites
                or n.name in self.tuples
                and self.tuples[n.name].kind == "composite"
            )
            if composite:
                exp = self._build_expansion(n, raw)
                exp.key = tuple(
                    self._ps_shape_of(raw[a], a) for a in self._expansion_inputs(n.name)
                )
                self.expansions[n.name] = exp
                order += [Node(name, "internal", rule, n.name) for name, rule in exp.nodes]
                if exp.final is not None:
                    self.rules[n.name] = in_order[n.name].rule = exp.final
            if n.name in in_order:
                order.append(in_order[n.name])
        self.order = order
        for node in order:  # readers of a composite's outputs read its internal nodes
            rule = node.rule
            if rule is not None and rule.kind == "move" and rule.attrs["op"] == "composite":
                exp = self.expansions[rule.attrs["root"]]
                if rule.attrs["path"] in exp.outputs:
                    rule.inputs = list(exp.outputs[rule.attrs["path"]][0])
                    rule.params = [None] * len(rule.inputs)

    def _build_expansion(self, n: fx.Node, raw: dict[str, Any]) -> Expansion:
        self._raw_const = raw
        if n.name in self.composites and self.composites[n.name][0] == "bag":
            _, (tokens,), weights = self.composites[n.name]
            if self.bdim.get(tokens) != 0:
                raise self._unsupported(n, "the bags' batch dim must be first")
            m = self.modules[n.target]
            shape = self._ps_shape_of(raw[tokens], tokens)
            return embedding_bag_expansion(str(n.target), m, tokens, shape, weights, self.params)
        if n.name in self.composites and self.composites[n.name][0] == "encoder":
            _, (x,), masks = self.composites[n.name]
            m = self.modules[n.target]
            if self.bdim.get(x) != (0 if m.self_attn.batch_first else 1):
                raise self._unsupported(n, "batch dim does not match batch_first")
            return encoder_layer_expansion(
                str(n.target), m, x, tuple(raw[x].shape), self.params, *masks
            )
        if n.name in self.composites:
            _, names, options = self.composites[n.name]
            shapes = [self._ps_shape_of(raw[a], a) for a in names]
            for a in names:
                if self.bdim.get(a) != 0:
                    raise self._unsupported(n, "batch dim of SDPA inputs must be first")
            return sdpa_expansion(n.name, names, shapes, **options)
        m = self.tuples[n.name].attrs["module"]
        args = list(n.args)
        if isinstance(m, nn.MultiheadAttention):
            q = args[0]
            k = args[1] if len(args) > 1 else n.kwargs.get("key")
            v = args[2] if len(args) > 2 else n.kwargs.get("value")
            kpm, attn_mask = self._mha_masks(n)
            names = [q.name, k.name, v.name]
            want = 0 if m.batch_first else 1
            if any(self.bdim.get(a) != want for a in names):
                raise self._unsupported(n, "batch dim does not match batch_first")
            shapes = [tuple(raw[a].shape) for a in names]
            return mha_expansion(str(n.target), m, names, shapes, self.params, attn_mask, kpm)
        x = args[0]
        if self.bdim.get(x.name) != (0 if m.batch_first else 1):
            raise self._unsupported(n, "batch dim does not match batch_first")
        h0, c0 = (self._rnn_state(n, s) for s in self._rnn_states(n, m))
        return rnn_expansion(
            str(n.target), m, x.name, tuple(raw[x.name].shape), self.params, h0, c0
        )

    def _mha_masks(self, n: fx.Node) -> tuple[str | None, str | None]:
        """(key_padding_mask, attn_mask) node names of a MultiheadAttention call: constants
        (a key_padding_mask with its batch in dim 0); ``is_causal`` only as the hint that the
        given attn_mask is causal."""
        known = ("key", "value", "key_padding_mask", "need_weights", "attn_mask")
        known += ("average_attn_weights", "is_causal")
        if set(n.kwargs) - set(known):
            raise self._unsupported(n, f"MultiheadAttention arguments {sorted(n.kwargs)}")
        names = []
        for i, key in ((3, "key_padding_mask"), (5, "attn_mask")):
            mask = _arg(n, i, key)
            if mask is not None and (not isinstance(mask, fx.Node) or self._dep(mask)):
                raise self._unsupported(n, f"{key} must be a constant tensor")
            names.append(None if mask is None else mask.name)
        if _arg(n, 7, "is_causal", False) and names[1] is None:
            raise self._unsupported(n, "is_causal without attn_mask")
        if names[0] is not None and self.bdim.get(names[0]) != 0:
            raise self._unsupported(n, "key_padding_mask without its batch in dim 0")
        return names[0], names[1]

    def _rnn_states(self, n: fx.Node, m: nn.Module) -> tuple[Any, Any]:
        """The given (h0, c0) of a recurrent call (None where not given)."""
        if set(n.kwargs) - {"hx"} or len(n.args) > 2:
            raise self._unsupported(n, "recurrent layer arguments")
        hx = n.args[1] if len(n.args) > 1 else n.kwargs.get("hx")
        if hx is None:
            return None, None
        if isinstance(m, nn.LSTM):
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise self._unsupported(n, "LSTM initial state must be (h0, c0)")
            return hx[0], hx[1]
        return hx, None

    def _rnn_state(self, n: fx.Node, state: Any) -> tuple[str, Any] | None:
        """("node", name) for an input-dependent initial state (batch in dim 1), ("const",
        its per-sample value) for a constant one (equal in every sample)."""
        if state is None:
            return None
        if not isinstance(state, fx.Node):
            raise self._unsupported(n, "initial state is not a tensor node")
        if self._dep(state):
            if self.bdim.get(state.name) != 1:
                raise self._unsupported(n, "initial state without its batch in dim 1")
            return ("node", state.name)
        v = self._raw_const[state.name].detach().to(torch.float64).numpy()
        if v.ndim != 3 or not (v == v[:, :1]).all():
            raise self._unsupported(n, "a constant initial state must be equal in every sample")
        return ("const", v[:, 0])

    def _ps_shape_of(self, v: torch.Tensor, name: str) -> tuple[int, ...]:
        d = self.bdim[name]
        shape = tuple(v.shape)
        return shape[:d] + shape[d + 1 :]

    def _forward(self, x: torch.Tensor) -> _Forward:
        x = torch.as_tensor(x)
        raw = self._run(x)
        if self.bdim is None:
            self._probe_batch_dims(x, raw)
            self._expand(raw)
        values: dict[str, np.ndarray] = {}
        for node in self.order:
            if node.op == "internal":
                continue
            v = raw.get(node.name)
            if not isinstance(v, torch.Tensor):
                raise ReferenceUnsupported(f"reference: node {node.name!r} is not a tensor")
            values[node.name] = v.detach().to(torch.float64).numpy()
        for root, exp in self.expansions.items():
            names = self._expansion_inputs(root)
            key = tuple(self._ps_shape_of(raw[a], a) for a in names)
            if key != exp.key:
                raise ReferenceUnsupported(
                    f"reference: {root!r} was rewritten for per-sample input shapes {exp.key}, "
                    f"got {key} (slice inputs of the profiling data's sequence length)"
                )
            computed = exp.compute([values[a] for a in names] + [raw[c] for c in exp.consts])
            for name, _ in exp.nodes:
                values[name] = computed[name]
        for name in values:
            if name not in self.bdim:
                self.bdim[name] = 0  # internal nodes are computed batch first
        consts = {n.name: raw[n.name] for n in self.fx_nodes if self.category[n.name] == "const"}
        fwd = _Forward(values=values, raw=consts)
        self._param_views(fwd)
        for node in self.order:
            if node.rule is not None and node.rule.kind == "maxsel":
                fwd.maxsel[node.name] = self._max_sources(node, fwd)
        return fwd

    def _expansion_inputs(self, root: str) -> list[str]:
        if root in self.composites:
            return list(self.composites[root][1])
        n = self._by_name[root]
        m = self.tuples[root].attrs["module"]
        if isinstance(m, nn.MultiheadAttention):
            args = list(n.args)
            k = args[1] if len(args) > 1 else n.kwargs.get("key")
            v = args[2] if len(args) > 2 else n.kwargs.get("value")
            return [args[0].name, k.name, v.name]
        h0, c0 = (self._rnn_state(n, st) for st in self._rnn_states(n, m))
        return [n.args[0].name] + [st[1] for st in (h0, c0) if st is not None and st[0] == "node"]

    def forward_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every point node's value (full batch, float64)."""
        return {k: torch.from_numpy(v) for k, v in self._forward(x).values.items()}

    def _param_views(self, fwd: _Forward) -> None:
        for node in self.fx_nodes:
            name = node.name
            if name not in self.pview_root:
                continue
            if name not in self.pview_call:  # the parameter itself
                p = self.params[self.pview_root[name]]
                fwd.pviews[name] = np.arange(p.size, dtype=np.int64).reshape(p.shape)
                continue
            fn, args, kwargs = self.pview_call[name]
            env = dict(fwd.raw) | fwd.pviews
            resolved = fx.node.map_aggregate(args, lambda a, env=env: self._env(a, env))
            fwd.pviews[name] = fn(*resolved, **kwargs)

    @staticmethod
    def _env(a: Any, env: dict[str, Any]) -> Any:
        if isinstance(a, fx.Node):
            return env[a.name]
        return a

    def _max_sources(self, node: Node, fwd: _Forward) -> np.ndarray:
        """Per sample, the flat source of every output point (PyTorch's choice)."""
        rule = node.rule
        src = rule.inputs[0]
        if self.bdim[src] != 0 or self.bdim[node.name] != 0:
            raise ReferenceUnsupported(f"reference: {node.name!r}: batch dim must be first")
        x = torch.from_numpy(fwd.values[src])
        if rule.attrs["op"] == "bag":
            a = rule.attrs
            tokens = fwd.values[a["tokens"]].astype(np.int64)
            return np.stack(
                [
                    bag_max_sources(fwd.values[src][b], tokens[b], a["padding_idx"])
                    for b in range(len(tokens))
                ]
            )
        if rule.attrs["op"] == "pool":
            return self._maxpool_sources(rule.attrs["module"], x)
        ndim = x.dim()
        dims = sorted({norm_dim(int(d), ndim) for d in rule.attrs["dims"]})
        if 0 in dims:
            raise ReferenceUnsupported(f"reference: {node.name!r} reduces the batch dim")
        keep = [d for d in range(1, ndim) if d not in dims]
        xp = x.permute(0, *keep, *dims)
        xp = xp.reshape(*xp.shape[: 1 + len(keep)], -1)
        select = torch.min if rule.attrs.get("min") else torch.max
        with torch.no_grad():
            idx = select(xp, dim=-1).indices.numpy()  # (B, *kept sizes)
        ps = tuple(x.shape[1:])
        red_sizes = [ps[d - 1] for d in dims]
        out = np.zeros((x.shape[0], int(np.prod(idx.shape[1:], dtype=np.int64))), dtype=np.int64)
        for b in range(x.shape[0]):
            for o, kpos in enumerate(np.ndindex(*idx.shape[1:])):
                rpos = np.unravel_index(int(idx[(b, *kpos)]), red_sizes)
                pos = [0] * len(ps)
                for d, i in zip(keep, kpos, strict=True):
                    pos[d - 1] = i
                for d, i in zip(dims, rpos, strict=True):
                    pos[d - 1] = int(i)
                out[b, o] = np.ravel_multi_index(pos, ps)
        return out

    @staticmethod
    def _maxpool_sources(m: nn.Module, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            if isinstance(m, nn.MaxPool2d):
                _, ind = F.max_pool2d(
                    x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True
                )
            elif isinstance(m, nn.MaxPool1d):
                _, ind = F.max_pool1d(
                    x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True
                )
            elif isinstance(m, nn.AdaptiveMaxPool2d):
                _, ind = F.adaptive_max_pool2d(x, m.output_size, True)
            else:
                _, ind = F.adaptive_max_pool1d(x, m.output_size, True)
        ind = ind.numpy()  # (B, C, *out_spatial), flat within the channel's input plane
        plane = int(np.prod(x.shape[2:]))
        channel = np.arange(x.shape[1]).reshape((1, -1) + (1,) * (ind.ndim - 2))
        return (channel * plane + ind).reshape(ind.shape[0], -1)

    # --- §2 profiling ---------------------------------------------------------------------------

    def profile(self, data: Iterable[Any]) -> None:
        """docs/spec.md §2: per point, the mean over the data (float64 torch sums, batch by batch),
        and
        per class (the label given, or the model's prediction for unlabeled data)."""
        sums: dict[str, torch.Tensor] = {}
        class_sums: dict[int, dict[str, torch.Tensor]] = {}
        class_counts: dict[int, int] = {}
        count = 0
        for item in data:
            if isinstance(item, (tuple, list)) and len(item) == 2:
                x, labels = item
                labels = torch.as_tensor(labels).reshape(-1).long()
            else:
                x, labels = item, None
            fwd = self._forward(torch.as_tensor(x))
            if labels is None:  # unlabeled data: the class is the model's prediction
                labels = torch.from_numpy(fwd.values[self.output_name].argmax(axis=1))
            for node in self.order:
                v = torch.from_numpy(self._batch_first(fwd, node.name))
                if node.name not in sums:
                    sums[node.name] = torch.zeros(v.shape[1:], dtype=torch.float64)
                sums[node.name] += v.sum(dim=0)
                for k in labels.unique().tolist():
                    cs = class_sums.setdefault(int(k), {})
                    if node.name not in cs:
                        cs[node.name] = torch.zeros(v.shape[1:], dtype=torch.float64)
                    cs[node.name] += v[labels == k].sum(dim=0)
            for k in labels.tolist():
                class_counts[int(k)] = class_counts.get(int(k), 0) + 1
            count += len(labels)
        assert count > 0, "empty profiling set"
        self._sums, self._count = sums, count
        self._class_sums, self._class_counts = class_sums, class_counts
        self.dataset_mean = {k: (v / count).numpy() for k, v in sums.items()}
        self.class_mean = {
            c: {k: (v / class_counts[c]).numpy() for k, v in cs.items()}
            for c, cs in class_sums.items()
        }

    def _batch_first(self, fwd: _Forward, name: str) -> np.ndarray:
        return np.moveaxis(fwd.values[name], self.bdim[name], 0)

    # --- node listing and criterion nodes ------------------------------------------------------

    def nodes(self) -> list[tuple[str, str | None, tuple[int, ...]]]:
        """(name, module it sits in, per-sample shape) of every point node (after profile)."""
        if self._sums is None:
            raise RuntimeError("profile() first")
        return [(n.name, n.module, tuple(self._sums[n.name].shape)) for n in self.order]

    def resolve_node(self, node: str) -> str:
        """A point node name, or the qualified name of the module producing exactly one."""
        names = {n.name for n in self.order}
        if node in names:
            return node
        leaf = [n for n in self.fx_nodes if n.op == "call_module" and n.target == node]
        if leaf:
            if len(leaf) > 1:
                raise ValueError(
                    f"module {node!r} produces several nodes: {[n.name for n in leaf]}"
                )
            if leaf[0].name not in names:
                users = [u.name for u in leaf[0].users]
                raise ValueError(f"module {node!r} returns a tuple; name one of {users}")
            return leaf[0].name
        # a non-leaf module: the nodes of each of its calls that are read outside that call
        calls: dict[str, set[str]] = {}
        for n in self.fx_nodes:
            for key, (qualified, _) in (n.meta.get("nn_module_stack") or {}).items():
                if qualified == node:
                    calls.setdefault(key, set()).add(n.name)
        if not calls:
            raise ValueError(f"no node or module named {node!r}")
        produced = []
        for members in calls.values():
            for name in sorted(members, key=[n.name for n in self.fx_nodes].index):
                users = self._by_name[name].users
                if any(u.name not in members for u in users):
                    produced.append(name)
        if len(produced) != 1 or produced[0] not in names:
            raise ValueError(f"module {node!r} produces several nodes: {produced}")
        return produced[0]

    def _criterion_mask(self, target: ReferenceNeurons, batch: int) -> tuple[str, np.ndarray]:
        name = self.resolve_node(target.node)
        shape = tuple(self._sums[name].shape)
        index = target.index
        mask = np.zeros((batch, *shape), dtype=bool)
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        if isinstance(index, (int, np.integer)):
            mask[:, int(index)] = True
        elif isinstance(index, tuple):
            if len(index) != len(shape):
                raise ValueError(f"point {index} does not fit {name!r} of shape {shape}")
            mask[(slice(None), *index)] = True
        elif isinstance(index, np.ndarray) and index.dtype == bool:
            if index.shape == shape:
                mask[:] = index
            elif index.shape == (batch, *shape):
                mask[:] = index
            else:
                raise ValueError(f"mask of shape {index.shape} does not fit {name!r} {shape}")
        else:
            raise TypeError(f"bad criterion index {index!r}")
        return name, mask

    # --- §3 + §4 ------------------------------------------------------------------------------

    def _target_mask(self, target: Any, out: np.ndarray) -> np.ndarray:
        b, k = out.shape
        mask = np.zeros((b, k), dtype=bool)
        if target is None:
            mask[np.arange(b), out.argmax(axis=1)] = True
        elif isinstance(target, int) or (isinstance(target, torch.Tensor) and target.dim() == 0):
            mask[:, int(target)] = True
        elif isinstance(target, torch.Tensor) and target.dim() == 1:
            mask[np.arange(b), target.long().numpy()] = True
        elif isinstance(target, torch.Tensor) and target.dim() == 2:
            assert target.dtype == torch.bool and tuple(target.shape) == (b, k)
            mask = target.numpy().copy()
        else:
            raise TypeError(f"bad target {target!r}")
        return mask

    def slice(
        self,
        x: torch.Tensor,
        target: Any = None,
        reference: str = "dataset",
        per_sample: bool = False,
        theta: float | None = None,
        check: bool = False,
    ) -> ReferenceSlice:
        """Slice of ``x``. ``check=True`` also verifies every rule against the forward values
        (Σ t = Δy for weighted sums, Σ t = a·b − ā·b̄ for products and matrix products, the
        selected point's value for max, source value = output value for data movement, Δy =
        a·Δx for scales, the NumPy normalization/softmax for those rules, the looked-up entry for
        Embedding); it validates the reference itself."""
        if self._sums is None:
            raise RuntimeError("profile() first")
        theta = self.theta if theta is None else theta
        fwd = self._forward(torch.as_tensor(x))
        out = fwd.values[self.output_name]
        if out.ndim != 2 or self.bdim[self.output_name] != 0:
            raise ReferenceUnsupported("reference: output must be (B, K)")
        batch = out.shape[0]
        if isinstance(target, ReferenceNeurons):
            seed_name, seed = self._criterion_mask(target, batch)
        else:
            seed_name, seed = self.output_name, self._target_mask(target, out)
        predicted = out.argmax(axis=1)
        shapes = {n.name: tuple(self._sums[n.name].shape) for n in self.order}
        for name, s in shapes.items():
            got = self._ps_shape(fwd, name)
            if got != s:
                raise ReferenceUnsupported(f"reference: {name!r} has shape {got}, profiled {s}")
        params = sorted(
            {p for n in self.order if n.rule is not None for p in n.rule.params if p is not None}
        )
        neurons = {n: np.zeros((batch, *s), dtype=np.int64) for n, s in shapes.items()}
        synapses = {p: np.zeros((batch, *self.params[p].shape), dtype=np.int64) for p in params}
        for b in range(batch):
            if reference == "dataset":
                ref = self.dataset_mean
            elif reference == "class":
                c = int(predicted[b])
                if c not in self.class_mean:
                    raise ValueError(f"class {c} has no profiling sample")
                ref = self.class_mean[c]
            else:
                raise ValueError(reference)
            smp = _Sample(b=b, value={}, ref={}, delta={})
            for name in shapes:
                smp.value[name] = np.take(fwd.values[name], b, axis=self.bdim[name]).reshape(-1)
                smp.ref[name] = ref[name].reshape(-1)
                smp.delta[name] = _delta(smp.value[name], smp.ref[name])
            contrib_c = {
                name: np.zeros(int(np.prod(s)), dtype=np.int64) for name, s in shapes.items()
            }
            contrib_w = {p: np.zeros(self.params[p].size, dtype=np.int64) for p in params}
            # Seed: C(o) = +1 for each criterion point of the sample.
            contrib_c[seed_name] += seed[b].reshape(-1).astype(np.int64)
            for node in reversed(self.order):
                if node.rule is None:
                    continue
                if check:
                    self._check_node(node, fwd, smp)
                c_out = contrib_c[node.name]
                for n in np.flatnonzero(c_out):
                    for src_node, src, param, widx, s in self._kept_edges(
                        node, int(n), _sign(c_out[n]), fwd, smp, theta
                    ):
                        if s == 0:
                            continue
                        if src_node is not None:
                            contrib_c[src_node][src] += s
                        if param is not None:
                            contrib_w[param][widx] += s
            for name, s in shapes.items():
                neurons[name][b] = contrib_c[name].reshape(s)
            for p in params:
                synapses[p][b] = contrib_w[p].reshape(self.params[p].shape)
        if not per_sample:
            neurons = {k: v.sum(axis=0) for k, v in neurons.items()}
            synapses = {k: v.sum(axis=0) for k, v in synapses.items()}
        return ReferenceSlice(neurons=neurons, synapses=synapses, per_sample=per_sample)

    def _ps_shape(self, fwd: _Forward, name: str) -> tuple[int, ...]:
        shape = fwd.shape(name)
        d = self.bdim[name]
        return shape[:d] + shape[d + 1 :]

    # --- the edges of one output point ---------------------------------------------------------

    def _kept_edges(self, node: Node, n: int, c_sign: int, fwd: _Forward, smp: _Sample, theta):
        """Kept edges ``(source node, flat source, parameter, flat synapse, s_i)`` of output
        point n (docs/spec.md §4)."""
        rule, name = node.rule, node.name
        kind = rule.kind
        if kind == "wsum":
            e = self._wsum_edges(node, fwd, smp)[n]
            dx = np.asarray(
                [smp.delta[rule.inputs[s]][i] for s, i in zip(e.slot, e.src, strict=True)]
            )
            terms = e.coef * dx / e.div
            kept, total = theta_select(terms.tolist(), theta)
            return [
                (
                    rule.inputs[e.slot[i]],
                    int(e.src[i]),
                    rule.params[e.slot[i]] if e.widx[i] >= 0 else None,
                    int(e.widx[i]),
                    c_sign * _sign(total) * _sign(terms[i]),
                )
                for i in kept
            ]
        if kind in ("product", "matmul"):
            src_a, src_b = self._pairs(node, fwd)[n]
            a, b = rule.inputs
            t_a, t_b = self._product_terms(a, b, src_a, src_b, smp)
            terms = np.concatenate([t_a, t_b])
            kept, total = theta_select(terms.tolist(), theta)
            k = len(src_a)
            return [
                (
                    a if i < k else b,
                    int(src_a[i] if i < k else src_b[i - k]),
                    None,
                    -1,
                    c_sign * _sign(total) * _sign(terms[i]),
                )
                for i in kept
            ]
        dy = smp.delta[name][n]
        if kind in ("scale", "norm"):
            x = rule.inputs[0]
            src = int(self._scale_map(node, fwd)[n])
            a = self._scale_factor(node, fwd, smp.b)[n]
            return [(x, src, None, -1, c_sign * _sign(dy) * _sign(a * smp.delta[x][src]))]
        if kind == "act":
            x = rule.inputs[0]
            attrs = self._act_attrs(node, fwd, n)
            fprime = int(act_derivative_sign(attrs, np.asarray([smp.value[x][n]]))[0])
            return [(x, n, None, -1, c_sign * _sign(dy) * fprime * _sign(smp.delta[x][n]))]
        if kind == "softmax":
            x = rule.inputs[0]
            return [(x, n, None, -1, c_sign * _sign(dy) * _sign(smp.delta[x][n]))]
        if kind == "maxsel":
            x = rule.inputs[0]
            src = int(fwd.maxsel[name][smp.b][n])
            if src < 0:  # an EmbeddingBag bag of padding entries only: a constant 0
                return []
            return [(x, src, None, -1, c_sign * _sign(dy) * _sign(smp.delta[x][src]))]
        if kind == "move":
            slots, slot, flat = self._move_map(node, fwd)
            if flat[n] < 0:
                return []  # a constant point (padding, constant operand)
            return [(slots[slot[n]], int(flat[n]), None, -1, c_sign)]
        if kind == "embed":
            return [
                (None, -1, rule.params[0], int(self._embed_synapses(node, fwd, smp)[n]), c_sign)
            ]
        raise AssertionError(kind)

    def _act_attrs(self, node: Node, fwd: _Forward, n: int) -> dict[str, Any]:
        """The activation's attributes at output point n (PReLU: the slope ``a`` of the point's
        channel, per-sample dim 0, or the one shared slope)."""
        attrs = node.rule.attrs
        if attrs["fn"] != "prelu":
            return attrs
        self._need_batch_first(node)
        if "weight_param" in attrs:
            w = self.params[attrs["weight_param"]].reshape(-1)
        else:
            w = np.asarray(_np(fwd.raw[attrs["weight_node"].name]), dtype=np.float64).reshape(-1)
        shape = self._ps_shape(fwd, node.name)
        channel = int(np.unravel_index(n, shape)[0]) if w.size > 1 else 0
        return {"fn": "prelu", "a": float(w[channel])}

    @staticmethod
    def _product_terms(a, b, src_a, src_b, smp) -> tuple[np.ndarray, np.ndarray]:
        """t_a = Δa·(b + b̄)/2, t_b = Δb·(a + ā)/2 at the aligned points."""
        t_a = smp.delta[a][src_a] * (smp.value[b][src_b] + smp.ref[b][src_b]) / 2.0
        t_b = smp.delta[b][src_b] * (smp.value[a][src_a] + smp.ref[a][src_a]) / 2.0
        return t_a, t_b

    # --- edge tables --------------------------------------------------------------------------

    def _key(self, node: Node, fwd: _Forward) -> tuple:
        return tuple(fwd.shape(i) for i in node.rule.inputs) + (fwd.shape(node.name),)

    def _bag_weights(self, rule: Rule, fwd: _Forward, b: int) -> np.ndarray | None:
        w = rule.attrs["weights"]
        if w is None:
            return None
        full = np.asarray(_np(fwd.raw[w.name]), dtype=np.float64)
        return full[b].reshape(-1)

    def _wsum_edges(self, node: Node, fwd: _Forward, smp: _Sample):
        """The weighted-sum edges of every output point; an EmbeddingBag's depend on the
        sample's tokens (padding entries left out)."""
        rule = node.rule
        if rule.attrs["op"] != "bag":
            return self._wsum_table(node, fwd)
        key = ("bag", id(fwd), smp.b)
        if key not in rule.cache:
            rule.cache.clear()
            a = rule.attrs
            tokens = smp.value[a["tokens"]].astype(np.int64)
            weights = self._bag_weights(rule, fwd, smp.b)
            rule.cache[key] = bag_edges(tokens, weights, a["mode"], a["padding_idx"], a["dim"])
        return rule.cache[key]

    def _wsum_table(self, node: Node, fwd: _Forward):
        rule = node.rule
        op = rule.attrs["op"]
        if op == "table":
            return rule.attrs["table"]
        key = self._key(node, fwd)
        if key in rule.cache:
            return rule.cache[key]
        in_shapes = [self._ps_shape(fwd, i) for i in rule.inputs]
        out_shape = self._ps_shape(fwd, node.name)
        in_shape = in_shapes[0]
        if op in ("conv", "avg", "adaptive_avg", "reduce", "interp"):
            self._need_batch_first(node)
        if op == "conv":
            a = rule.attrs
            table = conv_edges(
                in_shape,
                out_shape,
                self.params[rule.params[0]],
                a["stride"],
                a["padding"],
                a["dilation"],
                a["groups"],
            )
        elif op == "linear":
            w = rule.params[0]
            wmap = (
                fwd.pviews[rule.attrs["w"]]
                if "w" in rule.attrs
                else np.arange(self.params[w].size).reshape(self.params[w].shape)
            )
            table = linear_edges(in_shape, out_shape, wmap, self.params[w].reshape(-1))
        elif op == "xW":
            wmap = fwd.pviews[rule.attrs["w"]]
            if wmap.ndim != 2:
                raise self._unsupported(self._by_name[node.name], "parameter is not a matrix")
            table = linear_edges(
                in_shape, out_shape, wmap.T, self.params[rule.params[0]].reshape(-1)
            )
        elif op == "Wx":
            wmap = fwd.pviews[rule.attrs["w"]]
            if wmap.ndim != 2 or len(in_shape) < 2:
                raise self._unsupported(self._by_name[node.name], "W @ x needs a matrix W")
            table = left_matmul_edges(
                in_shape, out_shape, wmap, self.params[rule.params[0]].reshape(-1)
            )
        elif op == "add":
            maps = self._aligned(node, fwd, rule.inputs)
            table = addsub_edges(maps, rule.attrs["signs"])
        elif op == "avg":
            m = rule.attrs["module"]
            nd = len(in_shape) - 1
            kernel = tuple_of(m.kernel_size, nd)
            stride = tuple_of(m.stride if m.stride else m.kernel_size, nd)
            windows = avgpool_windows(
                in_shape[1:],
                kernel,
                stride,
                tuple_of(m.padding, nd),
                m.count_include_pad,
                getattr(m, "divisor_override", None),
            )
            table = window_edges(in_shape, out_shape, windows)
        elif op == "adaptive_avg":
            table = window_edges(in_shape, out_shape, adaptive_windows(in_shape[1:], out_shape[1:]))
        elif op == "interp":
            a = rule.attrs
            spatial = in_shape[1:]
            sizes, scales = mv.interp_out_sizes(spatial, a["size"], a["scale_factor"])
            if a["recompute"]:
                scales = [None] * len(sizes)
            if tuple(sizes) != tuple(out_shape[1:]):
                raise ReferenceUnsupported(f"reference: {node.name!r}: output size {out_shape}")
            taps = [
                interp_taps(a["mode"], n_in, n_out, a["align_corners"], sc)
                for n_in, n_out, sc in zip(spatial, sizes, scales, strict=True)
            ]
            table = interp_edges(in_shape, out_shape, taps)
        elif op == "reduce":
            ndim = len(in_shape) + 1
            dims = sorted({norm_dim(d, ndim) for d in rule.attrs["dims"]})
            if 0 in dims:
                raise ReferenceUnsupported(f"reference: {node.name!r} reduces over the batch")
            table = reduce_edges(
                in_shape,
                out_shape,
                [d - 1 for d in dims],
                rule.attrs["keepdim"],
                rule.attrs["average"],
            )
        else:
            raise AssertionError(op)
        rule.cache[key] = table
        return table

    def _need_batch_first(self, node: Node) -> None:
        for name in (*node.rule.inputs, node.name):
            if self.bdim[name] != 0:
                raise ReferenceUnsupported(f"reference: {node.name!r}: batch dim must be first")

    def _pairs(self, node: Node, fwd: _Forward):
        """Product / matrix product: per output point, the aligned sources of a and of b."""
        rule = node.rule
        if "pairs" in rule.attrs:
            return rule.attrs["pairs"]
        if "maps" in rule.attrs:
            if "maps" not in rule.cache:
                ma, mb = rule.attrs["maps"]
                rule.cache["maps"] = [(ma[n : n + 1], mb[n : n + 1]) for n in range(len(ma))]
            return rule.cache["maps"]
        key = self._key(node, fwd)
        if key in rule.cache:
            return rule.cache[key]
        if rule.kind == "product":
            ma, mb = self._aligned(node, fwd, rule.inputs)
            pairs = [(ma[n : n + 1], mb[n : n + 1]) for n in range(len(ma))]
        else:
            self._need_batch_first(node)
            a_shape, b_shape = (self._ps_shape(fwd, i) for i in rule.inputs)
            out_shape = self._ps_shape(fwd, node.name)
            if len(a_shape) < 2 or len(a_shape) != len(b_shape):
                raise ReferenceUnsupported(
                    f"reference: {node.name!r}: matrix product of per-sample shapes "
                    f"{a_shape} @ {b_shape} not supported"
                )
            pairs = batched_matmul_pairs(a_shape, b_shape, out_shape)
        rule.cache[key] = pairs
        return pairs

    # --- aligned points and data movement through index arrays ---------------------------------

    def _index_arrays(self, fwd: _Forward, names: list[str]) -> list[np.ndarray]:
        """Per operand, an int array of its full shape labelling every point:
        ``base + sample · n + flat`` (bases keep the operands apart)."""
        arrays, base = [], 0
        for name in names:
            shape, d = fwd.shape(name), self.bdim[name]
            batch = shape[d]
            ps = shape[:d] + shape[d + 1 :]
            n = int(np.prod(ps, dtype=np.int64))
            labels = base + np.arange(batch * n, dtype=np.int64).reshape(batch, *ps)
            arrays.append(np.moveaxis(labels, 0, d))
            base += batch * n
        return arrays

    def _decode(
        self, out_labels: np.ndarray, out_name: str, names: list[str], fwd: _Forward
    ) -> tuple[np.ndarray, np.ndarray]:
        """(slot, flat source) of every per-sample output point from the labels that landed
        there; -1 for constants. Every sample must read its own points only."""
        if tuple(out_labels.shape) != fwd.shape(out_name):
            raise ReferenceUnsupported(
                f"reference: {out_name!r}: mirror gave {out_labels.shape}, "
                f"PyTorch {fwd.shape(out_name)}"
            )
        labels = np.moveaxis(out_labels, self.bdim[out_name], 0)
        batch = labels.shape[0]
        labels = labels.reshape(batch, -1)
        sizes = []
        for name in names:
            shape, d = fwd.shape(name), self.bdim[name]
            sizes.append((shape[d], int(np.prod(shape[:d] + shape[d + 1 :], dtype=np.int64))))
        bases = np.cumsum([0] + [bb * n for bb, n in sizes])
        slot = np.full(labels.shape, -1, dtype=np.int64)
        flat = np.full(labels.shape, -1, dtype=np.int64)
        for b in range(batch):
            for o, code in enumerate(labels[b]):
                if code < 0:
                    continue
                s = int(np.searchsorted(bases, code, side="right") - 1)
                sample, f = divmod(int(code - bases[s]), sizes[s][1])
                if sample != b:
                    raise ReferenceUnsupported(
                        f"reference: {out_name!r} moves points between samples"
                    )
                slot[b, o], flat[b, o] = s, f
        if not (np.all(slot == slot[0]) and np.all(flat == flat[0])):
            raise ReferenceUnsupported(f"reference: {out_name!r} differs between samples")
        return slot[0], flat[0]

    def _aligned(self, node: Node, fwd: _Forward, names: list[str]) -> list[np.ndarray]:
        """Per operand, the flat aligned (broadcast) source of every output point."""
        out_shape = fwd.shape(node.name)
        maps = []
        for name in names:
            (labels,) = self._index_arrays(fwd, [name])
            try:
                labels = np.broadcast_to(labels, out_shape)
            except ValueError as err:
                raise ReferenceUnsupported(f"reference: {node.name!r}: {err}") from err
            maps.append(self._decode(labels, node.name, [name], fwd)[1])
        return maps

    def _mirror_env(self, node: Node, fwd: _Forward, data: dict[str, np.ndarray], index: bool):
        """Resolve the mirror's arguments: input-dependent nodes -> ``data``; constants -> their
        values (in cat/stack lists, in index mode: -1, they are constant points)."""
        rule = node.rule
        fn = rule.attrs["fn"]

        def resolve(a: Any, in_list: bool = False) -> Any:
            if not isinstance(a, fx.Node):
                return a
            if a.name in data:
                return data[a.name]
            v = fwd.raw[a.name]
            if in_list and isinstance(v, torch.Tensor):
                return np.full(tuple(v.shape), -1, dtype=np.int64) if index else _np(v)
            return v

        args = list(rule.attrs["args"])
        if fn in _DATA_LIST_OPS:
            first = args[0] if args else rule.attrs["kwargs"]["tensors"]
            resolved_first = [resolve(a, in_list=True) for a in first]
            args = [resolved_first] + [fx.node.map_aggregate(a, resolve) for a in args[1:]]
        else:
            args = [fx.node.map_aggregate(a, resolve) for a in args]
        kwargs = {k: fx.node.map_aggregate(v, resolve) for k, v in rule.attrs["kwargs"].items()}
        kwargs.pop("tensors", None)
        return args, kwargs

    def _move_map(self, node: Node, fwd: _Forward) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(slot names, slot, flat source) of every per-sample output point of a movement."""
        rule = node.rule
        if rule.attrs["op"] == "map":  # a fixed map (internal movement of a composite layer)
            return rule.attrs["map"]
        if rule.attrs["op"] == "composite":
            exp = self.expansions[rule.attrs["root"]]
            path = rule.attrs["path"]
            if path not in exp.outputs:
                raise ReferenceUnsupported(f"reference: {node.name!r} reads output {path}")
            return exp.outputs[path]
        key = self._key(node, fwd)
        if key in rule.cache:
            return rule.cache[key]
        arrays = self._index_arrays(fwd, rule.inputs)
        args, kwargs = self._mirror_env(
            node, fwd, dict(zip(rule.inputs, arrays, strict=True)), True
        )
        labels = rule.attrs["fn"](*args, **kwargs)
        if rule.attrs["pick"] is not None:
            labels = labels[rule.attrs["pick"]]
        slot, flat = self._decode(np.asarray(labels), node.name, rule.inputs, fwd)
        result = (rule.inputs, slot, flat)
        rule.cache[key] = result
        return result

    # --- scale factors -------------------------------------------------------------------------

    def _scale_map(self, node: Node, fwd: _Forward) -> np.ndarray:
        rule = node.rule
        if rule.kind == "norm" or rule.attrs.get("op") == "bn" or node.op == "internal":
            return np.arange(int(np.prod(self._ps_shape(fwd, node.name))))
        key = self._key(node, fwd)
        if ("map",) + key not in rule.cache:
            rule.cache[("map",) + key] = self._aligned(node, fwd, rule.inputs)[0]
        return rule.cache[("map",) + key]

    def _scale_factor(self, node: Node, fwd: _Forward, b: int) -> np.ndarray:
        """The factor ``a`` (scale rules) or ``γ`` (normalization) of every output point."""
        rule = node.rule
        out_ps = self._ps_shape(fwd, node.name)
        if rule.kind == "norm":
            w = self._norm_param(rule, fwd, "weight")
            if w is None:
                return np.ones(int(np.prod(out_ps)))
            if rule.attrs["op"] in ("group", "instance"):
                self._need_batch_first(node)
                w = np.reshape(w, (-1,) + (1,) * (len(out_ps) - 1))
            return np.broadcast_to(w, out_ps).reshape(-1)
        if rule.attrs["op"] == "bn":
            a = np.asarray(rule.attrs["a"]).reshape((-1,) + (1,) * (len(out_ps) - 1))
            return np.broadcast_to(a, out_ps).reshape(-1)
        if "factor" not in rule.attrs:  # a known constant: -1, 1/√d, b_hn …
            return np.broadcast_to(np.asarray(rule.attrs["a"], dtype=np.float64), out_ps).reshape(
                -1
            )
        c, how = rule.attrs["factor"]
        c = _np(fwd.raw[c.name]) if isinstance(c, fx.Node) else float(c)
        a = np.asarray(c, dtype=np.float64)
        if how == "div":
            a = 1.0 / a
        full = np.broadcast_to(a, fwd.shape(node.name))
        return np.take(full, b, axis=self.bdim[node.name]).reshape(-1)

    def _norm_param(self, rule: Rule, fwd: _Forward, which: str) -> np.ndarray | None:
        pname = rule.attrs.get(f"{which}_param")
        if pname is not None:
            return self.params[pname]
        a = rule.attrs.get(which)
        if isinstance(a, fx.Node):
            return _np(fwd.raw[a.name])
        return None

    def _embed_synapses(self, node: Node, fwd: _Forward, smp: _Sample) -> np.ndarray:
        """Per output point (…, d): the flat index of ``weight[token, d]``."""
        rule = node.rule
        tokens = smp.value[rule.inputs[0]]
        if "w" in rule.attrs:
            wmap = fwd.pviews[rule.attrs["w"]]
        else:
            p = self.params[rule.params[0]]
            wmap = np.arange(p.size).reshape(p.shape)
        tok = tokens.astype(np.int64)
        assert np.array_equal(tok, tokens), "embedding indices must be integers"
        return np.concatenate([wmap[t] for t in tok])  # per-sample output (*tokens, D)

    # --- self-check of the rules against the forward pass --------------------------------------

    def _check_node(self, node: Node, fwd: _Forward, smp: _Sample) -> None:
        rule, name = node.rule, node.name
        y, dy = smp.value[name], smp.delta[name]
        kind = rule.kind
        if rule.attrs.get("op") == "bag":
            a = rule.attrs
            lookup = smp.value[rule.inputs[0]].reshape(-1, a["dim"])
            tokens = smp.value[a["tokens"]].astype(np.int64)
            w = self._bag_weights(rule, fwd, smp.b)
            want = bag_forward(lookup, tokens, w, a["mode"], a["padding_idx"])
            assert np.allclose(y, want, rtol=1e-9, atol=1e-12), (name, y, want)
            if a["padding_idx"] is not None:
                return  # which entries are summed differs per sample: Σ t is not Δy
        if kind == "wsum":
            for n, e in enumerate(self._wsum_edges(node, fwd, smp)):
                dx = np.asarray(
                    [smp.delta[rule.inputs[s]][i] for s, i in zip(e.slot, e.src, strict=True)]
                )
                terms = e.coef * dx / e.div
                total = math.fsum(terms.tolist())
                scale = math.fsum(np.abs(terms).tolist()) + abs(y[n]) + abs(y[n] - dy[n])
                assert abs(total - dy[n]) <= 1e-9 * scale + 1e-300, (name, n, total, dy[n])
        elif kind in ("product", "matmul"):
            a, b = rule.inputs
            for n, (src_a, src_b) in enumerate(self._pairs(node, fwd)):
                va, vb = smp.value[a][src_a], smp.value[b][src_b]
                ra, rb = smp.ref[a][src_a], smp.ref[b][src_b]
                prod = math.fsum((va * vb).tolist())
                t_a, t_b = self._product_terms(a, b, src_a, src_b, smp)
                total = math.fsum(t_a.tolist() + t_b.tolist())
                scale = math.fsum(np.abs(va * vb).tolist() + np.abs(ra * rb).tolist()) + 1e-300
                assert abs(prod - y[n]) <= 1e-9 * scale, (name, n, prod, y[n])
                want = prod - math.fsum((ra * rb).tolist())  # Σ t = a·b − ā·b̄
                assert abs(total - want) <= 1e-9 * scale, (name, n, total, want)
        elif kind == "maxsel":
            x = smp.value[rule.inputs[0]]
            src = fwd.maxsel[name][smp.b]
            assert np.array_equal(y, np.where(src >= 0, x[src], 0.0)), name
        elif kind == "move":
            self._check_move(node, fwd, smp)
        elif kind == "scale":
            src = self._scale_map(node, fwd)
            a = self._scale_factor(node, fwd, smp.b)
            dx = smp.delta[rule.inputs[0]][src]
            assert np.allclose(dy, a * dx, rtol=1e-9, atol=1e-9), name
        elif kind == "norm":
            assert np.allclose(y, self._norm_forward(node, fwd, smp), rtol=1e-9, atol=1e-9), name
        elif kind == "softmax":
            x = smp.value[rule.inputs[0]].reshape(self._ps_shape(fwd, name))
            want = softmax_np(x, self._softmax_dim(node), rule.attrs["log"]).reshape(-1)
            assert np.allclose(y, want, rtol=1e-9, atol=1e-12), name
        elif kind == "act":
            # the parameters the rule reads (bounds, λ, slope, exponent) give the recorded values
            x = smp.value[rule.inputs[0]]
            want = np.asarray(
                [_act_forward(self._act_attrs(node, fwd, i), v) for i, v in enumerate(x)]
            )
            ok = np.isnan(want) | np.isclose(y, want, rtol=1e-9, atol=1e-12)
            assert ok.all(), (name, rule.attrs)
        elif kind == "embed":
            p = self.params[rule.params[0]].reshape(-1)
            assert np.array_equal(y, p[self._embed_synapses(node, fwd, smp)]), name

    def _check_move(self, node: Node, fwd: _Forward, smp: _Sample) -> None:
        rule, name = node.rule, node.name
        slots, slot, flat = self._move_map(node, fwd)
        real = flat >= 0
        src_vals = np.asarray(
            [smp.value[slots[s]][i] for s, i in zip(slot[real], flat[real], strict=True)]
        )
        src_delta = np.asarray(
            [smp.delta[slots[s]][i] for s, i in zip(slot[real], flat[real], strict=True)]
        )
        y, dy = smp.value[name][real], smp.delta[name][real]
        how = rule.attrs.get("check", "composite" if rule.attrs["op"] == "composite" else "exact")
        if how == "mask":  # + an attention mask: checked through the layer's output
            return
        if how == "none":  # softmax on the output
            return
        if how == "delta":  # + constant (where the constant is ±∞, e.g. a mask, Δy = 0)
            finite = np.isfinite(y)
            assert np.allclose(dy[finite], src_delta[finite], rtol=1e-9, atol=1e-9), name
        elif how == "composite":  # torch's fused layer vs the reference's own float64 unrolling
            assert np.allclose(y, src_vals, rtol=1e-9, atol=1e-9), (
                name,
                np.abs(y - src_vals).max(),
            )
        else:
            assert np.array_equal(y, src_vals), name
        if rule.attrs["op"] == "mirror" and how == "exact" and not real.all():
            # constant points hold the padding value / constant operand as recorded
            data = {i: fwd.values[i] for i in rule.inputs}
            args, kwargs = self._mirror_env(node, fwd, data, False)
            want = rule.attrs["fn"](*args, **kwargs)
            if rule.attrs["pick"] is not None:
                want = want[rule.attrs["pick"]]
            want = np.take(np.asarray(want), smp.b, axis=self.bdim[name]).reshape(-1)
            assert np.array_equal(smp.value[name], want), name

    def _softmax_dim(self, node: Node) -> int:
        rule = node.rule
        if "dim" in rule.attrs:
            return rule.attrs["dim"]
        full_ndim = len(self._sums[node.name].shape) + 1
        d, bd = norm_dim(rule.attrs["full_dim"], full_ndim), self.bdim[node.name]
        if d == bd:
            raise ReferenceUnsupported(f"reference: {node.name!r}: softmax over the batch")
        return d - (d > bd)

    def _norm_forward(self, node: Node, fwd: _Forward, smp: _Sample) -> np.ndarray:
        rule = node.rule
        a = rule.attrs
        x = smp.value[rule.inputs[0]].reshape(self._ps_shape(fwd, node.name))
        w, bias = self._norm_param(rule, fwd, "weight"), self._norm_param(rule, fwd, "bias")
        if a["op"] == "layer":
            y = layer_norm_np(x, a["shape"], w, bias, a["eps"])
        elif a["op"] == "rms":
            eps = a["eps"] if a["eps"] is not None else float(np.finfo(np.float64).eps)
            y = rms_norm_np(x, a["shape"], w, eps)
        elif a["op"] == "group":
            y = group_norm_np(x, a["groups"], w, bias, a["eps"])
        else:
            rm, rv = a["running_mean"], a["running_var"]
            rm = _np(fwd.raw[rm.name]) if isinstance(rm, fx.Node) else _np(rm)
            rv = _np(fwd.raw[rv.name]) if isinstance(rv, fx.Node) else _np(rv)
            y = instance_norm_np(x, rm, rv, w, bias, a["use_input_stats"], a["eps"])
        return y.reshape(-1)


def _delta(value: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Δ = value − reference, 0 where the two are equal, also where both are −∞ (a score an
    attention mask removes in every sample; docs/spec.md §8 "Δ of masked points")."""
    with np.errstate(invalid="ignore"):
        d = value - ref
    return np.where(value == ref, 0.0, d)


@dataclass
class _Sample:
    """Per-sample flat values, reference values and Δ of every point node."""

    b: int
    value: dict[str, np.ndarray]
    ref: dict[str, np.ndarray]
    delta: dict[str, np.ndarray]
