"""Figures of the protection experiment: Fig. 6 per hidden ratio, and the recovery budgets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnslicer.apps.figures import STYLES
from nnslicer.io_utils import atomic_write

METRICS = (("acc_target", "target classes"), ("acc_other", "other classes"),
           ("acc_all", "all classes"))


def _figure(nrows: int, ncols: int, w: float = 4.6, h: float = 3.4) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _symlog(ax: Any, xs: Sequence[float]) -> None:
    positives = [x for x in xs if x > 0]
    ax.set_xscale("symlog", linthresh=min(positives, default=1.0))
    ax.set_xlim(left=0, right=max(xs, default=1) * 1.15)


def plot_fig6(path: str | Path, summary: Sequence[dict[str, Any]],
              recovery: Sequence[dict[str, Any]], config: dict[str, Any], ratio: float) -> Path:
    """Rows: attackers; columns: accuracy on the target / other / all classes vs budget.
    Lines are means over the class subsets, bands their min..max; a ring marks the budget
    at which a method's target accuracy is recovered (also listed in the target panel)."""
    attackers = config["attackers"]
    methods = config["methods"]
    fig = _figure(len(attackers), 3)
    rec = {(r["method"], r["ratio"], r["attacker"]): r for r in recovery}
    budgets = sorted({r["budget"] for r in summary})
    for row, attacker in enumerate(attackers):
        for col, (metric, label) in enumerate(METRICS):
            ax = fig.add_subplot(len(attackers), 3, row * 3 + col + 1)
            notes = []
            base = float("nan")
            for method in methods:
                r_ = 1.0 if method == "all-hidden" else ratio
                want = (method, r_, attacker)
                pts = sorted((s for s in summary
                              if (s["method"], s["ratio"], s["attacker"]) == want),
                             key=lambda s: s["budget"])
                if not pts:
                    continue
                base = pts[0][metric.replace("acc_", "base_")]
                color, marker = STYLES.get(method, (None, "o"))
                xs = [p["budget"] for p in pts]
                ax.plot(xs, [p[metric] for p in pts], marker=marker, color=color, label=method,
                        linewidth=1.4, markersize=3.5)
                ax.fill_between(xs, [p[f"{metric}_min"] for p in pts],
                                [p[f"{metric}_max"] for p in pts], color=color, alpha=0.12,
                                linewidth=0)
                if metric == "acc_target":
                    got = rec.get((method, r_, attacker), {}).get("budget")
                    notes.append(f"{method}: {'not' if got is None else got}")
                    if got is not None:
                        y = next(p[metric] for p in pts if p["budget"] == got)
                        ax.plot([got], [y], marker="o", markersize=10, markerfacecolor="none",
                                markeredgecolor=color, markeredgewidth=1.5)
            if not math.isnan(base):
                ax.axhline(base, color="black", linestyle="--", linewidth=1,
                           label="original model")
            if metric == "acc_target" and rec:
                level = next((r["level"] for r in recovery
                              if r["attacker"] == attacker and r["ratio"] == ratio), None)
                if level is not None:
                    ax.axhline(level, color="black", linestyle=":", linewidth=1,
                               label=f"recovered ({config['recovered_at']:g} x original)")
                ax.text(0.98, 0.03, "recovered at budget\n" + "\n".join(notes),
                        transform=ax.transAxes, ha="right", va="bottom", fontsize=6.5,
                        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})
            _symlog(ax, budgets)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.set_title(f"attacker '{attacker}': {label}", fontsize=9.5)
            ax.set_xlabel("attacker budget (labelled samples)", fontsize=8)
            ax.set_ylabel(f"accuracy on {label}", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == 0 and col == 1:
                ax.legend(fontsize=6.5, loc="upper left")
    fig.suptitle(
        f"Selective protection: {ratio:g} of each layer's synapses hidden; attacker retrains "
        f"{config['epochs']} epochs (mean over {config['subsets']} class subsets, band = "
        f"min..max)", fontsize=11)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))


def plot_recovery(path: str | Path, recovery: Sequence[dict[str, Any]],
                  config: dict[str, Any]) -> Path:
    """One panel per attacker: the budget at which each method's mean target accuracy is
    recovered, against the hidden ratio; open markers at the top = not recovered within the
    budgets tried."""
    attackers = config["attackers"]
    ratios = config["ratios"]
    fig = _figure(1, len(attackers), w=4.4, h=3.6)
    top = max((r["max_budget"] for r in recovery), default=1) * 2
    methods = [m for m in config["methods"] if m != "all-hidden"]
    width = 0.7 / max(len(methods), 1)
    for col, attacker in enumerate(attackers):
        ax = fig.add_subplot(1, len(attackers), col + 1)
        for j, method in enumerate(methods):
            color, marker = STYLES.get(method, (None, "o"))
            mine = {r["ratio"]: r for r in recovery
                    if r["method"] == method and r["attacker"] == attacker}
            pts = [(k + (j - (len(methods) - 1) / 2) * width, mine[x]) for k, x in
                   enumerate(ratios) if x in mine]
            for n, (x, r) in enumerate(pts):
                hollow = r["budget"] is None
                ax.plot([x], [top if hollow else r["budget"]], marker=marker, color=color,
                        markersize=7, linestyle="none", markerfacecolor="none" if hollow
                        else color, label=method if n == 0 else None)
        full = next((r for r in recovery
                     if r["method"] == "all-hidden" and r["attacker"] == attacker), None)
        if full is not None:
            got = full["budget"]
            ax.axhline(top if got is None else got, color="black",
                       linestyle=":" if got is None else "-.", linewidth=1,
                       label=f"all-hidden ({'not recovered' if got is None else got})")
        ax.set_yscale("symlog", linthresh=10)
        ax.set_ylim(0, top * 1.8)
        ax.axhline(top, color="0.6", linewidth=0.8)
        ax.text(-0.45, top * 1.12, "not recovered (open markers)", fontsize=7, color="0.4")
        ax.set_xlim(-0.5, len(ratios) - 0.5)
        ax.set_xticks(range(len(ratios)))
        ax.set_xticklabels([f"{r:g}" for r in ratios])
        ax.set_xlabel("hidden ratio (per layer)")
        ax.set_ylabel("budget at which target accuracy is recovered", fontsize=8.5)
        ax.set_title(f"attacker '{attacker}'", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Budget needed to recover {config['recovered_at']:g} x the original "
                 f"target-class accuracy (mean over {config['subsets']} subsets; budgets up to "
                 f"{max((r['max_budget'] for r in recovery), default=0)})", fontsize=10.5)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
