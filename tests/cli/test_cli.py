"""The main CLI through typer's runner: train → profile → slice → show, help, tables that fit."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import nnslicer
from nnslicer.cli.common import compact, layer_table
from nnslicer.cli.main import app
from nnslicer.cli.parsing import DEFAULT_DATASET

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "lenet5"
    result = runner.invoke(app, ["train", "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "after 1 epoch (" in result.output  # not "1 epochs"
    return out


def test_profile_slice_show(trained: Path, tmp_path: Path) -> None:
    profile = tmp_path / "p.safetensors"
    r = runner.invoke(app, ["profile", "--model", str(trained), "--limit", "300", "--out",
                            str(profile), "--quiet"])
    assert r.exit_code == 0, r.output
    assert nnslicer.Profile.load(profile).count == 300
    s1, s7 = tmp_path / "s1.safetensors", tmp_path / "s7.safetensors"
    r = runner.invoke(app, ["slice", "--model", str(trained), "--profile", str(profile),
                            "--classes", "1", "--limit", "3", "--out", str(s1)])
    assert r.exit_code == 0, r.output
    # qualified module names in the table, one line per weighted layer
    assert "features.conv1" in r.output and "classifier.fc3" in r.output
    assert "synapses" in r.output
    r = runner.invoke(app, ["slice", "--model", str(trained), "--profile", str(profile),
                            "--classes", "7", "--limit", "3", "--target", "label", "--out",
                            str(s7), "--quiet"])
    assert r.exit_code == 0, r.output
    s = nnslicer.Slice.load(s7)
    assert s.num_samples == 3 and s.synapses["classifier.fc3.weight"][7].any()
    assert torch.equal(s.synapses["classifier.fc3"], s.synapses["classifier.fc3.weight"])
    png = tmp_path / "fig.png"
    r = runner.invoke(app, ["show", str(s1), str(s7), "--out", str(png), "--quiet"])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # two files with the same stem are both drawn (labels told apart by their folder)
    (tmp_path / "other").mkdir()
    again = tmp_path / "other" / "s1.safetensors"
    again.write_bytes(s1.read_bytes())
    r = runner.invoke(app, ["show", str(s1), str(again), "--out", str(tmp_path / "f.svg")])
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "f.svg").read_text()
    assert f"{tmp_path.name}/s1" in svg and "other/s1" in svg


def test_errors_are_one_line(trained: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["slice", "--model", str(trained), "--profile",
                            str(tmp_path / "missing.safetensors"), "--quiet"])
    assert r.exit_code == 2
    assert "error:" in r.output and "does not exist" in r.output
    assert "Traceback" not in r.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    r = runner.invoke(app, ["show", str(bad)])
    assert r.exit_code == 2 and "truncated" in r.output
    r = runner.invoke(app, ["train", "--data", "no-such-data", "--quiet"])
    assert r.exit_code == 2 and "unknown dataset" in r.output


def test_help_is_plain_and_lists_every_group() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for group in ("detect", "prune", "protect", "slice", "show", "demo"):
        assert f"\n  {group} " in r.output, group
    for command in (["slice", "--help"], ["prune", "run", "--help"], ["detect", "fit", "--help"],
                    ["protect", "run", "--help"]):
        r = runner.invoke(app, command)
        assert r.exit_code == 0, (command, r.output)
        assert "<bool>" not in r.output and "╭" not in r.output, command


def test_help_imports_no_application_nor_plotting() -> None:
    code = ("import sys\nfrom nnslicer.cli.main import main\nsys.argv = ['nnslicer', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = ('nnslicer.apps', 'nnslicer.cli.prune', 'nnslicer.cli.detect', "
            "'nnslicer.viz', 'matplotlib', 'sklearn')\n"
            "print([m for m in sys.modules if m.startswith(heavy)])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "Commands:" in out and out.strip().endswith("[]"), out


def _wide_slice() -> nnslicer.Slice:
    """ResNet-sized layers under long names, no slicing needed."""
    layers = {"conv1": (64, 3, 3, 3), "layer4_0_shortcut_conv": (512, 256, 1, 1),
              "layer4_1_conv2": (512, 512, 3, 3), "fc": (10, 512)}
    neurons = {"x": torch.ones(3, 32, 32, dtype=torch.int64)}
    synapses, weights, modules, kinds = {}, {}, {}, {"x": "input"}
    for node, shape in layers.items():
        module = node.replace("_", ".")
        neurons[node] = torch.ones(shape[0], 16, 16, dtype=torch.int64) if len(shape) == 4 \
            else torch.ones(shape[0], dtype=torch.int64)
        synapses[f"{module}.weight"] = torch.randint(0, 2, shape)
        weights[node], modules[node] = f"{module}.weight", module
        kinds[node] = "Conv2d" if len(shape) == 4 else "Linear"
    return nnslicer.Slice(neurons, synapses, {"node_weights": weights, "node_modules": modules,
                                              "node_kinds": kinds, "num_samples": 16})


@pytest.mark.parametrize("width", [80, 120])
def test_slice_table_fits_the_terminal(width: int) -> None:
    console = Console(width=width, record=True, color_system=None)
    console.print(layer_table(_wide_slice(), "slice of 16 samples (θ=0.2)", width=width))
    lines = console.export_text().rstrip("\n").splitlines()
    assert all(len(line) <= width for line in lines)
    body = [line for line in lines if line.startswith(("x ", "conv1", "layer4", "fc "))]
    assert len(body) == 5  # one line per layer, none wrapped
    assert any(line.startswith("layer4.0.shortcut.conv") for line in body)
    text = "\n".join(lines)
    assert ("/2,359,296 (" if width >= 110 else "/2.36M ") in text


def test_compact_counts() -> None:
    assert [compact(n) for n in (950, 12345, 123456, 2359296, 999999)] == [
        "950", "12.3k", "123k", "2.36M", "1.00M"]


def test_default_dataset_matches_the_data_module() -> None:
    from nnslicer.data.datasets import DEFAULT_DATASET as REAL

    assert DEFAULT_DATASET == REAL


def test_demo_caveats_point_at_the_results() -> None:
    from nnslicer.cli.demo import detection_caveat, pruning_caveat

    note = pruning_caveat({"nnslicer": 0.70, "weight": 0.90})
    assert note is not None and "docs/RESULTS.md" in note and "90.0% vs 70.0%" in note
    assert pruning_caveat({"nnslicer": 0.90, "weight": 0.70}) is None
    note = detection_caveat({"nnslicer": 0.70, "feature-map": 0.90}, {"nnslicer": 0.6})
    assert note is not None and "FeatureMap" in note and "60% of normal digits" in note
    assert "docs/RESULTS.md" in note
    assert detection_caveat({"nnslicer": 0.95, "feature-map": 0.90}, {"nnslicer": 0.05}) is None


def test_demo_detection_table_fits_80_columns() -> None:
    from types import SimpleNamespace

    import numpy as np

    from nnslicer.cli.demo import detection_table

    metrics = SimpleNamespace(auc=0.8312, recall_at_fpr={0.05: 0.5},
                              paired=SimpleNamespace(f1=0.7))
    report = SimpleNamespace(
        methods=["nnslicer", "effective-path", "feature-map"],
        attacks=[SimpleNamespace(attack="fgsm-8", attacked=30, successes=0),
                 SimpleNamespace(attack="deepfool-linf", attacked=30, successes=30)],
        metrics=lambda attack, method: metrics,
        runs={m: SimpleNamespace(normal_flag=np.array([True, False, False, False]))
              for m in ("nnslicer", "effective-path", "feature-map")},
    )
    text = detection_table(report)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    assert "no adversarial inputs" in lines[1] and "0.831" in lines[2]
    assert sum("deepfool-linf" in line for line in lines) == 1 and "NNSlicer 25%" in text
