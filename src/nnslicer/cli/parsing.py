"""What the commands read off the command line: the options they share and the list parsers.

A parser raises ``InputError`` naming the option, which ``one_line_errors`` prints as one line.
Nothing heavy is imported here, so building the CLI stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from ..errors import InputError

if TYPE_CHECKING:
    from ..criterion import Neurons

#: the dataset commands use by default (= nnslicer.data.datasets.DEFAULT_DATASET, kept here so
#: that building the CLI does not import the data module)
DEFAULT_DATASET = "mnist-digits"

QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or tables.")
DATA_ROOT = typer.Option(None, "--data-root", help="Directory holding the dataset files.")


MODEL = typer.Option(..., "--model", help="checkpoint (stem/.json/.safetensors) or "
                     "package.module:factory")
WEIGHTS = typer.Option(None, "--weights", help="weights for a package.module:factory model")
DATA = typer.Option(DEFAULT_DATASET, "--data", help="dataset name")
THREADS = typer.Option(None, "--threads", help="torch CPU threads")
SEED = typer.Option(0, "--seed")
SAMPLES_PER_CLASS = typer.Option(None, "--samples-per-class",
                                 help="slice at most N training samples per class")
THETA = typer.Option(0.2, "--theta", help="NNSlicer θ")
EP_THETA = typer.Option(0.5, "--ep-theta", help="EffectivePath θ")

T = TypeVar("T")


def parse_floats(text: str, what: str) -> list[float]:
    return _parse_list(text, what, float, "numbers", "; give e.g. 0.1,0.5")


def parse_ints(text: str, what: str) -> list[int]:
    return _parse_list(text, what, int, "integers", "")


def _parse_list(text: str, what: str, convert: Callable[[str], T], kind: str, example: str
                ) -> list[T]:
    """'a,b,c' converted item by item; an option's comma list."""
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise InputError(f"{what} must be comma-separated {kind}, got {text!r}") from e
    if not values:
        raise InputError(f"{what} is empty{example}")
    return values


def parse_range(text: str, what: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if m is None:
        raise InputError(f"{what} must look like 2-9, got {text!r}")
    return int(m[1]), int(m[2] or m[1])


def parse_classes(text: str, names: list[str]) -> list[int]:
    """'0,1,2' or class names 'T-shirt/top,Trouser' -> sorted indices."""
    from ..apps.importance import check_classes  # torch: not for building the CLI

    items = [c.strip() for c in text.split(",") if c.strip()]
    if not items:
        raise InputError("the class set is empty; give e.g. --classes 0,1,2")
    return check_classes(items, len(names), names)


def parse_class_sets(text: str | None, names: list[str]) -> list[list[int]] | None:
    """'0,1;2,3,4' -> [[0, 1], [2, 3, 4]]; None stays None (random subsets)."""
    if text is None:
        return None
    sets = [parse_classes(part, names) for part in text.split(";") if part.strip()]
    if not sets:
        raise InputError("--classes is empty; give e.g. '0,1;2,3,4'")
    return sets


def parse_methods(text: str, allowed: tuple[str, ...]) -> list[str]:
    if text.strip() == "all":
        return list(allowed)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    for m in methods:
        if m not in allowed:
            raise InputError(f"unknown method {m!r}; choose from: {', '.join(allowed)} or all")
    if not methods:
        raise InputError("no method given")
    return methods


def parse_int_list(text: str | None, what: str = "a list") -> list[int] | None:
    """'0,5,9' -> [0, 5, 9] (None or '' -> None)."""
    if text is None or text == "":
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} takes comma-separated integers, got {text!r}") from None


def parse_target(text: str) -> str | int:
    """'top1' | 'label' | a class index."""
    if text in ("top1", "label"):
        return text
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--target takes top1, label or a class index, got {text!r}") from None


def parse_neuron(text: str) -> Neurons:
    """'layer3.1.conv2:5' -> channel 5 of that node; 'fc1:2,3' -> the point (2, 3)."""
    from ..criterion import Neurons

    node, sep, index = text.rpartition(":")
    values = parse_int_list(index, "--neuron") if sep else None
    if not node or not values:
        raise InputError(f"--neuron takes NODE:CHANNEL or NODE:i,j,..., got {text!r}")
    return Neurons(node, values[0] if len(values) == 1 and "," not in index else tuple(values))
