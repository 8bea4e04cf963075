"""Executors: where profiling and slicing run. Ray is imported only when a Ray executor is used.

``SerialExecutor`` (the default) runs in this process. ``RayExecutor`` / ``Slicer(...,
executor="ray")``, ``ray_profile(slicer, data)`` and ``ray_slice(slicer, x, ...)`` give the
serial results computed by Ray actors; :class:`RayPool` keeps the actors for repeated calls.
Without Ray installed they raise ImportError: pip install 'nnslicer[ray]'.
"""

from .executor import Executor, SerialExecutor, make_executor
from .ray_backend import (
    RAY_MISSING,
    RayExecutor,
    RayPool,
    ensure_ray,
    import_ray,
    ray_profile,
    ray_slice,
)

__all__ = ["RAY_MISSING", "Executor", "RayExecutor", "RayPool", "SerialExecutor", "ensure_ray",
           "import_ray", "make_executor", "ray_profile", "ray_slice"]
