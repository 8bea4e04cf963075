"""NumPy mirrors of PyTorch's data-movement operators, with PyTorch's signatures.

A data-movement node sends every output point's C to its one source point (SPEC §4). Which
point that is, is found by applying the operator's NumPy mirror to an *index array*: an integer
array of the operand's full shape (batch dim included) whose every element is the label of its
point (see ``spec_reference._index_array``). The label that lands at an output position names
its source; ``-1`` marks a constant (a padding point, a constant operand). With float arrays the
same mirror computes the values, and ``check=True`` compares them to what PyTorch recorded, so
a mirror that disagreed with PyTorch would be caught.
"""

from __future__ import annotations

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


def pad(x, pad, mode="constant", value=None):
    """F.pad with a constant: ``pad`` pairs (before, after) from the last dim backwards;
    negative amounts crop. Padding points of an index array are ``-1`` (constants)."""
    if mode != "constant":
        raise ValueError(f"padding mode {mode!r} is not constant")
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


def broadcast_with(x, *others):
    """``x + c`` for a constant ``c``: every output point reads x's aligned point."""
    return np.broadcast_to(x, np.broadcast_shapes(np.shape(x), *[np.shape(o) for o in others]))
