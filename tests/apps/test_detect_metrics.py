"""Detection metrics and classifiers on numbers worked out by hand (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from nnslicer.apps.detect.classifiers import (
    ClassProfileClassifier,
    FrequentColumns,
    make_classifier,
)
from nnslicer.apps.detect.evaluate import select_per_class
from nnslicer.apps.detect.metrics import (
    Scores,
    recall_at_threshold,
    roc_auc,
    threshold_at_fpr,
)
from nnslicer.apps.detect.report import AttackRun, DetectionReport, MethodRun
from nnslicer.errors import InputError


def test_roc_auc_by_hand():
    # 3 of the 4 (normal, adversarial) pairs are ordered right, one is a tie: (3 + 0.5) / 4
    assert roc_auc(np.array([0.1, 0.5]), np.array([0.5, 0.9])) == pytest.approx(0.875)
    assert roc_auc(np.array([0.0, 0.0]), np.array([1.0])) == 1.0
    assert np.isnan(roc_auc(np.array([0.1]), np.array([])))


def test_threshold_is_set_on_held_out_normals():
    held_out = np.arange(100) / 100  # 0.00 .. 0.99
    t = threshold_at_fpr(held_out, 0.05)
    assert (held_out > t).sum() == 5  # exactly the budget above the threshold
    assert threshold_at_fpr(held_out, 0.0) == 0.99  # nothing above: flag nothing seen
    # ties: a tree's 0/1 scores cannot resolve a budget smaller than its ones
    tree = np.r_[np.zeros(90), np.ones(10)]
    assert threshold_at_fpr(tree, 0.05) == 1.0
    assert recall_at_threshold(np.array([1.0, 1.0, 0.0]), 1.0) == 0.0
    assert recall_at_threshold(np.array([0.2, 0.7, 0.9]), 0.5) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no held-out"):
        threshold_at_fpr(np.array([]), 0.05)


def test_scores_from_counts():
    s = Scores.from_counts(tp=3, fp=1, fn=1, tn=3)
    assert (s.precision, s.recall, s.f1) == pytest.approx((0.75, 0.75, 0.75))
    assert Scores.from_counts(0, 0, 4, 4).precision == 0.0


def _report() -> DetectionReport:
    # 4 normal inputs (one flagged), an attack that fooled inputs 1 and 3
    run = MethodRun(normal_score=np.array([0.0, 0.2, 0.9, 0.1]),
                    normal_flag=np.array([False, False, True, False]),
                    calibration_score=np.linspace(0, 0.5, 20))
    run.adversarial_score["fgsm-8"] = np.array([0.8, 0.3])
    run.adversarial_class["fgsm-8"] = np.array([4, 7])  # the classifier's classes
    run.adversarial_prediction["fgsm-8"] = np.array([2, 7])  # the model's: only #1 flagged
    attacks = [AttackRun("fgsm-8", 4, np.array([1, 3]), 1.0), AttackRun("pgd-8", 4,
                                                                         np.array([]), 1.0)]
    return DetectionReport(["nnslicer"], attacks, {"nnslicer": run}, {"attacked": 4})


def test_report_metrics_by_hand():
    report = _report()
    m = report.metrics("fgsm-8", "nnslicer")
    # paired: normals 1 and 3 (not flagged) against their adversarials (one flagged)
    assert (m.paired.tp, m.paired.fp, m.paired.fn, m.paired.tn) == (1, 0, 1, 2)
    # the paper's table: all 4 normals are negatives, one of them flagged
    assert (m.paper_real.tp, m.paper_real.fp) == (1, 1)
    assert m.paper_real.precision == 0.5 and m.paper_real.recall == 0.5
    # the missing-file branch compares with -1: both adversarials flagged, recall 1.0
    assert (m.paper_missing.tp, m.paper_missing.fp) == (2, 1)
    assert m.paper_missing.recall == 1.0 and m.paper_missing.precision == pytest.approx(2 / 3)
    # AUC: 0.8 beats all 4 normals but 0.9; 0.3 beats 3 of 4 -> (3 + 3) / 8
    assert m.auc == pytest.approx(6 / 8)
    # held-out threshold at 5 % of 20 scores: the 19th smallest, 0.5 * 18/19; 0.8 is above
    assert m.recall_at_fpr[0.05] == 0.5
    assert report.metrics("pgd-8", "nnslicer") is None
    assert report.pooled("nnslicer").adversarials == 2
    md = report.markdown()
    assert "no successful adversarials" in md and "P (−1)" in md
    rows = report.csv_rows()
    assert [r["attack"] for r in rows] == ["fgsm-8", "pgd-8", "pooled"]
    assert rows[0]["paper_missing_recall"] == 1.0 and rows[1]["auc"] == ""


def test_select_per_class_is_a_fixed_set():
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0])
    pred = torch.tensor([0, 1, 1, 1, 0, 1, 0])  # input 2 misclassified
    assert select_per_class(pred, y, 2).tolist() == [0, 1, 3, 4]
    assert select_per_class(pred, y, 2, skip=2).tolist() == [5, 6]


def test_class_profile_classifier():
    x = np.array([[1.0, 0.0, 0.0], [2.0, 0.1, 0.0], [0.0, 1.0, 1.0], [0.0, 2.0, 2.1]])
    y = np.array([3, 3, 5, 5])
    clf = ClassProfileClassifier().fit(sp.csr_matrix(x), y)
    assert clf.predict(np.array([[1.0, 0.0, 0.1], [0.0, 1.0, 0.9]])).tolist() == [3, 5]
    proba = clf.predict_proba(x)
    assert proba.shape == (4, 2) and np.allclose(proba.sum(1), 1.0)
    assert (proba[:2, 0] > 0.5).all()


def test_frequent_columns_and_named_classifiers():
    x = sp.csr_matrix(np.array([[0, 1, 0, 2], [0, 1, 0, 0], [0, 0, 0, 3]], dtype=float))
    cols = FrequentColumns(max_columns=2).fit(x)
    assert cols.columns_.tolist() == [1, 3]
    assert cols.transform(x).tolist() == [[1, 2], [1, 0], [0, 3]]
    for name in ("tree", "forest", "boosting", "linear", "profile"):
        assert hasattr(make_classifier(name), "predict_proba"), name
    with pytest.raises(InputError, match="unknown classifier 'svm'"):
        make_classifier("svm")
