"""Class importance: which synapses matter for a set of target classes (pruning and protection).

The importance of a synapse for classes T is |Σ contributions| over the training samples of T,
each sliced with its own label as the criterion (= ``|slice(x_T, y_T).synapses|``). Slices of
each class are computed once (:class:`ClassContributions`); any class set's importance is then
a cheap sum, since the slice of a union of samples is the sum of their slices (docs/spec.md §6).
The baselines rank by |w|, by EffectivePath counts (docs/spec.md §7) or at random.

Both applications also share how target class sets are given (validated, or sampled), how
synapses are ranked and counted, and how accuracy on the target classes is measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from nnslicer.data.datasets import ArrayDataset
from nnslicer.errors import FileFormatError, InputError
from nnslicer.profile.profile import parameter_hash
from nnslicer.slicer import EffectivePath, Slicer
from nnslicer.storage import load_tensors, save_tensors

#: methods whose importance comes from slicing, and the kind of slicer (``Slicer.method``)
SLICE_KINDS: dict[str, str] = {
    "nnslicer": "nnslicer", "nnslicer-all": "nnslicer", "effective-path": "effective-path",
}  # fmt: skip


# ----------------------------------------------------------------------- arguments, class sets


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


def check_method(method: str, allowed: Sequence[str]) -> str:
    if method not in allowed:
        raise InputError(f"unknown method {method!r}; choose one of: {', '.join(allowed)}")
    return method


def sample_class_sets(num_classes: int, count: int, sizes: tuple[int, int] = (2, 9),
                      seed: int = 0) -> list[list[int]]:
    """``count`` random target class sets, each of a random size in ``sizes`` (inclusive)."""
    lo, hi = sizes
    if count < 1:
        raise InputError(f"the number of class subsets must be >= 1, got {count}")
    if not 1 <= lo <= hi <= num_classes:
        raise InputError(f"subset sizes {lo}..{hi} must lie within 1..{num_classes}")
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(count):
        size = int(rng.integers(lo, hi + 1))
        sets.append(sorted(int(k) for k in rng.choice(num_classes, size, replace=False)))
    return sets


def class_sets_for(class_sets: Sequence[Sequence[int]] | None, num_classes: int,
                   data: ArrayDataset, count: int, sizes: tuple[int, int], seed: int
                   ) -> list[list[int]]:
    """The class sets of an evaluation: those given (validated), else ``count`` random ones."""
    if class_sets is None:
        return sample_class_sets(num_classes, count, sizes, seed)
    return [check_classes(s, num_classes, data.classes) for s in class_sets]


def logits_of(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x[i: i + batch_size]) for i in range(0, len(x), batch_size)])


def class_accuracies(model: nn.Module, test: ArrayDataset, classes: Sequence[int]
                     ) -> dict[str, float]:
    """Accuracy on target / other / all test samples; ``target_restricted`` takes the argmax
    over the target classes' outputs only."""
    logits = logits_of(model, test.x)
    pred = logits.argmax(1)
    targets = torch.tensor(sorted(classes), dtype=torch.long)
    is_target = torch.isin(test.y, targets)
    correct = pred == test.y
    restricted = targets[logits[:, targets].argmax(1)] == test.y

    def frac(t: Tensor, sel: Tensor) -> float:
        return float(t[sel].float().mean()) if sel.any() else float("nan")

    return {
        "target": frac(correct, is_target),
        "target_restricted": frac(restricted, is_target),
        "other": frac(correct, ~is_target),
        "all": float(correct.float().mean()) if len(correct) else float("nan"),
    }


# ------------------------------------------------------------------------- ranking, counting


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


# ------------------------------------------------------------------------ class contributions


@dataclass
class ClassContributions:
    """Per-class synapse contributions: ``synapses[w][k]`` = Σ over class-k samples (target k).

    Computed once per model and data; any class set's importance is then a cheap sum, since
    the slice of a union of samples is the sum of their slices (docs/spec.md §6).
    """

    method: str  # "nnslicer" or "effective-path" (the slicer's ``method``)
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

        method = slicer.method
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
        meta = contributions_meta(method, slicer.theta, samples_per_class, data,
                                  slicer.graph.module)
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


def contributions_meta(method: str, theta: float, samples_per_class: int | None,
                       data: ArrayDataset, model: nn.Module) -> dict[str, Any]:
    """What a set of contributions was computed from (a cache is reused when all of it agrees)."""
    return {"method": method, "theta": theta, "samples_per_class": samples_per_class,
            "data": data.name, "data_size": len(data), "model": parameter_hash(model)}


def make_slicer(model: nn.Module, kind: str, theta: float, **kwargs: Any) -> Slicer:
    """A slicer of ``kind`` ("nnslicer" or "effective-path", as ``Slicer.method`` names them)."""
    if kind == "effective-path":
        return EffectivePath(model, theta, **kwargs)
    return Slicer(model, theta, **kwargs)


def cached_contributions(
    model: nn.Module,
    kind: str,
    train: ArrayDataset,
    classes: Iterable[int],
    *,
    num_classes: int,
    cache_dir: Path | None,
    samples_per_class: int | None,
    theta: float,
    batch_size: int = 16,
    progress: bool = False,
) -> ClassContributions:
    """Per-class contributions of ``kind`` ("nnslicer"/"effective-path"), reused from
    ``cache_dir`` when they were computed for the same model, data and settings."""
    wanted = sorted(set(classes))
    expect = contributions_meta(kind, theta, samples_per_class, train, model)
    path = cache_dir / f"contributions-{kind}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        try:
            cached = ClassContributions.load(path)
        except FileFormatError:
            cached = None
        if cached is not None and all(cached.meta.get(k) == v for k, v in expect.items()) and \
                all(int(cached.counts[k]) > 0 for k in wanted if k < len(cached.counts)):
            return cached
    result = ClassContributions.compute(
        make_slicer(model, kind, theta, batch_size=batch_size), train, classes=wanted,
        samples_per_class=samples_per_class, num_classes=num_classes, progress=progress,
    )
    if path is not None:
        result.save(path)
    return result


# ---------------------------------------------------------------------------- the importance


class WeightedLayers(Protocol):
    """What the importance needs of a model's structure (a ``ChannelGraph`` has it)."""

    @property
    def layers(self) -> dict[str, nn.Module]: ...  # conv/linear layers by module path

    @property
    def num_outputs(self) -> int: ...


#: where slice-based importance comes from: contributions, a slicer of the model, an explicit
#: ``weight name -> importance`` mapping, or None (a slicer is built and run on the data)
Source = Slicer | ClassContributions | Mapping[str, Tensor] | None


def check_same_model(slicer: Slicer, model: nn.Module) -> None:
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
    num_classes: int,
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
        if source.method != kind:
            want = "an EffectivePath" if kind == "effective-path" else "an nnslicer.Slicer"
            raise InputError(f"this method needs {want}, got a {type(source).__name__}")
        check_same_model(source, model)
        slicer = source
    elif source is None:
        slicer = make_slicer(model, kind, ep_theta if kind == "effective-path" else theta)
    else:
        raise InputError(f"cannot take importance from a {type(source).__name__}")
    if data is None:
        raise InputError("slice-based pruning needs the training data (data=...) to slice")
    contributions = ClassContributions.compute(
        slicer, data, classes=classes, samples_per_class=samples_per_class,
        num_classes=num_classes, progress=progress,
    )
    return contributions.importance(classes)


def synapse_scores(
    model: nn.Module,
    structure: WeightedLayers,
    method: str,
    classes: Sequence[int],
    source: Source = None,
    data: ArrayDataset | None = None,
    *,
    seed: int = 0,
    **slice_kwargs: Any,
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """Per layer path: (importance, tie-breaker) with the shape of its weight."""
    weights = {p: m.weight.detach() for p, m in structure.layers.items()}
    if isinstance(source, Mapping):
        return _per_layer(source, weights, "the importance has no entry for")
    if method in ("weight", "channel"):
        return {p: (w.abs(), None) for p, w in weights.items()}
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        return {p: (torch.rand(w.shape, generator=g, dtype=torch.float64), None)
                for p, w in weights.items()}
    k_all = structure.num_outputs
    wanted = list(range(k_all)) if method == "nnslicer-all" else list(classes)
    imp = slice_importance(model, SLICE_KINDS[method], wanted, source, data, num_classes=k_all,
                           **slice_kwargs)
    return _per_layer(imp, weights, "the slices have no contributions for")


def _per_layer(importance: Mapping[str, Tensor], weights: Mapping[str, Tensor], what: str
               ) -> dict[str, tuple[Tensor, Tensor | None]]:
    """(importance, |w| as the tie-breaker) per layer path, from importance by weight name."""
    missing = [f"{p}.weight" for p in weights if f"{p}.weight" not in importance]
    if missing:
        raise InputError(f"{what} {', '.join(missing[:3])}")
    return {p: (importance[f"{p}.weight"].to(torch.float64), w.abs())
            for p, w in weights.items()}

