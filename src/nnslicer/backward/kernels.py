"""Fused weighted-sum kernel: terms, exact selection and accumulation in one pass (numba).

For each live output point the kernel computes its terms t_k = W[o, k] · X[r, k], applies the
policy's selection and adds the signs to the input rows and the synapses. It returns exactly
what ``policy.weighted_sum`` (the torch reference in policy.py) gives, without sorting:

θ-selection needs k* = the first k (terms by |t| descending) with |T − S_k| < θ|T|. The kernel
partitions the terms around a pivot magnitude (quickselect style) and visits the parts in rank
order. A part of total magnitude M that starts at partial sum S cannot contain k* when
|T − S| − M ≥ θ|T| (|T − S − p| ≥ |T − S| − |p| for any partial sum p of the part), so it is
skipped whole; only small parts are sorted. EffectivePath's running sum is monotone, so the
part that crosses the goal is the only one entered.

Points are grouped by input row, and chunks never split a group, so input-row accumulators are
written by one thread each; synapse accumulators are per chunk and summed afterwards.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a torch fallback
    AVAILABLE = False

#: Tests switch this off to compare the kernel with the torch reference path.
ENABLED = AVAILABLE
MODE_NNSLICER = 0
MODE_EFFECTIVE_PATH = 1
_DEAD_OUTPUT_RATIO = 1e-3

if AVAILABLE:

    @njit(cache=True, inline="always")
    def _insertion_sort_desc(keys, idx, lo, hi):  # pragma: no cover - compiled
        for i in range(lo + 1, hi):
            v = idx[i]
            kv = keys[v]
            j = i - 1
            while j >= lo and keys[idx[j]] < kv:
                idx[j + 1] = idx[j]
                j -= 1
            idx[j + 1] = v

    @njit(cache=True)
    def _histogram(keys, t, top, nb, ids, b_pos, b_neg):  # pragma: no cover - compiled
        """Bucket id of every key (keys in [j, j + 1) · top / nb go to j; zero keys to -1) and
        the positive and negative mass of t per bucket."""
        scale = nb / top
        b_pos[:] = 0.0
        b_neg[:] = 0.0
        for k in range(keys.shape[0]):
            a = keys[k]
            j = min(nb - 1, int(a * scale)) if a > 0.0 else -1
            ids[k] = j
            if j >= 0:
                v = t[k]
                b_pos[j] += max(v, 0.0)
                b_neg[j] += max(-v, 0.0)

    @njit(cache=True, inline="always")
    def _gather_sorted(keys, ids, j, order):  # pragma: no cover - compiled
        """Indices of bucket j in ``order``, sorted by key descending; returns their count."""
        n = 0
        for k in range(ids.shape[0]):
            if ids[k] == j:
                order[n] = k
                n += 1
        _insertion_sort_desc(keys, order, 0, n)
        return n

    @njit(cache=True)
    def _theta_cut(t, mag, total, mx, theta, nb, ids, order, b_pos, b_neg):  # pragma: no cover
        """|t| of the k*-th largest term (SPEC §4 step 2), or 0.0 to keep every term.

        Buckets are visited from the largest magnitudes down. Inside a bucket the partial sums
        stay within [s − neg, s + pos], so a bucket is skipped whole when that interval cannot
        come closer to T than θ|T|; otherwise its terms are sorted and scanned.
        """
        bound = theta * abs(total)
        _histogram(mag, t, mx, nb, ids, b_pos, b_neg)
        s = 0.0
        for j in range(nb - 1, -1, -1):
            pos, neg = b_pos[j], b_neg[j]
            if pos == 0.0 and neg == 0.0:
                continue
            gap = total - s
            if gap - pos >= bound or gap + neg <= -bound:
                s += pos - neg
                continue
            for i in range(_gather_sorted(mag, ids, j, order)):
                s += t[order[i]]
                if abs(total - s) < bound:
                    return mag[order[i]]
        return 0.0

    @njit(cache=True)
    def _goal_cut(cand, top, goal, nb, ids, order, b_pos, b_neg):  # pragma: no cover
        """Smallest value among the fewest largest candidates whose sum reaches ``goal``."""
        _histogram(cand, cand, top, nb, ids, b_pos, b_neg)
        running = 0.0
        for j in range(nb - 1, -1, -1):
            if running + b_pos[j] < goal:
                running += b_pos[j]
                continue
            n = _gather_sorted(cand, ids, j, order)
            for i in range(n):
                running += cand[order[i]]
                if running >= goal:
                    return cand[order[i]]
        return 0.0

    @njit(cache=True, parallel=True)
    def _weighted_rows(x, w, xrow, wrow, csign, yraw, synrow, starts, mode, theta,
                       x_out, syn_out):  # pragma: no cover - compiled
        K = x.shape[1]
        nb = max(8, min(128, K // 4))
        for chunk in prange(starts.shape[0] - 1):
            t = np.empty(K)
            mag = np.empty(K)
            order = np.empty(K, dtype=np.int64)
            ids = np.empty(K, dtype=np.int64)
            b_pos = np.empty(nb)
            b_neg = np.empty(nb)
            for p in range(starts[chunk], starts[chunk + 1]):
                r = xrow[p]
                o = wrow[p]
                total = 0.0
                mx = 0.0
                for k in range(K):
                    v = w[o, k] * x[r, k]
                    t[k] = v
                    total += v
                    a = abs(v)
                    mag[k] = a
                    mx = max(mx, a)
                if mode == 0:
                    if not abs(total) > _DEAD_OUTPUT_RATIO * mx:
                        continue
                    cut = 0.0
                    if theta > 0.0:
                        cut = _theta_cut(t, mag, total, mx, theta, nb, ids, order, b_pos, b_neg)
                    s0 = csign[p] * (1 if total > 0 else -1)
                    for k in range(K):
                        v = t[k]
                        if v != 0.0 and mag[k] >= cut:
                            s = s0 if v > 0 else -s0
                            x_out[r, k] += s
                            syn_out[chunk, synrow[p], k] += s
                else:
                    flip = -1.0 if yraw[p] < 0 else 1.0
                    cand_total = 0.0
                    top = 0.0
                    for k in range(K):
                        c = max(t[k] * flip, 0.0)
                        mag[k] = c
                        cand_total += c
                        top = max(top, c)
                    if top == 0.0:
                        continue
                    cut = _goal_cut(mag, top, theta * cand_total, nb, ids, order, b_pos, b_neg)
                    for k in range(K):
                        if mag[k] > 0.0 and mag[k] >= cut:
                            x_out[r, k] += 1
                            syn_out[chunk, synrow[p], k] += 1


def chunk_starts(group: np.ndarray, chunks: int) -> np.ndarray:
    """Split sorted group keys into at most ``chunks`` ranges that never split a group."""
    n = group.shape[0]
    cuts = [0]
    for i in range(1, chunks):
        c = max(n * i // chunks, cuts[-1])
        while 0 < c < n and group[c] == group[c - 1]:
            c += 1
        if c > cuts[-1] and c < n:
            cuts.append(c)
    cuts.append(n)
    return np.asarray(cuts, dtype=np.int64)


def weighted_rows(x: np.ndarray, w: np.ndarray, xrow: np.ndarray, wrow: np.ndarray,
                  csign: np.ndarray, yraw: np.ndarray, synrow: np.ndarray, group: np.ndarray,
                  syn_rows: int, mode: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Run the fused kernel; returns (input-row signs (R, K) float64, synapse signs)."""
    chunks = max(1, numba.get_num_threads() * 2)
    starts = chunk_starts(group, chunks)
    x_out = np.zeros(x.shape, dtype=np.float64)
    syn_out = np.zeros((starts.shape[0] - 1, syn_rows, x.shape[1]), dtype=np.int32)
    _weighted_rows(x, w, xrow, wrow, csign, yraw, synrow, starts, mode, theta, x_out, syn_out)
    return x_out, syn_out.sum(axis=0, dtype=np.int64)
