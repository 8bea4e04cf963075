"""``nn.MultiheadAttention`` and ``F.scaled_dot_product_attention`` as matrix products.

q, k, v projections are Linears on their row blocks of ``in_proj_weight`` (or their own
weights), heads are split and merged by data movement, ``q @ kᵀ`` is a matrix product times
the constant scale, a mask is added as a constant (a boolean mask as 0 / −inf), softmax is not
the output, ``weights @ v`` is a matrix product and ``out_proj`` a Linear (docs/spec.md §4).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import block_linear as blocks


def _additive(mask: Any, like: Any, true_allows: bool = False) -> Any:
    """A boolean mask as 0 / −inf (MultiheadAttention's True forbids a position,
    scaled_dot_product_attention's True allows it); a float mask as it is."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    forbidden = ~mask if true_allows else mask
    return torch.zeros_like(mask, dtype=like.dtype).masked_fill(forbidden, float("-inf"))


def attention(q: Any, k: Any, v: Any, mask: Any = None, scale: Any = None,
              is_causal: bool = False) -> tuple[Any, Any]:
    """softmax(q @ kᵀ · scale + mask) @ v over the last two dims; also the weights."""
    if scale is None:
        scale = 1 / math.sqrt(q.shape[-1]) if isinstance(q.shape[-1], int) else (
            q.shape[-1] ** -0.5)
    scores = (q @ k.transpose(-2, -1)) * scale
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        causal = torch.ones(L, S, dtype=torch.bool).tril()
        scores = scores + torch.zeros(L, S).masked_fill(~causal, float("-inf"))
    if mask is not None:
        scores = scores + _additive(mask, scores)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def scaled_dot_product_attention(query: Any, key: Any, value: Any, attn_mask: Any = None,
                                 dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: float | None = None, enable_gqa: bool = False) -> Any:
    """``F.scaled_dot_product_attention`` in eval mode, as traceable operators."""
    if dropout_p:
        raise NotImplementedError("scaled_dot_product_attention with dropout_p > 0 is random; "
                                  "pass dropout_p=0.0 in eval mode")
    if enable_gqa:
        groups = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(groups, dim=-3)
        value = value.repeat_interleave(groups, dim=-3)
    return attention(query, key, value, _additive(attn_mask, query, true_allows=True), scale,
                     is_causal)[0]


def _project(m: nn.MultiheadAttention, x: Any, which: int) -> Any:
    E = m.embed_dim
    rows = (which * E, (which + 1) * E)
    bias = None if m.in_proj_bias is None else m.in_proj_bias[rows[0]:rows[1]]
    if m._qkv_same_embed_dim:
        return blocks.block_linear((x,), (m.in_proj_weight,), bias, rows)
    weight = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)[which]
    return F.linear(x, weight, bias)


def multi_head_attention(m: nn.MultiheadAttention, query: Any, key: Any, value: Any,
                         key_padding_mask: Any = None, need_weights: bool = True,
                         attn_mask: Any = None, average_attn_weights: bool = True,
                         is_causal: bool = False) -> tuple[Any, Any]:
    """``nn.MultiheadAttention.forward`` in eval mode, as traceable operators.

    The inputs are projected in the layer's own layout ((B, L, E) with ``batch_first``, else
    (L, B, E)): no transpose of the inputs is added, so a sequence-first layer slices exactly
    like a batch-first one (a data-movement node in between would pass only the sign of C).
    """
    if query.dim() != 3:
        raise NotImplementedError("MultiheadAttention on an unbatched input: give a batch")
    heads, E = m.num_heads, m.embed_dim
    seq = 1 if m.batch_first else 0  # the sequence dim of the inputs
    q, k, v = (_project(m, t, i) for i, t in enumerate((query, key, value)))
    extra_keys = int(m.bias_k is not None) + int(m.add_zero_attn)
    if m.bias_k is not None:
        k = torch.cat([k, _along(m.bias_k, k, seq)], dim=seq)
        v = torch.cat([v, _along(m.bias_v, v, seq)], dim=seq)
    if m.add_zero_attn:
        k = torch.cat([k, _along(k.new_zeros(1, 1, E), k, seq)], dim=seq)
        v = torch.cat([v, _along(v.new_zeros(1, 1, E), v, seq)], dim=seq)
    if extra_keys:  # the added keys are never masked
        attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, extra_keys))
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, (0, extra_keys))
    # (B, L, E) -> (B, heads, L, D); (L, B, E) -> (B, heads, L, D)
    order = (0, 2, 1, 3) if m.batch_first else (1, 2, 0, 3)
    q, k, v = (t.unflatten(-1, (heads, m.head_dim)).permute(*order) for t in (q, k, v))
    mask = _additive(attn_mask, q)
    if mask is not None and mask.dim() == 3:  # (B·heads, L, S)
        mask = mask.unflatten(0, (-1, heads))
    if key_padding_mask is not None:  # (B, S), True = padding
        padding = _additive(key_padding_mask, q)[:, None, None, :]
        mask = padding if mask is None else mask + padding
    out, weights = attention(q, k, v, mask, is_causal=is_causal and attn_mask is None)
    merge = (0, 2, 1, 3) if m.batch_first else (2, 0, 1, 3)  # back to the layer's layout
    out = m.out_proj(out.permute(*merge).flatten(2))
    if not need_weights:
        return out, None
    return out, weights.mean(dim=1) if average_attn_weights else weights


def _along(row: Any, like: Any, seq: int) -> Any:
    """A (1, 1, E) key or value row repeated over the batch of ``like`` along dim ``seq``."""
    batch = like.shape[1 - seq]
    shape = (batch, 1, row.shape[-1]) if seq == 1 else (1, batch, row.shape[-1])
    return row.reshape(1, 1, -1).expand(*shape)
