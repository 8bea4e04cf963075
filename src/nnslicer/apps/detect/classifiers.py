"""The classifiers a detector can put on top of its features, by name.

``tree`` is the authors' choice (scikit-learn's ``DecisionTreeClassifier`` with its defaults);
``forest``, ``boosting`` and ``linear`` are the usual stronger learners; ``profile`` needs no
learning beyond means: each class's mean feature row (its *class profile*, for slices the
per-class slice that EffectivePath also builds), and the cosine similarity of an input's row
to each profile. Its score 1 − p(model's class) is then "how far is this input from the usual
decision path of the class the model gave it".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler
from sklearn.tree import DecisionTreeClassifier

from ...errors import InputError

__all__ = ["CLASSIFIERS", "ClassProfileClassifier", "FrequentColumns", "make_classifier",
           "TRUSTED_TYPES"]

CLASSIFIERS: tuple[str, ...] = ("tree", "forest", "boosting", "linear", "profile")


class ClassProfileClassifier(ClassifierMixin, BaseEstimator):
    """Nearest class profile by cosine similarity; probabilities are a softmax of
    ``sharpness`` × similarity (their order, which the ROC sees, does not depend on it)."""

    def __init__(self, sharpness: float = 20.0):
        self.sharpness = sharpness

    def fit(self, x: Any, y: np.ndarray) -> ClassProfileClassifier:
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        rows = _unit_rows(x)
        profiles = [np.asarray(rows[y == c].mean(axis=0)).ravel() for c in self.classes_]
        self.profiles_ = _unit_rows(np.vstack(profiles))
        return self

    def similarity(self, x: Any) -> np.ndarray:
        """(N, classes) cosine similarity of each row to each class profile."""
        return np.asarray(_unit_rows(x) @ self.profiles_.T)

    def predict_proba(self, x: Any) -> np.ndarray:
        z = self.sharpness * self.similarity(x)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, x: Any) -> np.ndarray:
        return self.classes_[self.similarity(x).argmax(axis=1)]


def _unit_rows(x: Any) -> Any:
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float64)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class FrequentColumns(TransformerMixin, BaseEstimator):
    """Keep the ``max_columns`` columns most often non-zero in the fitting rows, as a dense
    array (gradient boosting needs dense input; slices have ~10⁵ mostly empty columns, and
    its cost grows with the columns: 2 048 took ~40 s per 100 rounds on 200 rows)."""

    def __init__(self, max_columns: int = 256):
        self.max_columns = max_columns

    def fit(self, x: Any, y: Any = None) -> FrequentColumns:
        counts = np.asarray((x != 0).sum(axis=0)).ravel()
        order = np.argsort(-counts, kind="stable")[: self.max_columns]
        self.columns_ = np.sort(order[counts[order] > 0]) if counts.any() else order[:1]
        return self

    def transform(self, x: Any) -> np.ndarray:
        part = x[:, self.columns_]
        return (part.toarray() if sp.issparse(part) else np.asarray(part)).astype(np.float32)


def cpu_threads() -> Any:
    """A context in which scikit-learn's OpenMP/BLAS pools use torch's thread count (the
    CLI's --threads), instead of every core of a shared machine."""
    import torch
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=torch.get_num_threads())


def make_classifier(name: str, seed: int = 0) -> ClassifierMixin:
    """A fresh classifier by name (see the module docstring)."""
    if name == "tree":
        return DecisionTreeClassifier(random_state=seed)
    if name == "forest":
        return RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    if name == "boosting":
        return make_pipeline(FrequentColumns(), HistGradientBoostingClassifier(
            max_iter=50, max_leaf_nodes=15, early_stopping=False, random_state=seed))
    if name == "linear":
        return make_pipeline(MaxAbsScaler(), LogisticRegression(C=1.0, max_iter=500))
    if name == "profile":
        return ClassProfileClassifier()
    raise InputError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIERS)}")


def classifier_name(clf: ClassifierMixin) -> str:
    """The name :func:`make_classifier` knows ``clf`` by, else its class name."""
    for name in CLASSIFIERS:
        template = make_classifier(name)
        if type(template) is type(clf) and _same_steps(template, clf):
            return name
    return type(clf).__name__


def _same_steps(a: Any, b: Any) -> bool:
    steps_a, steps_b = getattr(a, "steps", None), getattr(b, "steps", None)
    if steps_a is None or steps_b is None:
        return steps_a is steps_b
    return [type(s) for _, s in steps_a] == [type(s) for _, s in steps_b]


#: our own types a saved classifier may contain (besides scikit-learn, NumPy and SciPy)
TRUSTED_TYPES: tuple[str, ...] = tuple(
    f"{cls.__module__}.{cls.__name__}" for cls in (ClassProfileClassifier, FrequentColumns))
