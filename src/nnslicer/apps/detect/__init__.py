"""Adversarial input detection with slices (NNSlicer §6.1) and the attacks to evaluate it.

The detectors live in :mod:`.detector`, their features in :mod:`.features` and their
classifiers in :mod:`.classifiers`; the Table 3 experiment in :mod:`.evaluate`, its report
(metrics, tables, ROC figure) in :mod:`.report` and :mod:`.metrics`; the sweep of detector
settings in :mod:`.sweep`; the attack suite in :mod:`.attacks`, its disk cache in
:mod:`.attack_cache`. Names are imported lazily so that importing the attack modules stays
light.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Detector": "detector",
    "Detection": "detector",
    "DetectorWarning": "detector",
    "SliceDetector": "detector",
    "EffectivePathDetector": "detector",
    "FeatureMapDetector": "detector",
    "DETECTORS": "detector",
    "make_detector": "detector",
    "make_classifier": "classifiers",
    "evaluate_detection": "evaluate",
    "PROTOCOLS": "evaluate",
    "DetectionReport": "report",
    "Scores": "metrics",
    "sweep_detectors": "sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
