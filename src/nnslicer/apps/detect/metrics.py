"""Detection metrics: threshold-free (ROC-AUC), at a false-positive budget, and the paper's.

Positive = adversarial throughout. Scores are "higher = more suspect" (the detectors'
1 − p(model's class | features)). A threshold for a false-positive budget is always set on
*held-out* normal inputs, never on the inputs it is then measured on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Scores", "roc_auc", "threshold_at_fpr", "recall_at_threshold", "roc_points",
           "paper_scores"]


@dataclass
class Scores:
    """Precision, recall and F1 from counts of flagged inputs; positive = adversarial."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int, tn: int) -> Scores:
        # no positive prediction: precision 0 (scikit-learn's zero_division=0 convention)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision, recall, f1, tp, fp, fn, tn)

    @classmethod
    def from_flags(cls, normal: np.ndarray, adversarial: np.ndarray) -> Scores:
        """Scores from the detector's flags on the normal and on the adversarial inputs."""
        normal, adversarial = np.asarray(normal, bool), np.asarray(adversarial, bool)
        return cls.from_counts(int(adversarial.sum()), int(normal.sum()),
                               int((~adversarial).sum()), int((~normal).sum()))


def roc_auc(normal: np.ndarray, adversarial: np.ndarray) -> float:
    """Area under the ROC curve of scores (ties count one half); NaN without both classes.

    Equals the probability that a random adversarial scores above a random normal input.
    """
    normal, adversarial = np.asarray(normal, float), np.asarray(adversarial, float)
    if not len(normal) or not len(adversarial):
        return float("nan")
    from sklearn.metrics import roc_auc_score

    truth = np.r_[np.zeros(len(normal)), np.ones(len(adversarial))]
    return float(roc_auc_score(truth, np.r_[normal, adversarial]))


def threshold_at_fpr(held_out_normal: np.ndarray, fpr: float) -> float:
    """The lowest threshold t with at most ``fpr`` of ``held_out_normal`` scoring above t.

    Inputs are flagged when ``score > t``. With ties (a decision tree's scores are mostly 0
    or 1) the realised rate may be far below ``fpr``: that is the detector's resolution.
    """
    scores = np.sort(np.asarray(held_out_normal, float))
    if not len(scores):
        raise ValueError("no held-out normal scores to set a threshold on")
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    allowed = int(np.floor(fpr * len(scores) + 1e-9))  # normals allowed above t
    # t = the (n - allowed)-th smallest score: at most `allowed` scores are strictly above it
    return float(scores[len(scores) - allowed - 1])


def recall_at_threshold(adversarial: np.ndarray, threshold: float) -> float:
    """Fraction of ``adversarial`` scores above ``threshold`` (NaN when there are none)."""
    adversarial = np.asarray(adversarial, float)
    return float((adversarial > threshold).mean()) if len(adversarial) else float("nan")


def roc_points(normal: np.ndarray, adversarial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) of the ROC curve, from (0, 0) to (1, 1)."""
    from sklearn.metrics import roc_curve

    truth = np.r_[np.zeros(len(normal)), np.ones(len(adversarial))]
    fpr, tpr, _ = roc_curve(truth, np.r_[np.asarray(normal, float), np.asarray(adversarial,
                                                                                  float)])
    return fpr, tpr


def paper_scores(normal_flags: np.ndarray, adversarial_flags: np.ndarray) -> Scores:
    """The authors' precision/recall: positives are the attack's adversarials, negatives are
    the *whole* fixed normal set (not only the counterparts of successful adversarials)."""
    return Scores.from_flags(normal_flags, adversarial_flags)
