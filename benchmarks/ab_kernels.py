"""The weighted-sum kernel of two source trees, timed interleaved on the same captured calls.

    git archive <commit> src | tar -x -C /tmp/eng_old
    python benchmarks/ab_kernels.py /tmp/eng_old/src src              # ResNet-10 layers
    python benchmarks/ab_kernels.py /tmp/eng_old/src src --entry wrn_cifar

The calls ``kernels.weighted_windows`` receives while the installed engine slices 4 ResNet-10
samples (random weights, seed 0, as in ``kernel_layers.py``) or 8 samples of a
``tests/architectures`` entry are captured. Each tree's ``backward/kernels.py`` is then loaded
on its own (compiled without numba's disk cache) and every call is run 5 times per tree,
alternating trees, keeping each tree's fastest run; the outputs must be identical. One numba
thread. Reported: ns per term (a term = one weight × input product of one live output point).
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numba
import numpy as np
import torch

import nnslicer
from nnslicer.backward import kernels


def capture(entry: str | None) -> list[list]:
    torch.manual_seed(0)
    if entry is None:
        from nnslicer.models.zoo import build_model

        model = build_model("resnet10", in_channels=3, num_classes=10, width=64).eval()
        slicer = nnslicer.Slicer(model, theta=0.2, batch_size=16)
        slicer.profile([torch.rand(32, 3, 32, 32)])
        x = torch.rand(4, 3, 32, 32)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from architectures import SUITE

        spec = SUITE[entry]
        slicer = nnslicer.Slicer(spec.model(0))
        slicer.profile([spec.inputs(8, 100 + i) for i in range(4)])
        x = spec.inputs(8, 7)
    calls, run = [], kernels.weighted_windows

    def record(*args):
        calls.append([a.copy() if hasattr(a, "copy") else a for a in args])
        return run(*args)

    kernels.weighted_windows = record
    try:
        slicer.slice(x)
    finally:
        kernels.weighted_windows = run
    return calls


def load(tree: str, index: int) -> types.ModuleType:
    path = Path(tree) / "nnslicer" / "backward" / "kernels.py"
    module = types.ModuleType(f"kernels_{index}")
    sys.modules[module.__name__] = module  # numba resolves globals through the module
    source = path.read_text().replace("cache=True", "cache=False")
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="src directories holding nnslicer/")
    parser.add_argument("--entry", help="a tests/architectures entry instead of ResNet-10")
    args = parser.parse_args()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    calls = capture(args.entry)
    modules = [load(tree, i) for i, tree in enumerate(args.trees)]
    best, terms = np.zeros(len(modules)), 0
    for call in calls:
        terms += call[4].shape[0] * call[2].shape[0]  # live points × K
        results = []
        for module in modules:  # also compiles each tree's kernel before timing
            call[10][:] = 0  # the synapse buffer is added to in place
            results.append((module.weighted_windows(*call), call[10].copy()))
        for out, syn in results[1:]:
            if not (np.array_equal(out, results[0][0]) and np.array_equal(syn, results[0][1])):
                raise SystemExit("the trees' kernels give different results")
        fastest = np.full(len(modules), np.inf)
        for _ in range(5):
            for i, module in enumerate(modules):
                call[10][:] = 0
                start = time.perf_counter()
                module.weighted_windows(*call)
                fastest[i] = min(fastest[i], time.perf_counter() - start)
        best += fastest
    print(f"{len(calls)} kernel calls, {terms / 1e6:.1f} M terms, 1 thread")
    for tree, seconds in zip(args.trees, best, strict=True):
        print(f"{tree}: {seconds / terms * 1e9:.2f} ns/term")


if __name__ == "__main__":
    main()
