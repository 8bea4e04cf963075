"""Tracing what fx alone refuses, batch layouts, composite layers, rule sets and criteria.

Composite layers: the traced (rewritten) model must give the original's outputs for every
configuration, and synapses keep the layer's own parameter names. Concrete-shape tracing must
serve every batch size. Layouts: a sample's slice does not depend on where the model keeps the
batch. Intermediate criteria: slicing a node's neuron equals slicing the model cut at that node.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnslicer
from nnslicer import InputError, Neurons, TraceError, UnsupportedOperation

torch.set_num_threads(1)


def _profiled(model: nn.Module, shape: tuple[int, ...], batches: int = 3, seed: int = 0,
              **kwargs) -> nnslicer.Slicer:
    g = torch.Generator().manual_seed(seed)
    slicer = nnslicer.Slicer(model.eval(), **kwargs)
    slicer.profile([torch.randn((8, *shape), generator=g) for _ in range(batches)])
    return slicer


def _same_outputs(slicer: nnslicer.Slicer, model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        want, got = model(x), slicer.graph.module(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# --- models fx refuses -----------------------------------------------------------------------

class OptionalArgs(nn.Module):
    """timm-style ``forward(x, attn_mask=None, is_causal=False)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x, attn_mask=None, is_causal=False, scale=1.0):
        if attn_mask is not None:
            x = x + attn_mask
        if is_causal:
            x = x.flip(-1)
        return self.fc(x) * scale


class ShapeBranches(nn.Module):
    """MobileViT-style control flow on shapes, and a loop over a traced size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 3, 3)

    def forward(self, x):
        B, C, H, W = x.shape
        if H % 4 != 0:  # pad to a multiple of 4, as patch-based models do
            x = F.pad(x, (0, 0, 0, 4 - H % 4))
        y = self.conv(x)
        rows = [y[:, :, i].amax(-1) for i in range(0, y.size(2), 2)]
        return self.fc(torch.stack(rows[:3], -1).reshape(B, -1))


def test_optional_forward_arguments_are_fixed_to_their_defaults() -> None:
    model = OptionalArgs().eval()
    slicer = _profiled(model, (6,))
    assert [n.op for n in slicer.graph.nodes].count("placeholder") == 1
    x = torch.randn(4, 6)
    _same_outputs(slicer, model, x)
    assert slicer.slice(x).synapses["fc.weight"].any()


def test_shape_control_flow_is_traced_with_concrete_shapes_for_any_batch_size() -> None:
    model = ShapeBranches().eval()
    slicer = nnslicer.Slicer(model)
    with pytest.raises(InputError, match="traced with the shapes of its first input"):
        slicer.nodes()
    slicer.profile([torch.randn(8, 2, 6, 5) for _ in range(2)])
    x = torch.randn(5, 2, 6, 5)
    for batch in (1, 2, 5):
        _same_outputs(slicer, model, x[:batch])
    whole = slicer.slice(x, per_sample=True)
    for i in (0, 3):  # one trace serves every batch size: a sample alone gives the same slice
        alone = slicer.slice(x[i : i + 1])
        for name, t in alone.synapses.items():
            assert torch.equal(whole.synapses[name][i], t), name


def test_value_control_flow_names_the_line() -> None:
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    slicer = nnslicer.Slicer(Branchy())
    with pytest.raises(TraceError, match=r"tensor values.*test_tracing.py:\d+"):
        slicer.slice(torch.randn(2, 3))


def test_unsupported_operator_names_its_module_and_the_users_line() -> None:
    class Inner(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 1)

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Sequential(nn.Linear(4, 4), Inner())
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.block(x))

    with pytest.raises(UnsupportedOperation,
                       match=r"'cumsum' \(cumsum\) in module 'block.1' \(at .*test_tracing.py"
                             r":\d+\).*register_rule"):
        nnslicer.Slicer(Outer().eval())


# --- layouts ------------------------------------------------------------------------------------

class SequenceFirst(nn.Module):
    """Batch-first input, a sequence-first core (the batch in dim 1), and window-merged
    batches (B·windows in dim 0, as Swin's window attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):  # (B, 6, 4)
        h = self.proj(x).transpose(0, 1)  # (6, B, 8)
        h = self.norm(h + h.mean(0, keepdim=True))
        w = h.transpose(0, 1).reshape(-1, 2, 8)  # (B·3, 2, 8)
        w = torch.softmax(w @ w.transpose(1, 2), -1) @ w
        return self.fc(w.reshape(x.shape[0], 6, 8).mean(1))


def test_samples_are_followed_wherever_the_batch_sits() -> None:
    model = SequenceFirst().eval()
    slicer = _profiled(model, (6, 4))
    layouts = slicer.graph.layouts
    assert {(lay.dim, lay.group) for lay in layouts.values()} >= {(0, 1), (1, 1), (0, 3)}
    profile = slicer.current_profile
    for name, shape in slicer.graph.sample_shapes.items():
        assert tuple(profile.mean(name).shape) == shape
    x = torch.randn(4, 6, 4)
    whole = slicer.slice(x, per_sample=True)
    for i in range(4):
        alone = slicer.slice(x[i : i + 1])
        for name, t in alone.synapses.items():
            assert torch.equal(whole.synapses[name][i], t), name
        for name, t in alone.neurons.items():
            assert torch.equal(whole.neurons[name][i], t), name


def test_a_reduction_over_the_batch_is_refused() -> None:
    class MixesSamples(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x - x.mean(0, keepdim=True).mean(0))

    slicer = nnslicer.Slicer(MixesSamples().eval())
    with pytest.raises(UnsupportedOperation, match="mixes the samples of a batch"):
        slicer.profile(torch.randn(8, 3))


# --- composite layers ----------------------------------------------------------------------------

class Recurrent(nn.Module):
    def __init__(self, kind: type, given_state: bool = False, **kw) -> None:
        super().__init__()
        self.rnn = kind(5, 6, **kw)
        self.batch_first = kw.get("batch_first", False)
        self.given_state = given_state
        width = kw.get("proj_size", 0) or 6
        self.fc = nn.Linear(width * (2 if kw.get("bidirectional") else 1), 3)

    def forward(self, x):  # (B, T, 5) in, whatever the layer's own layout
        if not self.batch_first:
            x = x.transpose(0, 1)
        if self.given_state:
            layers = self.rnn.num_layers * (2 if self.rnn.bidirectional else 1)
            b = x.shape[0] if self.batch_first else x.shape[1]
            h0 = torch.full((layers, b, self.rnn.hidden_size), 0.1)
            state = (h0, torch.full_like(h0, -0.2)) if isinstance(self.rnn, nn.LSTM) else h0
            out, _ = self.rnn(x, state)
        else:
            out, _ = self.rnn(x)
        return self.fc(out[:, -1] if self.batch_first else out[-1])


RECURRENT = [
    (nn.LSTM, {"batch_first": True}),
    (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    (nn.LSTM, {"batch_first": True, "proj_size": 3}),
    (nn.LSTM, {"batch_first": True, "bias": False, "given_state": True}),
    (nn.GRU, {"batch_first": True, "num_layers": 2}),
    (nn.GRU, {"bidirectional": True, "given_state": True}),
    (nn.RNN, {"batch_first": True, "nonlinearity": "relu"}),
    (nn.RNN, {"num_layers": 2, "bidirectional": True}),
]


@pytest.mark.parametrize("kind, config", RECURRENT,
                         ids=[f"{k.__name__}-{'-'.join(c)}" for k, c in RECURRENT])
def test_unrolled_recurrent_layer_gives_the_original_outputs(kind: type, config: dict) -> None:
    config = dict(config)
    model = Recurrent(kind, config.pop("given_state", False), **config).eval()
    slicer = _profiled(model, (7, 5))
    x = torch.randn(4, 7, 5)
    _same_outputs(slicer, model, x)
    s = slicer.slice(x)
    params = dict(model.named_parameters())
    weights = {n for n in params if "weight" in n}
    assert set(s.synapses) == weights
    for name, t in s.synapses.items():
        assert t.shape == params[name].shape
    assert s.synapses["rnn.weight_ih_l0"].any() and s.synapses["fc.weight"].any()


def test_a_slice_of_a_recurrent_model_needs_the_profiled_length() -> None:
    slicer = _profiled(Recurrent(nn.LSTM, batch_first=True), (7, 5))
    with pytest.raises(InputError, match=r"sample shape \(9, 5\) but \(7, 5\)"):
        slicer.slice(torch.randn(2, 9, 5))


class Attention(nn.Module):
    def __init__(self, mask: str = "none", **kw) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, **kw)
        self.batch_first = kw.get("batch_first", False)
        self.mask = mask
        self.memory = nn.Linear(8, kw.get("kdim") or 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):  # (B, 5, 8)
        kv = self.memory(x)
        q, kv = (x, kv) if self.batch_first else (x.transpose(0, 1), kv.transpose(0, 1))
        extra = {}
        if self.mask == "causal-bool":
            extra["attn_mask"] = torch.ones(5, 5, dtype=torch.bool).triu(1)
        elif self.mask == "float":
            extra["attn_mask"] = torch.linspace(-1, 1, 25).view(5, 5)
        elif self.mask == "padding":
            pad = torch.zeros(x.shape[0], 5, dtype=torch.bool)
            pad[:, -1] = True  # a constant built with the batch size, then written into
            extra["key_padding_mask"] = pad
        key = kv if self.attn.kdim != 8 or self.mask == "float" else q
        value = kv if self.attn.vdim != 8 else key
        out, weights = self.attn(q, key, value, **extra)
        out = out if self.batch_first else out.transpose(0, 1)
        return self.fc(out.mean(1)) + weights.sum((1, 2))[:, None]


ATTENTION = [
    {"batch_first": True},
    {"batch_first": False, "mask": "causal-bool"},
    {"batch_first": True, "mask": "float", "bias": False},
    {"batch_first": True, "mask": "padding", "add_bias_kv": True},
    {"batch_first": True, "kdim": 6, "vdim": 6, "add_zero_attn": True},
]


@pytest.mark.parametrize("config", ATTENTION, ids=lambda c: "-".join(f"{k}={v}" for k, v in
                                                                 c.items()))
def test_decomposed_attention_gives_the_original_outputs(config: dict) -> None:
    model = Attention(**config).eval()
    slicer = _profiled(model, (5, 8))
    x = torch.randn(3, 5, 8)
    _same_outputs(slicer, model, x)
    s = slicer.slice(x)
    names = set(s.synapses)
    assert "attn.out_proj.weight" in names
    assert ("attn.in_proj_weight" in names) != ("attn.q_proj_weight" in names)
    assert all(n in dict(model.named_parameters()) for n in names)


class Encoder(nn.Module):
    def __init__(self, batch_first: bool, norm_first: bool, decoder: bool = False) -> None:
        super().__init__()
        self.batch_first = batch_first
        layer = (nn.TransformerDecoderLayer if decoder else nn.TransformerEncoderLayer)(
            8, 2, 16, dropout=0.1, batch_first=batch_first, norm_first=norm_first,
            activation="gelu")
        self.body = layer if decoder else nn.TransformerEncoder(layer, 2,
                                                                enable_nested_tensor=False)
        self.decoder = decoder
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = x if self.batch_first else x.transpose(0, 1)
        h = self.body(h, h.flip(1 if self.batch_first else 0)) if self.decoder else self.body(h)
        return self.fc(h.mean(1 if self.batch_first else 0))


@pytest.mark.parametrize("batch_first, norm_first, decoder",
                         [(True, False, False), (False, True, False), (True, True, True)])
def test_transformer_layers_give_the_original_outputs(batch_first: bool, norm_first: bool,
                                                      decoder: bool) -> None:
    model = Encoder(batch_first, norm_first, decoder).eval()
    slicer = _profiled(model, (5, 8))
    x = torch.randn(3, 5, 8)
    _same_outputs(slicer, model, x)
    assert slicer.slice(x).synapses["fc.weight"].any()


@pytest.mark.parametrize("extra", [{}, {"is_causal": True}, {"mask": True}, {"gqa": True}])
def test_scaled_dot_product_attention_gives_the_original_outputs(extra: dict) -> None:
    class SDPA(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(8, 8 + 4 + 4 if extra.get("gqa") else 24)
            self.fc = nn.Linear(8, 3)
            mask = torch.rand(5, 5, generator=torch.Generator().manual_seed(0)) > 0.3
            self.register_buffer("mask", mask.fill_diagonal_(True))

        def forward(self, x):
            B, N, C = x.shape
            if extra.get("gqa"):
                q, k, v = self.qkv(x).split([8, 4, 4], -1)
                q = q.reshape(B, N, 4, 2).transpose(1, 2)
                k, v = (t.reshape(B, N, 2, 2).transpose(1, 2) for t in (k, v))
                o = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            else:
                q, k, v = self.qkv(x).reshape(B, N, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
                mask = self.mask if extra.get("mask") else None
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                   is_causal=extra.get("is_causal", False))
            return self.fc(o.transpose(1, 2).reshape(B, N, C).amax(1))

    torch.manual_seed(3)
    model = SDPA().eval()
    slicer = _profiled(model, (5, 8))
    x = torch.randn(3, 5, 8)
    _same_outputs(slicer, model, x)
    assert slicer.slice(x).synapses["qkv.weight"].any()


# --- rule sets ---------------------------------------------------------------------------------

class Cumulative(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, -1)


class Movement(nnslicer.Rule):
    """cumsum treated as data movement from the last point (a test rule, not a true one)."""

    family = "movement"

    def backward(self, step) -> None:
        step.send(step.arg(0), step.policy.movement(step.c_out.sign()))


def _model_with_cumsum() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), Cumulative(), nn.Linear(4, 2)).eval()


def test_a_rule_set_belongs_to_one_slicer() -> None:
    rules = nnslicer.default_rules().with_rule(torch.cumsum, Movement())
    slicer = nnslicer.Slicer(_model_with_cumsum(), rules=rules)
    slicer.profile(torch.randn(16, 3))
    assert slicer.slice(torch.randn(2, 3)).synapses["0.weight"].any()
    with pytest.raises(UnsupportedOperation, match="cumsum"):
        nnslicer.Slicer(_model_with_cumsum())  # another slicer keeps the default set
    copied = pickle.loads(pickle.dumps(rules))  # rule sets travel to Ray workers
    assert [type(r) for _, r in copied] == [type(r) for _, r in rules]
    assert copied.entries[1:] == rules.entries[1:]  # built-in entries: the very same objects


def test_a_rule_can_be_bound_to_one_module_instance() -> None:
    model = nn.Sequential(nn.Linear(3, 4), Cumulative(), nn.Linear(4, 2)).eval()
    rules = nnslicer.default_rules().with_rule(nnslicer.rules.ruleset.ModuleNamed("1"),
                                               Movement())
    slicer = nnslicer.Slicer(model, rules=rules)
    assert slicer.graph.by_name["_1"].module_path == "1"  # traced as a leaf, sliced by Movement
    assert isinstance(slicer.graph.by_name["_1"].rule, Movement)


def test_matchers_see_which_operands_depend_on_the_input() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.a(x) * torch.sigmoid(self.b(x)) * 2.0)

    graph = nnslicer.Slicer(Gate().eval()).graph
    rules = {n.name: type(n.rule).__name__ for n in graph.live_nodes() if n.rule is not None}
    assert rules["mul"] == "ProductRule" and rules["mul_1"] == "ConstantScaleRule"


# --- intermediate criteria ----------------------------------------------------------------------

class Deep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.acts = nn.ModuleDict({"relu": nn.ReLU()})
        self.fc1 = nn.Linear(4 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 3)

    def features(self, x):
        return self.fc1(torch.flatten(self.acts["relu"](self.conv(x)), 1))

    def forward(self, x):
        return self.fc2(self.acts["relu"](self.features(x)))


class Cut(nn.Module):
    def __init__(self, deep: Deep) -> None:
        super().__init__()
        self.conv, self.acts, self.fc1 = deep.conv, deep.acts, deep.fc1

    def forward(self, x):
        return self.fc1(torch.flatten(self.acts["relu"](self.conv(x)), 1))


def test_an_intermediate_neuron_is_sliced_like_the_model_cut_there() -> None:
    deep = Deep().eval()
    data = [torch.randn(8, 2, 6, 6) for _ in range(3)]
    full, cut = nnslicer.Slicer(deep), nnslicer.Slicer(Cut(deep).eval())
    full.profile(data)
    cut.profile(data)
    x = torch.randn(5, 2, 6, 6)
    for index in (2, (4,)):
        s = full.slice(x, target=Neurons("fc1", index))
        t = cut.slice(x, target=2 if index == 2 else 4)
        for name in ("conv.weight", "fc1.weight"):
            assert torch.equal(s.synapses[name], t.synapses[name]), (index, name)
        assert not s.synapses["fc2.weight"].any()  # downstream of the criterion: all zero
        assert s.meta["criterion_node"] == "fc1"


def test_neuron_criteria_forms_and_errors() -> None:
    slicer = _profiled(Deep(), (2, 6, 6))
    x = torch.randn(3, 2, 6, 6)
    channel = slicer.slice(x, target=Neurons("conv", 1))
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    mask[1] = True
    assert torch.equal(channel.synapses["conv.weight"],
                       slicer.slice(x, target=Neurons("conv", mask)).synapses["conv.weight"])
    per_sample = mask.expand(3, 4, 4, 4).clone()
    per_sample[2] = False
    two = slicer.slice(x[:2], target=Neurons("conv", 1)).synapses["conv.weight"]
    assert torch.equal(slicer.slice(x, target=Neurons("conv", per_sample)).synapses[
        "conv.weight"], two)
    assert channel.synapses["conv.weight"][1].any() and not channel.synapses[
        "conv.weight"][[0, 2, 3]].any()
    with pytest.raises(InputError, match="out of range"):
        slicer.slice(x, target=Neurons("conv", 4))
    with pytest.raises(InputError, match=r"'acts.relu' produced several nodes \['acts_relu', "
                       r"'acts_relu_1'\]"):
        slicer.slice(x, target=Neurons("acts.relu", 0))  # one ReLU module, two calls
    with pytest.raises(InputError, match="no live node or module named 'nope'"):
        slicer.slice(x, target=Neurons("nope", 0))
    with pytest.warns(UserWarning, match="names no point"):
        slicer.slice(x, target=Neurons("fc1", torch.zeros(6, dtype=torch.bool)))


def test_nodes_lists_names_modules_and_shapes() -> None:
    slicer = _profiled(Deep(), (2, 6, 6))
    rows = {r["node"]: r for r in slicer.nodes()}
    assert rows["conv"]["module"] == "conv" and rows["conv"]["shape"] == (4, 4, 4)
    assert rows["flatten"]["operator"] == "flatten" and rows["fc1"]["shape"] == (6,)
    # a module name resolves to the node it produces
    assert slicer.graph.resolve("fc2").name == "fc2"


def test_composite_doc_shows_what_the_engine_prints() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "docs" / "composite_example.py")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() in (root / "docs" / "composite.md").read_text()


def test_matrix_products_with_parameters_keep_per_sample_synapses_apart() -> None:
    class Products(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W = nn.Parameter(torch.randn(5, 4))
            self.V = nn.Parameter(torch.randn(3, 6))
            self.U = nn.Parameter(torch.randn(2, 4))  # used transposed and sliced
            self.fc = nn.Linear(2 * 3, 2)

        def forward(self, x):  # (B, 6, 5)
            h = self.V @ (x @ self.W)  # (B, 3, 4)
            return self.fc((h @ self.U.t()[:, :2]).flatten(1))

    torch.manual_seed(0)
    slicer = _profiled(Products(), (6, 5))
    x = torch.randn(5, 6, 5)
    each, total = slicer.slice(x, per_sample=True), slicer.slice(x)
    assert set(total.synapses) == {"W", "V", "U", "fc.weight"}
    assert total.synapses["U"].shape == (2, 4)
    for name, t in total.synapses.items():
        assert t.any() and torch.equal(each.synapses[name].sum(0), t), name
    for i in (0, 4):
        alone = slicer.slice(x[i : i + 1])
        for name, t in alone.synapses.items():
            assert torch.equal(each.synapses[name][i], t), (i, name)


def test_chunks_shrink_to_the_memory_budget_with_identical_results() -> None:
    # float64: a float32 conv's results depend on the batch it runs in, and profiling runs
    # passes of 16 (two batches gathered) here and of 1 sample under the tight budget
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 4)).double().eval()
    data = [torch.randn(8, 3, 8, 8, dtype=torch.float64) for _ in range(2)]
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    roomy = nnslicer.Slicer(model, batch_size=4)
    tight = nnslicer.Slicer(model, batch_size=4, memory_budget=20 * 1300)  # ~1 sample's points
    for slicer in (roomy, tight):
        slicer.profile(data)
    assert roomy.slice_chunk_samples(x) == 4 and tight.slice_chunk_samples(x) == 1
    a, b = roomy.slice(x, per_sample=True), tight.slice(x, per_sample=True)
    for name, t in a.synapses.items():
        assert torch.equal(t, b.synapses[name]), name
    for name, t in roomy.current_profile.sums.items():
        torch.testing.assert_close(tight.current_profile.sums[name], t, rtol=1e-12, atol=1e-9)


def test_without_neurons_only_the_nodes_below_the_wanted_weights_run() -> None:
    slicer = _profiled(Deep(), (2, 6, 6))
    x = torch.randn(4, 2, 6, 6)
    full = slicer.slice(x, per_sample=True, synapses=["fc2.weight", "fc1.weight"])
    fast = slicer.slice(x, per_sample=True, synapses=["fc2.weight", "fc1.weight"],
                        neurons=False)
    assert set(fast.neurons) == {"fc1", "acts_relu_1", "fc2"}  # at or below the weights
    for name, t in full.synapses.items():
        assert torch.equal(fast.synapses[name], t), name
    for name, t in fast.neurons.items():
        assert torch.equal(full.neurons[name], t), name
    with pytest.raises(InputError, match="neurons=False needs synapses"):
        slicer.slice(x, neurons=False)
