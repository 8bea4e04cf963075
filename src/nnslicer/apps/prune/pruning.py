"""Class-targeted pruning (NNSlicer paper, "network simplification and pruning") and baselines.

Every conv and linear layer loses the fraction ``ratio`` of its synapses (weight elements) with
the smallest importance; a neuron (output channel / unit) whose synapses are all gone is removed:
its bias is zeroed, and so is the BatchNorm right after it, so that it outputs exactly 0.

Importance per method (larger = kept longer):

* ``nnslicer``: |Σ contributions| of the synapse over the training samples of the target
  classes, each sample sliced with its own label as the criterion (= ``|slice(x_T, y_T)|``);
* ``nnslicer-all``: the same over the samples of every class;
* ``effective-path``: the EffectivePath membership counts (docs/spec.md §7) over the same samples;
* ``weight``: |w|;  ``random``: uniform noise from ``seed``;
* ``channel``: whole filters (rows) with the smallest mean |w| go, ``ratio`` of the filters.

Ties are broken deterministically: by |w| (smaller goes first) for the slice methods, then by
the flat index. The classifier layer is pruned like every other weighted layer (as in the
paper) unless ``prune_classifier=False``. A layer that would lose every neuron keeps its most
important one (whole filter restored) and a :class:`PruneWarning` says so.

Mean compensation (``compensate=True``) folds what a removed input contributed on average into
the bias: ``bias[o] += Σ w[o, i] · mean(x_i)`` over the inputs ``i`` that neuron ``o`` lost,
either because the synapse was pruned or because the neuron feeding ``x_i`` was removed (an
input is lost with its neuron where every operator between them maps 0 to 0). Means come from
the original model on the training data: the profile means (docs/spec.md §2) of the nodes the
layers read. For a conv, ``mean(x_i)`` of a synapse is the input mean map averaged over the
positions the synapse sees (its patch offset over all output positions, zero padding included,
the padding of the conv's rule): the shift is exact on average over positions, but a bias is
one number per channel while the lost term's mean varies over the map, so each position gets
the average. Means are those of the unpruned model: pruning upstream changes them, which is not
modelled. A conv without bias that is followed by BatchNorm gets the shift through the
BatchNorm's bias. Removed neurons stay at 0.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nnslicer.apps.importance import (
    SLICE_KINDS,
    ClassContributions,
    Source,
    check_classes,
    check_method,
    check_ratio,
    check_same_model,
    count_to_remove,
    make_slicer,
    ranked,
    synapse_scores,
)
from nnslicer.data.datasets import ArrayDataset
from nnslicer.errors import InputError
from nnslicer.profile.profile import Profile
from nnslicer.rules.weighted_sum import explicit_padding
from nnslicer.slicer import Slicer
from nnslicer.training import train_model

from .channels import ChannelGraph, analyze_channels, quiet_slicer

PRUNE_METHODS: tuple[str, ...] = (
    "nnslicer", "nnslicer-all", "effective-path", "weight", "channel", "random",
)  # fmt: skip


class PruneWarning(UserWarning):
    """Pruning had to deviate from what was asked (e.g. a layer kept one neuron)."""


# ------------------------------------------------------------------------------- the report


@dataclass
class LayerPruneStats:
    """What pruning did to one conv/linear layer."""

    layer: str
    kind: str
    synapses: int
    removed: int
    neurons: int
    neurons_removed: int
    kept_one: bool = False  # every neuron would have gone; the most important one was kept
    compensated: bool = False

    @property
    def fraction(self) -> float:
        return self.removed / self.synapses if self.synapses else 0.0


@dataclass
class PruneReport:
    """Outcome of :func:`prune`; ``masks`` (param name -> bool keep mask) is not serialised."""

    method: str
    classes: list[int]
    ratio: float
    compensate: bool
    prune_classifier: bool
    layers: list[LayerPruneStats]
    warnings: list[str]
    masks: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def synapses(self) -> int:
        return sum(s.synapses for s in self.layers)

    @property
    def removed(self) -> int:
        return sum(s.removed for s in self.layers)

    @property
    def fraction(self) -> float:
        return self.removed / self.synapses if self.synapses else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "classes": self.classes,
            "ratio": self.ratio,
            "compensate": self.compensate,
            "prune_classifier": self.prune_classifier,
            "synapses": self.synapses,
            "synapses_removed": self.removed,
            "fraction_removed": self.fraction,
            "layers": [
                {**vars(s), "fraction": s.fraction} for s in self.layers
            ],
            "warnings": self.warnings,
        }


# ------------------------------------------------------------------------------- the masks


@dataclass
class MaskPlan:
    keep: dict[str, Tensor]  # layer path -> bool, shape of its weight
    removed_neurons: dict[str, Tensor]  # layer path -> bool (O,)
    stats: dict[str, LayerPruneStats]
    warnings: list[str]


def plan_masks(
    graph: ChannelGraph,
    scores: Mapping[str, tuple[Tensor, Tensor | None]],
    ratio: float,
    *,
    structured: bool = False,
    prune_classifier: bool = True,
    descending: bool = False,
) -> MaskPlan:
    """Remove ``ratio`` of each layer's synapses (or rows, if ``structured``) by score."""
    keep, removed_neurons, stats, warns = {}, {}, {}, []
    for path, m in graph.layers.items():
        w = m.weight
        n_out = w.shape[0]
        mask = torch.ones(w.shape, dtype=torch.bool)
        primary, secondary = scores[path]
        skip = path == graph.classifier and not prune_classifier
        if structured and not skip:
            row = primary.reshape(n_out, -1).mean(1)
            order = ranked(row, None, descending)
            mask[order[: count_to_remove(ratio, n_out)]] = False
        elif not skip:
            order = ranked(primary, secondary, descending)
            mask.view(-1)[order[: count_to_remove(ratio, w.numel())]] = False
        gone = ~mask.reshape(n_out, -1).any(1)
        kept_one = False
        if gone.all() and n_out > 0:
            per_neuron = primary.reshape(n_out, -1).sum(1)
            tie = secondary.reshape(n_out, -1).sum(1) if secondary is not None else None
            best = int(ranked(per_neuron, tie, descending=True)[0])
            mask[best] = True
            gone[best] = False
            kept_one = True
            warns.append(f"layer '{path}' would lose all {n_out} neurons; kept the most "
                         f"important one (#{best})")
        keep[path] = mask
        removed_neurons[path] = gone
        stats[path] = LayerPruneStats(
            layer=path, kind=type(m).__name__, synapses=w.numel(),
            removed=int((~mask).sum()), neurons=n_out, neurons_removed=int(gone.sum()),
            kept_one=kept_one,
        )
    return MaskPlan(keep, removed_neurons, stats, warns)


def parameter_masks(graph: ChannelGraph, plan: MaskPlan) -> dict[str, Tensor]:
    """Keep masks by parameter name: weights, the biases and direct BatchNorms of neurons."""
    masks = {}
    for path, m in graph.layers.items():
        prefix = f"{path}." if path else ""
        masks[f"{prefix}weight"] = plan.keep[path]
        alive = ~plan.removed_neurons[path]
        if m.bias is not None:
            masks[f"{prefix}bias"] = alive
        norm = graph.direct_norm.get(path)
        if norm is not None:
            masks[f"{norm}.weight"] = alive
            masks[f"{norm}.bias"] = alive
    return masks


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Zero the masked-out entries of ``model``'s parameters, in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            if name in params:
                params[name].mul_(mask.to(params[name].device, params[name].dtype))
    return model


# ------------------------------------------------------------------------ mean compensation


def input_profile(model: nn.Module, data: ArrayDataset) -> Profile:
    """The profile of ``model`` over ``data`` (docs/spec.md §2) whose means of the layers'
    inputs mean compensation folds into the biases."""
    return quiet_slicer(model).profile(data.batches(256))


def layer_input_means(profile: Profile, graph: ChannelGraph) -> dict[str, Tensor]:
    """Mean input of every conv (a (C, H, W) or (C, L) map) and linear layer (per feature):
    the profile mean of the node the layer reads (float64). ``graph`` is analysed with an
    example input, which lets the profile be checked against the model."""
    _needs_example(graph)
    profile.check_model(graph.operators)
    means = {}
    for path, m in graph.layers.items():
        mean = profile.mean(graph.input_node[path])
        if m.weight.dim() == 2:  # a linear layer on (..., features): the mean over the rest
            mean = mean.reshape(-1, mean.shape[-1]).mean(0)
        means[path] = mean
    return means


def compensation(graph: ChannelGraph, plan: MaskPlan, means: Mapping[str, Tensor]
                 ) -> dict[str, Tensor]:
    """Bias shift per layer: Σ over lost inputs of w · mean(input) (see the module docstring).

    ``graph`` must be analysed with an example input: an input channel is lost with the
    neurons writing it only where every operator between them maps 0 to 0.
    """
    _needs_example(graph)
    dead_groups: dict[int, Tensor] = {}
    direct = set(graph.direct_norm.values())
    for gi, g in enumerate(graph.groups):
        if g.fixed_source or not g.producers or not g.channels:
            continue
        dead = torch.ones(g.channels, dtype=torch.bool)
        for p in g.producers:
            dead &= plan.removed_neurons[p]
        for name, module in g.passes.items():
            if module not in direct:  # a direct BatchNorm is zeroed with its neuron
                dead &= graph.stays_zero(name, g.channels)
        if dead.any():
            dead_groups[gi] = dead
    shifts = {}
    for path, m in graph.layers.items():
        w = m.weight.detach().to(torch.float64).cpu()
        dense = w.dim() == 2
        lost = ~plan.keep[path]
        dead = dead_groups.get(graph.input_group[path])
        if dead is not None:
            if dense:
                dead = dead.repeat_interleave(graph.input_positions[path])
                lost = lost | dead[None, :]
            else:
                lost = lost | dead.view(1, -1, *([1] * (w.dim() - 2)))
        if not lost.any():
            continue
        mean = means[path].to(torch.float64).cpu()
        if dense:
            shift = (w * lost) @ mean
        else:
            shift = (w * lost).flatten(1) @ patch_means(m, mean)
        shift[plan.removed_neurons[path]] = 0.0
        shifts[path] = shift
    return shifts


def _needs_example(graph: ChannelGraph) -> None:
    if graph.keeps_zero is None:
        raise InputError("mean compensation needs the channels analysed with an example input: "
                         "analyze_channels(model, x)")


def patch_means(conv: nn.Module, mean_map: Tensor) -> Tensor:
    """Mean input seen by each synapse of ``conv``: the input mean map, unfolded into the
    conv's patches (zero padding included) and averaged over output positions; flat (C·k·k,)."""
    one_d = mean_map.dim() == 2  # a Conv1d is a Conv2d over a height of 1, as in its rule
    x = mean_map[None, :, None] if one_d else mean_map[None]
    kernel = (1, *conv.kernel_size) if one_d else tuple(conv.kernel_size)
    stride = (1, *conv.stride) if one_d else tuple(conv.stride)
    dilation = (1, *conv.dilation) if one_d else tuple(conv.dilation)
    x = F.pad(x, explicit_padding(conv.padding, kernel, dilation, 1 if one_d else 2))
    cols = F.unfold(x, kernel, dilation=dilation, stride=stride)
    return cols[0].mean(1)


def _add_bias_shift(model: nn.Module, graph: ChannelGraph, path: str, shift: Tensor) -> str | None:
    modules = dict(model.named_modules())
    m = modules[path]
    with torch.no_grad():
        if m.bias is not None:
            m.bias.add_(shift.to(m.bias))
            return None
        norm_path = graph.direct_norm.get(path)
        norm = modules[norm_path] if norm_path is not None else None
        if norm is not None and norm.affine:
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            norm.bias.add_(shift.to(norm.bias) * scale)
            return None
        m.bias = nn.Parameter(shift.to(m.weight))
    return f"layer '{path}' had no bias; mean compensation added one (state dict changed)"


# ------------------------------------------------------------------------------------ prune


def prune(
    model: nn.Module,
    source: Source = None,
    classes: Iterable[int | str] | None = None,
    ratio: float = 0.5,
    method: str = "nnslicer",
    *,
    data: ArrayDataset | None = None,
    compensate: bool = False,
    prune_classifier: bool = True,
    samples_per_class: int | None = None,
    theta: float = 0.2,
    ep_theta: float = 0.5,
    profile: Profile | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[nn.Module, PruneReport]:
    """Prune a copy of ``model`` for target ``classes``; returns ``(pruned, report)``.

    ``source`` gives the importance of slice methods: a :class:`ClassContributions`, a
    ``Slicer``/``EffectivePath`` of this model (sliced on ``data``), an explicit mapping
    ``weight name -> importance`` (any method label), or None (a slicer is built with ``theta``
    / ``ep_theta`` and run on ``data``, the training set). ``profile``, a profile of ``model``
    over the training data (:func:`input_profile`), saves computing one for ``compensate``;
    without it the slicer's own is used when it was profiled on ``data`` here.
    """
    method = check_method(method, PRUNE_METHODS)
    ratio = check_ratio(ratio)
    if compensate and profile is None and data is None:
        raise InputError("mean compensation needs the training data (data=...)")
    slicer = _slicer_for(model, method, source, theta, ep_theta)
    unprofiled = slicer is not None and slicer.current_profile is None
    example = data.x[:1] if data is not None else (
        profile.example_input() if profile is not None else None)
    graph = analyze_channels(model, example, slicer=slicer)
    names = data.classes if data is not None else None
    if classes is None and method in ("weight", "channel", "random", "nnslicer-all"):
        targets: list[int] = []
    else:
        targets = check_classes(classes, graph.num_outputs, names)
    scores = synapse_scores(
        model, graph, method, targets, slicer or source, data, seed=seed,
        samples_per_class=samples_per_class, theta=theta, ep_theta=ep_theta, progress=progress,
    )
    plan = plan_masks(graph, scores, ratio, structured=method == "channel",
                      prune_classifier=prune_classifier)
    masks = parameter_masks(graph, plan)
    pruned = copy.deepcopy(model).eval()
    warns = list(plan.warnings)
    shifts: dict[str, Tensor] = {}
    if compensate:
        if profile is None:  # the slicer profiled ``data`` to slice it: its means are those
            profile = slicer.current_profile if unprofiled else None
            profile = profile if profile is not None else input_profile(model, data)
        shifts = compensation(graph, plan, layer_input_means(profile, graph))
    apply_masks(pruned, masks)
    for path, shift in shifts.items():
        note = _add_bias_shift(pruned, graph, path, shift)
        plan.stats[path].compensated = True
        if note:
            warns.append(note)
    for w in warns:
        warnings.warn(w, PruneWarning, stacklevel=2)
    report = PruneReport(method, targets, ratio, compensate, prune_classifier,
                         list(plan.stats.values()), warns, masks)
    return pruned, report


def _slicer_for(model: nn.Module, method: str, source: Source, theta: float, ep_theta: float
                ) -> Slicer | None:
    """The slicer a slice method slices with (built here when no importance is given), whose
    traced graph the channel analysis reads too; None when no slicing is involved."""
    kind = SLICE_KINDS.get(method)
    if kind is None or isinstance(source, ClassContributions | Mapping):
        return None
    if source is None:
        return make_slicer(model, kind, ep_theta if kind == "effective-path" else theta)
    if isinstance(source, Slicer) and source.method == kind:
        check_same_model(source, model)
        return source
    return None  # the wrong kind of source: synapse_scores says what is wrong with it


def masked_finetune(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    data: ArrayDataset,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Fine-tune ``model`` in place (Adam, cross-entropy) while pruned entries stay zero.

    The gradients of masked entries are zeroed, so Adam never moves them; the masks are
    re-applied at the end as well.
    """
    params = dict(model.named_parameters())
    handles = [
        params[n].register_hook(lambda g, m=mask: g * m.to(g.device, g.dtype))
        for n, mask in masks.items() if n in params
    ]
    try:
        if len(data) and epochs > 0:
            train_model(model, data, None, epochs=epochs, lr=lr, batch_size=batch_size,
                        seed=seed, progress=progress)
    finally:
        for h in handles:
            h.remove()
    model.eval()
    return apply_masks(model, masks)
