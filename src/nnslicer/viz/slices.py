"""Slice pictures in the spirit of the paper's Fig. 3.

Every weighted layer (conv, linear) gets a panel per slice, one cell per output channel (conv)
or unit (linear), wrapped row by row into a near-rectangular grid (the row label is the index
of the row's first channel). Blue: the channel pushed the criterion up; red: down; white: not in
the slice; grey: padding past the last channel. Any channel in the slice is tinted (at least
20 % strength), the rest of the strength is its contribution relative to the largest magnitude
of that layer in that slice. Layers are laid out in several columns (forward order, row by row),
so a ResNet stays readable; slices drawn together (class A, class B, their union) sit next to
each other inside each layer's box. Names are the modules' qualified names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..io_utils import atomic_write
from ..results.slice import Slice, display_name

if TYPE_CHECKING:
    from matplotlib.colors import Colormap

POSITIVE, NEGATIVE, ZERO, PADDING = "#1565c0", "#c62828", "#ffffff", "#bdbdbd"
MIN_TINT = 0.2  # strength of the weakest channel in a slice, so it never looks white

_PANEL = 1.25  # inches: the square each grid is drawn in
_PANEL_GAP = 0.38  # room for the row labels left of a panel
_CELL_TITLE = 0.42
_PANEL_TITLE = 0.2
_CELL_PAD = 0.18
_HEADER = 0.55
_FOOTER = 1.05


def sign_cmap() -> Colormap:
    """red (negative) → white (zero) → blue (positive); grey for padding (NaN)."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(
        "nnslicer", [NEGATIVE, ZERO, POSITIVE]).with_extremes(bad=PADDING)


def weighted_layers(s: Slice) -> list[str]:
    """Nodes that own synapses (conv/linear), in forward order."""
    weights = s.meta.get("node_weights", {})
    return [n for n in s.neurons if n in weights]


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) for ``n`` cells: no padding when a divisor of n gives a shape at most 2:1
    (64 → 8×8, 512 → 16×32, 120 → 10×12), else a near-square grid."""
    if n <= 0:
        return 1, 1
    root = math.sqrt(n)
    for cols in range(math.ceil(root), int(2 * root) + 1):
        if n % cols == 0:
            return n // cols, cols
    cols = math.ceil(root)
    return math.ceil(n / cols), cols


def strength(values: np.ndarray) -> np.ndarray:
    """Signed strength in [-1, 1]: 0 outside the slice, at least MIN_TINT inside."""
    values = np.asarray(values, dtype=np.float64)
    top = np.abs(values).max() if values.size else 0.0
    if top == 0:
        return np.zeros_like(values)
    mag = MIN_TINT + (1 - MIN_TINT) * np.abs(values) / top
    return np.where(values == 0, 0.0, np.sign(values) * mag)


def _grid(values: np.ndarray) -> np.ndarray:
    """A vector of channel values as a grid, NaN-padded."""
    rows, cols = grid_shape(values.size)
    grid = np.full(rows * cols, np.nan)
    grid[:values.size] = values
    return grid.reshape(rows, cols)


def check_figure_path(path: str | Path) -> Path:
    """InputError unless matplotlib can write a figure to ``path`` (judged by its suffix)."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in formats:
        raise InputError(
            f"cannot draw a figure into {path}: give a name ending in .png, .pdf or .svg "
            f"(or {', '.join('.' + f for f in sorted(formats) if f not in ('png', 'pdf', 'svg'))})"
        )
    return path


def check_same_model(slices: dict[str, Slice]) -> None:
    """InputError naming the first two slices that are of different models."""
    labels = list(slices)
    first = slices[labels[0]]
    for label in labels[1:]:
        diff = first.model_difference(slices[label])
        if diff:
            raise InputError(
                f"slices {labels[0]!r} and {label!r} are of different models ({diff}); "
                "draw slices of one model together"
            )


def plot_slices(slices: dict[str, Slice], path: str | Path, title: str | None = None,
                input_shape: tuple[int, ...] | None = None, *, columns: int | None = None,
                dpi: int = 110) -> Path:
    """Write a figure of ``slices`` (label → slice, all of one model) to ``path``.

    One box per weighted layer (plus the input points), ``columns`` boxes per row (default:
    chosen for a roughly 16:10 figure), the slices side by side in each box, a colour bar and a
    legend at the bottom. ``input_shape`` is accepted for backward compatibility and unused.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not slices:
        raise InputError("no slices to draw; give at least one")
    check_figure_path(path)
    totals = {label: s.total() for label, s in slices.items()}
    check_same_model(totals)
    labels = list(totals)
    first = totals[labels[0]]
    layers = weighted_layers(first)
    input_node = first.meta.get("input_node")
    show_input = (input_node in first.neurons and first.neurons[input_node].dim() >= 2)
    cells: list[str | None] = ([None] if show_input else []) + layers
    if not layers:
        raise InputError("these slices have no layers with synapses to draw "
                         "(their meta has no node_weights)")

    k = len(labels)
    if columns is not None and (not isinstance(columns, int) or columns < 1):
        raise InputError(f"columns must be a positive integer, got {columns!r}")
    ncols = columns or round(math.sqrt(1.6 * len(cells) / k))
    ncols = max(1, min(ncols, len(cells)))
    nrows = math.ceil(len(cells) / ncols)
    panel_title = _PANEL_TITLE if k > 1 else 0.0
    cell_w = k * (_PANEL + _PANEL_GAP) + _CELL_PAD
    cell_h = _CELL_TITLE + panel_title + _PANEL + _CELL_PAD
    fig_w = max(ncols * cell_w + 0.3, 6.5)
    fig_h = _HEADER + nrows * cell_h + _FOOTER
    fig = Figure(figsize=(fig_w, fig_h))
    cmap = sign_cmap()

    def axes(left: float, bottom: float, width: float, height: float):  # inches → figure
        return fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, height / fig_h))

    for i, node in enumerate(cells):
        r, c = divmod(i, ncols)
        x0 = 0.15 + c * cell_w
        top = fig_h - _HEADER - r * cell_h
        if node is None:
            head = f"input points ({input_node})"
            sub = "summed over input channels"
        else:
            n_ch = first.channels(node).numel()
            unit = "channels" if first.neurons[node].dim() > 1 else "units"
            head = display_name(node, first.meta)
            sub = f"{first.meta.get('node_kinds', {}).get(node, '')}, {n_ch} {unit}".lstrip(", ")
        fig.text((x0 + cell_w / 2) / fig_w, (top - 0.04) / fig_h, head, ha="center", va="top",
                 fontsize=8, fontweight="bold")
        fig.text((x0 + cell_w / 2) / fig_w, (top - 0.2) / fig_h, sub, ha="center", va="top",
                 fontsize=6.5, color="#555555")
        for j, label in enumerate(labels):
            s = totals[label]
            left = x0 + _PANEL_GAP + j * (_PANEL + _PANEL_GAP)
            bottom = top - _CELL_TITLE - panel_title - _PANEL
            ax = axes(left, bottom, _PANEL, _PANEL)
            if node is None:
                img = s.neurons[input_node].double()
                img = img.sum(0) if img.dim() == 3 else img.reshape(img.shape[0], -1)
                values = img.numpy()
                ax.imshow(strength(values), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
                active, size = int((values != 0).sum()), values.size
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ch = s.channels(node).double().numpy().reshape(-1)
                grid = _grid(strength(ch))
                ax.imshow(grid, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
                active, size = int((ch != 0).sum()), ch.size
                _index_ticks(ax, grid.shape)
            ax.set_anchor("N")  # grids of any shape hang from the same line under the title
            for spine in ax.spines.values():
                spine.set_color("#888888")
                spine.set_linewidth(0.5)
            caption = f"{active}/{size} in slice"
            ax.set_title(f"{label}: {caption}" if k > 1 else caption, fontsize=6.5, pad=2)

    heading = title or (f"slices of {first.meta.get('model', 'the model')}: "
                        + ", ".join(labels))
    fig.text(0.5, 1 - 0.12 / fig_h, heading, ha="center", va="top", fontsize=10)
    fig.text(0.5, 1 - 0.34 / fig_h,
             "one cell per output channel (conv) or unit (linear), row by row; "
             "a row's label is the index of its first channel", ha="center", va="top",
             fontsize=7, color="#555555")
    _legend(fig, fig_w, cmap, Patch)
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower()
    out = atomic_write(target, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt))
    return out


def _index_ticks(ax, shape: tuple[int, int]) -> None:
    """Row labels = index of each row's first channel; column labels = offset in the row."""
    rows, cols = shape
    step = max(1, math.ceil(rows / 5))
    ys = list(range(0, rows, step))
    ax.set_yticks(ys, [str(y * cols) for y in ys], fontsize=5)
    xs = sorted({0, cols - 1}) if cols > 1 else [0]
    ax.set_xticks(xs, [f"+{x}" for x in xs], fontsize=5)
    ax.tick_params(length=1.5, pad=1, colors="#555555")


def _legend(fig, fig_w: float, cmap, patch) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.add_axes((0.5 - 2.2 / fig_w, 0.62 / fig.get_figheight(), 4.4 / fig_w,
                        0.14 / fig.get_figheight()))
    cb = fig.colorbar(ScalarMappable(Normalize(-1, 1), cmap), cax=bar, orientation="horizontal")
    cb.set_ticks([-1, 0, 1], labels=["largest −", "0: not in the slice", "largest +"],
                 fontsize=6)
    cb.outline.set_linewidth(0.5)
    bar.set_title("contribution relative to the largest |contribution| of that layer in that "
                  f"slice (anything in the slice is tinted at least {MIN_TINT:.0%})",
                  fontsize=6.5, pad=3)
    handles = [
        patch(facecolor=POSITIVE, label="blue: pushed the decision up"),
        patch(facecolor=NEGATIVE, label="red: pushed it down"),
        patch(facecolor=ZERO, edgecolor="#888888", label="white: not in the slice"),
        patch(facecolor=PADDING, label="grey: padding (no channel)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=6.5, frameon=False,
               bbox_to_anchor=(0.5, 0.02 / fig.get_figheight()), handlelength=1.2)
