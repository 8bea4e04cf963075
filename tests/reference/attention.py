"""nn.MultiheadAttention, F.scaled_dot_product_attention and nn.TransformerEncoderLayer in
docs/spec.md §4 operators (docs/spec.md §5, docs/composite.md "Attention").

MultiheadAttention (one sample; query (L, E), key (S, E_k), value (S, E_v); H heads of d = E/H):

* ``q = query Wqᵀ + b_q``, ``k``, ``v`` alike: weighted sums (Linear) whose synapses are their row
  blocks of ``in_proj_weight`` (rows 0:E, E:2E, 2E:3E), or ``q_proj_weight`` … when kdim/vdim
  differ. Internal nodes ``{module}.q``, ``.k``, ``.v``.
* ``add_bias_kv`` appends the row ``bias_k`` to k and ``bias_v`` to v, ``add_zero_attn`` then a
  zero row to both: data movement with constant points (``{module}.k_ext``, ``.v_ext``; the
  constant rows have Δ = 0, so no term through them is ever kept); the masks get 0 (allowed)
  columns for the added keys, as PyTorch pads them.
* per head h: ``scores = q_h @ k_hᵀ`` (matrix-product rule, ``{module}.h{h}.scores``), times the
  constant ``1/√d`` (scale, ``.scaled``), plus the mask as a constant (``+ constant`` is data
  movement, ``.masked``, only when there is a mask: ``attn_mask`` (L, S) or (B·H, L, S) and
  ``key_padding_mask`` (B, S) added up; a boolean mask's True *forbids*: −∞), softmax over the
  keys (not at the output, ``.weights``), ``ctx = weights @ v_h`` (matrix-product rule, ``.ctx``);
* ``out = concat_h(ctx_h) W_oᵀ + b_o``: weighted sum, synapses ``out_proj.weight``
  (``{module}.out``).

A score the mask sets to −∞ is −∞ in every sample: its Δ is 0 (docs/spec.md §8), its softmax
weight is 0 in every sample, so nothing passes through it. Masks are constants; one that
differs between the samples of a profile (a padding mask made from the tokens) is outside what
the reference does (its mean would be −∞ where any sample is masked).

The split of q/k/v into heads and the merge of the heads are data movement that maps points one
to one, so the reference reads ``q_h[i, j]`` as ``q[i, h·d + j]`` directly instead of making
nodes for them: a one-to-one movement hands on sign(C), and every rule uses only the sign of
its point's C, so no synapse or other point changes (only reference-specific internal names
would). Only output 0 (the attention output) may be used.

scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale, enable_gqa) (per sample
``(*, L, d)``, ``(*, S, d)``, ``(*, S, d_v)``) follows the reference implementation in
PyTorch's documentation of the function: with ``enable_gqa`` the key and value heads are
``repeat_interleave``d to the query's heads first (data movement that is NOT one to one:
``{node}.key_rep`` / ``.value_rep``, each copy collects its own C and hands its sign on); then
``{node}.scores = q @ kᵀ``, ``{node}.scaled`` (× scale, default ``1/√d``), ``{node}.masked``
(+ the bias: ``is_causal`` −∞ above the diagonal of the top-left aligned (L, S) matrix, a
boolean mask's False −∞ — its True *allows* —, a float mask as it is), ``{node}.weights``
(softmax over the last dim), and the fx node itself ``= weights @ v``. No dropout.

nn.TransformerEncoderLayer (``encoder_layer_expansion``), as its documented forward computes it
in eval mode: ``norm_first``: ``x = x + sa(norm1(x)); x = x + ff(norm2(x))``, else
``x = norm1(x + sa(x)); x = norm2(x + ff(x))``, with ``sa(x) = self_attn(x, x, x)[0]`` (the
MultiheadAttention above, ``src_mask`` / ``src_key_padding_mask`` passed on) and ``ff(x) =
linear2(activation(linear1(x)))`` (Dropout in eval is the identity, one to one, read through).
Internal nodes ``{module}.self_attn.*``, ``{module}.norm1``, ``.add1``, ``.linear1``, ``.act``,
``.linear2``, ``.add2``…; the fx node is the last norm (post-norm) or the last sum (pre-norm).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .rules import (
    Expansion,
    ReferenceUnsupported,
    Rule,
    addsub_edges,
    layer_norm_np,
    linear_edges,
    make_wsum,
    matmul_pairs,
)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _np(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach()
        return v.numpy() if v.dtype == torch.bool else v.to(torch.float64).numpy()
    return np.asarray(v)


def additive(mask: Any, true_forbids: bool) -> np.ndarray:
    """A mask as the constant added to the scores: boolean -> 0 / −∞, float as it is."""
    m = _np(mask)
    if m.dtype == bool:
        forbidden = m if true_forbids else ~m
        return np.where(forbidden, -np.inf, 0.0)
    return m.astype(np.float64)


def _proj_table(n_rows: int, n_in: int, row0: int, weight: np.ndarray, out_shape, in_shape):
    """Linear over the last dim, rows row0 .. row0+n_rows of ``weight``."""
    table = []
    for *lead, o in np.ndindex(*out_shape):
        src = [np.ravel_multi_index((*lead, j), in_shape) for j in range(n_in)]
        widx = [(row0 + o) * n_in + j for j in range(n_in)]
        table.append(make_wsum(0, src, widx, weight.reshape(-1)[widx]))
    return table


def _mask_node(masked: str, scaled: str, n_points: int) -> Rule:
    """``scores + mask`` (a constant): one-to-one data movement."""
    idx = np.arange(n_points, dtype=np.int64)
    return Rule(
        "move",
        [scaled],
        attrs={"op": "map", "map": ([scaled], np.zeros(n_points, np.int64), idx), "check": "mask"},
    )


def mha_expansion(
    name: str,
    m: nn.MultiheadAttention,
    inputs: list[str],
    full_shapes: list[tuple[int, ...]],
    params: dict[str, np.ndarray],
    attn_mask: str | None = None,
    key_padding_mask: str | None = None,
    batch_first: bool | None = None,
) -> Expansion:
    """``attn_mask`` / ``key_padding_mask``: names of constant nodes (their values reach
    ``compute`` after the inputs'). ``batch_first``: the layout of the inputs' values (default:
    the module's)."""
    bf = m.batch_first if batch_first is None else batch_first

    def per_sample(shape):
        return tuple(shape[1:]) if bf else (shape[0], *shape[2:])

    (n_l, e_q), (n_s0, e_k), (_, e_v) = (per_sample(s) for s in full_shapes)
    e, heads = m.embed_dim, m.num_heads
    d = e // heads
    extra = int(m.bias_k is not None) + int(m.add_zero_attn)
    n_s = n_s0 + extra
    if m._qkv_same_embed_dim:
        w = params[f"{name}.in_proj_weight"]
        proj = [(f"{name}.in_proj_weight", w, i * e) for i in range(3)]
    else:
        proj = [(f"{name}.{p}_proj_weight", params[f"{name}.{p}_proj_weight"], 0) for p in "qkv"]
    biases = (
        [params[f"{name}.in_proj_bias"][i * e : (i + 1) * e] for i in range(3)]
        if m.in_proj_bias is not None
        else [np.zeros(e)] * 3
    )
    nodes: list[tuple[str, Rule]] = []
    q, k, v = f"{name}.q", f"{name}.k", f"{name}.v"
    for node, src, (pname, w, row0), n_tok, e_in in zip(
        (q, k, v), inputs, proj, (n_l, n_s0, n_s0), (e_q, e_k, e_v), strict=True
    ):
        table = _proj_table(e, e_in, row0, w, (n_tok, e), (n_tok, e_in))
        nodes.append((node, Rule("wsum", [src], [pname], attrs={"op": "table", "table": table})))
    extra_rows: list[tuple[np.ndarray, np.ndarray]] = []  # (k row, v row) appended
    if m.bias_k is not None:
        extra_rows.append(
            (params[f"{name}.bias_k"].reshape(-1), params[f"{name}.bias_v"].reshape(-1))
        )
    if m.add_zero_attn:
        extra_rows.append((np.zeros(e), np.zeros(e)))
    kk, vv = k, v
    if extra:
        kk, vv = f"{name}.k_ext", f"{name}.v_ext"
        flat = np.concatenate([np.arange(n_s0 * e), np.full(extra * e, -1)]).astype(np.int64)
        for ext, src in ((kk, k), (vv, v)):
            mp = ([src], np.zeros(n_s * e, np.int64), flat)
            nodes.append((ext, Rule("move", [src], attrs={"op": "map", "map": mp})))
    has_mask = attn_mask is not None or key_padding_mask is not None
    consts = [c for c in (attn_mask, key_padding_mask) if c is not None]
    ctx = []
    for h in range(heads):
        scores, scaled = f"{name}.h{h}.scores", f"{name}.h{h}.scaled"
        masked, weights, c = f"{name}.h{h}.masked", f"{name}.h{h}.weights", f"{name}.h{h}.ctx"
        pairs = matmul_pairs(
            (n_l, n_s),
            d,
            lambda o, kk_, h=h: o[0] * e + h * d + kk_,  # q[i, h·d + kk]
            lambda o, kk_, h=h: o[1] * e + h * d + kk_,  # kᵀ[kk, j] = k[j, h·d + kk]
        )
        nodes.append((scores, Rule("matmul", [q, kk], attrs={"pairs": pairs})))
        nodes.append(
            (scaled, Rule("scale", [scores], attrs={"op": "const", "a": 1.0 / math.sqrt(d)}))
        )
        if has_mask:
            nodes.append((masked, _mask_node(masked, scaled, n_l * n_s)))
        soft_in = masked if has_mask else scaled
        nodes.append((weights, Rule("softmax", [soft_in], attrs={"dim": 1, "log": False})))
        pairs = matmul_pairs(
            (n_l, d),
            n_s,
            lambda o, kk_: o[0] * n_s + kk_,  # weights[i, kk]
            lambda o, kk_, h=h: kk_ * e + h * d + o[1],  # v_h[kk, j] = v[kk, h·d + j]
        )
        nodes.append((c, Rule("matmul", [weights, vv], attrs={"pairs": pairs})))
        ctx.append(c)
    out = f"{name}.out"
    w_o = params[f"{name}.out_proj.weight"]
    table = []
    for i, o in np.ndindex(n_l, e):
        slot = [f // d for f in range(e)]
        src = [i * d + f % d for f in range(e)]
        widx = [o * e + f for f in range(e)]
        table.append(make_wsum(slot, src, widx, w_o.reshape(-1)[widx]))
    nodes.append(
        (
            out,
            Rule(
                "wsum",
                ctx,
                [f"{name}.out_proj.weight"] * heads,
                attrs={"op": "table", "table": table},
            ),
        )
    )
    b_o = params[f"{name}.out_proj.bias"] if m.out_proj.bias is not None else np.zeros(e)

    def bias(mask_values: list[Any], batch: int) -> np.ndarray:
        """(B, heads, L, S) constant added to the scaled scores."""
        total = np.zeros((batch, heads, n_l, n_s0))
        vals = list(mask_values)
        if attn_mask is not None:
            am = additive(vals.pop(0), true_forbids=True)
            total = total + (am if am.ndim == 2 else am.reshape(batch, heads, n_l, n_s0))
        if key_padding_mask is not None:
            total = total + additive(vals.pop(0), true_forbids=True)[:, None, None, :]
        return np.concatenate([total, np.zeros((batch, heads, n_l, extra))], axis=-1)

    def compute(values: list[Any]) -> dict[str, np.ndarray]:
        xs = [np.asarray(x, dtype=np.float64) for x in values[:3]]
        if not bf:
            xs = [np.moveaxis(x, 1, 0) for x in xs]
        batch = xs[0].shape[0]
        vals = {}
        for node, x, (_, w, row0), b in zip((q, k, v), xs, proj, biases, strict=True):
            vals[node] = x @ w[row0 : row0 + e].T + b
        if extra:
            for ext, src, which in ((kk, k, 0), (vv, v, 1)):
                rows = [np.broadcast_to(r[which], (batch, 1, e)) for r in extra_rows]
                vals[ext] = np.concatenate([vals[src], *rows], axis=1)
        add = bias(values[3:], batch) if has_mask else None
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            s = vals[q][..., sl] @ np.swapaxes(vals[kk][..., sl], -1, -2)
            vals[f"{name}.h{h}.scores"] = s
            scaled = vals[f"{name}.h{h}.scaled"] = s * (1.0 / math.sqrt(d))
            if has_mask:
                scaled = vals[f"{name}.h{h}.masked"] = scaled + add[:, h]
            wts = vals[f"{name}.h{h}.weights"] = _softmax(scaled)
            vals[f"{name}.h{h}.ctx"] = wts @ vals[vv][..., sl]
        merged = np.concatenate([vals[c] for c in ctx], axis=-1)
        vals[out] = merged @ w_o.T + b_o
        return vals

    n_out = n_l * e
    outputs = {(0,): ([out], np.zeros(n_out, dtype=np.int64), np.arange(n_out))}
    return Expansion(nodes, compute, outputs, None, key=None, consts=consts)


def sdpa_expansion(
    name: str,
    inputs: list[str],
    ps_shapes: list[tuple[int, ...]],
    scale: float | None,
    attn_mask: str | None = None,
    is_causal: bool = False,
    enable_gqa: bool = False,
) -> Expansion:
    """``attn_mask``: the name of a constant node (its full-batch value reaches ``compute``
    after q, k, v; batch-first when it has the batch, else broadcast over it)."""
    (qs, ks, vs) = ps_shapes
    nodes: list[tuple[str, Rule]] = []
    q, k, v = inputs
    if enable_gqa and len(qs) >= 3 and ks[-3] != qs[-3]:
        groups = qs[-3] // ks[-3]
        reps = []
        for src, shape, tag in ((k, ks, "key_rep"), (v, vs, "value_rep")):
            labels = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
            flat = np.repeat(labels, groups, axis=-3)
            rep = f"{name}.{tag}"
            mp = ([src], np.zeros(flat.size, np.int64), flat.reshape(-1))
            nodes.append((rep, Rule("move", [src], attrs={"op": "map", "map": mp})))
            reps.append((rep, flat.shape))
        (k, ks), (v, vs) = reps
    if not (qs[:-2] == ks[:-2] == vs[:-2]) or qs[-1] != ks[-1] or ks[-2] != vs[-2]:
        raise ReferenceUnsupported(f"reference: {name!r}: shapes {ps_shapes} not supported")
    lead, n_l, d = qs[:-2], qs[-2], qs[-1]
    n_s, d_v = vs[-2], vs[-1]
    factor = 1.0 / math.sqrt(d) if scale is None else float(scale)
    scores, scaled, weights = f"{name}.scores", f"{name}.scaled", f"{name}.weights"
    masked = f"{name}.masked"
    has_mask = attn_mask is not None or is_causal

    def flat(pos, shape):
        return int(np.ravel_multi_index(pos, shape))

    s_shape = (*lead, n_l, n_s)
    pairs = matmul_pairs(
        s_shape,
        d,
        lambda o, kk: flat((*o[:-2], o[-2], kk), qs),
        lambda o, kk: flat((*o[:-2], o[-1], kk), ks),
    )
    nodes += [
        (scores, Rule("matmul", [q, k], attrs={"pairs": pairs})),
        (scaled, Rule("scale", [scores], attrs={"op": "const", "a": factor})),
    ]
    if has_mask:
        nodes.append((masked, _mask_node(masked, scaled, int(np.prod(s_shape)))))
    nodes.append(
        (
            weights,
            Rule(
                "softmax",
                [masked if has_mask else scaled],
                attrs={"dim": len(s_shape) - 1, "log": False},
            ),
        )
    )
    pairs = matmul_pairs(
        (*lead, n_l, d_v),
        n_s,
        lambda o, kk: flat((*o[:-2], o[-2], kk), s_shape),
        lambda o, kk: flat((*o[:-2], kk, o[-1]), vs),
    )
    final = Rule("matmul", [weights, v], attrs={"pairs": pairs})
    groups = qs[-3] // ps_shapes[1][-3] if enable_gqa and len(qs) >= 3 else 1

    def compute(values: list[Any]) -> dict[str, np.ndarray]:
        qv, kv, vv = (np.asarray(x, dtype=np.float64) for x in values[:3])
        vals: dict[str, np.ndarray] = {}
        if groups > 1:
            kv = vals[f"{name}.key_rep"] = np.repeat(kv, groups, axis=-3)
            vals[f"{name}.value_rep"] = np.repeat(vv, groups, axis=-3)
        s = qv @ np.swapaxes(kv, -1, -2)
        vals |= {scores: s, scaled: s * factor}
        x = s * factor
        if has_mask:
            bias = np.zeros((n_l, n_s))
            if is_causal:
                bias = np.where(np.tril(np.ones((n_l, n_s), dtype=bool)), 0.0, -np.inf)
            if attn_mask is not None:
                bias = bias + additive(values[3], true_forbids=False)
            x = vals[masked] = x + bias
        vals[weights] = _softmax(x)
        return vals

    consts = [attn_mask] if attn_mask is not None else []
    return Expansion(nodes, compute, {}, final, key=None, consts=consts)


def _activation_attrs(name: str, act: Any) -> dict[str, Any]:
    if act is F.relu or isinstance(act, nn.ReLU):
        return {"fn": "relu"}
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return {"fn": "gelu", "approximate": "none"}
    raise ReferenceUnsupported(f"reference: {name!r}: activation {act!r}")


def encoder_layer_expansion(
    name: str,
    m: nn.TransformerEncoderLayer,
    x_name: str,
    full_shape: tuple[int, ...],
    params: dict[str, np.ndarray],
    src_mask: str | None = None,
    key_padding_mask: str | None = None,
) -> Expansion:
    """nn.TransformerEncoderLayer in eval mode (see the module docstring)."""
    bf = m.self_attn.batch_first
    n_l, e = (full_shape[1], full_shape[2]) if bf else (full_shape[0], full_shape[2])
    n_ff = m.linear1.out_features
    act = _activation_attrs(name, m.activation)
    sa_name = f"{name}.self_attn"
    eps1, eps2 = m.norm1.eps, m.norm2.eps
    nodes: list[tuple[str, Rule]] = []
    same = (np.arange(n_l * e), np.arange(n_l * e))

    def norm(src: str, which: str) -> Rule:
        mod = getattr(m, which)
        attrs = {"op": "layer", "shape": tuple(mod.normalized_shape), "eps": mod.eps}
        attrs["weight_param"] = f"{name}.{which}.weight" if mod.weight is not None else None
        attrs["bias_param"] = f"{name}.{which}.bias" if mod.bias is not None else None
        return Rule("norm", [src], attrs=attrs)

    def linear(src: str, which: str, n_in: int, n_out: int) -> Rule:
        w = params[f"{name}.{which}.weight"]
        table = linear_edges(
            (n_l, n_in), (n_l, n_out), np.arange(w.size).reshape(w.shape), w.reshape(-1)
        )
        return Rule(
            "wsum", [src], [f"{name}.{which}.weight"], attrs={"op": "table", "table": table}
        )

    def add(a: str, b: str) -> Rule:
        return Rule(
            "wsum", [a, b], attrs={"op": "table", "table": addsub_edges(list(same), [1.0, 1.0])}
        )

    n1, add1, n2 = f"{name}.norm1", f"{name}.add1", f"{name}.norm2"
    l1, a1, l2, add2 = f"{name}.linear1", f"{name}.act", f"{name}.linear2", f"{name}.add2"
    attn_in = x_name
    if m.norm_first:
        nodes.append((n1, norm(x_name, "norm1")))
        attn_in = n1
    sa = mha_expansion(
        sa_name,
        m.self_attn,
        [attn_in] * 3,
        [(1, n_l, e)] * 3,
        params,
        src_mask,
        key_padding_mask,
        batch_first=True,
    )
    nodes += sa.nodes
    sa_out = f"{sa_name}.out"
    nodes.append((add1, add(x_name, sa_out)))
    if m.norm_first:
        nodes.append((n2, norm(add1, "norm2")))
        ff_in = n2
    else:
        nodes.append((n1, norm(add1, "norm1")))
        ff_in = n1
    nodes.append((l1, linear(ff_in, "linear1", e, n_ff)))
    nodes.append((a1, Rule("act", [l1], attrs=act)))
    nodes.append((l2, linear(a1, "linear2", n_ff, e)))
    residual = add1 if m.norm_first else n1
    if m.norm_first:
        final = add(residual, l2)
    else:
        nodes.append((add2, add(residual, l2)))
        final = norm(add2, "norm2")

    def p(key: str) -> np.ndarray | None:
        return params.get(f"{name}.{key}")

    def compute(values: list[Any]) -> dict[str, np.ndarray]:
        x = np.asarray(values[0], dtype=np.float64)
        if not bf:
            x = np.moveaxis(x, 1, 0)
        vals: dict[str, np.ndarray] = {}
        h = x
        if m.norm_first:
            h = vals[n1] = layer_norm_np(x, (e,), p("norm1.weight"), p("norm1.bias"), eps1)
        vals |= sa.compute([h, h, h, *values[1:]])
        r = vals[add1] = x + vals[sa_out]
        if m.norm_first:
            f_in = vals[n2] = layer_norm_np(r, (e,), p("norm2.weight"), p("norm2.bias"), eps2)
        else:
            f_in = r = vals[n1] = layer_norm_np(r, (e,), p("norm1.weight"), p("norm1.bias"), eps1)
        z = vals[l1] = f_in @ params[f"{name}.linear1.weight"].T + p("linear1.bias")
        if act["fn"] == "relu":
            vals[a1] = np.maximum(z, 0.0)
        else:
            erf = np.vectorize(math.erf, otypes=[np.float64])
            vals[a1] = 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))
        vals[l2] = vals[a1] @ params[f"{name}.linear2.weight"].T + p("linear2.bias")
        if not m.norm_first:
            vals[add2] = r + vals[l2]
        return vals

    consts = [c for c in (src_mask, key_padding_mask) if c is not None]
    return Expansion(nodes, compute, {}, final, key=None, consts=consts)
