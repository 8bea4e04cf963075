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
either because the synapse was pruned or because the neuron feeding ``x_i`` was removed. Means
come from the original model on the training data (the profile means of the layer inputs, docs/spec.md
§2). For a conv, ``mean(x_i)`` of a synapse is the input mean map averaged over the positions
the synapse sees (its patch offset over all output positions, zero padding included): the shift
is exact on average over positions, but a bias is one number per channel while the lost term's
mean varies over the map, so each position gets the average. Means are those of the unpruned
model: pruning upstream changes them, which is not modelled. A conv without bias that is
followed by BatchNorm gets the shift through the BatchNorm's bias. Removed neurons stay at 0.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nnslicer.data.datasets import ArrayDataset
from nnslicer.errors import InputError
from nnslicer.profile.profile import parameter_hash
from nnslicer.slicer import EffectivePath, Slicer
from nnslicer.storage import load_tensors, save_tensors
from nnslicer.training import train_model

from .export import ChannelGraph, analyze_channels

PRUNE_METHODS: tuple[str, ...] = (
    "nnslicer", "nnslicer-all", "effective-path", "weight", "channel", "random",
)  # fmt: skip
#: methods whose importance comes from slicing, and the kind of slice they need
SLICE_KINDS: dict[str, str] = {
    "nnslicer": "nnslicer", "nnslicer-all": "nnslicer", "effective-path": "effective-path",
}  # fmt: skip


class PruneWarning(UserWarning):
    """Pruning had to deviate from what was asked (e.g. a layer kept one neuron)."""


# ------------------------------------------------------------------------ class contributions


@dataclass
class ClassContributions:
    """Per-class synapse contributions: ``synapses[w][k]`` = Σ over class-k samples (target k).

    Computed once per model and data; any class set's importance is then a cheap sum, since
    the slice of a union of samples is the sum of their slices (docs/spec.md §6).
    """

    method: str  # "nnslicer" or "effective-path"
    synapses: dict[str, Tensor]  # weight name -> (K, *weight shape) int64
    counts: Tensor  # (K,) samples sliced per class (0 = not computed)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def compute(
        cls,
        slicer: Slicer,
        data: ArrayDataset,
        *,
        classes: Iterable[int] | None = None,
        samples_per_class: int | None = None,
        num_classes: int | None = None,
        progress: bool = False,
    ) -> ClassContributions:
        """Slice each class's samples of ``data`` with its label as target.

        ``samples_per_class`` keeps the first N samples of each class; ``classes`` limits the
        classes sliced. An NNSlicer slicer without a profile is profiled on all of ``data``.
        """
        from tqdm.auto import tqdm

        method = "effective-path" if isinstance(slicer, EffectivePath) else "nnslicer"
        if samples_per_class is not None and samples_per_class < 1:
            raise InputError(f"samples_per_class must be >= 1, got {samples_per_class}")
        k_total = num_classes or data.num_classes
        wanted = sorted(set(range(k_total) if classes is None else classes))
        if slicer.policy.uses_profile and slicer.current_profile is None:
            slicer.profile(data.batches(256), progress=False)
        synapses: dict[str, Tensor] = {}
        counts = torch.zeros(k_total, dtype=torch.int64)
        for k in tqdm(wanted, desc=f"slicing classes ({method})", unit="class",
                      disable=not progress, leave=False):
            xk = data.x[data.y == k]
            if samples_per_class is not None:
                xk = xk[:samples_per_class]
            if len(xk) == 0:
                continue
            s = slicer.slice(xk, target=int(k))
            for name, t in s.synapses.items():
                if name not in synapses:
                    synapses[name] = torch.zeros((k_total, *t.shape), dtype=torch.int64)
                synapses[name][k] = t.cpu()
            counts[k] = len(xk)
        meta = {
            "method": method,
            "theta": slicer.policy.theta,
            "samples_per_class": samples_per_class,
            "data": data.name,
            "data_size": len(data),
            "model": parameter_hash(slicer.graph.module),
        }
        return cls(method, synapses, counts, meta)

    def importance(self, classes: Iterable[int]) -> dict[str, Tensor]:
        """|Σ_{k ∈ classes} contributions| per synapse (float64, shape of the weight)."""
        ks = sorted(set(classes))
        missing = [k for k in ks if not 0 <= k < len(self.counts) or self.counts[k] == 0]
        if missing:
            raise InputError(
                f"no {self.method} contributions for class(es) {missing}: the data has no "
                "samples of them or they were not sliced"
            )
        idx = torch.tensor(ks, dtype=torch.long)
        return {n: t[idx].sum(0).abs().to(torch.float64) for n, t in self.synapses.items()}

    def save(self, path: str | Path) -> Path:
        tensors = {f"synapses/{k}": v for k, v in self.synapses.items()}
        tensors["counts"] = self.counts
        return save_tensors(path, tensors, {"kind": "class-contributions", "method": self.method,
                                            "meta": self.meta, "order": list(self.synapses)})

    @classmethod
    def load(cls, path: str | Path) -> ClassContributions:
        tensors, header = load_tensors(path, "class-contributions")
        synapses = {k: tensors[f"synapses/{k}"] for k in header["order"]}
        return cls(header["method"], synapses, tensors["counts"], header["meta"])


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


# ---------------------------------------------------------------------------------- helpers


def check_classes(classes: Iterable[int | str] | None, num_classes: int,
                  names: Sequence[str] | None = None) -> list[int]:
    """Validate a target class set (indices or, with ``names``, class names); sorted, unique."""
    if classes is None:
        raise InputError("no target classes given; pass at least one class, e.g. classes=[0, 1]")
    result = set()
    for c in classes:
        if isinstance(c, str) and not c.strip().lstrip("-").isdigit():
            if names is None or c.strip() not in names:
                known = f"; known: {', '.join(names)}" if names else ""
                raise InputError(f"unknown class {c!r}{known}")
            result.add(list(names).index(c.strip()))
            continue
        if isinstance(c, bool) or not isinstance(c, int | str | np.integer):
            raise InputError(f"a class must be an integer index, got {c!r}")
        k = int(c)
        if not 0 <= k < num_classes:
            raise InputError(
                f"unknown class {k}: the model has {num_classes} classes (0..{num_classes - 1})"
            )
        result.add(k)
    if not result:
        raise InputError("the class set is empty; give at least one target class, e.g. 0,1")
    return sorted(result)


def check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
        raise InputError(f"ratio must be a number in [0, 1], got {ratio!r}")
    return float(ratio)


def check_method(method: str, allowed: Sequence[str] = PRUNE_METHODS) -> str:
    if method not in allowed:
        raise InputError(f"unknown method {method!r}; choose one of: {', '.join(allowed)}")
    return method


def num_outputs(graph: ChannelGraph) -> int:
    if graph.classifier is None:
        raise InputError("the model has no conv or linear layer to prune")
    w = graph.layers[graph.classifier].weight
    return int(w.shape[0])


def count_to_remove(ratio: float, n: int) -> int:
    """round(ratio · n), halves rounded up, so the removed fraction is as close as possible."""
    return min(n, int(math.floor(ratio * n + 0.5)))


def ranked(primary: Tensor, secondary: Tensor | None = None, descending: bool = False) -> Tensor:
    """Flat indices sorted by ``primary``, ties by ``secondary``, then by index (ascending)."""
    keys = [primary.detach().flatten().to(torch.float64).cpu().numpy()]
    if secondary is not None:
        keys.insert(0, secondary.detach().flatten().to(torch.float64).cpu().numpy())
    if descending:
        keys = [-k for k in keys]
    # np.lexsort sorts by the last key first and is stable, so equal keys keep index order.
    return torch.from_numpy(np.lexsort(keys))


Source = Slicer | ClassContributions | Mapping[str, Tensor] | None


def _same_model(slicer: Slicer, model: nn.Module) -> None:
    if parameter_hash(slicer.graph.module) != parameter_hash(model):
        raise InputError("the slicer was built for another model (its weights differ); "
                         "create the Slicer from the model you prune")


def slice_importance(
    model: nn.Module,
    kind: str,
    classes: Sequence[int],
    source: Source,
    data: ArrayDataset | None,
    *,
    samples_per_class: int | None = None,
    theta: float = 0.2,
    ep_theta: float = 0.5,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Importance from slices (``kind`` = "nnslicer" or "effective-path") for ``classes``."""
    if isinstance(source, ClassContributions):
        if source.method != kind:
            raise InputError(f"this method needs {kind} contributions, got {source.method} ones")
        return source.importance(classes)
    if isinstance(source, Slicer):
        if isinstance(source, EffectivePath) != (kind == "effective-path"):
            want = "an EffectivePath" if kind == "effective-path" else "an nnslicer.Slicer"
            raise InputError(f"this method needs {want}, got a {type(source).__name__}")
        _same_model(source, model)
        slicer = source
    elif source is None:
        slicer = EffectivePath(model, ep_theta) if kind == "effective-path" else \
            Slicer(model, theta)
    else:
        raise InputError(f"cannot take importance from a {type(source).__name__}")
    if data is None:
        raise InputError("slice-based pruning needs the training data (data=...) to slice")
    contributions = ClassContributions.compute(
        slicer, data, classes=classes, samples_per_class=samples_per_class,
        num_classes=num_outputs(analyze_channels(model)), progress=progress,
    )
    return contributions.importance(classes)


def synapse_scores(
    model: nn.Module,
    graph: ChannelGraph,
    method: str,
    classes: Sequence[int],
    source: Source = None,
    data: ArrayDataset | None = None,
    *,
    seed: int = 0,
    **slice_kwargs: Any,
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """Per layer path: (importance, tie-breaker) with the shape of its weight."""
    weights = {p: m.weight.detach() for p, m in graph.layers.items()}
    if isinstance(source, Mapping):
        missing = [f"{p}.weight" for p in weights if f"{p}.weight" not in source]
        if missing:
            raise InputError(f"the importance has no entry for {', '.join(missing[:3])}")
        return {p: (source[f"{p}.weight"].to(torch.float64), w.abs()) for p, w in weights.items()}
    if method in ("weight", "channel"):
        return {p: (w.abs(), None) for p, w in weights.items()}
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        return {p: (torch.rand(w.shape, generator=g, dtype=torch.float64), None)
                for p, w in weights.items()}
    k_all = num_outputs(graph)
    wanted = list(range(k_all)) if method == "nnslicer-all" else list(classes)
    imp = slice_importance(model, SLICE_KINDS[method], wanted, source, data, **slice_kwargs)
    missing = [f"{p}.weight" for p in weights if f"{p}.weight" not in imp]
    if missing:
        raise InputError(f"the slices have no contributions for {', '.join(missing[:3])}")
    return {p: (imp[f"{p}.weight"].to(torch.float64), w.abs()) for p, w in weights.items()}


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


def layer_input_means(model: nn.Module, batches: Iterable, graph: ChannelGraph | None = None
                      ) -> dict[str, Tensor]:
    """Mean input of every conv (a (C, H, W) or (C, L) map) and linear layer (per feature).

    These are the docs/spec.md §2 profile means of the layers' input nodes (float64).
    """
    graph = graph or analyze_channels(model)
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def hook(path: str, module: nn.Module, args: tuple) -> None:
        x = args[0].detach().to(torch.float64)
        if isinstance(module, nn.Linear):
            x = x.reshape(-1, x.shape[-1])
        sums[path] = sums[path] + x.sum(0) if path in sums else x.sum(0)
        counts[path] = counts.get(path, 0) + x.shape[0]

    handles = [m.register_forward_pre_hook(lambda mod, a, p=p: hook(p, mod, a))
               for p, m in graph.layers.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for item in batches:
                model(item[0] if isinstance(item, tuple | list) else item)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not sums:
        raise InputError("no data to compute the layer input means from")
    return {p: sums[p] / counts[p] for p in sums}


def compensation(graph: ChannelGraph, plan: MaskPlan, means: Mapping[str, Tensor]
                 ) -> dict[str, Tensor]:
    """Bias shift per layer: Σ over lost inputs of w · mean(input) (see the module docstring)."""
    dead_groups: dict[int, Tensor] = {}
    direct = set(graph.direct_norm.values())
    for gi, g in enumerate(graph.groups):
        if g.fixed_source or not g.producers or not g.channels:
            continue
        if any(n not in direct for n in g.norms):
            continue  # a BatchNorm not zeroed with its neuron may turn 0 into something else
        dead = torch.ones(g.channels, dtype=torch.bool)
        for p in g.producers:
            dead &= plan.removed_neurons[p]
        if dead.any():
            dead_groups[gi] = dead
    shifts = {}
    for path, m in graph.layers.items():
        w = m.weight.detach().to(torch.float64).cpu()
        lost = ~plan.keep[path]
        dead = dead_groups.get(graph.input_group[path])
        if dead is not None:
            if isinstance(m, nn.Linear):
                dead = dead.repeat_interleave(graph.input_positions[path])
                lost = lost | dead[None, :]
            else:
                lost = lost | dead.view(1, -1, *([1] * (w.dim() - 2)))
        if not lost.any():
            continue
        mean = means[path].to(torch.float64).cpu()
        if isinstance(m, nn.Linear):
            shift = (w * lost) @ mean
        else:
            shift = (w * lost).flatten(1) @ patch_means(m, mean)
        shift[plan.removed_neurons[path]] = 0.0
        shifts[path] = shift
    return shifts


def patch_means(conv: nn.Module, mean_map: Tensor) -> Tensor:
    """Mean input seen by each synapse of ``conv``: the input mean map, unfolded into the
    conv's patches (zero padding included) and averaged over output positions; flat (C·k·k,)."""
    one_d = mean_map.dim() == 2
    x = mean_map[None, :, None] if one_d else mean_map[None]
    kernel = (1, *conv.kernel_size) if one_d else tuple(conv.kernel_size)
    stride = (1, *conv.stride) if one_d else tuple(conv.stride)
    dilation = (1, *conv.dilation) if one_d else tuple(conv.dilation)
    padding = conv.padding
    if padding == "same":
        pads = []
        for k, d in zip(reversed(kernel), reversed(dilation), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
    elif padding != "valid":
        ph, pw = (0, *padding) if one_d else tuple(padding)
        x = F.pad(x, (pw, pw, ph, ph))
    cols = F.unfold(x, kernel, dilation=dilation, stride=stride)
    return cols[0].mean(1)


def _add_bias_shift(model: nn.Module, graph: ChannelGraph, path: str, shift: Tensor) -> str | None:
    modules = dict(model.named_modules())
    m = modules[path]
    with torch.no_grad():
        if m.bias is not None:
            m.bias.add_(shift.to(m.bias))
            return None
        norm = modules.get(graph.direct_norm.get(path, ""))
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
    means: Mapping[str, Tensor] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[nn.Module, PruneReport]:
    """Prune a copy of ``model`` for target ``classes``; returns ``(pruned, report)``.

    ``source`` gives the importance of slice methods: a :class:`ClassContributions`, a
    ``Slicer``/``EffectivePath`` of this model (sliced on ``data``), an explicit mapping
    ``weight name -> importance`` (any method label), or None (a slicer is built with ``theta``
    / ``ep_theta`` and run on ``data``, the training set). ``means`` (from
    :func:`layer_input_means`) saves recomputing them for ``compensate``.
    """
    method = check_method(method)
    ratio = check_ratio(ratio)
    graph = analyze_channels(model)
    k_total = num_outputs(graph)
    names = data.classes if data is not None else None
    if classes is None and method in ("weight", "channel", "random", "nnslicer-all"):
        targets: list[int] = []
    else:
        targets = check_classes(classes, k_total, names)
    scores = synapse_scores(
        model, graph, method, targets, source, data, seed=seed,
        samples_per_class=samples_per_class, theta=theta, ep_theta=ep_theta, progress=progress,
    )
    plan = plan_masks(graph, scores, ratio, structured=method == "channel",
                      prune_classifier=prune_classifier)
    masks = parameter_masks(graph, plan)
    pruned = copy.deepcopy(model).eval()
    pruned_graph = analyze_channels(pruned)
    warns = list(plan.warnings)
    shifts: dict[str, Tensor] = {}
    if compensate:
        if means is None:
            if data is None:
                raise InputError("mean compensation needs the training data (data=...)")
            means = layer_input_means(model, data.batches(256), graph)
        shifts = compensation(graph, plan, means)
    apply_masks(pruned, masks)
    for path, shift in shifts.items():
        note = _add_bias_shift(pruned, pruned_graph, path, shift)
        plan.stats[path].compensated = True
        if note:
            warns.append(note)
    for w in warns:
        warnings.warn(w, PruneWarning, stacklevel=2)
    report = PruneReport(method, targets, ratio, compensate, prune_classifier,
                         list(plan.stats.values()), warns, masks)
    return pruned, report


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
