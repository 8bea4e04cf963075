"""Selective model protection, the simulated attackers and the protect CLI (issues 5, 14)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import nnslicer
from nnslicer.apps.importance import class_accuracies, count_to_remove
from nnslicer.apps.protect import (
    ATTACKERS,
    PROTECT_METHODS,
    evaluate_protection,
    init_from_exposed_stats,
    load_hidden,
    log_budgets,
    protect,
    protection_cost,
    recovery,
    reinitialise_hidden,
    restore,
    save_hidden,
    simulate_attack,
)
from nnslicer.apps.protect import evaluate as protect_evaluate
from nnslicer.apps.prune import ClassContributions, count_parameters
from nnslicer.cli.protect import protect_app
from nnslicer.data.datasets import ArrayDataset, load_dataset
from nnslicer.errors import FileFormatError, InputError
from nnslicer.models.checkpoint import load_checkpoint
from nnslicer.models.zoo import build_model

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


def tiny_resnet() -> nn.Module:
    """ResNet-10 of width 2 with non-trivial BatchNorm parameters and statistics."""
    torch.manual_seed(1)
    model = build_model("resnet10", in_channels=1, width=2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def noise_data(n: int = 64) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10, "noise",
                        [str(k) for k in range(10)])


def test_hidden_attacker_changes_nothing_exposed():
    model = tiny_resnet()
    data = noise_data()
    exposed, report = protect(model, None, [0], 0.3, "random", seed=3)
    start = reinitialise_hidden(copy.deepcopy(exposed), report.hidden, seed=7)
    hidden_run = simulate_attack(exposed, report.hidden, data, budget=64, epochs=2,
                                 attacker="hidden", seed=7)
    all_run = simulate_attack(exposed, report.hidden, data, budget=64, epochs=2,
                              attacker="all", seed=7)
    before, after, free = (m.state_dict() for m in (start, hidden_run, all_run))
    moved = 0
    for name, value in before.items():
        mask = report.hidden.get(name)
        shown = ~mask if mask is not None else torch.ones(value.shape, dtype=torch.bool)
        assert torch.equal(after[name][shown], value[shown]), name  # bit for bit
        if mask is not None:
            moved += int((after[name][mask] != value[mask]).sum())
    assert moved > 0.5 * report.hidden_count  # the hidden weights were trained
    # the 'all' attacker moves exposed weights, BatchNorm parameters and statistics
    for name in ("conv1.weight", "bn1.weight", "bn1.running_mean"):
        shown = ~report.hidden.get(name, torch.zeros(before[name].shape, dtype=torch.bool))
        assert not torch.equal(free[name][shown], before[name][shown]), name
    # parameters come back trainable
    assert all(p.requires_grad for p in hidden_run.parameters())
    # without training, 'hidden' and 'all' stop at the same draw (the evaluation reuses it)
    a, b = (simulate_attack(exposed, report.hidden, data, budget=0, attacker=x, seed=7)
            for x in ("all", "hidden"))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_stats_attacker_draws_from_the_exposed_statistics(lenet):
    model, _, _, _ = lenet
    exposed, report = protect(model, None, [0], 0.3, "weight")
    drawn = init_from_exposed_stats(copy.deepcopy(exposed), report.hidden, seed=2)
    default = reinitialise_hidden(copy.deepcopy(exposed), report.hidden, seed=2)
    differs = 0
    for name, mask in report.hidden.items():
        w, shown = weights(drawn)[name], weights(exposed)[name][~mask].double()
        assert torch.equal(w[~mask], weights(exposed)[name][~mask])
        values = w[mask].double()
        mu, sigma, n = float(shown.mean()), float(shown.std(unbiased=False)), values.numel()
        if n >= 500:
            assert abs(float(values.mean()) - mu) < 4 * sigma / math.sqrt(n), name
            assert abs(float(values.std()) / sigma - 1) < 0.1, name
            d = weights(default)[name][mask].double()
            differs += abs(float(d.std()) / sigma - 1) > 0.3
    assert differs >= 1  # on this model the default draw has another scale
    budget0 = simulate_attack(exposed, report.hidden, load_dataset("mnist-digits", "test"),
                              budget=0, attacker="stats", seed=2)
    assert all(torch.equal(v, budget0.state_dict()[k]) for k, v in drawn.state_dict().items())
    # a layer with nothing exposed falls back to the default draw
    exposed, report = protect(model, None, [0], 1.0, "weight")
    one = init_from_exposed_stats(copy.deepcopy(exposed), report.hidden, seed=2)
    two = reinitialise_hidden(copy.deepcopy(exposed), report.hidden, seed=2)
    assert all(torch.equal(v, two.state_dict()[k]) for k, v in one.state_dict().items())
    data = load_dataset("mnist-digits", "test").subset(range(64))
    one, two = (simulate_attack(exposed, report.hidden, data, budget=64, epochs=1, attacker=x,
                                seed=2) for x in ("stats", "all"))
    assert all(torch.equal(v, two.state_dict()[k]) for k, v in one.state_dict().items())


def test_unknown_attacker(lenet):
    model, train, _, _ = lenet
    exposed, report = protect(model, None, [1], 0.1, "weight")
    with pytest.raises(InputError, match="unknown attacker 'smart'; choose from: all, hidden"):
        simulate_attack(exposed, report.hidden, train, budget=1, attacker="smart")
    assert set(ATTACKERS) == {"all", "hidden", "stats"}


def test_secret_round_trip_and_cost(lenet, tmp_path):
    model, _, test, _ = lenet
    exposed, report = protect(model, None, [0], 0.1, "random", seed=4)
    path = save_hidden(tmp_path / "secret.safetensors", model, report.hidden)
    back = restore(exposed, load_hidden(path))
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
    assert not torch.equal(exposed.state_dict()["classifier.fc1.weight"],
                           model.state_dict()["classifier.fc1.weight"])
    cost = protection_cost(model, report.hidden, test.x[:1])
    n_params = sum(p.numel() for p in model.parameters())
    assert cost["hidden"] == report.hidden_count and cost["parameters"] == n_params
    assert cost["model_bytes"] == 4 * n_params  # LeNet-5 has no buffers
    assert cost["value_bytes"] == 4 * report.hidden_count
    assert cost["mask_bytes"] == sum(-(-m.numel() // 8) for m in report.hidden.values())
    assert cost["secret_bytes"] < path.stat().st_size < cost["secret_bytes"] + 4096
    assert 0.099 < cost["hidden_fraction_of_macs"] < 0.101  # 10 % of every layer
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FileFormatError, match="not a readable protection secret"):
        load_hidden(tmp_path / "bad.safetensors")


def test_evaluate_writes_figures_csv_and_json(lenet, tmp_path):
    model, train, test, _ = lenet
    result = evaluate_protection(
        model, train.subset(range(1000)), test, tmp_path, class_sets=[[0, 1]],
        ratios=(0.1, 0.2), budgets=(0, 32), epochs=1, methods=("weight", "nnslicer"),
        attackers=("all", "hidden"), samples_per_class=3, progress=False,
    )
    # (weight, nnslicer) × 2 ratios + all-hidden once, × 2 attackers × 2 budgets
    assert len(result.rows) == (2 * 2 + 1) * 2 * 2
    for name in ("fig6_0.1", "fig6_0.2", "recovery_png"):
        assert result.files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(result.files["json"].read_text())
    assert {r["method"] for r in data["summary"]} == {"weight", "nnslicer", "all-hidden"}
    assert len(result.files["csv"].read_text().splitlines()) == 1 + len(result.rows)
    assert {(c["method"], c["ratio"]) for c in result.costs} == {
        ("weight", 0.1), ("weight", 0.2), ("nnslicer", 0.1), ("nnslicer", 0.2),
        ("all-hidden", 1.0)}
    assert len(result.recovery) == 5 * 2
    # the budget-0 attack of 'hidden' is the one of 'all' (checked in the attacker test)
    copied = {(r["method"], r["attacker"], r["budget"]) for r in result.rows if r["same_as"]}
    assert copied == {(m, "hidden", 0) for m in ("weight", "nnslicer", "all-hidden")}


def test_evaluate_resumes_and_refuses_other_settings(lenet, tmp_path, monkeypatch):
    model, train, test, _ = lenet
    pool = train.subset(range(300))
    kwargs = {"class_sets": [[0, 1]], "budgets": (0, 16), "epochs": 1, "methods": ("weight",),
              "attackers": ("hidden",), "all_hidden": False, "progress": False}
    first = evaluate_protection(model, pool, test, tmp_path, ratios=(0.1,), **kwargs)
    calls = []
    real = protect_evaluate.simulate_attack

    def counting(*args, **kw):
        calls.append(kw["budget"])
        return real(*args, **kw)

    monkeypatch.setattr(protect_evaluate, "simulate_attack", counting)
    again = evaluate_protection(model, pool, test, tmp_path, ratios=(0.1,), **kwargs)
    assert calls == [] and again.rows == first.rows
    grown = evaluate_protection(model, pool, test, tmp_path, ratios=(0.1, 0.2), **kwargs)
    assert calls == [0, 16] and len(grown.rows) == 4  # only the new ratio was attacked
    assert grown.rows[:2] == first.rows
    with pytest.raises(InputError, match="other settings.*epochs: 1 there, 2 now"):
        evaluate_protection(model, pool, test, tmp_path, ratios=(0.1,),
                            **{**kwargs, "epochs": 2})
    calls.clear()
    evaluate_protection(model, pool, test, tmp_path, ratios=(0.1,), restart=True,
                        **{**kwargs, "epochs": 2})
    assert calls == [0, 16]


def test_log_budgets():
    assert log_budgets(4000) == [0, 10, 20, 50, 100, 200, 500, 1000, 2000, 4000]
    assert log_budgets(60000)[-4:] == [10000, 20000, 50000, 60000]
    assert log_budgets(1000) == [0, 10, 20, 50, 100, 200, 500, 1000]
    assert log_budgets(5) == [0, 5]
    with pytest.raises(InputError, match="empty"):
        log_budgets(0)


def test_recovery_is_the_first_budget_reaching_the_level():
    def row(subset, budget, acc, method="m"):
        return {"subset": subset, "method": method, "ratio": 0.1, "attacker": "all",
                "budget": budget, "acc_target": acc, "base_target": 1.0}

    rows = [row(0, 0, 0.0), row(0, 10, 0.95), row(0, 100, 0.85),
            row(1, 0, 0.0), row(1, 10, 0.5), row(1, 100, 0.97),
            row(0, 0, 0.1, "n"), row(0, 10, 0.2, "n")]
    got = {r["method"]: r for r in recovery(rows, 0.9)}
    assert got["m"]["per_subset"] == [10, 100] and got["m"]["subsets_recovered"] == 2
    assert got["m"]["budget"] == 100  # mean 0.725 at 10, 0.91 at 100
    assert got["n"]["budget"] is None and got["n"]["per_subset"] == [None]
    assert got["n"]["max_budget"] == 10


def test_cli_run_and_evaluate(lenet, tmp_path):
    _, _, _, stem = lenet
    runner = CliRunner()
    res = runner.invoke(protect_app, [
        "run", "--model", str(stem), "--classes", "0,1", "--method", "weight", "--ratio", "0.2",
        "--budget", "64", "--epochs", "1", "--attacker", "hidden", "--out",
        str(tmp_path / "run"), "--quiet",
    ])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "run" / "protect_report.json").read_text())
    assert report["attack"]["budget"] == 64 and report["attack"]["attacker"] == "hidden"
    assert report["cost"]["hidden"] == report["protection"]["hidden"]
    assert (tmp_path / "run" / "hidden.safetensors").is_file()
    assert (tmp_path / "run" / "exposed.safetensors").is_file()
    # the two files give back the original model exactly
    exposed, _ = load_checkpoint(tmp_path / "run" / "exposed")
    original, _ = load_checkpoint(stem)
    back = restore(exposed, load_hidden(tmp_path / "run" / "hidden.safetensors"))
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in original.state_dict().items())

    res = runner.invoke(protect_app, [
        "evaluate", "--model", str(stem), "--classes", "3,4", "--methods", "random",
        "--no-all-hidden", "--budgets", "0,16", "--epochs", "1", "--ratios", "0.1",
        "--attackers", "hidden,stats", "--out", str(tmp_path / "eval"), "--quiet",
    ])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "eval" / "fig6_protection_ratio0.1.png").is_file()
    rows = json.loads((tmp_path / "eval" / "protect_results.json").read_text())["rows"]
    assert {r["attacker"] for r in rows} == {"hidden", "stats"} and len(rows) == 4

    res = runner.invoke(protect_app, [
        "evaluate", "--model", str(stem), "--attackers", "all,smart", "--out",
        str(tmp_path / "bad"), "--quiet",
    ])
    assert res.exit_code == 2 and res.output.startswith("error: unknown attacker 'smart'")

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
