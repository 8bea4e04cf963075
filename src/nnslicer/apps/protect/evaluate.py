"""The selective-protection experiment (the paper's Fig. 6): recovered accuracy vs budget.

For each target class set and method, hide the top ``ratio`` synapses, let the simulated
attacker retrain with each budget, and measure the recovered model on the target classes, the
other classes and all classes (argmax over all outputs). ``all-hidden`` (every synapse hidden)
is the reference of a fully protected model. Lower target accuracy = better protection.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from nnslicer.apps.figures import Evaluation, Panel, mean, save_panels, std, write_csv, write_json
from nnslicer.apps.importance import (
    SLICE_KINDS,
    cached_contributions,
    check_method,
    check_ratio,
    class_accuracies,
    class_sets_for,
)
from nnslicer.apps.prune.channels import analyze_channels
from nnslicer.data.datasets import ArrayDataset
from nnslicer.errors import InputError

from .protection import PROTECT_METHODS, protect, simulate_attack

DEFAULT_BUDGETS: tuple[int, ...] = (0, 50, 100, 200, 500, 1000, 2000)
ALL_HIDDEN = "all-hidden"


ProtectEvaluation = Evaluation  # rows: one per subset × setting × method


def evaluate_protection(
    model: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset,
    out_dir: str | Path,
    *,
    class_sets: Sequence[Sequence[int]] | None = None,
    subsets: int = 2,
    subset_sizes: tuple[int, int] = (2, 5),
    ratio: float = 0.1,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    epochs: int = 5,
    methods: Sequence[str] = PROTECT_METHODS,
    all_hidden: bool = True,
    samples_per_class: int | None = None,
    theta: float = 0.2,
    ep_theta: float = 0.5,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> ProtectEvaluation:
    """Run the protection experiment; writes ``protect_results.{csv,json}`` and
    ``fig6_protection.png`` into ``out_dir``. The attacker's pool is ``train``."""
    start = time.perf_counter()
    out = Path(out_dir)
    methods = [check_method(m, PROTECT_METHODS) for m in methods]
    ratio = check_ratio(ratio)
    budgets = sorted({int(b) for b in budgets})
    if not methods or not budgets:
        raise InputError("give at least one method and one budget")
    if budgets[0] < 0 or budgets[-1] > len(train):
        raise InputError(f"budgets must lie in 0..{len(train)} (the attacker's pool), "
                         f"got {budgets[0]}..{budgets[-1]}")
    model.eval()
    k_total = analyze_channels(model).num_outputs
    sets = class_sets_for(class_sets, k_total, train, subsets, subset_sizes, seed)
    needed = sorted(set().union(*sets))
    sources = {
        kind: cached_contributions(
            model, kind, train, needed, num_classes=k_total, cache_dir=out / "cache",
            samples_per_class=samples_per_class,
            theta=ep_theta if kind == "effective-path" else theta, progress=progress,
        )
        for kind in sorted({SLICE_KINDS[m] for m in methods if m in SLICE_KINDS})
    }
    labels = methods + ([ALL_HIDDEN] if all_hidden else [])
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(sets) * len(labels), desc="protection", unit="method",
               disable=not progress)
    for i, classes in enumerate(sets):
        base = class_accuracies(model, test, classes)
        for label in labels:
            bar.set_postfix(subset=i + 1, method=label)
            if label == ALL_HIDDEN:
                exposed, report = protect(model, None, classes, 1.0, "random", seed=seed + i)
            else:
                exposed, report = protect(model, sources.get(SLICE_KINDS.get(label, "")),
                                          classes, ratio, label, data=train, seed=seed + i)
            for budget in budgets:
                recovered = simulate_attack(exposed, report.hidden, train, budget=budget,
                                            epochs=epochs, lr=lr, batch_size=batch_size,
                                            seed=seed * 1000 + i)
                acc = class_accuracies(recovered, test, classes)
                rows.append({
                    "subset": i, "classes": list(classes), "method": label,
                    "ratio": 1.0 if label == ALL_HIDDEN else ratio, "budget": budget,
                    "epochs": epochs, "hidden": report.hidden_count,
                    "acc_target": acc["target"], "acc_other": acc["other"], "acc_all": acc["all"],
                    "base_target": base["target"], "base_other": base["other"],
                    "base_all": base["all"],
                })
            bar.update(1)
    bar.close()
    config = {
        "methods": labels, "ratio": ratio, "budgets": budgets, "epochs": epochs, "lr": lr,
        "batch_size": batch_size, "subsets": len(sets), "subset_sizes": list(subset_sizes),
        "samples_per_class": samples_per_class, "theta": theta, "ep_theta": ep_theta,
        "seed": seed, "train": train.name, "attacker_pool": len(train), "test_size": len(test),
        "attacker": "hidden weights re-initialised U(-1/sqrt(fan_in), 1/sqrt(fan_in)); all "
                    "parameters trainable; Adam; budget samples drawn at random from the pool",
    }
    result = ProtectEvaluation(rows, summarize(rows), [list(s) for s in sets], config)
    result.seconds = time.perf_counter() - start
    result.files = write_protect_outputs(result, out)
    return result


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over class subsets per method × budget."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["budget"]), []).append(r)
    return [
        {
            "method": method, "budget": budget, "subsets": len(rs),
            **{k: mean([r[k] for r in rs]) for k in (
                "acc_target", "acc_other", "acc_all", "base_target", "base_other", "base_all")},
            "acc_target_std": std([r["acc_target"] for r in rs]),
        }
        for (method, budget), rs in groups.items()
    ]


def write_protect_outputs(result: ProtectEvaluation, out: Path) -> dict[str, Path]:
    files = {
        "csv": write_csv(out / "protect_results.csv", result.rows),
        "json": write_json(out / "protect_results.json", {
            "config": result.config, "class_sets": result.class_sets,
            "seconds": result.seconds, "summary": result.summary, "rows": result.rows,
        }),
    }
    panels = []
    for metric, label in (("acc_target", "target classes"), ("acc_other", "other classes"),
                          ("acc_all", "all classes")):
        base_key = {"acc_target": "base_target", "acc_other": "base_other",
                    "acc_all": "base_all"}[metric]
        p = Panel(title=f"recovered accuracy, {label}", xlabel="attacker budget (samples)",
                  ylabel=f"accuracy on {label}", logx=True, reference_label="original model",
                  reference=mean([r[base_key] for r in result.summary]))
        for m in dict.fromkeys(r["method"] for r in result.summary):
            pts = sorted((r for r in result.summary if r["method"] == m),
                         key=lambda r: r["budget"])
            p.series[m] = ([r["budget"] for r in pts], [r[metric] for r in pts])
        panels.append(p)
    cfg = result.config
    files["fig6"] = save_panels(
        out / "fig6_protection.png", panels, ncols=3,
        title=f"Selective protection: {cfg['ratio']:.0%} of each layer's synapses hidden, "
              f"attacker retrains {cfg['epochs']} epochs (mean over {cfg['subsets']} subsets)",
    )
    return files

