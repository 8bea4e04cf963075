"""``nnslicer prune ...``: class-targeted pruning, its evaluation and export.

The main CLI loads ``prune_app`` when ``nnslicer prune`` runs. The loading, saving and printing
helpers below are shared with ``nnslicer protect`` (:mod:`.protect`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import typer
from rich.table import Table

from ..apps.figures import Evaluation, write_json
from ..apps.importance import class_accuracies
from ..apps.prune.evaluate import DEFAULT_RATIOS, evaluate_pruning
from ..apps.prune.export import export_pruned, save_exported
from ..apps.prune.pruning import PRUNE_METHODS, PruneWarning, masked_finetune, prune
from ..errors import InputError
from ..io_utils import atomic_write_bytes
from ..models.checkpoint import save_checkpoint
from .common import console, err_console, one_line_errors, open_data, open_model, say, setup
from .parsing import (
    DATA,
    DATA_ROOT,
    EP_THETA,
    MODEL,
    QUIET,
    SAMPLES_PER_CLASS,
    SEED,
    THETA,
    THREADS,
    WEIGHTS,
    parse_class_sets,
    parse_classes,
    parse_floats,
    parse_methods,
    parse_range,
)

prune_app = typer.Typer(
    help="Class-targeted pruning with NNSlicer slices (and the paper's baselines).",
    no_args_is_help=True,
)


def load_experiment(model: str, weights: str | None, data: str, data_root: str | None,
                    threads: int | None) -> tuple[torch.nn.Module, dict[str, Any], Any, Any]:
    """The model (and its checkpoint meta), and the train and test splits of ``data``."""
    setup(threads)
    net, meta = open_model(model, weights)
    train = open_data(data, "train", data_root)
    test = open_data(data, "test", data_root)
    return net, meta, train, test


def save_model(out: Path, stem: str, model: torch.nn.Module, meta: dict[str, Any],
               extra: dict[str, Any]) -> list[Path]:
    """A zoo checkpoint when the model came from one, else a bare safetensors state dict;
    returns the files written, the weights first."""
    if meta.get("arch"):
        clean = {k: v for k, v in meta.items() if k not in ("format", "format_version")}
        return list(save_checkpoint(out / stem, model, {**clean, **extra}))
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return [atomic_write_bytes(out / f"{stem}.safetensors", safetensors.torch.save(tensors))]


def accuracy_line(acc: dict[str, float]) -> str:
    return (f"target {acc['target']:.3f} · other {acc['other']:.3f} · all {acc['all']:.3f} "
            f"· target (argmax over targets only) {acc['target_restricted']:.3f}")


def say_written(quiet: bool, paths: Iterable[Path]) -> None:
    for path in paths:
        say(quiet, f"wrote {path}")


def say_evaluation(quiet: bool, result: Evaluation, x: str) -> None:
    """An evaluation's mean accuracies per method along ``x``, its class sets and files."""
    if not quiet:
        summary_table(result.summary, x)
    say(quiet, f"class sets: {result.class_sets}; {result.seconds:.0f} s")
    say_written(quiet, result.files.values())


# ------------------------------------------------------------------------------ prune run


@prune_app.command("run")
@one_line_errors
def prune_run(
    model: str = MODEL,
    weights: str | None = WEIGHTS,
    data: str = DATA,
    data_root: str | None = DATA_ROOT,
    classes: str = typer.Option(..., "--classes", help="target classes, e.g. 0,1,2"),
    ratio: float = typer.Option(0.5, "--ratio", help="fraction of each layer's synapses removed"),
    method: str = typer.Option("nnslicer", "--method", help=", ".join(PRUNE_METHODS)),
    compensate: bool = typer.Option(False, "--compensate/--no-compensate",
                                    help="fold removed inputs' mean contribution into biases"),
    keep_classifier: bool = typer.Option(False, "--keep-classifier",
                                         help="do not prune the last (classifier) layer"),
    samples_per_class: int | None = SAMPLES_PER_CLASS,
    theta: float = THETA,
    ep_theta: float = EP_THETA,
    finetune_samples: int = typer.Option(0, "--finetune-samples",
                                         help="masked fine-tune on N target-class samples"),
    finetune_epochs: int = typer.Option(1, "--finetune-epochs"),
    export: bool = typer.Option(False, "--export/--no-export",
                                help="also write a physically smaller model"),
    latency_runs: int = typer.Option(20, "--latency-runs",
                                     help="timed runs per batch size for the export latency"),
    out: Path = typer.Option(Path("prune-out"), "--out", help="output directory"),
    seed: int = SEED,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
) -> None:
    """Prune a model for a set of target classes and report its accuracy."""
    start = time.perf_counter()
    net, meta, train, test = load_experiment(model, weights, data, data_root, threads)
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
    written = {"model": save_model(out, "pruned", pruned, meta, {
        "test_accuracy": (result.get("accuracy_finetuned") or after)["all"],
        "pruning": report.to_dict()})}
    if export:
        small, ex = export_pruned(pruned, test.x[:64], latency_runs=latency_runs)
        result["export"] = ex.to_dict()
        if meta.get("arch"):
            written["exported"] = list(save_exported(out / "exported", small, {
                "arch": meta["arch"], "arch_kwargs": meta["arch_kwargs"],
                "dataset": meta.get("dataset"), "pruning": report.to_dict()}))
    result["seconds"] = time.perf_counter() - start
    result["files"] = {k: str(v[0]) for k, v in written.items()}
    written["report"] = [write_json(out / "prune_report.json", result)]
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
    say(quiet, f"original: {accuracy_line(before)}")
    say(quiet, f"pruned:   {accuracy_line(after)}")
    if "accuracy_finetuned" in result:
        say(quiet, f"fine-tuned: {accuracy_line(result['accuracy_finetuned'])}")
    if "export" in result:
        ex = result["export"]
        lat = ex["latency_ms"].get("64") or next(iter(ex["latency_ms"].values()))
        say(quiet, f"exported: {ex['parameters_original']} -> {ex['parameters_exported']} "
                   f"parameters, latency {lat['original']:.2f} -> {lat['exported']:.2f} ms "
                   f"(max output difference {ex['max_abs_difference']:.2g})")
    say_written(quiet, (path for paths in written.values() for path in paths))


# ------------------------------------------------------------------------- prune evaluate


@prune_app.command("evaluate")
@one_line_errors
def prune_evaluate(
    model: str = MODEL,
    weights: str | None = WEIGHTS,
    data: str = DATA,
    data_root: str | None = DATA_ROOT,
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
    samples_per_class: int | None = SAMPLES_PER_CLASS,
    theta: float = THETA,
    ep_theta: float = EP_THETA,
    out: Path = typer.Option(Path("prune-eval"), "--out"),
    seed: int = SEED,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
) -> None:
    """Accuracy of every method vs prune ratio (paper Fig. 4/5): CSV, JSON and PNGs."""
    comp = {"off": (False,), "on": (True,), "both": (False, True)}.get(compensation)
    if comp is None:
        raise InputError(f"--compensation must be off, on or both, got {compensation!r}")
    net, _, train, test = load_experiment(model, weights, data, data_root, threads)
    result = evaluate_pruning(
        net, train, test, out, class_sets=parse_class_sets(classes, train.classes),
        subsets=subsets, subset_sizes=parse_range(subset_sizes, "--subset-sizes"),
        ratios=parse_floats(ratios, "--ratios"),
        methods=parse_methods(methods, PRUNE_METHODS), compensate=comp,
        finetune_samples=finetune_samples, finetune_epochs=finetune_epochs,
        samples_per_class=samples_per_class, theta=theta, ep_theta=ep_theta,
        prune_classifier=not keep_classifier, seed=seed, progress=not quiet,
    )
    say_evaluation(quiet, result, "ratio")


def summary_table(summary: list[dict[str, Any]], x: str) -> None:
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
