"""Slice time of two engine versions on one zoo model, alternating in fresh processes.

    git archive <commit> src | tar -x -C /tmp/eng_old
    python benchmarks/ab_engines.py resnet10 3 /tmp/eng_old/src

Each process builds the model (random weights, seed 0), profiles 32 random inputs, slices 2
samples to warm up and then 16 timed (θ = 0.2, batch 16, 1 torch and 1 numba thread). The
engines run old, new, old, new…, so both see the same machine drift.
"""

import json
import statistics
import subprocess
import sys
from pathlib import Path

CASE = r'''
import json, sys, time, torch
sys.path.insert(0, SRC)
import nnslicer
from nnslicer.backward import kernels
from nnslicer.models.zoo import build_model
torch.set_num_threads(1)
kernels.set_threads(1)
torch.manual_seed(0)
shape = (1, 28, 28) if ARCH == "lenet5" else (3, 32, 32)
model = build_model(ARCH, in_channels=shape[0], num_classes=10, width=64).eval()
slicer = nnslicer.Slicer(model, theta=0.2, batch_size=16)
g = torch.Generator().manual_seed(1)
slicer.profile([torch.rand(32, *shape, generator=g)])
x = torch.rand(16, *shape, generator=g)
slicer.slice(x[:2])
start = time.perf_counter()
slicer.slice(x)
print(json.dumps({"s_per_sample": (time.perf_counter() - start) / 16}))
'''


def main() -> None:
    arch, reps, old = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    new = str(Path(__file__).resolve().parents[1] / "src")
    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(reps):
        for label, src in (("old", old), ("new", new)):
            code = CASE.replace("SRC", repr(src)).replace("ARCH", repr(arch))
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout
            times[label].append(json.loads(out.splitlines()[-1])["s_per_sample"])
            print(f"{label} {arch} {times[label][-1]:.4f} s/sample", flush=True)
    for label, values in times.items():
        print(f"{label} median {statistics.median(values):.4f} s/sample "
              f"({', '.join(f'{v:.4f}' for v in values)})")


if __name__ == "__main__":
    main()
