"""Helpers every CLI command shares: one-line errors, model/data loading, quiet mode."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import typer
from rich.console import Console

from ..data.datasets import ArrayDataset, load_dataset
from ..errors import NNSlicerError
from ..models.loading import load_model

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

# Errors we raise on purpose carry a message meant for the user; show it on one line.
USER_ERRORS = (NNSlicerError, ValueError, FileNotFoundError, KeyError, ImportError)


def one_line_errors(fn: F) -> F:
    """Turn expected errors into 'error: <message>' and exit status 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            # plain echo: one line however narrow the terminal (rich would wrap it)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def setup(threads: int | None = None) -> None:
    """Process-wide settings for a CLI run."""
    if threads:
        torch.set_num_threads(threads)


def open_model(model: str, weights: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    net, meta = load_model(model, weights)
    return net.eval(), meta


def open_data(name: str, split: str, root: str | None = None, limit: int | None = None
              ) -> ArrayDataset:
    return load_dataset(name, split, root=root, limit=limit)


def say(quiet: bool, *objects: Any) -> None:
    """Print unless --quiet."""
    if not quiet:
        console.print(*objects)

