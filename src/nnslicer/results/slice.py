"""A computed slice (docs/spec.md §5): signed integer contributions of points and synapses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import FileFormatError, InputError
from ..storage import load_tensors, save_tensors


class NameNotFound(KeyError):
    """A slice has no node or weight of that name (the message lists the names it has)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SliceTensors(dict):
    """Tensors of a slice keyed by fx node names (``neurons``) or parameter names (``synapses``)
    that also answer to the module's qualified name.

    ``neurons["features.conv1"]`` is ``neurons["features_conv1"]``; ``synapses["features.conv1"]``
    and ``synapses["features_conv1"]`` are ``synapses["features.conv1.weight"]``. Iteration,
    ``keys()`` and saving use the stored names. The slice's ``meta["node_modules"]`` (node →
    module) and ``meta["node_weights"]`` (node → weight) say which name is which.
    """

    def __init__(self, data: Mapping[str, Tensor], meta: dict[str, Any], kind: str) -> None:
        super().__init__(data)
        self._meta = meta
        self._kind = kind

    def resolve(self, key: object) -> str:
        """The stored name for ``key`` (a stored name, node name or module name)."""
        if dict.__contains__(self, key):
            return key  # type: ignore[return-value]
        if not isinstance(key, str):
            raise NameNotFound(f"slice {self._kind} are looked up by name, got {key!r}")
        if self._kind == "synapses":
            if dict.__contains__(self, f"{key}.weight"):
                return f"{key}.weight"
            weights = self._meta.get("node_weights", {})
            try:
                node = key if key in weights else _resolve_node(key, self._meta, set(weights))
            except NameNotFound:
                node = None
            if node is not None and dict.__contains__(self, weights.get(node)):
                return weights[node]
        else:
            node = _resolve_node(key, self._meta, set(self))
            if node is not None:
                return node
        names = list(self)
        more = f", … ({len(names)} in all)" if len(names) > 8 else ""
        by = "parameter, module or node" if self._kind == "synapses" else "node or module"
        raise NameNotFound(
            f"this slice has no {self._kind} for {key!r}; give a {by} name such as "
            f"{', '.join(names[:8])}{more}"
        )

    def __getitem__(self, key: object) -> Tensor:
        return dict.__getitem__(self, self.resolve(key))

    def __contains__(self, key: object) -> bool:
        try:
            self.resolve(key)
        except (NameNotFound, TypeError):
            return False
        return True

    def get(self, key: object, default: Any = None) -> Any:
        return self[key] if key in self else default


def _resolve_node(key: str, meta: Mapping[str, Any], nodes: set[str]) -> str | None:
    """The node a module's qualified name stands for; None if no node is that module,
    NameNotFound when the name is ambiguous (a container or a module called several times)."""
    modules: dict[str, str] = meta.get("node_modules", {})
    guess = key.replace(".", "_")
    exact = [n for n, m in modules.items() if m == key and n in nodes]
    inner = [n for n, m in modules.items() if m.startswith(f"{key}.") and n in nodes]
    if guess in exact or (not modules and guess in nodes and guess != key):
        return guess
    if len(exact) == 1 and not inner:
        return exact[0]
    if exact or inner:
        names = exact + inner
        raise NameNotFound(
            f"module {key!r} holds several nodes ({', '.join(names[:6])}"
            f"{', …' if len(names) > 6 else ''}); give one of these node names"
        )
    return None


def display_name(node: str, meta: Mapping[str, Any]) -> str:
    """The name to show for a node: its module's qualified name (``features.conv1``) for a
    module call, ``module (node)`` for an operation inside a module, else the node name."""
    module = meta.get("node_modules", {}).get(node)
    if not module:
        return node
    if module.replace(".", "_") == node:
        return module
    return f"{module} ({node})"


@dataclass
class LayerSummary:
    """How much of one node (and its weight) is in the slice."""

    node: str
    kind: str
    points: int
    points_total: int
    channels: int
    channels_total: int
    synapses: int
    synapses_total: int
    module: str = ""  #: qualified name of the node's module ("" if it has none)
    name: str = ""  #: the name tables and figures show (see :func:`display_name`)

    @property
    def point_fraction(self) -> float:
        return self.points / self.points_total if self.points_total else 0.0

    @property
    def channel_fraction(self) -> float:
        return self.channels / self.channels_total if self.channels_total else 0.0

    @property
    def synapse_fraction(self) -> float:
        return self.synapses / self.synapses_total if self.synapses_total else 0.0


@dataclass
class Slice:
    """Contributions of a criterion (sum over its samples, or per sample).

    ``neurons[node]`` has the node's output shape (a leading batch dim when per-sample);
    ``synapses[param]`` has the weight's shape (same convention). Non-zero means "in the slice";
    the sign tells whether it pushed the criterion up or down. Both also take the module's
    qualified name (``s.neurons["features.conv1"]``, ``s.synapses["features.conv1"]``).
    """

    neurons: dict[str, Tensor]
    synapses: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.meta, dict):
            raise InputError(f"meta must be a dict, got {type(self.meta).__name__}")
        for what in ("neurons", "synapses"):
            value = getattr(self, what)
            if not isinstance(value, Mapping):
                raise InputError(f"{what} must be a dict of tensors, got {type(value).__name__}")
            setattr(self, what, SliceTensors(value, self.meta, what))

    @property
    def per_sample(self) -> bool:
        return bool(self.meta.get("per_sample", False))

    @property
    def num_samples(self) -> int:
        return int(self.meta.get("num_samples", 0))

    def name(self, node: str) -> str:
        """The qualified name shown for ``node`` (see :func:`display_name`)."""
        return display_name(self.neurons.resolve(node), self.meta)

    def channels(self, node: str) -> Tensor:
        """Channel view: a feature map's contributions summed over its spatial dims."""
        t = self.neurons[node]
        lead = 2 if self.per_sample else 1
        if t.dim() <= lead:
            return t
        return t.sum(dim=tuple(range(lead, t.dim())))

    def total(self) -> Slice:
        """The slice of all samples together (a per-sample slice summed over samples)."""
        if not self.per_sample:
            return self
        meta = dict(self.meta, per_sample=False)
        return Slice(
            {k: v.sum(0) for k, v in self.neurons.items()},
            {k: v.sum(0) for k, v in self.synapses.items()},
            meta,
        )

    def sample(self, i: int) -> Slice:
        """The slice of sample ``i`` of a per-sample slice."""
        if not self.per_sample:
            raise InputError("sample(i) needs a slice computed with per_sample=True")
        n = next(iter(self.neurons.values())).shape[0] if self.neurons else self.num_samples
        if not isinstance(i, int) or isinstance(i, bool) or not -n <= i < n:
            raise InputError(f"sample index {i!r} is out of range: this slice holds {n} samples")
        meta = dict(self.meta, per_sample=False, num_samples=1)
        return Slice(
            {k: v[i] for k, v in self.neurons.items()},
            {k: v[i] for k, v in self.synapses.items()},
            meta,
        )

    def model_difference(self, other: Slice) -> str | None:
        """How ``other`` is a slice of another model than this one (None if it is not)."""
        a, b = self.meta.get("model"), other.meta.get("model")
        if a and b and a != b:
            return f"a {a} and a {b}"
        for what in ("neurons", "synapses"):
            mine, theirs = getattr(self, what), getattr(other, what)
            only_a = [k for k in mine if not dict.__contains__(theirs, k)]
            only_b = [k for k in theirs if not dict.__contains__(mine, k)]
            if only_a or only_b:
                return (f"their {what} differ (only in the first: {', '.join(only_a[:3]) or '-'};"
                        f" only in the second: {', '.join(only_b[:3]) or '-'})")
            for k in mine:
                sa = tuple(mine[k].shape)[1 if self.per_sample else 0:]
                sb = tuple(theirs[k].shape)[1 if other.per_sample else 0:]
                if sa != sb:
                    return f"{what} {k!r} has shape {list(sa)} in one and {list(sb)} in the other"
        return None

    def __add__(self, other: Slice) -> Slice:
        """Union of two criteria: contributions add up (docs/spec.md §5)."""
        if not isinstance(other, Slice):
            return NotImplemented
        diff = self.model_difference(other)
        if diff:
            raise InputError(f"cannot add slices of different models ({diff})")
        ma, mb = self.meta.get("method"), other.meta.get("method")
        if ma and mb and ma != mb:
            raise InputError(f"cannot add a {ma} slice to an {mb} slice; slice both one way")
        a, b = self.total(), other.total()
        meta = dict(a.meta, num_samples=a.num_samples + b.num_samples)
        return Slice(
            {k: v + b.neurons[k] for k, v in a.neurons.items()},
            {k: v + b.synapses[k] for k, v in a.synapses.items()},
            meta,
        )

    def __radd__(self, other: object) -> Slice:
        """``sum(slices)`` starts from 0."""
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def summary(self) -> list[LayerSummary]:
        """Per-node counts of points, channels and synapses in the slice."""
        s = self.total()
        weights = s.meta.get("node_weights", {})
        kinds = s.meta.get("node_kinds", {})
        modules = s.meta.get("node_modules", {})
        rows = []
        for name, t in s.neurons.items():
            ch = s.channels(name)
            w = dict.get(s.synapses, weights.get(name, ""))
            rows.append(LayerSummary(
                node=name,
                kind=kinds.get(name, ""),
                points=int((t != 0).sum()),
                points_total=t.numel(),
                channels=int((ch != 0).sum()) if t.dim() > 1 else int((t != 0).sum()),
                channels_total=ch.numel() if t.dim() > 1 else t.numel(),
                synapses=int((w != 0).sum()) if w is not None else 0,
                synapses_total=w.numel() if w is not None else 0,
                module=modules.get(name, ""),
                name=display_name(name, s.meta),
            ))
        return rows

    def __repr__(self) -> str:
        s = self.total()
        points = sum(int((t != 0).sum()) for t in s.neurons.values())
        points_total = sum(t.numel() for t in s.neurons.values())
        syn = sum(int((t != 0).sum()) for t in s.synapses.values())
        syn_total = sum(t.numel() for t in s.synapses.values())
        meta = self.meta
        how = meta.get("method", "slice")
        if "theta" in meta:
            how += f" θ={meta['theta']:g}" if isinstance(meta["theta"], float | int) else ""
        n = self.num_samples
        samples = f"{n} sample{'s' if n != 1 else ''}" + (", per sample" if self.per_sample
                                                           else "")
        return (f"<Slice of {meta.get('model', 'a model')} ({how}, {samples}): "
                f"{len(s.neurons)} nodes, {len(s.synapses)} weights; in the slice "
                f"{points:,}/{points_total:,} points ({_pct(points, points_total)}), "
                f"{syn:,}/{syn_total:,} synapses ({_pct(syn, syn_total)})>")

    def save(self, path: str | Path) -> Path:
        tensors = {f"neurons/{k}": v for k, v in self.neurons.items()}
        tensors.update({f"synapses/{k}": v for k, v in self.synapses.items()})
        order = {"neurons": list(self.neurons), "synapses": list(self.synapses)}
        return save_tensors(path, tensors, {"kind": "slice", "meta": self.meta, "order": order})

    @classmethod
    def load(cls, path: str | Path) -> Slice:
        tensors, header = load_tensors(path, "slice")
        order, meta = header.get("order"), header.get("meta")
        if not isinstance(order, dict) or not isinstance(meta, dict):
            raise FileFormatError(f"slice file {path} has no node order or meta in its header")
        missing = [f"{what}/{k}" for what in ("neurons", "synapses")
                   for k in order.get(what, []) if f"{what}/{k}" not in tensors]
        if missing:
            raise FileFormatError(f"slice file {path} lacks tensors {', '.join(missing[:3])}")
        return cls(
            {k: tensors[f"neurons/{k}"] for k in order.get("neurons", [])},
            {k: tensors[f"synapses/{k}"] for k in order.get("synapses", [])},
            meta,
        )


def union(slices: Iterable[Slice]) -> Slice:
    """The union of several slices (their contributions summed)."""
    items = list(slices)
    if not items:
        raise InputError("union of no slices; give at least one")
    return sum(items[1:], items[0])


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"
