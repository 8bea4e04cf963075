"""`nnslicer` command line: train, profile, slice, show, demo (and the apps' sub-commands)."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.table import Table

from ..data.datasets import DEFAULT_DATASET
from ..results.slice import Slice
from .common import (
    DATA_ROOT,
    QUIET,
    console,
    layer_table,
    one_line_errors,
    open_data,
    open_model,
    parse_int_list,
    parse_neuron,
    say,
)

app = typer.Typer(
    help="Dynamic slicing of deep neural networks (NNSlicer): profile a model, slice it for "
    "inputs, and use slices to detect adversarial inputs, prune and protect models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

@app.command()
@one_line_errors
def train(
    arch: str = typer.Option("lenet5", help="lenet5 | resnet10 | resnet18"),
    data: str = typer.Option(DEFAULT_DATASET, help="Dataset name."),
    data_root: str = DATA_ROOT,
    out: Path = typer.Option(Path("runs/model"), help="Checkpoint path (stem)."),
    epochs: int = typer.Option(8, min=1),
    lr: float = typer.Option(2e-3),
    batch_size: int = typer.Option(64, min=1),
    width: int = typer.Option(64, min=1, help="ResNet base width."),
    seed: int = typer.Option(0),
    quiet: bool = QUIET,
) -> None:
    """Train a zoo model and save it as safetensors + JSON (with its test accuracy)."""
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
    say(quiet, f"test accuracy {report.test_accuracy:.2%} after {epochs} epochs "
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

    net, _ = open_model(model, weights)
    dataset = open_data(data, split, data_root, limit)
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
    from ..criterion import Neurons
    from ..slicer import Slicer

    net, _ = open_model(model, weights)
    dataset = open_data(data, split, data_root)
    if indices is not None:
        dataset = dataset.subset(parse_int_list(indices))
    if classes is not None:
        dataset = dataset.filter_classes(parse_int_list(classes))
    dataset = dataset.subset(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError("no samples left after --classes/--indices; choose other samples")
    slicer = Slicer(net, theta=theta, progress=not quiet, executor=ray)
    slicer.use_profile(profile_path)
    tgt: int | torch.Tensor | Neurons | None
    if neuron is not None:
        tgt = parse_neuron(neuron)
    elif target == "top1":
        tgt = None
    elif target == "label":
        tgt = dataset.y
    else:
        tgt = int(target)
    s = slicer.slice(dataset.x, target=tgt, reference=reference, per_sample=per_sample)
    s.meta["samples"] = {"data": data, "split": split, "count": len(dataset)}
    s.save(out)
    if not quiet:
        console.print(layer_table(s, f"slice of {len(dataset)} samples (θ={theta})"))
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
    from ..slicer import Slicer

    net, _ = open_model(model, weights)
    slicer = Slicer(net)
    slicer.ready(open_data(data, "test", data_root, limit=1).x)
    table = Table(title=f"nodes of {type(net).__name__}", title_justify="left")
    for col in ("node", "module", "operator", "shape"):
        table.add_column(col)
    for row in slicer.nodes():
        table.add_row(row["node"], row["module"] or "", row["operator"],
                      "×".join(map(str, row["shape"] or ())))
    console.print(table)


@app.command()
@one_line_errors
def show(
    slices: list[Path] = typer.Argument(..., help="Slice files, drawn side by side."),
    out: Path = typer.Option(Path("runs/slice.png")),
    title: str = typer.Option(None),
    quiet: bool = QUIET,
) -> None:
    """Render slices as a PNG: conv channels as pixels, blue positive, red negative."""
    from ..viz.slices import plot_slices

    loaded = {p.stem: Slice.load(p) for p in slices}
    plot_slices(loaded, out, title=title)
    say(quiet, f"wrote {out}")


@app.command()
@one_line_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where models, profiles and figures go."),
    epochs: int = typer.Option(8, min=1),
    quiet: bool = QUIET,
) -> None:
    """Train LeNet-5 on the embedded MNIST digits, profile, slice two classes and their union."""
    from .demo import run_demo

    run_demo(out, epochs=epochs, quiet=quiet)


def main() -> None:  # pragma: no cover - console entry
    app()


def _mount_apps() -> None:
    """The applications' sub-commands (imported here so `nnslicer --help` stays complete)."""
    from .detect import detect_app
    from .prune import protect_app, prune_app

    app.add_typer(detect_app, name="detect", help="Adversarial-input detection with slices.")
    app.add_typer(prune_app, name="prune", help="Class-targeted pruning with slices.")
    app.add_typer(protect_app, name="protect", help="Selective model protection with slices.")


_mount_apps()
