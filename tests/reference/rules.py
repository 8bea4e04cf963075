"""The rules' data and their edge tables (docs/spec.md §4), plain NumPy loops over points.

Every rule knows its source nodes ("slots", in operand order) and, per output point (flat index
into the node's per-sample output, row-major), its edges. Nothing here runs a model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .selection import sign


class ReferenceUnsupported(Exception):
    """The reference has no rule for this node (mirrors the engine's UnsupportedOperation)."""


@dataclass
class Rule:
    """How one node's output points send C to their sources.

    kind: ``wsum`` (weighted sum, θ-selection over ``t = coef·Δx/div``), ``product`` (``a * b``),
    ``matmul`` (``a @ b``), ``scale`` (a known factor per point), ``norm`` (scale with the
    sample's own statistics held fixed), ``act``, ``softmax`` (not at the output), ``maxsel``
    (max pooling, max/amax over dims), ``move`` (data movement), ``embed`` (Embedding).
    inputs: the source nodes, one per operand slot (a node may fill several slots).
    params: per slot, the parameter whose elements carry that slot's edges (None: no synapse).
    """

    kind: str
    inputs: list[str]
    params: list[str | None] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.params:
            self.params = [None] * len(self.inputs)
        assert len(self.params) == len(self.inputs), (self.params, self.inputs)


@dataclass
class WSumEdges:
    """The edges of one output point of a weighted sum."""

    slot: np.ndarray  # which input slot each edge comes from
    src: np.ndarray  # flat index of the source point in that slot's per-sample tensor
    widx: np.ndarray  # flat index of the synapse in the slot's parameter, -1 if the edge has none
    coef: np.ndarray  # t = coef * Δx / div
    div: np.ndarray


def make_wsum(slot, src, widx, coef, div=None) -> WSumEdges:
    """Edges of one output point; scalar ``slot``/``widx``/``coef``/``div`` apply to every edge."""
    src = np.asarray(src, dtype=np.int64).reshape(-1)

    def full(v: Any, dtype: Any) -> np.ndarray:
        a = np.asarray(v, dtype=dtype)
        return np.full(len(src), a, dtype=dtype) if a.ndim == 0 else a.reshape(-1)

    return WSumEdges(
        slot=full(slot, np.int64),
        src=src,
        widx=full(widx, np.int64),
        coef=full(coef, np.float64),
        div=full(1.0 if div is None else div, np.float64),
    )


def tuple_of(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        assert len(v) == n
        return tuple(int(a) for a in v)
    return (int(v),) * n


def norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


# --- element-wise activations --------------------------------------------------------------------


def act_derivative_sign(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """sign(f'(x)) element-wise, from the closed-form derivative (float64)."""
    x = np.asarray(x, dtype=np.float64)
    fn = attrs["fn"]
    if fn == "relu":
        return (x > 0).astype(np.int64)
    if fn == "hardtanh":
        return ((x > attrs["lo"]) & (x < attrs["hi"])).astype(np.int64)
    if fn == "leaky":
        return np.where(x > 0, 1, sign(attrs["slope"])).astype(np.int64)
    if fn == "elu":
        return np.where(x > 0, 1, sign(attrs["alpha"])).astype(np.int64)
    if fn in ("sigmoid", "tanh"):
        return np.ones_like(x, dtype=np.int64)
    if fn == "silu":
        # SiLU'(x) = σ(x) · (1 + x · σ(-x)), σ(x) > 0.
        with np.errstate(over="ignore"):
            sig_neg = 1.0 / (1.0 + np.exp(x))
        return np.sign(1.0 + x * sig_neg).astype(np.int64)
    if fn == "gelu":
        if attrs["approximate"] == "tanh":
            c = math.sqrt(2.0 / math.pi)
            u = c * (x + 0.044715 * x**3)
            th = np.tanh(u)
            d = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th**2) * c * (1.0 + 3 * 0.044715 * x**2)
        else:
            erf = np.vectorize(math.erf, otypes=[np.float64])
            cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
            pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
            d = cdf + x * pdf
        # Far left both terms underflow to 0 although GELU' < 0 there (single root ≈ -0.7518).
        return np.where(x < -5.0, -1, np.sign(d)).astype(np.int64)
    return _more_derivative_signs(attrs, x)


def _more_derivative_signs(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """docs/spec.md §8 "Beyond the operator table": the other element-wise functions.

    Closed forms: f' > 0 (exp, log, log1p, expm1, sqrt, erf, LogSigmoid, Softsign, Softplus
    with β > 0), f' < 0 (rsqrt, reciprocal), sign(x) (abs, square). The rest follow the sign of
    PyTorch's derivative as its backward defines it, 0 where that is NaN: at the kinks,
    clamp/clip pass at the bounds (``min <= x <= max``), Soft/Hardshrink block at ±λ, PReLU
    is ``a`` at 0 (``x > 0 ? 1 : a``); Tanhshrink' = 1 − (1 − tanh²(x)) in float64, as
    PyTorch's backward evaluates it (0 for |x| ≲ 1e-8, although tanh² > 0 there); Mish' =
    tanh(sp(x)) + x·σ(x)·sech²(sp(x)) evaluated in float64; ``x ** c`` is ``c·x^(c-1)``: sign(c)
    for x > 0, for x < 0 sign(c)·(−1)^(c−1) with an integer c and 0 (NaN) otherwise, at x = 0
    0 for c > 1, sign(c) for c <= 1 (PyTorch's ``c·0^(c−1)`` is ±inf there, or c; c = 0: 0).
    """
    fn = attrs["fn"]
    ones = np.ones_like(x, dtype=np.int64)
    if fn == "pos":
        return ones
    if fn == "neg":
        return -ones
    if fn == "signx":  # abs, square
        return np.sign(x).astype(np.int64)
    if fn == "softplus":
        assert attrs["beta"] > 0, "Softplus with beta <= 0"
        return ones
    if fn == "clamp":
        lo, hi = attrs["lo"], attrs["hi"]
        keep = np.ones(x.shape, dtype=bool)
        if lo is not None:
            keep &= x >= lo
        if hi is not None:
            keep &= x <= hi
        return keep.astype(np.int64)
    if fn == "shrink":  # Softshrink, Hardshrink: 0 on [-λ, λ]
        return (np.abs(x) > attrs["lambd"]).astype(np.int64)
    if fn == "prelu":
        return np.where(x > 0, 1, np.sign(attrs["a"])).astype(np.int64)
    if fn == "tanhshrink":  # 1 − tanh′ as PyTorch evaluates it: 0 where it cancels (|x| ≲ 1e-8)
        th = np.tanh(x)
        return np.sign(1.0 - (1.0 - th * th)).astype(np.int64)
    if fn == "mish":
        sp = np.logaddexp(0.0, x)  # softplus
        with np.errstate(over="ignore"):
            sig = 1.0 / (1.0 + np.exp(-x))
        th = np.tanh(sp)
        return np.sign(th + x * sig * (1.0 - th * th)).astype(np.int64)
    if fn == "pow":
        c = float(attrs["c"])
        if c == 0:
            return np.zeros_like(x, dtype=np.int64)
        sc = int(np.sign(c))
        out = np.where(x > 0, sc, 0)
        if c == int(c):
            out = np.where(x < 0, sc * (1 if (int(c) - 1) % 2 == 0 else -1), out)
        out = np.where(x == 0, 0 if c > 1 else sc, out)
        return out.astype(np.int64)
    raise AssertionError(fn)


# --- edge tables of the weighted-sum operators ------------------------------------------------


def conv_edges(
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    weight: np.ndarray,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> list[WSumEdges]:
    c_out = out_shape[0]
    spatial = in_shape[1:]
    kernel = weight.shape[2:]
    in_per_group = weight.shape[1]
    out_per_group = c_out // groups
    wflat = weight.reshape(-1)
    table = []
    for oc, *opos in np.ndindex(*out_shape):  # C order == flat order
        g = oc // out_per_group
        src, widx = [], []
        for icl in range(in_per_group):
            ic = g * in_per_group + icl
            for kpos in np.ndindex(*kernel):
                ipos = [
                    o * s - p + k * d
                    for o, s, p, k, d in zip(opos, stride, padding, kpos, dilation, strict=True)
                ]
                if not all(0 <= i < n for i, n in zip(ipos, spatial, strict=True)):
                    continue  # a zero-padding position: Δ = 0, not a point
                src.append(np.ravel_multi_index((ic, *ipos), in_shape))
                widx.append(np.ravel_multi_index((oc, icl, *kpos), weight.shape))
        widx_a = np.asarray(widx, dtype=np.int64)
        table.append(make_wsum(0, src, widx_a, wflat[widx_a] if len(widx) else np.zeros(0)))
    return table


def linear_edges(
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    wmap: np.ndarray,
    wflat: np.ndarray,
) -> list[WSumEdges]:
    """``y[..., j] = Σ_k W[j, k] · x[..., k]``; ``wmap[j, k]`` is the flat index of ``W[j, k]``
    in its parameter (nn.Linear and F.linear: the weight itself; ``x @ W``: ``W``'s transpose),
    ``wflat`` that parameter's values."""
    n_in = in_shape[-1]
    assert wmap.shape == (out_shape[-1], n_in), (wmap.shape, in_shape, out_shape)
    table = []
    for *lead, o in np.ndindex(*out_shape):
        src = [np.ravel_multi_index((*lead, i), in_shape) for i in range(n_in)]
        widx = wmap[o]
        table.append(make_wsum(0, src, widx, wflat[widx]))
    return table


def left_matmul_edges(
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    wmap: np.ndarray,
    wflat: np.ndarray,
) -> list[WSumEdges]:
    """``y[..., i, j] = Σ_k W[i, k] · x[..., k, j]`` (a parameter on the left, ``W @ x``)."""
    n_k = in_shape[-2]
    assert wmap.shape == (out_shape[-2], n_k), (wmap.shape, in_shape, out_shape)
    table = []
    for *lead, i, j in np.ndindex(*out_shape):
        src = [np.ravel_multi_index((*lead, k, j), in_shape) for k in range(n_k)]
        widx = wmap[i]
        table.append(make_wsum(0, src, widx, wflat[widx]))
    return table


def addsub_edges(maps: list[np.ndarray], signs: list[float]) -> list[WSumEdges]:
    """``maps[s][n]``: the aligned point of operand ``s`` for output point ``n``."""
    n_out = len(maps[0])
    return [make_wsum(np.arange(len(maps)), [m[n] for m in maps], -1, signs) for n in range(n_out)]


def window_edges(in_shape: tuple[int, ...], out_shape: tuple[int, ...], windows) -> list[WSumEdges]:
    """windows(opos) -> (list of real input spatial positions, divisor); channel kept."""
    table = []
    for c, *opos in np.ndindex(*out_shape):
        positions, divisor = windows(tuple(opos))
        src = [np.ravel_multi_index((c, *p), in_shape) for p in positions]
        table.append(make_wsum(0, src, -1, 1.0, np.full(len(src), float(divisor))))
    return table


def avgpool_windows(spatial, kernel, stride, padding, count_include_pad, divisor_override):
    """PyTorch's AvgPool window and divisor (CPU kernel formula, ceil_mode=False)."""

    def windows(opos):
        ranges, pool_size, real_size = [], 1, 1
        for o, n, k, s, p in zip(opos, spatial, kernel, stride, padding, strict=True):
            start = o * s - p
            end = min(start + k, n + p)
            pool_size *= end - start
            start, end = max(start, 0), min(end, n)
            real_size *= end - start
            ranges.append(range(start, end))
        if divisor_override:
            divisor = divisor_override
        elif count_include_pad:
            divisor = pool_size
        else:
            divisor = real_size
        positions = list(np.ndindex(*[len(r) for r in ranges]))
        positions = [tuple(r[i] for r, i in zip(ranges, pos, strict=True)) for pos in positions]
        return positions, divisor

    return windows


def adaptive_windows(spatial, out_spatial):
    """PyTorch's adaptive pooling bins: start = floor(o·n/out), end = ceil((o+1)·n/out)."""

    def windows(opos):
        ranges = []
        for o, n, m in zip(opos, spatial, out_spatial, strict=True):
            start = (o * n) // m
            end = -((-(o + 1) * n) // m)
            ranges.append(range(start, end))
        positions = list(np.ndindex(*[len(r) for r in ranges]))
        positions = [tuple(r[i] for r, i in zip(ranges, pos, strict=True)) for pos in positions]
        return positions, len(positions)

    return windows


def reduce_groups(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...], dims: list[int], keepdim: bool
) -> list[list[int]]:
    """For a reduction over per-sample ``dims``: the flat input points of every output point,
    in row-major order."""
    groups: dict[int, list[int]] = {}
    for ipos in np.ndindex(*in_shape):
        if keepdim:
            opos = tuple(0 if d in dims else i for d, i in enumerate(ipos))
        else:
            opos = tuple(i for d, i in enumerate(ipos) if d not in dims)
        o = int(np.ravel_multi_index(opos, out_shape)) if out_shape else 0
        groups.setdefault(o, []).append(int(np.ravel_multi_index(ipos, in_shape)))
    return [groups[n] for n in range(int(np.prod(out_shape, dtype=np.int64)))]


def reduce_edges(
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    dims: list[int],
    keepdim: bool,
    average: bool,
) -> list[WSumEdges]:
    """mean over dims (``t = Δx / divisor``) or sum over dims (``t = Δx``)."""
    divisor = float(np.prod([in_shape[d] for d in dims])) if average else 1.0
    return [
        make_wsum(0, g, -1, 1.0, np.full(len(g), divisor))
        for g in reduce_groups(in_shape, out_shape, dims, keepdim)
    ]


# --- matrix product of two input-dependent tensors -------------------------------------------


def matmul_pairs(
    out_shape: tuple[int, ...],
    n_k: int,
    a_src: Callable[[tuple[int, ...], int], int],
    b_src: Callable[[tuple[int, ...], int], int],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For output ``(..., i, j)``: the flat sources ``a[..., i, k]`` and ``b[..., k, j]`` for
    every ``k`` (``a_src(opos, k)``, ``b_src(opos, k)``)."""
    pairs = []
    for opos in np.ndindex(*out_shape):
        pairs.append(
            (
                np.asarray([a_src(opos, k) for k in range(n_k)], dtype=np.int64),
                np.asarray([b_src(opos, k) for k in range(n_k)], dtype=np.int64),
            )
        )
    return pairs


def batched_matmul_pairs(
    a_shape: tuple[int, ...], b_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``a @ b`` on per-sample shapes ``(*L, I, K) @ (*L, K, J)``, leading dims broadcast."""
    n_k = a_shape[-1]
    assert b_shape[-2] == n_k and len(a_shape) == len(b_shape) == len(out_shape)

    def lead(opos, shape):
        return tuple(0 if n == 1 else i for i, n in zip(opos[:-2], shape[:-2], strict=True))

    def a_src(opos, k):
        return int(np.ravel_multi_index((*lead(opos, a_shape), opos[-2], k), a_shape))

    def b_src(opos, k):
        return int(np.ravel_multi_index((*lead(opos, b_shape), k, opos[-1]), b_shape))

    return matmul_pairs(out_shape, n_k, a_src, b_src)


# --- NumPy forward of normalizations and softmax (for check=True only) -------------------------


def layer_norm_np(x, normalized_shape, weight, bias, eps):
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mu = x.mean(axis=dims, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=dims, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rms_norm_np(x, normalized_shape, weight, eps):
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    y = x / np.sqrt((x * x).mean(axis=dims, keepdims=True) + eps)
    return y if weight is None else y * weight


def group_norm_np(x, num_groups, weight, bias, eps):
    """x: one sample, (C, *spatial)."""
    c = x.shape[0]
    g = x.reshape(num_groups, -1)
    mu = g.mean(axis=1, keepdims=True)
    var = ((g - mu) ** 2).mean(axis=1, keepdims=True)
    y = ((g - mu) / np.sqrt(var + eps)).reshape(x.shape)
    shape = (c,) + (1,) * (x.ndim - 1)
    if weight is not None:
        y = y * np.reshape(weight, shape)
    if bias is not None:
        y = y + np.reshape(bias, shape)
    return y


def instance_norm_np(x, running_mean, running_var, weight, bias, use_input_stats, eps):
    """x: one sample, (C, *spatial)."""
    c = x.shape[0]
    shape = (c,) + (1,) * (x.ndim - 1)
    if use_input_stats:
        dims = tuple(range(1, x.ndim))
        mu = x.mean(axis=dims, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=dims, keepdims=True)
    else:
        mu, var = np.reshape(running_mean, shape), np.reshape(running_var, shape)
    y = (x - mu) / np.sqrt(var + eps)
    if weight is not None:
        y = y * np.reshape(weight, shape)
    if bias is not None:
        y = y + np.reshape(bias, shape)
    return y


def softmax_np(x, dim, log):
    z = x - x.max(axis=dim, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=dim, keepdims=True)
    return z - np.log(s) if log else e / s


@dataclass
class Expansion:
    """A composite layer rewritten into the operators of docs/spec.md §4 (SPEC "Composite layers").

    nodes: its internal point nodes, in topological order, with their rules;
    compute: from the full-batch values of the layer's inputs (in their own layout), every
        internal node's value, batch first, float64, computed by the reference itself;
    outputs: for each ``getitem`` path of the layer's result (``(0,)`` = ``out[0]``,
        ``(1, 0)`` = ``out[1][0]``), the internal nodes it reads (slots) and, per point of its
        per-sample output, the slot and the flat source point;
    final: the rule of the fx node itself when the layer is a function returning a tensor
        (scaled_dot_product_attention), None when it returns a tuple;
    key: the per-sample input shapes it was built for (set by the slicer); others are an error;
    consts: constant nodes (attention masks) whose full-batch values ``compute`` receives after
        the inputs' (as recorded, torch tensors).
    """

    nodes: list[tuple[str, Rule]]
    compute: Callable[[list[np.ndarray]], dict[str, np.ndarray]]
    outputs: dict[tuple[int, ...], tuple[list[str], np.ndarray, np.ndarray]]
    final: Rule | None
    key: Any
    consts: list[str] = field(default_factory=list)  # constant nodes compute also reads


def identity_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64)


# --- linear-mode interpolation (docs/spec.md §8): coefficients from PyTorch's formulas ---------
#
# The coefficients are computed here from the formulas PyTorch documents and its CPU kernels
# implement (aten/src/ATen/native/UpSample.h), not read back from the operator:
#   scale = (in − 1)/(out − 1) with align_corners (0 when out = 1), else 1/scale_factor when a
#   scale factor reaches the kernel, else in/out;
#   source x = scale·dst (align_corners) or scale·(dst + ½) − ½, clamped at 0 except for cubic;
#   i0 = min(⌊x⌋, in − 1) (⌊⌋ in float32, as ``floorf``), λ = clamp(x − i0, 0, 1);
#   linear: λ0 = 1 − λ at i0, λ at i0 + 1 (i0 itself at the last index), the identity when
#   out = in; cubic (A = −0.75): taps i0 − 1 … i0 + 2, clamped to [0, in − 1], weights
#   W2(λ + 1), W1(λ), W1(1 − λ), W2(2 − λ) with W1(t) = ((A + 2)t − (A + 3))t² + 1,
#   W2(t) = ((At − 5A)t + 8A)t − 4A;
#   area: adaptive average pooling to the output size, 1/(bin length) on each bin.
# A multi-dim output point's coefficient on a source point is the product of its per-dim
# weights, summed over taps that land on the same point (edge clamping); self-checked against
# the recorded values (Σ c·Δx = Δy) and against impulses in test_reference_selfcheck.py.

CUBIC_A = -0.75


def _interp_scale(n_in: int, n_out: int, align_corners: bool, scale: float | None) -> float:
    if align_corners:
        return (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else n_in / n_out


def _source_index(scale: float, dst: int, align_corners: bool, cubic: bool) -> float:
    if align_corners:
        return scale * dst
    src = scale * (dst + 0.5) - 0.5
    return 0.0 if (not cubic and src < 0) else src


def _guard(real: float, n_in: int) -> tuple[int, float]:
    i0 = min(int(np.floor(np.float32(real))), n_in - 1)
    return i0, min(max(real - i0, 0.0), 1.0)


def _w1(t: float) -> float:
    a = CUBIC_A
    return ((a + 2) * t - (a + 3)) * t * t + 1


def _w2(t: float) -> float:
    a = CUBIC_A
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a


def interp_taps(mode: str, n_in: int, n_out: int, align_corners: bool, scale: float | None):
    """Per output index of one spatial dim: its (source index, weight) taps."""
    if mode == "area":
        taps = []
        for o in range(n_out):
            start, end = (o * n_in) // n_out, -((-(o + 1) * n_in) // n_out)
            taps.append([(i, 1.0 / (end - start)) for i in range(start, end)])
        return taps
    cubic = mode == "bicubic"
    s = _interp_scale(n_in, n_out, align_corners, scale)
    taps = []
    for o in range(n_out):
        if not cubic and n_out == n_in:
            taps.append([(o, 1.0)])
            continue
        i0, lam = _guard(_source_index(s, o, align_corners, cubic), n_in)
        if cubic:
            weights = (_w2(lam + 1), _w1(lam), _w1(1 - lam), _w2(2 - lam))
            taps.append([(min(max(i0 - 1 + j, 0), n_in - 1), w) for j, w in enumerate(weights)])
        else:
            i1 = i0 + (1 if i0 < n_in - 1 else 0)
            taps.append([(i0, 1.0 - lam), (i1, lam)])
    return taps


def interp_edges(in_shape: tuple[int, ...], out_shape: tuple[int, ...], taps_per_dim):
    """Per output point (C, *spatial): one edge per distinct source point of its plane, in the
    source's row-major order, coefficient = Σ over tap combinations of the weight products."""
    table = []
    for c, *opos in np.ndindex(*out_shape):
        coef: dict[int, float] = {}
        combos = [taps_per_dim[d][o] for d, o in enumerate(opos)]
        for combo in itertools.product(*combos):
            w = math.prod(t[1] for t in combo)
            src = int(np.ravel_multi_index((c, *(t[0] for t in combo)), in_shape))
            coef[src] = coef.get(src, 0.0) + w
        srcs = sorted(s for s, w in coef.items() if w != 0.0)
        table.append(make_wsum(0, srcs, -1, [coef[s] for s in srcs]))
    return table
