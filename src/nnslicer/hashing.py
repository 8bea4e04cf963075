"""The one place nnslicer hashes things: tensors, parameters and small JSON-able headers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import torch


def tensor_digest(tensors: Iterable[tuple[str, torch.Tensor]], header: Any = None) -> str:
    """SHA-256 over ``header`` (JSON) and each named tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    if header is not None:
        h.update(json.dumps(header, sort_keys=True).encode())
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def text_digest(*parts: str) -> str:
    """SHA-256 of strings joined by NUL."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
