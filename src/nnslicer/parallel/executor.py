"""Where a Slicer's work runs: an executor profiles and slices for it.

``SerialExecutor`` runs in this process; ``RayExecutor`` (parallel.ray_backend) spreads the
same work over Ray actors with identical results. A slicer hands every ``profile`` and
``slice`` call to its executor; the executor calls back the slicer's in-process
``profile_here`` / ``slice_here`` (itself or in its workers).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

if TYPE_CHECKING:
    from ..criterion import Outputs, Target
    from ..profile.profile import ClassChoice, Profile
    from ..results.slice import Slice
    from ..slicer import Slicer


class Executor(Protocol):
    def profile(self, slicer: Slicer, data: Iterable | Tensor, progress: bool,
                classes: ClassChoice = "auto") -> Profile: ...

    def slice(self, slicer: Slicer, x: Tensor, target: Target, reference: str,
              per_sample: bool, outputs: Outputs) -> Slice: ...


class SerialExecutor:
    """Everything in this process."""

    def profile(self, slicer: Slicer, data: Iterable | Tensor, progress: bool,
                classes: ClassChoice = "auto") -> Profile:
        return slicer.profile_here(data, progress, classes)

    def slice(self, slicer: Slicer, x: Tensor, target: Target, reference: str,
              per_sample: bool, outputs: Outputs) -> Slice:
        return slicer.slice_here(x, target, reference, per_sample, outputs)


def make_executor(spec: str | Executor | None, num_workers: int = 2) -> Executor:
    """None/"serial": this process; "ray"/"local": a local Ray cluster; another string: the
    address of a Ray cluster; an Executor as it is."""
    if spec is None or spec == "serial":
        return SerialExecutor()
    if isinstance(spec, str):
        from .ray_backend import RayExecutor

        return RayExecutor(None if spec in ("ray", "local") else spec, num_workers)
    return spec
