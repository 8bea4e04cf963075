"""nn.MultiheadAttention and F.scaled_dot_product_attention in SPEC §4 operators.

MultiheadAttention (one sample; query (L, E), key (S, E_k), value (S, E_v); H heads of d = E/H):

* ``q = query Wqᵀ + b_q``, ``k``, ``v`` alike: weighted sums (Linear) whose synapses are their row
  blocks of ``in_proj_weight`` (rows 0:E, E:2E, 2E:3E), or ``q_proj_weight`` … when kdim/vdim
  differ. Internal nodes ``{module}.q``, ``.k``, ``.v``.
* per head h: ``scores = q_h @ k_hᵀ`` (matrix-product rule, ``{module}.h{h}.scores``), times the
  constant ``1/√d`` (scale, ``.scaled``), softmax over the keys (not at the output, ``.weights``),
  ``ctx = weights @ v_h`` (matrix-product rule, ``.ctx``);
* ``out = concat_h(ctx_h) W_oᵀ + b_o``: weighted sum, synapses ``out_proj.weight``
  (``{module}.out``).

The split of q/k/v into heads and the merge of the heads are data movement that maps points one
to one, so the reference reads ``q_h[i, j]`` as ``q[i, h·d + j]`` directly instead of making
nodes for them: a one-to-one movement hands on sign(C), and every rule uses only the sign of
its point's C, so no synapse or other point changes (only reference-specific internal names
would). No masks, no ``add_bias_kv`` / ``add_zero_attn``; only output 0 (the attention output)
may be used.

scaled_dot_product_attention(q, k, v) (per sample ``(*, L, d)``, ``(*, S, d)``, ``(*, S, d_v)``):
``{node}.scores = q @ kᵀ``, ``{node}.scaled`` (× scale, default ``1/√d``), ``{node}.weights``
(softmax over the last dim), and the fx node itself ``= weights @ v``. No mask, no dropout, not
causal.
"""

from __future__ import annotations

import math

import numpy as np
import torch.nn as nn

from .rules import Expansion, ReferenceUnsupported, Rule, make_wsum, matmul_pairs


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _proj_table(n_rows: int, n_in: int, row0: int, weight: np.ndarray, out_shape, in_shape):
    """Linear over the last dim, rows row0 .. row0+n_rows of ``weight``."""
    table = []
    for *lead, o in np.ndindex(*out_shape):
        src = [np.ravel_multi_index((*lead, j), in_shape) for j in range(n_in)]
        widx = [(row0 + o) * n_in + j for j in range(n_in)]
        table.append(make_wsum(0, src, widx, weight.reshape(-1)[widx]))
    return table


def mha_expansion(
    name: str,
    m: nn.MultiheadAttention,
    inputs: list[str],
    full_shapes: list[tuple[int, ...]],
    params: dict[str, np.ndarray],
) -> Expansion:
    if m.bias_k is not None or m.add_zero_attn:
        raise ReferenceUnsupported(f"reference: {name!r}: add_bias_kv/add_zero_attn")
    bf = m.batch_first

    def per_sample(shape):
        return tuple(shape[1:]) if bf else (shape[0], *shape[2:])

    (n_l, e_q), (n_s, e_k), (_, e_v) = (per_sample(s) for s in full_shapes)
    e, heads = m.embed_dim, m.num_heads
    d = e // heads
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
        (q, k, v), inputs, proj, (n_l, n_s, n_s), (e_q, e_k, e_v), strict=True
    ):
        table = _proj_table(e, e_in, row0, w, (n_tok, e), (n_tok, e_in))
        nodes.append((node, Rule("wsum", [src], [pname], attrs={"op": "table", "table": table})))
    ctx = []
    for h in range(heads):
        scores, scaled = f"{name}.h{h}.scores", f"{name}.h{h}.scaled"
        weights, c = f"{name}.h{h}.weights", f"{name}.h{h}.ctx"
        pairs = matmul_pairs(
            (n_l, n_s),
            d,
            lambda o, kk, h=h: o[0] * e + h * d + kk,  # q[i, h·d + kk]
            lambda o, kk, h=h: o[1] * e + h * d + kk,  # kᵀ[kk, j] = k[j, h·d + kk]
        )
        nodes.append((scores, Rule("matmul", [q, k], attrs={"pairs": pairs})))
        nodes.append(
            (scaled, Rule("scale", [scores], attrs={"op": "const", "a": 1.0 / math.sqrt(d)}))
        )
        nodes.append((weights, Rule("softmax", [scaled], attrs={"dim": 1, "log": False})))
        pairs = matmul_pairs(
            (n_l, d),
            n_s,
            lambda o, kk: o[0] * n_s + kk,  # weights[i, kk]
            lambda o, kk, h=h: kk * e + h * d + o[1],  # v_h[kk, j] = v[kk, h·d + j]
        )
        nodes.append((c, Rule("matmul", [weights, v], attrs={"pairs": pairs})))
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

    def compute(values: list[np.ndarray]) -> dict[str, np.ndarray]:
        xs = [np.asarray(x, dtype=np.float64) for x in values]
        if not bf:
            xs = [np.moveaxis(x, 1, 0) for x in xs]
        vals = {}
        for node, x, (_, w, row0), b in zip((q, k, v), xs, proj, biases, strict=True):
            vals[node] = x @ w[row0 : row0 + e].T + b
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            s = vals[q][..., sl] @ np.swapaxes(vals[k][..., sl], -1, -2)
            vals[f"{name}.h{h}.scores"] = s
            vals[f"{name}.h{h}.scaled"] = s * (1.0 / math.sqrt(d))
            wts = vals[f"{name}.h{h}.weights"] = _softmax(vals[f"{name}.h{h}.scaled"])
            vals[f"{name}.h{h}.ctx"] = wts @ vals[v][..., sl]
        merged = np.concatenate([vals[c] for c in ctx], axis=-1)
        vals[out] = merged @ w_o.T + b_o
        return vals

    n_out = n_l * e
    outputs = {(0,): ([out], np.zeros(n_out, dtype=np.int64), np.arange(n_out))}
    return Expansion(nodes, compute, outputs, None, key=None)


def sdpa_expansion(
    name: str, inputs: list[str], ps_shapes: list[tuple[int, ...]], scale: float | None
) -> Expansion:
    (qs, ks, vs) = ps_shapes
    if not (qs[:-2] == ks[:-2] == vs[:-2]) or qs[-1] != ks[-1] or ks[-2] != vs[-2]:
        raise ReferenceUnsupported(f"reference: {name!r}: shapes {ps_shapes} not supported")
    lead, n_l, d = qs[:-2], qs[-2], qs[-1]
    n_s, d_v = vs[-2], vs[-1]
    factor = 1.0 / math.sqrt(d) if scale is None else float(scale)
    q, k, v = inputs
    scores, scaled, weights = f"{name}.scores", f"{name}.scaled", f"{name}.weights"

    def flat(pos, shape):
        return int(np.ravel_multi_index(pos, shape))

    s_shape = (*lead, n_l, n_s)
    pairs = matmul_pairs(
        s_shape,
        d,
        lambda o, kk: flat((*o[:-2], o[-2], kk), qs),
        lambda o, kk: flat((*o[:-2], o[-1], kk), ks),
    )
    nodes = [
        (scores, Rule("matmul", [q, k], attrs={"pairs": pairs})),
        (scaled, Rule("scale", [scores], attrs={"op": "const", "a": factor})),
        (weights, Rule("softmax", [scaled], attrs={"dim": len(s_shape) - 1, "log": False})),
    ]
    pairs = matmul_pairs(
        (*lead, n_l, d_v),
        n_s,
        lambda o, kk: flat((*o[:-2], o[-2], kk), s_shape),
        lambda o, kk: flat((*o[:-2], kk, o[-1]), vs),
    )
    final = Rule("matmul", [weights, v], attrs={"pairs": pairs})

    def compute(values: list[np.ndarray]) -> dict[str, np.ndarray]:
        qv, kv, _ = (np.asarray(x, dtype=np.float64) for x in values)
        s = qv @ np.swapaxes(kv, -1, -2)
        return {scores: s, scaled: s * factor, weights: _softmax(s * factor)}

    return Expansion(nodes, compute, {}, final, key=None)
