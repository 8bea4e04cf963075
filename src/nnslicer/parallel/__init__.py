"""Parallel backends. Ray is imported only when a Ray function is called.

``ray_profile(slicer, data)`` and ``ray_slice(slicer, x, ...)`` give the serial results computed
by Ray actors; :class:`RayPool` keeps the actors for repeated calls. Without Ray installed they
raise ImportError: pip install 'nnslicer[ray]'.
"""

from .ray_backend import RAY_MISSING, RayPool, ensure_ray, import_ray, ray_profile, ray_slice

__all__ = ["RAY_MISSING", "RayPool", "ensure_ray", "import_ray", "ray_profile", "ray_slice"]
