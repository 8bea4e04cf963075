"""Adding a batch of one node's values to float64 sums in one numba pass (CPU).

torch needs a float64 copy of the batch (a fresh allocation, so page faults) and one call per
class run; here each value is read once, widened in a register and added to its class row and
the overall row, features in blocks so a block of the rows stays in cache across the batch.
The sums are the float64 sums of the samples in batch order, as torch's per-sample adds give.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..jit import AVAILABLE, first_call

if AVAILABLE:
    from numba import njit, prange

#: Tests switch this off to compare with the torch path.
ENABLED = AVAILABLE
#: Features per block: a block of a class row (128 KiB of float64) stays in L1 across the batch.
_BLOCK = 16384
#: Below this many values per batch one thread does it (a parallel launch costs more).
_PARALLEL_MIN = 1 << 16
DTYPES = (torch.float32, torch.float64, torch.int64)

if AVAILABLE:

    @njit(cache=True, inline="always")
    def _add_block(v, rows, sums, total, j0, j1):  # pragma: no cover - compiled
        # slices, not v[i, j] with j from j0: numba then vectorises the loops (~4x faster)
        for i in range(v.shape[0]):
            vi = v[i, j0:j1]
            r = rows[i]
            if r >= 0:
                row = sums[r, j0:j1]
                for j in range(vi.shape[0]):
                    row[j] += vi[j]
            if total.shape[0] > 0:
                out = total[j0:j1]
                for j in range(vi.shape[0]):
                    out[j] += vi[j]

    @njit(cache=True, parallel=True)
    def _add_batch_parallel(v, rows, sums, total):  # pragma: no cover - compiled
        n = v.shape[1]
        for b in prange((n + _BLOCK - 1) // _BLOCK):
            _add_block(v, rows, sums, total, b * _BLOCK, min(n, (b + 1) * _BLOCK))

    @njit(cache=True)
    def _add_batch_serial(v, rows, sums, total):  # pragma: no cover - compiled
        n = v.shape[1]
        for b in range((n + _BLOCK - 1) // _BLOCK):
            _add_block(v, rows, sums, total, b * _BLOCK, min(n, (b + 1) * _BLOCK))


def usable(v: Tensor) -> bool:
    """Whether ``add_batch`` takes these values (else the caller's torch path does)."""
    return ENABLED and v.device.type == "cpu" and v.dtype in DTYPES


def add_batch(v: Tensor, rows: np.ndarray, sums: np.ndarray, total: np.ndarray) -> None:
    """sums[rows[i]] += v[i] (rows[i] < 0: no row) and, unless ``total`` is empty,
    total += v[i], for every sample i in order, in float64. v: (B, *shape) on the CPU; rows:
    (B,) int64; sums: (R, points) float64; total: (points,) float64 or (0,)."""
    flat = v.detach().contiguous().view(v.shape[0], -1).numpy()
    kernel = _add_batch_parallel if flat.size >= _PARALLEL_MIN else _add_batch_serial
    with first_call(kernel):
        kernel(flat, rows, sums, total)
