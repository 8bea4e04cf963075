"""Quick slice timing of one zoo model: CPU and wall seconds per sample, plus a cProfile top list.

Usage: python benchmarks/slice_cpu.py resnet10 16 [threads]
Random weights (seed 0), profile on 32 random inputs, θ = 0.2.
"""

import cProfile
import pstats
import sys
import time

import numba
import torch

import nnslicer
from nnslicer.models.zoo import build_model

arch, n = sys.argv[1], int(sys.argv[2])
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
torch.manual_seed(0)
torch.set_num_threads(threads)
numba.set_num_threads(threads)
shape = (1, 28, 28) if arch == "lenet5" else (3, 32, 32)
model = build_model(arch, in_channels=shape[0], num_classes=10, width=64).eval()
slicer = nnslicer.Slicer(model, theta=0.2, batch_size=16)
slicer.profile([torch.rand(32, *shape)])
x = torch.rand(n, *shape)
slicer.slice(x[:1])  # warm-up (numba compiles on first use)
cpu, wall = time.process_time(), time.perf_counter()
cProfile.run("slicer.slice(x)", "/tmp/slice_cpu.prof")
print(f"{arch} batch {n} threads {threads}: cpu {(time.process_time() - cpu) / n:.4f} s/sample, "
      f"wall {(time.perf_counter() - wall) / n:.4f} s/sample")
pstats.Stats("/tmp/slice_cpu.prof").sort_stats("tottime").print_stats(8)
