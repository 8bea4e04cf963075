"""Helpers every CLI command shares: one-line errors and warnings, model/data loading, quiet mode,
the slice table.

Nothing heavy is imported at module level (torch, numpy, rich and the slicer load inside the
helpers that need them), so ``nnslicer --help`` starts fast.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from ..errors import InputError, NNSlicerError

if TYPE_CHECKING:
    import torch
    from rich.console import Console
    from rich.table import Table

    from ..data.datasets import ArrayDataset
    from ..results.slice import Slice

F = TypeVar("F", bound=Callable[..., Any])


# Errors we raise on purpose carry a message meant for the user; show it on one line.
USER_ERRORS = (NNSlicerError, ValueError, FileNotFoundError, KeyError, ImportError)


@functools.cache
def get_console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


def __getattr__(name: str) -> Any:
    # `from .common import console` keeps working; the Console is built on first use.
    if name == "console":
        return get_console()
    if name == "err_console":
        return get_console(stderr=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _flat(text: object) -> str:
    return " ".join(str(text).split())


def error_message(exc: BaseException) -> str:
    """One line saying what went wrong."""
    if isinstance(exc, OSError) and not isinstance(exc, NNSlicerError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    lines = str(exc).strip().splitlines()
    if isinstance(exc, KeyError) and type(exc) is KeyError:
        return f"unknown name {exc.args[0]!r}" if exc.args else "unknown name"
    return _flat(lines[0]) if lines else type(exc).__name__


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or (
        "not enough memory" in str(exc))


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    typer.echo(f"warning: {_flat(message)}", err=True)


def one_line_errors(fn: F) -> F:
    """Turn expected errors into 'error: <message>' and exit status 2, without a traceback;
    warnings are printed as one 'warning: <message>' line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return fn(*args, **kwargs)
            except (*USER_ERRORS, OSError) as exc:
                message = error_message(exc)
            except (RuntimeError, MemoryError) as exc:
                if not _is_out_of_memory(exc):
                    raise
                message = (f"out of memory ({_flat(exc)[:120]}); use a smaller model, "
                           "--batch-size or --limit")
            except KeyboardInterrupt:
                typer.echo("interrupted; no partial files were left", err=True)
                raise typer.Exit(130) from None
        # plain echo: one line however narrow the terminal (rich would wrap it)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)

    return wrapper  # type: ignore[return-value]


def setup(threads: int | None = None) -> None:
    """Process-wide settings for a CLI run."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def open_model(model: str, weights: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    from ..models.loading import load_model

    net, meta = load_model(model, weights)
    return net.eval(), meta


def open_data(name: str, split: str, root: str | None = None, limit: int | None = None
              ) -> ArrayDataset:
    from ..data.datasets import load_dataset

    return load_dataset(name, split, root=root, limit=limit)


def check_model_takes(net: torch.nn.Module, data: ArrayDataset, what: str) -> None:
    """InputError if the model cannot run on the dataset's samples (e.g. a model trained on
    28x28 digits given 8x8 ones), before anything slow starts."""
    import torch

    try:
        with torch.no_grad():
            net(data.x[:1])
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise InputError(
            f"the model cannot take the samples of {what} (shape {list(data.x.shape[1:])}): "
            f"{_flat(exc)[:160]}; pick the dataset it was trained on"
        ) from exc


def check_out(path: Path, what: str = "--out") -> Path:
    """Refuse an output path that cannot be written, before the work that would fill it."""
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory; give a file name inside it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{what} {path}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK):
                raise InputError(f"{what} {path}: cannot write in {parent} (permission denied)")
            break
    return path


def check_out_dir(path: Path, what: str = "--out") -> Path:
    """Like :func:`check_out` for an output directory."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file; give a directory")
    check_out(path / "_", what)  # its nearest existing ancestor must be a writable directory
    return path


def say(quiet: bool, *objects: Any) -> None:
    """Print unless --quiet."""
    if not quiet:
        get_console().print(*objects, soft_wrap=True)


def plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def compact(n: int) -> str:
    """At most 5 characters: 950, 9500, 12.3k, 123k, 2.36M."""
    if n < 10_000:
        return str(n)
    for div, unit in ((1e3, "k"), (1e6, "M"), (1e9, "G")):
        v = n / div
        if v < 999.5:
            digits = 2 - int(math.floor(math.log10(v))) if v >= 1 else 2
            text = f"{v:.{max(digits, 0)}f}"
            return f"{text}{unit}" if len(text) <= 4 else f"{v:.0f}{unit}"
    return f"{n:.2g}"


def _share(a: int, b: int, wide: bool) -> str:
    if not b:
        return ""
    pct = f"{100 * a / b:.0f}%" if a == b or a == 0 else f"{100 * a / b:.1f}%"
    if wide:
        return f"{a:,}/{b:,} ({pct})"
    return f"{compact(a)}/{compact(b)} {pct}"


def layer_table(s: Slice, title: str, width: int | None = None) -> Table:
    """Per-layer summary as a rich table that fits the terminal: exact counts from 110
    columns, rounded ones (k, M) below, so it stays on one line per layer at 80 columns."""
    from rich.table import Table

    width = width or get_console().width
    wide = width >= 110
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, padding=(0, 1),
                  header_style="bold")
    table.add_column("layer", overflow="fold")
    table.add_column("operator" if wide else "op", no_wrap=True)
    for col in ("points", "channels", "synapses"):
        table.add_column(col, justify="right", no_wrap=True)
    for row in s.summary():
        if row.synapses_total == 0 and row.kind not in ("input",):
            continue
        table.add_row(
            row.name or row.node, row.kind,
            _share(row.points, row.points_total, wide),
            (f"{row.channels}/{row.channels_total}" if wide else
             f"{compact(row.channels)}/{compact(row.channels_total)}"),
            _share(row.synapses, row.synapses_total, wide),
        )
    if not wide:
        table.caption = "in the slice / in the layer; k = thousand, M = million"
        table.caption_justify = "left"
    return table
