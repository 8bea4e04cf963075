"""`nnslicer` command line: train, profile, slice, show, demo (and the apps' sub-commands).

Every heavy import (torch, the slicer, the applications) happens inside the command that needs
it, and the ``detect``/``prune``/``protect`` groups are loaded when one of them is run, so
``nnslicer --help`` does not wait for torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from ..errors import InputError
from .common import (
    check_model_takes,
    check_out,
    check_out_dir,
    get_console,
    layer_table,
    one_line_errors,
    open_data,
    open_model,
    plural,
    say,
)
from .parsing import DATA_ROOT, DEFAULT_DATASET, QUIET, parse_int_list, parse_neuron, parse_target

# name -> (modules to look in, in order; attribute; one-line help shown by `nnslicer --help`)
LAZY_GROUPS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "detect": (("nnslicer.cli.detect",), "detect_app",
               "Adversarial-input detection with slices."),
    "prune": (("nnslicer.cli.prune",), "prune_app", "Class-targeted pruning with slices."),
    "protect": (("nnslicer.cli.protect",), "protect_app",
                "Selective model protection with slices."),
}


def load_group(name: str) -> typer.Typer:
    """The typer app of a lazily mounted group."""
    modules, attr, _ = LAZY_GROUPS[name]
    for module in modules:
        if importlib.util.find_spec(module) is not None:
            found = getattr(importlib.import_module(module), attr, None)
            if found is not None:
                return found
    raise ImportError(f"no {attr} in {' or '.join(modules)}")


def plain_help(command: Any) -> Any:
    """Help and usage errors as plain click text (no boxes, no bare <bool> type markers), for a
    command and everything under it."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None  # type: ignore[attr-defined]
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)
    return command


class LazyGroup(TyperGroup):
    """The top-level group: the applications' sub-groups are imported on first use."""

    _help_only = False

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return names + [n for n in LAZY_GROUPS if n not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_GROUPS and cmd_name not in self.commands:
            short = LAZY_GROUPS[cmd_name][2]
            if self._help_only:  # listing the commands: no need to import them
                return TyperGroup(name=cmd_name, help=short)
            sub = typer.main.get_command(load_group(cmd_name))
            sub.name = cmd_name
            sub.short_help = short
            # shell completion is installed from the top-level command only
            sub.params = [p for p in sub.params
                          if p.name not in ("install_completion", "show_completion")]
            self.commands[cmd_name] = plain_help(sub)
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._help_only = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._help_only = False


app = typer.Typer(
    cls=LazyGroup,
    help="Dynamic slicing of deep neural networks (NNSlicer): profile a model, slice it for "
    "inputs, and use slices to detect adversarial inputs, prune and protect models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.command()
@one_line_errors
def train(
    arch: str = typer.Option("lenet5", help="lenet5 | resnet10 | resnet18 (and the other zoo "
                             "models of nnslicer.models.zoo)"),
    data: str = typer.Option(DEFAULT_DATASET, help="Dataset name."),
    data_root: str = DATA_ROOT,
    out: Path = typer.Option(Path("runs/model"), help="Checkpoint path (stem)."),
    epochs: int = typer.Option(8, min=1),
    lr: float = typer.Option(2e-3, help="Adam learning rate (> 0)."),
    batch_size: int = typer.Option(64, min=1),
    width: int = typer.Option(64, min=1, help="ResNet base width."),
    seed: int = typer.Option(0, min=0, max=2**63 - 1),
    quiet: bool = QUIET,
) -> None:
    """Train a zoo model and save it as safetensors + JSON (with its test accuracy)."""
    from ..models.zoo import ARCHITECTURES

    if arch not in ARCHITECTURES:
        raise InputError(f"unknown --arch {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"--lr must be a positive number, got {lr}")
    check_out(out, "--out")
    import torch

    from ..models.checkpoint import save_checkpoint
    from ..models.zoo import build_model
    from ..training import train_model

    train_set = open_data(data, "train", data_root)
    test_set = open_data(data, "test", data_root)
    kwargs = {"in_channels": train_set.in_channels, "num_classes": train_set.num_classes,
              "width": width, "input_size": train_set.input_size}
    torch.manual_seed(seed)
    model = build_model(arch, **kwargs)
    report = train_model(model, train_set, test_set, epochs=epochs, lr=lr,
                         batch_size=batch_size, seed=seed, progress=not quiet)
    paths = save_checkpoint(out, model, {
        "arch": arch, "arch_kwargs": kwargs, "dataset": data,
        "test_accuracy": report.test_accuracy, "epochs": epochs, "lr": lr, "seed": seed,
    })
    say(quiet, f"test accuracy {report.test_accuracy:.2%} after {plural(epochs, 'epoch')} "
               f"({report.seconds:.0f} s); wrote {paths[0]} and {paths[1]}")


@app.command()
@one_line_errors
def profile(
    model: str = typer.Option(..., help="Checkpoint path or package.module:factory."),
    weights: str = typer.Option(None, help="Weights for a package.module:factory model."),
    data: str = typer.Option(DEFAULT_DATASET),
    data_root: str = DATA_ROOT,
    split: str = typer.Option("train"),
    limit: int = typer.Option(None, min=1, help="Use the first N samples only."),
    batch_size: int = typer.Option(128, min=1),
    out: Path = typer.Option(Path("runs/profile.safetensors")),
    ray: str = typer.Option(None, "--ray", help="Profile on a Ray cluster ('local' or ADDRESS)."),
    quiet: bool = QUIET,
) -> None:
    """Profile a model on a dataset (docs/spec.md §2) and save the profile."""
    from ..slicer import Slicer

    check_out(out)
    net, _ = open_model(model, weights)
    dataset = open_data(data, split, data_root, limit)
    check_model_takes(net, dataset, f"{data}/{split}")
    slicer = Slicer(net, progress=not quiet, executor=ray)
    prof = slicer.profile(list(dataset.batches(batch_size)))
    prof.save(out)
    say(quiet, f"profiled {prof.count} samples of {data}/{split}; wrote {out}")


@app.command("slice")
@one_line_errors
def slice_cmd(
    model: str = typer.Option(..., help="Checkpoint path or package.module:factory."),
    profile_path: Path = typer.Option(..., "--profile", help="Profile file of this model."),
    weights: str = typer.Option(None),
    data: str = typer.Option(DEFAULT_DATASET),
    data_root: str = DATA_ROOT,
    split: str = typer.Option("test"),
    classes: str = typer.Option(None, help="Only samples with these labels, e.g. 0,1."),
    indices: str = typer.Option(None, help="Only these sample indices, e.g. 0,5,9."),
    limit: int = typer.Option(16, min=1, help="At most this many samples."),
    target: str = typer.Option("top1", help="top1 | label | a class index."),
    neuron: str = typer.Option(None, help="Slice for an intermediate neuron instead: NODE:C "
                               "(channel C of a node or module, e.g. layer3.1.conv2:5) or "
                               "NODE:i,j,k (one point). `nnslicer nodes` lists the nodes."),
    theta: float = typer.Option(0.2, min=0.0, max=0.999),
    reference: str = typer.Option("dataset", help="dataset | class"),
    per_sample: bool = typer.Option(False, help="Keep one slice per sample."),
    out: Path = typer.Option(Path("runs/slice.safetensors")),
    ray: str = typer.Option(None, "--ray", help="Slice on a Ray cluster ('local' or ADDRESS)."),
    quiet: bool = QUIET,
) -> None:
    """Slice a model for some samples; print the per-layer table and save the slice."""
    from ..slicer import REFERENCES, Slicer

    if reference not in REFERENCES:
        raise InputError(f"--reference takes {' or '.join(REFERENCES)}, got {reference!r}")
    goal = parse_target(target)
    wanted = parse_int_list(indices, "--indices")
    wanted_classes = parse_int_list(classes, "--classes")
    criterion = parse_neuron(neuron) if neuron is not None else None
    check_out(out)
    net, _ = open_model(model, weights)
    dataset = open_data(data, split, data_root)
    if wanted is not None:
        n = len(dataset)
        bad = [i for i in wanted if not -n <= i < n]
        if bad:
            raise InputError(f"--indices {bad[0]} is out of range: {data}/{split} has {n} "
                             f"samples (indices 0..{n - 1})")
        dataset = dataset.subset(wanted)
    if wanted_classes is not None:
        dataset = dataset.filter_classes(wanted_classes)
    dataset = dataset.subset(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise InputError("no samples left after --classes/--indices; choose other samples")
    check_model_takes(net, dataset, f"{data}/{split}")
    slicer = Slicer(net, theta=theta, progress=not quiet, executor=ray)
    slicer.use_profile(profile_path)
    tgt: Any
    if criterion is not None:
        tgt = criterion
    elif goal == "top1":
        tgt = None
    elif goal == "label":
        tgt = dataset.y
    else:
        tgt = goal
    s = slicer.slice(dataset.x, target=tgt, reference=reference, per_sample=per_sample)
    s.meta["samples"] = {"data": data, "split": split, "count": len(dataset)}
    s.save(out)
    if not quiet:
        get_console().print(layer_table(s, f"slice of {plural(len(dataset), 'sample')} "
                                           f"(θ={theta})"))
    say(quiet, f"wrote {out}")


@app.command()
@one_line_errors
def nodes(
    model: str = typer.Option(..., help="Checkpoint path or package.module:factory."),
    weights: str = typer.Option(None),
    data: str = typer.Option(DEFAULT_DATASET, help="Dataset whose first sample sets shapes."),
    data_root: str = DATA_ROOT,
) -> None:
    """List the model's nodes (names for --neuron), their modules, operators and shapes."""
    from rich.table import Table

    from ..slicer import Slicer

    net, _ = open_model(model, weights)
    sample = open_data(data, "test", data_root, limit=1)
    check_model_takes(net, sample, data)
    slicer = Slicer(net)
    slicer.ready(sample.x)
    table = Table(title=f"nodes of {type(net).__name__}", title_justify="left", box=None,
                  pad_edge=False, header_style="bold")
    for col in ("node", "module", "operator", "shape"):
        table.add_column(col, overflow="fold")
    for row in slicer.nodes():
        table.add_row(row["node"], row["module"] or "", row["operator"],
                      "×".join(map(str, row["shape"] or ())))
    get_console().print(table)


def slice_labels(paths: list[Path]) -> list[str]:
    """Names for slices drawn side by side: file stems, with parent folders where two stems
    are the same."""
    labels = [p.stem for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{p.parent.name}/{p.stem}" if labels.count(p.stem) > 1 else p.stem
                  for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({i + 1})" for i, label in enumerate(labels)]
    return labels


@app.command()
@one_line_errors
def show(
    slices: list[Path] = typer.Argument(..., help="Slice files, drawn side by side."),
    out: Path = typer.Option(Path("runs/slice.png"), help="Figure file (.png, .pdf, .svg)."),
    title: str = typer.Option(None),
    quiet: bool = QUIET,
) -> None:
    """Draw slices side by side: one panel per layer, one cell per channel or unit, blue =
    pushed the decision up, red = pushed it down, white = not in the slice."""
    from ..results.slice import Slice
    from ..viz.slices import check_figure_path, plot_slices

    check_out(out)
    check_figure_path(out)
    loaded = {label: Slice.load(p) for label, p in zip(slice_labels(slices), slices,
                                                        strict=True)}
    plot_slices(loaded, out, title=title)
    say(quiet, f"wrote {out}")


@app.command()
@one_line_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where models, profiles and figures go."),
    epochs: int = typer.Option(8, min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="Only the final result line (no progress bars or tables)."),
) -> None:
    """Train LeNet-5 on the embedded MNIST digits, profile, slice two classes and their union,
    detect adversarial digits and prune for two classes."""
    from .demo import run_demo

    check_out_dir(out)
    run_demo(out, epochs=epochs, quiet=quiet)


def main() -> None:  # pragma: no cover - console entry
    app()
