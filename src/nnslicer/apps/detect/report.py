"""The detection report: what one run measured, its metrics, and how it is written.

The report keeps every input's score and flags (:class:`MethodRun`) and derives all metrics
from them, so the honest columns and the paper-protocol columns come from the same detections:

- **ROC-AUC** of the adversarials' scores against the scores of all attacked normal inputs;
- **recall at 1 % / 5 % FPR**: the threshold is set on *held-out* normal inputs (never the
  attacked ones, never the adversarials), recall is measured on the adversarials;
- **paired P/R/F1** at the default rule (flag = classifier's class ≠ model's class) on each
  successful adversarial and its own normal input;
- **paper P/R/F1**: the authors' computation (see docs/detection.md): negatives are the whole
  fixed normal set, positives the attack's adversarials, an adversarial is flagged when the
  classifier's class differs from (a) the adversarial's real prediction, or (b) −1, what the
  authors' ``load_raw_prediction`` returns when it finds no file, so every adversarial is
  flagged and recall is 1.0 by construction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..figures import write_csv, write_json
from .metrics import Scores, recall_at_threshold, roc_auc, roc_points, threshold_at_fpr

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
FPR_BUDGETS: tuple[float, ...] = (0.01, 0.05)
#: the class the authors' ``load_raw_prediction`` returns for a missing trace file
MISSING_FILE_PREDICTION = -1


@dataclass
class AttackRun:
    """One attack on the attacked normal inputs: which of them it turned adversarial."""

    attack: str
    attacked: int
    successful: np.ndarray  # indices into the attacked inputs
    seconds: float

    @property
    def family(self) -> str:
        return ATTACK_TYPES.get(self.attack, "other")

    @property
    def successes(self) -> int:
        return len(self.successful)

    @property
    def status(self) -> str:
        return "ok" if self.successes else NO_ADVERSARIALS


@dataclass
class MethodRun:
    """One detector's outputs in one run (scores: higher = more suspect)."""

    normal_score: np.ndarray  # (n,) the attacked inputs before the attack
    normal_flag: np.ndarray  # (n,) bool: classifier's class != model's class
    calibration_score: np.ndarray  # held-out normal inputs, for the FPR thresholds
    adversarial_score: dict[str, np.ndarray] = field(default_factory=dict)
    adversarial_class: dict[str, np.ndarray] = field(default_factory=dict)  # classifier's
    adversarial_prediction: dict[str, np.ndarray] = field(default_factory=dict)  # model's

    def adversarial_flag(self, attack: str, reference: np.ndarray | int | None = None
                         ) -> np.ndarray:
        """Flags of ``attack``'s adversarials: classifier's class != ``reference``
        (default: the model's real prediction of each adversarial)."""
        ref = self.adversarial_prediction[attack] if reference is None else reference
        return self.adversarial_class[attack] != ref

    def thresholds(self) -> dict[float, float]:
        return {f: threshold_at_fpr(self.calibration_score, f) for f in FPR_BUDGETS}


@dataclass
class AttackMetrics:
    """Every metric of one method on one attack (or pooled over attacks)."""

    adversarials: int
    auc: float
    recall_at_fpr: dict[float, float]
    paired: Scores
    paper_real: Scores
    paper_missing: Scores


@dataclass
class DetectionReport:
    """Per-attack, per-method detections of one run, and the metrics derived from them."""

    methods: list[str]
    attacks: list[AttackRun]
    runs: dict[str, MethodRun]
    info: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------------------- metrics
    def metrics(self, attack: str, method: str) -> AttackMetrics | None:
        """The metrics of ``method`` on ``attack``; None when the attack fooled nothing."""
        run = next(a for a in self.attacks if a.attack == attack)
        if not run.successes:
            return None
        return self._metrics([run], self.runs[method])

    def pooled(self, method: str) -> AttackMetrics | None:
        """Metrics over the adversarials of all attacks together (an attack that fooled many
        inputs weighs more; the paper columns count the normal set once per attack, as the
        authors' per-attack computation does)."""
        scored = [a for a in self.attacks if a.successes]
        return self._metrics(scored, self.runs[method]) if scored else None

    def _metrics(self, attacks: list[AttackRun], run: MethodRun) -> AttackMetrics:
        names = [a.attack for a in attacks]
        adv_score = np.concatenate([run.adversarial_score[n] for n in names])
        thresholds = run.thresholds()
        paired_normal = np.concatenate([run.normal_flag[a.successful] for a in attacks])
        real = np.concatenate([run.adversarial_flag(n) for n in names])
        missing = np.concatenate([run.adversarial_flag(n, MISSING_FILE_PREDICTION)
                                  for n in names])
        # the whole normal set is the negatives of every attack's table
        normals = np.tile(run.normal_flag, len(attacks))
        return AttackMetrics(
            adversarials=len(adv_score),
            auc=roc_auc(run.normal_score, adv_score),
            recall_at_fpr={f: recall_at_threshold(adv_score, t) for f, t in thresholds.items()},
            paired=Scores.from_flags(paired_normal, real),
            paper_real=Scores.from_flags(normals, real),
            paper_missing=Scores.from_flags(normals, missing),
        )

    def realised_fpr(self, method: str) -> dict[float, float]:
        """Fraction of the attacked normal inputs above each held-out threshold."""
        run = self.runs[method]
        return {f: float((run.normal_score > t).mean()) for f, t in run.thresholds().items()}

    # ---------------------------------------------------------------------------- markdown
    def markdown(self) -> str:
        info = self.info
        lines = [
            "# Adversarial input detection",
            "",
            f"Model `{info.get('model', '?')}` on `{info.get('data', '?')}`, protocol "
            f"`{info.get('protocol', '?')}`: detectors fitted on {info.get('fit_samples', '?')} "
            f"correctly classified training inputs ({info.get('detector_summary', '')}); "
            f"{info.get('attacked', '?')} correctly classified test inputs attacked "
            f"({info.get('per_class', '?')} per class), {info.get('calibration', '?')} further "
            "ones held out to set the FPR thresholds. Score = 1 − p(model's class | features).",
            "",
        ]
        lines += self.summary()
        lines += [
            "",
            "## Threshold-free and at a false-positive budget",
            "",
        ]
        lines += self._table(
            ["AUC", "R@1%", "R@5%", "P", "R", "F1"],
            lambda m: [_f(m.auc), _f(m.recall_at_fpr[0.01]), _f(m.recall_at_fpr[0.05]),
                       _f(m.paired.precision), _f(m.paired.recall), _f(m.paired.f1)])
        lines += [
            "",
            "AUC: adversarials against all attacked normal inputs. R@k%: recall at the "
            "threshold that flags k % of the held-out normals. P/R/F1: the default rule "
            "(classifier's class ≠ model's class) on each adversarial and its own normal input.",
        ]
        fpr = {m: self.realised_fpr(m) for m in self.methods}
        lines += ["", "Attacked normal inputs above the held-out thresholds (1 % / 5 %): "
                  + ", ".join(f"{METHOD_LABELS.get(m, m)} {v[0.01]:.1%} / {v[0.05]:.1%}"
                              for m, v in fpr.items()) + ". Flagged by the default rule: "
                  + ", ".join(f"{METHOD_LABELS.get(m, m)} {self.runs[m].normal_flag.mean():.1%}"
                              for m in self.methods) + "."]
        lines += [
            "",
            "## The paper's computation",
            "",
        ]
        lines += self._table(
            ["P", "R", "F1", "P (−1)", "R (−1)", "F1 (−1)"],
            lambda m: [_f(m.paper_real.precision), _f(m.paper_real.recall),
                       _f(m.paper_real.f1), _f(m.paper_missing.precision),
                       _f(m.paper_missing.recall), _f(m.paper_missing.f1)])
        lines += [
            "",
            f"Negatives: all {info.get('attacked', '?')} normal inputs of the fixed set, "
            "flagged when the classifier's class ≠ their label; positives: the attack's "
            "adversarials. P/R/F1: an adversarial is flagged when the classifier's class ≠ "
            "the adversarial's real prediction. (−1): ≠ −1, what the authors' "
            "`load_raw_prediction` returns when the trace file it looks for is missing — "
            "every adversarial is flagged, recall is 1.0 and precision is A / (A + flagged "
            "normals) whatever the detector does.",
        ]
        seconds = info.get("seconds", {})
        if seconds:
            parts = [f"{name} {_fmt_seconds(v)}" for name, v in seconds.items()]
            lines += ["", "Time: " + "; ".join(parts) + "."]
        return "\n".join(lines) + "\n"

    def summary(self) -> list[str]:
        """A compact table: per attack and method "AUC / R@5% / paired F1", then the paper's
        precision / recall with the real prediction and (with the missing-file −1)."""
        head = ["attack", "adv."]
        head += [f"{METHOD_LABELS.get(m, m)} AUC / R@5% / F1" for m in self.methods]
        head += [f"{METHOD_LABELS.get(m, m)} paper P / R (−1: P / R)" for m in self.methods]
        lines = ["## Summary", "", "| " + " | ".join(head) + " |",
                 "|---|---:|" + "---:|" * (2 * len(self.methods))]
        rows = [(a.attack, f"{a.successes}/{a.attacked}",
                 [self.metrics(a.attack, m) for m in self.methods]) for a in self.attacks]
        pooled = [self.pooled(m) for m in self.methods]
        if all(p is not None for p in pooled):
            rows.append(("**pooled**", str(pooled[0].adversarials), pooled))
        for name, adv, metrics in rows:
            cells = [name, adv]
            cells += ["–" if m is None else
                      f"{_f(m.auc)} / {_f(m.recall_at_fpr[0.05])} / {_f(m.paired.f1)}"
                      for m in metrics]
            cells += ["–" if m is None else
                      f"{_f(m.paper_real.precision)} / {_f(m.paper_real.recall)} "
                      f"({_f(m.paper_missing.precision)} / {_f(m.paper_missing.recall)})"
                      for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def _table(self, columns: list[str], cells_of: Any) -> list[str]:
        head = ["type", "attack", "adv."]
        for m in self.methods:
            label = METHOD_LABELS.get(m, m)
            head += [f"{label} {c}" for c in columns]
        k = len(columns) * len(self.methods)
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join(["---", "---", "---:"] + ["---:"] * k) + "|"]
        for a in self.attacks:
            cells = [a.family, a.attack, f"{a.successes}/{a.attacked}"]
            if not a.successes:
                cells += [NO_ADVERSARIALS] + ["–"] * (k - 1)
            else:
                for m in self.methods:
                    cells += cells_of(self.metrics(a.attack, m))
            lines.append("| " + " | ".join(cells) + " |")
        pooled = [self.pooled(m) for m in self.methods]
        if all(p is not None for p in pooled):
            cells = ["", "**pooled**", str(pooled[0].adversarials)]
            for p in pooled:
                cells += cells_of(p)
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    # ------------------------------------------------------------------------ csv and json
    def csv_rows(self) -> list[dict[str, Any]]:
        """One row per attack and method, plus a pooled row per method."""
        rows = []
        for a in [*self.attacks, None]:
            for m in self.methods:
                metrics = self.pooled(m) if a is None else self.metrics(a.attack, m)
                row: dict[str, Any] = {
                    "type": "" if a is None else a.family,
                    "attack": "pooled" if a is None else a.attack,
                    "method": m,
                    "attacked": self.info.get("attacked", "") if a is None else a.attacked,
                    "adversarials": (metrics.adversarials if metrics else 0) if a is None
                    else a.successes,
                    "status": "" if a is None else a.status,
                }
                row.update(_metric_cells(metrics))
                rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        def metrics_json(m: AttackMetrics | None) -> dict[str, Any] | None:
            return None if m is None else _metric_cells(m, rounded=False)

        return {
            "methods": self.methods,
            "info": self.info,
            "attacks": [{"attack": a.attack, "type": a.family, "attacked": a.attacked,
                         "successful": a.successful.tolist(), "seconds": a.seconds,
                         "status": a.status,
                         "metrics": {m: metrics_json(self.metrics(a.attack, m))
                                     for m in self.methods}} for a in self.attacks],
            "pooled": {m: metrics_json(self.pooled(m)) for m in self.methods},
            "inputs": {m: _run_json(r) for m, r in self.runs.items()},
        }

    def write(self, out_dir: str | Path, stem: str = "detection") -> dict[str, Path]:
        """Write ``<stem>.md``, ``.csv``, ``.json`` and the ROC figure ``.png`` (atomically)."""
        from ...io_utils import atomic_write_text

        out = Path(out_dir)
        paths = {ext: out / f"{stem}.{ext}" for ext in ("md", "csv", "json", "png")}
        atomic_write_text(paths["md"], self.markdown())
        write_csv(paths["csv"], self.csv_rows())
        write_json(paths["json"], self.to_json())
        plot_roc(self, paths["png"])
        return paths


def _f(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _fmt_seconds(value: Any) -> str:
    if isinstance(value, Mapping):
        if not value:
            return "(none)"
        return "(" + ", ".join(f"{k} {v:.1f} s" for k, v in value.items()) + ")"
    return f"{value:.1f} s"


def _metric_cells(m: AttackMetrics | None, rounded: bool = True) -> dict[str, Any]:
    keys = ["auc", *[f"recall_at_{round(f * 100)}pct_fpr" for f in FPR_BUDGETS]]
    for group in ("paired", "paper", "paper_missing"):
        keys += [f"{group}_{k}" for k in ("precision", "recall", "f1", "tp", "fp", "fn", "tn")]
    if m is None:
        return dict.fromkeys(keys, "")
    out: dict[str, Any] = {"auc": m.auc}
    for f, r in m.recall_at_fpr.items():
        out[f"recall_at_{round(f * 100)}pct_fpr"] = r
    for group, s in (("paired", m.paired), ("paper", m.paper_real),
                     ("paper_missing", m.paper_missing)):
        for k in ("precision", "recall", "f1", "tp", "fp", "fn", "tn"):
            out[f"{group}_{k}"] = getattr(s, k)
    if rounded:
        out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}
    return out


def _run_json(run: MethodRun) -> dict[str, Any]:
    return {
        "normal_score": np.round(run.normal_score, 4).tolist(),
        "normal_flag": run.normal_flag.tolist(),
        "calibration_score": np.round(run.calibration_score, 4).tolist(),
        "thresholds": {str(f): t for f, t in run.thresholds().items()},
        "attacks": {a: {"score": np.round(s, 4).tolist(),
                        "classifier_class": run.adversarial_class[a].tolist(),
                        "model_class": run.adversarial_prediction[a].tolist()}
                    for a, s in run.adversarial_score.items()},
    }


def plot_roc(report: DetectionReport, path: str | Path) -> Path:
    """ROC curves: all methods pooled over the attacks, then one panel per method with a
    curve per attack; the dots mark the held-out 5 % FPR threshold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ...io_utils import atomic_write

    methods = report.methods
    fig = Figure(figsize=(4.2 * (len(methods) + 1), 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    scored = [a for a in report.attacks if a.successes]
    axes = [fig.add_subplot(1, len(methods) + 1, i + 1) for i in range(len(methods) + 1)]
    cmap = _attack_colors([a.attack for a in report.attacks])
    for m in methods:
        run = report.runs[m]
        label = METHOD_LABELS.get(m, m)
        pooled = report.pooled(m)
        if pooled is None:
            continue
        adv = np.concatenate([run.adversarial_score[a.attack] for a in scored])
        fpr, tpr = roc_points(run.normal_score, adv)
        axes[0].plot(fpr, tpr, color=METHOD_COLORS.get(m), lw=2,
                     label=f"{label} (AUC {pooled.auc:.3f})")
        ax = axes[methods.index(m) + 1]
        for a in scored:
            f, t = roc_points(run.normal_score, run.adversarial_score[a.attack])
            ax.plot(f, t, lw=1, color=cmap[a.attack], label=a.attack)
        ax.plot(fpr, tpr, lw=2.2, color="black", label="pooled")
        threshold = run.thresholds()[0.05]
        ax.plot([float((run.normal_score > threshold).mean())],
                [float((adv > threshold).mean())], "o", color="black", ms=5)
        ax.set_title(f"{label}: AUC {pooled.auc:.3f}, R@5% {pooled.recall_at_fpr[0.05]:.2f}",
                     fontsize=9)
    for i, ax in enumerate(axes):
        ax.plot([0, 1], [0, 1], ls=":", color="gray", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false-positive rate (normal inputs flagged)", fontsize=8)
        ax.set_ylabel("true-positive rate (adversarials flagged)", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6 if i else 7, loc="lower right", ncols=2 if i else 1)
    axes[0].set_title("pooled over attacks", fontsize=9)
    fig.suptitle(f"ROC of adversarial input detection: {report.info.get('model', '')} on "
                 f"{report.info.get('data', '')} (protocol {report.info.get('protocol', '')})",
                 fontsize=10)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))


def _attack_colors(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {n: cmap(i % 20) for i, n in enumerate(names)}
