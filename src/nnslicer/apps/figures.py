"""Small shared helpers of the app evaluations: line-plot panels, CSV and JSON, all atomic."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnslicer.io_utils import atomic_write, atomic_write_text

# One colour and marker per method, the same in every figure.
STYLES: dict[str, tuple[str, str]] = {
    "nnslicer": ("tab:red", "o"),
    "nnslicer-all": ("tab:orange", "s"),
    "effective-path": ("tab:blue", "^"),
    "weight": ("tab:green", "D"),
    "channel": ("tab:purple", "v"),
    "random": ("tab:gray", "x"),
    "all-hidden": ("black", "."),
}


@dataclass
class Evaluation:
    """Rows of an app evaluation (one per setting), their means, and where they were written."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    class_sets: list[list[int]]
    config: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Panel:
    """One subplot: named series of (x, y) points and an optional reference level."""

    title: str
    xlabel: str
    ylabel: str
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    reference: float | None = None
    reference_label: str = "unpruned"
    ylim: tuple[float, float] | None = (0.0, 1.02)
    logx: bool = False


def save_panels(path: str | Path, panels: Sequence[Panel], *, ncols: int = 2,
                title: str | None = None) -> Path:
    """Draw ``panels`` in a grid and write a PNG atomically (Agg, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.8 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, p in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for name, (xs, ys) in p.series.items():
            color, marker = STYLES.get(name, (None, "o"))
            ax.plot(xs, ys, marker=marker, color=color, label=name, linewidth=1.5, markersize=4)
        if p.reference is not None and not math.isnan(p.reference):
            ax.axhline(p.reference, color="black", linestyle="--", linewidth=1,
                       label=p.reference_label)
        if p.logx:  # symlog keeps a budget of 0 on the axis
            positives = [x for xs, _ in p.series.values() for x in xs if x > 0]
            ax.set_xscale("symlog", linthresh=min(positives, default=1.0))
            ax.set_xlim(left=0)
        ax.set_title(p.title, fontsize=10)
        ax.set_xlabel(p.xlabel)
        ax.set_ylabel(p.ylabel)
        if p.ylim is not None:
            ax.set_ylim(*p.ylim)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Rows of dicts as CSV (columns: union of keys, first-seen order)."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list | tuple):
        return " ".join(str(x) for x in v)
    return v


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def std(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
