"""Slice time of the small ViT with two engine versions, alternating in fresh processes
(the A/B of the product-term selection kernel, benchmarks/NOTES.md).

    git archive <old commit> src | tar -x -C /tmp/eng_old
    python benchmarks/ab_product_selection.py [OLD_SRC]

Each process prints seconds per sample and the total |synapse count| (equal for equal
slices); the engines run old, new, old, new…
"""

import statistics
import subprocess
import sys
from pathlib import Path

NEW_SRC = str(Path(__file__).resolve().parent.parent / "src")
CASE = r'''
import sys, time, torch
sys.path.insert(0, SRC)
import nnslicer
from nnslicer.backward import kernels
from nnslicer.models.zoo import build_model
torch.set_num_threads(1); kernels.set_threads(1); torch.manual_seed(0)
model = build_model("vit", in_channels=3, num_classes=10, input_size=32).eval()
s = nnslicer.Slicer(model, theta=0.2, batch_size=16)
g = torch.Generator().manual_seed(1)
s.profile([torch.rand(32, 3, 32, 32, generator=g)])
x = torch.rand(18, 3, 32, 32, generator=g)
s.slice(x[:2])
t = time.perf_counter(); r = s.slice(x[2:]); dt = (time.perf_counter() - t) / 16
print(dt, int(sum(v.abs().sum() for v in r.synapses.values())))
'''


def main() -> None:
    old_src = sys.argv[1] if len(sys.argv) > 1 else "/tmp/eng_old/src"
    results: dict[str, list[tuple[float, int]]] = {"old": [], "new": []}
    for _ in range(3):
        for name, src in (("old", old_src), ("new", NEW_SRC)):
            out = subprocess.run([sys.executable, "-c", f"SRC={src!r}\n" + CASE],
                                 capture_output=True, text=True, check=True).stdout.split()
            results[name].append((float(out[0]), int(out[1])))
            print(name, out, flush=True)
    for name, runs in results.items():
        print(name, "median s/sample", statistics.median(s for s, _ in runs),
              "synapse |sum|", {total for _, total in runs})


if __name__ == "__main__":
    main()
