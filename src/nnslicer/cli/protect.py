"""``nnslicer protect ...``: selective model protection and its evaluation.

The main CLI loads ``protect_app`` when ``nnslicer protect`` runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from ..apps.figures import write_json
from ..apps.importance import class_accuracies
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
from ..errors import InputError
from .common import console, one_line_errors, say
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
    parse_ints,
    parse_methods,
    parse_range,
)
from .prune import accuracy_line, load_experiment, save_model, say_written

protect_app = typer.Typer(
    help="Selective model protection: hide the synapses that matter most for some classes.",
    no_args_is_help=True,
)


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
    attacker: str = typer.Option("all", "--attacker", help="; ".join(
        f"{k}: {v}" for k, v in ATTACKERS.items())),
    epochs: int = typer.Option(5, "--epochs", help="attacker's retraining epochs"),
    out: Path = typer.Option(Path("protect-out"), "--out"),
    seed: int = SEED,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
) -> None:
    """Hide the most important synapses; write the exposed model and the hidden part
    (hidden.safetensors: the hidden values and bit-packed masks)."""
    attacker = check_attacker(attacker)
    if budget < -1:
        raise InputError(f"--budget must be >= 0 samples, or -1 for no attack simulation; "
                         f"got {budget}")
    start = time.perf_counter()
    net, meta, train, test = load_experiment(model, weights, data, data_root, threads)
    targets = parse_classes(classes, train.classes)
    exposed, report = protect(net, None, targets, ratio, method, data=train,
                              samples_per_class=samples_per_class, theta=theta,
                              ep_theta=ep_theta, seed=seed, progress=not quiet)
    written = {
        "exposed": save_model(out, "exposed", exposed, meta, {
            "test_accuracy": class_accuracies(exposed, test, targets)["all"],
            "protection": report.to_dict()}),
        "hidden": [save_hidden(out / "hidden.safetensors", net, report.hidden)],
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
    result["files"] = {k: str(v[0]) for k, v in written.items()}
    written["report"] = [write_json(out / "protect_report.json", result)]
    say(quiet, f"hid {report.hidden_count} of {report.synapses} synapses ({method}, classes "
               f"{targets}): {cost['hidden_fraction_of_parameters']:.1%} of the parameters, "
               f"secret {cost['secret_bytes']} of {cost['model_bytes']} model bytes "
               f"({cost['secret_fraction_of_model_bytes']:.1%})")
    say(quiet, f"original:  {accuracy_line(result['accuracy_original'])}")
    say(quiet, f"exposed:   {accuracy_line(result['accuracy_exposed'])}")
    if "attack" in result:
        say(quiet, f"recovered ({attacker} attacker, {budget} samples, {epochs} epochs): "
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
    samples_per_class: int | None = SAMPLES_PER_CLASS,
    theta: float = THETA,
    ep_theta: float = EP_THETA,
    lr: float = typer.Option(1e-3, "--lr", help="attacker's Adam learning rate"),
    batch_size: int = typer.Option(32, "--batch-size", help="attacker's batch size"),
    recovered_at: float = typer.Option(0.9, "--recovered-at", help="recovered = target "
                                       "accuracy >= this x the original's"),
    restart: bool = typer.Option(False, "--restart", help="discard the finished attacks in "
                                 "--out instead of resuming"),
    out: Path = typer.Option(Path("protect-eval"), "--out"),
    seed: int = SEED,
    quiet: bool = QUIET,
    threads: int | None = THREADS,
) -> None:
    """Recovered accuracy vs attacker budget per method, ratio and attacker (paper Fig. 6):
    CSV, JSON, PNG. Resumes from --out."""
    net, _, train, test = load_experiment(model, weights, data, data_root, threads)
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
    say_written(quiet, result.files.values())
