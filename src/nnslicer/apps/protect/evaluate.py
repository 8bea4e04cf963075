"""The selective-protection experiment (the paper's Fig. 6): recovered accuracy vs budget.

For each target class set, method and hidden ratio, hide the top ``ratio`` synapses of each
layer; for each attacker (:data:`~nnslicer.apps.protect.protection.ATTACKERS`) and budget, let
the simulated attacker retrain and measure the recovered model on the target classes, the other
classes and all classes (argmax over all outputs). ``all-hidden`` (every synapse hidden, so
independent of the ratio) is the reference of a fully protected model. Lower target accuracy =
better protection. A setting counts as *recovered* at the smallest budget whose target accuracy
reaches ``recovered_at`` × the original model's.

Every finished attack is appended to ``protect_state.json`` (atomically), so an interrupted
run started again with the same settings skips what is done; settings that change the numbers
(model, data, epochs, learning rate, batch size, seed, slicing) must match or the run stops
with one line (``restart=True`` starts over). The grid itself (methods, ratios, attackers,
budgets, subsets) may grow between runs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from nnslicer.apps.figures import Evaluation, mean, std, write_csv, write_json
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
from nnslicer.errors import FileFormatError, InputError
from nnslicer.profile.profile import parameter_hash

from .protection import ATTACKERS, PROTECT_METHODS, check_attacker, protect, simulate_attack
from .secret import protection_cost

DEFAULT_BUDGETS: tuple[int, ...] = (0, 50, 100, 200, 500, 1000, 2000)
DEFAULT_RATIOS: tuple[float, ...] = (0.05, 0.1, 0.2)
DEFAULT_ATTACKERS: tuple[str, ...] = tuple(ATTACKERS)
ALL_HIDDEN = "all-hidden"
STATE_FILE = "protect_state.json"
STATE_VERSION = 1


@dataclass
class ProtectEvaluation(Evaluation):
    """Rows: one per subset × method × ratio × attacker × budget; ``recovery`` and ``costs``
    as :func:`recovery` and :func:`summarize_costs` return them."""

    recovery: list[dict[str, Any]] = field(default_factory=list)
    costs: list[dict[str, Any]] = field(default_factory=list)


def log_budgets(pool: int, steps: Sequence[int] = (1, 2, 5), start: int = 10) -> list[int]:
    """0, then ``steps`` × powers of ten from ``start`` below ``pool``, then ``pool`` itself:
    ``log_budgets(4000) == [0, 10, 20, 50, 100, 200, 500, 1000, 2000, 4000]``."""
    if pool < 1:
        raise InputError(f"the attacker's pool is empty (size {pool})")
    out = [0]
    k = 0
    while True:
        vals = [s * 10**k for s in steps if start <= s * 10**k < pool]
        if not vals and min(steps) * 10**k >= pool:
            break
        out += vals
        k += 1
    return sorted(set(out + [pool]))


def same_attack(label: str, attacker: str, budget: int) -> str:
    """The attacker whose attack gives provably the same model: with budget 0 ``hidden``
    and ``all`` both stop at the same default draw; with everything hidden ``stats`` has no
    exposed statistics and falls back to that draw, then trains as ``all``."""
    if attacker == "hidden" and budget == 0:
        return "all"
    if attacker == "stats" and label == ALL_HIDDEN:
        return "all"
    return attacker


def _row_key(r: dict[str, Any]) -> tuple:
    return (tuple(r["classes"]), r["method"], float(r["ratio"]), r["attacker"], int(r["budget"]))


def _load_state(path: Path, fixed: dict[str, Any], restart: bool) -> list[dict[str, Any]]:
    if restart or not path.is_file():
        return []
    try:
        state = json.loads(path.read_text())
        old, rows = state["fixed"], state["rows"]
    except (ValueError, KeyError, TypeError) as e:
        raise FileFormatError(f"{path} is not a protection state file ({e}); pass --restart "
                              "or another --out") from e
    diffs = [f"{k}: {old.get(k)!r} there, {v!r} now" for k, v in fixed.items()
             if old.get(k) != v]
    if diffs:
        raise InputError(f"{path} was written with other settings ({'; '.join(diffs)}); pass "
                         "--restart to start over or choose another --out")
    return list(rows)


def evaluate_protection(
    model: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset,
    out_dir: str | Path,
    *,
    class_sets: Sequence[Sequence[int]] | None = None,
    subsets: int = 3,
    subset_sizes: tuple[int, int] = (2, 5),
    ratios: Sequence[float] = DEFAULT_RATIOS,
    budgets: Sequence[int] | None = None,
    epochs: int = 5,
    methods: Sequence[str] = PROTECT_METHODS,
    attackers: Sequence[str] = DEFAULT_ATTACKERS,
    all_hidden: bool = True,
    samples_per_class: int | None = None,
    theta: float = 0.2,
    ep_theta: float = 0.5,
    lr: float = 1e-3,
    batch_size: int = 32,
    recovered_at: float = 0.9,
    seed: int = 0,
    restart: bool = False,
    progress: bool = True,
) -> ProtectEvaluation:
    """Run (or resume) the protection experiment; writes into ``out_dir`` the rows
    (``protect_results.csv``), means over subsets (``protect_summary.csv``), recovery budgets
    (``protect_recovery.csv``), costs (``protect_cost.csv``), all of it in
    ``protect_results.json``, and the figures ``fig6_protection_ratio{r}.png`` (one per ratio)
    and ``protect_recovery.png``. The attacker's pool is ``train``; ``budgets=None`` means
    :func:`log_budgets` of its size."""
    start = time.perf_counter()
    out = Path(out_dir)
    methods = list(dict.fromkeys(check_method(m, PROTECT_METHODS) for m in methods))
    attackers = list(dict.fromkeys(check_attacker(a) for a in attackers))
    ratios = sorted({check_ratio(r) for r in ratios})
    budgets = log_budgets(len(train)) if budgets is None else sorted({int(b) for b in budgets})
    if not methods or not budgets or not ratios or not attackers:
        raise InputError("give at least one method, ratio, attacker and budget")
    if budgets[0] < 0 or budgets[-1] > len(train):
        raise InputError(f"budgets must lie in 0..{len(train)} (the attacker's pool), "
                         f"got {budgets[0]}..{budgets[-1]}")
    if epochs < 0 or lr <= 0 or batch_size < 1:
        raise InputError(f"need epochs >= 0, lr > 0 and batch size >= 1, got {epochs}, {lr}, "
                         f"{batch_size}")
    if not 0 < recovered_at <= 1:
        raise InputError(f"recovered_at must lie in (0, 1], got {recovered_at}")
    model.eval()
    k_total = analyze_channels(model).num_outputs
    sets = class_sets_for(class_sets, k_total, train, subsets, subset_sizes, seed)
    fixed = {
        "version": STATE_VERSION, "model": parameter_hash(model), "train": train.name,
        "attacker_pool": len(train), "test": test.name, "test_size": len(test),
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
        "samples_per_class": samples_per_class, "theta": theta, "ep_theta": ep_theta,
    }
    state_path = out / STATE_FILE
    done = {_row_key(r): r for r in _load_state(state_path, fixed, restart)}
    kept = dict(done)  # rows outside this grid stay in the state file for later runs

    labels = methods + ([ALL_HIDDEN] if all_hidden else [])
    units = [(i, label, ratio) for i, _ in enumerate(sets) for label in labels
             for ratio in ([1.0] if label == ALL_HIDDEN else ratios)]

    def key(i: int, label: str, ratio: float, attacker: str, budget: int) -> tuple:
        return (tuple(sets[i]), label, float(ratio), attacker, int(budget))

    pending = [(u, a, b) for u in units for a in attackers for b in budgets
               if key(*u, a, b) not in done]
    work = {p: p[2] * epochs + max(len(test) // 4, 1) for p in pending}
    sources: dict[str, Any] = {}
    for kind in sorted({SLICE_KINDS[m] for m in methods if m in SLICE_KINDS}):
        sources[kind] = cached_contributions(
            model, kind, train, sorted(set().union(*sets)), num_classes=k_total,
            cache_dir=out / "cache",
            samples_per_class=samples_per_class,
            theta=ep_theta if kind == "effective-path" else theta, progress=progress,
        )
    bar = tqdm(total=sum(work.values()), desc="protection attacks", unit="sample",
               unit_scale=True, disable=not progress)
    bar.set_postfix(done=len(done), todo=len(pending))
    costs: list[dict[str, Any]] = []
    bases = {i: class_accuracies(model, test, classes) for i, classes in enumerate(sets)}
    example = test.x[:1]
    for i, label, ratio in units:
        classes = sets[i]
        if label == ALL_HIDDEN:
            exposed, report = protect(model, None, classes, 1.0, "random", seed=seed + i)
        else:
            exposed, report = protect(model, sources.get(SLICE_KINDS.get(label, "")), classes,
                                      ratio, label, data=train, seed=seed + i)
        costs.append({"subset": i, "classes": list(classes), "method": label, "ratio": ratio,
                      **protection_cost(model, report.hidden, example)})
        base = bases[i]
        for attacker in attackers:
            for budget in budgets:
                k = key(i, label, ratio, attacker, budget)
                if k in done:
                    continue
                bar.set_postfix(subset=i + 1, method=label, ratio=ratio, attacker=attacker,
                                budget=budget)
                twin = next((a for a in ATTACKERS if a != attacker
                             and same_attack(label, a, budget) == same_attack(label, attacker,
                                                                              budget)
                             and key(i, label, ratio, a, budget) in done), None)
                if twin is not None:  # provably the same model: reuse its numbers
                    twin_row = done[key(i, label, ratio, twin, budget)]
                    acc = {k: twin_row[f"acc_{k}"] for k in ("target", "other", "all")}
                else:
                    recovered = simulate_attack(exposed, report.hidden, train, budget=budget,
                                                attacker=attacker, epochs=epochs, lr=lr,
                                                batch_size=batch_size, seed=seed * 1000 + i)
                    acc = class_accuracies(recovered, test, classes)
                row = {
                    "subset": i, "classes": list(classes), "method": label, "ratio": ratio,
                    "attacker": attacker, "budget": budget, "epochs": epochs,
                    "hidden": report.hidden_count,
                    "acc_target": acc["target"], "acc_other": acc["other"],
                    "acc_all": acc["all"], "base_target": base["target"],
                    "base_other": base["other"], "base_all": base["all"],
                    "same_as": twin or "",
                }
                done[k] = kept[k] = row
                write_json(state_path, {"fixed": fixed, "rows": list(kept.values())})
                bar.update(work[((i, label, ratio), attacker, budget)])
    bar.close()
    grid = {key(*u, a, b) for u in units for a in attackers for b in budgets}
    rows = sorted((r for k, r in done.items() if k in grid),
                  key=lambda r: (r["subset"], labels.index(r["method"]), r["ratio"],
                                 attackers.index(r["attacker"]), r["budget"]))
    config = {
        **fixed, "methods": labels, "ratios": ratios, "attackers": attackers,
        "attacker_kinds": {a: ATTACKERS[a] for a in attackers}, "budgets": budgets,
        "subsets": len(sets), "subset_sizes": list(subset_sizes), "recovered_at": recovered_at,
        "attack": "budget samples drawn at random from the pool (the same draw for every "
                  "method and attacker); Adam; cross-entropy",
    }
    summary = summarize(rows)
    result = ProtectEvaluation(rows, summary, [list(s) for s in sets], config,
                               recovery=recovery(rows, recovered_at),
                               costs=summarize_costs(costs))
    result.seconds = time.perf_counter() - start
    result.files = write_protect_outputs(result, out)
    return result


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means and standard deviations over class subsets per method × ratio × attacker ×
    budget."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["ratio"], r["attacker"], r["budget"]), []).append(r)
    out = []
    for (method, ratio, attacker, budget), rs in groups.items():
        row: dict[str, Any] = {"method": method, "ratio": ratio, "attacker": attacker,
                               "budget": budget, "subsets": len(rs)}
        for k in ("acc_target", "acc_other", "acc_all"):
            row[k] = mean([r[k] for r in rs])
            row[f"{k}_std"] = std([r[k] for r in rs])
            row[f"{k}_min"] = min(r[k] for r in rs)
            row[f"{k}_max"] = max(r[k] for r in rs)
        for k in ("base_target", "base_other", "base_all"):
            row[k] = mean([r[k] for r in rs])
        out.append(row)
    return out


def _first_recovered(points: Sequence[tuple[int, float]], level: float) -> int | None:
    for budget, acc in sorted(points):
        if not math.isnan(acc) and acc >= level:
            return budget
    return None


def recovery(rows: Sequence[dict[str, Any]], recovered_at: float = 0.9
             ) -> list[dict[str, Any]]:
    """Per method × ratio × attacker: the smallest budget at which the target accuracy
    reaches ``recovered_at`` × the original's — of the mean over subsets (``budget``) and of
    each subset (``per_subset``; None = not recovered within the budgets tried)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["ratio"], r["attacker"]), []).append(r)
    out = []
    for (method, ratio, attacker), rs in groups.items():
        subsets = sorted({r["subset"] for r in rs})
        per_subset = []
        for s in subsets:
            mine = [r for r in rs if r["subset"] == s]
            level = recovered_at * mine[0]["base_target"]
            per_subset.append(_first_recovered([(r["budget"], r["acc_target"]) for r in mine],
                                               level))
        by_budget: dict[int, list[dict[str, Any]]] = {}
        for r in rs:
            by_budget.setdefault(r["budget"], []).append(r)
        complete = {b: v for b, v in by_budget.items() if len(v) == len(subsets)}
        base = mean([r["base_target"] for r in rs if r["budget"] == min(complete, default=0)])
        curve = [(b, mean([r["acc_target"] for r in v])) for b, v in complete.items()]
        out.append({
            "method": method, "ratio": ratio, "attacker": attacker,
            "recovered_at": recovered_at, "level": recovered_at * base,
            "budget": _first_recovered(curve, recovered_at * base),
            "max_budget": max(complete, default=0),
            "per_subset": per_subset,
            "subsets_recovered": sum(b is not None for b in per_subset),
            "subsets": len(subsets),
        })
    return out


COST_KEYS = ("parameters", "hidden", "hidden_fraction_of_parameters", "model_bytes",
             "value_bytes", "mask_bytes", "mask_zlib_bytes", "secret_bytes",
             "secret_fraction_of_model_bytes", "hidden_fraction_of_macs")


def summarize_costs(costs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean cost over subsets per method × ratio (only the zlib size varies between subsets
    for a given method: every method hides the same count per layer)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for c in costs:
        groups.setdefault((c["method"], c["ratio"]), []).append(c)
    return [{"method": m, "ratio": r, "subsets": len(cs),
             **{k: mean([c[k] for c in cs]) for k in COST_KEYS if k in cs[0]}}
            for (m, r), cs in groups.items()]


def write_protect_outputs(result: ProtectEvaluation, out: Path) -> dict[str, Path]:
    from .plots import plot_fig6, plot_recovery

    rec, costs = result.recovery, result.costs
    files = {
        "csv": write_csv(out / "protect_results.csv", result.rows),
        "summary": write_csv(out / "protect_summary.csv", result.summary),
        "recovery": write_csv(out / "protect_recovery.csv", [
            {**r, "per_subset": ["-" if b is None else b for b in r["per_subset"]]}
            for r in rec]),
        "cost": write_csv(out / "protect_cost.csv", costs),
        "json": write_json(out / "protect_results.json", {
            "config": result.config, "class_sets": result.class_sets,
            "seconds": result.seconds, "summary": result.summary, "recovery": rec,
            "cost": costs, "rows": result.rows,
        }),
    }
    for ratio in result.config["ratios"]:
        files[f"fig6_{ratio:g}"] = plot_fig6(out / f"fig6_protection_ratio{ratio:g}.png",
                                             result.summary, rec, result.config, ratio)
    files["recovery_png"] = plot_recovery(out / "protect_recovery.png", rec, result.config)
    return files


def format_summary(result: ProtectEvaluation) -> str:
    """Plain-text blocks (one per attacker × ratio) of the mean target accuracy per budget,
    and the budget at which each method is recovered."""
    summary, cfg = result.summary, result.config
    budgets = sorted({r["budget"] for r in summary})
    rec = {(r["method"], r["ratio"], r["attacker"]): r for r in result.recovery}
    blocks = []
    for attacker in cfg["attackers"]:
        for ratio in cfg["ratios"]:
            lines = [f"attacker {attacker}, hidden ratio {ratio:g}: mean target-class accuracy "
                     f"(recovered = {cfg['recovered_at']:g} x original)",
                     f"{'budget':<15}" + "".join(f"{b:>7}" for b in budgets) + "  recovered at"]
            for method in cfg["methods"]:
                r_ = 1.0 if method == ALL_HIDDEN else ratio
                cells = {r["budget"]: r["acc_target"] for r in summary
                         if (r["method"], r["ratio"], r["attacker"]) == (method, r_, attacker)}
                got = rec.get((method, r_, attacker), {}).get("budget")
                lines.append(f"{method:<15}" + "".join(
                    f"{cells[b]:>7.3f}" if b in cells else " " * 7 for b in budgets)
                    + f"  {'not' if got is None else got}")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)

