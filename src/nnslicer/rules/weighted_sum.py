"""Weighted-sum rules: conv, linear, ``x @ W``, the gate sums of recurrent layers,
tensor ± tensor, average pooling, mean and sum over dims (docs/spec.md §4).

Every output point n has terms t_i (its edges' shares of Δy); the policy keeps edges and signs
(θ-selection for NNSlicer). Terms are built only for points with C != 0, in bounded chunks.
Average pools and means use t = Δx: the divisor is one positive number per output point, and
neither the θ rule nor the signs change when all terms of a point are scaled by it.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backward import kernels
from ..trace.composite.block_linear import block_linear
from .base import (
    TERM_BUDGET,
    Rule,
    live_point_chunks,
    parameter_view,
    pool_dims,
    sum_to_shape,
    unsupported,
)
from .ruleset import Entry, Where, live_operands, ops

if TYPE_CHECKING:
    from ..backward.step import Step, SynapseTarget
    from ..trace.graph import OperatorGraph, OpNode


def _pair(v: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple | list) else (v,) * n


def _weight_name(node: OpNode) -> str:
    """Name of the weight parameter of a conv/linear node (module or functional form; for a
    functional linear, the parameter behind a view of it)."""
    if node.module is not None:
        return f"{node.module_path}.weight"
    return parameter_view(_weight_arg(node))[0].target


def _weight_arg(node: OpNode) -> object:
    args = node.fx_node.args
    return args[1] if len(args) > 1 else node.fx_node.kwargs.get("weight")


def _check_weight_is_parameter(node: OpNode, graph: OperatorGraph, views: bool = False) -> None:
    """A functional conv/linear's weight must be a parameter (or, with ``views``, a parameter
    seen through a transpose, slice or reshape)."""
    if node.module is not None:
        return
    w = _weight_arg(node)
    if node.is_live_arg(w):
        raise unsupported(node, "its weight depends on the input")
    chain = parameter_view(w) if views else ([w] if graph.parameter_of(w) else None)
    if not chain or graph.parameter_of(chain[0]) is None:
        raise unsupported(node, "its weight is not a parameter of the model")


class ConvRule(Rule):
    """Conv1d/Conv2d with any stride, padding, dilation and groups; t = w · Δx."""

    family = "weighted_sum"
    channels = "produces"

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if node.module is not None and node.module.padding_mode != "zeros":
            raise unsupported(node, f"padding_mode={node.module.padding_mode!r} (only 'zeros')")
        _check_weight_is_parameter(node, graph)

    def synapse_names(self, node: OpNode) -> list[str]:
        return [_weight_name(node)]

    def _config(self, step: Step) -> tuple[Tensor, tuple, tuple, object, int]:
        m = step.module
        if m is not None:
            return m.weight, m.stride, m.dilation, m.padding, m.groups
        weight = step.value(step.arg(1, "weight"))
        return (
            weight,
            step.arg(3, "stride", 1),
            step.arg(5, "dilation", 1),
            step.arg(4, "padding", 0),
            step.arg(6, "groups", 1),
        )

    def backward(self, step: Step) -> None:
        weight, stride, dilation, padding, groups = self._config(step)
        weight_shape = weight.shape
        x_arg = step.arg(0, "input")
        dx = step.delta(x_arg)
        c_out = step.c_out
        y_raw = step.value_out
        one_d = dx.dim() == 3
        if one_d:  # Conv1d is a Conv2d over a height of 1
            dx, c_out, y_raw = dx.unsqueeze(2), c_out.unsqueeze(2), y_raw.unsqueeze(2)
            weight = weight.unsqueeze(2)
        kh, kw = weight.shape[-2:]
        stride2 = (1, *_pair(stride, 1)) if one_d else _pair(stride, 2)
        dil2 = (1, *_pair(dilation, 1)) if one_d else _pair(dilation, 2)
        pads = explicit_padding(padding, (kh, kw), dil2, 1 if one_d else 2)
        xp = F.pad(dx, pads).contiguous()
        B, C, Hp, Wp = xp.shape
        O, K = weight.shape[0], weight[0].numel()
        Lh, Lw = c_out.shape[-2:]
        (sh, sw), (dh, dw) = stride2, dil2
        rowbase, koff = (torch.from_numpy(a).to(xp.device) for a in window_offsets(
            B * groups, C // groups, Hp, Wp, kh, kw, *stride2, *dil2, Lh, Lw))
        L = Lh * Lw
        overlapping = (kh - 1) * dh >= sh or (kw - 1) * dw >= sw
        syn = step.synapse_target(_weight_name(step.node), weight_shape)
        signs = weighted_sum_windows(
            step, xp.view(-1), rowbase, koff, weight.detach().reshape(O, K),
            c_out.reshape(B, O, L).transpose(1, 2), y_raw.reshape(B, O, L).transpose(1, 2),
            groups, syn, lambda b, q, o: (b * O + o) * L + q, overlapping,
        )
        pl, pr, pt, pb = pads
        contrib = signs.view(B, C, Hp, Wp)[:, :, pt : Hp - pb, pl : Wp - pr]
        if one_d:
            contrib = contrib.squeeze(2)
        step.send(x_arg, contrib)


def window_offsets(rows: int, Cg: int, Hp: int, Wp: int, kh: int, kw: int, sh: int, sw: int,
                   dh: int, dw: int, Lh: int, Lw: int) -> tuple[np.ndarray, np.ndarray]:
    """(rowbase, koff) of a conv's windows over its padded input (``rows`` = samples ×
    groups, each Cg × Hp × Wp; output Lh × Lw): window r = (b·G + g)·L + q reads entries
    rowbase[r] + koff[k], k = (c, i, j) as in weight[o]. Cached while small (the same node
    asks again every slice; building them took ~35 torch calls). Callers must not write them."""
    key = (rows, Cg, Hp, Wp, kh, kw, sh, sw, dh, dw, Lh, Lw)
    if rows * Lh * Lw <= _OFFSETS_CACHED_MAX:
        return _cached_window_offsets(*key)
    return _window_offsets(*key)


#: Windows (samples × groups × output positions) up to which window_offsets are cached.
_OFFSETS_CACHED_MAX = 1 << 18


def _window_offsets(rows: int, Cg: int, Hp: int, Wp: int, kh: int, kw: int, sh: int, sw: int,
                    dh: int, dw: int, Lh: int, Lw: int) -> tuple[np.ndarray, np.ndarray]:
    plane = Hp * Wp
    koff = (np.arange(Cg)[:, None, None] * plane + np.arange(kh)[None, :, None] * (dh * Wp)
            + np.arange(kw)[None, None, :] * dw).reshape(-1)
    corner = (np.arange(Lh)[:, None] * (sh * Wp) + np.arange(Lw)[None, :] * sw).reshape(-1)
    rowbase = (np.arange(rows)[:, None] * (Cg * plane) + corner[None, :]).reshape(-1)
    return rowbase.astype(np.int64), koff.astype(np.int64)


_cached_window_offsets = functools.lru_cache(maxsize=64)(_window_offsets)


#: flat index of the output point (b, q, o) in the node's value, from the (B, Q, O) view
OutputIndex = Callable[[Tensor, Tensor, Tensor], Tensor]


def weighted_sum_windows(step: Step, src: Tensor, rowbase: Tensor, koff: Tensor,
                         weight: Tensor, c: Tensor, y_raw: Tensor, groups: int,
                         syn: SynapseTarget | None, out_index: OutputIndex,
                         overlapping: bool) -> Tensor:
    """Shared core of conv and linear: output point (b, q, o) has terms W[o, k] · src[i_k],
    i_k = rowbase[r] + koff[k], r = (b·G + g)·Q + q, g = o // (O / G).

    ``src`` is the flat float64 Δ of the input (padded for a conv); ``c`` and ``y_raw`` are
    (B, Q, O). Returns the signs added to every entry of ``src`` (int64, same shape) and adds
    the synapse signs to ``syn`` (None: an edge without synapses). ``overlapping``: rows may
    share entries.
    """
    B, Q, O = c.shape
    K = koff.shape[0]
    if syn is None:
        syn = step.synapse_scratch([], O, K)
    mode = getattr(step.policy, "kernel_mode", None)
    if kernels.ENABLED and mode is not None and src.device.type == "cpu":
        return _windows_on_cpu(step, src, rowbase, koff, weight, c, y_raw, groups, syn,
                               out_index, overlapping, mode)
    nz = c.nonzero()  # sorted by (b, q): points sharing input rows are adjacent
    b, q, o = nz.unbind(1)
    xrow = (b * groups + o // (O // groups)) * Q + q
    c_sign = c[b, q, o].sign()
    y = y_raw[b, q, o].to(torch.float64)
    buffer, synrow = syn.buffer, syn.rows(o, lambda: out_index(b, q, o))
    w = weight.to(torch.float64)
    out = torch.zeros_like(src)
    chunk = max(1, TERM_BUDGET // max(K, 1))
    for s in range(0, nz.shape[0], chunk):
        part = slice(s, s + chunk)
        entries = rowbase[xrow[part]][:, None] + koff[None, :]
        terms = w[o[part]] * src[entries]
        signs = step.policy.weighted_sum(terms, c_sign[part], y[part])
        buffer.index_add_(0, synrow[part], signs)
        out.index_add_(0, entries.reshape(-1), signs.reshape(-1).to(torch.float64))
    return out.to(torch.int64)  # sums of whole numbers, exact in float64


def _windows_on_cpu(step: Step, src: Tensor, rowbase: Tensor, koff: Tensor, weight: Tensor,
                    c: Tensor, y_raw: Tensor, groups: int, syn: SynapseTarget,
                    out_index: OutputIndex, overlapping: bool, mode: int) -> Tensor:
    """weighted_sum_windows through the numba kernels: the live points are listed in one
    pass too (torch took ~10 calls of ~5 µs dispatch each for them)."""
    Q = c.shape[1]
    y = y_raw.detach()
    if y.dtype not in (torch.float32, torch.float64):
        y = y.to(torch.float64)
    # a conv passes (B, O, L) transposed to (B, Q, O): read in its own layout
    transposed = not c.is_contiguous() and c.transpose(1, 2).is_contiguous()
    if transposed:
        c, y = c.transpose(1, 2), y.transpose(1, 2)
    xrow, o, c_sign, y, group = kernels.live_points(c.numpy(), y.numpy(), groups, transposed)
    synrow = o
    if syn.sample_of is not None:
        b, q = group // Q, group % Q
        synrow = syn.rows(torch.from_numpy(o), lambda: torch.from_numpy(out_index(b, q, o)))
        synrow = np.ascontiguousarray(synrow.numpy())
    out = kernels.weighted_windows(  # the kernel widens w to float64 itself
        src.numpy(), rowbase.numpy(), koff.numpy(), weight.detach().contiguous().numpy(),
        xrow, o, c_sign, y, synrow, group, syn.buffer.numpy(), mode, step.policy.theta,
        overlapping,
    )  # adds to the synapse buffer in place
    return torch.from_numpy(out)


def _linear_core(step: Step, x_arg: object, weight: Tensor, syn: SynapseTarget | None,
                 dx: Tensor | None = None) -> Tensor:
    """Signs sent to the input of ``y = x @ weight.T`` on the last dim (any leading dims)."""
    O, K = weight.shape
    dx = (step.delta(x_arg) if dx is None else dx).contiguous()
    R = dx.numel() // K
    rowbase, koff = row_offsets(R, K, dx.device)
    signs = weighted_sum_windows(
        step, dx.view(-1), rowbase, koff, weight.detach(), step.c_out.reshape(1, R, O),
        step.value_out.reshape(1, R, O), 1, syn, lambda b, q, o: q * O + o, False,
    )
    return signs.view(dx.shape)


def row_offsets(rows: int, K: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(rowbase, koff) of ``rows`` contiguous rows of K entries (a linear layer's inputs), as
    int64 tensors on ``device``; cached while small like ``window_offsets``. Callers must not
    write them."""
    make = _cached_row_offsets if rows <= _OFFSETS_CACHED_MAX else _make_row_offsets
    return tuple(torch.from_numpy(a).to(device) for a in make(rows, K))


def _make_row_offsets(rows: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(rows, dtype=np.int64) * K, np.arange(K, dtype=np.int64)


_cached_row_offsets = functools.lru_cache(maxsize=64)(_make_row_offsets)


def explicit_padding(
    padding: object, kernel: tuple[int, int], dilation: tuple, n: int
) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding for F.pad from a conv's padding argument."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        sizes = []
        for k, d in zip(kernel, dilation, strict=True):
            total = d * (k - 1)
            sizes.append((total // 2, total - total // 2))
        (pt, pb), (pl, pr) = sizes
        return (pl, pr, pt, pb)
    if n == 1:
        (p,) = _pair(padding, 1)
        return (p, p, 0, 0)
    ph, pw = _pair(padding, 2)
    return (pw, pw, ph, ph)


class LinearRule(Rule):
    """Linear / F.linear with a parameter weight, on the last dimension; t = w · Δx."""

    family = "weighted_sum"
    channels = "produces"

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        _check_weight_is_parameter(node, graph, views=True)

    def synapse_names(self, node: OpNode) -> list[str]:
        return [_weight_name(node)]

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        if step.module is not None:
            weight, chain = step.module.weight, None
        else:
            weight, chain = step.value(step.arg(1, "weight")), parameter_view(
                _weight_arg(step.node))
        if chain is None or len(chain) == 1:  # the parameter itself
            syn = step.synapse_target(_weight_name(step.node), weight.shape)
            step.send(x_arg, _linear_core(step, x_arg, weight, syn))
            return
        scratch = step.synapse_scratch([chain[0].target], *weight.shape)
        signs = _linear_core(step, x_arg, weight, scratch)
        step.add_view_synapses(chain, scratch.buffer.view(-1, *weight.shape))
        step.send(x_arg, signs)


class ConstantMatmulRule(Rule):
    """``x @ W`` or ``W @ x`` with a 2-D W that does not depend on the input: a weighted sum,
    t = w · Δx. When W is a parameter, or a parameter seen through a transpose, a slice or a
    reshape (``x @ self.W.t()``), its elements are the synapses."""

    family = "weighted_sum"

    @staticmethod
    def _sides(node: OpNode) -> tuple[object, object, bool]:
        """(input-dependent operand, constant operand, whether the input comes first)."""
        a, b = node.operands[:2]
        return (a, b, True) if node.is_live_arg(a) else (b, a, False)

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if not isinstance(self._sides(node)[1], torch.fx.Node):
            raise unsupported(node, "a matrix product needs two tensors")

    def synapse_names(self, node: OpNode) -> list[str]:
        chain = parameter_view(self._sides(node)[1])
        return [chain[0].target] if chain else []

    def backward(self, step: Step) -> None:
        x, w_arg, x_first = self._sides(step.node)
        w = step.value(w_arg).detach()
        if w.dim() != 2:
            raise unsupported(step.node, f"a matrix product with a {w.dim()}-D constant; only "
                              "2-D weights are a weighted sum per output point")
        chain = parameter_view(w_arg)
        names = [chain[0].target] if chain else []
        if x_first:  # y[..., o] = sum_k x[..., k] W[k, o]: a Linear with weight W.T
            scratch = step.synapse_scratch(names, w.shape[1], w.shape[0])
            signs = _linear_core(step, x, w.t(), scratch)
            counts = scratch.buffer.view(-1, w.shape[1], w.shape[0]).transpose(1, 2)
        else:  # y[..., i, j] = sum_k W[i, k] x[..., k, j]: the same on x and y transposed
            scratch = step.synapse_scratch(names, w.shape[0], w.shape[1])
            signs = _linear_core(step.transposed(), x, w, scratch,
                                 dx=step.delta(x).transpose(-1, -2)).transpose(-1, -2)
            counts = scratch.buffer.view(-1, *w.shape)
        if chain:  # counts on W's elements, back onto the parameter behind it
            step.add_view_synapses(chain, counts)
        step.send(x, signs)


class BlockLinearRule(Rule):
    """The gate sums of unrolled recurrent layers and the q/k/v projections of attention
    (``trace.composite.block_linear``): one weighted sum over the features of several inputs,
    each with rows ``rows`` of its own weight; t = w · Δx for every input's features."""

    family = "weighted_sum"
    channels = "produces"

    @staticmethod
    def _parts(node: OpNode) -> tuple[list[object], list[object], tuple[int, int] | None]:
        args, kwargs = node.fx_node.args, node.fx_node.kwargs
        rows = args[3] if len(args) > 3 else kwargs.get("rows")
        return list(args[0]), list(args[1]), rows

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        inputs, weights, _ = self._parts(node)
        if len(inputs) != len(weights):
            raise unsupported(node, "block_linear needs one weight per input")
        for w in weights:
            if graph.parameter_of(w) is None or node.is_live_arg(w):
                raise unsupported(node, "block_linear's weights must be parameters")

    def synapse_names(self, node: OpNode) -> list[str]:
        return [w.target for w in self._parts(node)[1]]

    def backward(self, step: Step) -> None:
        inputs, weight_args, rows = self._parts(step.node)
        weights = [step.value(w).detach() for w in weight_args]
        lo, hi = rows if rows is not None else (0, weights[0].shape[0])
        blocks = [w[lo:hi] for w in weights]
        widths = [w.shape[1] for w in blocks]
        lead = step.c_out.shape[:-1]
        dx = torch.cat([step.delta(a).expand(*lead, k)
                        for a, k in zip(inputs, widths, strict=True)], -1)
        names = self.synapse_names(step.node)
        scratch = step.synapse_scratch(names, hi - lo, sum(widths))
        signs = _linear_core(step, None, torch.cat(blocks, 1), scratch, dx=dx)
        counts = scratch.buffer.split(widths, dim=-1)
        for name, w, part in zip(names, weights, counts, strict=True):
            step.add_synapses([name], w.shape, part, rows=(lo, hi))
        for a, part in zip(inputs, signs.split(widths, dim=-1), strict=True):
            step.send(a, sum_to_shape(part, step.value(a).shape))


class AddSubRule(Rule):
    """tensor ± tensor (broadcasting, in-place too): t = ±Δx of the aligned points.

    With one live operand and a constant it is data movement (x + c, x − c) or a scale by −1
    (c − x): the constant has Δ = 0 and would otherwise leave a single-term weighted sum.
    """

    family = "weighted_sum"
    channels = "joins"

    def __init__(self, subtract: bool, reversed_operands: bool = False):
        self.subtract = subtract
        self.reversed_operands = reversed_operands  # torch.rsub(x, c) = c - x

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        args = node.fx_node.args
        if len(args) + ("other" in node.fx_node.kwargs) < 2:
            raise unsupported(node, "expected two operands")

    def backward(self, step: Step) -> None:
        a, b = step.arg(0), step.arg(1, "other")
        if self.reversed_operands:
            a, b = b, a
        alpha = step.kwargs.get("alpha", 1)
        sign_b = -alpha if self.subtract else alpha
        c = step.c_out
        if not (step.is_live(a) and step.is_live(b)):
            self._with_constant(step, a, b, sign_b)
            return
        db = step.delta(b).expand(c.shape)
        signs = step.policy.two_terms(c, step.delta(a).expand(c.shape),
                                      db if sign_b == 1 else db * sign_b, step.value_out)
        for operand, part in zip((a, b), signs, strict=True):
            step.send(operand, sum_to_shape(part, step.value(operand).shape))

    def _with_constant(self, step: Step, a: object, b: object, sign_b: float) -> None:
        c_sign = step.c_out.sign()
        if step.is_live(a) or sign_b > 0:
            live = a if step.is_live(a) else b
            signs = step.policy.movement(c_sign)
        else:  # constant − x: a scale by a negative factor
            live = b
            gain = torch.tensor(float(sign_b), dtype=torch.float64)
            dx = step.delta(b).expand(c_sign.shape)
            signs = step.policy.pointwise(c_sign, step.delta_out, gain, dx)
        step.send(live, sum_to_shape(signs, step.value(live).shape))


def _window_backward(step: Step, x_arg: object, table: Tensor, plane: int,
                     coefficients: Tensor | None = None) -> None:
    """Weighted sum over windows given by ``table`` (L_out, K) of flat positions in each plane,
    t = coefficient · Δx (coefficient 1 when none are given).

    The input is seen as (rows, plane) — every leading dim (samples, channels) a row of its
    own; entries equal to ``plane`` in the table are padding.
    """
    dx = step.delta(x_arg)
    x2 = dx.reshape(-1, plane)
    R = x2.shape[0]
    x2 = torch.cat([x2, x2.new_zeros(R, 1)], dim=1)
    L, K = table.shape
    c3 = step.c_out.reshape(R, 1, L)
    y3 = step.value_out.reshape(R, 1, L)
    in_contrib = torch.zeros(R, plane + 1, dtype=torch.float64, device=dx.device)
    for r, _, pos, c_sign in live_point_chunks(c3, K):
        rows = r[:, None].expand(-1, K)
        cols = table[pos]
        terms = x2[rows, cols]
        if coefficients is not None:
            terms = terms * coefficients[pos]
        signs = step.policy.weighted_sum(terms, c_sign, y3[r, 0, pos].to(torch.float64))
        in_contrib.index_put_((rows, cols), signs.to(torch.float64), accumulate=True)
    step.send(x_arg, in_contrib[:, :plane].reshape(dx.shape).to(torch.int64))


def _sliding_table(spatial: tuple[int, ...], out: tuple[int, ...], kernel: tuple, stride: tuple,
                   padding: tuple, device: torch.device) -> Tensor:
    """Window table of a (1-D or 2-D) sliding pool, padding points mapped to the sentinel."""
    H, W = (1, *spatial) if len(spatial) == 1 else spatial
    Ho, Wo = (1, *out) if len(out) == 1 else out
    kh, kw = (1, kernel[0]) if len(kernel) == 1 else kernel
    sh, sw = (1, stride[0]) if len(stride) == 1 else stride
    ph, pw = (0, padding[0]) if len(padding) == 1 else padding
    P = H * W
    ids = torch.arange(1, P + 1, dtype=torch.float64, device=device).view(1, 1, H, W)
    # extra right/bottom zeros give the windows that ceil_mode adds; the crop keeps Ho × Wo
    ids = F.pad(ids, (pw, pw + sw, ph, ph + sh))
    cols = F.unfold(ids, (kh, kw), stride=(sh, sw))
    n_w = (ids.shape[-1] - kw) // sw + 1
    cols = cols.view(kh * kw, -1, n_w)[:, :Ho, :Wo].reshape(kh * kw, Ho * Wo)
    table = cols.t().long() - 1
    table[table < 0] = P
    return table


class AvgPoolRule(Rule):
    """AvgPool1d/2d (module or functional): the pooled window, t = Δx / divisor."""

    family = "weighted_sum"
    channels = "passes"

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        m = step.module
        x = step.value(x_arg)
        n = pool_dims(step)
        spatial = tuple(x.shape[-n:])
        if m is not None:
            kernel, stride, padding = m.kernel_size, m.stride, m.padding
        else:
            kernel = step.arg(1, "kernel_size")
            stride = step.arg(2, "stride", None)
            padding = step.arg(3, "padding", 0)
        kernel = _pair(kernel, n)
        stride = _pair(stride, n) if stride not in (None, [], ()) else kernel
        padding = _pair(padding, n)
        out = tuple(step.value_out.shape[-n:])
        if not _uniform_windows(step, x_arg, spatial, out, kernel, stride, padding):
            table = _sliding_table(spatial, out, kernel, stride, padding, x.device)
            _window_backward(step, x_arg, table, math.prod(spatial))


def _uniform_windows(step: Step, x_arg: object, spatial: tuple[int, ...], out: tuple[int, ...],
                     kernel: tuple, stride: tuple, padding: tuple) -> bool:
    """A pool whose windows all have one shape (sliding, or adaptive with sizes that divide)
    as a conv of weight 1 over each plane, through the numba kernel: t = 1 · Δx, in the same
    (row-major) window order as its table. Padding is zeros on the top/left and, for the
    windows ceil_mode adds, one stride more on the bottom/right (as ``_sliding_table``); zero
    terms are never kept. False (nothing sent) where the kernel does not run."""
    mode = getattr(step.policy, "kernel_mode", None)
    dx = step.delta(x_arg)
    if not (kernels.ENABLED and mode is not None and dx.device.type == "cpu"):
        return False
    one_d = len(spatial) == 1
    (H, W), (Ho, Wo) = ((1, *spatial), (1, *out)) if one_d else (spatial, out)
    (kh, kw), (sh, sw) = ((1, *a) if one_d else a for a in (kernel, stride))
    ph, pw = (0, *padding) if one_d else padding
    rows = dx.numel() // (H * W)
    pads = (pw, pw + sw, ph, ph + sh)
    xp = F.pad(dx.reshape(rows, 1, H, W), pads).contiguous()
    Hp, Wp = xp.shape[-2:]
    rowbase, koff = (torch.from_numpy(a) for a in window_offsets(rows, 1, Hp, Wp, kh, kw, sh, sw,
                                                                  1, 1, Ho, Wo))
    L = Ho * Wo
    signs = _windows_on_cpu(
        step, xp.view(-1), rowbase, koff, torch.ones(1, kh * kw, dtype=torch.float64),
        step.c_out.reshape(rows, L, 1), step.value_out.reshape(rows, L, 1), 1,
        step.synapse_scratch([], 1, kh * kw), lambda b, q, o: b * L + q,
        (kh - 1) >= sh or (kw - 1) >= sw, mode)
    contrib = signs.view(rows, Hp, Wp)[:, ph : Hp - ph - sh, pw : Wp - pw - sw]
    step.send(x_arg, contrib.reshape(dx.shape))
    return True


def _adaptive_windows(size_in: int, size_out: int) -> list[range]:
    return [
        range((i * size_in) // size_out, math.ceil((i + 1) * size_in / size_out))
        for i in range(size_out)
    ]


class AdaptiveAvgPoolRule(Rule):
    """AdaptiveAvgPool1d/2d: PyTorch's adaptive windows, t = Δx / window size."""

    family = "weighted_sum"
    channels = "passes"

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        x = step.value(x_arg)
        n = pool_dims(step)
        spatial = tuple(x.shape[-n:])
        out = tuple(step.value_out.shape[-n:])
        if all(i % o == 0 for i, o in zip(spatial, out, strict=True)):  # windows of one shape
            kernel = tuple(i // o for i, o in zip(spatial, out, strict=True))
            if _uniform_windows(step, x_arg, spatial, out, kernel, kernel, (0,) * n):
                return
        per_dim = [_adaptive_windows(i, o) for i, o in zip(spatial, out, strict=True)]
        P = math.prod(spatial)
        strides = [math.prod(spatial[d + 1 :]) for d in range(len(spatial))]
        windows: list[list[int]] = [[0]]
        for d, dim_windows in enumerate(per_dim):
            windows = [
                [base + k * strides[d] for base in prev for k in win]
                for prev in windows
                for win in dim_windows
            ]
        K = max(len(w) for w in windows)
        table = torch.full((len(windows), K), P, dtype=torch.long)
        for i, w in enumerate(windows):
            table[i, : len(w)] = torch.tensor(w)
        _window_backward(step, x_arg, table.to(x.device), P)


class InterpolationRule(Rule):
    """``F.interpolate`` / ``nn.Upsample`` with a linear mode (linear, bilinear, bicubic,
    area): each output point is a fixed weighted sum of input points of its plane, t = c·Δx
    with the operator's own coefficients c (an nnslicer extension of docs/spec.md §4; nearest
    modes are data movement)."""

    family = "weighted_sum"
    channels = "passes"

    #: impulses interpolated at once to read the coefficients (bounds memory)
    IMPULSES = 1024

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        x = step.value(x_arg)
        spatial, out = tuple(x.shape[2:]), tuple(step.value_out.shape[2:])
        P, Q = math.prod(spatial), math.prod(out)
        outs, ins, coefs = [], [], []
        for start in range(0, P, self.IMPULSES):  # column blocks of the operator's matrix
            ids = torch.arange(start, min(start + self.IMPULSES, P), device=x.device)
            impulses = torch.zeros(len(ids), P, dtype=torch.float64, device=x.device)
            impulses[torch.arange(len(ids)), ids] = 1.0
            cols = self._apply(step, impulses.view(len(ids), 1, *spatial)).reshape(len(ids), Q)
            i, o = cols.nonzero(as_tuple=True)
            outs.append(o)
            ins.append(ids[i])
            coefs.append(cols[i, o])
        table, coefficients = _sparse_rows(torch.cat(outs), torch.cat(ins), torch.cat(coefs),
                                           Q, P)
        _window_backward(step, x_arg, table, P, coefficients)

    @staticmethod
    def _apply(step: Step, impulses: Tensor) -> Tensor:
        m = step.module
        if m is not None:
            return F.interpolate(impulses, size=m.size, scale_factor=m.scale_factor,
                                 mode=m.mode, align_corners=m.align_corners)
        args = list(step.args)
        args[0] = impulses
        return step.node.target(*args, **step.kwargs)


def _sparse_rows(row: Tensor, col: Tensor, value: Tensor, rows: int, sentinel: int
                 ) -> tuple[Tensor, Tensor]:
    """Sparse (row, col, value) entries as padded (rows, K) column and value tables, columns
    ascending in each row; missing entries point at ``sentinel`` with value 0."""
    order = torch.argsort(row * (sentinel + 1) + col)
    row, col, value = row[order], col[order], value[order]
    counts = torch.bincount(row, minlength=rows)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(row), device=row.device) - starts[row]
    K = max(1, int(counts.max()))
    table = torch.full((rows, K), sentinel, dtype=torch.long, device=row.device)
    coefficients = torch.zeros(rows, K, dtype=torch.float64, device=row.device)
    table[row, slot] = col
    coefficients[row, slot] = value
    return table, coefficients


class ReductionRule(Rule):
    """Mean or sum over given dims (``x.mean(dim)``, ``torch.sum(x, dim)``): the reduced
    points, t = Δx (a mean's 1 / count is one positive factor per output point)."""

    family = "weighted_sum"

    def check(self, node: OpNode, graph: OperatorGraph) -> None:
        if _reduced_dims(node.fx_node.args, node.fx_node.kwargs) is None:
            raise unsupported(node, "a reduction over all dims mixes the samples of a batch; "
                              "give dim=")

    def backward(self, step: Step) -> None:
        x_arg = step.arg(0, "input")
        dx = step.delta(x_arg)
        dims = sorted({d % dx.dim() for d in _reduced_dims(step.args, step.kwargs)})
        kept = [d for d in range(dx.dim()) if d not in dims]
        K = math.prod(dx.shape[d] for d in dims)
        # rows in the order of the output's points (kept dims in their order), reduced last
        ids = torch.arange(dx.numel(), device=dx.device).view(dx.shape)
        table = ids.permute(*kept, *dims).reshape(-1, K)
        c = step.c_out.reshape(-1)
        live = c.nonzero().squeeze(1)
        y = step.value_out.reshape(-1)
        flat_dx = dx.reshape(-1)
        contrib = torch.zeros(dx.numel(), dtype=torch.float64, device=dx.device)
        chunk = max(1, TERM_BUDGET // max(K, 1))
        for s in range(0, live.shape[0], chunk):
            points = live[s : s + chunk]
            entries = table[points]
            signs = step.policy.weighted_sum(flat_dx[entries], c[points].sign(),
                                             y[points].to(torch.float64))
            contrib.index_add_(0, entries.reshape(-1), signs.reshape(-1).to(torch.float64))
        step.send(x_arg, contrib.view(dx.shape).to(torch.int64))


def _reduced_dims(args: tuple, kwargs: dict) -> tuple[Any, ...] | None:
    """The dims a reduction reduces (None: all of them); at trace time a dim may still be a
    node (read from a shape)."""
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if dim is None:
        return None
    return tuple(dim) if isinstance(dim, tuple | list) else (dim,)


def interpolation_mode(node: OpNode) -> str:
    """The mode of an interpolate / Upsample node ("nearest" when not given)."""
    if node.module is not None:
        return node.module.mode
    args = node.fx_node.args
    return node.fx_node.kwargs.get("mode", args[3] if len(args) > 3 else "nearest")


def _linear_interpolation(node: OpNode) -> bool:
    return interpolation_mode(node) not in ("nearest", "nearest-exact")


_conv, _linear = ConvRule(), LinearRule()
_add, _sub = AddSubRule(subtract=False), AddSubRule(subtract=True)
_rsub = AddSubRule(subtract=True, reversed_operands=True)

ENTRIES: list[Entry] = [
    (ops(nn.Conv1d, nn.Conv2d, F.conv1d, F.conv2d), _conv),
    (ops(nn.Linear, F.linear), _linear),
    (ops(operator.matmul, torch.matmul, torch.mm, "matmul", "mm") & live_operands(1),
     ConstantMatmulRule()),
    (ops(block_linear), BlockLinearRule()),
    (ops(operator.add, torch.add, "add"), _add),
    (ops(operator.sub, torch.sub, "sub", torch.subtract, "subtract"), _sub),
    (ops(torch.rsub, "rsub"), _rsub),
    (ops(nn.AvgPool1d, nn.AvgPool2d, F.avg_pool1d, F.avg_pool2d), AvgPoolRule()),
    (ops(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, F.adaptive_avg_pool1d,
         F.adaptive_avg_pool2d), AdaptiveAvgPoolRule()),
    (ops(torch.mean, "mean", torch.sum, "sum"), ReductionRule()),
    (ops(F.interpolate, F.upsample, nn.Upsample) & Where(_linear_interpolation, "linear mode"),
     InterpolationRule()),
]
