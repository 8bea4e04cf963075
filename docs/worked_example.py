"""The worked example of docs/algorithm.md, computed by nnslicer itself.

Run: python docs/worked_example.py  (tests/cli/test_docs.py checks the doc shows this output)
"""

import torch
from torch import nn

import nnslicer

torch.set_printoptions(precision=2, sci_mode=False)
model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)).double().eval()
with torch.no_grad():
    model[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]]))
    model[0].bias.zero_()
    model[2].weight.copy_(torch.tensor([[2.0, -1.0], [-1.0, 1.0]]))
    model[2].bias.zero_()

profiling_set = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]],
                             dtype=torch.float64)
sample = torch.tensor([[2.0, 0.0, 1.0]], dtype=torch.float64)

slicer = nnslicer.Slicer(model, theta=0.2)
profile = slicer.profile(profiling_set)
print("profile means:", {k: [round(v, 3) for v in profile.mean(k).tolist()] for k in profile.sums})
print("logits of the sample:", model(sample).detach().squeeze().tolist())
s = slicer.slice(sample)
for name, c in s.neurons.items():
    print(f"C[{name}] =", c.tolist())
for name, c in s.synapses.items():
    print(f"contrib[{name}] =", c.tolist())
