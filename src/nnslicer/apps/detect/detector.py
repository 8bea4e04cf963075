"""Adversarial input detectors (NNSlicer §6.1): a classifier learns, from normal inputs only,
to predict the model's class from some per-input features; an input whose features point to
another class than the model predicts is flagged as adversarial.

Three detectors share this logic and differ only in their features (:mod:`.features`):
:class:`SliceDetector` (NNSlicer slices, the paper's method), :class:`EffectivePathDetector`
and :class:`FeatureMapDetector` (the paper's two baselines).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import ClassifierMixin, clone
from sklearn.tree import DecisionTreeClassifier
from torch import Tensor, nn

from ...errors import FileFormatError, InputError, ProfileMismatch
from ...hashing import tensor_digest
from ...io_utils import atomic_write_bytes, atomic_write_text
from ...profile.profile import Profile, parameter_hash
from ...storage import load_tensors, save_tensors
from .classifiers import TRUSTED_TYPES, cpu_threads, make_classifier
from .features import (
    EffectivePathFeatures,
    FeatureExtractor,
    FeatureMapFeatures,
    Features,
    LayerSpec,
    SliceFeatures,
    SynapseFeatures,
    check_inputs,
)

FORMAT = "nnslicer-detector"
FORMAT_VERSION = 1
#: module roots whose types a saved classifier may contain (skops refuses anything else)
TRUSTED_MODULE_ROOTS = ("sklearn", "numpy", "scipy")


class DetectorWarning(UserWarning):
    """Something about the fitting data weakens the detector (e.g. a class is absent)."""


@dataclass
class Detection:
    """Per-input outcome of a detector."""

    is_adversarial: np.ndarray  # (N,) bool: classifier's class != model's prediction
    score: np.ndarray  # (N,) float: 1 - classifier probability of the model's prediction
    model_class: np.ndarray  # (N,) int: the model's prediction
    classifier_class: np.ndarray  # (N,) int: the classifier's prediction


def model_fingerprint(model: nn.Module) -> str:
    """Hash of the model's class, parameter names and values (detectors refuse other models)."""
    return f"{type(model).__name__}:{parameter_hash(model)}"


def classifier_params(clf: ClassifierMixin) -> dict[str, str]:
    """The classifier's hyper-parameters as strings (to tell whether a saved one may be reused)."""
    return {k: repr(v) for k, v in sorted(clf.get_params().items())}


def data_hash(x: Tensor, y: Tensor | None = None) -> str:
    """SHA-256 of a batch of inputs (and labels), to recognise the data a detector was fit on."""
    tensors = [("x", x.detach().to(torch.float32))]
    if y is not None:
        tensors.append(("y", y.detach().to(torch.int64)))
    return tensor_digest(tensors)


def classify(clf: ClassifierMixin, feats: Features, pred: np.ndarray) -> Detection:
    """Flags and scores of a fitted classifier: flagged when its class is not the model's
    prediction ``pred``; score = 1 − its probability of ``pred`` (1 for an unseen class)."""
    clf_class = np.asarray(clf.predict(feats)).astype(np.int64)
    if hasattr(clf, "predict_proba"):
        proba = np.asarray(clf.predict_proba(feats))
        column = {int(c): i for i, c in enumerate(clf.classes_)}
        p_model = np.array([proba[r, column[p]] if p in column else 0.0
                            for r, p in enumerate(pred.tolist())])
        score = 1.0 - p_model
    else:
        score = (clf_class != pred).astype(np.float64)
    return Detection(clf_class != pred, score, pred.astype(np.int64), clf_class)


class Detector:
    """Base detector: features from an extractor, a scikit-learn classifier on top.

    ``fit(x, y=None)`` learns from normal inputs; with labels ``y`` the inputs the model
    misclassifies are left out (their features describe a wrong decision). The classifier's
    target is always the model's own prediction.
    """

    method: ClassVar[str]
    extractor_type: ClassVar[type[FeatureExtractor]]

    def __init__(self, model: nn.Module, *, layers: LayerSpec = "last",
                 classifier: ClassifierMixin | str | None = None, batch_size: int = 16,
                 progress: bool = False, **extractor_options: Any):
        self.model = model
        self.fingerprint = model_fingerprint(model)
        self.extractor = self.extractor_type(model, layers, batch_size=batch_size,
                                             progress=progress, **extractor_options)
        if isinstance(classifier, str):
            classifier = make_classifier(classifier)
        self.classifier_template = classifier if classifier is not None else \
            DecisionTreeClassifier(random_state=0)
        self.classifier: ClassifierMixin | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.num_classes: int | None = None
        self.class_counts: np.ndarray | None = None
        self.fit_info: dict[str, Any] = {}

    # ---------------------------------------------------------------- fitting
    @property
    def fitted(self) -> bool:
        return self.classifier is not None

    @property
    def progress(self) -> bool:
        return self.extractor.progress

    @progress.setter
    def progress(self, value: bool) -> None:
        self.extractor.progress = value

    def fit(self, x: Tensor, y: Tensor | None = None) -> Detector:
        """Fit the classifier on features of normal inputs ``x`` (labels ``y`` optional)."""
        check_inputs(x)
        if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
            raise InputError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        self.input_shape = tuple(x.shape[1:])
        layers = self.extractor.bind(x)
        last = self.extractor.all_layers[-1] if self.extractor.all_layers else None
        if isinstance(self.extractor, SynapseFeatures) and last in layers:
            warnings.warn(
                f"the features include the synapses of the last layer ({last.module_path}); "
                "with the prediction as criterion only its row of that class is in the slice, "
                "so the classifier reads the class off it and the detector flags almost nothing",
                DetectorWarning, stacklevel=2,
            )
        pred = self.extractor.predictions(x)
        keep = torch.ones(x.shape[0], dtype=torch.bool) if y is None else pred == y.cpu()
        if not keep.any():
            raise InputError("the model misclassifies every fitting input; nothing to learn from")
        self.extractor.prepare(x, y)
        feats, model_pred = self.extractor.extract(x[keep], desc=f"{self.method} fit")
        k = self._num_outputs(x)
        counts = np.bincount(model_pred, minlength=k)
        absent = [int(c) for c in np.flatnonzero(counts == 0)]
        if absent:
            warnings.warn(
                f"class(es) {absent} are absent from the fitting data (as predicted by the "
                "model); inputs the model assigns to them will always be flagged adversarial",
                DetectorWarning, stacklevel=2,
            )
        self.classifier = clone(self.classifier_template)
        with cpu_threads():
            self.classifier.fit(feats, model_pred)
        self.num_classes = k
        self.class_counts = counts
        self.fit_info = {
            "samples": int(x.shape[0]),
            "used": int(keep.sum()),
            "dropped_misclassified": int((~keep).sum()),
            "absent_classes": absent,
            "data_hash": data_hash(x, y),
        }
        return self

    def _num_outputs(self, x: Tensor) -> int:
        with torch.no_grad():
            return int(self.extractor.slicer.graph.module(
                x[:1].to(self.extractor.slicer.device)).shape[1])

    # -------------------------------------------------------------- detection
    def features(self, x: Tensor) -> tuple[Features, np.ndarray]:
        """The classifier's input for ``x`` and the model's predictions."""
        self._check_ready(x)
        return self.extractor.extract(x, desc=f"{self.method} detect")

    def detect(self, x: Tensor) -> Detection:
        """Flags, scores and both predictions for ``x`` (features computed once)."""
        feats, pred = self.features(x)
        return self.detect_features(feats, pred)

    def detect_features(self, feats: Features, pred: np.ndarray) -> Detection:
        """Detection from precomputed features (as returned by :meth:`features`)."""
        if self.classifier is None:
            raise InputError("the detector is not fitted; call fit(x) or load a saved detector")
        with cpu_threads():
            return classify(self.classifier, feats, pred)

    def predict(self, x: Tensor) -> np.ndarray:
        """Bool array: True where ``x`` is flagged as adversarial."""
        return self.detect(x).is_adversarial

    def score(self, x: Tensor) -> np.ndarray:
        """1 − the classifier's probability of the model's predicted class (higher = suspect)."""
        return self.detect(x).score

    def _check_ready(self, x: Tensor) -> None:
        if not self.fitted:
            raise InputError("the detector is not fitted; call fit(x) or load a saved detector")
        check_inputs(x, self.input_shape)

    # ------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the detector's feature extractor."""
        layers = self.extractor.layers
        return {
            "method": self.method,
            "layers": [layer.node for layer in layers] if layers else self.extractor.layer_spec,
            **self.extractor.config(),
        }

    def save(self, directory: str | Path) -> Path:
        """Write the detector to ``directory``: JSON config, safetensors arrays, skops classifier.

        The JSON file is written last, so a directory with it holds a complete detector.
        """
        if not self.fitted:
            raise InputError("cannot save a detector that is not fitted; call fit(x) first")
        import sklearn
        import skops.io

        from ... import __version__

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {"class_counts": torch.from_numpy(self.class_counts.astype(np.int64))}
        save_tensors(out / "arrays.safetensors", arrays, {"kind": "detector-arrays"})
        profile = getattr(self.extractor.slicer, "current_profile", None)
        if isinstance(self.extractor, SliceFeatures) and profile is not None:
            profile.save(out / "profile.safetensors")
        atomic_write_bytes(out / "classifier.skops", skops.io.dumps(self.classifier))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config(),
            "model": self.fingerprint,
            "input_shape": list(self.input_shape or ()),
            "num_classes": self.num_classes,
            "num_features": self.extractor.num_features,
            "feature_layout": self.extractor.layout(),
            "classifier": type(self.classifier).__name__,
            "classifier_params": classifier_params(self.classifier),
            "fit": self.fit_info,
            "versions": {"nnslicer": __version__, "sklearn": sklearn.__version__},
        }
        atomic_write_text(out / "detector.json", json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path, model: nn.Module, *, progress: bool = False,
             batch_size: int | None = None, trusted: list[str] | None = None) -> Detector:
        """Load a detector saved by :meth:`save` for ``model``.

        ProfileMismatch if it was fitted on another model. The classifier is read with skops;
        it may only hold types of scikit-learn, NumPy and SciPy, plus the ``trusted`` type names.
        """
        directory = Path(directory)
        meta = read_meta(directory)
        found = model_fingerprint(model)
        if meta["model"] != found:
            raise ProfileMismatch(
                f"the detector in {directory} was fitted for another model ({meta['model'][:24]}… "
                f"≠ {found[:24]}…); fit a detector for this model"
            )
        config = dict(meta["config"])
        method = config.pop("method")
        detector_cls = DETECTORS.get(method)
        if detector_cls is None or (cls is not Detector and detector_cls is not cls):
            raise FileFormatError(f"{directory} holds a {method!r} detector, not {cls.__name__}")
        layers = config.pop("layers")
        saved_batch = config.pop("batch_size", 16)
        options = dict(config)
        if detector_cls is SliceDetector:
            profile_path = directory / "profile.safetensors"
            options["profile"] = Profile.load(profile_path)
        det = detector_cls(model, layers=layers, batch_size=batch_size or saved_batch,
                           progress=progress, **options)
        tensors, _ = load_tensors(directory / "arrays.safetensors", "detector-arrays")
        det.classifier = _load_classifier(directory / "classifier.skops", trusted or [])
        det.classifier_template = clone(det.classifier)
        det.class_counts = tensors["class_counts"].numpy()
        det.num_classes = int(meta["num_classes"])
        det.input_shape = tuple(meta["input_shape"])
        det.fit_info = dict(meta.get("fit", {}))
        example = torch.zeros((1, *det.input_shape))
        det.extractor.bind(example)
        if det.extractor.num_features != meta["num_features"]:
            raise FileFormatError(
                f"{directory}: the layers give {det.extractor.num_features} features but the "
                f"classifier was fitted on {meta['num_features']}; fit the detector again"
            )
        return det


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The JSON description of a saved detector (FileFormatError if missing or malformed)."""
    path = Path(directory) / "detector.json"
    if not path.is_file():
        raise FileFormatError(f"no saved detector in {directory} ({path.name} is missing)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path} is not valid JSON ({exc}); save the detector again") \
            from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FileFormatError(f"{path} is not an nnslicer detector")
    if meta.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(
            f"{path} has detector format {meta.get('format_version')}, this nnslicer reads "
            f"{FORMAT_VERSION}; fit the detector again"
        )
    return meta


def _load_classifier(path: Path, trusted: list[str]) -> ClassifierMixin:
    import skops.io

    if not path.is_file():
        raise FileFormatError(f"classifier file {path} is missing; save the detector again")
    data = path.read_bytes()
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises several types for a corrupt file
        raise FileFormatError(f"{path} is not a readable skops file ({exc})") from exc
    refused = [t for t in untrusted if t.split(".", 1)[0] not in TRUSTED_MODULE_ROOTS
               and t not in trusted and t not in TRUSTED_TYPES]
    if refused:
        raise FileFormatError(
            f"{path} contains types outside scikit-learn/NumPy/SciPy: {', '.join(refused)}; "
            "pass trusted=[...] to Detector.load only if you trust who wrote it"
        )
    return skops.io.loads(data, trusted=untrusted)


class SliceDetector(Detector):
    """NNSlicer's detector: features are the per-input slice's synapse contributions.

    Options: ``theta`` (0.2), ``reference`` ("dataset"), ``profile`` (a Profile or path;
    default: profile the fitting data), ``representation`` ("signed"), ``cache_dir``.
    """

    method = "nnslicer"
    extractor_type = SliceFeatures


class EffectivePathDetector(Detector):
    """Baseline: features are the per-input EffectivePath synapse paths (``theta`` 0.5)."""

    method = "effective-path"
    extractor_type = EffectivePathFeatures


class FeatureMapDetector(Detector):
    """Baseline: features are the chosen layers' feature maps, flattened."""

    method = "feature-map"
    extractor_type = FeatureMapFeatures


DETECTORS: dict[str, type[Detector]] = {
    d.method: d for d in (SliceDetector, EffectivePathDetector, FeatureMapDetector)
}


def make_detector(method: str, model: nn.Module, **options: Any) -> Detector:
    """A detector by method name: nnslicer, effective-path or feature-map."""
    detector_cls = DETECTORS.get(method)
    if detector_cls is None:
        raise InputError(f"unknown detection method {method!r}; known: {', '.join(DETECTORS)}")
    return detector_cls(model, **options)
