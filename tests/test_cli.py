"""The main CLI through typer's runner: train → profile → slice → show, and one-line errors."""

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import nnslicer
from nnslicer.cli.main import app

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "lenet5"
    result = runner.invoke(app, ["train", "--epochs", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
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
    assert "features_conv1" in r.output and "synapses" in r.output
    r = runner.invoke(app, ["slice", "--model", str(trained), "--profile", str(profile),
                            "--classes", "7", "--limit", "3", "--target", "label", "--out",
                            str(s7), "--quiet"])
    assert r.exit_code == 0, r.output
    s = nnslicer.Slice.load(s7)
    assert s.num_samples == 3 and s.synapses["classifier.fc3.weight"][7].any()
    png = tmp_path / "fig.png"
    r = runner.invoke(app, ["show", str(s1), str(s7), "--out", str(png), "--quiet"])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
