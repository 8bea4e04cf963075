"""The public entry point: trace → profile → forward → backward → Slice."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .backward.engine import ReferenceFn, run_backward
from .backward.policy import EffectivePathPolicy, NNSlicerPolicy, SelectionPolicy
from .criterion import (
    ChunkResults,
    Neurons,
    Outputs,
    Target,
    criterion_seeds,
    resolve_target,
    split_target,
)
from .errors import InputError, ProfileMismatch, TraceError
from .forward.recorder import learn_layouts, record_values
from .parallel.executor import Executor, SerialExecutor, make_executor
from .profile.profile import (
    NODE_BYTES,
    PASS_BYTES,
    ClassChoice,
    Profile,
    check_batch,
    check_output_shape,
    profile_batches,
)
from .results.slice import Slice
from .rules.default import default_rules
from .rules.ruleset import RuleSet
from .trace.composite import CompositeLayers, default_composites
from .trace.graph import OperatorGraph
from .trace.tracer import NeedsConcreteShapes

REFERENCES = ("dataset", "class")


class Slicer:
    """Computes NNSlicer slices of one model.

    ``Slicer(model, theta=0.2)`` traces the model (UnsupportedOperation if an operator has no
    rule), ``profile(data)`` computes the reference means, ``slice(x, target=...)`` returns a
    :class:`Slice`. ``rules`` is this slicer's rule set (default: ``default_rules()``).
    A model whose ``forward`` branches on shapes, or holds recurrent layers, is traced with the
    concrete shapes of its first input (``example_input``, or the first batch it profiles or
    slices). ``batch_size`` bounds how many samples are sliced at once; profiling, which holds
    far less per sample, runs ``4 * batch_size`` samples at a time; both run fewer when that
    many samples' recorded values would not fit ``memory_budget`` bytes (an ImageNet model).
    The budget is for the chunk's own values; the process holds the model, its copy, the
    profile (8 bytes per point of one sample) and the allocator's caches besides (ResNet-50 at
    3×224×224: 2 GiB gives chunks of 2 samples and a peak RSS of about 3.3 GiB).
    ``executor``: None (this process), ``"ray"`` (a local Ray cluster), a Ray address, or an
    :class:`~nnslicer.parallel.Executor`.
    """

    def __init__(self, model: nn.Module, theta: float = 0.2, *, rules: RuleSet | None = None,
                 batch_size: int = 16, device: str | torch.device = "cpu",
                 progress: bool = False, policy: SelectionPolicy | None = None,
                 executor: str | Executor | None = None, num_workers: int = 2,
                 example_input: Tensor | None = None,
                 composites: CompositeLayers | None = None,
                 memory_budget: int = 2 << 30):
        if not isinstance(model, nn.Module):
            raise TraceError(f"expected a torch.nn.Module, got {type(model).__name__}")
        if model.training:
            warnings.warn(
                "the model is in training mode; nnslicer slices an eval-mode copy (BatchNorm "
                "uses running statistics, Dropout is off)", stacklevel=2,
            )
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        if rules is not None and not isinstance(rules, RuleSet):
            raise InputError(f"rules must be a RuleSet (nnslicer.default_rules()...), got "
                             f"{type(rules).__name__}")
        self.policy = policy or NNSlicerPolicy(theta)
        self.rules = rules if rules is not None else default_rules()
        self.composites = composites if composites is not None else default_composites()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self._value_sizes: tuple[int, int] | None = None  # see value_sizes
        self.progress = progress
        self.executor = make_executor(executor, num_workers)
        self._model = model
        self._graph: OperatorGraph | None = None
        self._profile: Profile | None = None
        # in-place version counters of the user's weights when the graph copied them (or when
        # they were last found equal to the copy): a cheap test before comparing values
        self._weight_versions: list[int] | None = None
        try:
            self._trace(example_input)
        except NeedsConcreteShapes:
            if example_input is not None:
                raise
            # traced with the concrete shapes of the first input it sees

    @property
    def theta(self) -> float:
        return self.policy.theta

    @property
    def method(self) -> str:
        """What the apps read to tell methods apart: "nnslicer" or "effective-path"."""
        return self.policy.name

    @property
    def graph(self) -> OperatorGraph:
        if self._graph is None:
            raise InputError(
                f"{type(self._model).__name__} is traced with the shapes of its first input "
                "(its forward reads shapes or holds recurrent layers): profile or slice a batch "
                "first, or pass Slicer(model, example_input=x)"
            )
        return self._graph

    def _trace(self, example: Tensor | None) -> None:
        example = None if example is None else _as_tensor(example, "example_input").cpu()
        graph = OperatorGraph(self._model, self.rules, self.composites, example)
        self.rules.bind(graph)
        graph.module.to(self.device)
        self._graph = graph
        self._weight_versions = _weight_versions(self._model)

    def ready(self, x: Tensor) -> OperatorGraph:
        """The traced graph, tracing (and finding where each node keeps its samples) with the
        shapes of ``x`` if that has not happened yet."""
        if self._graph is None:
            self._trace(x[:1])
        if self._graph.layouts is None:
            learn_layouts(self._graph, x[:1].to(self.device))
        return self._graph

    def nodes(self) -> list[dict[str, Any]]:
        """Every live node: its name, the module it is (or sits in), operator and shape of one
        sample (the shape once the model has seen an input)."""
        graph = self.graph
        return [{"node": n.name, "module": n.module_path, "operator": n.kind,
                 "shape": graph.sample_shapes.get(n.name)} for n in graph.live_nodes()]

    # ----------------------------------------------------------------- profiling
    def profile(self, data: Iterable | Tensor, *, classes: ClassChoice = "auto",
                progress: bool | None = None) -> Profile:
        """Profile over ``data`` (batches of inputs or of (inputs, labels)) and keep it.

        ``classes``: which classes get per-class means (for ``reference="class"``): "auto"
        (all when their table fits ``profile.CLASS_TABLE_BUDGET`` bytes, else none, with a
        warning), "all", None, or a list of class indices.
        """
        show = self.progress if progress is None else progress
        self._profile = self.executor.profile(self, data, progress=show, classes=classes)
        return self._profile

    def profile_here(self, data: Iterable | Tensor, progress: bool = False,
                     classes: ClassChoice = "auto") -> Profile:
        """Profile in this process (what the serial executor and every Ray worker run)."""
        def prepare(x: Tensor) -> tuple[OperatorGraph, Tensor]:
            graph = self.ready(x)
            return graph, _matching_dtype(x, graph)

        def chunk(x: Tensor) -> int:  # a held float32 value per point
            # models of small nodes (an unrolled LSTM: hundreds of nodes of a few hundred
            # values): more samples per pass share each node's per-call costs, while the
            # largest node's values of a pass stay within NODE_BYTES (cache-sized: LeNet-5's
            # additions ran ~30 % slower in passes of 1 024 samples than of 64)
            points, largest = self.value_sizes(x)
            small = min(PASS_BYTES // max(1, 4 * points), NODE_BYTES // max(1, 4 * largest))
            return self.samples_per_chunk(x, max(4 * self.batch_size, min(small, 4096)),
                                          bytes_per_point=4)

        return profile_batches(prepare, data, progress=progress, device=self.device,
                               chunk_size=chunk, classes=classes)

    def slice_chunk_samples(self, x: Tensor) -> int:
        """Samples sliced at once: ``batch_size``, or fewer to fit the memory budget (a float32
        value, an int64 contribution and, briefly, a float64 Δ per point)."""
        return self.samples_per_chunk(x, self.batch_size, bytes_per_point=20)

    def samples_per_chunk(self, x: Tensor, most: int, bytes_per_point: int) -> int:
        """``most`` samples, or fewer if their points (``bytes_per_point`` each) would not fit
        the memory budget."""
        fits = self.memory_budget // max(1, self.value_sizes(x)[0] * bytes_per_point)
        return max(1, min(most, fits))

    def value_sizes(self, x: Tensor) -> tuple[int, int]:
        """(floating-point values one sample makes, those of its largest node), from one
        recorded sample, measured once; only nodes that depend on the input (parameters read by
        the graph do not grow with the samples)."""
        if self._value_sizes is None:
            values = record_values(self.graph, x[:1].to(self.device))
            live = {n.name for n in self.graph.live_nodes()}
            sizes = [v.numel() for k, v in values.items()
                     if k in live and isinstance(v, Tensor) and v.is_floating_point()]
            self._value_sizes = sum(sizes), max(sizes, default=0)
        return self._value_sizes

    def use_profile(self, profile: Profile | str | Path) -> Profile:
        """Use a saved or computed profile; ProfileMismatch if it belongs to another model."""
        if not isinstance(profile, Profile):
            profile = Profile.load(profile)
        if self._graph is None or self._graph.layouts is None:
            self.ready(profile.example_input())
        profile.check_model(self.graph)
        self._profile = profile.to(self.device)
        return self._profile

    def _check_profile_is_current(self) -> None:
        """ProfileMismatch if the user's model was changed in place after the slicer copied
        it (its version counters moved and a weight the graph uses now differs from the copy):
        the profile and the slices are of the copy, so they would describe the old weights."""
        if self._weight_versions is None:
            return
        now = _weight_versions(self._model)
        if now == self._weight_versions:
            return
        changed = _changed_weight(self._model, self._graph.module)
        if changed is not None:
            raise ProfileMismatch(
                f"the model's weights changed after it was profiled ('{changed}' first); this "
                "Slicer holds a copy of the weights as they were at Slicer(model): make a new "
                "Slicer(model) and profile it again")
        self._weight_versions = now

    @property
    def current_profile(self) -> Profile | None:
        return self._profile

    # ------------------------------------------------------------------- slicing
    def _reference(self, reference: str, predicted: Tensor) -> ReferenceFn:
        if not self.policy.uses_profile:
            return lambda name: None
        if reference not in REFERENCES:
            raise InputError(f"reference must be one of {REFERENCES}, got {reference!r}")
        profile = self._profile
        if profile is None:
            raise InputError(
                "no profile yet: call slicer.profile(data) or slicer.use_profile(path)"
            )
        if reference == "dataset":
            return lambda name: profile.mean(name).unsqueeze(0)
        return lambda name: profile.class_mean(name, predicted)

    def check_slice_args(self, x: Tensor, target: Target, synapses: Iterable[str] | None,
                         neurons: bool = True) -> tuple[Tensor, Target, Outputs]:
        """``x`` as a tensor, the target resolved (a Neurons criterion as a per-sample mask),
        what to compute (the wanted synapse names, None: all); InputError naming what is
        wrong."""
        x = _as_tensor(x, "input x")
        expected = None
        if self._profile is not None and self.policy.uses_profile:
            self._check_profile_is_current()
            expected = tuple(self._profile.input_shape)
        check_batch(x, expected, "input x")
        graph = self.ready(x)
        x = _matching_dtype(x, graph)
        if isinstance(target, Tensor) and target.dim() >= 1 and target.shape[0] != x.shape[0]:
            raise InputError(f"target has {target.shape[0]} rows for {x.shape[0]} input samples")
        target = resolve_target(graph, target, x.shape[0])
        if synapses is None:
            if not neurons:
                raise InputError("neurons=False needs synapses=[...]: it skips the nodes "
                                 "upstream of the wanted weights")
            return x, target, Outputs()
        wanted = frozenset([synapses] if isinstance(synapses, str) else synapses)
        known = graph.synapse_parameters()
        unknown = sorted(wanted - set(known))
        if unknown:
            raise InputError(
                f"no synapses named {unknown}; this model's weights with synapses are "
                f"{sorted(known)[:8]}{' …' if len(known) > 8 else ''}"
            )
        return x, target, Outputs(wanted, bool(neurons))

    def slice(self, x: Tensor, target: Target = None, reference: str = "dataset",
              per_sample: bool = False, synapses: Iterable[str] | None = None,
              neurons: bool = True) -> Slice:
        """Slice the criterion (x, target). See docs/spec.md §7 for the target forms.

        ``synapses``: names of the weights whose synapses to compute (default: all). With
        ``per_sample`` this bounds memory: a per-sample buffer holds batch × weight-size counts.
        ``neurons=False`` (with ``synapses``) skips every node upstream of the wanted weights:
        the same synapses, sooner, and neurons only of the nodes at or downstream of them.
        """
        x, target, outputs = self.check_slice_args(x, target, synapses, neurons)
        return self.executor.slice(self, x, target, reference, per_sample, outputs)

    def slice_here(self, x: Tensor, target: Target, reference: str, per_sample: bool,
                   outputs: Outputs) -> Slice:
        """Slice in this process, ``batch_size`` samples at a time (arguments checked)."""
        from tqdm.auto import tqdm

        neurons, synapses = ChunkResults(per_sample), ChunkResults(per_sample)
        targets: list[int] = []
        step = self.slice_chunk_samples(x)
        starts = range(0, x.shape[0], step)
        for start in tqdm(starts, desc="slicing", unit="chunk", disable=not self.progress):
            stop = min(start + step, x.shape[0])
            n, s, classes = self.slice_chunk(x[start:stop], split_target(target, start, stop),
                                             reference, per_sample, outputs)
            neurons.add(n)
            synapses.add(s)
            if classes is not None:
                targets.extend(classes)
        return Slice(neurons.merged(), synapses.merged(),
                     self.meta(x.shape[0], reference, per_sample, targets, target))

    def slice_chunk(self, x: Tensor, target: Target, reference: str, per_sample: bool,
                    outputs: Outputs = Outputs()
                    ) -> tuple[dict[str, Tensor], dict[str, Tensor], list[int] | None]:
        graph = self.graph
        values = record_values(graph, x.to(self.device))
        logits = values[graph.output_name]
        check_output_shape(logits.shape)
        seeds, classes = criterion_seeds(graph, target, values, x.shape[0])
        ref = self._reference(reference, logits.argmax(1))
        neurons, synapses = run_backward(graph, values, seeds, ref, self.policy, per_sample,
                                         x.shape[0], outputs)
        return neurons, synapses, classes

    def meta(self, n: int, reference: str, per_sample: bool, targets: list[int],
             target: Target = None) -> dict[str, Any]:
        graph = self.graph
        kinds, weights, modules = {}, {}, {}
        for node in graph.live_nodes():
            kinds[node.name] = node.kind
            if node.module_path:
                modules[node.name] = node.module_path
            if node.rule is not None:
                names = node.rule.synapse_names(node)
                if names:
                    weights[node.name] = names[0]
        meta = {
            "method": self.policy.name,
            "theta": self.policy.theta,
            "reference": reference if self.policy.uses_profile else "zero",
            "per_sample": per_sample,
            "num_samples": n,
            "targets": targets,
            "node_kinds": kinds,
            "node_weights": weights,
            "node_modules": modules,
            "input_node": graph.input_name,
            "output_node": graph.output_name,
            "model": type(self._model).__name__,
        }
        if isinstance(target, Neurons):
            meta["criterion_node"] = target.node
        return meta


class EffectivePath(Slicer):
    """EffectivePath baseline (docs/spec.md §7) answering the same ``slice(x, target=...)``."""

    def __init__(self, model: nn.Module, theta: float = 0.5, **kwargs: Any):
        super().__init__(model, theta, policy=EffectivePathPolicy(theta), **kwargs)

    def class_paths(self, data: Iterable, num_classes: int | None = None) -> dict[int, Slice]:
        """Path of each class: the sum of the paths of its samples in ``data`` (x, y) batches."""
        from .profile.profile import iter_batches

        paths: dict[int, Slice] = {}
        for x, y in iter_batches(data):
            if y is None:
                raise InputError("class paths need labelled (inputs, labels) batches")
            for k in y.unique().tolist():
                s = self.slice(x[y == k], target=int(k))
                paths[k] = paths[k] + s if k in paths else s
        return paths


def _as_tensor(x: Any, what: str) -> Tensor:
    """Tensors as they are; numpy arrays converted; anything else refused in one line."""
    if isinstance(x, Tensor):
        return x
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None and isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise InputError(f"{what} must be a torch tensor (or a numpy array), got {type(x).__name__}")


def _matching_dtype(x: Tensor, graph: OperatorGraph) -> Tensor:
    """A float input in another float dtype than the model's weights is converted (with a
    note); integer inputs stay as they are for a model that looks them up in an Embedding."""
    if not x.is_floating_point():
        if any(n.family == "embedding" for n in graph.live_nodes()):
            return x
        raise InputError(f"input x is a {x.dtype} tensor but the model computes in floats; "
                         "pass float inputs (integer inputs are token ids for an Embedding)")
    dtype = next((p.dtype for p in graph.module.parameters() if p.is_floating_point()), None)
    if dtype is None or x.dtype == dtype:
        return x
    warnings.warn(f"input is {x.dtype} but the model's weights are {dtype}: converting the "
                  "input", stacklevel=3)
    return x.to(dtype)


__all__ = ["EffectivePath", "SerialExecutor", "Slicer"]


def _weight_versions(module: nn.Module) -> list[int]:
    return [t._version for t in (*module.parameters(), *module.buffers())]


def _changed_weight(model: nn.Module, copy: nn.Module) -> str | None:
    """The first parameter or buffer of the traced ``copy`` whose value differs from the
    user's ``model`` under the same name (None if all are equal)."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, value in (*copy.named_parameters(), *copy.named_buffers()):
        mine = own.get(name)
        if mine is not None and not torch.equal(mine.detach().to(value.device), value.detach()):
            return name
    return None
