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
from .errors import InputError
from .forward.recorder import record_values
from .profile.profile import Profile, _check_batch, profile_batches
from .results.slice import Slice
from .trace.graph import OperatorGraph

Target = None | int | Tensor
REFERENCES = ("dataset", "class")


def make_seeds(target: Target, logits: Tensor) -> Tensor:
    """The criterion as a (B, K) bool mask of output neurons per sample (SPEC §6)."""
    B, K = logits.shape
    if target is None:
        return nn.functional.one_hot(logits.argmax(1), K).bool()
    if isinstance(target, bool) or not isinstance(target, int | Tensor):
        raise InputError(
            f"target must be None, an int, a (B,) class tensor or a (B, K) bool mask, "
            f"got {type(target).__name__}"
        )
    if isinstance(target, int):
        target = torch.full((B,), target, dtype=torch.long)
    target = target.to(logits.device)
    if target.dtype == torch.bool:
        if tuple(target.shape) != (B, K):
            raise InputError(f"a bool target must have shape ({B}, {K}), got {tuple(target.shape)}")
        return target
    if target.is_floating_point() or target.dim() != 1 or target.shape[0] != B:
        raise InputError(
            f"a class target must be an integer tensor of shape ({B},), got "
            f"{target.dtype} {tuple(target.shape)}"
        )
    if ((target < 0) | (target >= K)).any():
        raise InputError(f"target classes must be in [0, {K}) for this model's {K} outputs")
    return nn.functional.one_hot(target.long(), K).bool()


def split_target(target: Target, start: int, stop: int) -> Target:
    """The rows start:stop of a per-sample target (an int or None applies to every sample)."""
    if isinstance(target, Tensor) and target.dim() >= 1:
        return target[start:stop]
    return target


def _merge(acc: dict[str, Tensor] | None, part: dict[str, Tensor], per_sample: bool
           ) -> dict[str, Tensor]:
    if acc is None:
        return {k: [v] for k, v in part.items()} if per_sample else part
    for k, v in part.items():
        if per_sample:
            acc[k].append(v)
        else:
            acc[k] += v
    return acc


class Slicer:
    """Computes NNSlicer slices of one model.

    ``Slicer(model, theta=0.2)`` traces the model (UnsupportedOperation if an operator has no
    rule), ``profile(data)`` computes the reference means, ``slice(x, target=...)`` returns a
    :class:`Slice`. ``batch_size`` bounds how many samples are sliced at once (memory);
    profiling, which holds far less per sample, runs ``4 * batch_size`` samples at a time.
    """

    method = "nnslicer"

    def __init__(self, model: nn.Module, theta: float = 0.2, *, batch_size: int = 16,
                 device: str | torch.device = "cpu", progress: bool = False,
                 policy: SelectionPolicy | None = None, executor: str | None = None,
                 num_workers: int = 2):
        if isinstance(model, nn.Module) and model.training:
            warnings.warn(
                "the model is in training mode; nnslicer slices an eval-mode copy (BatchNorm "
                "uses running statistics, Dropout is off)", stacklevel=2,
            )
        self.policy = policy or NNSlicerPolicy(theta)
        self.theta = theta
        self.graph = OperatorGraph(model)
        self.device = torch.device(device)
        self.graph.module.to(self.device)
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.progress = progress
        self._profile: Profile | None = None
        # None/"serial": this process; "ray"/"local": a local Ray cluster; else a Ray address
        self.executor = None if executor in (None, "serial") else executor
        self.num_workers = num_workers

    def _ray_address(self) -> str | None:
        return None if self.executor in ("ray", "local") else self.executor

    # ----------------------------------------------------------------- profiling
    def profile(self, data: Iterable | Tensor, *, progress: bool | None = None) -> Profile:
        """Profile over ``data`` (batches of inputs or of (inputs, labels)) and keep it."""
        show = self.progress if progress is None else progress
        if self.executor is not None:
            from .parallel.ray_backend import ray_profile

            self._profile = ray_profile(self, data, address=self._ray_address(),
                                        num_workers=self.num_workers)
        else:
            self._profile = profile_batches(self.graph, data, progress=show, device=self.device,
                                            chunk_size=4 * self.batch_size)
        return self._profile

    def use_profile(self, profile: Profile | str | Path) -> Profile:
        """Use a saved or computed profile; ProfileMismatch if it belongs to another model."""
        if not isinstance(profile, Profile):
            profile = Profile.load(profile)
        profile.check_model(self.graph)
        self._profile = Profile(
            {k: v.to(self.device) for k, v in profile.sums.items()},
            {k: v.to(self.device) for k, v in profile.class_sums.items()},
            profile.class_counts.to(self.device),
            profile.fingerprint,
        )
        return self._profile

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
            return profile.mean
        return lambda name: profile.class_mean(name, predicted)

    def check_slice_args(self, x: Tensor, target: Target,
                         synapses: Iterable[str] | None) -> frozenset[str] | None:
        """InputError naming what is wrong with slice() arguments; returns the wanted synapse
        names as a set (None: all)."""
        expected = None
        if self._profile is not None and self.policy.uses_profile:
            expected = tuple(self._profile.input_shape)
        _check_batch(x, expected, "input x")
        if isinstance(target, Tensor) and target.dim() >= 1 and target.shape[0] != x.shape[0]:
            raise InputError(f"target has {target.shape[0]} rows for {x.shape[0]} input samples")
        if synapses is None:
            return None
        wanted = frozenset([synapses] if isinstance(synapses, str) else synapses)
        known = self.graph.synapse_parameters()
        unknown = sorted(wanted - set(known))
        if unknown:
            raise InputError(
                f"no synapses named {unknown}; this model's weights with synapses are "
                f"{sorted(known)[:8]}{' …' if len(known) > 8 else ''}"
            )
        return wanted

    def slice(self, x: Tensor, target: Target = None, reference: str = "dataset",
              per_sample: bool = False, synapses: Iterable[str] | None = None) -> Slice:
        """Slice the criterion (x, target). See SPEC §6 for the target forms.

        ``synapses``: names of the weights whose synapses to compute (default: all). With
        ``per_sample`` this bounds memory: a per-sample buffer holds batch × weight-size counts.
        """
        wanted = self.check_slice_args(x, target, synapses)
        if self.executor is not None:
            from .parallel.ray_backend import ray_slice

            return ray_slice(self, x, target, reference, per_sample, wanted,
                             address=self._ray_address(), num_workers=self.num_workers)
        from tqdm.auto import tqdm

        neurons = synapses = None
        targets: list[list[int]] = []
        starts = range(0, x.shape[0], self.batch_size)
        for start in tqdm(starts, desc="slicing", unit="chunk", disable=not self.progress):
            stop = min(start + self.batch_size, x.shape[0])
            part = self._slice_chunk(x[start:stop], split_target(target, start, stop),
                                     reference, per_sample, wanted)
            n, s, seeds = part
            neurons = _merge(neurons, n, per_sample)
            synapses = _merge(synapses, s, per_sample)
            if bool((seeds.sum(1) == 1).all()):  # one class per sample: record which
                targets.extend(seeds.to(torch.int8).argmax(1).tolist())
        if per_sample:
            neurons = {k: torch.cat(v) for k, v in neurons.items()}
            synapses = {k: torch.cat(v) for k, v in synapses.items()}
        return Slice(neurons, synapses, self._meta(x.shape[0], reference, per_sample, targets))

    def _slice_chunk(self, x: Tensor, target: Target, reference: str, per_sample: bool,
                     wanted: frozenset[str] | None = None
                     ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        values = record_values(self.graph, x.to(self.device))
        logits = values[self.graph.output_name]
        if logits.dim() != 2:
            raise InputError(
                f"the model output has shape {tuple(logits.shape)}; nnslicer needs (batch, classes)"
            )
        seeds = make_seeds(target, logits)
        ref = self._reference(reference, logits.argmax(1))
        neurons, synapses = run_backward(self.graph, values, seeds, ref, self.policy, per_sample,
                                         wanted)
        return neurons, synapses, seeds

    def _meta(self, n: int, reference: str, per_sample: bool, targets: list[int]
              ) -> dict[str, Any]:
        kinds, weights = {}, {}
        for node in self.graph.live_nodes():
            kinds[node.name] = node.kind
            if node.rule is not None:
                names = node.rule.synapse_names(node)
                if names:
                    weights[node.name] = names[0]
        return {
            "method": self.policy.name,
            "theta": self.policy.theta,
            "reference": reference if self.policy.uses_profile else "zero",
            "per_sample": per_sample,
            "num_samples": n,
            "targets": targets,
            "node_kinds": kinds,
            "node_weights": weights,
            "input_node": self.graph.input_name,
            "output_node": self.graph.output_name,
        }


class EffectivePath(Slicer):
    """EffectivePath baseline (SPEC §7) answering the same ``slice(x, target=...)`` call."""

    method = "effective-path"

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
