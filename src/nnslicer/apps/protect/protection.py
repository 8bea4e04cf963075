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

The attacker knows the architecture and every exposed value (weights, biases, BatchNorm
parameters and statistics) but not the hidden values. It re-initialises the hidden weights and
retrains on ``budget`` labelled samples drawn at random from its own pool (all classes) for
``epochs`` epochs (Adam, cross-entropy). Three attackers (:data:`ATTACKERS`):

* ``all``: hidden weights redrawn from PyTorch's default draw for the layer
  (U(-1/√fan_in, 1/√fan_in)); *every* parameter retrained, BatchNorm statistics re-estimated;
* ``hidden``: the same draw, but only the hidden weights are trained: every exposed value
  (weights, biases, BatchNorm parameters and running statistics) stays exactly as exposed —
  the plainest reading of "recover the protected synapses through retraining";
* ``stats``: hidden weights drawn from N(μ, σ²) with μ, σ the mean and standard deviation of
  the same layer's exposed weights (the scale of the trained layer, not of a fresh one), then
  every parameter retrained as ``all`` does. A layer with nothing exposed falls back to the
  default draw.

Protection is good when the recovered model's accuracy on the target classes stays low.
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

ATTACKERS: dict[str, str] = {
    "all": "hidden weights redrawn from PyTorch's default init (U(-1/sqrt(fan_in), "
           "1/sqrt(fan_in))); every parameter retrained, BatchNorm statistics re-estimated",
    "hidden": "hidden weights redrawn from PyTorch's default init; only they are retrained "
              "(exposed weights, biases, BatchNorm parameters and statistics frozen)",
    "stats": "hidden weights drawn from N(mean, std^2) of the layer's exposed weights; every "
             "parameter retrained, BatchNorm statistics re-estimated",
}


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


def check_attacker(attacker: str) -> str:
    if attacker not in ATTACKERS:
        raise InputError(f"unknown attacker {attacker!r}; choose from: {', '.join(ATTACKERS)}")
    return attacker


def _default_draw(p: Tensor, g: torch.Generator) -> Tensor:
    bound = 1.0 / math.sqrt(max(p[0].numel(), 1))
    return (torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound


def reinitialise_hidden(model: nn.Module, hidden: Mapping[str, Tensor], seed: int = 0
                        ) -> nn.Module:
    """Fill the hidden entries of ``model`` (in place) with PyTorch's default init draw."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in hidden.items():
            p = params[name]
            fresh = _default_draw(p, g)
            p.copy_(torch.where(mask.to(p.device), fresh.to(p), p))
    return model


def init_from_exposed_stats(model: nn.Module, hidden: Mapping[str, Tensor], seed: int = 0
                            ) -> nn.Module:
    """Fill the hidden entries of ``model`` (in place) with draws from N(μ, σ²), μ and σ the
    mean and (population) standard deviation of the layer's exposed entries; a layer with no
    exposed entry gets the default draw of :func:`reinitialise_hidden`."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in hidden.items():
            p = params[name]
            m = mask.to(p.device)
            shown = p.detach()[~m].to(torch.float64)
            if shown.numel() == 0:
                fresh = _default_draw(p, g)
            else:
                mu, sigma = shown.mean(), shown.std(unbiased=False)
                fresh = torch.randn(p.shape, generator=g, dtype=torch.float64) * sigma + mu
            p.copy_(torch.where(m, fresh.to(p), p))
    return model


def train_hidden_only(
    model: nn.Module,
    hidden: Mapping[str, Tensor],
    data: ArrayDataset,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> nn.Module:
    """Train only the hidden entries of ``model`` in place (Adam, cross-entropy).

    Every other value stays bit-for-bit as it was: parameters without a hidden entry are not
    optimised, exposed entries of the others get zero gradients and are copied back after each
    step, and BatchNorm layers run in eval mode (their statistics are exposed values too). The
    batches are the ones :func:`nnslicer.training.train_model` draws for the same ``seed``.
    """
    params = dict(model.named_parameters())
    unknown = sorted(set(hidden) - set(params))
    if unknown:
        raise InputError(f"hidden masks name parameters the model lacks: {', '.join(unknown)}")
    masks = {n: m.to(params[n].device) for n, m in hidden.items() if bool(m.any())}
    if not masks or len(data) == 0 or epochs <= 0:
        return model.eval()
    trainable = {n: params[n] for n in masks}
    shown = {n: p.detach().clone() for n, p in trainable.items()}
    flags = {n: p.requires_grad for n, p in params.items()}
    optimizer = torch.optim.Adam(trainable.values(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    try:
        for n, p in params.items():
            p.requires_grad_(n in trainable)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.train()
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
            for epoch in range(epochs):
                for x, y in data.batches(batch_size, shuffle=True, seed=seed * 1_000_003 + epoch):
                    optimizer.zero_grad(set_to_none=True)
                    loss_fn(model(x), y).backward()
                    for n, p in trainable.items():
                        if p.grad is not None:
                            p.grad.mul_(masks[n])
                    optimizer.step()
                    with torch.no_grad():
                        for n, p in trainable.items():
                            p.copy_(torch.where(masks[n], p, shown[n]))
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
    return model.eval()


def simulate_attack(
    exposed: nn.Module,
    hidden: Mapping[str, Tensor],
    pool: ArrayDataset,
    *,
    budget: int,
    attacker: str = "all",
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """The attacker's recovered model (see the module docstring for the ``attacker`` kinds):
    hidden weights re-initialised, then retrained on the first ``budget`` samples of a random
    permutation of ``pool`` for ``epochs`` epochs (budget 0: no training). The same ``seed``
    draws the same samples and batches for every protection method and attacker."""
    attacker = check_attacker(attacker)
    if budget < 0 or epochs < 0:
        raise InputError(f"budget and epochs must be >= 0, got {budget} and {epochs}")
    if budget > len(pool):
        raise InputError(f"budget {budget} exceeds the attacker's {len(pool)} samples")
    init = init_from_exposed_stats if attacker == "stats" else reinitialise_hidden
    model = init(copy.deepcopy(exposed), hidden, seed)
    if budget > 0 and epochs > 0:
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
        data = pool.subset(order[:budget])
        if attacker == "hidden":
            train_hidden_only(model, hidden, data, epochs=epochs, lr=lr,
                              batch_size=batch_size, seed=seed)
        else:
            train_model(model, data, None, epochs=epochs, lr=lr, batch_size=batch_size,
                        seed=seed, progress=progress)
    return model.eval()
