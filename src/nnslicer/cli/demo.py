"""`nnslicer demo`: the main job on the embedded MNIST digits, end to end."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..data.datasets import DEFAULT_DATASET, load_dataset
from ..models.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from ..models.zoo import build_model
from ..profile.profile import Profile
from ..results.slice import Slice
from ..slicer import Slicer
from ..training import evaluate_accuracy, train_model
from ..viz.slices import plot_slices
from .common import console, say

DEMO_CLASSES = (1, 7)
SAMPLES_PER_CLASS = 10


def _model(out: Path, epochs: int, quiet: bool) -> tuple[torch.nn.Module, float]:
    """Train LeNet-5, or reuse the checkpoint of an earlier demo run with the same settings."""
    ckpt = out / "lenet5"
    try:
        meta = read_checkpoint_meta(ckpt)
        if meta.get("epochs") == epochs and meta.get("dataset") == DEFAULT_DATASET:
            model, meta = load_checkpoint(ckpt)
            say(quiet, f"reusing {ckpt}.safetensors (test accuracy {meta['test_accuracy']:.2%})")
            return model, meta["test_accuracy"]
    except (ValueError, FileNotFoundError):
        pass
    train_set = load_dataset(DEFAULT_DATASET, "train")
    test_set = load_dataset(DEFAULT_DATASET, "test")
    kwargs = {"in_channels": 1, "num_classes": 10, "width": 64, "input_size": 28}
    torch.manual_seed(0)
    model = build_model("lenet5", **kwargs)
    say(quiet, f"training LeNet-5 on {len(train_set)} real MNIST digits ({epochs} epochs)")
    report = train_model(model, train_set, test_set, epochs=epochs, lr=2e-3, batch_size=64,
                         seed=0, progress=not quiet)
    save_checkpoint(ckpt, model, {"arch": "lenet5", "arch_kwargs": kwargs,
                                  "dataset": DEFAULT_DATASET, "epochs": epochs,
                                  "test_accuracy": report.test_accuracy})
    return model, report.test_accuracy


def run_demo(out: Path, *, epochs: int = 8, quiet: bool = False) -> dict[str, Slice]:
    """Train, profile, slice two classes and their union, print tables, draw the figure."""
    from .common import layer_table

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model, accuracy = _model(out, epochs, quiet)
    test_set = load_dataset(DEFAULT_DATASET, "test")
    say(quiet, f"LeNet-5 test accuracy on {len(test_set)} held-out digits: "
               f"{evaluate_accuracy(model, test_set):.2%}")

    slicer = Slicer(model, theta=0.2, progress=not quiet)
    profile_path = out / "lenet5.profile.safetensors"
    if profile_path.is_file():
        slicer.use_profile(Profile.load(profile_path))
    else:
        train_set = load_dataset(DEFAULT_DATASET, "train")
        slicer.profile(list(train_set.batches(256))).save(profile_path)
    say(quiet, f"profile: {profile_path}")

    slices: dict[str, Slice] = {}
    for k in DEMO_CLASSES:
        digits = test_set.filter_classes([k]).subset(range(SAMPLES_PER_CLASS))
        s = slicer.slice(digits.x)  # criterion: the model's own top-1 class
        s.save(out / f"slice_digit{k}.safetensors")
        slices[f"digit {k}"] = s
    a, b = (slices[f"digit {k}"] for k in DEMO_CLASSES)
    union = a + b
    union.save(out / "slice_union.safetensors")
    slices["union"] = union
    if not quiet:
        for name, s in slices.items():
            console.print(layer_table(s, f"slice of {name} ({s.num_samples} test images, θ=0.2)"))
        _print_overlap(a, b)
    figure = plot_slices(slices, out / "slices.png",
                         title=f"LeNet-5 slices, digits {DEMO_CLASSES[0]} and {DEMO_CLASSES[1]}")
    say(quiet, f"figure: {figure}")
    _detection(model, out, quiet)
    _pruning(model, slicer, out, quiet)
    say(quiet, f"demo finished in {time.perf_counter() - start:.0f} s (test accuracy "
               f"{accuracy:.2%})")
    return slices


def _detection(model: torch.nn.Module, out: Path, quiet: bool) -> None:
    """A short Table 3: two fast attacks on 30 test digits, detectors fitted on 600 digits."""
    from ..apps.detect.evaluate import evaluate_detection

    say(quiet, "adversarial detection: fgsm-8 and deepfool-linf on 30 test digits")
    train = load_dataset(DEFAULT_DATASET, "train", limit=600)
    test = load_dataset(DEFAULT_DATASET, "test")
    report = evaluate_detection(model, train, test, attacks=["fgsm-8", "deepfool-linf"],
                                n_test=30, cache_dir=out / "attack-cache", progress=not quiet)
    report.write(out / "detect")
    if not quiet:
        console.print(report.markdown())


def _pruning(model: torch.nn.Module, slicer: Slicer, out: Path, quiet: bool) -> None:
    """Prune 80 % of every layer for the demo's two digits, by slice and by weight magnitude."""
    from ..apps.prune.evaluate import class_accuracies
    from ..apps.prune.pruning import prune

    train = load_dataset(DEFAULT_DATASET, "train").filter_classes(DEMO_CLASSES)
    test = load_dataset(DEFAULT_DATASET, "test")
    for method in ("nnslicer", "weight"):
        pruned, _ = prune(model, slicer if method == "nnslicer" else None, DEMO_CLASSES, 0.8,
                          method, data=train, samples_per_class=100)
        acc = class_accuracies(pruned, test, DEMO_CLASSES)
        say(quiet, f"pruned 80 % of each layer by {method}: accuracy on digits "
                   f"{DEMO_CLASSES} {acc['target']:.1%}, on the other digits {acc['other']:.1%}")


def _print_overlap(a: Slice, b: Slice) -> None:
    """How much the two classes' synapse slices share (the paper's point: they differ)."""
    for name in a.synapses:
        in_a, in_b = a.synapses[name] != 0, b.synapses[name] != 0
        union = int((in_a | in_b).sum())
        shared = int((in_a & in_b).sum())
        frac = shared / union if union else 0.0
        console.print(f"{name}: {int(in_a.sum())} and {int(in_b.sum())} synapses, "
                      f"{shared} shared ({frac:.0%} of their union)")
