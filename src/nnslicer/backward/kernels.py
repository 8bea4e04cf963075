"""Fused weighted-sum kernel: terms, exact selection and accumulation in one pass (numba).

For each live output point the kernel computes its terms t_k = W[o, k] · X[r, k] (row r read in
place from the flat input: a conv window of the padded input, a linear row), applies the
policy's selection and adds the signs to the input rows and the synapses. It returns exactly
what ``policy.weighted_sum`` (the torch reference in policy.py) gives, without sorting:

θ-selection needs k* = the first k (terms by |t| descending) with |T − S_k| < θ|T|. With θ = 0.2
k* is a few per cent of the terms, all of magnitude above max|t| / 8 for ~90 % of points. So the
pass that computes the terms also collects that "top level"; it is bucketed by magnitude and the
buckets are visited in rank order. A bucket of positive mass P and negative mass N that starts
at partial sum S cannot contain k* when T − S − P ≥ θ|T| or T − S + N ≤ −θ|T| (every partial
sum inside it lies in [S − N, S + P]), so it is skipped whole; only entered buckets are sorted.
Only when k* is not in the top level are the remaining terms bucketed the same way. The signs
are then added for the kept terms only. EffectivePath's running sum is monotone, so the bucket
that crosses its goal is the only one entered.

Points are grouped by input row (each row is gathered once per group) and chunks never split a
group. Rows that share input entries (overlapping conv windows) may sit in different chunks, so
then every chunk adds into its own copy of the input; synapse counts are per chunk too, and the
copies are summed afterwards.
"""

from __future__ import annotations

import numpy as np

from ..jit import AVAILABLE, first_call

if AVAILABLE:
    import numba
    from numba import njit, prange

#: Tests switch this off to compare the kernel with the torch reference path.
ENABLED = AVAILABLE
MODE_NNSLICER = 0
MODE_EFFECTIVE_PATH = 1
_DEAD_OUTPUT_RATIO = 1e-3
#: Terms with |t| >= this fraction of the largest are scanned first (k* is almost always there).
_TOP_LEVEL = 0.125
_MAX_BUCKETS = 128

if AVAILABLE:

    @njit(cache=True, inline="always")
    def _sort_by_magnitude(t, idx, m):  # pragma: no cover - compiled
        """Insertion sort of idx[:m] by |t| descending; stable, so ties keep index order."""
        for i in range(1, m):
            v = idx[i]
            a = abs(t[v])
            j = i - 1
            while j >= 0 and abs(t[idx[j]]) < a:
                idx[j + 1] = idx[j]
                j -= 1
            idx[j + 1] = v

    @njit(cache=True, inline="always")  # the call passed ~40 words of array structs
    def _scan_values(vals, n, lo, hi, total, bound, s, bid, order, b_pos,
                     b_neg):  # pragma: no cover - compiled
        """Visit the n terms vals[:n] (|t| in [lo, hi], in edge order) in rank order, from
        partial sum s.

        Returns (|t| of the k*-th term, or -1.0 if k* is not among them; the partial sum after
        them). Terms are bucketed by magnitude; inside a bucket the partial sums stay within
        [s − neg, s + pos], so a bucket is skipped whole when that interval cannot come closer
        to T than θ|T|; otherwise its terms are sorted and scanned. An empty bucket is always
        skipped: |T − s| >= θ|T| holds at every bucket start (else k* was returned before).
        The values are contiguous (copied once from the terms) so no loop here reads through
        an index array.
        """
        nb = max(8, min(b_pos.shape[0], n // 2))
        scale = nb / (hi - lo)
        for j in range(nb):
            b_pos[j] = 0.0
            b_neg[j] = 0.0
        for i in range(n):
            v = vals[i]
            j = min(nb - 1, int((abs(v) - lo) * scale))
            bid[i] = j
            b_pos[j] += max(v, 0.0)
            b_neg[j] += max(-v, 0.0)
        for j in range(nb - 1, -1, -1):
            pos, neg = b_pos[j], b_neg[j]
            gap = total - s
            if gap - pos >= bound or gap + neg <= -bound:
                s += pos - neg
                continue
            m = 0
            for i in range(n):
                order[m] = i
                m += bid[i] == j
            _sort_by_magnitude(vals, order, m)
            for i in range(m):
                s += vals[order[i]]
                if abs(total - s) < bound:
                    return abs(vals[order[i]]), s
        return -1.0, s

    @njit(cache=True, inline="always")  # the call passed ~40 words of array structs
    def _theta_cut(t, total, mx, theta, tv, top, lo, rv, bid, order, b_pos,
                   b_neg):  # pragma: no cover - compiled
        """|t| of the k*-th largest term (docs/spec.md §4, step 2), or 0.0 to keep every term.

        tv[:top] are the top-level terms' values (|t| >= lo) in edge order; k* is almost always
        among them, and only otherwise are the other non-zero terms copied into ``rv`` and
        scanned.
        """
        bound = theta * abs(total)
        cut, s = _scan_values(tv, top, lo, mx, total, bound, 0.0, bid, order, b_pos, b_neg)
        if cut >= 0.0:
            return cut
        n = 0
        for k in range(t.shape[0]):
            v = t[k]
            a = abs(v)
            rv[n] = v
            n += (a > 0.0) & (a < lo)
        cut, s = _scan_values(rv, n, 0.0, lo, total, bound, s, bid, order, b_pos, b_neg)
        return max(cut, 0.0)

    @njit(cache=True)
    def _goal_cut(cand, top, goal, nb, ids, order, b_pos, b_neg):  # pragma: no cover
        """Smallest value among the fewest largest candidates whose sum reaches ``goal``."""
        scale = nb / top
        for j in range(nb):
            b_pos[j] = 0.0
        for k in range(cand.shape[0]):
            a = cand[k]
            j = min(nb - 1, int(a * scale)) if a > 0.0 else -1
            ids[k] = j
            if j >= 0:
                b_pos[j] += a
        running = 0.0
        for j in range(nb - 1, -1, -1):
            if running + b_pos[j] < goal:
                running += b_pos[j]
                continue
            n = 0
            for k in range(ids.shape[0]):
                order[n] = k
                n += ids[k] == j
            _sort_by_magnitude(cand, order, n)
            for i in range(n):
                running += cand[order[i]]
                if running >= goal:
                    return cand[order[i]]
        return 0.0

    @njit(cache=True, parallel=True)
    def _keep_rows(terms, theta, kept):  # pragma: no cover - compiled
        """θ-selection of given terms, row by row (the rule of ``policy.theta_keep``, found as
        the windows kernel finds it: top level first, buckets skipped whole)."""
        N, K = terms.shape
        for r in prange(N):
            t = terms[r]
            tv = np.empty(K)
            rv = np.empty(K)
            bid = np.empty(K, dtype=np.int64)
            order = np.empty(K, dtype=np.int64)
            b_pos = np.empty(_MAX_BUCKETS)
            b_neg = np.empty(_MAX_BUCKETS)
            total = 0.0
            mx = 0.0
            for k in range(K):
                total += t[k]
                mx = max(mx, abs(t[k]))
            if not abs(total) > _DEAD_OUTPUT_RATIO * mx:
                continue
            lo = _TOP_LEVEL * mx
            top = 0
            for k in range(K):
                tv[top] = t[k]
                top += abs(t[k]) >= lo
            cut = _theta_cut(t, total, mx, theta, tv, top, lo, rv, bid, order, b_pos, b_neg)
            for k in range(K):
                kept[r, k] = t[k] != 0.0 and abs(t[k]) >= cut

    @njit(cache=True, inline="always")
    def _delta_run(v, r, out):  # pragma: no cover - compiled
        """out = v − r over one run of a row; 0 where v == r (also ±inf, where v − r is NaN).
        On 1-D slices, so the loop vectorises (2-D indexing per point ran 2.5-6x slower)."""
        for j in range(v.shape[0]):
            x = np.float64(v[j])
            out[j] = 0.0 if x == r[j] else x - r[j]

    @njit(cache=True)
    def _delta_serial(v, ref, out):  # pragma: no cover - compiled
        """_delta of arrays too small to share out (a parallel launch costs ~2 µs)."""
        for b in range(v.shape[0]):
            _delta_run(v[b], ref[0] if ref.shape[0] == 1 else ref[b], out[b])

    @njit(cache=True, parallel=True)
    def _delta(v, ref, out, block):  # pragma: no cover - compiled
        """out = v − ref in float64, rows of ref repeated when it has one, in blocks of
        ``block`` points of a row, blocks in parallel."""
        n = v.shape[1]
        blocks = (n + block - 1) // block
        one = ref.shape[0] == 1
        for k in prange(v.shape[0] * blocks):
            b = k // blocks
            j0 = (k - b * blocks) * block
            j1 = min(n, j0 + block)
            _delta_run(v[b, j0:j1], ref[0 if one else b, j0:j1], out[b, j0:j1])

    @njit(cache=True)
    def _inside(x, lo, hi, bounded, out):  # pragma: no cover - compiled
        """out = lo < x (< hi when ``bounded``), 0/1; NaN gives 0."""
        for i in range(x.shape[0]):
            v = x[i]
            out[i] = (v > lo) & ((v < hi) | (not bounded))

    @njit(cache=True)
    def _any_nonzero(a):  # pragma: no cover - compiled
        """Whether any entry of a (any layout) is non-zero, stopping at the first."""
        for v in a.flat:
            if v != 0:
                return True
        return False

    @njit(cache=True)
    def _live_points(c, y, groups, n, transposed):  # pragma: no cover - compiled
        """The n points (b, q, o) with C != 0, in row-major (b, q, o) order, as the kernel reads
        them: input row, weight row, sign of C, raw output (float64), b·Q + q. c and y are
        C-contiguous (B, Q, O), or (B, O, Q) when ``transposed`` (a conv's own layout)."""
        if transposed:
            B, O, Q = c.shape
        else:
            B, Q, O = c.shape
        per_group = O // groups
        xrow = np.empty(n, dtype=np.int64)
        wrow = np.empty(n, dtype=np.int64)
        csign = np.empty(n, dtype=np.int64)
        yraw = np.empty(n, dtype=np.float64)
        group = np.empty(n, dtype=np.int64)
        i = 0
        # transposed: 8 positions q at a time, so the O rows' cache lines serve all 8
        tile = 8 if transposed else Q
        for b in range(B):
            for q0 in range(0, Q, tile):
                for q in range(q0, min(Q, q0 + tile)):
                    for o in range(O):
                        v = c[b, o, q] if transposed else c[b, q, o]
                        # a branch, not branch-free stores: live points come in runs (dead
                        # channels, dead positions), so it is well predicted (2x faster on
                        # the architecture suite's slices)
                        if v != 0:
                            g = o // per_group if groups > 1 else 0
                            xrow[i] = (b * groups + g) * Q + q
                            wrow[i] = o
                            csign[i] = 1 if v > 0 else -1
                            yraw[i] = np.float64(y[b, o, q] if transposed else y[b, q, o])
                            group[i] = b * Q + q
                            i += 1
        return xrow, wrow, csign, yraw, group

    @njit(cache=True, inline="always")
    def _two_term(a, b, cs, theta):  # pragma: no cover - compiled
        """NNSlicer's signs of a point with two terms a, b and sign of C cs: θ-selection
        without a sort (the larger term alone, or both), as ``policy.theta_keep`` computes it."""
        total = a + b
        ma, mb = abs(a), abs(b)
        if not abs(total) > _DEAD_OUTPUT_RATIO * max(ma, mb):
            return 0, 0
        cut = 0.0
        if theta > 0.0:
            larger = a if ma >= mb else b
            first_enough = abs(total - larger) < theta * abs(total)
            cut = max(ma, mb) if first_enough else min(ma, mb)
        s0 = cs * (1 if total > 0 else -1)
        sa = (s0 if a > 0 else -s0) if a != 0.0 and ma >= cut else 0
        sb = (s0 if b > 0 else -s0) if b != 0.0 and mb >= cut else 0
        return sa, sb

    @njit(cache=True, parallel=True)
    def _two_term_signs(terms, c_sign, theta, out):  # pragma: no cover - compiled
        """_two_term of every row of terms (N, 2)."""
        for i in prange(terms.shape[0]):
            out[i, 0], out[i, 1] = _two_term(terms[i, 0], terms[i, 1], c_sign[i], theta)

    @njit(cache=True, parallel=True)
    def _two_operand_signs(c, ta, tb, theta, out_a, out_b):  # pragma: no cover - compiled
        """_two_term of every point of flat C with terms ta, tb; 0 where C = 0."""
        for i in prange(c.shape[0]):
            if c[i] == 0:
                out_a[i] = 0
                out_b[i] = 0
            else:
                out_a[i], out_b[i] = _two_term(ta[i], tb[i], 1 if c[i] > 0 else -1, theta)

    @njit(cache=True, parallel=True)
    def _sign_product(c, dy, gain, dx, inner, out):  # pragma: no cover - compiled
        """out = sign(c) · sign(dy) · sign(gain) · sign(dx), flat, in one pass (torch makes six);
        the points come in blocks of ``inner`` sharing a gain entry, block j's being
        gain[j % len(gain)] (a gain broadcast over the points)."""
        n, m = out.shape[0], gain.shape[0]
        if m == n:  # a gain per point: no index arithmetic
            for i in prange(n):
                s = np.sign(dy[i]) * np.sign(gain[i]) * np.sign(dx[i])
                out[i] = np.sign(c[i]) * np.int64(s)
            return
        for j in prange(n // inner):
            g = np.sign(gain[j % m])
            for i in range(j * inner, (j + 1) * inner):
                out[i] = np.sign(c[i]) * np.int64(np.sign(dy[i]) * g * np.sign(dx[i]))

    @njit(cache=True, parallel=True)
    def _add_chunks(syn_out, syn):  # pragma: no cover - compiled
        """syn += the per-chunk synapse counts, rows in parallel."""
        for i in prange(syn.shape[0]):
            for c in range(syn_out.shape[0]):
                for k in range(syn.shape[1]):
                    syn[i, k] += syn_out[c, i, k]

    @njit(cache=True, parallel=True)
    def _sum_slots(out):  # pragma: no cover - compiled
        """out[0] += out[1:], in parallel."""
        for i in prange(out.shape[1]):
            for s in range(1, out.shape[0]):
                out[0, i] += out[s, i]

    @njit(cache=True, parallel=True)
    def _weighted_windows(src, rowbase, koff, w, xrow, wrow, csign, yraw, synrow, starts, mode,
                          theta, out, syn_out):  # pragma: no cover - compiled
        K = koff.shape[0]
        last_slot = out.shape[0] - 1
        for chunk in prange(starts.shape[0] - 1):
            slot = min(np.int64(chunk), last_slot)  # one output copy per chunk, or a shared one
            x = np.empty(K)  # the current row's window, gathered once per row
            last = -1
            base = 0
            t = np.empty(K)
            cand = np.empty(K, dtype=np.int64)
            tv = np.empty(K)
            rv = np.empty(K)
            bid = np.empty(K, dtype=np.int64)
            order = np.empty(K, dtype=np.int64)
            b_pos = np.empty(_MAX_BUCKETS)
            b_neg = np.empty(_MAX_BUCKETS)
            for p in range(starts[chunk], starts[chunk + 1]):
                r = xrow[p]
                if r != last:
                    base = rowbase[r]
                    for k in range(K):
                        x[k] = src[base + koff[k]]
                    last = r
                o = wrow[p]
                total = 0.0
                mx = 0.0
                n = 0
                for k in range(K):
                    v = np.float64(w[o, k]) * x[k]
                    t[k] = v
                    total += v
                    a = abs(v)
                    mx = max(mx, a)
                    cand[n] = k  # a superset of the top level |t| >= _TOP_LEVEL * max
                    n += a >= _TOP_LEVEL * mx
                srow = synrow[p]
                if mode == 0:
                    if not abs(total) > _DEAD_OUTPUT_RATIO * mx:
                        continue
                    lo = _TOP_LEVEL * mx
                    top = 0
                    for i in range(n):
                        k = cand[i]
                        v = t[k]
                        cand[top] = k
                        tv[top] = v
                        top += abs(v) >= lo
                    cut = 0.0
                    if theta > 0.0:
                        cut = _theta_cut(t, total, mx, theta, tv, top, lo, rv, bid, order,
                                         b_pos, b_neg)
                    s0 = csign[p] * (1 if total > 0 else -1)
                    # the kept terms are listed first, then their signs added: no
                    # unpredictable branch around the scattered adds
                    m = 0
                    if cut >= lo:  # every kept term is a top-level term
                        for i in range(top):
                            order[m] = cand[i]
                            m += abs(tv[i]) >= cut
                    else:
                        for k in range(K):
                            v = t[k]
                            order[m] = k
                            m += (v != 0.0) & (abs(v) >= cut)
                    for i in range(m):
                        k = order[i]
                        sg = s0 if t[k] > 0 else -s0
                        out[slot, base + koff[k]] += sg
                        syn_out[chunk, srow, k] += sg
                else:
                    flip = -1.0 if yraw[p] < 0 else 1.0
                    cand_total = 0.0
                    top = 0.0
                    for k in range(K):
                        c = max(t[k] * flip, 0.0)
                        t[k] = c
                        cand_total += c
                        top = max(top, c)
                    if top == 0.0:
                        continue
                    cut = _goal_cut(t, top, theta * cand_total, _MAX_BUCKETS, bid, order,
                                    b_pos, b_neg)
                    for k in range(K):
                        if t[k] > 0.0 and t[k] >= cut:
                            out[slot, base + koff[k]] += 1
                            syn_out[chunk, srow, k] += 1


def keep_rows(terms: np.ndarray, theta: float) -> np.ndarray:
    """The kept mask of θ-selection (0 < θ < 1) over float64 ``terms`` (N, K), rows in
    parallel: what ``policy.theta_keep`` returns, without sorting every row."""
    kept = np.zeros(terms.shape, dtype=np.bool_)
    with first_call(_keep_rows):
        _keep_rows(np.ascontiguousarray(terms, dtype=np.float64), float(theta), kept)
    return kept


def delta(v: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Δ = v − ref (float64) of v (B, N) float32/float64 and ref (1 or B, N) float64."""
    out = np.empty(v.shape, dtype=np.float64)
    block = 1 << 14
    if v.size <= block:
        with first_call(_delta_serial):
            _delta_serial(v, ref, out)
    else:
        with first_call(_delta):
            _delta(v, ref, out, block)
    return out


def inside(x: np.ndarray, lo: float, hi: float | None) -> np.ndarray:
    """int8 mask of lo < x < hi (hi None: no upper bound) over flat float x, in one pass
    (torch's comparisons, their ``&`` and bool outputs took 3-6x as long)."""
    out = np.empty(x.shape[0], dtype=np.int8)
    with first_call(_inside):
        _inside(x, float(lo), 0.0 if hi is None else float(hi), hi is not None, out)
    return out


def any_nonzero(a: np.ndarray) -> bool:
    """``a.any()`` that stops at the first non-zero entry (torch reads every entry: ~30 µs for
    a conv's C, checked once per node)."""
    with first_call(_any_nonzero):
        return bool(_any_nonzero(a))


def live_points(c: np.ndarray, y: np.ndarray, groups: int, transposed: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(input row, weight row, sign of C, raw output, b·Q + q) of every point (b, q, o) with
    C != 0, in row-major (b, q, o) order; c int64 and y float32/float64 are (B, Q, O), or
    (B, O, Q) when ``transposed``."""
    c, y = np.ascontiguousarray(c), np.ascontiguousarray(y)
    with first_call(_live_points):
        return _live_points(c, y, groups, np.count_nonzero(c), transposed)


def two_term_signs(terms: np.ndarray, c_sign: np.ndarray, theta: float) -> np.ndarray:
    """NNSlicer's signs (N, 2) int64 of float64 terms (N, 2) with int64 signs of C (N,)."""
    out = np.empty(terms.shape, dtype=np.int64)
    with first_call(_two_term_signs):
        _two_term_signs(terms, c_sign, float(theta), out)
    return out


def two_operand_signs(c: np.ndarray, ta: np.ndarray, tb: np.ndarray, theta: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """NNSlicer's signs (int64) of the two terms of every point of flat int64 C (float64
    terms ta, tb of the same length); 0 where C = 0."""
    out_a, out_b = np.empty(c.shape[0], dtype=np.int64), np.empty(c.shape[0], dtype=np.int64)
    with first_call(_two_operand_signs):
        _two_operand_signs(c, ta, tb, float(theta), out_a, out_b)
    return out_a, out_b


def sign_product(c: np.ndarray, dy: np.ndarray, gain: np.ndarray, dx: np.ndarray,
                 inner: int = 1) -> np.ndarray:
    """sign(c) · sign(dy) · sign(gain) · sign(dx) of flat arrays (int64 c, float64 dy and dx,
    float64 or int8 gain), in int64; point i's gain is gain[(i // inner) % len(gain)] (a gain
    broadcast over the points)."""
    out = np.empty(c.shape[0], dtype=np.int64)
    with first_call(_sign_product):
        _sign_product(c, dy, gain, dx, inner, out)
    return out


def set_threads(threads: int) -> None:
    """Use at most ``threads`` numba threads in this process (torch has its own setting)."""
    if AVAILABLE:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


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


def weighted_windows(src: np.ndarray, rowbase: np.ndarray, koff: np.ndarray, w: np.ndarray,
                     xrow: np.ndarray, wrow: np.ndarray, csign: np.ndarray, yraw: np.ndarray,
                     synrow: np.ndarray, group: np.ndarray, syn: np.ndarray, mode: int,
                     theta: float, overlapping: bool) -> np.ndarray:
    """Run the fused kernel over windows of a flat source; returns the signs added to every
    entry of ``src`` (int64, same shape) and adds the synapse signs to ``syn`` (int64, (·, K)).

    Row r's terms are W[o, k] · src[rowbase[r] + koff[k]], so a conv reads its padded input in
    place (no im2col copy). Rows of one group are never split between chunks; when rows of
    different groups may share entries (``overlapping``, e.g. conv windows), every chunk adds
    into its own copy of the output and the copies are summed.
    """
    threads = numba.get_num_threads()
    # two chunks per thread balance uneven rows; one thread needs one (overlapping windows
    # then share a single output, with no copies to zero and sum)
    chunks = 1 if threads == 1 else threads * 2
    starts = chunk_starts(group, chunks)
    slots = starts.shape[0] - 1 if overlapping else 1
    out = np.zeros((slots, src.shape[0]), dtype=np.int64)  # chunk_starts gives >= 1 chunk
    syn_out = np.zeros((starts.shape[0] - 1, syn.shape[0], koff.shape[0]), dtype=np.int32)
    with first_call(_weighted_windows):
        _weighted_windows(src, rowbase, koff, w, xrow, wrow, csign, yraw, synrow, starts, mode,
                          theta, out, syn_out)
    _add_chunks(syn_out, syn)
    if out.shape[0] > 1:
        _sum_slots(out)
    return out[0]

