"""Time the weighted-sum kernel alone on the inputs the real ResNet-10 layers pass it.

Usage: python benchmarks/kernel_layers.py [threads]
Random weights (seed 0), profile on 32 random inputs, one 4-sample slice whose kernel calls are
captured; each captured call is then re-run (min of 3) and the total reported in ns per term
(a term = one weight × input product of one live output point).
"""

import sys
import time

import numba
import torch
from ab_kernels import capture  # the same ResNet-10 slice and captured calls

from nnslicer.backward import kernels

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(threads)
numba.set_num_threads(threads)
calls = capture(None)
run = kernels.weighted_windows

total_s, total_terms = 0.0, 0
for args in calls:
    terms = args[4].shape[0] * args[2].shape[0]  # live points × K
    best = float("inf")
    for _ in range(3):
        args[10][:] = 0  # the synapse buffer is added to in place
        start = time.perf_counter()
        run(*args)
        best = min(best, time.perf_counter() - start)
    total_s += best
    total_terms += terms
print(f"{len(calls)} kernel calls, {total_terms / 1e6:.1f} M terms, {total_s:.3f} s, "
      f"{total_s / total_terms * 1e9:.2f} ns/term ({threads} thread(s))")
