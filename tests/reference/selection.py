"""θ-selection of docs/spec.md §4 (steps 1–3; step 4, the kept edge's sign, is applied by the
rules)."""

from __future__ import annotations

import math
from collections.abc import Sequence

DEAD_OUTPUT_RATIO = 1e-3


def sign(v: float) -> int:
    v = float(v)
    return (v > 0) - (v < 0)


def theta_select(terms: Sequence[float], theta: float) -> tuple[list[int], float]:
    """Return ``(kept edge indices, T)`` for the terms ``t_i`` of one output point."""
    terms = [float(t) for t in terms]
    if not terms:
        return [], 0.0
    total = math.fsum(terms)
    biggest = max(abs(t) for t in terms)
    # Step 1: the output did not move (or every term is zero): keep no edge.
    if biggest == 0.0 or abs(total) <= DEAD_OUTPUT_RATIO * biggest:
        return [], total
    # θ = 0 keeps every edge with a non-zero term.
    if theta == 0:
        return [i for i, t in enumerate(terms) if t != 0.0], total
    if not 0 < theta < 1:
        raise ValueError(f"theta must be in [0, 1), got {theta}")
    # Step 2: sort by |t| descending (stable), S_k = sum of the first k,
    # k* = smallest k with |T - S_k| < θ·|T|.
    order = sorted(range(len(terms)), key=lambda i: -abs(terms[i]))
    running = 0.0
    k_star = None
    for k, i in enumerate(order, start=1):
        running += terms[i]
        if abs(total - running) < theta * abs(total):
            k_star = k
            break
    assert k_star is not None, "S_K = T must satisfy the condition for 0 < θ"
    # Step 3: keep every edge with |t_i| >= |t_(k*)| (ties of the k*-th magnitude are kept).
    cut = abs(terms[order[k_star - 1]])
    return [i for i, t in enumerate(terms) if abs(t) >= cut], total
