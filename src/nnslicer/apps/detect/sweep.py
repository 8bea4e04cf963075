"""Which detector settings earn their place: a sweep chosen on validation data only.

For each method the inputs are sliced once (over ``slice_layers``, cached on disk and shared
with :func:`.evaluate.evaluate_detection`), and every candidate setting is a different view of
those slices plus a classifier: layers (one conv like the authors, the last stage, a middle
stage, several stages), reference (dataset / class, NNSlicer only), features (signed synapse
contributions, binary membership, channel-level neuron contributions) and classifier (the
authors' tree, a random forest, gradient boosting, a linear model, the class-profile
similarity of :mod:`.classifiers`).

The search is a coordinate ascent from the authors' setting: one factor at a time, keep the
value with the best ROC-AUC on the *validation* data (the held-out normal inputs against the
adversarials of the validation attacks, by default FGSM and PGD). The test columns (the
attacked normal inputs against the other attacks' adversarials) are reported for every
candidate but never used to choose.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from torch import nn
from tqdm.auto import tqdm

from ...errors import InputError
from ...training import predict
from ..figures import write_csv, write_json
from .classifiers import CLASSIFIERS, cpu_threads, make_classifier
from .detector import classify, model_fingerprint
from .evaluate import (
    DEFAULT_METHODS,
    Data,
    _xy,
    check_bounds,
    parse_attacks,
    parse_methods,
    select_per_class,
)
from .features import REPRESENTATIONS, FeatureExtractor, Features, resolve_layers
from .metrics import recall_at_threshold, roc_auc, threshold_at_fpr
from .report import METHOD_LABELS

LAYER_SETS: tuple[str, ...] = ("last-conv", "last", "middle", "several")
REFERENCES: tuple[str, ...] = ("class", "dataset")
VALIDATION_ATTACKS: tuple[str, ...] = ("fgsm-8", "pgd-8")
# the authors' setting, where the search starts
START = {"layers": "last-conv", "reference": "class", "representation": "signed",
         "classifier": "tree"}


@dataclass(frozen=True)
class Candidate:
    """One detector setting of the sweep."""

    method: str
    layers: str
    reference: str | None  # NNSlicer only
    representation: str
    classifier: str

    def label(self) -> str:
        ref = f", {self.reference} ref." if self.reference else ""
        return f"{self.layers}{ref}, {self.representation}, {self.classifier}"


@dataclass
class CandidateResult:
    """Validation and test metrics of one candidate (the test ones are never used to choose)."""

    candidate: Candidate
    stage: str  # which factor was being varied when it was tried
    validation_auc: float
    validation_recall5: float
    test_auc: float
    test_recall5: float
    test_recall1: float
    test_auc_per_attack: dict[str, float]
    fit_seconds: float
    chosen: bool = False


@dataclass
class SweepReport:
    """All candidates tried, per method, and the one chosen for each."""

    methods: list[str]
    results: list[CandidateResult]
    info: dict[str, Any] = field(default_factory=dict)

    def chosen(self, method: str) -> CandidateResult:
        return next(r for r in self.results if r.candidate.method == method and r.chosen)

    def markdown(self) -> str:
        info = self.info
        lines = [
            "# Detector sweep",
            "",
            f"Model `{info.get('model', '?')}` on `{info.get('data', '?')}`. Fitted on "
            f"{info.get('fit_samples', '?')} correctly classified training inputs; validation: "
            f"{info.get('calibration', '?')} held-out normal test inputs against the "
            f"{info.get('validation_adversarials', '?')} adversarials of "
            f"{', '.join(info.get('validation_attacks', []))}; test: the "
            f"{info.get('attacked', '?')} attacked normal inputs against the "
            f"{info.get('test_adversarials', '?')} adversarials of the other attacks. Each "
            "stage varies one factor from the best setting so far and keeps the best "
            "validation AUC; test columns are shown, never used to choose.",
            "",
            "| method | stage | layers | reference | features | classifier | val. AUC | "
            "val. R@5% | test AUC | test R@5% | test R@1% | fit s |",
            "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.results:
            c = r.candidate
            mark = "**" if r.chosen else ""
            lines.append(
                f"| {mark}{METHOD_LABELS.get(c.method, c.method)}{mark} | {r.stage} | "
                f"{c.layers} | {c.reference or '–'} | {c.representation} | {c.classifier} | "
                f"{r.validation_auc:.3f} | {r.validation_recall5:.3f} | {r.test_auc:.3f} | "
                f"{r.test_recall5:.3f} | {r.test_recall1:.3f} | {r.fit_seconds:.1f} |")
        lines += ["", "## Chosen settings on the test attacks", ""]
        attacks = info.get("test_attacks", [])
        head = "| method | setting | " + " | ".join(attacks) + " | pooled AUC | R@5% |"
        lines += [head, "|---|---|" + "---:|" * (len(attacks) + 2)]
        for m in self.methods:
            r = self.chosen(m)
            cells = [_f(r.test_auc_per_attack.get(a, float("nan"))) for a in attacks]
            lines.append(f"| {METHOD_LABELS.get(m, m)} | {r.candidate.label()} | "
                         + " | ".join(cells) + f" | {r.test_auc:.3f} | {r.test_recall5:.3f} |")
        lines += ["", "Per-attack cells: test ROC-AUC of the chosen setting (– : the attack "
                  "fooled nothing)."]
        seconds = info.get("seconds", {})
        if seconds:
            lines += ["", "Time: " + "; ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
                      + "."]
        return "\n".join(lines) + "\n"

    def csv_rows(self) -> list[dict[str, Any]]:
        rows = []
        for r in self.results:
            row = {**asdict(r.candidate), "stage": r.stage, "chosen": r.chosen,
                   "validation_auc": r.validation_auc, "validation_recall5": r.validation_recall5,
                   "test_auc": r.test_auc, "test_recall5": r.test_recall5,
                   "test_recall1": r.test_recall1, "fit_seconds": r.fit_seconds}
            row.update({f"test_auc_{a}": v for a, v in r.test_auc_per_attack.items()})
            rows.append(row)
        return rows

    def write(self, out_dir: str | Path, stem: str = "sweep") -> dict[str, Path]:
        from ...io_utils import atomic_write_text

        out = Path(out_dir)
        paths = {ext: out / f"{stem}.{ext}" for ext in ("md", "csv", "json")}
        atomic_write_text(paths["md"], self.markdown())
        write_csv(paths["csv"], self.csv_rows())
        write_json(paths["json"], {"info": self.info, "results": self.csv_rows()})
        return paths


def _f(v: float) -> str:
    return "–" if v != v else f"{v:.3f}"


@dataclass
class _Views:
    """One slicing pass of one method (and reference): raw arrays of every input set."""

    extractor: FeatureExtractor
    fit: dict[str, Features]
    fit_pred: np.ndarray
    normal: dict[str, Features]
    normal_pred: np.ndarray
    calibration: dict[str, Features]
    calibration_pred: np.ndarray
    adversarial: dict[str, tuple[dict[str, Features], np.ndarray]]


def sweep_detectors(
    model: nn.Module,
    train: Data,
    test: Data,
    *,
    attacks: str | Sequence[str] = "all",
    validation_attacks: str | Sequence[str] = VALIDATION_ATTACKS,
    methods: str | Sequence[str] = DEFAULT_METHODS,
    per_class: int = 50,
    calibration_per_class: int = 50,
    fit_per_class: int | None = 1000,
    classifiers: Sequence[str] = CLASSIFIERS,
    layer_sets: Sequence[str] = LAYER_SETS,
    references: Sequence[str] = REFERENCES,
    representations: Sequence[str] = REPRESENTATIONS,
    slice_layers: str = "several",
    cache_dir: str | Path | None = None,
    feature_cache: str | Path | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    names: Mapping[str, str] | None = None,
) -> SweepReport:
    """Choose each method's detector setting on validation data; report all candidates.

    The input sets are those of :func:`.evaluate.evaluate_detection` with the same arguments
    (so attack results and sliced features are shared through ``cache_dir`` and
    ``feature_cache``). ``attacks`` lists every attack; the ``validation_attacks`` among them
    choose, the others test.
    """
    from .attack_cache import run_attacks_cached
    from .detector import make_detector

    start_all = time.perf_counter()
    all_attacks = parse_attacks(attacks)
    val_attacks = parse_attacks(validation_attacks)
    for a in val_attacks:
        if a not in all_attacks:
            all_attacks.append(a)
    test_attacks = [a for a in all_attacks if a not in val_attacks]
    if not test_attacks:
        raise InputError("every attack is a validation attack; leave some to test on")
    method_names = parse_methods(methods)
    for name, values, known in (("classifier", classifiers, CLASSIFIERS),
                                ("layers", layer_sets, LAYER_SETS),
                                ("reference", references, REFERENCES),
                                ("features", representations, REPRESENTATIONS)):
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            raise InputError(f"unknown {name} {unknown or values}; known: {', '.join(known)}")
    x_train, y_train = _xy(train, "train")
    x_test, y_test = _xy(test, "test")
    check_bounds(x_train, bounds, "the training inputs")
    check_bounds(x_test, bounds, "the test inputs")
    model = model.eval()

    if fit_per_class is None:  # every training input the model classifies correctly
        keep = predict(model, x_train) == y_train.cpu()
        x_fit, y_fit = x_train[keep], y_train[keep]
    else:
        fit_idx = select_per_class(predict(model, x_train), y_train, fit_per_class)
        x_fit, y_fit = x_train[fit_idx], y_train[fit_idx]
    test_pred = predict(model, x_test)
    idx = select_per_class(test_pred, y_test, per_class)
    calib_idx = select_per_class(test_pred, y_test, calibration_per_class, skip=per_class)
    if not len(x_fit) or not len(idx) or not len(calib_idx):
        raise InputError("not enough correctly classified inputs to fit, attack and hold out")
    xs, ys = x_test[idx], y_test[idx]
    cache = Path(cache_dir) if cache_dir is not None else Path(".nnslicer-cache") / "attacks"
    results = run_attacks_cached(all_attacks, model, xs, ys, cache,
                                 model_fingerprint=model_fingerprint(model), bounds=bounds,
                                 seed=seed, progress=progress)
    adversarials = {a: results[a].x_adv[results[a].success.cpu()].to(xs.dtype)
                    for a in all_attacks}
    if not sum(len(adversarials[a]) for a in val_attacks):
        raise InputError(f"the validation attacks {', '.join(val_attacks)} fooled no input; "
                         "choose others with --validation-attacks")
    features_dir = Path(feature_cache) if feature_cache is not None else None

    seconds: dict[str, float] = {}
    out: list[CandidateResult] = []
    for method in method_names:
        refs = list(references) if method == "nnslicer" else [None]
        views: dict[str | None, _Views] = {}
        t0 = time.perf_counter()
        for ref in refs:
            options: dict[str, Any] = {"layers": slice_layers, "batch_size": batch_size,
                                       "progress": progress, "slice_layers": slice_layers}
            if method != "feature-map" and features_dir is not None:
                options["cache_dir"] = features_dir / method
            if ref is not None:
                options["reference"] = ref
            extractor = make_detector(method, model, **options).extractor
            extractor.bind(x_fit)
            extractor.prepare(x_fit, y_fit)
            fit_raw, fit_pred = extractor.extract_raw(x_fit, f"{method} fit")
            normal_raw, normal_pred = extractor.extract_raw(xs, f"{method} normal")
            calib_raw, calib_pred = extractor.extract_raw(x_test[calib_idx],
                                                          f"{method} held-out")
            adv = {a: extractor.extract_raw(x, f"{method} {a}")
                   for a, x in adversarials.items() if len(x)}
            views[ref] = _Views(extractor, fit_raw, fit_pred, normal_raw, normal_pred,
                                calib_raw, calib_pred, adv)
        seconds[f"slice {method}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out += _coordinate_ascent(method, views, classifiers, layer_sets, representations,
                                  val_attacks, test_attacks, progress)
        seconds[f"classifiers {method}"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start_all

    names = dict(names or {})
    info = {
        "model": names.get("model", type(model).__name__),
        "data": names.get("data", getattr(test, "name", "?")),
        "fit_samples": int(len(x_fit)),
        "fit_per_class": fit_per_class,
        "per_class": per_class,
        "attacked": int(len(idx)),
        "calibration": int(len(calib_idx)),
        "validation_attacks": val_attacks,
        "test_attacks": test_attacks,
        "validation_adversarials": int(sum(len(adversarials[a]) for a in val_attacks)),
        "test_adversarials": int(sum(len(adversarials[a]) for a in test_attacks)),
        "slice_layers": slice_layers,
        "seed": seed,
        "seconds": seconds,
    }
    return SweepReport(method_names, out, info)


def _coordinate_ascent(method: str, views: dict[str | None, _Views],
                       classifiers: Sequence[str], layer_sets: Sequence[str],
                       representations: Sequence[str], val_attacks: list[str],
                       test_attacks: list[str], progress: bool) -> list[CandidateResult]:
    reference = START["reference"] if START["reference"] in views else next(iter(views))
    best = Candidate(method, START["layers"] if START["layers"] in layer_sets else layer_sets[0],
                     reference,
                     START["representation"] if START["representation"] in representations
                     else representations[0],
                     START["classifier"] if START["classifier"] in classifiers
                     else classifiers[0])
    tried: dict[Candidate, CandidateResult] = {}
    order: list[Candidate] = []  # the order candidates were tried in
    stages: list[tuple[str, str, Sequence[Any]]] = [
        ("classifier", "classifier", classifiers),
        ("layers", "layers", layer_sets),
        ("features", "representation", representations),
    ]
    if len(views) > 1:
        stages.append(("reference", "reference", list(views)))
    bar = tqdm(desc=f"{method} sweep", unit="setting", disable=not progress, leave=False)
    ex = next(iter(views.values())).extractor

    def key(c: Candidate) -> tuple[Any, ...]:
        # "last" and "last-conv" are the same layer on LeNet-5: try such a setting once
        nodes = tuple(la.node for la in resolve_layers(c.layers, ex.all_layers or []))
        return (nodes, c.reference, c.representation, c.classifier)

    seen = set()
    for stage, attr, values in stages:
        for value in values:
            cand = replace(best, **{attr: value})
            if cand not in tried and key(cand) not in seen:
                seen.add(key(cand))
                tried[cand] = _score(cand, views[cand.reference], stage, val_attacks,
                                     test_attacks)
                order.append(cand)
                bar.update(1)
        best = max((c for c in tried if all(getattr(c, a) == getattr(best, a)
                                              for _, a, _ in stages if a != attr)),
                   key=lambda c: (tried[c].validation_auc, tried[c].validation_recall5))
    bar.close()
    tried[best].chosen = True
    return [tried[c] for c in order]


def _score(cand: Candidate, view: _Views, stage: str, val_attacks: list[str],
           test_attacks: list[str]) -> CandidateResult:
    ex = view.extractor
    layers = resolve_layers(cand.layers, ex.all_layers or [])
    missing = [la.module_path for la in layers if la not in (ex.sliced or [])]
    if missing:
        raise InputError(f"layers {missing} were not sliced; widen slice_layers")

    def feats(raw: dict[str, Features]) -> Features:
        return ex.represent(raw, cand.representation, layers)

    t0 = time.perf_counter()
    with cpu_threads():
        clf = clone(make_classifier(cand.classifier)).fit(feats(view.fit), view.fit_pred)
        fit_seconds = time.perf_counter() - t0
        calib = classify(clf, feats(view.calibration), view.calibration_pred).score
        normal = classify(clf, feats(view.normal), view.normal_pred).score
        adv = {a: classify(clf, feats(raw), pred).score for a, (raw, pred) in
               view.adversarial.items()}
    empty = np.zeros(0)
    val = np.concatenate([adv.get(a, empty) for a in val_attacks])
    tst = np.concatenate([adv.get(a, empty) for a in test_attacks])
    t5, t1 = threshold_at_fpr(calib, 0.05), threshold_at_fpr(calib, 0.01)
    return CandidateResult(
        candidate=cand,
        stage=stage,
        validation_auc=roc_auc(calib, val),
        validation_recall5=recall_at_threshold(val, t5),
        test_auc=roc_auc(normal, tst),
        test_recall5=recall_at_threshold(tst, t5),
        test_recall1=recall_at_threshold(tst, t1),
        test_auc_per_attack={a: roc_auc(normal, adv[a]) if a in adv else float("nan")
                             for a in test_attacks},
        fit_seconds=fit_seconds,
    )
