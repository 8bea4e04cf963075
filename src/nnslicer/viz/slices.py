"""Slice pictures in the spirit of the paper's Fig. 3.

Each weighted layer is a grid of pixels, one per output channel (conv) or unit (linear);
blue means the channel contributed positively to the criterion, red negatively, white not at
all; the colour strength is the contribution relative to the layer's largest magnitude.
Slices side by side (e.g. class A, class B, their union) share the layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402

from ..io_utils import atomic_write  # noqa: E402
from ..results.slice import Slice  # noqa: E402

# red (negative) → white (zero) → blue (positive), as in the paper's figure
SIGN_CMAP = LinearSegmentedColormap.from_list(
    "nnslicer", ["#c62828", "#ffffff", "#1565c0"]
).with_extremes(bad="#d9d9d9")  # grey: grid cells past the last channel


def weighted_layers(s: Slice) -> list[str]:
    """Nodes that own synapses (conv/linear), in forward order."""
    weights = s.meta.get("node_weights", {})
    return [n for n in s.neurons if n in weights]


def _grid(values: np.ndarray) -> np.ndarray:
    """Lay out a vector of channel values as a near-square grid, NaN-padded."""
    n = values.size
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full(rows * cols, np.nan)
    grid[:n] = values
    return grid.reshape(rows, cols)


def plot_slices(slices: dict[str, Slice], path: str | Path, title: str | None = None,
                input_shape: tuple[int, ...] | None = None) -> Path:
    """Write a PNG: one column per slice, one row per weighted layer, plus the input heatmap."""
    labels = list(slices)
    first = slices[labels[0]].total()
    layers = weighted_layers(first)
    input_node = first.meta.get("input_node")
    show_input = input_node in first.neurons and first.neurons[input_node].dim() >= 2
    rows = len(layers) + (1 if show_input else 0)
    fig, axes = plt.subplots(rows, len(labels), figsize=(2.4 * len(labels) + 0.6, 1.9 * rows),
                             squeeze=False)
    for col, label in enumerate(labels):
        s = slices[label].total()
        r0 = 0
        if show_input:
            img = s.neurons[input_node].double().sum(0).numpy()  # sum over input channels
            lim = max(np.abs(img).max(), 1e-12)
            axes[0][col].imshow(img, cmap=SIGN_CMAP, vmin=-lim, vmax=lim)
            axes[0][col].set_title(f"{label}\ninput points", fontsize=8)
            r0 = 1
        for r, node in enumerate(layers, start=r0):
            ch = s.channels(node).double().numpy().reshape(-1)
            lim = max(np.abs(ch).max(), 1e-12)
            ax = axes[r][col]
            ax.imshow(_grid(ch), cmap=SIGN_CMAP, vmin=-lim, vmax=lim)
            active = int((ch != 0).sum())
            head = f"{label}\n" if r == 0 else ""
            ax.set_title(f"{head}{node}: {active}/{ch.size} ch", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return out
