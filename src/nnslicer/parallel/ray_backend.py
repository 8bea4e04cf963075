"""Ray backend: profile and slice on a Ray cluster with results identical to the serial run.

The slicer's traced model (with its batch size, selection policy and rule set) and its profile
are put in the object store once. Each worker is a Ray actor (one CPU, one torch
thread) that builds its own :class:`~nnslicer.Slicer` from those shared objects and handles
shards: contiguous runs of samples for slicing, runs of batches for profiling.

Why the result is identical to ``slicer.slice(x, ...)``: a shard is a whole number of the serial
run's chunks (``slicer.batch_size`` samples), so every chunk sees the same samples in the same
order as in the serial run; contributions are integers, so adding shards in any order is exact;
per-sample results are concatenated in sample order. Profiles keep float64 sums: shard sums
are added in shard order (deterministic), and equal the serial sums up to float64 rounding.

A worker that dies is restarted by Ray and its shard retried (``max_restarts`` /
``max_task_retries``); if the actor cannot come back, the shard is resubmitted to a fresh actor.

``import ray`` happens only when the backend is used; without Ray installed nnslicer works and
asking for this backend raises ImportError telling to ``pip install 'nnslicer[ray]'``.
"""

from __future__ import annotations

import copy
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..backward import kernels
from ..errors import InputError
from ..profile.profile import ClassChoice, Profile, iter_batches

if TYPE_CHECKING:
    from ..backward.policy import SelectionPolicy
    from ..criterion import Outputs, Target
    from ..results.slice import Slice
    from ..rules.ruleset import RuleSet
    from ..slicer import Slicer
    from ..trace.composite import CompositeLayers

RAY_MISSING = "the Ray backend needs Ray, which is not installed: pip install 'nnslicer[ray]'"

#: How often one shard may fail for a system reason (dead worker, lost node) before giving up.
DEFAULT_MAX_RETRIES = 3


def import_ray() -> Any:
    """The ``ray`` module, or ImportError with the install command."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


def _say(message: str) -> None:
    print(f"nnslicer: {message}", file=sys.stderr, flush=True)


def ensure_ray(address: str | None = None, num_workers: int = 2) -> Any:
    """Initialise Ray if needed and return the module.

    Already initialised: use that cluster as is. ``address`` given: connect to it (``"auto"``
    finds a cluster started with ``ray start`` on this machine). Otherwise start a local cluster
    with ``num_workers`` CPUs and no dashboard. Either of the last two is announced on stderr.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address)
        _say(f"connected to the Ray cluster at {address}")
    else:
        ray.init(num_cpus=num_workers, include_dashboard=False)
        _say(f"started a local Ray cluster with {num_workers} CPUs (ray.init); it stops when "
             "this process exits, or call ray.shutdown()")
    return ray


# ---------------------------------------------------------------------------------- worker side
@dataclass
class SlicerSpec:
    """Everything a worker needs to rebuild the driver's slicer (sent once, via ray.put)."""

    module: nn.Module
    batch_size: int
    memory_budget: int
    policy: SelectionPolicy
    rules: RuleSet
    composites: CompositeLayers

    @classmethod
    def of(cls, slicer: Slicer) -> SlicerSpec:
        return cls(_picklable_module(slicer.graph.module), slicer.batch_size,
                   slicer.memory_budget, slicer.policy, slicer.rules, slicer.composites)

    def build(self) -> Slicer:
        from ..slicer import Slicer

        return Slicer(self.module, batch_size=self.batch_size, policy=self.policy,
                      rules=self.rules, composites=self.composites,
                      memory_budget=self.memory_budget)


def _picklable_module(module: nn.Module) -> nn.Module:
    """A CPU copy of the traced GraphModule that pickles.

    fx pickles a GraphModule as its generated code and re-traces it on load. Two things break
    that for nnslicer's graphs: string annotations (``from __future__ import annotations`` in the
    model's file) become globals fx cannot import, and the custom tracer class needs arguments.
    The copy drops both; its code, submodules and parameters are the same, so the worker traces
    exactly the same graph (same node names, same rules).
    """
    copied = copy.deepcopy(module).cpu()
    if hasattr(copied, "graph") and hasattr(copied, "recompile"):
        for node in copied.graph.nodes:
            if isinstance(node.type, str):
                node.type = None
        copied._tracer_cls = None
        copied.recompile()
    return copied


def _maybe_crash(crash: tuple[str, int] | None, index: int) -> None:
    """Test hook: kill this worker process the first time it starts shard ``crash[1]``."""
    if crash is None or index != crash[1]:
        return
    flag = Path(crash[0])
    if not flag.exists():
        flag.write_text(str(os.getpid()))
        os._exit(1)


class ShardWorker:
    """The actor: one slicer rebuilt from the shared spec and profile, one torch thread.

    Every call carries ``shared = [spec ref, profile ref]`` (refs nested in a list: Ray passes
    them as refs, the driver keeps them alive); the slicer is built on the first call, so an
    actor that Ray restarts rebuilds it from the same objects.
    """

    def __init__(self, threads: int = 1):
        torch.set_num_threads(threads)
        kernels.set_threads(threads)
        self.slicer: Slicer | None = None

    def _slicer(self, shared: list[Any]) -> Slicer:
        if self.slicer is None:
            import ray

            spec, profile = ray.get(shared)
            slicer = spec.build()
            if profile is not None:
                slicer.use_profile(profile)
            self.slicer = slicer
        return self.slicer

    def ready(self, shared: list[Any]) -> dict[str, Any]:
        import ray

        self._slicer(shared)
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def slice(self, shared: list[Any], index: int, x: Tensor, target: Target, reference: str,
              per_sample: bool, outputs: Outputs, crash: tuple[str, int] | None = None
              ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
        slicer = self._slicer(shared)
        _maybe_crash(crash, index)
        x, target, _ = slicer.check_slice_args(x, target, outputs.synapses, outputs.neurons)
        s = slicer.slice_here(x, target, reference, per_sample, outputs)
        return s.neurons, s.synapses, s.meta

    def profile(self, shared: list[Any], index: int,
                batches: list[tuple[Tensor, Tensor | None]], classes: ClassChoice = "auto",
                crash: tuple[str, int] | None = None) -> Profile:
        slicer = self._slicer(shared)
        _maybe_crash(crash, index)
        data = [x if y is None else (x, y) for x, y in batches]
        return slicer.profile_here(data, progress=False, classes=classes)


# ---------------------------------------------------------------------------------- driver side
class RayPool:
    """A set of slicing actors for one slicer; reuse it to slice many inputs without restarts.

    ``with RayPool(slicer, num_workers=4) as pool: s = pool.slice(x)``. The pool snapshots the
    slicer (model, θ, policy) and, if ``with_profile``, its current profile when created.
    """

    def __init__(self, slicer: Slicer, *, address: str | None = None, num_workers: int = 2,
                 max_retries: int = DEFAULT_MAX_RETRIES, with_profile: bool = True,
                 _crash: tuple[str, int] | None = None):
        if num_workers < 1:
            raise InputError(f"num_workers must be at least 1, got {num_workers}")
        self.ray = ensure_ray(address, num_workers)
        cpus = int(self.ray.cluster_resources().get("CPU", 0))
        if 0 < cpus < num_workers:
            _say(f"the Ray cluster has {cpus} CPUs; using {cpus} workers instead of {num_workers}")
            num_workers = cpus
        self.slicer = slicer
        self.num_workers = num_workers
        self.max_retries = max_retries
        self._crash = _crash
        self._spec = self.ray.put(SlicerSpec.of(slicer))
        profile = slicer.current_profile if with_profile else None
        self._profile = self.ray.put(None if profile is None else profile.to("cpu"))
        # one thread per actor, numba's pool included: actors sharing a node's CPUs must not
        # oversubscribe them (numba otherwise starts one thread per CPU in every actor)
        self._actor_cls = self.ray.remote(
            num_cpus=1, max_restarts=max_retries, max_task_retries=max_retries,
            runtime_env={"env_vars": {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}},
        )(ShardWorker)
        self.actors = [self._new_actor() for _ in range(num_workers)]

    def _new_actor(self) -> Any:
        return self._actor_cls.remote()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors (the Ray cluster itself keeps running)."""
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []

    def workers(self) -> list[dict[str, Any]]:
        """Wait until every actor is up; the node id and pid of each."""
        shared = [self._spec, self._profile]
        return self.ray.get([a.ready.remote(shared) for a in self.actors])

    # ------------------------------------------------------------------ scheduling
    def _run(self, method: str, shards: Iterator[tuple[int, tuple]],
             on_result: Callable[[int, Any], None], total: int | None = None) -> int:
        """Run ``method(index, *args)`` for every shard, one shard per idle actor at a time.

        Calls ``on_result(index, result)`` as results arrive (any order). A shard whose actor
        died is retried (Ray restarts the actor; if it is gone for good, a new actor takes the
        shard) up to ``max_retries`` times. An error raised by the slicing code itself is
        re-raised here as is. Returns the number of shards.
        """
        from ray.exceptions import RayError, RayTaskError
        from tqdm.auto import tqdm

        extra = () if self._crash is None else (self._crash,)
        shared = [self._spec, self._profile]
        # object ref -> (actor slot, shard index, args, tries so far)
        pending: dict[Any, tuple[int, int, tuple, int]] = {}
        idle = list(range(len(self.actors)))
        source = iter(shards)
        exhausted = False
        count = 0
        bar = tqdm(total=total, desc=f"ray {method}", unit="shard",
                   disable=not getattr(self.slicer, "progress", False))

        def submit(slot: int, index: int, args: tuple, tries: int) -> None:
            ref = getattr(self.actors[slot], method).remote(shared, index, *args, *extra)
            pending[ref] = (slot, index, args, tries)

        try:
            while True:
                while idle and not exhausted:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    submit(idle.pop(), item[0], item[1], 0)
                    count += 1
                if not pending:
                    return count
                done, _ = self.ray.wait(list(pending), num_returns=1)
                ref = done[0]
                slot, index, args, tries = pending.pop(ref)
                try:
                    result = self.ray.get(ref)
                except RayTaskError as exc:  # the slicing code raised: report that error
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, BaseException):
                        raise cause from None
                    raise
                except RayError as exc:  # the worker or its node died beyond Ray's own retries
                    if tries >= self.max_retries:
                        raise RuntimeError(
                            f"shard {index} failed {tries + 1} times on Ray workers "
                            f"({type(exc).__name__}); giving up"
                        ) from exc
                    _say(f"a Ray worker died ({type(exc).__name__}); shard {index} goes to a "
                         "new worker")
                    self.ray.kill(self.actors[slot], no_restart=True)
                    self.actors[slot] = self._new_actor()
                    submit(slot, index, args, tries + 1)
                    continue
                idle.append(slot)
                bar.update(1)
                on_result(index, result)
        finally:
            bar.close()

    # --------------------------------------------------------------------- slicing
    def slice(self, x: Tensor, target: Target = None, reference: str = "dataset",
              per_sample: bool = False, synapses: Iterable[str] | None = None,
              neurons: bool = True, *, shard_size: int | None = None) -> Slice:
        """Same result as ``slicer.slice(x, target, reference, per_sample, synapses,
        neurons)``.

        ``shard_size`` samples go to a worker at a time (default ``slicer.batch_size``); it is
        rounded up to a multiple of the slicer's chunk (``batch_size``, or fewer samples when
        the memory budget asks for it) so that shards split into exactly the
        serial run's chunks.
        """
        x, target, outputs = self.slicer.check_slice_args(x, target, synapses, neurons)
        return self.slice_checked(x, target, reference, per_sample, outputs,
                                  shard_size=shard_size)

    def slice_checked(self, x: Tensor, target: Target, reference: str, per_sample: bool,
                      outputs: Outputs, *, shard_size: int | None = None) -> Slice:
        """``slice`` for arguments the slicer has checked (Slicer.check_slice_args)."""
        from ..criterion import ChunkResults, Neurons, split_target
        from ..results.slice import Slice

        slicer = self.slicer
        if slicer.policy.uses_profile and slicer.current_profile is None:
            raise InputError(
                "no profile yet: call slicer.profile(data) or slicer.use_profile(path)"
            )
        # shards are whole numbers of the serial run's chunks, so every chunk holds the same
        # samples as in the serial run
        step = _shard_step(shard_size, slicer.slice_chunk_samples(x))
        n = x.shape[0]
        x = x.detach().cpu()
        if isinstance(target, Tensor):
            target = target.detach().cpu()
        elif isinstance(target, Neurons):
            target = Neurons(target.node, target.index.cpu())

        def shards() -> Iterator[tuple[int, tuple]]:
            for i, start in enumerate(range(0, n, step)):
                stop = min(start + step, n)
                yield i, (x[start:stop], split_target(target, start, stop), reference, per_sample,
                          outputs)

        metas: dict[int, dict[str, Any]] = {}
        neurons, synapses = ChunkResults(per_sample), ChunkResults(per_sample)

        def collect(index: int, part: tuple) -> None:
            neurons.add(part[0], index)
            synapses.add(part[1], index)
            metas[index] = part[2]

        count = self._run("slice", shards(), collect, total=-(-n // step))
        targets = [t for i in range(count) for t in metas[i].get("targets", [])]
        meta = slicer.meta(n, reference, per_sample, targets, target)  # the driver's names
        return Slice(neurons.merged(), synapses.merged(), meta)

    # ------------------------------------------------------------------- profiling
    def profile(self, data: Iterable | Tensor, *, shard_batches: int = 4,
                classes: ClassChoice = "auto") -> Profile:
        """Profile of ``data`` computed by the workers, ``shard_batches`` batches per shard.

        Shard profiles are added in shard order (deterministic); the sums equal the serial
        ``slicer.profile(data)`` up to float64 rounding, counts and fingerprint exactly.
        Data is read lazily: at most one shard per worker is in flight.
        """
        if shard_batches < 1:
            raise InputError(f"shard_batches must be at least 1, got {shard_batches}")
        shape: list[tuple[int, ...]] = []

        def shards() -> Iterator[tuple[int, tuple]]:
            group: list[tuple[Tensor, Tensor | None]] = []
            index = 0
            for x, y in iter_batches(data):
                if not isinstance(x, Tensor) or x.dim() < 1:
                    raise InputError("profiling batches must be tensors with a batch dimension")
                if not shape:
                    shape.append(tuple(x.shape[1:]))
                elif tuple(x.shape[1:]) != shape[0]:
                    raise InputError(f"profiling batch has sample shape {tuple(x.shape[1:])} but "
                                     f"{shape[0]} was expected")
                group.append((x.detach().cpu(), None if y is None else y.detach().cpu()))
                if len(group) == shard_batches:
                    yield index, (group, classes)
                    group, index = [], index + 1
            if group:
                yield index, (group, classes)

        done: dict[int, Profile] = {}
        total: list[Profile] = []
        cursor = [0]

        def collect(index: int, part: Profile) -> None:
            done[index] = part
            while cursor[0] in done:  # fold in shard order so the float64 sums are deterministic
                p = done.pop(cursor[0])
                total[:] = [p if not total else total[0] + p]
                cursor[0] += 1

        self._run("profile", shards(), collect)
        if not total:
            raise InputError("the profiling data is empty; give at least one batch")
        return total[0]


def _shard_step(shard_size: int | None, batch_size: int) -> int:
    if shard_size is None:
        return batch_size
    if shard_size < 1:
        raise InputError(f"shard_size must be at least 1, got {shard_size}")
    return -(-shard_size // batch_size) * batch_size


# ------------------------------------------------------------------------------ functional API
def ray_slice(slicer: Slicer, x: Tensor, target: Target = None, reference: str = "dataset",
              per_sample: bool = False, synapses: Iterable[str] | None = None, *,
              address: str | None = None, num_workers: int = 2,
              shard_size: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
              _crash: tuple[str, int] | None = None) -> Slice:
    """``slicer.slice(x, target, reference, per_sample, synapses)`` computed by Ray actors.

    Identical to the serial result. ``shard_size`` (default ``slicer.batch_size``, rounded up
    to a multiple of it) samples go to a worker at a time. The slicer must have a profile
    (unless its policy needs none). Starts/connects Ray if it is not initialised (see
    :func:`ensure_ray`). ``_crash=(flag_file, shard)`` is a test hook that kills the worker the
    first time it starts that shard.
    """
    with RayPool(slicer, address=address, num_workers=num_workers, max_retries=max_retries,
                 _crash=_crash) as pool:
        return pool.slice(x, target, reference, per_sample, synapses, shard_size=shard_size)


def ray_profile(slicer: Slicer, data: Iterable | Tensor, *, address: str | None = None,
                num_workers: int = 2, shard_batches: int = 4, classes: ClassChoice = "auto",
                max_retries: int = DEFAULT_MAX_RETRIES,
                _crash: tuple[str, int] | None = None) -> Profile:
    """``slicer.profile(data, classes=...)`` computed by Ray actors; the slicer keeps it.

    ``data`` is what ``slicer.profile`` takes (batches of inputs or (inputs, labels), or one
    tensor); ``shard_batches`` consecutive batches go to a worker at a time. Counts and the
    fingerprint are exact; the float64 sums equal the serial ones up to rounding (the shards'
    sums are added in shard order, so the result does not depend on timing).
    """
    with RayPool(slicer, address=address, num_workers=num_workers, max_retries=max_retries,
                 with_profile=False, _crash=_crash) as pool:
        profile = pool.profile(data, shard_batches=shard_batches, classes=classes)
    return slicer.use_profile(profile)


class RayExecutor:
    """Profile and slice on a Ray cluster (``address``, or a local one with ``num_workers``
    CPUs), with results identical to the serial executor's."""

    def __init__(self, address: str | None = None, num_workers: int = 2):
        self.address = address
        self.num_workers = num_workers

    def profile(self, slicer: Slicer, data: Iterable | Tensor, progress: bool,
                classes: ClassChoice = "auto") -> Profile:
        batches = iter_batches(data)
        first = next(batches, None)
        if first is None:
            raise InputError("the profiling data is empty; give at least one batch")
        slicer.ready(first[0])  # a model traced at its first input is traced here
        data = itertools.chain([first], batches)
        data = (x if y is None else (x, y) for x, y in data)
        return ray_profile(slicer, data, address=self.address, num_workers=self.num_workers,
                           classes=classes)

    def slice(self, slicer: Slicer, x: Tensor, target: Target, reference: str,
              per_sample: bool, outputs: Outputs) -> Slice:
        with RayPool(slicer, address=self.address, num_workers=self.num_workers) as pool:
            return pool.slice_checked(x, target, reference, per_sample, outputs)
