"""Checkpoints of zoo models: ``<stem>.safetensors`` (weights and buffers) + ``<stem>.json``.

Weights never go through pickle: they are stored with safetensors, and the JSON metadata says
how to rebuild the architecture (``build_model(meta["arch"], **meta["arch_kwargs"])``).
The SHA-256 of the weights is written into both files (``nnslicer.sha256`` in the safetensors
header, ``weights_sha256`` in the JSON), so loading refuses flipped bytes in the weights and a
weights file that belongs to another checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnslicer.errors import FileFormatError
from nnslicer.io_utils import atomic_write_bytes, atomic_write_text
from nnslicer.models.zoo import ARCHITECTURES, build_model
from nnslicer.storage import CHECKSUM_KEY, data_digest, prepare_tensors, read_safetensors, verify

REQUIRED_META_KEYS: tuple[str, ...] = ("arch", "arch_kwargs", "dataset", "test_accuracy")
FORMAT_NAME = "nnslicer-checkpoint"
FORMAT_VERSION = 1
_SUFFIXES = (".safetensors", ".json")


class CheckpointError(FileFormatError):
    """A checkpoint is missing, unreadable, corrupted or does not fit its architecture."""


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
    bad = non_finite_parameters(model)
    if bad:
        raise CheckpointError(
            f"not saving a model whose weights hold NaN or Inf ({', '.join(bad[:3])}): the "
            "training diverged; train again with a smaller learning rate"
        )
    weights_path, meta_path = checkpoint_paths(path)
    data, digest = weights_bytes(model.state_dict())
    full_meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **meta,
                 "weights_sha256": digest}
    try:
        meta_text = json.dumps(full_meta, indent=2, sort_keys=True) + "\n"
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint meta is not JSON-serialisable: {e}") from e
    # Weights first: a JSON file next to them means the pair is complete.
    atomic_write_bytes(weights_path, data)
    atomic_write_text(meta_path, meta_text)
    return weights_path, meta_path


def weights_bytes(state: dict[str, torch.Tensor]) -> tuple[bytes, str]:
    """A state dict as safetensors bytes carrying its checksum, and that checksum."""
    import safetensors.torch

    tensors = prepare_tensors(state)
    digest = data_digest(tensors)
    return safetensors.torch.save(tensors, metadata={"format": "pt", CHECKSUM_KEY: digest}), digest


def non_finite_parameters(model: nn.Module) -> list[str]:
    """Names of the floating-point parameters holding NaN or Inf (buffers may hold -inf
    masks on purpose and are not checked)."""
    return [name for name, p in model.named_parameters()
            if p.is_floating_point() and not bool(torch.isfinite(p.detach()).all())]


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate the JSON metadata of a checkpoint."""
    _, meta_path = checkpoint_paths(path)
    if meta_path.is_dir():
        raise CheckpointError(f"checkpoint metadata {meta_path} is a directory, not a file")
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
    """Load a checkpoint written by :func:`save_checkpoint`; the model is in eval mode.

    The weights are verified against the checksum in their own header and in the JSON;
    a checkpoint written before checksums existed loads with an ``UncheckedFileWarning``.
    """
    weights_path, meta_path = checkpoint_paths(path)
    meta = read_checkpoint_meta(path)
    model = _build(meta, source=str(meta_path))
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights file not found: {weights_path}")
    expected = meta.get("weights_sha256")
    if expected is not None and not isinstance(expected, str):
        raise CheckpointError(f"{meta_path}: weights_sha256 must be a string, got {expected!r}")
    state = load_safetensors(weights_path, expected=expected, owner=meta_path, warn=True)
    mismatch = state_dict_mismatch(model, state)
    if mismatch:
        raise CheckpointError(
            f"weights in {weights_path} do not match architecture {_describe(meta)}: {mismatch}"
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, meta


def load_safetensors(
    path: str | os.PathLike[str],
    *,
    expected: str | None = None,
    owner: str | os.PathLike[str] | None = None,
    warn: bool = False,
    hint: str = "re-create it with `nnslicer train`",
) -> dict[str, torch.Tensor]:
    """Read a safetensors file of weights, one-line :class:`CheckpointError` on a bad file.

    A checksum in the file's header is verified. ``expected`` is the checksum recorded
    elsewhere (the checkpoint's JSON ``owner``): the weights must match it too. ``warn``: warn
    when there is no checksum at all (files nnslicer wrote before it kept checksums).
    """
    try:
        tensors, header = read_safetensors(path, "weights", hint=hint)
        checked = verify(path, "weights", tensors, header, hint=hint,
                         warn=warn and expected is None)
    except FileFormatError as e:
        raise CheckpointError(str(e)) from e
    if expected is not None:
        stored = header.get(CHECKSUM_KEY) if checked else data_digest(tensors)
        if stored != expected:
            raise CheckpointError(
                f"weights file {path} does not belong to {owner or 'its checkpoint'}: its "
                f"checksum differs from the one recorded there; {hint}"
            )
    return tensors


def _build(meta: dict[str, Any], source: str) -> nn.Module:
    arch, kwargs = meta.get("arch"), meta.get("arch_kwargs")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{source}: unknown arch {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{source}: arch_kwargs must be an object, got {kwargs!r}")
    try:
        return build_model(arch, **kwargs)
    except (TypeError, ValueError, RuntimeError, MemoryError) as e:
        raise CheckpointError(
            f"{source}: cannot build {arch} with {kwargs}: {_one_line(e)}"
        ) from e


def _describe(meta: dict[str, Any]) -> str:
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(meta["arch_kwargs"].items()))
    return f"{meta['arch']}({kwargs})"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
