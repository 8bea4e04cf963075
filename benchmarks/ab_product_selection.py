"""Slice time of the small ViT with two engine versions, alternating in fresh processes
(the A/B of the product-term selection kernel, benchmarks/NOTES.md).

    git archive <old commit> src | tar -x -C /tmp/eng_old
    python benchmarks/ab_product_selection.py
"""

import json, subprocess, sys, statistics
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
res = {"old": [], "new": []}
for rep in range(3):
    for name, src in (("old", "/tmp/eng_old/src"), ("new", "/work/main/src")):
        out = subprocess.run([sys.executable, "-c", f"SRC={src!r}\n" + CASE], capture_output=True, text=True).stdout.split()
        res[name].append((float(out[0]), int(out[1])))
        print(name, out, flush=True)
for k, v in res.items():
    print(k, "median s/sample", statistics.median(a for a, _ in v), "synapse |sum|", {b for _, b in v})
