"""nn.LSTM / nn.GRU / nn.RNN unrolled into docs/spec.md §4 operators (SPEC "Composite layers").

PyTorch's documented equations (one layer, one direction, gate order of the weight row blocks
in parentheses), with ``h_{-1} = c_{-1} = 0``:

* LSTM (i, f, g, o): ``i = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)``, ``f``, ``o`` alike,
  ``g = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)``, ``c_t = f ⊙ c_{t-1} + i ⊙ g``,
  ``h_t = o ⊙ tanh(c_t)``.
* GRU (r, z, n): ``r = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)``, ``z`` alike,
  ``n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))``, ``h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}``.
* RNN: ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (or ReLU).

The reverse direction runs from the last time step to the first. The rewritten form is these
equations written as tensors, one node per tensor they name (SPEC is silent on the inputs'
layout; this is the literal reading): ``x_t`` of layer 0 is the slice ``input[:, t]`` (data
movement, ``{module}.l0.t{t}.x``, shared by both directions); layer ``l > 0`` reads ``h_t`` of a
unidirectional layer ``l − 1`` itself and, after a bidirectional one, its output at t, the
concatenation ``cat(h_t, h_t_reverse)`` (data movement, ``{module}.l{l}.t{t}.x``) — so C
reaching ``h_t`` from the next layer passes through that movement as sign(C). Internal node
names (reference-specific): ``{module}.l{layer}[_reverse].t{time}.{part}``.

Rules: a gate's pre-activation (``pre_i`` …) is ONE weighted sum whose edges are the features of
``x_t`` (synapses: its row block of ``weight_ih_l*``) followed by those of ``h_{t-1}`` (row block
of ``weight_hh_l*``); activations are activation rules; ``⊙`` is the product rule; ``+`` the
two-operand sum; ``1 - z`` a scale by −1. At the first step ``h_{t-1}`` and ``c_{t-1}`` are the
constant 0: their terms and the products with them (``f ⊙ c``, ``z ⊙ h``) are constants and
are left out (their terms would be 0, never kept, and they add nothing to any T), and GRU's
``r ⊙ (W_hn·0 + b_hn)`` is a scale of ``r`` by the constant ``b_hn``.

Given initial states (``lstm(x, (h0, c0))``, ``gru(x, h0)``; ``(layers·dirs, B, size)``): an
input-dependent state enters as the movement node ``{module}.l{layer}[_reverse].h0`` (``.c0``)
reading its row ``layer·dirs + d`` (the literal ``h0[k]``, like x_t); a constant one (a
parameter expanded over the batch, explicit zeros) is a constant: its gate terms are left out
as above, ``f ⊙ c0`` and GRU's ``z ⊙ h0`` are scales by it, GRU's ``r ⊙ (W_hn·h0 + b_hn)`` a
scale by ``W_hn·h0 + b_hn``. LSTM ``proj_size``: ``h_t = W_hr·(o ⊙ tanh(c_t))``, the product
``.h_raw`` then a weighted sum with the synapses ``weight_hr_l*`` (``.h``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.nn as nn

from .rules import (
    Expansion,
    Rule,
    addsub_edges,
    identity_pairs,
    make_wsum,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


_GATES = {
    "LSTM": [("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid")],
    "GRU": [("r", "sigmoid"), ("z", "sigmoid"), ("n", "tanh")],
    "RNN_TANH": [("", "tanh")],
    "RNN_RELU": [("", "relu")],
}
_ACT = {"sigmoid": _sigmoid, "tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0)}


def rnn_mode(m: nn.Module) -> str:
    if isinstance(m, nn.LSTM):
        return "LSTM"
    if isinstance(m, nn.GRU):
        return "GRU"
    if isinstance(m, nn.RNN):
        return "RNN_TANH" if m.nonlinearity == "tanh" else "RNN_RELU"
    raise AssertionError(m)


def rnn_expansion(
    name: str,
    m: nn.RNNBase,
    input_name: str,
    in_full_shape: tuple[int, ...],
    params: dict[str, np.ndarray],
    h0: tuple[str, Any] | None = None,
    c0: tuple[str, Any] | None = None,
) -> Expansion:
    """``h0`` / ``c0``: the given initial states, ``("node", name)`` for an input-dependent
    tensor (per sample ``(layers·dirs, size)``, batch in dim 1) or ``("const", array)`` for a
    constant (its per-sample value); None: zeros (left out, see the module docstring)."""
    mode = rnn_mode(m)
    bf = m.batch_first
    seq_len = in_full_shape[1] if bf else in_full_shape[0]
    n_feat = in_full_shape[-1]
    hid = m.hidden_size
    proj = getattr(m, "proj_size", 0)
    out = proj if proj else hid  # the size of h_t
    dirs = 2 if m.bidirectional else 1
    n_layers = m.num_layers
    gates = _GATES[mode]

    def pname(kind: str, layer: int, d: int) -> str:
        return f"{name}.{kind}_l{layer}{'_reverse' if d else ''}"

    def bias(kind: str, layer: int, d: int) -> np.ndarray:
        key = pname(kind, layer, d)
        return params[key] if m.bias else np.zeros(len(gates) * hid)

    def node(layer: int, d: int, t: int, part: str) -> str:
        return f"{name}.l{layer}{'_reverse' if d else ''}.t{t}.{part}"

    nodes: list[tuple[str, Rule]] = []
    h_of: dict[tuple[int, int, int], str] = {}  # (layer, dir, t) -> node holding h_t
    c_of: dict[tuple[int, int, int], str] = {}
    x_of: dict[tuple[int, int], str] = {}  # (layer, t) -> node holding the layer's input x_t

    def x_input(layer: int, t: int) -> str:
        """The node of x_t (made on first use: a slice of the input, or the concatenation of
        the previous bidirectional layer's h_t)."""
        if (layer, t) in x_of:
            return x_of[(layer, t)]
        if layer > 0 and dirs == 1:
            return h_of[(layer - 1, 0, t)]
        name_x = f"{name}.l{layer}.t{t}.x"
        if layer == 0:
            m = ([input_name], np.zeros(n_feat, dtype=np.int64), t * n_feat + np.arange(n_feat))
        else:
            slots = [h_of[(layer - 1, dd, t)] for dd in range(dirs)]
            m = (slots, np.repeat(np.arange(dirs), out), np.tile(np.arange(out), dirs))
        nodes.append((name_x, Rule("move", list(m[0]), attrs={"op": "map", "map": m})))
        x_of[(layer, t)] = name_x
        return name_x

    def x_slots(layer: int, t: int) -> list[tuple[str, list[int]]]:
        """(node, flat source of each feature) of the layer's input x_t, in feature order."""
        n_in = n_feat if layer == 0 else dirs * out
        return [(x_input(layer, t), list(range(n_in)))]

    def gate_sum(layer, d, t, gi, prev, with_x=True, with_h=True) -> Rule:
        """Weighted sum of gate ``gi``: x_t features, then h_{t-1} features."""
        wih, whh = params[pname("weight_ih", layer, d)], params[pname("weight_hh", layer, d)]
        n_in = wih.shape[1]
        inputs, pnames = [], []
        if with_x:
            for src, _ in x_slots(layer, t):
                inputs.append(src)
                pnames.append(pname("weight_ih", layer, d))
        if with_h and prev is not None:
            inputs.append(prev)
            pnames.append(pname("weight_hh", layer, d))
        table = []
        for k in range(hid):
            row = gi * hid + k
            slot, src, widx, coef = [], [], [], []
            s = 0
            if with_x:
                j = 0
                for _, flats in x_slots(layer, t):
                    for f in flats:
                        slot.append(s), src.append(f)
                        widx.append(row * n_in + j), coef.append(wih[row, j])
                        j += 1
                    s += 1
            if with_h and prev is not None:
                for j in range(out):
                    slot.append(s), src.append(j)
                    widx.append(row * out + j), coef.append(whh[row, j])
            table.append(make_wsum(slot, src, widx, coef))
        return Rule("wsum", inputs, pnames, attrs={"op": "table", "table": table})

    same = identity_pairs(hid)

    def product(a: str, b: str) -> Rule:
        return Rule("product", [a, b], attrs={"maps": same})

    def add(a: str, b: str) -> Rule:
        return Rule(
            "wsum", [a, b], attrs={"op": "table", "table": addsub_edges(list(same), [1.0, 1.0])}
        )

    def act(x: str, fn: str) -> Rule:
        return Rule("act", [x], attrs={"fn": fn})

    def scale(x: str, a) -> Rule:
        return Rule("scale", [x], attrs={"op": "const", "a": np.broadcast_to(a, (hid,)).copy()})

    def projection(x: str, layer: int, d: int) -> Rule:
        """proj_size: ``h_t = W_hr (o ⊙ tanh(c_t))``, a weighted sum (synapses weight_hr)."""
        w = params[pname("weight_hr", layer, d)]
        wmap = np.arange(w.size).reshape(w.shape)
        table = [make_wsum(0, np.arange(hid), wmap[o], w[o]) for o in range(proj)]
        return Rule(
            "wsum", [x], [pname("weight_hr", layer, d)], attrs={"op": "table", "table": table}
        )

    def initial(state, size: int, layer: int, d: int, part: str):
        """(node, constant) of a given initial state of (layer, dir): a movement node reading
        the state tensor's row layer·dirs + d (the literal ``h0[k]``), or its constant value."""
        if state is None:
            return None, None
        k = layer * dirs + d
        if state[0] == "const":
            return None, np.asarray(state[1], dtype=np.float64)[k]
        name_s = f"{name}.l{layer}{'_reverse' if d else ''}.{part}"
        mp = ([state[1]], np.zeros(size, dtype=np.int64), k * size + np.arange(size))
        nodes.append((name_s, Rule("move", [state[1]], attrs={"op": "map", "map": mp})))
        return name_s, None

    for layer in range(n_layers):
        for d in range(dirs):
            times = range(seq_len) if d == 0 else range(seq_len - 1, -1, -1)
            prev, prev_k = initial(h0, out, layer, d, "h0")
            prev_c, prev_ck = initial(c0, hid, layer, d, "c0") if mode == "LSTM" else (None, None)
            for t in times:
                n = {part: node(layer, d, t, part) for part in _PARTS}
                if mode == "LSTM":
                    for gi, (g, fn) in enumerate(gates):
                        nodes.append((n[f"pre_{g}"], gate_sum(layer, d, t, gi, prev)))
                        nodes.append((n[g], act(n[f"pre_{g}"], fn)))
                    if prev_c is None and prev_ck is None:
                        nodes.append((n["c"], product(n["i"], n["g"])))
                    else:
                        fc = product(n["f"], prev_c) if prev_c else scale(n["f"], prev_ck)
                        nodes.append((n["fc"], fc))
                        nodes.append((n["ig"], product(n["i"], n["g"])))
                        nodes.append((n["c"], add(n["fc"], n["ig"])))
                    nodes.append((n["tanh_c"], act(n["c"], "tanh")))
                    if proj:
                        nodes.append((n["h_raw"], product(n["o"], n["tanh_c"])))
                        nodes.append((n["h"], projection(n["h_raw"], layer, d)))
                    else:
                        nodes.append((n["h"], product(n["o"], n["tanh_c"])))
                    prev_c = c_of[(layer, d, t)] = n["c"]
                    prev_ck = None
                elif mode == "GRU":
                    for gi, g in ((0, "r"), (1, "z")):
                        nodes.append((n[f"pre_{g}"], gate_sum(layer, d, t, gi, prev)))
                        nodes.append((n[g], act(n[f"pre_{g}"], "sigmoid")))
                    nodes.append((n["xn"], gate_sum(layer, d, t, 2, prev, with_h=False)))
                    if prev is None:  # r ⊙ (W_hn h + b_hn) with a constant h: a scale of r
                        b_hn = bias("bias_hh", layer, d)[2 * hid : 3 * hid]
                        if prev_k is not None:
                            w_hn = params[pname("weight_hh", layer, d)][2 * hid : 3 * hid]
                            b_hn = b_hn + w_hn @ prev_k
                        nodes.append((n["rhn"], scale(n["r"], b_hn)))
                    else:
                        nodes.append((n["hn"], gate_sum(layer, d, t, 2, prev, with_x=False)))
                        nodes.append((n["rhn"], product(n["r"], n["hn"])))
                    nodes.append((n["pre_n"], add(n["xn"], n["rhn"])))
                    nodes.append((n["n"], act(n["pre_n"], "tanh")))
                    nodes.append((n["one_minus_z"], scale(n["z"], -1.0)))
                    if prev is None and prev_k is None:
                        nodes.append((n["h"], product(n["one_minus_z"], n["n"])))
                    else:
                        nodes.append((n["one_minus_z_n"], product(n["one_minus_z"], n["n"])))
                        z_h = product(n["z"], prev) if prev else scale(n["z"], prev_k)
                        nodes.append((n["z_h"], z_h))
                        nodes.append((n["h"], add(n["one_minus_z_n"], n["z_h"])))
                else:
                    nodes.append((n["pre"], gate_sum(layer, d, t, 0, prev)))
                    nodes.append((n["h"], act(n["pre"], gates[0][1])))
                prev = h_of[(layer, d, t)] = n["h"]
                prev_k = None

    # --- the layer's outputs as data movement from the internal h (and c) nodes ---------------
    outputs: dict[tuple[int, ...], tuple[list[str], np.ndarray, np.ndarray]] = {}
    last = n_layers - 1
    slots = [h_of[(last, d, t)] for t in range(seq_len) for d in range(dirs)]
    slot_of = {s: i for i, s in enumerate(slots)}
    out_slot, out_flat = [], []
    for t in range(seq_len):  # per-sample output (T, dirs·size of h)
        for d in range(dirs):
            for k in range(out):
                out_slot.append(slot_of[h_of[(last, d, t)]]), out_flat.append(k)
    outputs[(0,)] = (slots, np.asarray(out_slot), np.asarray(out_flat))

    def final_state(table: dict[tuple[int, int, int], str], size: int):
        names = [
            table[(layer, d, seq_len - 1 if d == 0 else 0)]
            for layer in range(n_layers)
            for d in range(dirs)
        ]  # per-sample (layers·dirs, size)
        return (
            names,
            np.repeat(np.arange(len(names)), size),
            np.tile(np.arange(size), len(names)),
        )

    if mode == "LSTM":
        outputs[(1, 0)] = final_state(h_of, out)
        outputs[(1, 1)] = final_state(c_of, hid)
    else:
        outputs[(1,)] = final_state(h_of, out)

    def state_value(state, values: list[np.ndarray], batch: int) -> np.ndarray | None:
        """(B, layers·dirs, size) of a given state, None for zeros."""
        if state is None:
            return None
        if state[0] == "const":
            v = np.asarray(state[1], dtype=np.float64)
            return np.broadcast_to(v, (batch, *v.shape))
        return np.moveaxis(np.asarray(values[state_index[state[1]]], dtype=np.float64), 1, 0)

    given = [st for st in (h0, c0) if st is not None and st[0] == "node"]
    state_index = {st[1]: i + 1 for i, st in enumerate(given)}  # compute's inputs: x, h0, c0

    def compute(inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(inputs[0], dtype=np.float64)
        if not bf:
            x = np.moveaxis(x, 1, 0)  # (B, T, F)
        batch = x.shape[0]
        h0v, c0v = state_value(h0, inputs, batch), state_value(c0, inputs, batch)
        vals: dict[str, np.ndarray] = {}
        layer_in = [x[:, t] for t in range(seq_len)]
        for layer in range(n_layers):
            for t in range(seq_len):
                if (layer, t) in x_of:
                    vals[x_of[(layer, t)]] = layer_in[t]
            outs = [[None] * dirs for _ in range(seq_len)]
            for d in range(dirs):
                wih, whh = (
                    params[pname("weight_ih", layer, d)],
                    params[pname("weight_hh", layer, d)],
                )
                bih, bhh = bias("bias_ih", layer, d), bias("bias_hh", layer, d)
                times = range(seq_len) if d == 0 else range(seq_len - 1, -1, -1)
                k = layer * dirs + d
                h = None if h0v is None else h0v[:, k]
                c = None if c0v is None else c0v[:, k]
                tag = "_reverse" if d else ""
                for key, v in ((f"{name}.l{layer}{tag}.h0", h), (f"{name}.l{layer}{tag}.c0", c)):
                    if v is not None:
                        vals[key] = v
                for t in times:
                    n = {part: node(layer, d, t, part) for part in _PARTS}
                    xt = layer_in[t]
                    xs = xt @ wih.T + bih  # (B, gates·H)
                    # h_{-1} = 0: the hidden part is its bias alone
                    hs = h @ whh.T + bhh if h is not None else np.broadcast_to(bhh, xs.shape)

                    def block(v, gi):
                        return v[:, gi * hid : (gi + 1) * hid]

                    if mode == "LSTM":
                        for gi, (g, fn) in enumerate(gates):
                            pre = block(xs, gi) + block(hs, gi)
                            vals[n[f"pre_{g}"]] = pre
                            vals[n[g]] = _ACT[fn](pre)
                        ig = vals[n["i"]] * vals[n["g"]]
                        if c is None:
                            c = vals[n["c"]] = ig
                        else:
                            vals[n["fc"]] = vals[n["f"]] * c
                            vals[n["ig"]] = ig
                            c = vals[n["c"]] = vals[n["fc"]] + ig
                        vals[n["tanh_c"]] = np.tanh(c)
                        h = vals[n["o"]] * vals[n["tanh_c"]]
                        if proj:
                            vals[n["h_raw"]] = h
                            h = h @ params[pname("weight_hr", layer, d)].T
                        vals[n["h"]] = h
                    elif mode == "GRU":
                        for gi, g in ((0, "r"), (1, "z")):
                            pre = block(xs, gi) + block(hs, gi)
                            vals[n[f"pre_{g}"]] = pre
                            vals[n[g]] = _sigmoid(pre)
                        vals[n["xn"]] = block(xs, 2)
                        if h is None:
                            vals[n["rhn"]] = vals[n["r"]] * bhh[2 * hid : 3 * hid]
                        else:
                            vals[n["hn"]] = block(hs, 2)
                            vals[n["rhn"]] = vals[n["r"]] * vals[n["hn"]]
                        vals[n["pre_n"]] = vals[n["xn"]] + vals[n["rhn"]]
                        vals[n["n"]] = np.tanh(vals[n["pre_n"]])
                        vals[n["one_minus_z"]] = 1.0 - vals[n["z"]]
                        if h is None:
                            h = vals[n["h"]] = vals[n["one_minus_z"]] * vals[n["n"]]
                        else:
                            vals[n["one_minus_z_n"]] = vals[n["one_minus_z"]] * vals[n["n"]]
                            vals[n["z_h"]] = vals[n["z"]] * h
                            h = vals[n["h"]] = vals[n["one_minus_z_n"]] + vals[n["z_h"]]
                    else:
                        pre = xs + hs
                        vals[n["pre"]] = pre
                        h = vals[n["h"]] = _ACT[gates[0][1]](pre)
                    outs[t][d] = h
            layer_in = [np.concatenate(outs[t], axis=1) for t in range(seq_len)]
        return {k: vals[k] for k, _ in nodes}

    return Expansion(nodes=nodes, compute=compute, outputs=outputs, final=None, key=None)


_PARTS = (
    "pre_i", "i", "pre_f", "f", "pre_g", "g", "pre_o", "o", "fc", "ig", "c", "tanh_c", "h",
    "pre_r", "r", "pre_z", "z", "xn", "hn", "rhn", "pre_n", "n", "one_minus_z",
    "one_minus_z_n", "z_h", "pre", "h_raw",
)  # fmt: skip
