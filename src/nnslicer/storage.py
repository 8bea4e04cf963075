"""Tensor files: safetensors with a JSON header and a checksum, written atomically, verified
when read.

Every file written here carries ``nnslicer.sha256`` in its safetensors header: the SHA-256
(:func:`nnslicer.hashing.tensor_digest`) of its JSON header text and of every tensor's name,
dtype, shape and bytes. Loading recomputes it, so flipped bytes in the data, a header spliced
onto another file's data or an edited header are refused with one line naming the file.
Files written before checksums existed load with an :class:`UncheckedFileWarning`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import FileFormatError
from .hashing import tensor_digest
from .io_utils import atomic_write

_META_KEY = "nnslicer"
#: safetensors header entry holding the SHA-256 of a file's contents
CHECKSUM_KEY = "nnslicer.sha256"
# The first bytes of file types people pass by mistake, to say what a file is instead.
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"PK\x03\x04": "a zip archive (torch.save writes these)",
    b"\x80": "a Python pickle",
    b"{": "a JSON file",
    b"%PDF": "a PDF document",
}


class UncheckedFileWarning(UserWarning):
    """A file without a checksum (written by an older nnslicer) was loaded unverified."""


def data_digest(tensors: Mapping[str, torch.Tensor], header_text: str | None = None) -> str:
    """The checksum stored in a file: SHA-256 of ``header_text`` and the tensors by name."""
    return tensor_digest(sorted(tensors.items()), header=header_text)


def prepare_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, no two sharing memory (safetensors refuses that)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, value in tensors.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise FileFormatError(
                f"cannot save entry {name!r} ({type(value).__name__}): tensor files hold "
                "tensors under string names"
            )
        t = value.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            t = t.clone()
        elif t.numel():
            seen.add(ptr)
        out[name] = t
    return out


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors plus JSON metadata and their checksum to ``path`` (temp file + rename)."""
    from safetensors.torch import save_file

    contiguous = prepare_tensors(tensors)
    try:
        meta_text = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(
            f"cannot save {path}: its metadata is not JSON-serialisable ({exc})"
        ) from exc
    header = {_META_KEY: meta_text, CHECKSUM_KEY: data_digest(contiguous, meta_text)}
    return atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=header))


def describe_file(path: Path) -> str:
    """What a file that is not a safetensors file looks like, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return "unreadable"
    if not head:
        return "empty"
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    return "not a safetensors file"


def check_file(path: str | Path, kind: str) -> Path:
    """``path`` as a Path if it is a readable file; FileFormatError saying what it is not."""
    path = Path(path)
    if path.is_dir():
        raise FileFormatError(f"{kind} file {path} is a directory; pass the file itself")
    if not path.is_file():
        raise FileFormatError(f"{kind} file {path} does not exist; check the path")
    return path


def read_safetensors(path: str | Path, kind: str, hint: str = "create it again"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file, unverified; one-line errors."""
    from safetensors import SafetensorError, safe_open

    path = check_file(path, kind)
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = dict(f.metadata() or {})
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        looks = describe_file(path)
        what = "empty (truncated or corrupt)" if looks == "empty" else (
            f"{looks}, not a safetensors file" if looks != "not a safetensors file"
            else "corrupt or truncated")
        raise FileFormatError(
            f"{kind} file {path} is {what} ({_one_line(exc)}); {hint}"
        ) from exc
    return tensors, header


def verify(path: str | Path, kind: str, tensors: Mapping[str, torch.Tensor],
           header: Mapping[str, str], header_text: str | None = None,
           hint: str = "create it again", warn: bool = True) -> bool:
    """Check the file's checksum: True if it matched, False (and a warning if ``warn``) if the
    file has none; FileFormatError if it does not match."""
    expected = header.get(CHECKSUM_KEY)
    if expected is None:
        if warn:
            warnings.warn(
                f"{kind} file {path} has no checksum (written by an older nnslicer), so it was "
                "loaded unchecked; save it again to add one", UncheckedFileWarning, stacklevel=3,
            )
        return False
    if data_digest(tensors, header_text) != expected:
        raise FileFormatError(
            f"{kind} file {path} is corrupted: its contents do not match the checksum in its "
            f"header; {hint}"
        )
    return True


def load_tensors(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a file written by ``save_tensors``; ``kind`` names what it should hold."""
    path = check_file(path, kind)
    tensors, header = read_safetensors(path, kind)
    meta_text = header.get(_META_KEY)
    if meta_text is None:
        looks = "model weights" if header.get("format") == "pt" else "a plain safetensors file"
        raise FileFormatError(
            f"{path} is {looks} without an nnslicer header, not a {kind}; pass a {kind} file"
        )
    verify(path, kind, tensors, header, meta_text)
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{kind} file {path} has a header that is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise FileFormatError(f"{kind} file {path} has a header that is not a JSON object")
    if meta.get("kind") != kind:
        raise FileFormatError(
            f"{path} holds a {meta.get('kind', 'unknown')} file, not a {kind}; pass a {kind} file"
        )
    return tensors, meta


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
