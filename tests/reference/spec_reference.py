"""Slow, obviously-correct float64 reference of the slice contract (SPEC.md §2–§4).

Independent of the engine: this package never imports ``nnslicer``. torch is used only to

* trace the model into a ``torch.fx`` graph (node names are fx node names, SPEC §6),
* run the model to get every node's value (recorded as a float64 copy right after the node ran,
  so later in-place operators cannot change it),
* ask PyTorch which input point max pooling selects (SPEC: "the input point PyTorch selects
  (``return_indices``)").

Everything else — profile means (§2), Δ (§3), the edges of every operator, the θ-selection and
the backward accumulation (§4) — is plain Python/NumPy over points and edges, written to be read
next to SPEC.md. It is deliberately slow; use it on tiny models only.

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
  edge at all; with Δ = 0 they could never be kept anyway.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

DEAD_OUTPUT_RATIO = 1e-3


class ReferenceUnsupported(Exception):
    """The reference has no rule for this node (mirrors the engine's UnsupportedOperation)."""


@dataclass
class ReferenceSlice:
    """Point-level neuron contributions and synapse contributions (numpy int64)."""

    neurons: dict[str, np.ndarray]
    synapses: dict[str, np.ndarray]
    per_sample: bool = False


def _sign(v: float) -> int:
    v = float(v)
    return (v > 0) - (v < 0)


# ---------------------------------------------------------------------------------------------
# θ-selection, SPEC §4 steps 1–4 (steps 1–3 here; step 4 is applied by the caller)
# ---------------------------------------------------------------------------------------------


def theta_select(terms: Sequence[float], theta: float) -> tuple[list[int], float]:
    """Return ``(kept edge indices, T)`` for the terms ``t_i`` of one output point."""
    terms = [float(t) for t in terms]
    if not terms:
        return [], 0.0
    total = math.fsum(terms)
    biggest = max(abs(t) for t in terms)
    # Step 1: the output did not move (or every term is zero): keep no edge.
    if biggest == 0.0 or abs(total) <= DEAD_OUTPUT_RATIO * biggest:
        return [], total
    # θ = 0 keeps every edge with a non-zero term.
    if theta == 0:
        return [i for i, t in enumerate(terms) if t != 0.0], total
    if not 0 < theta < 1:
        raise ValueError(f"theta must be in [0, 1), got {theta}")
    # Step 2: sort by |t| descending (stable), S_k = sum of the first k,
    # k* = smallest k with |T - S_k| < θ·|T|.
    order = sorted(range(len(terms)), key=lambda i: -abs(terms[i]))
    running = 0.0
    k_star = None
    for k, i in enumerate(order, start=1):
        running += terms[i]
        if abs(total - running) < theta * abs(total):
            k_star = k
            break
    assert k_star is not None, "S_K = T must satisfy the condition for 0 < θ"
    # Step 3: keep every edge with |t_i| >= |t_(k*)| (ties of the k*-th magnitude are kept).
    cut = abs(terms[order[k_star - 1]])
    return [i for i, t in enumerate(terms) if abs(t) >= cut], total


# ---------------------------------------------------------------------------------------------
# Rules. Every rule knows its source nodes ("slots", in argument order) and, per output point
# (flat index into the node's per-sample output), its edges.
# ---------------------------------------------------------------------------------------------


@dataclass
class _WSumEdges:
    slot: np.ndarray  # which input slot each edge comes from
    src: np.ndarray  # flat index of the source point in that slot's per-sample tensor
    widx: np.ndarray  # flat index of the synapse in the weight, -1 if the edge has none
    coef: np.ndarray  # t = coef * Δx / div
    div: np.ndarray


@dataclass
class _Rule:
    kind: str  # "wsum" | "scale" | "act" | "maxpool" | "move"
    inputs: list[str]
    param: str | None = None  # synapse owner (weight name) for conv / linear
    attrs: dict[str, Any] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict)


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        assert len(v) == n
        return tuple(int(a) for a in v)
    return (int(v),) * n


def _norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


_ACT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Hardtanh,  # includes ReLU6
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
)


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
    raise AssertionError(m)


def _act_from_function(node: fx.Node) -> dict[str, Any] | None:
    t = node.target
    if node.op == "call_method":
        return {
            "relu": {"fn": "relu"},
            "relu_": {"fn": "relu"},
            "sigmoid": {"fn": "sigmoid"},
            "tanh": {"fn": "tanh"},
        }.get(t)
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
    return None


def act_derivative_sign(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """sign(f'(x)) element-wise, from the closed-form derivative (float64)."""
    x = np.asarray(x, dtype=np.float64)
    fn = attrs["fn"]
    if fn == "relu":
        return (x > 0).astype(np.int64)
    if fn == "hardtanh":
        return ((x > attrs["lo"]) & (x < attrs["hi"])).astype(np.int64)
    if fn == "leaky":
        return np.where(x > 0, 1, _sign(attrs["slope"])).astype(np.int64)
    if fn == "elu":
        return np.where(x > 0, 1, _sign(attrs["alpha"])).astype(np.int64)
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
    raise AssertionError(fn)


# --- edge tables of the weighted-sum operators ------------------------------------------------


def _conv_edges(
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    weight: np.ndarray,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> list[_WSumEdges]:
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
        src_a = np.asarray(src, dtype=np.int64)
        widx_a = np.asarray(widx, dtype=np.int64)
        table.append(
            _WSumEdges(
                slot=np.zeros(len(src), dtype=np.int64),
                src=src_a,
                widx=widx_a,
                coef=wflat[widx_a] if len(widx) else np.zeros(0),
                div=np.ones(len(src)),
            )
        )
    return table


def _linear_edges(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...], weight: np.ndarray
) -> list[_WSumEdges]:
    n_in = in_shape[-1]
    wflat = weight.reshape(-1)
    table = []
    for *lead, o in np.ndindex(*out_shape):
        src = np.asarray(
            [np.ravel_multi_index((*lead, i), in_shape) for i in range(n_in)], dtype=np.int64
        )
        widx = np.asarray([o * n_in + i for i in range(n_in)], dtype=np.int64)
        table.append(
            _WSumEdges(
                slot=np.zeros(n_in, dtype=np.int64),
                src=src,
                widx=widx,
                coef=wflat[widx],
                div=np.ones(n_in),
            )
        )
    return table


def _broadcast_source(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    """Flat source index (in the operand) of every output point under broadcasting."""
    if len(in_shape) != len(out_shape):
        raise ReferenceUnsupported(
            f"reference: broadcast between ranks {in_shape} and {out_shape} not supported"
        )
    n = int(np.prod(in_shape, dtype=np.int64))
    return np.broadcast_to(np.arange(n).reshape(in_shape), out_shape).reshape(-1)


def _addsub_edges(
    in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...], signs: list[float]
) -> list[_WSumEdges]:
    maps = [_broadcast_source(s, out_shape) for s in in_shapes]
    table = []
    for n in range(int(np.prod(out_shape, dtype=np.int64))):
        table.append(
            _WSumEdges(
                slot=np.arange(len(maps), dtype=np.int64),
                src=np.asarray([m[n] for m in maps], dtype=np.int64),
                widx=np.full(len(maps), -1, dtype=np.int64),
                coef=np.asarray(signs, dtype=np.float64),
                div=np.ones(len(maps)),
            )
        )
    return table


def _window_edges(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...], windows
) -> list[_WSumEdges]:
    """windows(opos) -> (list of real input spatial positions, divisor); channel kept."""
    table = []
    for c, *opos in np.ndindex(*out_shape):
        positions, divisor = windows(tuple(opos))
        src = np.asarray(
            [np.ravel_multi_index((c, *p), in_shape) for p in positions], dtype=np.int64
        )
        table.append(
            _WSumEdges(
                slot=np.zeros(len(src), dtype=np.int64),
                src=src,
                widx=np.full(len(src), -1, dtype=np.int64),
                coef=np.ones(len(src)),
                div=np.full(len(src), float(divisor)),
            )
        )
    return table


def _avgpool_windows(spatial, kernel, stride, padding, count_include_pad, divisor_override):
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


def _adaptive_windows(spatial, out_spatial):
    def windows(opos):
        ranges = []
        for o, n, m in zip(opos, spatial, out_spatial, strict=True):
            start = (o * n) // m
            end = -((-(o + 1) * n) // m)  # ceil((o+1)·n/m)
            ranges.append(range(start, end))
        positions = list(np.ndindex(*[len(r) for r in ranges]))
        positions = [tuple(r[i] for r, i in zip(ranges, pos, strict=True)) for pos in positions]
        return positions, int(np.prod([len(r) for r in ranges]))

    return windows


def _mean_edges(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...], dims: list[int], keepdim: bool
) -> list[_WSumEdges]:
    """dims are per-sample dims (batch excluded)."""
    divisor = int(np.prod([in_shape[d] for d in dims]))
    groups: dict[int, list[int]] = {}
    for ipos in np.ndindex(*in_shape):
        if keepdim:
            opos = tuple(0 if d in dims else i for d, i in enumerate(ipos))
        else:
            opos = tuple(i for d, i in enumerate(ipos) if d not in dims)
        o = int(np.ravel_multi_index(opos, out_shape)) if out_shape else 0
        groups.setdefault(o, []).append(int(np.ravel_multi_index(ipos, in_shape)))
    table = []
    for n in range(int(np.prod(out_shape, dtype=np.int64))):
        src = np.asarray(groups[n], dtype=np.int64)
        table.append(
            _WSumEdges(
                slot=np.zeros(len(src), dtype=np.int64),
                src=src,
                widx=np.full(len(src), -1, dtype=np.int64),
                coef=np.ones(len(src)),
                div=np.full(len(src), float(divisor)),
            )
        )
    return table


# ---------------------------------------------------------------------------------------------
# The reference slicer
# ---------------------------------------------------------------------------------------------


_MOVE_METHODS = {"flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze"}
_MOVE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_ADD = {operator.add, operator.iadd, torch.add}
_SUB = {operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            # Copy now: a later in-place operator must not change this node's value.
            self.values[n.name] = out.detach().to(torch.float64).clone()
        return out


class ReferenceSlicer:
    """Independent reference of SPEC §2–§4. API mirrors the engine's (SPEC §6)."""

    def __init__(self, model: nn.Module, theta: float = 0.2):
        self.model = model
        self.theta = theta
        self.gm = fx.symbolic_trace(model)
        self.modules = dict(self.gm.named_modules())
        nodes = list(self.gm.graph.nodes)
        outputs = [n for n in nodes if n.op == "output"]
        assert len(outputs) == 1
        out = outputs[0].args[0]
        if not isinstance(out, fx.Node):
            raise ReferenceUnsupported("reference: the model must return one tensor")
        self.output_name = out.name
        self.order: list[fx.Node] = []  # topological (fx order), tensor nodes only
        self.rules: dict[str, _Rule] = {}
        self.meta: set[str] = set()  # nodes producing shapes/ints, not tensors
        for node in nodes:
            if node.op == "output":
                continue
            if node.op == "placeholder":
                self.order.append(node)
                continue
            if self._is_meta(node):
                self.meta.add(node.name)
                continue
            self.rules[node.name] = self._classify(node)
            self.order.append(node)
        self.params = {
            name: p.detach().to(torch.float64).numpy().copy()
            for name, p in self.gm.named_parameters()
        }
        self.input_names = [n.name for n in nodes if n.op == "placeholder"]
        if len(self.input_names) != 1:
            raise ReferenceUnsupported("reference: exactly one model input supported")
        self._sums: dict[str, torch.Tensor] | None = None

    # --- graph classification -----------------------------------------------------------

    def _is_meta(self, node: fx.Node) -> bool:
        if node.op == "call_method" and node.target in ("size", "dim"):
            return True
        if node.op == "call_function" and node.target is getattr:
            return node.args[1] in ("shape", "ndim")
        if node.op == "call_function" and node.target is operator.getitem:
            src = node.args[0]
            return isinstance(src, fx.Node) and src.name in self.meta
        return False

    def _unsupported(self, node: fx.Node) -> ReferenceUnsupported:
        return ReferenceUnsupported(
            f"reference: no rule for node {node.name!r} ({node.op} {node.target})"
        )

    def _check_tensor_node(self, node: fx.Node, a: Any) -> None:
        if isinstance(a, fx.Node) and (a.name in self.meta or a.op == "get_attr"):
            raise self._unsupported(node)

    def _classify(self, node: fx.Node) -> _Rule:
        if node.op == "call_module":
            return self._classify_module(node, self.modules[node.target])
        if node.op not in ("call_function", "call_method"):
            raise self._unsupported(node)
        t = node.target
        x = node.args[0] if node.args else None
        act = _act_from_function(node)
        if act is not None:
            self._check_tensor_node(node, x)
            return _Rule("act", [x.name], attrs=act)
        is_method = node.op == "call_method"
        if (is_method and t in ("add", "add_", "sub", "sub_")) or t in _ADD | _SUB:
            if "alpha" in node.kwargs or len(node.args) != 2:
                raise self._unsupported(node)
            a, b = node.args
            minus = t in _SUB or t in ("sub", "sub_")
            if isinstance(a, fx.Node) and isinstance(b, fx.Node):
                self._check_tensor_node(node, a)
                self._check_tensor_node(node, b)
                return _Rule(
                    "wsum",
                    [a.name, b.name],
                    attrs={"op": "add", "signs": [1.0, -1.0 if minus else 1.0]},
                )
            if isinstance(a, fx.Node) and isinstance(b, (int, float)):
                self._check_tensor_node(node, a)
                return _Rule("move", [a.name], attrs={"op": "identity", "const": True})
            if isinstance(b, fx.Node) and isinstance(a, (int, float)) and not minus:
                self._check_tensor_node(node, b)
                return _Rule("move", [b.name], attrs={"op": "identity", "const": True})
            raise self._unsupported(node)
        if (is_method and t in ("mul", "mul_")) or t in _MUL:
            if len(node.args) != 2:
                raise self._unsupported(node)
            a, b = node.args
            if isinstance(a, fx.Node) and isinstance(b, (int, float)):
                src, c = a, b
            elif isinstance(b, fx.Node) and isinstance(a, (int, float)):
                src, c = b, a
            else:
                raise self._unsupported(node)
            self._check_tensor_node(node, src)
            return _Rule("scale", [src.name], attrs={"op": "mul", "a": float(c)})
        if (is_method and t in _MOVE_METHODS) or t in _MOVE_FUNCTIONS:
            self._check_tensor_node(node, x)
            if t in ("flatten", torch.flatten) and int(_arg(node, 1, "start_dim", 0)) < 1:
                raise self._unsupported(node)  # would merge the batch dim
            if t in ("squeeze", torch.squeeze) and _arg(node, 1, "dim") is None:
                raise self._unsupported(node)
            return _Rule("move", [x.name], attrs={"op": "identity"})
        if (is_method and t in ("permute", "transpose")) or t in (torch.permute, torch.transpose):
            self._check_tensor_node(node, x)
            if t in ("permute", torch.permute):
                rest = node.args[1:]
                dims = (
                    list(rest[0])
                    if len(rest) == 1 and isinstance(rest[0], (list, tuple))
                    else list(rest)
                )
                if not dims:
                    dims = list(node.kwargs["dims"])
                return _Rule("move", [x.name], attrs={"op": "permute", "dims": dims})
            return _Rule(
                "move",
                [x.name],
                attrs={"op": "transpose", "dims": [_arg(node, 1, "dim0"), _arg(node, 2, "dim1")]},
            )
        if t in (torch.cat, torch.concat):
            parts = _arg(node, 0, "tensors")
            for p in parts:
                if not isinstance(p, fx.Node):
                    raise self._unsupported(node)
                self._check_tensor_node(node, p)
            return _Rule(
                "move", [p.name for p in parts], attrs={"op": "cat", "dim": _arg(node, 1, "dim", 0)}
            )
        if t is F.dropout:
            if _arg(node, 2, "training", True):
                raise self._unsupported(node)
            return _Rule("move", [x.name], attrs={"op": "identity"})
        if (is_method and t == "mean") or t is torch.mean:
            self._check_tensor_node(node, x)
            dim = _arg(node, 1, "dim")
            if dim is None or "dtype" in node.kwargs:
                raise self._unsupported(node)
            dims = [dim] if isinstance(dim, int) else list(dim)
            return _Rule(
                "wsum",
                [x.name],
                attrs={
                    "op": "mean",
                    "dims": dims,
                    "keepdim": bool(_arg(node, 2, "keepdim", False)),
                },
            )
        if t is F.adaptive_avg_pool2d or t is F.adaptive_avg_pool1d:
            return _Rule("wsum", [x.name], attrs={"op": "adaptive_avg"})
        if (is_method and t in ("softmax", "log_softmax")) or t in _SOFTMAX_FUNCTIONS:
            return self._softmax_rule(node, x)
        raise self._unsupported(node)

    def _softmax_rule(self, node: fx.Node, x: Any) -> _Rule:
        if not isinstance(x, fx.Node) or node.name != self.output_name:
            raise self._unsupported(node)  # SPEC: softmax/log-softmax only on the output
        return _Rule("move", [x.name], attrs={"op": "identity", "softmax": True})

    def _classify_module(self, node: fx.Node, m: nn.Module) -> _Rule:
        x = node.args[0] if node.args else None
        if len(node.args) != 1 or node.kwargs or not isinstance(x, fx.Node):
            raise self._unsupported(node)
        self._check_tensor_node(node, x)
        inputs = [x.name]
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
                raise self._unsupported(node)
            pad = (0,) * len(m.kernel_size) if isinstance(m.padding, str) else m.padding
            return _Rule(
                "wsum",
                inputs,
                param=f"{node.target}.weight",
                attrs={
                    "op": "conv",
                    "stride": tuple(m.stride),
                    "padding": tuple(pad),
                    "dilation": tuple(m.dilation),
                    "groups": m.groups,
                },
            )
        if isinstance(m, nn.Linear):
            return _Rule("wsum", inputs, param=f"{node.target}.weight", attrs={"op": "linear"})
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.training or not m.track_running_stats:
                raise self._unsupported(node)
            gamma = m.weight.detach().double().numpy() if m.affine else None
            var = m.running_var.detach().double().numpy()
            a = (gamma if gamma is not None else 1.0) / np.sqrt(var + m.eps)
            return _Rule("scale", inputs, attrs={"op": "bn", "a": a})
        if isinstance(m, _ACT_MODULES):
            return _Rule("act", inputs, attrs=_act_from_module(m))
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            if m.return_indices:
                raise self._unsupported(node)
            return _Rule("maxpool", inputs, attrs={"module": m})
        if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            if m.return_indices:
                raise self._unsupported(node)
            return _Rule("maxpool", inputs, attrs={"module": m})
        if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
            if m.ceil_mode:
                raise self._unsupported(node)
            return _Rule("wsum", inputs, attrs={"op": "avg", "module": m})
        if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            return _Rule("wsum", inputs, attrs={"op": "adaptive_avg"})
        if isinstance(m, (nn.Flatten, nn.Dropout, nn.Identity)):
            if isinstance(m, nn.Flatten) and _norm_dim(m.start_dim, 2) < 1:
                raise self._unsupported(node)
            return _Rule("move", inputs, attrs={"op": "identity"})
        if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            return self._softmax_rule(node, x)
        raise self._unsupported(node)

    # --- forward ------------------------------------------------------------------------------

    def forward_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rec = _Recorder(self.gm)
        with torch.no_grad():
            rec.run(x)
        for node in self.order:
            v = rec.values.get(node.name)
            if v is None:
                raise self._unsupported(node)
            if v.dim() == 0 or v.shape[0] != x.shape[0]:
                raise ReferenceUnsupported(f"reference: node {node.name!r} lost the batch dim")
        return rec.values

    # --- §2 profiling ---------------------------------------------------------------------------

    def profile(self, data: Iterable[Any]) -> None:
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
            x = torch.as_tensor(x)
            values = self.forward_values(x)
            if labels is None:  # unlabeled data: the class is the model's prediction
                labels = values[self.output_name].argmax(dim=1)
            for node in self.order:
                v = values[node.name]
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
            count += int(x.shape[0])
        assert count > 0, "empty profiling set"
        self._sums, self._count = sums, count
        self._class_sums, self._class_counts = class_sums, class_counts
        self.dataset_mean = {k: (v / count).numpy() for k, v in sums.items()}
        self.class_mean = {
            c: {k: (v / class_counts[c]).numpy() for k, v in cs.items()}
            for c, cs in class_sums.items()
        }

    # --- edges --------------------------------------------------------------------------------

    def _wsum_table(self, node: fx.Node, rule: _Rule, shapes: dict[str, tuple[int, ...]]):
        in_shapes = [shapes[n] for n in rule.inputs]
        out_shape = shapes[node.name]
        key = (tuple(in_shapes), out_shape)
        if key in rule.cache:
            return rule.cache[key]
        op = rule.attrs["op"]
        in_shape = in_shapes[0]
        if op == "conv":
            a = rule.attrs
            table = _conv_edges(
                in_shape,
                out_shape,
                self.params[rule.param],
                a["stride"],
                a["padding"],
                a["dilation"],
                a["groups"],
            )
        elif op == "linear":
            table = _linear_edges(in_shape, out_shape, self.params[rule.param])
        elif op == "add":
            table = _addsub_edges(in_shapes, out_shape, rule.attrs["signs"])
        elif op == "avg":
            m = rule.attrs["module"]
            nd = len(in_shape) - 1
            kernel = _tuple(m.kernel_size, nd)
            stride = _tuple(m.stride if m.stride else m.kernel_size, nd)
            windows = _avgpool_windows(
                in_shape[1:],
                kernel,
                stride,
                _tuple(m.padding, nd),
                m.count_include_pad,
                getattr(m, "divisor_override", None),
            )
            table = _window_edges(in_shape, out_shape, windows)
        elif op == "adaptive_avg":
            table = _window_edges(
                in_shape, out_shape, _adaptive_windows(in_shape[1:], out_shape[1:])
            )
        elif op == "mean":
            ndim = len(in_shape) + 1
            dims = sorted({_norm_dim(d, ndim) for d in rule.attrs["dims"]})
            if 0 in dims:
                raise ReferenceUnsupported(f"reference: {node.name!r} averages over the batch")
            table = _mean_edges(in_shape, out_shape, [d - 1 for d in dims], rule.attrs["keepdim"])
        else:
            raise AssertionError(op)
        rule.cache[key] = table
        return table

    def _move_map(self, node: fx.Node, rule: _Rule, shapes: dict[str, tuple[int, ...]]):
        """(slot, flat source) of every output point of a data-movement node."""
        in_shapes = [shapes[n] for n in rule.inputs]
        out_shape = shapes[node.name]
        key = (tuple(in_shapes), out_shape)
        if key in rule.cache:
            return rule.cache[key]
        op = rule.attrs["op"]
        n_out = int(np.prod(out_shape, dtype=np.int64))
        if op == "identity":
            n_in = int(np.prod(in_shapes[0], dtype=np.int64))
            assert n_in == n_out, (node.name, in_shapes, out_shape)
            result = (np.zeros(n_out, dtype=np.int64), np.arange(n_out))
        elif op in ("permute", "transpose"):
            ndim = len(in_shapes[0]) + 1
            if op == "permute":
                dims = [_norm_dim(int(d), ndim) for d in rule.attrs["dims"]]
            else:
                d0, d1 = (_norm_dim(int(d), ndim) for d in rule.attrs["dims"])
                dims = list(range(ndim))
                dims[d0], dims[d1] = dims[d1], dims[d0]
            if dims[0] != 0:
                raise ReferenceUnsupported(f"reference: {node.name!r} moves the batch dim")
            idx = np.arange(int(np.prod(in_shapes[0]))).reshape(in_shapes[0])
            idx = idx.transpose([d - 1 for d in dims[1:]])
            assert idx.shape == out_shape
            result = (np.zeros(n_out, dtype=np.int64), idx.reshape(-1).copy())
        elif op == "cat":
            ndim = len(out_shape) + 1
            dim = _norm_dim(int(rule.attrs["dim"]), ndim)
            if dim == 0:
                raise ReferenceUnsupported(f"reference: {node.name!r} concatenates batches")
            slots = [np.full(s, j, dtype=np.int64) for j, s in enumerate(in_shapes)]
            flats = [np.arange(int(np.prod(s))).reshape(s) for s in in_shapes]
            slot = np.concatenate(slots, axis=dim - 1)
            flat = np.concatenate(flats, axis=dim - 1)
            assert slot.shape == out_shape
            result = (slot.reshape(-1), flat.reshape(-1))
        else:
            raise AssertionError(op)
        rule.cache[key] = result
        return result

    def _maxpool_sources(self, rule: _Rule, x: torch.Tensor) -> np.ndarray:
        """Per sample, flat source index of every output point (PyTorch's choice)."""
        m = rule.attrs["module"]
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
        """Slice of ``x``. ``check=True`` also verifies every edge table against the forward
        values (Σ t = Δy for weighted sums, source value = output value for max pooling and data
        movement, Δy = a·Δx for scales); it validates the reference itself."""
        if self._sums is None:
            raise RuntimeError("profile() first")
        theta = self.theta if theta is None else theta
        values = self.forward_values(torch.as_tensor(x))
        vals = {k: v.numpy() for k, v in values.items()}
        out = vals[self.output_name]
        if out.ndim != 2:
            raise ReferenceUnsupported("reference: output must be (B, K)")
        mask = self._target_mask(target, out)
        predicted = out.argmax(axis=1)
        shapes = {n.name: tuple(vals[n.name].shape[1:]) for n in self.order}
        maxpool_src = {
            n.name: self._maxpool_sources(self.rules[n.name], values[self.rules[n.name].inputs[0]])
            for n in self.order
            if n.name in self.rules and self.rules[n.name].kind == "maxpool"
        }
        batch = out.shape[0]
        neurons = {n.name: np.zeros((batch, *shapes[n.name]), dtype=np.int64) for n in self.order}
        synapses = {
            r.param: np.zeros((batch, *self.params[r.param].shape), dtype=np.int64)
            for r in self.rules.values()
            if r.param is not None
        }
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
            delta = {name: (vals[name][b] - ref[name]).reshape(-1) for name in shapes}
            value = {name: vals[name][b].reshape(-1) for name in shapes}
            contrib_c = {
                name: np.zeros(int(np.prod(s)), dtype=np.int64) for name, s in shapes.items()
            }
            contrib_w = {name: np.zeros(w.size, dtype=np.int64) for name, w in self.params.items()}
            # Seed: C(o) = +1 for each criterion output neuron of the sample.
            contrib_c[self.output_name] += mask[b].reshape(-1).astype(np.int64)
            for node in reversed(self.order):
                if node.op == "placeholder":
                    continue
                rule = self.rules[node.name]
                if check:
                    self._check_node(node, rule, shapes, delta, value, maxpool_src, b)
                c_out = contrib_c[node.name]
                for n in np.flatnonzero(c_out):
                    for slot, src, widx, s in self._kept_edges(
                        node,
                        rule,
                        int(n),
                        _sign(c_out[n]),
                        shapes,
                        delta,
                        value,
                        maxpool_src,
                        b,
                        theta,
                    ):
                        if s == 0:
                            continue
                        contrib_c[rule.inputs[slot]][src] += s
                        if widx >= 0:
                            contrib_w[rule.param][widx] += s
            for name, s in shapes.items():
                neurons[name][b] = contrib_c[name].reshape(s)
            for name in synapses:
                synapses[name][b] = contrib_w[name].reshape(self.params[name].shape)
        if not per_sample:
            neurons = {k: v.sum(axis=0) for k, v in neurons.items()}
            synapses = {k: v.sum(axis=0) for k, v in synapses.items()}
        return ReferenceSlice(neurons=neurons, synapses=synapses, per_sample=per_sample)

    def _kept_edges(self, node, rule, n, c_sign, shapes, delta, value, maxpool_src, b, theta):
        """Kept edges (slot, src, widx, s_i) of output point n (SPEC §4)."""
        name = node.name
        if rule.kind == "wsum":
            e = self._wsum_table(node, rule, shapes)[n]
            if len(rule.inputs) == 1:
                dx = delta[rule.inputs[0]][e.src]
            else:
                dx = np.asarray(
                    [delta[rule.inputs[s]][i] for s, i in zip(e.slot, e.src, strict=True)]
                )
            terms = e.coef * dx / e.div
            kept, total = theta_select(terms.tolist(), theta)
            return [
                (
                    int(e.slot[i]),
                    int(e.src[i]),
                    int(e.widx[i]),
                    c_sign * _sign(total) * _sign(terms[i]),
                )
                for i in kept
            ]
        dy = delta[name][n]
        if rule.kind == "scale":
            dx = delta[rule.inputs[0]][n]
            a = rule.attrs["a"]
            if rule.attrs["op"] == "bn":
                a = np.broadcast_to(
                    np.asarray(a).reshape((-1,) + (1,) * (len(shapes[name]) - 1)), shapes[name]
                ).reshape(-1)[n]
            return [(0, n, -1, c_sign * _sign(dy) * _sign(a * dx))]
        if rule.kind == "act":
            x = value[rule.inputs[0]][n]
            dx = delta[rule.inputs[0]][n]
            fprime = int(act_derivative_sign(rule.attrs, np.asarray([x]))[0])
            return [(0, n, -1, c_sign * _sign(dy) * fprime * _sign(dx))]
        if rule.kind == "maxpool":
            src = int(maxpool_src[name][b][n])
            dx = delta[rule.inputs[0]][src]
            return [(0, src, -1, c_sign * _sign(dy) * _sign(dx))]
        if rule.kind == "move":
            slot, flat = self._move_map(node, rule, shapes)
            return [(int(slot[n]), int(flat[n]), -1, c_sign)]
        raise AssertionError(rule.kind)

    # --- self-check of the edge tables against the forward pass ------------------------------

    def _check_node(self, node, rule, shapes, delta, value, maxpool_src, b):
        name = node.name
        dy, y = delta[name], value[name]
        if rule.kind == "wsum":
            table = self._wsum_table(node, rule, shapes)
            for n, e in enumerate(table):
                dx = np.asarray(
                    [delta[rule.inputs[s]][i] for s, i in zip(e.slot, e.src, strict=True)]
                )
                terms = e.coef * dx / e.div
                total = math.fsum(terms.tolist())
                scale = math.fsum(np.abs(terms).tolist()) + abs(y[n]) + abs(y[n] - dy[n])
                assert abs(total - dy[n]) <= 1e-9 * scale + 1e-300, (name, n, total, dy[n])
        elif rule.kind == "maxpool":
            x = value[rule.inputs[0]]
            src = maxpool_src[name][b]
            assert np.array_equal(y, x[src]), name
        elif rule.kind == "move":
            slot, flat = self._move_map(node, rule, shapes)
            src_vals = np.asarray(
                [value[rule.inputs[s]][i] for s, i in zip(slot, flat, strict=True)]
            )
            src_delta = np.asarray(
                [delta[rule.inputs[s]][i] for s, i in zip(slot, flat, strict=True)]
            )
            if rule.attrs.get("softmax"):
                pass
            elif rule.attrs.get("const"):
                assert np.allclose(dy, src_delta, rtol=1e-9, atol=1e-9), name
            else:
                assert np.array_equal(y, src_vals), name
        elif rule.kind == "scale":
            a = rule.attrs["a"]
            if rule.attrs["op"] == "bn":
                a = np.broadcast_to(
                    np.asarray(a).reshape((-1,) + (1,) * (len(shapes[name]) - 1)), shapes[name]
                ).reshape(-1)
            dx = delta[rule.inputs[0]]
            assert np.allclose(dy, a * dx, rtol=1e-9, atol=1e-9), name
