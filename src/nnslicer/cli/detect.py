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
LAYERS_HELP = ("last (the last conv stage) | last-conv (its last conv, as the authors) | middle "
               "(the middle conv stage) | several (middle stage to the last hidden layer) | "
               "all | comma-separated layer names (e.g. layer4)")
THETA = typer.Option(None, "--theta", min=0.0, max=0.999,
                     help="θ of NNSlicer (default 0.2); for --method effective-path its θ (0.5).")
THREADS = typer.Option(None, "--threads", min=1, help="torch threads.")
REFERENCE = typer.Option(None, "--reference", help="NNSlicer reference: dataset | class.")
REPRESENTATION = typer.Option(
    None, "--features",
    help="signed (synapse contributions) | binary (synapse membership) | channels "
         "(neuron contributions per channel; for feature maps: channel means).")
CLASSIFIER = typer.Option(None, "--classifier",
                          help="tree | forest | boosting | linear | profile.")
FIT_PER_CLASS = typer.Option(
    -1, "--fit-per-class",
    help="Fit on the first N correctly classified training inputs of each class "
         "(-1: the protocol's 1000; 0: all).")
FEATURE_CACHE = typer.Option(
    None, "--feature-cache",
    help="Directory keeping sliced features per chunk, so an interrupted fit resumes.")


SLICE_LAYERS = typer.Option(
    None, "--slice-layers",
    help="Slice and cache these layers (a superset of --layers, e.g. several), so runs that "
         "differ only in their layers share one slicing pass.")
LAYER_WORDS = ("last", "last-conv", "middle", "several", "all")


def parse_layers(text: str | None) -> str | list[str] | None:
    if text is None or text in LAYER_WORDS:
        return text
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InputError("--layers is empty; give last, last-conv, all or layer names")
    return items


def _setup(threads: int | None) -> None:
    """torch threads, and as many numba threads for the slicing kernels (the common setup
    leaves numba at every core, which crawls on a shared machine)."""
    setup(threads)
    if threads:
        from ..backward.kernels import set_threads

        set_threads(threads)


def _check_choice(value: str | None, known: tuple[str, ...], option: str) -> None:
    if value is not None and value not in known:
        raise InputError(f"unknown {option} {value!r}; known: {', '.join(known)}")


@detect_app.command("fit")
@one_line_errors
def fit_cmd(
    model: str = MODEL,
    weights: str = WEIGHTS,
    data: str = typer.Option(DEFAULT_DATASET, "--data", help="Dataset name."),
    data_root: str = DATA_ROOT,
    limit: int = typer.Option(None, "--limit", min=1, help="Fit on the first N training inputs."),
    layers: str = typer.Option("last", "--layers", help=LAYERS_HELP),
    theta: float = THETA,
    reference: str = REFERENCE,
    representation: str = REPRESENTATION,
    classifier: str = CLASSIFIER,
    method: str = typer.Option("nnslicer", "--method",
                               help="nnslicer | effective-path | feature-map"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Inputs sliced at once."),
    feature_cache: Path = FEATURE_CACHE,
    out: Path = typer.Option(..., "--out", help="Directory to save the detector in."),
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Fit a detector on normal training inputs and save it (JSON + safetensors + skops)."""
    from ..apps.detect.classifiers import CLASSIFIERS
    from ..apps.detect.detector import make_detector
    from ..apps.detect.evaluate import check_bounds, parse_methods
    from ..apps.detect.features import REPRESENTATIONS

    _setup(threads)
    parse_methods(method)
    _check_choice(representation, REPRESENTATIONS, "--features")
    _check_choice(classifier, CLASSIFIERS, "--classifier")
    _check_choice(reference, ("dataset", "class"), "--reference")
    net, _ = open_model(model, weights)
    train = open_data(data, "train", data_root, limit)
    check_bounds(train.x, (0.0, 1.0), "the training inputs")
    options = {"layers": parse_layers(layers), "batch_size": batch_size, "progress": not quiet,
               "classifier": classifier}
    if representation is not None:
        options["representation"] = representation
    if feature_cache is not None and method != "feature-map":
        options["cache_dir"] = feature_cache / method
    if theta is not None:
        if method == "feature-map":
            raise InputError("--theta has no meaning for --method feature-map")
        options["theta"] = theta
    if reference is not None:
        if method != "nnslicer":
            raise InputError("--reference applies to --method nnslicer only")
        options["reference"] = reference
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
    protocol: str = typer.Option(
        "default", "--protocol",
        help="default (settings chosen by `detect sweep`) | paper (the authors' settings: "
             "last conv, class reference, decision tree, 1000 fitting images per class)."),
    per_class: int = typer.Option(50, "--per-class", min=1,
                                  help="Correctly classified test inputs attacked per class."),
    calibration_per_class: int = typer.Option(
        50, "--calibration-per-class", min=1,
        help="Further correctly classified test inputs per class, held out to set the "
             "FPR thresholds."),
    methods: str = typer.Option("nnslicer,effective-path,feature-map", "--methods",
                                help="Comma-separated: nnslicer, effective-path, feature-map."),
    limit: int = typer.Option(None, "--limit", min=1,
                              help="Load only the first N training inputs."),
    fit_per_class: int = FIT_PER_CLASS,
    layers: str = typer.Option(None, "--layers", help=LAYERS_HELP + " (default: protocol's)."),
    reference: str = REFERENCE,
    representation: str = REPRESENTATION,
    classifier: str = CLASSIFIER,
    theta: float = typer.Option(None, "--theta", min=0.0, max=0.999,
                                help="θ of NNSlicer (default 0.2)."),
    ep_theta: float = typer.Option(None, "--ep-theta", min=0.0, max=0.999,
                                   help="θ of EffectivePath (default 0.5)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Inputs sliced at once."),
    seed: int = typer.Option(0, "--seed", help="Attack randomness."),
    cache: Path = typer.Option(None, "--cache",
                               help="Attack cache directory (default OUT/attack-cache)."),
    feature_cache: Path = typer.Option(
        None, "--feature-cache", help="Sliced-feature cache (default OUT/feature-cache)."),
    slice_layers: str = SLICE_LAYERS,
    out: Path = typer.Option(..., "--out", help="Output directory."),
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Attack test inputs, detect them with each method; write the report (md/csv/json) and
    the ROC figure. Fitted detectors, sliced features and attack results are kept under OUT
    and reused by later runs."""
    from ..apps.detect.classifiers import CLASSIFIERS
    from ..apps.detect.evaluate import PROTOCOLS, evaluate_detection, parse_attacks, parse_methods
    from ..apps.detect.features import REPRESENTATIONS

    _setup(threads)
    attack_names, method_names = parse_attacks(attacks), parse_methods(methods)
    _check_choice(protocol, tuple(PROTOCOLS), "--protocol")
    _check_choice(representation, REPRESENTATIONS, "--features")
    _check_choice(classifier, CLASSIFIERS, "--classifier")
    _check_choice(reference, ("dataset", "class"), "--reference")
    net, meta = open_model(model, weights)
    train = open_data(data, "train", data_root, limit)
    test = open_data(data, "test", data_root)
    label = meta.get("arch") or meta.get("spec") or model
    report = evaluate_detection(
        net, train, test, attacks=attack_names, methods=method_names, protocol=protocol,
        per_class=per_class, calibration_per_class=calibration_per_class,
        fit_per_class=None if fit_per_class == 0 else fit_per_class,
        cache_dir=cache or out / "attack-cache", detector_dir=out / "detectors",
        feature_cache=feature_cache or out / "feature-cache",
        slice_layers=parse_layers(slice_layers),
        layers=parse_layers(layers), reference=reference, representation=representation,
        classifier=classifier, theta=theta, ep_theta=ep_theta, seed=seed,
        batch_size=batch_size, progress=not quiet, names={"model": label, "data": data},
    )
    paths = report.write(out)
    if not quiet:
        console.print(report.markdown(), markup=False, highlight=False)
    say(quiet, f"wrote {', '.join(str(p) for p in paths.values())}")


@detect_app.command("sweep")
@one_line_errors
def sweep_cmd(
    model: str = MODEL,
    weights: str = WEIGHTS,
    data: str = typer.Option(DEFAULT_DATASET, "--data", help="Dataset name."),
    data_root: str = DATA_ROOT,
    attacks: str = typer.Option("all", "--attacks",
                                help="Every attack of the run (comma-separated, fast or all)."),
    validation_attacks: str = typer.Option(
        "fgsm-8,pgd-8", "--validation-attacks",
        help="The attacks that choose the settings; the others only test them."),
    methods: str = typer.Option("nnslicer,effective-path,feature-map", "--methods",
                                help="Comma-separated: nnslicer, effective-path, feature-map."),
    per_class: int = typer.Option(50, "--per-class", min=1,
                                  help="Correctly classified test inputs attacked per class."),
    calibration_per_class: int = typer.Option(
        50, "--calibration-per-class", min=1,
        help="Held-out correctly classified test inputs per class (the validation normals)."),
    limit: int = typer.Option(None, "--limit", min=1,
                              help="Load only the first N training inputs."),
    fit_per_class: int = typer.Option(
        1000, "--fit-per-class",
        help="Fit on the first N correctly classified training inputs per class (0: all)."),
    classifiers: str = typer.Option("tree,forest,boosting,linear,profile", "--classifiers"),
    layer_sets: str = typer.Option("last-conv,last,middle,several", "--layer-sets"),
    references: str = typer.Option("class,dataset", "--references"),
    representations: str = typer.Option("signed,binary,channels", "--features"),
    slice_layers: str = typer.Option("several", "--slice-layers",
                                     help="Layers sliced once (must cover --layer-sets)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Inputs sliced at once."),
    seed: int = typer.Option(0, "--seed", help="Attack randomness."),
    cache: Path = typer.Option(None, "--cache",
                               help="Attack cache directory (default OUT/attack-cache)."),
    feature_cache: Path = typer.Option(
        None, "--feature-cache", help="Sliced-feature cache (default OUT/feature-cache)."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    threads: int = THREADS,
    quiet: bool = QUIET,
) -> None:
    """Choose each method's layers, reference, features and classifier on held-out normals and
    validation attacks; report every candidate on the other attacks (sweep.md/csv/json)."""
    from ..apps.detect.sweep import sweep_detectors

    def items(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    _setup(threads)
    net, meta = open_model(model, weights)
    train = open_data(data, "train", data_root, limit)
    test = open_data(data, "test", data_root)
    label = meta.get("arch") or meta.get("spec") or model
    report = sweep_detectors(
        net, train, test, attacks=attacks, validation_attacks=validation_attacks,
        methods=methods, per_class=per_class, calibration_per_class=calibration_per_class,
        fit_per_class=None if fit_per_class == 0 else fit_per_class,
        classifiers=items(classifiers), layer_sets=items(layer_sets),
        references=items(references), representations=items(representations),
        slice_layers=slice_layers, cache_dir=cache or out / "attack-cache",
        feature_cache=feature_cache or out / "feature-cache", seed=seed,
        batch_size=batch_size, progress=not quiet, names={"model": label, "data": data},
    )
    paths = report.write(out)
    if not quiet:
        console.print(report.markdown(), markup=False, highlight=False)
    say(quiet, f"wrote {', '.join(str(p) for p in paths.values())}")
