"""``nnslicer protect ...``: selective model protection and its evaluation.

The main CLI loads ``protect_app`` when ``nnslicer protect`` runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import typer

from ..apps.figures import write_json
from ..apps.importance import class_accuracies
from ..apps.protect.evaluate import DEFAULT_BUDGETS, evaluate_protection
from ..apps.protect.protection import PROTECT_METHODS, protect, simulate_attack
from ..errors import InputError
from ..io_utils import atomic_write_bytes
from .common import DATA_ROOT, QUIET, one_line_errors, say
from .parsing import (
    DATA,
    EP_THETA,
    MODEL,
    SAMPLES_PER_CLASS,
    SEED,
    THETA,
    THREADS,
    WEIGHTS,
    parse_class_sets,
    parse_classes,
    parse_ints,
    parse_methods,
    parse_range,
)
from .prune import accuracy_line, load_experiment, save_model, say_evaluation, say_written

protect_app = typer.Typer(
    help="Selective model protection: hide the synapses that matter most for some classes.",
    no_args_is_help=True,
)


@protect_app.command("run")
@one_line_errors
def protect_run(
    model: str = MODEL,
    weights: str | None = WEIGHTS,
    data: str = DATA,
    data_root: str | None = DATA_ROOT,
    classes: str = typer.Option(..., "--classes", help="classes to protect, e.g. 0,1"),
    ratio: float = typer.Option(0.1, "--ratio", help="fraction of each layer's synapses hidden"),
    method: str = typer.Option("nnslicer", "--method", help=", ".join(PROTECT_METHODS)),
    samples_per_class: int | None = SAMPLES_PER_CLASS,
    theta: float = THETA,
    ep_theta: float = EP_THETA,
    budget: int = typer.Option(500, "--budget", help="attacker's labelled samples (-1: no "
                               "attack simulation)"),
    epochs: int = typer.Option(5, "--epochs", help="attacker's retraining epochs"),
    out: Path = typer.Option(Path("protect-out"), "--out"),
    seed: int = SEED,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
) -> None:
    """Hide the most important synapses; write the exposed model and the hidden part."""
    if budget < -1:
        raise InputError(f"--budget must be >= 0 samples, or -1 for no attack simulation; "
                         f"got {budget}")
    start = time.perf_counter()
    net, meta, train, test = load_experiment(model, weights, data, data_root, threads)
    targets = parse_classes(classes, train.classes)
    exposed, report = protect(net, None, targets, ratio, method, data=train,
                              samples_per_class=samples_per_class, theta=theta,
                              ep_theta=ep_theta, seed=seed, progress=not quiet)
    params = dict(net.named_parameters())
    secret = {}
    for name, mask in report.hidden.items():
        secret[f"mask/{name}"] = mask.to(torch.uint8)
        secret[f"value/{name}"] = params[name].detach().cpu() * mask
    written = {
        "exposed": save_model(out, "exposed", exposed, meta, {
            "test_accuracy": class_accuracies(exposed, test, targets)["all"],
            "protection": report.to_dict()}),
        "hidden": [atomic_write_bytes(out / "hidden.safetensors",
                                      safetensors.torch.save(secret))],
    }
    result: dict[str, Any] = {"model": model, "data": data, "protection": report.to_dict(),
                              "accuracy_original": class_accuracies(net, test, targets)}
    if budget >= 0:
        recovered = simulate_attack(exposed, report.hidden, train, budget=budget, epochs=epochs,
                                    seed=seed, progress=not quiet)
        result["attack"] = {"budget": budget, "epochs": epochs,
                            "accuracy": class_accuracies(recovered, test, targets)}
    result["seconds"] = time.perf_counter() - start
    result["files"] = {k: str(v[0]) for k, v in written.items()}
    written["report"] = [write_json(out / "protect_report.json", result)]
    say(quiet, f"hid {report.hidden_count} of {report.synapses} synapses ({method}, classes "
               f"{targets})")
    say(quiet, f"original:  {accuracy_line(result['accuracy_original'])}")
    if "attack" in result:
        say(quiet, f"recovered ({budget} samples, {epochs} epochs): "
                   f"{accuracy_line(result['attack']['accuracy'])}")
    say_written(quiet, (path for paths in written.values() for path in paths))


@protect_app.command("evaluate")
@one_line_errors
def protect_evaluate(
    model: str = MODEL,
    weights: str | None = WEIGHTS,
    data: str = DATA,
    data_root: str | None = DATA_ROOT,
    classes: str | None = typer.Option(None, "--classes", help="class sets '0,1;2,3'"),
    subsets: int = typer.Option(2, "--subsets"),
    subset_sizes: str = typer.Option("2-5", "--subset-sizes"),
    ratio: float = typer.Option(0.1, "--ratio"),
    budgets: str = typer.Option(",".join(str(b) for b in DEFAULT_BUDGETS), "--budgets"),
    epochs: int = typer.Option(5, "--epochs"),
    methods: str = typer.Option("all", "--methods", help="comma list or 'all': "
                                + ", ".join(PROTECT_METHODS)),
    all_hidden: bool = typer.Option(True, "--all-hidden/--no-all-hidden",
                                    help="include the everything-hidden reference"),
    samples_per_class: int | None = SAMPLES_PER_CLASS,
    theta: float = THETA,
    ep_theta: float = EP_THETA,
    out: Path = typer.Option(Path("protect-eval"), "--out"),
    seed: int = SEED,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
) -> None:
    """Recovered accuracy vs attacker budget per method (paper Fig. 6): CSV, JSON, PNG."""
    net, _, train, test = load_experiment(model, weights, data, data_root, threads)
    result = evaluate_protection(
        net, train, test, out, class_sets=parse_class_sets(classes, train.classes),
        subsets=subsets, subset_sizes=parse_range(subset_sizes, "--subset-sizes"), ratio=ratio,
        budgets=parse_ints(budgets, "--budgets"), epochs=epochs,
        methods=parse_methods(methods, PROTECT_METHODS), all_hidden=all_hidden,
        samples_per_class=samples_per_class, theta=theta, ep_theta=ep_theta, seed=seed,
        progress=not quiet,
    )
    say_evaluation(quiet, result, "budget")
