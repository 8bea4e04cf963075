"""Selective model protection (NNSlicer paper, "model protection") and the attacker we simulate.

The defender hides (e.g. keeps in an enclave) the fraction ``ratio`` of each conv/linear
layer's synapses that matter most, and exposes the rest. Selection per method:

* ``nnslicer``: largest |Σ contributions| over the training samples of the target classes
  (each sample sliced with its label), exactly the pruning importance of
  :mod:`nnslicer.apps.importance`;
* ``effective-path``: largest EffectivePath counts over the same samples;
* ``weight``: largest |w|;  ``random``: uniform noise from ``seed``.

Ties go to the larger |w|, then the lower index. Biases and BatchNorm parameters are exposed
(they are not synapses).

The attacker knows the architecture and every exposed value, re-initialises the hidden
weights with PyTorch's default draw for the layer (U(-1/√fan_in, 1/√fan_in)) and retrains the
*whole* model (everything trainable, Adam, cross-entropy) on ``budget`` labelled samples drawn
at random from its own pool (all classes) for ``epochs`` epochs. Protection is good when the
recovered model's accuracy on the target classes stays low.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from nnslicer.apps.importance import (
    SLICE_KINDS,
    Source,
    check_classes,
    check_method,
    check_ratio,
    count_to_remove,
    ranked,
    synapse_scores,
)
from nnslicer.apps.prune.channels import analyze_channels
from nnslicer.data.datasets import ArrayDataset
from nnslicer.errors import InputError
from nnslicer.training import train_model

PROTECT_METHODS: tuple[str, ...] = ("nnslicer", "effective-path", "weight", "random")


@dataclass
class LayerProtectStats:
    layer: str
    synapses: int
    hidden: int

    @property
    def fraction(self) -> float:
        return self.hidden / self.synapses if self.synapses else 0.0


@dataclass
class ProtectReport:
    """Outcome of :func:`protect`; ``hidden`` (weight name -> bool) is not serialised."""

    method: str
    classes: list[int]
    ratio: float
    layers: list[LayerProtectStats]
    hidden: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def synapses(self) -> int:
        return sum(s.synapses for s in self.layers)

    @property
    def hidden_count(self) -> int:
        return sum(s.hidden for s in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "classes": self.classes,
            "ratio": self.ratio,
            "synapses": self.synapses,
            "hidden": self.hidden_count,
            "layers": [{**vars(s), "fraction": s.fraction} for s in self.layers],
        }


def protect(
    model: nn.Module,
    source: Source = None,
    classes: Iterable[int | str] | None = None,
    ratio: float = 0.1,
    method: str = "nnslicer",
    *,
    data: ArrayDataset | None = None,
    samples_per_class: int | None = None,
    theta: float = 0.2,
    ep_theta: float = 0.5,
    seed: int = 0,
    progress: bool = False,
) -> tuple[nn.Module, ProtectReport]:
    """Hide the top ``ratio`` synapses of each layer; returns ``(exposed model, report)``.

    The exposed model is a copy with the hidden weights set to 0; ``report.hidden`` holds the
    masks and the hidden values are those of ``model`` at the masks. ``source`` and ``data``
    work as in :func:`nnslicer.apps.prune.prune`.
    """
    method = check_method(method, PROTECT_METHODS)
    ratio = check_ratio(ratio)
    graph = analyze_channels(model, data.x[:1] if data is not None else None)
    k_total = graph.num_outputs
    names = data.classes if data is not None else None
    if classes is None and method not in SLICE_KINDS:
        targets: list[int] = []
    else:
        targets = check_classes(classes, k_total, names)
    scores = synapse_scores(
        model, graph, method, targets, source, data, seed=seed,
        samples_per_class=samples_per_class, theta=theta, ep_theta=ep_theta, progress=progress,
    )
    hidden: dict[str, Tensor] = {}
    stats = []
    for path, m in graph.layers.items():
        primary, secondary = scores[path]
        w = m.weight
        if secondary is None:
            secondary = w.detach().abs()
        mask = torch.zeros(w.shape, dtype=torch.bool)
        order = ranked(primary, secondary, descending=True)
        mask.view(-1)[order[: count_to_remove(ratio, w.numel())]] = True
        hidden[f"{path}.weight"] = mask
        stats.append(LayerProtectStats(path, w.numel(), int(mask.sum())))
    exposed = copy.deepcopy(model).eval()
    params = dict(exposed.named_parameters())
    with torch.no_grad():
        for name, mask in hidden.items():
            params[name].masked_fill_(mask.to(params[name].device), 0.0)
    return exposed, ProtectReport(method, targets, ratio, stats, hidden)


def reinitialise_hidden(model: nn.Module, hidden: Mapping[str, Tensor], seed: int = 0
                        ) -> nn.Module:
    """Fill the hidden entries of ``model`` (in place) with PyTorch's default init draw."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in hidden.items():
            p = params[name]
            bound = 1.0 / math.sqrt(max(p[0].numel(), 1))
            fresh = (torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound
            p.copy_(torch.where(mask.to(p.device), fresh.to(p), p))
    return model


def simulate_attack(
    exposed: nn.Module,
    hidden: Mapping[str, Tensor],
    pool: ArrayDataset,
    *,
    budget: int,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """The attacker's recovered model: hidden weights re-initialised, then the whole model
    retrained on ``budget`` random samples of ``pool`` for ``epochs`` epochs (budget 0: no
    training). The same ``seed`` draws the same samples for every protection method."""
    if budget < 0 or epochs < 0:
        raise InputError(f"budget and epochs must be >= 0, got {budget} and {epochs}")
    if budget > len(pool):
        raise InputError(f"budget {budget} exceeds the attacker's {len(pool)} samples")
    model = reinitialise_hidden(copy.deepcopy(exposed), hidden, seed)
    if budget > 0 and epochs > 0:
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
        train_model(model, pool.subset(order[:budget]), None, epochs=epochs, lr=lr,
                    batch_size=batch_size, seed=seed, progress=progress)
    return model.eval()
