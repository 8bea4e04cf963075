"""Profiling (docs/spec.md §2): per-point means over a dataset, overall and per class.

Sums and counts are kept (not means), so profiles of data shards add up exactly. Values are
accumulated with their samples first (trace.layout), so a node whose batch is not in dim 0
(a sequence-first transformer, Swin's windows) has one sample's means like every other.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, ProfileMismatch
from ..forward.recorder import learn_layouts, stream_values
from ..hashing import tensor_digest
from ..storage import load_tensors, save_tensors
from ..trace.graph import OperatorGraph
from ..trace.layout import STANDARD
from . import accumulate


def parameter_hash(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, by name."""
    return tensor_digest(list(module.named_parameters()) + list(module.named_buffers()))


def fingerprint(graph: OperatorGraph, shapes: dict[str, list[int]]) -> dict[str, Any]:
    return {
        "model": type(graph.module).__name__,
        "nodes": shapes,
        "parameters": parameter_hash(graph.module),
    }


def fingerprint_differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Human-readable differences between two model fingerprints (empty if they match)."""
    diffs = []
    a, b = expected["nodes"], found["nodes"]
    missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if missing or extra:
        diffs.append(
            f"node names differ (only in profile: {missing[:5]}, only in model: {extra[:5]})"
        )
    for name in sorted(set(a) & set(b)):
        if a[name] != b[name]:
            diffs.append(
                f"node '{name}' has shape {b[name]} in the model but {a[name]} in the profile"
            )
            break
    if not diffs and expected["parameters"] != found["parameters"]:
        diffs.append("the parameters differ (the weights changed since profiling)")
    return diffs


def iter_batches(data: Any) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(inputs, labels or None) batches from a tensor, a dataset with ``.batches(n)`` (an
    ArrayDataset, read 256 at a time) or batches with or without labels."""
    if isinstance(data, Tensor):
        data = [data]
    elif callable(getattr(data, "batches", None)):
        data = data.batches(256)
    for item in data:
        if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], Tensor):
            yield item[0], item[1]
        elif isinstance(item, Tensor):
            yield item, None
        else:
            raise InputError(
                f"profiling data yields {type(item).__name__}; give batches of inputs or "
                "(inputs, labels) tensor pairs"
            )


#: Dataset means of nodes up to this many points are kept once computed: every slice asks for
#: every node's mean, and for small nodes the division costs more than the node's rule. Bigger
#: ones are divided again each time, so memory stays at the sums' size.
MEAN_CACHED_MAX = 1 << 16


class Profile:
    """Dataset means of every live node, per-class sums of the kept classes, and per-class
    counts of every class.

    ``class_ids`` are the classes with per-class sums (row i of ``class_sums[name]`` is class
    ``class_ids[i]``); all of them unless profiled with ``classes=``.
    """

    def __init__(self, sums: dict[str, Tensor], class_sums: dict[str, Tensor],
                 class_counts: Tensor, fingerprint: dict[str, Any],
                 class_ids: Tensor | None = None):
        self.sums = sums
        self.class_sums = class_sums
        self.class_counts = class_counts
        self.fingerprint = fingerprint
        if class_ids is None:
            class_ids = torch.arange(class_counts.numel(), device=class_counts.device)
        self.class_ids = class_ids
        self._count: int | None = None
        self._means: dict[str, Tensor] = {}

    @property
    def count(self) -> int:
        if self._count is None:  # read for every node of every slice: summed once
            self._count = int(self.class_counts.sum())
        return self._count

    @property
    def num_classes(self) -> int:
        return self.class_counts.numel()

    @property
    def input_shape(self) -> list[int]:
        return self.fingerprint["input_shape"]

    def example_input(self) -> Tensor:
        """A zero batch of one sample shaped like the profiling data (to trace with)."""
        dtype = getattr(torch, self.fingerprint.get("input_dtype", "float32"))
        return torch.zeros((1, *self.input_shape), dtype=dtype)

    def to(self, device: torch.device | str) -> Profile:
        return Profile({k: v.to(device) for k, v in self.sums.items()},
                       {k: v.to(device) for k, v in self.class_sums.items()},
                       self.class_counts.to(device), self.fingerprint, self.class_ids.to(device))

    def mean(self, name: str) -> Tensor:
        """The dataset mean of a node (float64; shared: do not modify it in place)."""
        mean = self._means.get(name)
        if mean is None:
            mean = self.sums[name] / self.count
            if mean.numel() <= MEAN_CACHED_MAX:
                self._means[name] = mean
        return mean

    def class_mean(self, name: str, classes: Tensor) -> Tensor:
        """Per-sample reference (B, *shape): the mean of each sample's class."""
        rows = torch.full((self.num_classes,), -1, dtype=torch.long, device=classes.device)
        rows[self.class_ids.to(classes.device)] = torch.arange(len(self.class_ids),
                                                               device=classes.device)
        kept = rows[classes]
        if (kept < 0).any():
            missing = sorted(set(classes[kept < 0].tolist()))
            raise InputError(
                f"class(es) {missing} have no per-class mean in this profile (profiled with "
                f"classes={self.class_ids.tolist()[:10]}…); profile with classes=... including "
                "them, or use reference='dataset'"
            )
        counts = self.class_counts[classes]
        if (counts == 0).any():
            absent = sorted(set(classes[counts == 0].tolist()))
            raise InputError(
                f"class(es) {absent} have no profiling samples, so reference='class' has no mean "
                "for them; profile with data of every class or use reference='dataset'"
            )
        sums = self.class_sums[name][kept]
        return sums / counts.view(-1, *([1] * (sums.dim() - 1))).to(sums.dtype)

    def __add__(self, other: Profile) -> Profile:
        """Profile of the union of both datasets (for sharded profiling)."""
        if fingerprint_differences(self.fingerprint, other.fingerprint):
            raise ProfileMismatch("cannot add profiles of different models")
        if not torch.equal(self.class_ids.cpu(), other.class_ids.cpu()):
            raise ProfileMismatch("cannot add profiles that keep different classes")
        return Profile(
            {k: v + other.sums[k] for k, v in self.sums.items()},
            {k: v + other.class_sums[k] for k, v in self.class_sums.items()},
            self.class_counts + other.class_counts,
            self.fingerprint,
            self.class_ids,
        )

    def check_model(self, graph: OperatorGraph) -> None:
        """Raise ProfileMismatch naming what differs if this profile is not of ``graph``."""
        now = {n.name: list(graph.sample_shapes[n.name]) for n in graph.live_nodes()
               if n.name in graph.sample_shapes}
        diffs = fingerprint_differences(self.fingerprint, fingerprint(graph, now))
        if diffs:
            raise ProfileMismatch(
                f"this profile was made for another model: {diffs[0]}; profile this model again"
            )

    def save(self, path: str | Path) -> Path:
        tensors = {"class_counts": self.class_counts, "class_ids": self.class_ids}
        for name, t in self.sums.items():
            tensors[f"sum/{name}"] = t
            if name in self.class_sums:
                tensors[f"class_sum/{name}"] = self.class_sums[name]
        return save_tensors(path, tensors, {"kind": "profile", "fingerprint": self.fingerprint})

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        tensors, meta = load_tensors(path, "profile")
        sums = {k[4:]: v for k, v in tensors.items() if k.startswith("sum/")}
        class_sums = {k[10:]: v for k, v in tensors.items() if k.startswith("class_sum/")}
        return cls(sums, class_sums, tensors["class_counts"], meta["fingerprint"],
                   tensors.get("class_ids"))


def check_batch(x: Tensor, expected: tuple[int, ...] | None, what: str) -> None:
    """InputError naming what is wrong with a batch of model inputs."""
    if not isinstance(x, Tensor):
        raise InputError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise InputError(f"{what} must be a float (or integer token) tensor, got {x.dtype}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise InputError(f"{what} is an empty batch; give at least one sample")
    if expected is not None and tuple(x.shape[1:]) != expected:
        raise InputError(
            f"{what} has sample shape {tuple(x.shape[1:])} but {expected} was expected"
        )
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise InputError(f"{what} contains NaN or Inf values; clean the inputs first")


def check_output_shape(shape: Sequence[int]) -> None:
    """InputError unless the model output (this shape, batch included) is (batch, classes)."""
    if len(shape) != 2:
        raise InputError(f"the model output has shape {tuple(shape)}; nnslicer needs "
                         "(batch, classes)")


#: Largest per-class table (classes × points × 8 bytes) profiled by default.
CLASS_TABLE_BUDGET = 2 << 30

#: A forward pass of the profile computes at most about this many bytes of float32 values
#: (unless the caller's batches are bigger): bigger passes run slower (fresh pages for every
#: tensor, caches missed), ResNet-10 batch 64 vs 16 +15 %, MobileNetV2 +100 % per sample.
PASS_BYTES = 96 << 20
#: Chunks of a model with small nodes grow beyond 4 × batch_size while one node's values of a
#: pass stay within this (Slicer.profile_here).
NODE_BYTES = 4 << 20
#: Unlabelled samples whose values are held until their prediction is known: at most this many
#: bytes of them at a time.
HELD_BYTES = 96 << 20

#: Which classes get per-class sums: "auto" (all when the table fits CLASS_TABLE_BUDGET, else
#: none, with a warning), "all", None (none) or a list of class indices.
ClassChoice = str | None | Sequence[int]


class PassLabels(NamedTuple):
    """The classes of one forward pass's samples, as the additions use them."""

    classes: Tensor | None  # None: no class rows to fill
    runs: list[tuple[int, int, int]]  # (class, start, stop) of each run of equal classes
    rows: np.ndarray | None  # class-table row per sample (-1: none); None off the CPU


class _ClassSums:
    """Float64 sums of every live node — overall, and per kept class — and per-class counts,
    filled batch by batch. With every class kept the overall sums are the class rows' sum.

    On the CPU, float32/float64/int64 values go through ``accumulate.add_batch`` (one numba
    pass per node and batch); other devices and dtypes take the torch path below."""

    # Torch path: large values are added per run of same-class samples, in place (a float32
    # sample into a float64 row converts on the fly): ~2x cheaper than converting the batch
    # and index_add_-ing it. For small values the per-run calls cost more than they save.
    PER_SAMPLE_MIN = 16384
    # A run is summed in float64 first (the row is then read and written once) only while it
    # holds at most this many values: beyond ~1 M, torch's sum(0, dtype=float64) converts the
    # whole run first and becomes 10x slower than adding sample by sample (16 x 256 x 56 x 56:
    # 33 ms vs 3.0 ms, 2 threads).
    RUN_SUM_MAX = 1 << 20

    def __init__(self, num_classes: int, kept: list[int], device: torch.device):
        self.sums: dict[str, Tensor] = {}
        self.totals: dict[str, Tensor] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.kept = kept
        self.every_class = kept == list(range(num_classes))
        self.row = torch.full((num_classes,), -1, dtype=torch.long, device=device)
        self.row[torch.tensor(kept, dtype=torch.long, device=device)] = torch.arange(
            len(kept), device=device)
        self.counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
        # samples per forward pass, streamed or held (profile_batches sets them)
        self.pass_samples = self.held_samples = 1 << 30

    def check(self, classes: Tensor) -> None:
        k = self.counts.numel()
        if ((classes < 0) | (classes >= k)).any():
            raise InputError(f"labels must be in [0, {k}) for this model's {k} outputs")

    def labels(self, classes: Tensor | None, samples: int) -> PassLabels:
        """What ``add`` needs about the classes of a pass's samples (None: no class rows)."""
        if classes is None:
            return PassLabels(None, [], np.full(samples, -1, dtype=np.int64))
        rows = self.row[classes]
        return PassLabels(classes, _runs(classes),
                          rows.numpy() if rows.device.type == "cpu" else None)

    def add(self, name: str, v: Tensor, labels: PassLabels) -> None:
        """Add a pass's values of one node (``labels``: their classes, from ``self.labels``)."""
        if labels.rows is not None and accumulate.usable(v):
            arrays = self._arrays.get(name) or self._numpy_sums(name, v)
            accumulate.add_batch(v, labels.rows, *arrays)
            return
        total = None if self.every_class else _zeros_once(self.totals, name, v.shape[1:], v)
        if total is not None:
            self._add_samples(total, v)
        if not self.kept or labels.classes is None:
            return
        sums = _zeros_once(self.sums, name, (len(self.kept), *v.shape[1:]), v)
        if v[0].numel() >= self.PER_SAMPLE_MIN or not self.every_class:
            for c, start, stop in labels.runs:
                r = int(self.row[c])
                if r < 0:
                    continue
                self._add_samples(sums[r], v[start:stop])
        else:  # index_add_ is ~5x cheaper than a (classes x batch) one-hot GEMM on CPU
            sums.index_add_(0, labels.classes, v.to(torch.float64))

    def _numpy_sums(self, name: str, v: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(class rows (R, points), overall row (points,) or empty) of a node, as numpy views
        of its sums (made once: building them costs more than a small node's addition)."""
        n = v[0].numel()
        rows, total = np.zeros((0, n)), np.zeros(0)
        if self.kept:
            rows = _zeros_once(self.sums, name, (len(self.kept), *v.shape[1:]), v).view(
                len(self.kept), n).numpy()
        if not self.every_class:
            total = _zeros_once(self.totals, name, v.shape[1:], v).view(n).numpy()
        self._arrays[name] = rows, total
        return rows, total

    @classmethod
    def _add_samples(cls, row: Tensor, v: Tensor) -> None:
        """row += the sum of the samples v[0], v[1], … (float64 accumulation)."""
        if len(v) == 1:
            row.add_(v[0])
        elif v.numel() <= cls.RUN_SUM_MAX:
            row.add_(v.sum(0, dtype=torch.float64))
        else:
            for sample in v:
                row.add_(sample)

    def count(self, classes: Tensor) -> None:
        self.counts += torch.bincount(classes, minlength=self.counts.numel())

    def overall(self) -> dict[str, Tensor]:
        if self.every_class:
            return {name: t.sum(0) for name, t in self.sums.items()}
        return self.totals


def _zeros_once(table: dict[str, Tensor], name: str, shape: tuple[int, ...],
                like: Tensor) -> Tensor:
    """table[name], created as float64 zeros of ``shape`` on ``like``'s device if missing."""
    if name not in table:
        table[name] = torch.zeros(shape, dtype=torch.float64, device=like.device)
    return table[name]


def _kept_classes(choice: ClassChoice, num_classes: int, points: int) -> list[int]:
    """The classes whose per-class sums a profile keeps (see ClassChoice)."""
    if choice == "all":
        return list(range(num_classes))
    if choice is None:
        return []
    if choice == "auto":
        size = num_classes * points * 8
        if size <= CLASS_TABLE_BUDGET:
            return list(range(num_classes))
        warnings.warn(
            f"per-class means of {num_classes} classes would take {size / 2**30:.1f} GiB (over "
            f"{CLASS_TABLE_BUDGET / 2**30:.0f} GiB): profiling without them, so "
            "reference='class' is unavailable; pass classes=[...] to keep some", stacklevel=4)
        return []
    if isinstance(choice, str):
        raise InputError(f"classes must be 'auto', 'all', None or a list of class indices, got "
                         f"{choice!r}")
    kept = sorted({int(c) for c in choice})
    if any(not 0 <= c < num_classes for c in kept):
        raise InputError(f"classes must be in [0, {num_classes}) for this model's "
                         f"{num_classes} outputs, got {kept}")
    return kept


def _runs(classes: Tensor) -> list[tuple[int, int, int]]:
    """(class, start, stop) of each run of equal consecutive classes."""
    values, counts = torch.unique_consecutive(classes, return_counts=True)
    stops = counts.cumsum(0).tolist()
    return [(c, stop - n, stop) for c, n, stop in zip(values.tolist(), counts.tolist(), stops,
                                                      strict=True)]


def _samples_first(layouts: dict[str, Any], batch: int,
                   visit: Callable[[str, Tensor], None]) -> Callable[[str, Tensor], None]:
    """A visitor that hands each node's value on with its samples in dim 0."""
    def receive(name: str, value: Tensor) -> None:
        visit(name, layouts.get(name, STANDARD).samples_first(value, batch))
    return receive


def _sums_for(graph: OperatorGraph, classes: ClassChoice, device: torch.device) -> _ClassSums:
    """Empty sums sized from one sample's shapes (the class count is the output's width)."""
    out = graph.sample_shapes.get(graph.output_name)
    if out is None:
        raise InputError("the model output does not depend on its input; nnslicer needs "
                         "(batch, classes) scores computed from it")
    check_output_shape((1, *out))  # checked once here: every batch's output has this shape
    points = sum(math.prod(shape) for shape in graph.sample_shapes.values())
    acc = _ClassSums(out[0], _kept_classes(classes, out[0], points), device)
    acc.pass_samples = max(1, PASS_BYTES // (4 * max(1, points)))
    acc.held_samples = max(1, HELD_BYTES // (4 * max(1, points)))
    return acc


def _add_chunk(acc: _ClassSums, graph: OperatorGraph, layouts: dict[str, Any], x: Tensor,
               labels: Tensor | None) -> None:
    """Add one chunk's values, ``acc.pass_samples`` at a time. They are streamed (each added as
    soon as it is computed: holding a chunk's values costs page faults, ResNet-10's forward 131 →
    189 ms per 16 samples) unless unlabelled samples need class rows: their class, the
    prediction, is known only at the end, so they are held, ``acc.held_samples`` at a time."""
    if labels is not None:
        acc.check(labels)
        # the whole chunk sorted by class: each pass touches few class rows, once per run
        labels, order = labels.sort(stable=True)
        for part_x, part in zip(x[order].split(acc.pass_samples),
                                labels.split(acc.pass_samples), strict=True):
            add = functools.partial(acc.add, labels=acc.labels(part, len(part)))
            stream_values(graph, part_x, _samples_first(layouts, len(part), add))
        acc.count(labels)
    elif not acc.kept:  # no class rows: only the overall sums, and the predictions counted
        for part in x.split(acc.pass_samples):
            add = functools.partial(acc.add, labels=acc.labels(None, part.shape[0]))
            logits = stream_values(graph, part, _samples_first(layouts, part.shape[0], add))
            acc.count(logits.argmax(1))
    else:
        for part in x.split(acc.held_samples):
            held: list[tuple[str, Tensor]] = []
            logits = stream_values(graph, part, _samples_first(
                layouts, part.shape[0], lambda name, v, held=held: held.append((name, v))))
            predicted = logits.argmax(1)
            labels = acc.labels(predicted, part.shape[0])
            for name, v in held:
                acc.add(name, v, labels)
            acc.count(predicted)


#: prepares a batch for the model: the traced graph (traced at the first batch if needed) and
#: the batch converted to the model's dtype
Prepare = Callable[[Tensor], tuple[OperatorGraph, Tensor]]


def _joined(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _Pending:
    """Samples of consecutive batches gathered into chunks of ``size``: per-node costs (and
    every class row a chunk touches) are paid once per chunk, not once per small batch."""

    def __init__(self) -> None:
        self.parts: list[tuple[Tensor, Tensor | None]] = []
        self.count = 0

    def push(self, x: Tensor, labels: Tensor | None) -> None:
        self.parts.append((x, labels))
        self.count += x.shape[0]

    def labelled(self) -> bool | None:
        return None if not self.parts else self.parts[0][1] is not None

    def chunks(self, size: int, flush: bool = False) -> Iterator[tuple[Tensor, Tensor | None]]:
        """The pending samples in chunks of ``size``; a remainder smaller than ``size`` stays
        pending unless ``flush``."""
        if not self.parts or (self.count < size and not flush):
            return
        x = _joined([p[0] for p in self.parts])
        labels = None if self.parts[0][1] is None else _joined([p[1] for p in self.parts])
        stop = self.count if flush else self.count - self.count % size
        self.parts, self.count = [], 0
        if stop < x.shape[0]:
            self.push(x[stop:], None if labels is None else labels[stop:])
        for start in range(0, stop, size):
            yield x[start:start + size], None if labels is None else labels[start:start + size]


def profile_batches(prepare: Prepare, data: Iterable, *, progress: bool = False,
                    device: torch.device | str = "cpu",
                    chunk_size: int | Callable[[Tensor], int] = 64,
                    classes: ClassChoice = "auto") -> Profile:
    """Accumulate sums (float64) over every batch of ``data``; the model runs once per sample.

    Consecutive batches are gathered into chunks of ``chunk_size`` samples (so memory does not
    grow with the caller's batch size; a function of the first batch when it depends on the
    model), run in forward passes of about ``PASS_BYTES`` of values unless the caller's batches
    are bigger. Values are streamed (see _add_chunk), except that unlabelled samples with class
    rows to fill are held until their prediction is known. ``classes``: which classes get
    per-class sums (ClassChoice).
    """
    from tqdm.auto import tqdm

    acc: _ClassSums | None = None
    graph: OperatorGraph | None = None
    input_shape: tuple[int, ...] | None = None
    pending = _Pending()
    total = len(data) if hasattr(data, "__len__") and not isinstance(data, Tensor) else None
    bar = tqdm(iter_batches(data), total=total, desc="profiling", unit="batch",
               disable=not progress)
    for x, labels in bar:
        check_batch(x, input_shape, "profiling batch")
        input_shape, input_dtype = tuple(x.shape[1:]), x.dtype
        graph, x = prepare(x)
        if callable(chunk_size):
            chunk_size = chunk_size(x)
        x = x.to(device)
        if graph.layouts is None:
            learn_layouts(graph, x[:1])
        labels = None if labels is None else labels.to(x.device).long()
        if labels is not None and labels.numel() != x.shape[0]:
            raise InputError(f"{labels.numel()} labels for a batch of {x.shape[0]} inputs")
        if acc is None:
            acc = _sums_for(graph, classes, x.device)
            acc.pass_samples = min(chunk_size, max(x.shape[0], acc.pass_samples))
            acc.held_samples = min(chunk_size, acc.held_samples)
        if pending.labelled() not in (None, labels is not None):  # no mixed chunks
            for part_x, part in pending.chunks(chunk_size, flush=True):
                _add_chunk(acc, graph, graph.layouts, part_x, part)
        pending.push(x, labels)
        for part_x, part in pending.chunks(chunk_size):
            _add_chunk(acc, graph, graph.layouts, part_x, part)
    if acc is None or graph is None:
        raise InputError("the profiling data is empty; give at least one batch")
    for part_x, part in pending.chunks(chunk_size, flush=True):
        _add_chunk(acc, graph, graph.layouts, part_x, part)
    sums = acc.overall()
    shapes = {name: list(t.shape) for name, t in sums.items()}
    fp = fingerprint(graph, shapes)
    fp["input_shape"] = list(input_shape)
    fp["input_dtype"] = str(input_dtype).removeprefix("torch.")
    return Profile(sums, acc.sums, acc.counts, fp,
                   torch.tensor(acc.kept, dtype=torch.long, device=acc.counts.device))
