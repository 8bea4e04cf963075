"""NumPy mirrors of PyTorch's data-movement operators, with PyTorch's signatures.

A data-movement node sends every output point's C to its one source point (docs/spec.md §4). Which
point that is, is found by applying the operator's NumPy mirror to an *index array*: an integer
array of the operand's full shape (batch dim included) whose every element is the label of its
point (see ``spec_reference._index_array``). The label that lands at an output position names
its source; ``-1`` marks a constant (a padding point, a constant operand). With float arrays the
same mirror computes the values, and ``check=True`` compares them to what PyTorch recorded, so
a mirror that disagreed with PyTorch would be caught.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def _dims(args: tuple[Any, ...]) -> list[int]:
    """``f(x, 1, 2)`` and ``f(x, (1, 2))`` spell the same dims."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return [int(a) for a in args[0]]
    return [int(a) for a in args]


def _nd(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _take(x: np.ndarray, dim: int, sl: slice) -> np.ndarray:
    index = [slice(None)] * x.ndim
    index[dim] = sl
    return x[tuple(index)]


def _is_index(x: np.ndarray) -> bool:
    return x.dtype.kind in "iu"


def identity(x, *args, **kwargs):
    return x


def view(x, *shape):
    return np.reshape(x, tuple(_dims(shape)))


def torch_reshape(x, shape):
    return np.reshape(x, tuple(_dims((shape,))))


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return x.reshape(1)
    s, e = _nd(start_dim, x.ndim), _nd(end_dim, x.ndim)
    shape = x.shape[:s] + (int(np.prod(x.shape[s : e + 1])),) + x.shape[e + 1 :]
    return x.reshape(shape)


def unflatten(x, dim, sizes):
    d = _nd(dim, x.ndim)
    return x.reshape(x.shape[:d] + tuple(sizes) + x.shape[d + 1 :])


def squeeze(x, dim=None):
    if dim is None:
        dims = [d for d, n in enumerate(x.shape) if n == 1]
    else:
        dims = [_nd(d, x.ndim) for d in (dim if isinstance(dim, (tuple, list)) else [dim])]
        dims = [d for d in dims if x.shape[d] == 1]  # PyTorch ignores a dim of size != 1
    return np.squeeze(x, axis=tuple(dims))


def unsqueeze(x, dim):
    return np.expand_dims(x, _nd(dim, x.ndim + 1))


def permute(x, *dims, **kwargs):
    return np.transpose(x, _dims(dims) if dims else _dims((kwargs["dims"],)))


def transpose(x, dim0, dim1):
    return np.swapaxes(x, dim0, dim1)


def matrix_transpose(x):  # .mT
    return np.swapaxes(x, -2, -1)


def t(x):  # .t() / .T of a matrix
    assert x.ndim <= 2
    return x.T


def cat(tensors, dim=0):
    return np.concatenate(list(tensors), axis=dim)


def stack(tensors, dim=0):
    return np.stack(list(tensors), axis=dim)


def chunk(x, chunks, dim=0):
    """torch.chunk: pieces of ceil(n / chunks) along dim, the last one smaller (so there may be
    fewer than ``chunks`` pieces)."""
    d = _nd(dim, x.ndim)
    n = x.shape[d]
    size = -(-n // chunks)
    return [_take(x, d, slice(i, i + size)) for i in range(0, n, size)]


def split(x, split_size_or_sections, dim=0):
    d = _nd(dim, x.ndim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        return [_take(x, d, slice(i, i + size)) for i in range(0, n, size)]
    sizes = [int(s) for s in split_size_or_sections]
    assert sum(sizes) == n
    starts = np.cumsum([0, *sizes])
    return [
        _take(x, d, slice(int(a), int(b))) for a, b in zip(starts[:-1], starts[1:], strict=True)
    ]


def unbind(x, dim=0):
    d = _nd(dim, x.ndim)
    return [np.take(x, i, axis=d) for i in range(x.shape[d])]


def narrow(x, dim, start, length):
    d = _nd(dim, x.ndim)
    start = _nd(int(start), x.shape[d])
    return _take(x, d, slice(start, start + int(length)))


def expand(x, *sizes):
    sizes = _dims(sizes)
    lead = len(sizes) - x.ndim
    shape = [(x.shape[i - lead] if s == -1 else s) if i >= lead else s for i, s in enumerate(sizes)]
    return np.broadcast_to(x, tuple(shape))


def expand_as(x, other):
    return np.broadcast_to(x, np.shape(other))


def repeat(x, *sizes):
    # Tensor.repeat(*sizes) is np.tile (len(sizes) >= x.ndim; new dims are leading).
    return np.tile(x, tuple(_dims(sizes)))


def roll(x, shifts, dims=None):
    if dims is None:
        return np.roll(x, shifts)
    return np.roll(x, shifts, axis=dims)


def flip(x, *dims, **kwargs):
    return np.flip(x, axis=tuple(_dims(dims) if dims else _dims((kwargs["dims"],))))


def getitem(x, index):
    def conv(i):
        if isinstance(i, torch.Tensor):
            return i.numpy()
        if isinstance(i, list):
            return [conv(j) for j in i]
        return i

    index = tuple(conv(i) for i in index) if isinstance(index, tuple) else conv(index)
    return x[index]


def broadcast_with(x, *others):
    """``x + c`` for a constant ``c``: every output point reads x's aligned point."""
    return np.broadcast_to(x, np.broadcast_shapes(np.shape(x), *[np.shape(o) for o in others]))


# --- docs/spec.md §8 "Beyond the operator table": more data movement ----------------------------


def _const(v: Any, index: bool) -> Any:
    """A constant operand (a torch tensor or a number): -1 (a constant point) in index mode,
    its value otherwise."""
    if index:
        return -1 if not isinstance(v, torch.Tensor) else np.full(tuple(v.shape), -1, np.int64)
    return v.detach().to(torch.float64).numpy() if isinstance(v, torch.Tensor) else float(v)


def _np_index(v: Any) -> np.ndarray:
    return v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def masked_fill(x, mask, value):
    """``x.masked_fill(mask, value)`` with a constant mask: the filled points are constants."""
    fill = -1 if _is_index(x) else float(value)
    return np.where(_np_index(mask).astype(bool), fill, x)


def where(cond, a, b):
    """``torch.where(cond, a, b)`` with a constant cond; a constant a or b gives constant points.
    (``a.where(cond, b)`` calls this as ``where_method(a, cond, b)``.)"""
    index = any(isinstance(v, np.ndarray) and _is_index(v) for v in (a, b))
    a = a if isinstance(a, np.ndarray) else _const(a, index)
    b = b if isinstance(b, np.ndarray) else _const(b, index)
    return np.where(_np_index(cond).astype(bool), a, b)


def where_method(a, cond, b):
    return where(cond, a, b)


def gather(x, dim, index, *, sparse_grad=False):
    """``out[i][j][k] = x[i][index[i][j][k]][k]`` (dim 1); index may be smaller than x in the
    other dims."""
    index = _np_index(index).astype(np.int64)
    d = _nd(dim, x.ndim)
    grid = list(np.indices(index.shape, sparse=True))
    grid[d] = index
    return x[tuple(grid)]


def index_select(x, dim, index):
    return np.take(x, _np_index(index).astype(np.int64).reshape(-1), axis=_nd(dim, x.ndim))


def take_along_dim(x, indices, dim=None):
    if dim is None:
        raise ValueError("take_along_dim without dim flattens the batch")
    d = _nd(dim, x.ndim)
    indices = _np_index(indices).astype(np.int64)
    shape = list(
        np.broadcast_shapes(
            x.shape[:d] + (1,) + x.shape[d + 1 :], indices.shape[:d] + (1,) + indices.shape[d + 1 :]
        )
    )
    xs, ishape = list(shape), list(shape)
    xs[d], ishape[d] = x.shape[d], indices.shape[d]
    return np.take_along_axis(np.broadcast_to(x, xs), np.broadcast_to(indices, ishape), axis=d)


def pad(x, pad, mode="constant", value=None):
    """F.pad: ``pad`` pairs (before, after) from the last dim backwards. Constant padding points
    of an index array are ``-1`` (constants), negative amounts crop; reflect (the edge not
    repeated), replicate and circular padding copy input points."""
    if mode != "constant":
        np_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
        widths = [(0, 0)] * x.ndim
        for i in range(len(pad) // 2):
            widths[x.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
        assert all(a >= 0 and b >= 0 for a, b in widths), "negative non-constant padding"
        return np.pad(x, widths, mode=np_mode)
    fill = -1 if _is_index(x) else (0.0 if value is None else float(value))
    out = x
    for i in range(len(pad) // 2):
        d = x.ndim - 1 - i
        before, after = int(pad[2 * i]), int(pad[2 * i + 1])
        n = out.shape[d]
        out = _take(out, d, slice(max(-before, 0), n - max(-after, 0)))
        widths = [(0, 0)] * out.ndim
        widths[d] = (max(before, 0), max(after, 0))
        out = np.pad(out, widths, mode="constant", constant_values=fill)
    return out


def pixel_shuffle(x, upscale_factor):
    """(*, C·r², H, W) -> (*, C, H·r, W·r):
    ``out[c, h·r + i, w·r + j] = x[c·r² + i·r + j, h, w]``."""
    r = int(upscale_factor)
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c // (r * r), r, r, h, w)
    n = len(lead)
    y = np.transpose(y, (*range(n), n, n + 3, n + 1, n + 4, n + 2))
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(x, downscale_factor):
    """The inverse: (*, C, H·r, W·r) -> (*, C·r², H, W)."""
    r = int(downscale_factor)
    *lead, c, hr, wr = x.shape
    h, w = hr // r, wr // r
    y = x.reshape(*lead, c, h, r, w, r)
    n = len(lead)
    y = np.transpose(y, (*range(n), n, n + 2, n + 4, n + 1, n + 3))
    return y.reshape(*lead, c * r * r, h, w)


def channel_shuffle(x, groups):
    """(B, C, *) -> view (B, g, C/g, *) -> swap the two -> (B, C, *)."""
    g = int(groups)
    b, c, *rest = x.shape
    y = x.reshape(b, g, c // g, *rest)
    return np.swapaxes(y, 1, 2).reshape(b, c, *rest)


def tensor_unfold(x, dimension, size, step):
    """``x.unfold(d, size, step)``: windows along d, ``out[..., i, ..., j] = x[..., i·step + j,
    ...]`` with the window as a new last dim."""
    d = _nd(dimension, x.ndim)
    windows = np.lib.stride_tricks.sliding_window_view(x, int(size), axis=d)
    return _take(windows, d, slice(None, None, int(step)))


def im2col(x, kernel_size, dilation=1, padding=0, stride=1):
    """F.unfold / nn.Unfold of (B, C, H, W): (B, C·kh·kw, L), row ``c·kh·kw + ki·kw + kj``,
    column ``oh·out_w + ow`` reads ``x[c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw]`` (zero
    padding: a constant point, -1 in an index array)."""

    def pair(v):
        return (int(v), int(v)) if isinstance(v, int) else tuple(int(a) for a in v)

    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = map(pair, (kernel_size, dilation, padding, stride))
    b, c, h, w = x.shape
    fill = -1 if _is_index(x) else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.empty((b, c * kh * kw, out_h * out_w), dtype=x.dtype)
    for ch in range(c):
        for ki in range(kh):
            for kj in range(kw):
                row = ch * kh * kw + ki * kw + kj
                for oh in range(out_h):
                    for ow in range(out_w):
                        src = xp[:, ch, oh * sh + ki * dh, ow * sw + kj * dw]
                        out[:, row, oh * out_w + ow] = src
    return out


def interp_out_sizes(in_sizes, size, scale_factor) -> tuple[list[int], list[float | None]]:
    """Output sizes and the scales PyTorch's kernels receive: ``size`` given -> no scale;
    ``scale_factor`` given -> ``floor(in · s)`` and the scale s (with
    ``recompute_scale_factor=True`` the caller drops the scales)."""
    n = len(in_sizes)
    if size is not None:
        sizes = [int(size)] * n if isinstance(size, int) else [int(a) for a in size]
        return sizes, [None] * n
    sf = (
        [float(scale_factor)] * n
        if isinstance(scale_factor, (int, float))
        else [float(a) for a in scale_factor]
    )
    return [int(math.floor(i * s)) for i, s in zip(in_sizes, sf, strict=True)], sf


def nearest_source(dst: int, n_in: int, n_out: int, scale: float | None, exact: bool) -> int:
    """ATen's nearest (``floor(dst · s)``) and nearest-exact (``floor((dst + 0.5) · s)``) source
    index, ``s = 1/scale`` or ``in/out``, in float32 as the kernels compute it."""
    if not exact:
        if n_out == n_in:
            return dst
        if n_out == 2 * n_in:
            return dst >> 1
    if scale is not None and scale > 0:
        s = np.float32(1.0 / scale)
    else:
        s = np.float32(n_in) / np.float32(n_out)
    pos = (np.float32(dst) + np.float32(0.5)) * s if exact else np.float32(dst) * s
    return min(int(np.floor(pos)), n_in - 1)


def interpolate_nearest(
    x,
    size=None,
    scale_factor=None,
    mode="nearest",
    align_corners=None,
    recompute_scale_factor=None,
    antialias=False,
):
    """F.interpolate / nn.Upsample in mode nearest or nearest-exact over the trailing spatial
    dims of (B, C, *spatial)."""
    assert mode in ("nearest", "nearest-exact") and not antialias
    spatial = x.shape[2:]
    sizes, scales = interp_out_sizes(spatial, size, scale_factor)
    if recompute_scale_factor:
        scales = [None] * len(sizes)
    out = x
    for i, (n_in, n_out, sc) in enumerate(zip(spatial, sizes, scales, strict=True)):
        src = [nearest_source(o, n_in, n_out, sc, mode == "nearest-exact") for o in range(n_out)]
        out = np.take(out, src, axis=2 + i)
    return out
