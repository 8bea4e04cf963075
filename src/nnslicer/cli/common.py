"""Helpers every CLI command shares: one-line errors, model/data loading, quiet mode."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import typer
from rich.console import Console
from rich.table import Table

from ..criterion import Neurons
from ..data.datasets import ArrayDataset, load_dataset
from ..errors import NNSlicerError
from ..models.loading import load_model
from ..results.slice import Slice

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or tables.")
DATA_ROOT = typer.Option(None, "--data-root", help="Directory holding the dataset files.")

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


def parse_int_list(text: str | None) -> list[int] | None:
    """'0,5,9' -> [0, 5, 9] (None or '' -> None)."""
    if text is None or text == "":
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def parse_neuron(text: str) -> Neurons:
    """'layer3.1.conv2:5' -> channel 5 of that node; 'fc1:2,3' -> the point (2, 3)."""
    node, sep, index = text.rpartition(":")
    values = parse_int_list(index) if sep else None
    if not node or not values:
        raise ValueError(f"--neuron takes NODE:CHANNEL or NODE:i,j,..., got {text!r}")
    return Neurons(node, values[0] if len(values) == 1 and "," not in index else tuple(values))


def layer_table(s: Slice, title: str) -> Table:
    """Per-layer summary as a rich table."""
    table = Table(title=title, title_justify="left")
    for col in ("node", "operator", "points", "channels", "synapses"):
        table.add_column(col, justify="left" if col in ("node", "operator") else "right")
    for row in s.summary():
        if row.synapses_total == 0 and row.kind not in ("input",):
            continue
        syn = (f"{row.synapses}/{row.synapses_total} ({row.synapse_fraction:.1%})"
               if row.synapses_total else "")
        table.add_row(
            row.node, row.kind,
            f"{row.points}/{row.points_total} ({row.point_fraction:.1%})",
            f"{row.channels}/{row.channels_total} ({row.channel_fraction:.1%})",
            syn,
        )
    return table


