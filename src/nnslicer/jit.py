"""What every numba kernel module shares: whether numba is there, and the first-run notice."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

try:
    import numba  # noqa: F401

    AVAILABLE = True
except ImportError:  # pragma: no cover - numba is a dependency; callers keep a torch fallback
    AVAILABLE = False

_READY: set[str] = set()  # kernels called once in this process (``signatures`` costs ~40 µs)


def first_call(kernel: Any) -> contextlib.AbstractContextManager[None]:
    """Around a call of ``kernel``: on its first call in this process (it is compiled, or
    loaded from numba's disk cache) a compiling notice, later nothing."""
    if kernel.__name__ in _READY:
        return contextlib.nullcontext()
    _READY.add(kernel.__name__)
    return contextlib.nullcontext() if kernel.signatures else _compiling_notice()


@contextlib.contextmanager
def _compiling_notice(after: float = 2.0) -> Iterator[None]:
    """Say on stderr that the kernels are compiling if loading them takes over ``after``
    seconds (the first run ever; numba caches them on disk for the next runs)."""
    timer = threading.Timer(after, lambda: print(
        "nnslicer: compiling kernels (first run only; numba caches them on disk)",
        file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
