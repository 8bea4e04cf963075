"""The worked example in docs/algorithm.md is what the engine prints."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_worked_example_output_is_in_the_doc() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "worked_example.py")],
                         capture_output=True, text=True, check=True).stdout
    doc = (ROOT / "docs" / "algorithm.md").read_text()
    assert out.strip() in doc
