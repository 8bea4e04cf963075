"""The public API of docs/spec.md §6: target forms, results, files, and one-line errors on bad
input."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnslicer
from nnslicer import FileFormatError, InputError, ProfileMismatch, TraceError, UnsupportedOperation
from nnslicer.backward import kernels

torch.set_num_threads(1)


class SmallNet(nn.Module):
    """Conv, BN, one shared ReLU, max pool, a residual add, flatten and linears."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(4 * 3 * 3, 8)
        self.fc2 = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv1(x)))
        y = self.relu(self.conv2(y) + y)
        y = self.pool(y)
        return self.fc2(self.relu(self.fc1(torch.flatten(y, 1))))


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, nnslicer.Slicer, torch.Tensor]:
    torch.manual_seed(0)
    model = SmallNet()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    slicer = nnslicer.Slicer(model, theta=0.2, batch_size=3)
    data = torch.rand(40, 2, 6, 6)
    labels = torch.randint(0, 5, (40,))
    slicer.profile([(data[:20], labels[:20]), (data[20:], labels[20:])])
    return model, slicer, torch.rand(7, 2, 6, 6)


def assert_slices_equal(a: nnslicer.Slice, b: nnslicer.Slice) -> None:
    assert list(a.synapses) == list(b.synapses) and list(a.neurons) == list(b.neurons)
    for k in a.synapses:
        assert torch.equal(a.synapses[k], b.synapses[k]), k
    for k in a.neurons:
        assert torch.equal(a.neurons[k], b.neurons[k]), k


def test_synapses_have_weight_shapes(setup) -> None:
    model, slicer, x = setup
    s = slicer.slice(x)
    params = dict(model.named_parameters())
    assert set(s.synapses) == {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}
    for name, t in s.synapses.items():
        assert t.shape == params[name].shape and t.dtype == torch.int64
    assert any(t.any() for t in s.synapses.values())


def test_target_forms_agree(setup) -> None:
    model, slicer, x = setup
    top1 = model(x).argmax(1)
    by_none = slicer.slice(x)
    by_tensor = slicer.slice(x, target=top1)
    by_mask = slicer.slice(x, target=F.one_hot(top1, 5).bool())
    assert_slices_equal(by_none, by_tensor)
    assert_slices_equal(by_none, by_mask)
    by_int = slicer.slice(x, target=3)
    assert_slices_equal(by_int, slicer.slice(x, target=torch.full((7,), 3)))
    # the criterion output neurons carry the seed
    assert by_int.neurons[by_int.meta["output_node"]][3] == 7


def test_two_outputs_per_sample_is_sum_of_each(setup) -> None:
    _, slicer, x = setup
    mask = torch.zeros(7, 5, dtype=torch.bool)
    mask[:, 1] = True
    mask[:, 4] = True
    both = slicer.slice(x, target=mask)
    # weights below the output are shared, so check the output layer row by row
    one, four = slicer.slice(x, target=1), slicer.slice(x, target=4)
    assert torch.equal(both.synapses["fc2.weight"][1], one.synapses["fc2.weight"][1])
    assert torch.equal(both.synapses["fc2.weight"][4], four.synapses["fc2.weight"][4])


def test_per_sample_sums_to_batch_and_chunking_is_invisible(setup) -> None:
    model, slicer, x = setup
    per = slicer.slice(x, per_sample=True)
    assert per.synapses["conv1.weight"].shape == (7, 4, 2, 3, 3)
    assert_slices_equal(per.total(), slicer.slice(x))
    one_chunk = nnslicer.Slicer(model, theta=0.2, batch_size=64)
    one_chunk.use_profile(slicer.current_profile)
    assert_slices_equal(one_chunk.slice(x), slicer.slice(x))
    assert_slices_equal(per.sample(2), slicer.slice(x[2:3]))


@pytest.mark.parametrize("per_sample", [True, False])
def test_chosen_synapses_equal_those_of_the_full_slice(setup, per_sample: bool) -> None:
    _, slicer, x = setup
    full = slicer.slice(x, per_sample=per_sample)
    wanted = ["conv2.weight", "fc1.weight"]
    part = slicer.slice(x, per_sample=per_sample, synapses=wanted)
    assert sorted(part.synapses) == wanted
    for name in wanted:
        assert torch.equal(part.synapses[name], full.synapses[name]), name
    for name, n in full.neurons.items():  # neurons are unaffected
        assert torch.equal(part.neurons[name], n), name
    one = slicer.slice(x, per_sample=per_sample, synapses="fc2.weight")
    assert list(one.synapses) == ["fc2.weight"]
    assert torch.equal(one.synapses["fc2.weight"], full.synapses["fc2.weight"])


def test_unknown_synapse_names_are_refused(setup) -> None:
    _, slicer, x = setup
    with pytest.raises(InputError, match=r"no synapses named \['bn.weight', 'nope'\]"):
        slicer.slice(x, synapses=["nope", "conv1.weight", "bn.weight"])


def test_class_reference_differs_and_needs_profiled_classes(setup) -> None:
    _, slicer, x = setup
    a = slicer.slice(x, reference="dataset")
    b = slicer.slice(x, reference="class")
    assert any(not torch.equal(a.synapses[k], b.synapses[k]) for k in a.synapses)
    with pytest.raises(InputError, match="reference must be one of"):
        slicer.slice(x, reference="median")


def test_kernel_and_torch_paths_agree(setup, monkeypatch) -> None:
    _, slicer, x = setup
    fast = slicer.slice(x, per_sample=True)
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert_slices_equal(fast, slicer.slice(x, per_sample=True))


def test_theta_zero_keeps_more(setup) -> None:
    model, slicer, x = setup
    wide = nnslicer.Slicer(model, theta=0.0)
    wide.use_profile(slicer.current_profile)
    narrow = nnslicer.Slicer(model, theta=0.9)
    narrow.use_profile(slicer.current_profile)
    out = slicer.graph.output_name
    # at the criterion layer θ only removes edges: θ=0.9 keeps a subset of θ=0
    a = wide.slice(x[:1]).synapses["fc2.weight"] != 0
    b = narrow.slice(x[:1]).synapses["fc2.weight"] != 0
    assert (b & ~a).sum() == 0 and a.sum() >= b.sum()
    assert out


def test_summary_and_channels(setup) -> None:
    _, slicer, x = setup
    s = slicer.slice(x)
    rows = {r.node: r for r in s.summary()}
    conv = rows["conv1"]
    assert conv.synapses_total == 4 * 2 * 9 and conv.channels_total == 4
    assert conv.synapses == int((s.synapses["conv1.weight"] != 0).sum())
    assert s.channels("conv1").shape == (4,)
    assert torch.equal(s.channels("conv1"), s.neurons["conv1"].sum((1, 2)))


def test_slice_and_profile_round_trip(setup, tmp_path) -> None:
    model, slicer, x = setup
    s = slicer.slice(x, per_sample=True)
    s.save(tmp_path / "s.safetensors")
    assert_slices_equal(s, nnslicer.Slice.load(tmp_path / "s.safetensors"))
    slicer.current_profile.save(tmp_path / "p.safetensors")
    again = nnslicer.Slicer(model, theta=0.2)
    again.use_profile(tmp_path / "p.safetensors")
    assert_slices_equal(again.slice(x), slicer.slice(x))


def test_truncated_and_wrong_files(setup, tmp_path) -> None:
    _, slicer, x = setup
    path = tmp_path / "s.safetensors"
    slicer.slice(x).save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FileFormatError, match="truncated"):
        nnslicer.Slice.load(path)
    slicer.current_profile.save(tmp_path / "p.safetensors")
    with pytest.raises(FileFormatError, match="not a slice"):
        nnslicer.Slice.load(tmp_path / "p.safetensors")
    with pytest.raises(FileFormatError, match="does not exist"):
        nnslicer.Profile.load(tmp_path / "missing.safetensors")


def test_profile_of_another_model_is_refused(setup) -> None:
    model, slicer, _ = setup
    other = SmallNet().eval()
    with pytest.raises(ProfileMismatch, match="parameters differ"):
        nnslicer.Slicer(other).use_profile(slicer.current_profile)
    different = nn.Sequential(nn.Flatten(), nn.Linear(72, 5)).eval()
    with pytest.raises(ProfileMismatch, match="node names differ"):
        nnslicer.Slicer(different).use_profile(slicer.current_profile)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.rand(2, 2, 5, 5), "sample shape"),
        (torch.full((2, 2, 6, 6), float("nan")), "NaN"),
        (torch.zeros(0, 2, 6, 6), "empty"),
        (torch.zeros(2, 2, 6, 6, dtype=torch.long), "float"),
    ],
)
def test_bad_inputs(setup, bad, message) -> None:
    _, slicer, _ = setup
    with pytest.raises(InputError, match=message):
        slicer.slice(bad)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (7, r"\[0, 5\)"),
        (torch.tensor([0, 1]), "rows"),
        (torch.zeros(7, 4, dtype=torch.bool), "shape"),
        (torch.zeros(7), "integer"),
        ("cat", "target must be"),
    ],
)
def test_bad_targets(setup, target, message) -> None:
    _, slicer, x = setup
    with pytest.raises(InputError, match=message):
        slicer.slice(x, target=target)


def test_slice_before_profile_and_empty_profile_data() -> None:
    slicer = nnslicer.Slicer(nn.Sequential(nn.Linear(3, 2)).eval())
    with pytest.raises(InputError, match="no profile"):
        slicer.slice(torch.rand(1, 3))
    with pytest.raises(InputError, match="empty"):
        slicer.profile([])
    with pytest.raises(InputError, match="labels must be in"):
        slicer.profile([(torch.rand(4, 3), torch.tensor([0, 1, 2, 0]))])


def test_train_mode_model_is_sliced_in_eval_mode() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slicer = nnslicer.Slicer(model)
    assert any("training mode" in str(w.message) for w in caught)
    assert model.training, "the user's model is left as it was"
    slicer.profile(torch.rand(10, 3))
    x = torch.rand(4, 3)
    assert torch.equal(slicer.slice(x).synapses["2.weight"], slicer.slice(x).synapses["2.weight"])


class Einsum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bi,bj->bij", x, x).flatten(1)


class Quotient(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) / self.b(x)


class Cumulative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, -1)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = Cumulative()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x
        return -x


def test_unsupported_operations_name_the_node_and_module() -> None:
    with pytest.raises(UnsupportedOperation, match=r"node 'einsum' \(einsum\) in module '1'"
                       r".*register_rule"):
        nnslicer.Slicer(nn.Sequential(nn.Linear(3, 3), Einsum()).eval())
    with pytest.raises(UnsupportedOperation, match="dividing by an input-dependent tensor"):
        nnslicer.Slicer(Quotient().eval())
    with pytest.raises(UnsupportedOperation, match=r"'cumsum' \(cumsum\) in module 'blocks.0.up'"):
        nnslicer.Slicer(_Holder(Block()).eval())
    # control flow on values: refused at the first input, with the user's line
    slicer = nnslicer.Slicer(Branchy().eval())
    with pytest.raises(TraceError, match=r"control flow depends on tensor values.*test_api.py"):
        slicer.profile(torch.rand(4, 3))


class _Holder(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([block])
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks[0](x).flatten(1))


def test_registered_rule_makes_a_custom_layer_sliceable(monkeypatch: pytest.MonkeyPatch) -> None:
    import nnslicer.rules.default

    # the registry is process-wide: leave it as found for the tests that run after this one
    monkeypatch.setattr(nnslicer.rules.default, "_REGISTERED", [])

    class Double(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.exp(x) * 0 + 2 * x  # untraceable by the table, sliced as a scale by 2

    class ScaleByTwo(nnslicer.Rule):
        family = "scale"

        def backward(self, step) -> None:
            x = step.arg(0)
            gain = torch.full_like(step.delta(x), 2.0)
            step.send(x, step.policy.pointwise(step.c_out.sign(), step.delta_out, gain,
                                               step.delta(x)))

    nnslicer.register_rule(Double, ScaleByTwo())
    model = nn.Sequential(nn.Linear(3, 3), Double(), nn.Linear(3, 2)).eval()
    slicer = nnslicer.Slicer(model)
    slicer.profile(torch.rand(20, 3))
    s = slicer.slice(torch.rand(2, 3))
    assert s.synapses["0.weight"].shape == (3, 3)


def test_functional_ops_and_inplace_add_are_traced() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.conv(x))
            y += 1.0
            y = y.view(y.size(0), -1) * 0.5
            return F.log_softmax(self.fc(y), dim=1)

    slicer = nnslicer.Slicer(Functional().eval())
    slicer.profile(torch.rand(10, 1, 6, 6))
    s = slicer.slice(torch.rand(3, 1, 6, 6))
    assert s.synapses["conv.weight"].any()


def test_effective_path_is_unsigned_and_needs_no_profile(setup) -> None:
    model, _, x = setup
    ep = nnslicer.EffectivePath(model, theta=0.5)
    s = ep.slice(x, target=2)
    assert all((t >= 0).all() for t in s.synapses.values())
    assert s.synapses["fc2.weight"][2].sum() > 0 and s.meta["reference"] == "zero"
    paths = ep.class_paths([(x, torch.tensor([0, 1, 0, 1, 0, 1, 0]))])
    assert set(paths) == {0, 1} and paths[0].num_samples == 4
