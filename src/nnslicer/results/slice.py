"""A computed slice (docs/spec.md §6): signed integer contributions of points and synapses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import InputError
from ..storage import load_tensors, save_tensors


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
    the sign tells whether it pushed the criterion up or down.
    """

    neurons: dict[str, Tensor]
    synapses: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def per_sample(self) -> bool:
        return bool(self.meta.get("per_sample", False))

    @property
    def num_samples(self) -> int:
        return int(self.meta.get("num_samples", 0))

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
        meta = dict(self.meta, per_sample=False, num_samples=1)
        return Slice(
            {k: v[i] for k, v in self.neurons.items()},
            {k: v[i] for k, v in self.synapses.items()},
            meta,
        )

    def __add__(self, other: Slice) -> Slice:
        """Union of two criteria: contributions add up (docs/spec.md §6)."""
        if set(self.synapses) != set(other.synapses) or set(self.neurons) != set(other.neurons):
            raise InputError("cannot add slices of different models")
        a, b = self.total(), other.total()
        meta = dict(a.meta, num_samples=a.num_samples + b.num_samples)
        return Slice(
            {k: v + b.neurons[k] for k, v in a.neurons.items()},
            {k: v + b.synapses[k] for k, v in a.synapses.items()},
            meta,
        )

    def summary(self) -> list[LayerSummary]:
        """Per-node counts of points, channels and synapses in the slice."""
        s = self.total()
        weights = s.meta.get("node_weights", {})
        kinds = s.meta.get("node_kinds", {})
        rows = []
        for name, t in s.neurons.items():
            ch = s.channels(name)
            w = s.synapses.get(weights.get(name, ""))
            rows.append(LayerSummary(
                node=name,
                kind=kinds.get(name, ""),
                points=int((t != 0).sum()),
                points_total=t.numel(),
                channels=int((ch != 0).sum()) if t.dim() > 1 else int((t != 0).sum()),
                channels_total=ch.numel() if t.dim() > 1 else t.numel(),
                synapses=int((w != 0).sum()) if w is not None else 0,
                synapses_total=w.numel() if w is not None else 0,
            ))
        return rows

    def save(self, path: str | Path) -> Path:
        tensors = {f"neurons/{k}": v for k, v in self.neurons.items()}
        tensors.update({f"synapses/{k}": v for k, v in self.synapses.items()})
        order = {"neurons": list(self.neurons), "synapses": list(self.synapses)}
        return save_tensors(path, tensors, {"kind": "slice", "meta": self.meta, "order": order})

    @classmethod
    def load(cls, path: str | Path) -> Slice:
        tensors, header = load_tensors(path, "slice")
        order = header["order"]
        return cls(
            {k: tensors[f"neurons/{k}"] for k in order["neurons"]},
            {k: tensors[f"synapses/{k}"] for k in order["synapses"]},
            header["meta"],
        )
