"""What an LSTM classifier becomes when nnslicer traces it (docs/composite.md prints this)."""

import torch
from torch import nn

import nnslicer


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 2, batch_first=True)
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


torch.manual_seed(0)
model = Classifier().eval()
slicer = nnslicer.Slicer(model)
slicer.profile(torch.randn(32, 2, 3))  # sequences of 2 steps: the graph is unrolled over 2
for row in slicer.nodes():
    node = slicer.graph.by_name[row["node"]]
    rule = type(node.rule).__name__ if node.rule is not None else "(input)"
    weights = ", ".join(node.rule.synapse_names(node)) if node.rule is not None else ""
    print(f"{row['node']:<16} {row['operator']:<14} {rule:<20} {weights}")
s = slicer.slice(torch.randn(4, 2, 3))
print({name: tuple(t.shape) for name, t in s.synapses.items()})
