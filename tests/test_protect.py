"""Selective model protection, the simulated attacker and the protect CLI (issue 5)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from typer.testing import CliRunner

import nnslicer
from nnslicer.apps.importance import class_accuracies, count_to_remove
from nnslicer.apps.protect import (
    PROTECT_METHODS,
    evaluate_protection,
    protect,
    reinitialise_hidden,
    simulate_attack,
)
from nnslicer.apps.prune import ClassContributions, count_parameters
from nnslicer.cli.protect import protect_app
from nnslicer.errors import InputError

torch.set_num_threads(1)

LAYERS = ["features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2",
          "classifier.fc3"]


@pytest.fixture(scope="module")
def sources(lenet):
    model, train, _, _ = lenet
    small = train.subset(range(1000))
    return {
        "nnslicer": ClassContributions.compute(nnslicer.Slicer(model), small,
                                               classes=[0, 1], samples_per_class=3),
        "effective-path": ClassContributions.compute(nnslicer.EffectivePath(model), small,
                                                     classes=[0, 1], samples_per_class=3),
    }


def weights(model):
    return {f"{p}.weight": model.get_submodule(p).weight.detach() for p in LAYERS}


@pytest.mark.parametrize("method", PROTECT_METHODS)
def test_hides_the_ratio_of_each_layer(lenet, sources, method):
    model, _, _, _ = lenet
    exposed, report = protect(model, sources.get(method), [0, 1], 0.2, method)
    original, shown = weights(model), weights(exposed)
    for stats, (name, mask) in zip(report.layers, report.hidden.items(), strict=True):
        assert stats.hidden == int(mask.sum()) == count_to_remove(0.2, mask.numel())
        assert bool((shown[name][mask] == 0).all())
        assert torch.equal(shown[name][~mask], original[name][~mask])
    assert count_parameters(exposed) == count_parameters(model)
    assert report.to_dict()["hidden"] == report.hidden_count


def test_weight_hides_the_largest_and_nnslicer_the_most_important(lenet, sources):
    model, _, _, _ = lenet
    _, by_weight = protect(model, None, [0, 1], 0.1, "weight")
    _, by_slice = protect(model, sources["nnslicer"], [0, 1], 0.1, "nnslicer")
    importance = sources["nnslicer"].importance([0, 1])
    for name, w in weights(model).items():
        hidden = by_weight.hidden[name]
        assert float(w.abs()[hidden].min()) >= float(w.abs()[~hidden].max())
        hidden = by_slice.hidden[name]
        imp = importance[name]
        assert float(imp[hidden].min()) >= float(imp[~hidden].max())


def test_ratio_zero_and_one(lenet):
    model, _, _, _ = lenet
    exposed, report = protect(model, None, [0], 0.0, "random")
    assert report.hidden_count == 0
    assert all(torch.equal(v, exposed.state_dict()[k]) for k, v in model.state_dict().items())
    exposed, report = protect(model, None, [0], 1.0, "weight")
    assert report.hidden_count == report.synapses
    assert all(bool((w == 0).all()) for w in weights(exposed).values())


def test_errors(lenet):
    model, train, _, _ = lenet
    with pytest.raises(InputError, match="empty"):
        protect(model, None, [], 0.1, "weight")
    with pytest.raises(InputError, match="unknown class 10"):
        protect(model, None, [10], 0.1, "weight")
    with pytest.raises(InputError, match="unknown method"):
        protect(model, None, [1], 0.1, "channel")
    exposed, report = protect(model, None, [1], 0.1, "weight")
    with pytest.raises(InputError, match="exceeds"):
        simulate_attack(exposed, report.hidden, train.subset(range(10)), budget=11)


def test_reinitialisation_is_seeded_and_bounded(lenet):
    model, _, _, _ = lenet
    exposed, report = protect(model, None, [0], 0.3, "random")
    one = reinitialise_hidden(copy.deepcopy(exposed), report.hidden, seed=5)
    two = reinitialise_hidden(copy.deepcopy(exposed), report.hidden, seed=5)
    for name, mask in report.hidden.items():
        w1, w2 = weights(one)[name], weights(two)[name]
        assert torch.equal(w1, w2)
        bound = 1 / math.sqrt(w1[0].numel())
        assert float(w1[mask].abs().max()) <= bound and bool((w1[mask] != 0).any())
        assert torch.equal(w1[~mask], weights(exposed)[name][~mask])


def test_attacker_retraining_changes_accuracy(lenet, sources):
    model, train, test, _ = lenet
    exposed, report = protect(model, sources["nnslicer"], [0, 1], 0.2, "nnslicer")
    untrained = simulate_attack(exposed, report.hidden, train, budget=0)
    retrained = simulate_attack(exposed, report.hidden, train, budget=512, epochs=2)
    a = class_accuracies(untrained, test, [0, 1])
    b = class_accuracies(retrained, test, [0, 1])
    assert a != b and b["all"] > a["all"]
    # everything is trainable: exposed weights move too
    shown = ~report.hidden["classifier.fc2.weight"]
    after, before = weights(retrained), weights(exposed)
    assert not torch.equal(after["classifier.fc2.weight"][shown],
                           before["classifier.fc2.weight"][shown])


def test_evaluate_writes_figure_csv_and_json(lenet, tmp_path):
    model, train, test, _ = lenet
    result = evaluate_protection(
        model, train.subset(range(1000)), test, tmp_path, class_sets=[[0, 1]],
        budgets=(0, 32), epochs=1, methods=("weight", "nnslicer"), samples_per_class=3,
        progress=False,
    )
    assert len(result.rows) == 1 * 3 * 2  # weight, nnslicer, all-hidden × 2 budgets
    assert result.files["fig6"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(result.files["json"].read_text())
    assert {r["method"] for r in data["summary"]} == {"weight", "nnslicer", "all-hidden"}
    assert len(result.files["csv"].read_text().splitlines()) == 7


def test_cli_run_and_evaluate(lenet, tmp_path):
    _, _, _, stem = lenet
    runner = CliRunner()
    res = runner.invoke(protect_app, [
        "run", "--model", str(stem), "--classes", "0,1", "--method", "weight", "--ratio", "0.2",
        "--budget", "64", "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet",
    ])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "run" / "protect_report.json").read_text())
    assert report["attack"]["budget"] == 64
    assert (tmp_path / "run" / "hidden.safetensors").is_file()
    assert (tmp_path / "run" / "exposed.safetensors").is_file()

    res = runner.invoke(protect_app, [
        "evaluate", "--model", str(stem), "--classes", "3,4", "--methods", "random",
        "--no-all-hidden", "--budgets", "0,16", "--epochs", "1", "--out",
        str(tmp_path / "eval"), "--quiet",
    ])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "eval" / "fig6_protection.png").is_file()

    res = runner.invoke(protect_app, [
        "evaluate", "--model", str(stem), "--budgets", "0,999999", "--out",
        str(tmp_path / "bad"), "--quiet",
    ])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "budgets" in res.output

    res = runner.invoke(protect_app, [  # -1 means "no attack"; anything lower is refused
        "run", "--model", str(stem), "--classes", "0", "--budget", "-7", "--out",
        str(tmp_path / "bad"), "--quiet",
    ])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "--budget" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
