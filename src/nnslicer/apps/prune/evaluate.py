"""The targeted-pruning experiment (the paper's Fig. 4 and Fig. 5) on any model and dataset.

For several target class sets and prune ratios, every method prunes the model, with and
without mean compensation; the pruned model's accuracy on the target classes' test samples is
measured (argmax over *all* outputs, the honest reading; the argmax restricted to the target
classes is reported too), then again after a short masked fine-tune on target-class training
data. Results go to CSV and JSON, figures to PNG, all written atomically.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from nnslicer.apps.figures import Evaluation, Panel, mean, save_panels, std, write_csv, write_json
from nnslicer.apps.importance import (
    SLICE_KINDS,
    ClassContributions,
    cached_contributions,
    check_method,
    check_ratio,
    class_accuracies,
    class_sets_for,
)
from nnslicer.data.datasets import ArrayDataset
from nnslicer.errors import InputError

from .channels import analyze_channels
from .pruning import PRUNE_METHODS, input_profile, masked_finetune, prune

DEFAULT_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


PruneEvaluation = Evaluation  # rows: one per subset × setting × method


def evaluate_pruning(
    model: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset,
    out_dir: str | Path,
    *,
    class_sets: Sequence[Sequence[int]] | None = None,
    subsets: int = 3,
    subset_sizes: tuple[int, int] = (2, 9),
    ratios: Sequence[float] = DEFAULT_RATIOS,
    methods: Sequence[str] = PRUNE_METHODS,
    compensate: Sequence[bool] = (False, True),
    finetune_samples: int = 500,
    finetune_epochs: int = 1,
    finetune_lr: float = 1e-3,
    samples_per_class: int | None = None,
    theta: float = 0.2,
    ep_theta: float = 0.5,
    prune_classifier: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> PruneEvaluation:
    """Run the pruning experiment and write ``prune_results.{csv,json}``, ``fig4_pruning.png``
    and (with fine-tuning) ``fig5_finetune.png`` into ``out_dir``.

    Slices are computed once per class (cached in ``out_dir/cache``); ``samples_per_class``
    bounds how many training samples of each class are sliced.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    methods = [check_method(m, PRUNE_METHODS) for m in methods]
    ratios = [check_ratio(r) for r in ratios]
    if not methods or not ratios or not compensate:
        raise InputError("give at least one method, one ratio and one compensation setting")
    if finetune_samples < 0:
        raise InputError(f"finetune_samples must be >= 0, got {finetune_samples}")
    model.eval()
    k_total = analyze_channels(model).num_outputs
    sets = class_sets_for(class_sets, k_total, train, subsets, subset_sizes, seed)
    needed = sorted(set().union(*sets))
    sources: dict[str, ClassContributions] = {}
    for kind in sorted({SLICE_KINDS[m] for m in methods if m in SLICE_KINDS}):
        classes = range(k_total) if "nnslicer-all" in methods and kind == "nnslicer" else needed
        sources[kind] = cached_contributions(
            model, kind, train, classes, num_classes=k_total, cache_dir=out / "cache",
            samples_per_class=samples_per_class,
            theta=ep_theta if kind == "effective-path" else theta, progress=progress,
        )
    profile = input_profile(model, train) if any(compensate) else None

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(sets) * len(ratios), desc="pruning", unit="ratio", disable=not progress)
    for i, classes in enumerate(sets):
        sub_seed = seed + i
        base = class_accuracies(model, test, classes)
        pool = train.filter_classes(classes)
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(sub_seed))
        ft_data = pool.subset(order[:finetune_samples])
        for ratio in ratios:
            bar.set_postfix(subset=i + 1, ratio=ratio)
            for method in methods:
                source = sources.get(SLICE_KINDS.get(method, ""))
                for comp in compensate:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        pruned, report = prune(
                            model, source, classes, ratio, method, data=train, compensate=comp,
                            profile=profile, seed=sub_seed, prune_classifier=prune_classifier,
                        )
                    common = {
                        "subset": i, "classes": list(classes), "n_classes": len(classes),
                        "ratio": ratio, "method": method, "compensate": comp,
                        "fraction_removed": report.fraction,
                        "neurons_removed": sum(s.neurons_removed for s in report.layers),
                        "warnings": len(caught),
                        "base_target": base["target"], "base_other": base["other"],
                    }
                    acc = class_accuracies(pruned, test, classes)
                    rows.append({**common, "finetuned": False, **_acc_cols(acc)})
                    if finetune_samples > 0 and finetune_epochs > 0:
                        masked_finetune(pruned, report.masks, ft_data, epochs=finetune_epochs,
                                        lr=finetune_lr, seed=sub_seed)
                        acc = class_accuracies(pruned, test, classes)
                        rows.append({**common, "finetuned": True, **_acc_cols(acc)})
            bar.update(1)
    bar.close()

    summary = summarize(rows)
    config = {
        "methods": methods, "ratios": ratios, "compensate": list(compensate),
        "subsets": len(sets), "subset_sizes": list(subset_sizes),
        "finetune_samples": finetune_samples, "finetune_epochs": finetune_epochs,
        "finetune_lr": finetune_lr, "samples_per_class": samples_per_class, "theta": theta,
        "ep_theta": ep_theta, "prune_classifier": prune_classifier, "seed": seed,
        "train": train.name, "train_size": len(train), "test_size": len(test),
        "accuracy": "argmax over all outputs (acc_target); acc_target_restricted: argmax over "
                    "the target classes only",
    }
    result = PruneEvaluation(rows, summary, [list(s) for s in sets], config)
    result.seconds = time.perf_counter() - start
    result.files = write_prune_outputs(result, out)
    return result


def _acc_cols(acc: dict[str, float]) -> dict[str, float]:
    return {"acc_target": acc["target"], "acc_target_restricted": acc["target_restricted"],
            "acc_other": acc["other"], "acc_all": acc["all"]}


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and std) over the class subsets per method × compensation × fine-tune × ratio."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["compensate"], r["finetuned"], r["ratio"]), []).append(r)
    out = []
    for (method, comp, ft, ratio), rs in groups.items():
        out.append({
            "method": method, "compensate": comp, "finetuned": ft, "ratio": ratio,
            "subsets": len(rs),
            "acc_target": mean([r["acc_target"] for r in rs]),
            "acc_target_std": std([r["acc_target"] for r in rs]),
            "acc_target_restricted": mean([r["acc_target_restricted"] for r in rs]),
            "acc_other": mean([r["acc_other"] for r in rs]),
            "base_target": mean([r["base_target"] for r in rs]),
            "base_other": mean([r["base_other"] for r in rs]),
            "fraction_removed": mean([r["fraction_removed"] for r in rs]),
        })
    return out


def write_prune_outputs(result: PruneEvaluation, out: Path) -> dict[str, Path]:
    files = {
        "csv": write_csv(out / "prune_results.csv", result.rows),
        "json": write_json(out / "prune_results.json", {
            "config": result.config, "class_sets": result.class_sets,
            "seconds": result.seconds, "summary": result.summary, "rows": result.rows,
        }),
    }
    fts = sorted({r["finetuned"] for r in result.summary})
    for ft in fts:
        name = "fig5_finetune.png" if ft else "fig4_pruning.png"
        ncols = len({r["compensate"] for r in result.summary})
        files["fig5" if ft else "fig4"] = save_panels(out / name, _panels(result, ft),
                                                      ncols=ncols, title=(
            "Targeted pruning after a 1-epoch masked fine-tune" if ft else
            "Targeted pruning without fine-tuning"
        ) + f" (mean over {len(result.class_sets)} class subsets)")
    return files


def _panels(result: PruneEvaluation, finetuned: bool) -> list[Panel]:
    rows = [r for r in result.summary if r["finetuned"] == finetuned]
    panels = []
    for metric, label in (("acc_target", "target classes"), ("acc_other", "other classes")):
        for comp in sorted({r["compensate"] for r in rows}):
            sel = sorted((r for r in rows if r["compensate"] == comp), key=lambda r: r["ratio"])
            p = Panel(
                title=f"{label}, {'with' if comp else 'no'} mean compensation",
                xlabel="prune ratio (per layer)", ylabel=f"accuracy on {label}",
                reference=mean([r["base_target" if metric == "acc_target" else "base_other"]
                                 for r in sel]),
            )
            for m in dict.fromkeys(r["method"] for r in sel):
                pts = [r for r in sel if r["method"] == m]
                p.series[m] = ([r["ratio"] for r in pts], [r[metric] for r in pts])
            panels.append(p)
    return panels
