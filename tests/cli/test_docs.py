"""The docs' code runs: every ```python block of README.md and docs/*.md is executed (with the
context its prose gives it, for the few that continue a described session), and the worked
example in docs/algorithm.md is what the engine prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.M | re.S)

# What the prose around a block says the reader already has, keyed by the block's first line.
_TRAINED_LENET = """
import torch
import nnslicer
from nnslicer.data.datasets import load_dataset
from nnslicer.models.zoo import build_model

torch.manual_seed(0)
model = build_model("lenet5").eval()
train = load_dataset("mnist-digits", "train", limit=60)
train_x, train_y = train.x, train.y
x = load_dataset("mnist-digits", "test", limit=4).x
slicer = nnslicer.Slicer(model, theta=0.2)
slicer.profile(train.batches(60))
"""
CONTEXT = {
    "from nnslicer.apps.detect.detector import SliceDetector, Detector": _TRAINED_LENET,
    "from nnslicer.apps.prune import prune, masked_finetune, export_pruned": _TRAINED_LENET,
}
# Blocks that are not programs, and why.
FRAGMENTS = {
    "from nnslicer.rules.ruleset import live_operands, ops": "entries of a rule table",
    "import nnslicer\nslicer = nnslicer.Slicer(model, theta=0.2)": "API synopsis with "
                                                                  "placeholders",
}
NEEDS = {"from nnslicer.apps.detect.detector import SliceDetector, Detector": "skops"}


def python_blocks() -> list[tuple[str, int, str]]:
    """(file, line, code) of every python block in README.md and docs/*.md."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            found.append((str(path.relative_to(ROOT)), text[:m.start()].count("\n") + 1,
                          m.group(1)))
    return found


def _fragment_reason(code: str) -> str | None:
    return next((why for start, why in FRAGMENTS.items() if code.startswith(start)), None)


BLOCKS = python_blocks()


def test_there_are_blocks_to_run() -> None:
    files = {f for f, _, _ in BLOCKS}
    assert "README.md" in files and len(BLOCKS) >= 4
    runnable = [b for b in BLOCKS if _fragment_reason(b[2]) is None]
    assert len(runnable) >= 3


@pytest.mark.parametrize(("doc", "line", "code"), BLOCKS,
                         ids=[f"{f}:{n}" for f, n, _ in BLOCKS])
def test_doc_code_runs(doc: str, line: int, code: str, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    why = _fragment_reason(code)
    if why is not None:
        pytest.skip(f"not a program: {why}")
    first = code.splitlines()[0]
    if first in NEEDS:
        pytest.importorskip(NEEDS[first])
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # blocks write files (slice.safetensors, runs/...)
    namespace: dict = {"__name__": "__doc_example__"}
    if first in CONTEXT:
        exec(compile(CONTEXT[first], f"<context of {doc}:{line}>", "exec"), namespace)
    exec(compile(code, f"{doc}:{line}", "exec"), namespace)


def test_readme_quick_start_uses_both_naming_schemes() -> None:
    quick = next(code for f, _, code in BLOCKS if f == "README.md")
    assert 's.neurons["features.conv1"]' in quick and 's.synapses["features.conv1.weight"]' in quick


def test_worked_example_output_is_in_the_doc() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "worked_example.py")],
                         capture_output=True, text=True, check=True).stdout
    doc = (ROOT / "docs" / "algorithm.md").read_text()
    assert out.strip() in doc


def test_license_and_citation() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = (ROOT / "CITATION.cff").read_text()
    for needle in ("cff-version:", "Dynamic Slicing for Deep Neural Networks", "Zhang",
                   "Ziqi", "Li", "Yuanchun", "Guo", "Yao", "Chen", "Xiangqun", "Liu", "Yunxin",
                   "ESEC/FSE", "2020", "10.1145/3368089.3409676"):
        assert needle in cff, needle
