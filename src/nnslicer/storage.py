"""Tensor files: safetensors with a JSON header, written atomically, read with clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import FileFormatError
from .io_utils import atomic_write

_META_KEY = "nnslicer"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors plus JSON metadata to ``path`` via a temp file and an atomic rename."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {_META_KEY: json.dumps(meta)}
    return atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=header))


def load_tensors(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by ``save_tensors``; ``kind`` names what it should hold."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{kind} file {path} does not exist; check the path")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header[_META_KEY])
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as exc:
        raise FileFormatError(
            f"{kind} file {path} is truncated or not an nnslicer {kind} ({exc}); create it again"
        ) from exc
    if meta.get("kind") != kind:
        raise FileFormatError(
            f"{path} holds a {meta.get('kind', 'unknown')} file, not a {kind}; pass a {kind} file"
        )
    return tensors, meta
