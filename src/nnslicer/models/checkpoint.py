"""Checkpoints of zoo models: ``<stem>.safetensors`` (weights and buffers) + ``<stem>.json``.

Weights never go through pickle: they are stored with safetensors, and the JSON metadata says
how to rebuild the architecture (``build_model(meta["arch"], **meta["arch_kwargs"])``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from nnslicer.io_utils import atomic_write_bytes, atomic_write_text
from nnslicer.models.zoo import ARCHITECTURES, build_model

REQUIRED_META_KEYS: tuple[str, ...] = ("arch", "arch_kwargs", "dataset", "test_accuracy")
FORMAT_NAME = "nnslicer-checkpoint"
FORMAT_VERSION = 1
_SUFFIXES = (".safetensors", ".json")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit its architecture."""


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Return the ``(weights, meta)`` paths for a stem, ``.safetensors`` or ``.json`` path."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in _SUFFIXES else p
    return stem.parent / f"{stem.name}.safetensors", stem.parent / f"{stem.name}.json"


def state_dict_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Describe in one line how ``state`` differs from ``model.state_dict()``, or None."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} (file {list(state[k].shape)} vs model {list(expected[k].shape)})"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatch", shapes),
    ):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{label}: {', '.join(items[:5])}{more}")
    return "; ".join(parts) or None


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Save ``model`` and ``meta`` atomically; returns the ``(weights, meta)`` paths written.

    ``meta`` must contain ``arch``, ``arch_kwargs``, ``dataset`` and ``test_accuracy``
    (which may be None); other JSON-serialisable entries are kept as they are.
    """
    missing = [k for k in REQUIRED_META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint meta is missing keys: {', '.join(missing)}")
    reference = _build(meta, source="checkpoint meta")
    mismatch = state_dict_mismatch(reference, model.state_dict())
    if mismatch:
        raise CheckpointError(f"model does not match architecture {_describe(meta)}: {mismatch}")
    full_meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **meta}
    try:
        meta_text = json.dumps(full_meta, indent=2, sort_keys=True) + "\n"
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint meta is not JSON-serialisable: {e}") from e

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights_path, meta_path = checkpoint_paths(path)
    # Weights first: a JSON file next to them means the pair is complete.
    atomic_write_bytes(weights_path, safetensors.torch.save(tensors, metadata={"format": "pt"}))
    atomic_write_text(meta_path, meta_text)
    return weights_path, meta_path


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate the JSON metadata of a checkpoint."""
    _, meta_path = checkpoint_paths(path)
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint metadata file not found: {meta_path}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint metadata {meta_path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint metadata {meta_path} must be a JSON object")
    missing = [k for k in REQUIRED_META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(
            f"checkpoint metadata {meta_path} is missing keys: {', '.join(missing)}"
        )
    return meta


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; the model is in eval mode."""
    weights_path, meta_path = checkpoint_paths(path)
    meta = read_checkpoint_meta(path)
    model = _build(meta, source=str(meta_path))
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights file not found: {weights_path}")
    state = load_safetensors(weights_path)
    mismatch = state_dict_mismatch(model, state)
    if mismatch:
        raise CheckpointError(
            f"weights in {weights_path} do not match architecture {_describe(meta)}: {mismatch}"
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning format errors into a one-line :class:`CheckpointError`."""
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except safetensors.SafetensorError as e:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({_one_line(e)}); re-create it with `nnslicer train`"
        ) from e


def _build(meta: dict[str, Any], source: str) -> nn.Module:
    arch, kwargs = meta.get("arch"), meta.get("arch_kwargs")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{source}: unknown arch {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: arch_kwargs must be an object, got {kwargs!r}")
    try:
        return build_model(arch, **kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: cannot build {arch} with {kwargs}: {e}") from e


def _describe(meta: dict[str, Any]) -> str:
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(meta["arch_kwargs"].items()))
    return f"{meta['arch']}({kwargs})"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
