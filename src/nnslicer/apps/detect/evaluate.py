"""NNSlicer's detection experiment (paper §6.1, Table 3).

Correctly classified test inputs are attacked; every successful adversarial is paired with its
normal input, and each detector is scored on normal ∪ adversarial (positive = adversarial):
precision, recall and F1 per attack and method. Results are written as Markdown, CSV, JSON
and a bar figure of F1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...errors import InputError, NNSlicerError
from ...training import predict
from .detector import (
    DETECTORS,
    Detection,
    Detector,
    classifier_params,
    data_hash,
    make_detector,
    model_fingerprint,
    read_meta,
)
from .features import LayerSpec

DEFAULT_METHODS: tuple[str, ...] = ("nnslicer", "effective-path", "feature-map")
METHOD_LABELS = {"nnslicer": "NNSlicer", "effective-path": "EffectivePath",
                 "feature-map": "FeatureMap"}
METHOD_COLORS = {"nnslicer": "tab:red", "effective-path": "tab:blue", "feature-map": "tab:gray"}
# the paper's grouping of its 17 attacks
ATTACK_TYPES: dict[str, str] = {
    **{a: "gradient" for a in ("fgsm-2", "fgsm-4", "fgsm-8", "deepfool-linf", "deepfool-l2",
                                "jsma", "pgd-2", "pgd-4", "pgd-8", "cw-l2", "adef")},
    **{a: "score" for a in ("single-pixel", "local-search")},
    **{a: "decision" for a in ("boundary", "spatial", "pointwise", "gaussian-blur")},
}
NO_ADVERSARIALS = "no successful adversarials"

Data = Any  # an ArrayDataset or an (x, y) pair of tensors


def parse_attacks(text: str | Sequence[str]) -> list[str]:
    """'fgsm-8,pgd-8' | 'all' | 'fast' (or a list of names) -> known attack names."""
    from .attacks import ATTACK_NAMES, FAST_ATTACKS

    items = [a.strip() for a in text.split(",")] if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in filter(None, items):
        group = {"all": ATTACK_NAMES, "fast": FAST_ATTACKS}.get(item, (item,))
        for name in group:
            if name not in ATTACK_NAMES:
                raise InputError(
                    f"unknown attack {name!r}; known: all, fast, {', '.join(ATTACK_NAMES)}"
                )
            if name not in names:
                names.append(name)
    if not names:
        raise InputError("no attack given; use e.g. --attacks fgsm-8,pgd-8 or fast or all")
    return names


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """'nnslicer,effective-path,feature-map' (or a list) -> validated method names."""
    items = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    methods = list(dict.fromkeys(filter(None, items)))
    unknown = [m for m in methods if m not in DETECTORS]
    if unknown or not methods:
        raise InputError(
            f"unknown detection method(s) {unknown or text!r}; known: {', '.join(DETECTORS)}"
        )
    return methods


@dataclass
class Scores:
    """Detection quality on normal ∪ adversarial inputs; positive = adversarial."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def from_flags(cls, normal: np.ndarray, adversarial: np.ndarray) -> Scores:
        """Scores from the detector's flags on the normal and on the adversarial inputs."""
        normal, adversarial = np.asarray(normal, bool), np.asarray(adversarial, bool)
        tp, fn = int(adversarial.sum()), int((~adversarial).sum())
        fp, tn = int(normal.sum()), int((~normal).sum())
        # no positive prediction: precision 0 (scikit-learn's zero_division=0 convention)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision, recall, f1, tp, fp, fn, tn)


@dataclass
class AttackRow:
    """One attack: how many inputs it fooled, and each method's scores on them."""

    attack: str
    family: str
    attacked: int
    successes: int
    seconds: float
    scores: dict[str, Scores] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "ok" if self.successes else NO_ADVERSARIALS


@dataclass
class DetectionReport:
    """Table 3: rows are attacks, columns method × precision/recall/F1."""

    methods: list[str]
    rows: list[AttackRow]
    info: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # per-input flags, for audits

    def mean(self, method: str) -> dict[str, float] | None:
        """Unweighted mean of P/R/F1 over the attacks that produced adversarials."""
        scored = [r.scores[method] for r in self.rows if method in r.scores]
        if not scored:
            return None
        return {k: float(np.mean([getattr(s, k) for s in scored]))
                for k in ("precision", "recall", "f1")}

    def pooled(self, method: str) -> Scores | None:
        """Scores over the pairs of all attacks together (attacks with few adversarials weigh
        little here, unlike in :meth:`mean`)."""
        scored = [r.scores[method] for r in self.rows if method in r.scores]
        if not scored:
            return None
        tp, fp, fn, tn = (sum(getattr(s, k) for s in scored) for k in ("tp", "fp", "fn", "tn"))
        return Scores.from_flags(np.r_[np.ones(fp, bool), np.zeros(tn, bool)],
                                 np.r_[np.ones(tp, bool), np.zeros(fn, bool)])

    def markdown(self) -> str:
        info = self.info
        head = ["type", "attack", "adv."]
        for m in self.methods:
            label = METHOD_LABELS.get(m, m)
            head += [f"{label} P", f"{label} R", f"{label} F1"]
        lines = [
            "# Adversarial input detection (NNSlicer, Table 3 layout)",
            "",
            f"Model `{info.get('model', '?')}` on `{info.get('data', '?')}`; detectors fitted "
            f"on {info.get('fit_samples', '?')} training inputs (layers: "
            f"{info.get('layers', '?')}); {info.get('attacked', '?')} correctly classified test "
            "inputs attacked; each detector is scored on the successful adversarials plus their "
            "normal counterparts (positive = adversarial).",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---", "---", "---:"] + ["---:"] * 3 * len(self.methods)) + "|",
        ]
        for r in self.rows:
            cells = [r.family, r.attack, f"{r.successes}/{r.attacked}"]
            if not r.successes:
                cells += [NO_ADVERSARIALS] + ["–"] * (3 * len(self.methods) - 1)
            else:
                for m in self.methods:
                    s = r.scores[m]
                    cells += [f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        means = [self.mean(m) for m in self.methods]
        if any(means):
            cells = ["", "**mean**", ""]
            for mean in means:
                cells += [f"{mean[k]:.3f}" for k in ("precision", "recall", "f1")] if mean \
                    else ["–"] * 3
            lines.append("| " + " | ".join(cells) + " |")
            pairs = sum(r.successes for r in self.rows)
            cells = ["", "**pooled**", str(pairs)]
            for m in self.methods:
                p = self.pooled(m)
                cells += [f"{v:.3f}" for v in (p.precision, p.recall, p.f1)] if p else ["–"] * 3
            lines.append("| " + " | ".join(cells) + " |")
            lines += ["", "mean: unweighted over the attacks with adversarials; pooled: over all "
                      "their pairs at once. Rows with few adversarials are noisy."]
        fpr = info.get("normal_flag_rate", {})
        if fpr:
            lines += ["", "Normal test inputs flagged as adversarial (over all attacked inputs): "
                      + ", ".join(f"{METHOD_LABELS.get(m, m)} {fpr[m]:.1%}" for m in fpr) + "."]
        seconds = info.get("seconds", {})
        if seconds:
            parts = [f"{name} {self._fmt_seconds(v)}" for name, v in seconds.items()]
            lines += ["", "Time: " + "; ".join(parts) + "."]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _fmt_seconds(value: Any) -> str:
        if isinstance(value, Mapping):
            if not value:
                return "(none)"
            return "(" + ", ".join(f"{k} {v:.1f} s" for k, v in value.items()) + ")"
        return f"{value:.1f} s"

    def csv_rows(self) -> list[dict[str, Any]]:
        rows = []
        for r in self.rows:
            row: dict[str, Any] = {"type": r.family, "attack": r.attack, "attacked": r.attacked,
                                   "adversarials": r.successes, "status": r.status,
                                   "attack_seconds": round(r.seconds, 3)}
            for m in self.methods:
                s = r.scores.get(m)
                for k in ("precision", "recall", "f1", "tp", "fp", "fn", "tn"):
                    row[f"{m}_{k}"] = "" if s is None else getattr(s, k)
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "methods": self.methods,
            "info": self.info,
            "rows": [{**{k: v for k, v in asdict(r).items() if k != "scores"},
                      "status": r.status,
                      "scores": {m: asdict(s) for m, s in r.scores.items()}} for r in self.rows],
            "mean": {m: self.mean(m) for m in self.methods},
            "pooled": {m: (asdict(p) if (p := self.pooled(m)) else None) for m in self.methods},
            "details": self.details,
        }

    def write(self, out_dir: str | Path, stem: str = "detection") -> dict[str, Path]:
        """Write ``<stem>.md``, ``.csv``, ``.json`` and the F1 figure ``.png`` (atomically)."""
        import csv
        import io
        import json

        from ...io_utils import atomic_write_text

        out = Path(out_dir)
        paths = {ext: out / f"{stem}.{ext}" for ext in ("md", "csv", "json", "png")}
        atomic_write_text(paths["md"], self.markdown())
        rows = self.csv_rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["attack"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(paths["csv"], buf.getvalue())
        atomic_write_text(paths["json"], json.dumps(self.to_json(), indent=1) + "\n")
        plot_f1(self, paths["png"])
        return paths


def plot_f1(report: DetectionReport, path: str | Path) -> Path:
    """Grouped bars: F1 of each method on each attack ("no adv." where an attack failed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ...io_utils import atomic_write

    attacks = [r.attack for r in report.rows]
    n, k = len(attacks), max(len(report.methods), 1)
    fig = Figure(figsize=(max(6.0, 0.9 * n + 2), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / k
    xs = np.arange(n)
    for j, m in enumerate(report.methods):
        f1 = [r.scores[m].f1 if m in r.scores else 0.0 for r in report.rows]
        bars = ax.bar(xs + (j - (k - 1) / 2) * width, f1, width, label=METHOD_LABELS.get(m, m),
                      color=METHOD_COLORS.get(m))
        ax.bar_label(bars, labels=[f"{v:.2f}" if m in r.scores else ""
                                   for v, r in zip(f1, report.rows, strict=True)],
                     fontsize=6, padding=1)
    for i, r in enumerate(report.rows):
        if not r.successes:
            ax.text(i, 0.03, "no adv.", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(xs, [f"{r.attack}\n({r.successes})" for r in report.rows], fontsize=7)
    ax.set_xlabel("attack (number of successful adversarials)", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("F1 (positive = adversarial)")
    ax.set_title(f"Adversarial input detection: {report.info.get('model', '')} on "
                 f"{report.info.get('data', '')}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=k, fontsize=8)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))


# ------------------------------------------------------------------------------ evaluation


def _xy(data: Data, what: str) -> tuple[Tensor, Tensor]:
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], data[1]
    raise InputError(f"{what} must be a dataset with .x/.y or an (x, y) pair of tensors")


def check_bounds(x: Tensor, bounds: tuple[float, float], what: str) -> None:
    """InputError unless every value of ``x`` lies in ``bounds`` (what attacks assume)."""
    lo, hi = bounds
    x_min, x_max = float(x.min()), float(x.max())
    if math.isnan(x_min) or math.isnan(x_max) or x_min < lo or x_max > hi:
        raise InputError(
            f"{what} lie in [{x_min:.4g}, {x_max:.4g}], outside the input range "
            f"[{lo:g}, {hi:g}] the attacks assume; scale the inputs into [{lo:g}, {hi:g}]"
        )


def select_inputs(model: nn.Module, x: Tensor, y: Tensor, n: int, seed: int = 0) -> Tensor:
    """Indices of up to ``n`` inputs the model classifies correctly (seeded random choice)."""
    correct = (predict(model, x) == y.cpu()).nonzero().squeeze(1)
    order = torch.randperm(len(correct), generator=torch.Generator().manual_seed(seed))
    return correct[order[:n]].sort().values


def _detector_options(method: str, layers: LayerSpec, theta: float | None,
                      ep_theta: float | None, classifier: ClassifierMixin | None,
                      batch_size: int, progress: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"layers": layers, "batch_size": batch_size, "progress": progress,
                               "classifier": classifier}
    if method == "nnslicer" and theta is not None:
        options["theta"] = theta
    if method == "effective-path" and ep_theta is not None:
        options["theta"] = ep_theta
    return options


def _saved_detector(directory: Path, fresh: Detector, model: nn.Module, fit_hash: str,
                    progress: bool) -> Detector | None:
    """The detector saved in ``directory`` if it is the one ``fresh`` would become, else None."""
    try:
        meta = read_meta(directory)
    except NNSlicerError:
        return None
    wanted = {k: v for k, v in fresh.config().items() if k != "batch_size"}
    saved = {k: v for k, v in meta["config"].items() if k != "batch_size"}
    same = (saved == wanted and meta["model"] == fresh.fingerprint
            and meta.get("fit", {}).get("data_hash") == fit_hash
            and meta.get("classifier") == type(fresh.classifier_template).__name__
            and meta.get("classifier_params") == classifier_params(fresh.classifier_template))
    if not same:
        return None
    try:
        return type(fresh).load(directory, model, progress=progress,
                                batch_size=fresh.extractor.batch_size)
    except NNSlicerError:
        return None


def evaluate_detection(
    model: nn.Module,
    train: Data,
    test: Data,
    *,
    attacks: str | Sequence[str] = "fast",
    methods: str | Sequence[str] = DEFAULT_METHODS,
    n_test: int = 100,
    cache_dir: str | Path | None = None,
    detector_dir: str | Path | None = None,
    detectors: Mapping[str, Detector] | None = None,
    layers: LayerSpec = "last",
    theta: float | None = None,
    ep_theta: float | None = None,
    classifier: ClassifierMixin | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    names: Mapping[str, str] | None = None,
) -> DetectionReport:
    """Run the detection experiment and return its report (call ``report.write(dir)``).

    ``train`` fits the detectors (normal inputs only); ``n_test`` correctly classified inputs
    of ``test`` are attacked with ``attacks`` (cached in ``cache_dir``). Fitted ``detectors``
    may be given per method; otherwise they are fitted, and with ``detector_dir`` saved there
    and reused by later runs with the same model, data and settings. ``names`` labels the
    report (``{"model": ..., "data": ...}``).
    """
    from .attacks import run_attacks_cached

    start_all = time.perf_counter()
    attack_names = parse_attacks(attacks)
    method_names = parse_methods(methods)
    if n_test < 1:
        raise InputError(f"n_test must be at least 1, got {n_test}")
    x_fit, y_fit = _xy(train, "train")
    x_test, y_test = _xy(test, "test")
    check_bounds(x_fit, bounds, "the training inputs")
    check_bounds(x_test, bounds, "the test inputs")
    model = model.eval()
    fp = model_fingerprint(model)

    # ---- detectors
    seconds: dict[str, Any] = {"fit": {}, "detect normal": {}, "detect adversarial": {},
                               "attacks": {}}
    fitted: dict[str, Detector] = {}
    fit_hash = data_hash(x_fit, y_fit)
    for method in method_names:
        if detectors and method in detectors:
            fitted[method] = detectors[method]
            continue
        t0 = time.perf_counter()
        options = _detector_options(method, layers, theta, ep_theta, classifier, batch_size,
                                    progress)
        det = make_detector(method, model, **options)
        det.extractor.bind(x_fit)
        target = Path(detector_dir) / method if detector_dir is not None else None
        reused = _saved_detector(target, det, model, fit_hash, progress) if target else None
        if reused is not None:
            det = reused
        else:
            det.fit(x_fit, y_fit)
            if target is not None:
                det.save(target)
            seconds["fit"][method] = time.perf_counter() - t0
        fitted[method] = det
    first = fitted[method_names[0]]

    # ---- attacks on correctly classified test inputs
    idx = select_inputs(model, x_test, y_test, n_test, seed)
    if len(idx) == 0:
        raise InputError("the model classifies no test input correctly; nothing to attack")
    xs, ys = x_test[idx], y_test[idx]
    cache = Path(cache_dir) if cache_dir is not None else Path(".nnslicer-cache") / "attacks"
    results = run_attacks_cached(attack_names, model, xs, ys, cache, model_fingerprint=fp,
                                 bounds=bounds, seed=seed, progress=progress)

    # ---- detection: normals once per method, then each attack's successful adversarials
    normal: dict[str, Detection] = {}
    for method in tqdm(method_names, desc="detect normal", disable=not progress):
        t0 = time.perf_counter()
        normal[method] = fitted[method].detect(xs)
        seconds["detect normal"][method] = time.perf_counter() - t0
    rows: list[AttackRow] = []
    details: dict[str, Any] = {"inputs": idx.tolist(), "normal": {
        m: {"flags": d.is_adversarial.tolist(), "scores": np.round(d.score, 4).tolist()}
        for m, d in normal.items()}, "attacks": {}}
    work = [(name, m) for name in attack_names for m in method_names]
    bar = tqdm(total=len(work), desc="detect adversarial", disable=not progress)
    for name in attack_names:
        res = results[name]
        ok = res.success.cpu().nonzero().squeeze(1)
        seconds["attacks"][name] = res.seconds
        row = AttackRow(name, ATTACK_TYPES.get(name, "other"), len(idx), len(ok), res.seconds)
        entry: dict[str, Any] = {"successful": ok.tolist(), "seconds": res.seconds}
        for method in method_names:
            bar.update(1)
            if not len(ok):
                continue
            t0 = time.perf_counter()
            adv = fitted[method].detect(res.x_adv[ok].to(xs.dtype))
            took = time.perf_counter() - t0
            seconds["detect adversarial"][method] = \
                seconds["detect adversarial"].get(method, 0.0) + took
            row.scores[method] = Scores.from_flags(
                normal[method].is_adversarial[ok.numpy()], adv.is_adversarial)
            entry[method] = {"flags": adv.is_adversarial.tolist(),
                             "scores": np.round(adv.score, 4).tolist()}
        details["attacks"][name] = entry
        rows.append(row)
    bar.close()
    seconds["total"] = time.perf_counter() - start_all

    names = dict(names or {})
    info = {
        "model": names.get("model", type(model).__name__),
        "data": names.get("data", getattr(test, "name", "?")),
        "model_fingerprint": fp,
        "fit_samples": int(x_fit.shape[0]),
        "layers": ", ".join(layer.module_path for layer in first.extractor.layers or []),
        "attacked": len(idx),
        "bounds": list(bounds),
        "seed": seed,
        "detectors": {m: {**d.config(), "classifier": type(d.classifier).__name__,
                          "fit": d.fit_info} for m, d in fitted.items()},
        "normal_flag_rate": {m: float(d.is_adversarial.mean()) for m, d in normal.items()},
        "seconds": seconds,
    }
    return DetectionReport(method_names, rows, info, details)
