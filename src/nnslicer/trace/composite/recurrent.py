"""``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` unrolled into PyTorch's documented equations.

Over the sequence length of the traced input (a slice is computed for inputs of that length),
every layer and direction, h_0 = c_0 = 0 unless given. Each gate's pre-activation
``W_i·x_t + b_i + W_h·h_{t−1} + b_h`` is one ``block_linear`` over x_t and h_{t−1} (the gate's
row block of ``weight_ih_l*`` / ``weight_hh_l*``); GRU's candidate keeps its two sums apart
because the reset gate multiplies only the hidden part:
``n = tanh(W_in·x_t + b_in + r ⊙ (W_hn·h + b_hn))``, ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``;
LSTM: ``c_t = f ⊙ c_{t−1} + i ⊙ g``, ``h_t = o ⊙ tanh(c_t)`` (then ``W_hr`` with proj_size).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..tracer import NeedsConcreteShapes
from . import block_linear as blocks


def _bias(m: nn.RNNBase, suffix: str, rows: tuple[int, int]) -> Tensor | None:
    if not m.bias:
        return None
    lo, hi = rows
    return getattr(m, f"bias_ih{suffix}")[lo:hi] + getattr(m, f"bias_hh{suffix}")[lo:hi]


def _gate(m: nn.RNNBase, suffix: str, x: Any, h: Any, rows: tuple[int, int]) -> Any:
    weights = (getattr(m, f"weight_ih{suffix}"), getattr(m, f"weight_hh{suffix}"))
    return blocks.block_linear((x, h), weights, _bias(m, suffix, rows), rows)


def _lstm_cell(m: nn.LSTM, suffix: str, x: Any, state: tuple[Any, Any]) -> tuple[Any, Any]:
    h, c = state
    H = m.hidden_size
    i, f, g, o = (_gate(m, suffix, x, h, (k * H, (k + 1) * H)) for k in range(4))
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if m.proj_size > 0:
        h = F.linear(h, getattr(m, f"weight_hr{suffix}"))
    return h, c


def _gru_cell(m: nn.GRU, suffix: str, x: Any, state: tuple[Any, None]) -> tuple[Any, None]:
    h = state[0]
    H = m.hidden_size
    r = torch.sigmoid(_gate(m, suffix, x, h, (0, H)))
    z = torch.sigmoid(_gate(m, suffix, x, h, (H, 2 * H)))
    rows = (2 * H, 3 * H)
    bias_ih = getattr(m, f"bias_ih{suffix}")[2 * H:] if m.bias else None
    bias_hh = getattr(m, f"bias_hh{suffix}")[2 * H:] if m.bias else None
    x_part = blocks.block_linear((x,), (getattr(m, f"weight_ih{suffix}"),), bias_ih, rows)
    h_part = blocks.block_linear((h,), (getattr(m, f"weight_hh{suffix}"),), bias_hh, rows)
    n = torch.tanh(x_part + r * h_part)
    return (1 - z) * n + z * h, None


def _rnn_cell(m: nn.RNN, suffix: str, x: Any, state: tuple[Any, None]) -> tuple[Any, None]:
    pre = _gate(m, suffix, x, state[0], (0, m.hidden_size))
    return (torch.tanh(pre) if m.nonlinearity == "tanh" else torch.relu(pre)), None


def _length(value: Any, what: str) -> int:
    if not isinstance(value, int):
        raise NeedsConcreteShapes(f"unrolling {what} needs the sequence length")
    return value


def unroll(m: nn.RNNBase, x: Any, hx: Any = None) -> tuple[Any, Any]:
    """The layer's ``forward(x, hx)`` as traceable equations (see the module docstring)."""
    kind = type(m).__name__
    if isinstance(x, PackedSequence):
        raise NotImplementedError(f"{kind} on a PackedSequence: pad the sequences instead")
    if _length(x.dim(), kind) != 3:
        raise NotImplementedError(f"{kind} on an unbatched input: give (batch, seq, features)")
    time_dim = 1 if m.batch_first else 0
    T = _length(x.shape[time_dim], kind)
    steps = [x[:, t] if m.batch_first else x[t] for t in range(T)]
    cell = {nn.LSTM: _lstm_cell, nn.GRU: _gru_cell}.get(type(m), _rnn_cell)
    if isinstance(m, nn.LSTM):
        h0, c0 = hx if hx is not None else (None, None)
    else:
        h0, c0 = hx, None
    dirs = 2 if m.bidirectional else 1
    out_size = m.proj_size if getattr(m, "proj_size", 0) > 0 else m.hidden_size
    last_h, last_c = [], []
    for layer in range(m.num_layers):
        per_dir = []
        for d in range(dirs):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            k = layer * dirs + d
            h = h0[k] if h0 is not None else steps[0].new_zeros(steps[0].shape[0], out_size)
            c = None
            if isinstance(m, nn.LSTM):
                c = c0[k] if c0 is not None else steps[0].new_zeros(steps[0].shape[0],
                                                                     m.hidden_size)
            outs: list[Any] = [None] * T
            for t in (range(T) if d == 0 else reversed(range(T))):
                h, c = cell(m, suffix, steps[t], (h, c))
                outs[t] = h
            per_dir.append(outs)
            last_h.append(h)
            last_c.append(c)
        steps = [torch.cat([o[t] for o in per_dir], -1) if dirs == 2 else per_dir[0][t]
                 for t in range(T)]
    output = torch.stack(steps, dim=time_dim)
    h_n = torch.stack(last_h)
    if isinstance(m, nn.LSTM):
        return output, (h_n, torch.stack(last_c))
    return output, h_n
