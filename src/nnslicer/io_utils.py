"""Small file helpers shared across nnslicer."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# Read the umask once: temp files are created 0600, and the final file should get the
# permissions a plain open() would have given it.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike[str], write_fn: Callable[[Path], None]) -> Path:
    """Create ``path`` atomically: ``write_fn(tmp)`` writes a temp file that then replaces it.

    The temp file lives in the same directory (so ``os.replace`` is atomic) and keeps the
    target's suffix, so writers that infer a format from the name (``savefig``, ``np.save``)
    behave as for ``path``. Missing parent directories are created. On error the temp file
    is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Atomically write ``text`` to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))
