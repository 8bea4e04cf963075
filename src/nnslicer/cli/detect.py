"""``nnslicer detect ...``: fit slice-based adversarial input detectors and evaluate them.

Mounted by the main CLI as ``app.add_typer(detect_app, name="detect")``.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..data.datasets import DEFAULT_DATASET
from ..errors import InputError
from .common import console, one_line_errors, open_data, open_model, say, setup

detect_app = typer.Typer(
    help="Adversarial input detection with slices (NNSlicer §6.1) and its baselines.",
    no_args_is_help=True,
)

QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or tables.")
DATA_ROOT = typer.Option(None, "--data-root", help="Directory holding the dataset files.")
MODEL = typer.Option(..., "--model", help="Checkpoint path or package.module:factory.")
WEIGHTS = typer.Option(None, "--weights", help="Weights for a package.module:factory model.")
LAYERS = typer.Option(
    "last", "--layers",
    help="last (the last conv stage) | all | comma-separated layer names (e.g. layer4).",
)
THETA = typer.Option(None, "--theta", min=0.0, max=0.999,
                     help="θ of NNSlicer (default 0.2); for --method effective-path its θ (0.5).")
THREADS = typer.Option(None, "--threads", min=1, help="torch threads.")


def parse_layers(text: str) -> str | list[str]:
    if text in ("last", "all"):
        return text
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InputError("--layers is empty; give last, all or layer names")
    return items


@detect_app.command("fit")
@one_line_errors
def fit_cmd(
    model: str = MODEL,
    weights: str = WEIGHTS,
    data: str = typer.Option(DEFAULT_DATASET, "--data", help="Dataset name."),
    data_root: str = DATA_ROOT,
    limit: int = typer.Option(None, "--limit", min=1, help="Fit on the first N training inputs."),
    layers: str = LAYERS,
    theta: float = THETA,
    method: str = typer.Option("nnslicer", "--method",
                               help="nnslicer | effective-path | feature-map"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Inputs sliced at once."),
    out: Path = typer.Option(..., "--out", help="Directory to save the detector in."),
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Fit a detector on normal training inputs and save it (JSON + safetensors + skops)."""
    from ..apps.detect.detector import make_detector
    from ..apps.detect.evaluate import check_bounds

    setup(threads)
    net, _ = open_model(model, weights)
    train = open_data(data, "train", data_root, limit)
    check_bounds(train.x, (0.0, 1.0), "the training inputs")
    options = {"layers": parse_layers(layers), "batch_size": batch_size, "progress": not quiet}
    if theta is not None:
        if method == "feature-map":
            raise InputError("--theta has no meaning for --method feature-map")
        options["theta"] = theta
    det = make_detector(method, net, **options)
    start = time.perf_counter()
    det.fit(train.x, train.y)
    det.save(out)
    info = det.fit_info
    layer_names = ", ".join(layer.module_path for layer in det.extractor.layers or [])
    say(quiet, f"fitted a {method} detector on {info['used']} of {info['samples']} {data} "
               f"training inputs ({det.extractor.num_features} features of {layer_names}) in "
               f"{time.perf_counter() - start:.0f} s; wrote {out}")


@detect_app.command("evaluate")
@one_line_errors
def evaluate_cmd(
    model: str = MODEL,
    weights: str = WEIGHTS,
    data: str = typer.Option(DEFAULT_DATASET, "--data", help="Dataset name."),
    data_root: str = DATA_ROOT,
    attacks: str = typer.Option("fast", "--attacks",
                                help="Comma-separated attack names, or fast, or all."),
    n_test: int = typer.Option(100, "--n-test", min=1,
                               help="Correctly classified test inputs to attack."),
    methods: str = typer.Option("nnslicer,effective-path,feature-map", "--methods",
                                help="Comma-separated: nnslicer, effective-path, feature-map."),
    limit: int = typer.Option(None, "--limit", min=1,
                              help="Fit the detectors on the first N training inputs."),
    layers: str = LAYERS,
    theta: float = typer.Option(None, "--theta", min=0.0, max=0.999,
                                help="θ of NNSlicer (default 0.2)."),
    ep_theta: float = typer.Option(None, "--ep-theta", min=0.0, max=0.999,
                                   help="θ of EffectivePath (default 0.5)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Inputs sliced at once."),
    seed: int = typer.Option(0, "--seed", help="Choice of test inputs and attack randomness."),
    cache: Path = typer.Option(None, "--cache",
                               help="Attack cache directory (default OUT/attack-cache)."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Attack test inputs, detect them with each method; write Table 3 (md/csv/json) + figure.

    Fitted detectors (OUT/detectors) and attack results are kept and reused by later runs.
    """
    from ..apps.detect.evaluate import evaluate_detection, parse_attacks, parse_methods

    setup(threads)
    attack_names, method_names = parse_attacks(attacks), parse_methods(methods)
    net, meta = open_model(model, weights)
    train = open_data(data, "train", data_root, limit)
    test = open_data(data, "test", data_root)
    label = meta.get("arch") or meta.get("spec") or model
    report = evaluate_detection(
        net, train, test, attacks=attack_names, methods=method_names, n_test=n_test,
        cache_dir=cache or out / "attack-cache", detector_dir=out / "detectors",
        layers=parse_layers(layers), theta=theta, ep_theta=ep_theta, seed=seed,
        batch_size=batch_size, progress=not quiet, names={"model": label, "data": data},
    )
    paths = report.write(out)
    if not quiet:
        console.print(report.markdown(), markup=False, highlight=False)
    say(quiet, f"wrote {', '.join(str(p) for p in paths.values())}")
