"""``nnslicer prune ...`` and ``nnslicer protect ...``: targeted pruning and selective protection.

Mounted by the main CLI as ``app.add_typer(prune_app, name="prune")`` and
``app.add_typer(protect_app, name="protect")``.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import typer
from rich.table import Table

from ..apps.figures import write_json
from ..apps.protect.evaluate import (
    DEFAULT_ATTACKERS,
    evaluate_protection,
    format_summary,
)
from ..apps.protect.evaluate import DEFAULT_RATIOS as PROTECT_RATIOS
from ..apps.protect.protection import (
    ATTACKERS,
    PROTECT_METHODS,
    check_attacker,
    protect,
    simulate_attack,
)
from ..apps.protect.secret import protection_cost, save_hidden
from ..apps.prune.evaluate import DEFAULT_RATIOS, class_accuracies, evaluate_pruning
from ..apps.prune.export import export_pruned, save_exported
from ..apps.prune.pruning import (
    PRUNE_METHODS,
    PruneWarning,
    check_classes,
    masked_finetune,
    prune,
)
from ..errors import InputError
from ..io_utils import atomic_write_bytes
from ..models.checkpoint import save_checkpoint
from .common import console, err_console, one_line_errors, open_data, open_model, say, setup

prune_app = typer.Typer(
    help="Class-targeted pruning with NNSlicer slices (and the paper's baselines).",
    no_args_is_help=True,
)
protect_app = typer.Typer(
    help="Selective model protection: hide the synapses that matter most for some classes.",
    no_args_is_help=True,
)

# --------------------------------------------------------------------------------- parsing


def parse_floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from e
    if not values:
        raise InputError(f"{what} is empty; give e.g. 0.1,0.5")
    return values


def parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from e
    if not values:
        raise InputError(f"{what} is empty")
    return values


def parse_range(text: str, what: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if m is None:
        raise InputError(f"{what} must look like 2-9, got {text!r}")
    return int(m[1]), int(m[2] or m[1])


def parse_classes(text: str, names: list[str]) -> list[int]:
    """'0,1,2' or class names 'T-shirt/top,Trouser' -> sorted indices."""
    items = [c.strip() for c in text.split(",") if c.strip()]
    if not items:
        raise InputError("the class set is empty; give e.g. --classes 0,1,2")
    return check_classes(items, len(names), names)


def parse_class_sets(text: str | None, names: list[str]) -> list[list[int]] | None:
    """'0,1;2,3,4' -> [[0, 1], [2, 3, 4]]; None stays None (random subsets)."""
    if text is None:
        return None
    sets = [parse_classes(part, names) for part in text.split(";") if part.strip()]
    if not sets:
        raise InputError("--classes is empty; give e.g. '0,1;2,3,4'")
    return sets


def parse_methods(text: str, allowed: tuple[str, ...]) -> list[str]:
    if text.strip() == "all":
        return list(allowed)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    for m in methods:
        if m not in allowed:
            raise InputError(f"unknown method {m!r}; choose from: {', '.join(allowed)} or all")
    if not methods:
        raise InputError("no method given")
    return methods


def _load(model: str, weights: str | None, data: str, data_root: str | None, threads: int | None
          ) -> tuple[torch.nn.Module, dict[str, Any], Any, Any]:
    setup(threads)
    net, meta = open_model(model, weights)
    train = open_data(data, "train", data_root)
    test = open_data(data, "test", data_root)
    return net, meta, train, test


def _save_model(out: Path, stem: str, model: torch.nn.Module, meta: dict[str, Any],
                extra: dict[str, Any]) -> Path:
    """A zoo checkpoint when the model came from one, else a bare safetensors state dict."""
    if meta.get("arch"):
        clean = {k: v for k, v in meta.items() if k not in ("format", "format_version")}
        return save_checkpoint(out / stem, model, {**clean, **extra})[0]
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write_bytes(out / f"{stem}.safetensors", safetensors.torch.save(tensors))


def _acc_line(acc: dict[str, float]) -> str:
    return (f"target {acc['target']:.3f} · other {acc['other']:.3f} · all {acc['all']:.3f} "
            f"· target (argmax over targets only) {acc['target_restricted']:.3f}")


# ------------------------------------------------------------------------------ prune run


@prune_app.command("run")
@one_line_errors
def prune_run(
    model: str = typer.Option(..., "--model", help="checkpoint (stem/.json/.safetensors) or "
                              "package.module:factory"),
    weights: str | None = typer.Option(None, "--weights", help="weights for a user model spec"),
    data: str = typer.Option("mnist-digits", "--data", help="dataset name"),
    data_root: str | None = typer.Option(None, "--data-root", help="dataset directory"),
    classes: str = typer.Option(..., "--classes", help="target classes, e.g. 0,1,2"),
    ratio: float = typer.Option(0.5, "--ratio", help="fraction of each layer's synapses removed"),
    method: str = typer.Option("nnslicer", "--method", help=", ".join(PRUNE_METHODS)),
    compensate: bool = typer.Option(False, "--compensate/--no-compensate",
                                    help="fold removed inputs' mean contribution into biases"),
    keep_classifier: bool = typer.Option(False, "--keep-classifier",
                                         help="do not prune the last (classifier) layer"),
    samples_per_class: int | None = typer.Option(
        None, "--samples-per-class", help="slice at most N training samples per class"),
    theta: float = typer.Option(0.2, "--theta", help="NNSlicer θ"),
    ep_theta: float = typer.Option(0.5, "--ep-theta", help="EffectivePath θ"),
    finetune_samples: int = typer.Option(0, "--finetune-samples",
                                         help="masked fine-tune on N target-class samples"),
    finetune_epochs: int = typer.Option(1, "--finetune-epochs"),
    export: bool = typer.Option(False, "--export/--no-export",
                                help="also write a physically smaller model"),
    latency_runs: int = typer.Option(20, "--latency-runs",
                                     help="timed runs per batch size for the export latency"),
    out: Path = typer.Option(Path("prune-out"), "--out", help="output directory"),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars or tables"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
) -> None:
    """Prune a model for a set of target classes and report its accuracy."""
    start = time.perf_counter()
    net, meta, train, test = _load(model, weights, data, data_root, threads)
    targets = parse_classes(classes, train.classes)
    with warnings.catch_warnings():  # printed below from the report, once
        warnings.simplefilter("ignore", PruneWarning)
        pruned, report = prune(
            net, None, targets, ratio, method, data=train, compensate=compensate,
            prune_classifier=not keep_classifier, samples_per_class=samples_per_class,
            theta=theta, ep_theta=ep_theta, seed=seed, progress=not quiet,
        )
    before = class_accuracies(net, test, targets)
    after = class_accuracies(pruned, test, targets)
    result: dict[str, Any] = {"model": model, "data": data, "pruning": report.to_dict(),
                              "accuracy_original": before, "accuracy_pruned": after}
    if finetune_samples > 0:
        pool = train.filter_classes(targets)
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
        masked_finetune(pruned, report.masks, pool.subset(order[:finetune_samples]),
                        epochs=finetune_epochs, seed=seed, progress=not quiet)
        result["accuracy_finetuned"] = class_accuracies(pruned, test, targets)
        result["finetune"] = {"samples": min(finetune_samples, len(pool)),
                              "epochs": finetune_epochs}
    files = {"model": _save_model(out, "pruned", pruned, meta, {
        "test_accuracy": (result.get("accuracy_finetuned") or after)["all"],
        "pruning": report.to_dict()})}
    if export:
        small, ex = export_pruned(pruned, test.x[:64], latency_runs=latency_runs)
        result["export"] = ex.to_dict()
        if meta.get("arch"):
            files["exported"] = save_exported(out / "exported", small, {
                "arch": meta["arch"], "arch_kwargs": meta["arch_kwargs"],
                "dataset": meta.get("dataset"), "pruning": report.to_dict()})[0]
    result["seconds"] = time.perf_counter() - start
    result["files"] = {k: str(v) for k, v in files.items()}
    files["report"] = write_json(out / "prune_report.json", result)
    for w in report.warnings:  # shown even with --quiet: the result is not what was asked
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    if not quiet:
        table = Table(title=f"{method} pruning of {model}, classes {targets}, ratio {ratio}")
        for col in ("layer", "synapses", "removed", "neurons", "neurons removed"):
            table.add_column(col, justify="left" if col == "layer" else "right")
        for s in report.layers:
            table.add_row(s.layer, str(s.synapses), f"{s.removed} ({s.fraction:.0%})",
                          str(s.neurons), str(s.neurons_removed) + (" (kept 1)" if s.kept_one
                                                                    else ""))
        say(quiet, table)
    say(quiet, f"original: {_acc_line(before)}")
    say(quiet, f"pruned:   {_acc_line(after)}")
    if "accuracy_finetuned" in result:
        say(quiet, f"fine-tuned: {_acc_line(result['accuracy_finetuned'])}")
    if "export" in result:
        ex = result["export"]
        lat = ex["latency_ms"].get("64") or next(iter(ex["latency_ms"].values()))
        say(quiet, f"exported: {ex['parameters_original']} -> {ex['parameters_exported']} "
                   f"parameters, latency {lat['original']:.2f} -> {lat['exported']:.2f} ms "
                   f"(max output difference {ex['max_abs_difference']:.2g})")
    say(quiet, f"wrote {files['report']}")


# ------------------------------------------------------------------------- prune evaluate


@prune_app.command("evaluate")
@one_line_errors
def prune_evaluate(
    model: str = typer.Option(..., "--model", help="checkpoint or package.module:factory"),
    weights: str | None = typer.Option(None, "--weights"),
    data: str = typer.Option("mnist-digits", "--data"),
    data_root: str | None = typer.Option(None, "--data-root"),
    classes: str | None = typer.Option(
        None, "--classes", help="explicit class sets '0,1;2,3,4' (default: random subsets)"),
    subsets: int = typer.Option(3, "--subsets", help="number of random class subsets"),
    subset_sizes: str = typer.Option("2-9", "--subset-sizes", help="size range of a subset"),
    ratios: str = typer.Option(",".join(str(r) for r in DEFAULT_RATIOS), "--ratios"),
    methods: str = typer.Option("all", "--methods", help="comma list or 'all': "
                                + ", ".join(PRUNE_METHODS)),
    compensation: str = typer.Option("both", "--compensation", help="off, on or both"),
    keep_classifier: bool = typer.Option(False, "--keep-classifier"),
    finetune_samples: int = typer.Option(500, "--finetune-samples",
                                         help="target-class samples of the fine-tune (0: none)"),
    finetune_epochs: int = typer.Option(1, "--finetune-epochs"),
    samples_per_class: int | None = typer.Option(None, "--samples-per-class"),
    theta: float = typer.Option(0.2, "--theta"),
    ep_theta: float = typer.Option(0.5, "--ep-theta"),
    out: Path = typer.Option(Path("prune-eval"), "--out"),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    threads: int | None = typer.Option(None, "--threads"),
) -> None:
    """Accuracy of every method vs prune ratio (paper Fig. 4/5): CSV, JSON and PNGs."""
    comp = {"off": (False,), "on": (True,), "both": (False, True)}.get(compensation)
    if comp is None:
        raise InputError(f"--compensation must be off, on or both, got {compensation!r}")
    net, _, train, test = _load(model, weights, data, data_root, threads)
    result = evaluate_pruning(
        net, train, test, out, class_sets=parse_class_sets(classes, train.classes),
        subsets=subsets, subset_sizes=parse_range(subset_sizes, "--subset-sizes"),
        ratios=parse_floats(ratios, "--ratios"),
        methods=parse_methods(methods, PRUNE_METHODS), compensate=comp,
        finetune_samples=finetune_samples, finetune_epochs=finetune_epochs,
        samples_per_class=samples_per_class, theta=theta, ep_theta=ep_theta,
        prune_classifier=not keep_classifier, seed=seed, progress=not quiet,
    )
    if not quiet:
        _summary_table(result.summary, "ratio")
    say(quiet, f"class sets: {result.class_sets}; {result.seconds:.0f} s")
    for f in result.files.values():
        say(quiet, f"wrote {f}")


def _summary_table(summary: list[dict[str, Any]], x: str) -> None:
    """Plain fixed-width blocks (one per compensation / fine-tune setting): narrow terminals
    and logs stay readable, unlike a wide rich table."""
    keys = sorted({r[x] for r in summary})
    settings = dict.fromkeys((r.get("compensate"), r.get("finetuned")) for r in summary)
    for comp, ft in settings:
        rows = [r for r in summary if (r.get("compensate"), r.get("finetuned")) == (comp, ft)]
        title = "mean accuracy on the target classes"
        if comp is not None:
            title += f", {'with' if comp else 'no'} mean compensation"
        if ft is not None:
            title += ", fine-tuned" if ft else ", no fine-tune"
        lines = [title, f"{x:<15}" + "".join(f"{k:>7g}" for k in keys)]
        for method in dict.fromkeys(r["method"] for r in rows):
            cells = {r[x]: r["acc_target"] for r in rows if r["method"] == method}
            lines.append(f"{method:<15}" + "".join(
                f"{cells[k]:>7.3f}" if k in cells else " " * 7 for k in keys))
        console.print("\n".join(lines) + "\n", markup=False, highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- protect run


def parse_attackers(text: str) -> list[str]:
    names = [a.strip() for a in text.split(",") if a.strip()]
    if not names:
        raise InputError(f"no attacker given; choose from: {', '.join(ATTACKERS)}")
    return [check_attacker(a) for a in names]


def parse_budgets(text: str) -> list[int] | None:
    """'log' -> None (log-spaced up to the attacker's pool), else a comma list."""
    return None if text.strip() == "log" else parse_ints(text, "--budgets")


@protect_app.command("run")
@one_line_errors
def protect_run(
    model: str = typer.Option(..., "--model", help="checkpoint or package.module:factory"),
    weights: str | None = typer.Option(None, "--weights"),
    data: str = typer.Option("mnist-digits", "--data"),
    data_root: str | None = typer.Option(None, "--data-root"),
    classes: str = typer.Option(..., "--classes", help="classes to protect, e.g. 0,1"),
    ratio: float = typer.Option(0.1, "--ratio", help="fraction of each layer's synapses hidden"),
    method: str = typer.Option("nnslicer", "--method", help=", ".join(PROTECT_METHODS)),
    samples_per_class: int | None = typer.Option(None, "--samples-per-class"),
    theta: float = typer.Option(0.2, "--theta"),
    ep_theta: float = typer.Option(0.5, "--ep-theta"),
    budget: int = typer.Option(500, "--budget", help="attacker's labelled samples (-1: no "
                               "attack simulation)"),
    attacker: str = typer.Option("all", "--attacker", help="; ".join(
        f"{k}: {v}" for k, v in ATTACKERS.items())),
    epochs: int = typer.Option(5, "--epochs", help="attacker's retraining epochs"),
    out: Path = typer.Option(Path("protect-out"), "--out"),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    threads: int | None = typer.Option(None, "--threads"),
) -> None:
    """Hide the most important synapses; write the exposed model and the hidden part
    (hidden.safetensors: the hidden values and bit-packed masks)."""
    start = time.perf_counter()
    attacker = check_attacker(attacker)
    net, meta, train, test = _load(model, weights, data, data_root, threads)
    targets = parse_classes(classes, train.classes)
    exposed, report = protect(net, None, targets, ratio, method, data=train,
                              samples_per_class=samples_per_class, theta=theta,
                              ep_theta=ep_theta, seed=seed, progress=not quiet)
    files = {
        "exposed": _save_model(out, "exposed", exposed, meta, {
            "test_accuracy": class_accuracies(exposed, test, targets)["all"],
            "protection": report.to_dict()}),
        "hidden": save_hidden(out / "hidden.safetensors", net, report.hidden),
    }
    cost = protection_cost(net, report.hidden, test.x[:1])
    result: dict[str, Any] = {"model": model, "data": data, "protection": report.to_dict(),
                              "cost": cost,
                              "accuracy_original": class_accuracies(net, test, targets),
                              "accuracy_exposed": class_accuracies(exposed, test, targets)}
    if budget >= 0:
        recovered = simulate_attack(exposed, report.hidden, train, budget=budget,
                                    attacker=attacker, epochs=epochs, seed=seed,
                                    progress=not quiet)
        result["attack"] = {"budget": budget, "epochs": epochs, "attacker": attacker,
                            "accuracy": class_accuracies(recovered, test, targets)}
    result["seconds"] = time.perf_counter() - start
    result["files"] = {k: str(v) for k, v in files.items()}
    path = write_json(out / "protect_report.json", result)
    say(quiet, f"hid {report.hidden_count} of {report.synapses} synapses ({method}, classes "
               f"{targets}): {cost['hidden_fraction_of_parameters']:.1%} of the parameters, "
               f"secret {cost['secret_bytes']} of {cost['model_bytes']} model bytes "
               f"({cost['secret_fraction_of_model_bytes']:.1%})")
    say(quiet, f"original:  {_acc_line(result['accuracy_original'])}")
    say(quiet, f"exposed:   {_acc_line(result['accuracy_exposed'])}")
    if "attack" in result:
        say(quiet, f"recovered ({attacker} attacker, {budget} samples, {epochs} epochs): "
                   f"{_acc_line(result['attack']['accuracy'])}")
    say(quiet, f"wrote {path}")


@protect_app.command("evaluate")
@one_line_errors
def protect_evaluate(
    model: str = typer.Option(..., "--model", help="checkpoint or package.module:factory"),
    weights: str | None = typer.Option(None, "--weights"),
    data: str = typer.Option("mnist-digits", "--data"),
    data_root: str | None = typer.Option(None, "--data-root"),
    classes: str | None = typer.Option(None, "--classes", help="class sets '0,1;2,3'"),
    subsets: int = typer.Option(3, "--subsets", help="number of random class subsets"),
    subset_sizes: str = typer.Option("2-5", "--subset-sizes"),
    ratios: str = typer.Option(",".join(f"{r:g}" for r in PROTECT_RATIOS), "--ratios",
                               "--ratio", help="hidden fractions of each layer's synapses"),
    budgets: str = typer.Option("log", "--budgets", help="attacker budgets, comma list, or "
                                "'log': 0,10,20,50,100,... and the whole training set"),
    epochs: int = typer.Option(5, "--epochs", help="attacker's retraining epochs"),
    methods: str = typer.Option("all", "--methods", help="comma list or 'all': "
                                + ", ".join(PROTECT_METHODS)),
    attackers: str = typer.Option(",".join(DEFAULT_ATTACKERS), "--attackers", "--attacker",
                                  help="comma list of: " + ", ".join(ATTACKERS)),
    all_hidden: bool = typer.Option(True, "--all-hidden/--no-all-hidden",
                                    help="include the everything-hidden reference"),
    samples_per_class: int | None = typer.Option(None, "--samples-per-class"),
    theta: float = typer.Option(0.2, "--theta"),
    ep_theta: float = typer.Option(0.5, "--ep-theta"),
    lr: float = typer.Option(1e-3, "--lr", help="attacker's Adam learning rate"),
    batch_size: int = typer.Option(32, "--batch-size", help="attacker's batch size"),
    recovered_at: float = typer.Option(0.9, "--recovered-at", help="recovered = target "
                                       "accuracy >= this x the original's"),
    restart: bool = typer.Option(False, "--restart", help="discard the finished attacks in "
                                 "--out instead of resuming"),
    out: Path = typer.Option(Path("protect-eval"), "--out"),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    threads: int | None = typer.Option(None, "--threads"),
) -> None:
    """Recovered accuracy vs attacker budget per method, ratio and attacker (paper Fig. 6):
    CSV, JSON, PNG. Resumes from --out."""
    net, _, train, test = _load(model, weights, data, data_root, threads)
    result = evaluate_protection(
        net, train, test, out, class_sets=parse_class_sets(classes, train.classes),
        subsets=subsets, subset_sizes=parse_range(subset_sizes, "--subset-sizes"),
        ratios=parse_floats(ratios, "--ratios"), budgets=parse_budgets(budgets), epochs=epochs,
        methods=parse_methods(methods, PROTECT_METHODS), attackers=parse_attackers(attackers),
        all_hidden=all_hidden, samples_per_class=samples_per_class, theta=theta,
        ep_theta=ep_theta, lr=lr, batch_size=batch_size, recovered_at=recovered_at, seed=seed,
        restart=restart, progress=not quiet,
    )
    if not quiet:
        console.print(format_summary(result) + "\n", markup=False, highlight=False,
                      soft_wrap=True)
    say(quiet, f"class sets: {result.class_sets}; {result.seconds:.0f} s")
    for f in result.files.values():
        say(quiet, f"wrote {f}")
