"""The benchmark harness runs end to end (quick mode, LeNet-5 only)."""

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


def test_quick_benchmark_runs(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--cases", "lenet5", "--out", str(out),
         "--budget", "5"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert [r["batch"] for r in results["slicing"]] == [1, 16]
    assert all(r["s_per_sample"] > 0 and r["rss_peak_mb"] > 0 for r in results["slicing"])
    assert results["profiling"][0]["throughput_ratio"] > 0
    assert results["ray"] == []  # the Ray comparison runs on ResNet-10 only
    assert "slice: seconds per sample" in proc.stdout
