"""Class-targeted pruning, mean compensation, export and the prune CLI (issue 5)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import nnslicer
from nnslicer.apps.importance import count_to_remove, synapse_scores
from nnslicer.apps.prune import (
    PRUNE_METHODS,
    ClassContributions,
    PruneWarning,
    evaluate_pruning,
    export_pruned,
    input_profile,
    layer_input_means,
    load_exported,
    masked_finetune,
    prune,
    save_exported,
)
from nnslicer.apps.prune.channels import analyze_channels
from nnslicer.apps.prune.pruning import compensation, plan_masks
from nnslicer.cli.prune import prune_app
from nnslicer.errors import InputError
from nnslicer.models.checkpoint import load_checkpoint
from nnslicer.models.zoo import build_model

torch.set_num_threads(1)

LAYERS = ["features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2", "classifier.fc3"]


@pytest.fixture(scope="module")
def slicer(lenet):
    model, train, _, _ = lenet
    s = nnslicer.Slicer(model, 0.2)
    s.profile(train.batches(500))
    return s


@pytest.fixture(scope="module")
def contributions(lenet, slicer):
    model, train, _, _ = lenet
    nns = ClassContributions.compute(slicer, train, samples_per_class=3)
    ep = ClassContributions.compute(nnslicer.EffectivePath(model, 0.5), train, samples_per_class=3)
    return {"nnslicer": nns, "effective-path": ep}


@pytest.fixture(scope="module")
def profile(lenet):
    """The profile of the first 1000 training samples, whose means compensation folds in."""
    model, train, _, _ = lenet
    return input_profile(model, train.subset(range(1000)))


def source_for(method, contributions):
    return contributions.get("nnslicer" if method == "nnslicer-all" else method)


def weights_of(model):
    mods = dict(model.named_modules())
    return {p: mods[p].weight.detach() for p in LAYERS}


# ------------------------------------------------------------------------------ the masks


@pytest.mark.parametrize("method", PRUNE_METHODS)
def test_each_layer_loses_the_ratio(lenet, contributions, method):
    model, train, _, _ = lenet
    pruned, report = prune(
        model, source_for(method, contributions), [1, 4], 0.3, method, data=train
    )
    for stats, (path, w) in zip(report.layers, weights_of(pruned).items(), strict=True):
        assert stats.layer == path
        if method == "channel":
            rows = count_to_remove(0.3, w.shape[0])
            assert stats.neurons_removed == rows
            assert int((w.flatten(1) == 0).all(1).sum()) >= rows
            assert stats.removed == rows * w[0].numel()
        else:
            assert stats.removed == count_to_remove(0.3, w.numel())
            assert abs(stats.fraction - 0.3) <= 0.5 / w.numel()
            assert int((~report.masks[f"{path}.weight"]).sum()) == stats.removed
            assert bool((w[~report.masks[f"{path}.weight"]] == 0).all())


@pytest.mark.parametrize("method", PRUNE_METHODS)
@pytest.mark.parametrize("compensate", [False, True])
def test_ratio_zero_leaves_the_model_unchanged(lenet, contributions, profile, method,
                                               compensate):
    model, train, _, _ = lenet
    pruned, report = prune(
        model,
        source_for(method, contributions),
        [0, 2],
        0.0,
        method,
        data=train,
        compensate=compensate,
        profile=profile,
    )
    assert report.removed == 0 and not report.warnings
    for k, v in model.state_dict().items():
        assert torch.equal(v, pruned.state_dict()[k]), k


@pytest.mark.parametrize("method", ["weight", "nnslicer", "channel"])
def test_ratio_one_keeps_one_neuron_per_layer_and_warns(lenet, contributions, method):
    model, train, test, _ = lenet
    with pytest.warns(PruneWarning, match="kept the most important one"):
        pruned, report = prune(
            model, source_for(method, contributions), [3], 1.0, method, data=train
        )
    assert len(report.warnings) == len(LAYERS)
    for stats, w in zip(report.layers, weights_of(pruned).values(), strict=True):
        assert stats.kept_one and stats.neurons_removed == stats.neurons - 1
        alive = (w.flatten(1) != 0).any(1)
        assert int(alive.sum()) == 1
    assert torch.isfinite(pruned(test.x[:4])).all()


def test_a_neuron_that_loses_every_synapse_is_removed(lenet):
    model, train, test, _ = lenet
    importance = {f"{p}.weight": torch.ones_like(w) for p, w in weights_of(model).items()}
    importance["classifier.fc1.weight"][7] = 0  # fc1 has 400 synapses per neuron
    pruned, report = prune(model, importance, [0], 1 / 120, "nnslicer")
    fc1 = pruned.classifier.fc1
    assert bool((fc1.weight[7] == 0).all()) and float(fc1.bias.detach()[7]) == 0.0
    stats = {s.layer: s for s in report.layers}
    assert stats["classifier.fc1"].neurons_removed == 1
    out = {}
    fc1.register_forward_hook(lambda m, a, o: out.setdefault("fc1", o))
    pruned(test.x[:8])
    assert bool((out["fc1"][:, 7] == 0).all())
    assert bool((out["fc1"][:, :7] != 0).any())


def test_a_removed_conv_channel_zeroes_its_batchnorm(tmp_path):
    torch.manual_seed(1)
    model = randomized_resnet()
    importance = {
        n: torch.ones_like(p)
        for n, p in model.named_parameters()
        if n.endswith("weight") and p.dim() > 1
    }
    importance["layer1.0.conv1.weight"][2] = 0  # one of 4 filters: a quarter of the synapses
    pruned, report = prune(model, importance, [0], 0.25, "nnslicer")
    bn = pruned.layer1[0].bn1
    assert float(bn.weight.detach()[2]) == 0.0 and float(bn.bias.detach()[2]) == 0.0
    out = {}
    bn.register_forward_hook(lambda m, a, o: out.setdefault("bn", o))
    pruned(torch.rand(2, 1, 28, 28))
    assert bool((out["bn"][:, 2] == 0).all()) and bool((out["bn"][:, 1] != 0).any())


# ----------------------------------------------------------------------------- the rankings


def test_weight_removes_the_smallest_magnitudes(lenet):
    model, _, _, _ = lenet
    _, report = prune(model, None, [0], 0.45, "weight")
    for path, w in weights_of(model).items():
        k = count_to_remove(0.45, w.numel())
        expected = torch.argsort(w.abs().flatten(), stable=True)[:k]
        removed = torch.nonzero(~report.masks[f"{path}.weight"].flatten()).flatten()
        assert torch.equal(torch.sort(expected).values, removed)


def test_channel_removes_filters_with_the_smallest_mean_magnitude(lenet):
    model, _, _, _ = lenet
    _, report = prune(model, None, [0], 0.5, "channel")
    for path, w in weights_of(model).items():
        k = count_to_remove(0.5, w.shape[0])
        expected = torch.argsort(w.abs().flatten(1).mean(1), stable=True)[:k]
        removed = torch.nonzero(~report.masks[f"{path}.weight"].flatten(1).any(1)).flatten()
        assert torch.equal(torch.sort(expected).values, removed)


def test_random_depends_only_on_the_seed(lenet):
    model, _, _, _ = lenet
    a = prune(model, None, [0], 0.5, "random", seed=3)[1].masks
    b = prune(model, None, [0], 0.5, "random", seed=3)[1].masks
    c = prune(model, None, [0], 0.5, "random", seed=4)[1].masks
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))


def test_nnslicer_importance_is_the_summed_slice(lenet, slicer, contributions):
    model, train, _, _ = lenet
    x = torch.cat([train.x[train.y == k][:3] for k in (1, 4)])
    y = torch.tensor([1] * 3 + [4] * 3)
    direct = slicer.slice(x, target=y).synapses
    importance = contributions["nnslicer"].importance([1, 4])
    for name, t in direct.items():
        assert torch.equal(importance[name], t.abs().to(torch.float64)), name
    ep = nnslicer.EffectivePath(model, 0.5).slice(x, target=y).synapses
    ep_importance = contributions["effective-path"].importance([4, 1])
    for name, t in ep.items():
        assert torch.equal(ep_importance[name], t.abs().to(torch.float64)), name


@pytest.mark.parametrize("method", ["nnslicer", "effective-path", "nnslicer-all"])
def test_slice_methods_remove_the_least_important(lenet, contributions, method):
    model, _, _, _ = lenet
    classes = list(range(10)) if method == "nnslicer-all" else [1, 4]
    imp = source_for(method, contributions).importance(classes)
    _, report = prune(model, source_for(method, contributions), [1, 4], 0.6, method)
    for path, w in weights_of(model).items():
        keep = report.masks[f"{path}.weight"]
        i = imp[f"{path}.weight"]
        assert float(i[~keep].max()) <= float(i[keep].min())
        cut = float(i[~keep].max())  # ties at the cut go by |w|, smaller first
        tied_removed, tied_kept = (~keep) & (i == cut), keep & (i == cut)
        if tied_removed.any() and tied_kept.any():
            assert float(w.abs()[tied_removed].max()) <= float(w.abs()[tied_kept].min())


def test_nnslicer_all_equals_nnslicer_over_every_class(lenet, contributions):
    model, _, _, _ = lenet
    c = contributions["nnslicer"]
    all_masks = prune(model, c, [2], 0.5, "nnslicer-all")[1].masks
    explicit = prune(model, c.importance(range(10)), [2], 0.5, "nnslicer")[1].masks
    assert all(torch.equal(all_masks[k], explicit[k]) for k in all_masks)


# ------------------------------------------------------------------------- compensation


def test_compensation_keeps_the_mean_of_a_pruned_layer(lenet, profile):
    model, train, _, _ = lenet
    graph = analyze_channels(model, train.x[:1])
    means = layer_input_means(profile, graph)
    x = train.x[:1000]  # the samples the means were taken over
    for only in ("classifier.fc2", "features.conv2"):
        plan = plan_masks(graph, synapse_scores(model, graph, "random", [], seed=1), 0.5)
        for p in LAYERS:
            if p != only:
                plan.keep[p][:] = True
                plan.removed_neurons[p][:] = False
        shifts = compensation(graph, plan, means)
        assert set(shifts) == {only}
        pruned = copy.deepcopy(model)
        layer = pruned.get_submodule(only)
        with torch.no_grad():
            layer.weight.mul_(plan.keep[only])
            layer.bias.add_(shifts[only].float())
        outs = []
        for net in (model, pruned):
            got = []
            h = net.get_submodule(only).register_forward_hook(lambda m, a, o, g=got: g.append(o))
            with torch.no_grad():
                net(x)
            h.remove()
            outs.append(torch.cat(got).double())
        dims = (0,) if outs[0].dim() == 2 else (0, 2, 3)  # conv: average over positions too
        assert torch.allclose(outs[0].mean(dims), outs[1].mean(dims), atol=1e-4)


def test_compensation_of_a_removed_neuron_goes_to_the_next_layer(lenet, profile):
    model, train, _, _ = lenet
    importance = {f"{p}.weight": torch.ones_like(w) for p, w in weights_of(model).items()}
    importance["classifier.fc1.weight"][7] = 0
    pruned, report = prune(model, importance, [0], 1 / 120, "weight", compensate=True,
                           profile=profile)
    means = layer_input_means(profile, analyze_channels(model, train.x[:1]))
    w2, keep2 = model.classifier.fc2.weight.double(), report.masks["classifier.fc2.weight"]
    lost = ~keep2
    lost[:, 7] = True  # fc2's input 7 comes from the removed fc1 neuron
    expected = model.classifier.fc2.bias.double() + (w2 * lost) @ means["classifier.fc2"]
    assert torch.allclose(pruned.classifier.fc2.bias.double(), expected, atol=1e-5)
    assert float(pruned.classifier.fc1.bias.detach()[7]) == 0.0  # the removed neuron itself stays 0


# ----------------------------------------------------------------------------- edge cases


def test_clear_errors(lenet, contributions):
    model, train, _, _ = lenet
    with pytest.raises(InputError, match="empty"):
        prune(model, None, [], 0.5, "weight")
    with pytest.raises(InputError, match="unknown class 12"):
        prune(model, None, [1, 12], 0.5, "weight")
    with pytest.raises(InputError, match="unknown class 'seven'"):
        prune(model, None, ["seven"], 0.5, "weight", data=train)
    with pytest.raises(InputError, match="ratio"):
        prune(model, None, [1], 1.5, "weight")
    with pytest.raises(InputError, match="unknown method"):
        prune(model, None, [1], 0.5, "magnitude")
    with pytest.raises(InputError, match="target classes"):
        prune(model, None, None, 0.5, "nnslicer", data=train)
    with pytest.raises(InputError, match="training data"):
        prune(model, None, [1], 0.5, "nnslicer")
    with pytest.raises(InputError, match="effective-path contributions"):
        prune(model, contributions["nnslicer"], [1], 0.5, "effective-path")
    with pytest.raises(InputError, match="EffectivePath"):
        prune(model, nnslicer.Slicer(model), [1], 0.5, "effective-path", data=train)
    other = build_model("lenet5").eval()
    with pytest.raises(InputError, match="another model"):
        prune(model, nnslicer.Slicer(other), [1], 0.5, "nnslicer", data=train)


def test_masked_finetune_keeps_pruned_entries_at_zero(lenet, contributions):
    model, train, test, _ = lenet
    pruned, report = prune(model, contributions["nnslicer"], [0, 1], 0.7, "nnslicer")
    before = copy.deepcopy(pruned.state_dict())
    masked_finetune(pruned, report.masks, train.filter_classes([0, 1]).subset(range(64)))
    params = dict(pruned.named_parameters())
    for name, mask in report.masks.items():
        assert bool((params[name][~mask] == 0).all()), name
    assert not torch.equal(before["classifier.fc2.weight"], params["classifier.fc2.weight"])


# --------------------------------------------------------------------------------- export


def test_export_lenet_is_smaller_and_equal(lenet, contributions, tmp_path):
    model, _, test, _ = lenet
    pruned, report = prune(model, contributions["nnslicer"], [0, 1], 0.8, "nnslicer")
    assert any(s.neurons_removed for s in report.layers)
    small, ex = export_pruned(pruned, test.x[:64], latency_runs=2)
    assert ex.parameters_exported < ex.parameters_original == 61706
    assert set(ex.latency_ms) == {"1", "64"}
    with torch.no_grad():
        assert torch.allclose(pruned(test.x[:300]), small(test.x[:300]), atol=1e-4)
    save_exported(tmp_path / "small", small, {"arch": "lenet5", "arch_kwargs": {}})
    again, _ = load_exported(tmp_path / "small")
    with torch.no_grad():
        assert torch.equal(again(test.x[:50]), small(test.x[:50]))


def randomized_resnet() -> nn.Module:
    model = build_model("resnet10", in_channels=1, width=4)
    with torch.no_grad():  # BN(0) != 0 unless a removed channel's BN is zeroed
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def test_export_resnet_drops_inner_channels_and_checks_the_add():
    torch.manual_seed(0)
    model = randomized_resnet()
    x = torch.rand(16, 1, 28, 28)
    pruned, _ = prune(model, None, [0], 0.5, "channel")
    small, ex = export_pruned(pruned, x, latency_batches=())
    assert ex.parameters_exported < ex.parameters_original
    assert small.layer1[0].conv1.out_channels == 2  # inner conv: its own channel space
    assert small.conv1.out_channels == 4  # residual stream: producers disagree, kept
    with torch.no_grad():
        assert torch.allclose(pruned(x), small(x), atol=1e-4)

    # the same channel removed by every producer of the layer1 stream is dropped everywhere
    importance = {
        n: torch.ones_like(p)
        for n, p in model.named_parameters()
        if n.endswith("weight") and p.dim() > 1
    }
    importance["conv1.weight"][1] = 0
    importance["layer1.0.conv2.weight"][1] = 0
    pruned, _ = prune(model, importance, [0], 0.25, "nnslicer")
    small, _ = export_pruned(pruned, x, latency_batches=())
    assert small.conv1.out_channels == 3 and small.layer1[0].conv2.out_channels == 3
    assert small.layer1[0].conv1.in_channels == 3 and small.layer2[0].conv1.in_channels == 3
    assert small.bn1.num_features == 3
    with torch.no_grad():
        assert torch.allclose(pruned(x), small(x), atol=1e-4)


class _ViewFlatten(nn.Module):
    """conv -> activation -> x.view(batch, -1) -> linear: a flatten no rule calls one."""

    def __init__(self, activation: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.act = activation
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).view(x.size(0), -1))


@pytest.mark.parametrize(("activation", "dropped"), [
    (nn.ReLU(), True), (nn.Hardswish(), True), (nn.Mish(), True),  # f(0) = 0
    (nn.Sigmoid(), False), (nn.Softplus(), False),  # f(0) != 0: the consumer reads a constant
])
def test_export_asks_each_operator_whether_a_dead_channel_stays_zero(activation, dropped):
    torch.manual_seed(0)
    model = _ViewFlatten(activation).eval()
    with torch.no_grad():  # channel 2 of the conv is dead: zero filter, zero bias
        model.conv.weight[2] = 0
        model.conv.bias[2] = 0
    x = torch.rand(8, 1, 6, 6)
    graph = analyze_channels(model, x)
    assert graph.input_positions["fc"] == 16  # the view flattens 4 channels of 4 x 4
    small, _ = export_pruned(model, x, latency_batches=())
    assert small.conv.out_channels == (3 if dropped else 4)
    assert small.fc.in_features == (48 if dropped else 64)
    with torch.no_grad():
        assert torch.allclose(model(x), small(x), atol=1e-5)


# ----------------------------------------------------------------------- evaluation, CLI


def test_evaluate_writes_figures_csv_and_json(lenet, tmp_path):
    model, train, test, _ = lenet
    result = evaluate_pruning(
        model,
        train.subset(range(1000)),
        test,
        tmp_path,
        class_sets=[[0, 1]],
        ratios=(0.5,),
        methods=("weight", "nnslicer"),
        finetune_samples=32,
        samples_per_class=3,
        progress=False,
    )
    assert len(result.rows) == 1 * 1 * 2 * 2 * 2
    for key in ("csv", "json", "fig4", "fig5"):
        assert result.files[key].is_file()
    assert result.files["fig4"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(result.files["json"].read_text())
    assert {r["method"] for r in data["summary"]} == {"weight", "nnslicer"}
    lines = result.files["csv"].read_text().splitlines()
    assert len(lines) == 9 and "acc_target" in lines[0]
    assert all(0 <= r["acc_target"] <= 1 for r in result.rows)
    assert (tmp_path / "cache" / "contributions-nnslicer.safetensors").is_file()


def test_cli_run_and_evaluate(lenet, tmp_path):
    _, _, _, stem = lenet
    runner = CliRunner()
    res = runner.invoke(
        prune_app,
        [
            "run",
            "--model",
            str(stem),
            "--classes",
            "0,1",
            "--ratio",
            "0.6",
            "--method",
            "channel",
            "--export",
            "--latency-runs",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "run" / "prune_report.json").read_text())
    assert report["export"]["parameters_exported"] < report["export"]["parameters_original"]
    assert (tmp_path / "run" / "pruned.safetensors").is_file()
    assert load_exported(tmp_path / "run" / "exported")[0] is not None
    model, meta = load_checkpoint(tmp_path / "run" / "pruned")
    assert meta["pruning"]["method"] == "channel"

    res = runner.invoke(
        prune_app,
        [
            "evaluate",
            "--model",
            str(stem),
            "--classes",
            "0,1;2,3",
            "--ratios",
            "0.3,0.9",
            "--methods",
            "weight,random",
            "--compensation",
            "off",
            "--finetune-samples",
            "0",
            "--out",
            str(tmp_path / "eval"),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "eval" / "fig4_pruning.png").is_file()
    assert not (tmp_path / "eval" / "fig5_finetune.png").exists()

    res = runner.invoke(prune_app, ["run", "--model", str(stem), "--classes", "3", "--ratio",
                                    "1", "--method", "weight", "--out", str(tmp_path / "one"),
                                    "--quiet"])
    assert res.exit_code == 0 and res.output.count("kept the most important one") == 5

    res = runner.invoke(prune_app, ["run", "--model", str(stem), "--classes", "3", "--ratio",
                                    "0.3", "--method", "weight", "--export", "--latency-runs",
                                    "1", "--out", str(tmp_path / "said")])
    assert res.exit_code == 0, res.output
    written = sorted(p.name for p in (tmp_path / "said").iterdir())
    assert written == ["exported.json", "exported.safetensors", "prune_report.json",
                       "pruned.json", "pruned.safetensors"]
    assert res.output.count("wrote") == len(written)  # one line for every file written

    for args, message in (
        (["--classes", ""], "empty"),
        (["--classes", "0,42"], "unknown class 42"),
        (["--classes", "0", "--method", "bogus"], "unknown method"),
        (["--classes", "0", "--ratio", "2"], "ratio"),
    ):
        res = runner.invoke(
            prune_app,
            ["run", "--model", str(stem), "--out", str(tmp_path / "bad"), "--quiet", *args],
        )
        assert res.exit_code == 2, res.output
        # rich wraps at the test console's width; the message itself is a single line
        assert res.output.startswith("error: ") and message in res.output
    assert math.isfinite(float(report["accuracy_pruned"]["target"]))
