"""Self-check of the float64 reference (tests/reference/), independent of the engine.

The engine is validated against the reference; this file validates the reference itself, without
importing ``nnslicer``:

1. every SPEC v2 hand case of test_rules_reference.py passes the reference's own ``check=True``
   (Σ t = a·b − ā·b̄ for products and matrix products, Σ t = Δy for weighted sums incl. ``x @ W``
   and sums over dims, the selected point's value for max/amax, source value = output value for
   data movement, NumPy normalization/softmax = the recorded values, Δy = a·Δx for scales, the
   looked-up entry for Embedding, the unrolled recurrent / decomposed attention layers = torch's
   fused outputs to 1e-9);
2. the unrolled float64 LSTM/GRU/RNN and the decomposed attention equal torch's modules to 1e-9
   (layers ∈ {1, 2}, bidirectional, batch_first);
3. slices worked out by hand (numbers in the comments) for the product rule, the matrix-product
   rule and an LSTM gate's weighted sum over x_t and h_{t−1} together.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from reference import ReferenceNeurons, ReferenceSlicer, ReferenceUnsupported
from reference.attention import mha_expansion, sdpa_expansion
from reference.random_models import randomize_
from reference.recurrent import rnn_expansion
from reference.spec_reference import act_derivative_sign
from test_rules_reference import CASES, build_case, case_data, case_targets

torch.set_num_threads(1)


# --- 1. check=True on every v2 hand case ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.spec >= 2))
def test_v2_case_passes_the_reference_self_check(name: str) -> None:
    model, _ = build_case(name)
    batches, x = case_data(name)
    ref = ReferenceSlicer(model, theta=0.2)
    ref.profile(batches)
    targets = case_targets(name, len(x))(ref)
    wanted = ["top1"] + [k for k in targets if k.startswith("neurons_")][:1]
    for form in wanted:
        for reference in ("dataset", "class"):
            s = ref.slice(x, target=targets[form], reference=reference, check=True)
            assert any(np.abs(v).sum() for v in s.neurons.values()), (form, reference)


# --- 2. the rewritten composite layers equal torch's ------------------------------------------


def _params(m: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v.detach().double().numpy() for k, v in m.named_parameters()}


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU", "LSTM_NO_BIAS"])
def test_unrolled_recurrent_layer_equals_torch(kind, layers, bidirectional, batch_first) -> None:
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    if kind.startswith("LSTM"):
        m = nn.LSTM(3, 4, bias=kind == "LSTM", **kw)
    elif kind == "GRU":
        m = nn.GRU(3, 4, **kw)
    else:
        m = nn.RNN(3, 4, nonlinearity="tanh" if kind == "RNN_TANH" else "relu", **kw)
    randomize_(m, layers + 2 * bidirectional + 4 * batch_first)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, 5, 3) if batch_first else (5, 2, 3), generator=g, dtype=torch.float64)
    exp = rnn_expansion("rnn", m, "x", tuple(x.shape), _params(m, "rnn"))
    values = exp.compute([x.numpy()])
    with torch.no_grad():
        out, state = m(x)
    h_n = state[0] if kind.startswith("LSTM") else state
    # per-sample maps of the layer's outputs onto the internal nodes
    readouts = {(0,): out, (1, 0) if kind.startswith("LSTM") else (1,): h_n}
    if kind.startswith("LSTM"):
        readouts[(1, 1)] = state[1]
    for path, want in readouts.items():
        slots, slot, flat = exp.outputs[path]
        want = np.moveaxis(want.numpy(), 0 if path == (0,) and batch_first else 1, 0)
        got = np.stack([values[slots[s]][:, f] for s, f in zip(slot, flat, strict=True)], 1)
        np.testing.assert_allclose(got, want.reshape(len(got), -1), rtol=1e-9, atol=1e-9)


def test_unrolled_lstm_through_the_slicer_and_its_sequence_length() -> None:
    """forward_values holds the internal nodes; another sequence length is an error."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(2, 3, num_layers=2, bidirectional=True, batch_first=True)
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            return self.fc(self.lstm(x)[0][:, -1])

    model = randomize_(M(), 5)
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(4, 3, 2, generator=g, dtype=torch.float64)]
    ref = ReferenceSlicer(model)
    ref.profile(data)
    values = ref.forward_values(data[0])
    with torch.no_grad():
        out = model.lstm(data[0])[0]
    np.testing.assert_allclose(values["lstm.l1.t2.h"].numpy(), out[:, 2, :3].numpy(), rtol=1e-9)
    np.testing.assert_allclose(
        values["lstm.l1_reverse.t2.h"].numpy(), out[:, 2, 3:].numpy(), rtol=1e-9
    )
    with pytest.raises(ReferenceUnsupported, match="sequence length"):
        ref.slice(torch.randn(2, 4, 2, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("heads, kdim", [(1, None), (2, None), (2, 3)])
def test_decomposed_multihead_attention_equals_torch(heads, kdim, batch_first) -> None:
    m = nn.MultiheadAttention(4, heads, batch_first=batch_first, kdim=kdim, vdim=kdim)
    randomize_(m, heads + (kdim or 0))
    g = torch.Generator().manual_seed(2)
    shape_q = (2, 3, 4) if batch_first else (3, 2, 4)
    shape_kv = (2, 5, kdim or 4) if batch_first else (5, 2, kdim or 4)
    q = torch.randn(shape_q, generator=g, dtype=torch.float64)
    kv = torch.randn(shape_kv, generator=g, dtype=torch.float64)
    exp = mha_expansion(
        "attn", m, ["q", "kv", "kv"], [shape_q, shape_kv, shape_kv], _params(m, "attn")
    )
    values = exp.compute([q.numpy(), kv.numpy(), kv.numpy()])
    with torch.no_grad():
        want = m(q, kv, kv, need_weights=False)[0].numpy()
    want = want if batch_first else np.moveaxis(want, 1, 0)
    np.testing.assert_allclose(values["attn.out"], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_slice_does_not_depend_on_batch_first(heads: int) -> None:
    """The same function in (B, L, E) and (L, B, E) layout has the same slice: the
    decomposition of docs/spec.md §4 has no layout movement (transposing query, key and value apart
    would hand the shared input three signs instead of one sum)."""
    slices = []
    for batch_first in (True, False):
        model = randomize_(_TokensMHA(heads, batch_first), 11)
        g = torch.Generator().manual_seed(4)
        data = [torch.randn(6, 3, 5, generator=g, dtype=torch.float64)]
        ref = ReferenceSlicer(model, theta=0.0)
        ref.profile(data)
        slices.append(ref.slice(data[0][:3], per_sample=True, check=True))
    for k, v in slices[0].synapses.items():
        np.testing.assert_array_equal(v, slices[1].synapses[k], err_msg=k)
    assert np.abs(slices[0].synapses["attn.in_proj_weight"]).sum() > 0


class _TokensMHA(nn.Module):
    def __init__(self, heads: int, batch_first: bool):
        super().__init__()
        self.batch_first = batch_first
        self.inp = nn.Linear(5, 4)
        self.attn = nn.MultiheadAttention(4, heads, batch_first=batch_first)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        h = self.inp(x)
        if not self.batch_first:
            h = h.transpose(0, 1)
        out = self.attn(h, h, h, need_weights=False)[0]
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.fc((h if self.batch_first else h.transpose(0, 1)).add(out).flatten(1))


def test_decomposed_sdpa_equals_torch() -> None:
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, n, 3, generator=g, dtype=torch.float64) for n in (4, 5, 5))
    exp = sdpa_expansion("sdpa", ["q", "k", "v"], [(2, 4, 3), (2, 5, 3), (2, 5, 3)], None)
    values = exp.compute([q.numpy(), k.numpy(), v.numpy()])
    got = values["sdpa.weights"] @ v.numpy()
    np.testing.assert_allclose(got, F.scaled_dot_product_attention(q, k, v).numpy(), rtol=1e-9)
    np.testing.assert_allclose(
        values["sdpa.scaled"], values["sdpa.scores"] / math.sqrt(3), rtol=1e-12
    )


# --- 3. slices worked out by hand -------------------------------------------------------------


class _Product(nn.Module):
    """x (B, 2) -> y = x[:, :1] * x[:, 1:] -> Linear(1, 2) with rows (1, -1)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        self.double().eval()

    def forward(self, x):
        return self.fc(x[:, :1] * x[:, 1:])


@pytest.mark.parametrize("theta, want_x", [(0.0, [1, -1]), (0.2, [1, -1]), (0.5, [1, 0])])
def test_product_rule_by_hand(theta: float, want_x: list[int]) -> None:
    # Profile x ∈ {(1, 2), (3, 4)}: ā = 2, b̄ = 3; y = a·b ∈ {2, 12}, ȳ = 7.
    # Sample x = (4, 2.5): a = 4, b = 2.5, y = 10; Δa = 2, Δb = -0.5, Δy = 3.
    # Output (10, -10): top-1 class 0; fc row 0: one term 1·Δy = 3 -> C(y) = +1, fc.weight[0] +1.
    # Product terms: t_a = Δa·(b + b̄)/2 = 2·5.5/2 = 5.5, t_b = Δb·(a + ā)/2 = -0.5·6/2 = -1.5;
    # T = 4 = a·b − ā·b̄ = 10 − 6 (not Δy = 3: SPEC's pinned reading).
    # θ = 0: both kept, s_a = sign(T)·sign(t_a) = +1, s_b = -1.
    # θ = 0.2: S_1 = 5.5, |T − S_1| = 1.5 !< 0.8 -> k* = 2, both kept.
    # θ = 0.5: 1.5 < 2 -> k* = 1: only a.
    model = _Product()
    ref = ReferenceSlicer(model, theta=theta)
    ref.profile([torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)])
    s = ref.slice(torch.tensor([[4.0, 2.5]], dtype=torch.float64), check=True)
    np.testing.assert_array_equal(s.synapses["fc.weight"], [[1], [0]])
    np.testing.assert_array_equal(s.neurons["mul"], [1])
    np.testing.assert_array_equal(s.neurons["x"], want_x)


def test_product_rule_degenerate_total_keeps_nothing() -> None:
    # Profile {(1, 2), (3, 4)} as above (ā = 2, b̄ = 3, ā·b̄ = 6). Sample (3, 2): a·b = 6,
    # so T = a·b − ā·b̄ = 0 although Δy = 6 − 7 = -1 ≠ 0: t_a = 1·(2 + 3)/2 = 2.5,
    # t_b = -1·(3 + 2)/2 = -2.5, |T| = 0 <= 1e-3·2.5: the product keeps no edge, even at θ = 0.
    ref = ReferenceSlicer(_Product(), theta=0.0)
    ref.profile([torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)])
    s = ref.slice(torch.tensor([[3.0, 2.0]], dtype=torch.float64), target=1, check=True)
    # class 1 row: term -1·Δy = 1 > 0 -> C(y) = +1 ... and nothing passes the product
    np.testing.assert_array_equal(s.neurons["mul"], [1])
    np.testing.assert_array_equal(s.neurons["x"], [0, 0])


class _Matmul(nn.Module):
    """x (B, 4) -> a = x[:, None, :2] (1×2), b = x[:, 2:, None] (2×1) -> y = a @ b (1×1)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        self.double().eval()

    def forward(self, x):
        return self.fc(torch.flatten(x[:, None, :2] @ x[:, 2:, None], 1))


@pytest.mark.parametrize(
    "theta, want_x", [(0.0, [1, 0, 1, -1]), (0.2, [1, 0, 1, -1]), (0.5, [1, 0, 0, 0])]
)
def test_matmul_rule_by_hand(theta: float, want_x: list[int]) -> None:
    # Profile x ∈ {(0, 0, 0, 0), (2, 2, 2, 2)}: every mean is 1; y ∈ {0, 8}, ȳ = 4.
    # Sample x = (3, 1, 2, 0): a = (3, 1), b = (2, 0)ᵀ, y = 6; Δa = (2, 0), Δb = (1, -1), Δy = 2.
    # Output (6, -6): class 0, C(y) = +1.
    # 2K = 4 terms, a-terms first: t_a0 = Δa0·(b0 + b̄0)/2 = 2·3/2 = 3, t_a1 = 0,
    # t_b0 = Δb0·(a0 + ā0)/2 = 1·4/2 = 2, t_b1 = Δb1·(a1 + ā1)/2 = -1·2/2 = -1;
    # T = 4 = a·b − ā·b̄ = 6 − 2.
    # θ = 0: the non-zero terms, signs sign(T)·sign(t): x0 +1, x2 +1, x3 -1.
    # θ = 0.2: S_1 = 3 (|1| !< 0.8), S_2 = 5 (|−1| !< 0.8), S_3 = 4 -> k* = 3: |t| ≥ 1 kept.
    # θ = 0.5: |4 − 3| = 1 < 2 -> k* = 1: only a0 (x0).
    ref = ReferenceSlicer(_Matmul(), theta=theta)
    ref.profile([torch.tensor([[0.0] * 4, [2.0] * 4], dtype=torch.float64)])
    s = ref.slice(torch.tensor([[3.0, 1.0, 2.0, 0.0]], dtype=torch.float64), check=True)
    np.testing.assert_array_equal(s.neurons["matmul"], [[1]])
    np.testing.assert_array_equal(s.neurons["x"], want_x)
    np.testing.assert_array_equal(s.synapses["fc.weight"], [[1], [0]])


class _LSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(1, 1, batch_first=True, bias=False)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            # rows: gates i, f, g, o
            self.lstm.weight_ih_l0.copy_(torch.tensor([[1.0], [0.5], [1.0], [1.0]]))
            self.lstm.weight_hh_l0.copy_(torch.tensor([[0.1], [0.2], [0.3], [0.4]]))
        self.double().eval()

    def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])


@pytest.mark.parametrize("theta", [0.0, 0.2, 0.5])
def test_lstm_gate_sum_over_x_and_h_by_hand(theta: float) -> None:
    # Profile: the one sequence (0, 0): every gate pre-activation is 0, i = f = o = σ(0) = 0.5,
    # g = c = h = 0; the means are these values.
    # Sample (1, 1). t = 0 (h_{-1} = c_{-1} = 0): pre_i = pre_g = pre_o = 1·x_0 = 1,
    # i = o = σ(1) ≈ 0.7311, g = tanh(1) ≈ 0.7616, c_0 = i·g ≈ 0.5568, tanh(c_0) ≈ 0.5055,
    # h_0 = o·tanh(c_0) ≈ 0.3696 (Δh_0 ≈ 0.3696).
    # Criterion: the input gate's pre-activation at t = 1, pre_i = 1·x_1 + 0.1·h_0: ONE weighted
    # sum over x_1 and h_0 with terms t_x = 1·Δx_1 = 1 (synapse weight_ih_l0[0, 0]) and
    # t_h = 0.1·Δh_0 ≈ 0.0370 (synapse weight_hh_l0[0, 0]); T ≈ 1.0370.
    # θ = 0.2 and 0.5: |T − S_1| ≈ 0.037 < θ·T -> only x_1: x[1] += 1, weight_ih[0] += 1.
    # θ = 0: both, s = +1. Then h_0 = o_0 ⊙ tanh(c_0) (product rule): Δo = σ(1) − 0.5 ≈ 0.2311,
    # t_o = Δo·(0.5055 + 0)/2 ≈ 0.0584, t_tanh = 0.5055·(0.7311 + 0.5)/2 ≈ 0.3111, both kept
    # (+1): o_0 -> pre_o (x_0, weight_ih[3]); tanh -> c_0 = i_0 ⊙ g_0: t_i = 0.2311·0.7616/2
    # ≈ 0.0880, t_g = 0.7616·1.2311/2 ≈ 0.4688, both kept: pre_i (x_0, weight_ih[0]) and pre_g
    # (x_0, weight_ih[2]). The forget gate never matters at t = 0 (c_{-1} = 0).
    # So weight_ih = (2, 0, 1, 1), weight_hh = (1, 0, 0, 0); x_0 gets three +1 at the slice
    # x_t = input[:, 0] (C = 3), which as data movement hands sign(3) = 1 to the input: x = (1, 1).
    ref = ReferenceSlicer(_LSTM(), theta=theta)
    ref.profile([torch.zeros(1, 2, 1, dtype=torch.float64)])
    x = torch.ones(1, 2, 1, dtype=torch.float64)
    values = ref.forward_values(x)
    assert abs(values["lstm.l0.t0.h"].item() - 0.3696) < 1e-4
    s = ref.slice(x, target=ReferenceNeurons("lstm.l0.t1.pre_i", 0), check=True)
    ih, hh = s.synapses["lstm.weight_ih_l0"].ravel(), s.synapses["lstm.weight_hh_l0"].ravel()
    if theta == 0.0:
        np.testing.assert_array_equal(s.neurons["lstm.l0.t0.x"], [3])
        np.testing.assert_array_equal(s.neurons["x"].ravel(), [1, 1])
        np.testing.assert_array_equal(ih, [2, 0, 1, 1])
        np.testing.assert_array_equal(hh, [1, 0, 0, 0])
        np.testing.assert_array_equal(s.neurons["lstm.l0.t0.h"], [1])
    else:
        np.testing.assert_array_equal(s.neurons["x"].ravel(), [0, 1])
        np.testing.assert_array_equal(ih, [1, 0, 0, 0])
        np.testing.assert_array_equal(hh, [0, 0, 0, 0])
        np.testing.assert_array_equal(s.neurons["lstm.l0.t0.h"], [0])
    # downstream of the criterion: nothing
    np.testing.assert_array_equal(s.synapses["fc.weight"], np.zeros((2, 1)))
    assert not s.neurons["lstm.l0.t1.h"].any() and not s.neurons["getitem"].any()


# --- the reference refuses what it has no rule for --------------------------------------------


class _BatchSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x - x.sum(0, keepdim=True))  # mixes the samples of a batch


def test_reference_refuses_a_node_that_mixes_samples() -> None:
    ref = ReferenceSlicer(_BatchSum().double().eval())
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ReferenceUnsupported, match="sum"):
        ref.profile([torch.randn(4, 3, generator=g, dtype=torch.float64)])


# --- 4. docs/spec.md §8 extensions, checked against PyTorch itself ----------------------------

_SIGN_CASES = {
    # name: (torch function of x, the reference's attributes)
    "exp": (torch.exp, {"fn": "pos"}),
    "log": (lambda x: torch.log(x.abs() + 0.1), None),  # composed: checked through log's attrs
    "logsigmoid": (F.logsigmoid, {"fn": "pos"}),
    "softsign": (F.softsign, {"fn": "pos"}),
    "erf": (torch.erf, {"fn": "pos"}),
    "expm1": (torch.expm1, {"fn": "pos"}),
    "reciprocal": (torch.reciprocal, {"fn": "neg"}),
    "abs": (torch.abs, {"fn": "signx"}),
    "square": (torch.square, {"fn": "signx"}),
    "softplus": (lambda x: F.softplus(x, beta=2.0, threshold=3.0), {"fn": "softplus", "beta": 2.0}),
    "mish": (F.mish, {"fn": "mish"}),
    "tanhshrink": (F.tanhshrink, {"fn": "tanhshrink"}),
    "softshrink": (lambda x: F.softshrink(x, 0.5), {"fn": "shrink", "lambd": 0.5}),
    "hardshrink": (lambda x: F.hardshrink(x, 0.5), {"fn": "shrink", "lambd": 0.5}),
    "clamp": (lambda x: torch.clamp(x, -0.5, 1.0), {"fn": "clamp", "lo": -0.5, "hi": 1.0}),
    "clamp_min": (lambda x: torch.clamp_min(x, 0.5), {"fn": "clamp", "lo": 0.5, "hi": None}),
    "clamp_max": (lambda x: torch.clamp_max(x, 0.5), {"fn": "clamp", "lo": None, "hi": 0.5}),
    "prelu": (
        lambda x: F.prelu(x, torch.tensor([-0.3], dtype=x.dtype)),
        {"fn": "prelu", "a": -0.3},
    ),
    "pow_3": (lambda x: x**3, {"fn": "pow", "c": 3.0}),
    "pow_2": (lambda x: x**2, {"fn": "pow", "c": 2.0}),
    "pow_-2": (lambda x: x**-2, {"fn": "pow", "c": -2.0}),
    "pow_1.5": (lambda x: x**1.5, {"fn": "pow", "c": 1.5}),
    "pow_0.5": (lambda x: x**0.5, {"fn": "pow", "c": 0.5}),
    "pow_0": (lambda x: x**0, {"fn": "pow", "c": 0.0}),
}


@pytest.mark.parametrize("fn", [k for k, v in _SIGN_CASES.items() if v[1] is not None])
def test_extension_derivative_signs_match_pytorch_backward(fn: str) -> None:
    """docs/spec.md §8: the sign of f′ the reference uses is the sign of PyTorch's derivative
    (0 where it is NaN), on a grid that holds the kinks exactly (0, ±0.5, 1; clamp's and the
    shrinks' bounds), where PyTorch's backward decides (clamp passes at its bounds, the shrinks
    block at ±λ, PReLU uses its slope at 0)."""
    f, attrs = _SIGN_CASES[fn]
    grid = torch.cat([torch.linspace(-4, 4, 801, dtype=torch.float64)])
    grid = torch.cat([grid, torch.tensor([0.0, 0.5, -0.5, 1.0, -1.0], dtype=torch.float64)])
    if fn == "mish":
        grid = grid[(grid + 1.1918).abs() > 1e-2]  # away from Mish' root
    x = grid.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x).sum(), x)
    want = np.sign(torch.nan_to_num(grad, nan=0.0).numpy()).astype(np.int64)
    np.testing.assert_array_equal(act_derivative_sign(attrs, grid.numpy()), want)


_INTERP = [
    ("linear", (7,), {"scale_factor": 2}),
    ("linear", (5,), {"size": 8, "align_corners": True}),
    ("linear", (6,), {"size": 4}),
    ("linear", (5,), {"size": 1, "align_corners": True}),
    ("bilinear", (3, 4), {"scale_factor": 2}),
    ("bilinear", (4, 3), {"scale_factor": (1.5, 1.7)}),
    ("bilinear", (4, 3), {"scale_factor": 1.7, "recompute_scale_factor": True}),
    ("bilinear", (5, 6), {"size": (3, 4)}),
    ("bilinear", (3, 4), {"size": (5, 7), "align_corners": True}),
    ("bilinear", (3, 4), {"size": (3, 9)}),
    ("bicubic", (3, 4), {"scale_factor": 2}),
    ("bicubic", (4, 3), {"size": (6, 5), "align_corners": True}),
    ("bicubic", (5, 5), {"size": (3, 7)}),
    ("bicubic", (3, 3), {"scale_factor": 0.7}),
    ("area", (5, 7), {"size": (3, 4)}),
    ("area", (6, 4), {"scale_factor": 0.5}),
    ("trilinear", (2, 3, 2), {"scale_factor": 2}),
]


@pytest.mark.parametrize("mode, spatial, kw", _INTERP)
def test_interpolation_coefficients_equal_pytorch_on_impulses(mode, spatial, kw) -> None:
    """The coefficients the reference computes from PyTorch's formulas (rules.interp_taps) are
    the operator's own: interpolating each one-hot impulse gives exactly that column."""
    from reference.movement import interp_out_sizes
    from reference.rules import interp_edges, interp_taps

    sizes, scales = interp_out_sizes(spatial, kw.get("size"), kw.get("scale_factor"))
    if kw.get("recompute_scale_factor"):
        scales = [None] * len(sizes)
    ac = bool(kw.get("align_corners", False))
    taps = [interp_taps(mode, i, o, ac, s) for i, o, s in zip(spatial, sizes, scales, strict=True)]
    table = interp_edges((1, *spatial), (1, *sizes), taps)
    n_in, n_out = int(np.prod(spatial)), int(np.prod(sizes))
    ours = np.zeros((n_out, n_in))
    for o, e in enumerate(table):
        ours[o, e.src] = e.coef
    impulses = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, *spatial)
    with torch.no_grad():
        out = F.interpolate(impulses, mode=mode, **kw).reshape(n_in, n_out)
    np.testing.assert_allclose(ours, out.numpy().T, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "spatial, kw",
    [
        ((4, 4), {"scale_factor": 2}),
        ((4, 5), {"size": (6, 3)}),
        ((3, 4), {"scale_factor": 1.5}),
        ((5, 3), {"scale_factor": (0.6, 2.5)}),
        ((4, 4), {"size": (7, 5), "mode": "nearest-exact"}),
        ((5, 6), {"scale_factor": 1.3, "mode": "nearest-exact"}),
        ((7,), {"size": 3}),
    ],
)
def test_nearest_mirror_equals_pytorch(spatial, kw) -> None:
    from reference.movement import interpolate_nearest

    x = torch.randn(2, 3, *spatial, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = F.interpolate(x, **kw).numpy()
    np.testing.assert_array_equal(interpolate_nearest(x.numpy(), **kw), want)


def test_movement_mirrors_equal_pytorch() -> None:
    """Pixel (un)shuffle, channel shuffle, Tensor.unfold, F.unfold, reflect/replicate/circular
    padding, gather/take_along_dim: the NumPy mirrors give PyTorch's values exactly."""
    from reference import movement as mv

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 4, 6, dtype=torch.float64, generator=g)
    xn = x.numpy()
    eq = np.testing.assert_array_equal
    eq(mv.pixel_shuffle(xn, 2), F.pixel_shuffle(x, 2).numpy())
    eq(mv.pixel_unshuffle(xn, 2), F.pixel_unshuffle(x, 2).numpy())
    eq(mv.channel_shuffle(xn, 4), torch.channel_shuffle(x, 4).numpy())
    eq(mv.tensor_unfold(xn, 3, 3, 2), x.unfold(3, 3, 2).numpy())
    eq(mv.tensor_unfold(xn, -2, 2, 1), x.unfold(-2, 2, 1).numpy())
    eq(mv.im2col(xn, (2, 3), 1, (1, 0), (2, 1)), F.unfold(x, (2, 3), 1, (1, 0), (2, 1)).numpy())
    eq(mv.im2col(xn, 2, (2, 1), 1, 1), F.unfold(x, 2, (2, 1), 1, 1).numpy())
    for mode in ("reflect", "replicate", "circular"):
        eq(mv.pad(xn, (2, 1, 0, 3), mode), F.pad(x, (2, 1, 0, 3), mode=mode).numpy())
    idx = torch.randint(0, 6, (2, 8, 4, 3), generator=g)
    eq(mv.gather(xn, 3, idx), torch.gather(x, 3, idx).numpy())
    small = torch.randint(0, 4, (2, 5, 3, 6), generator=g)  # smaller than x in dims 1, 2
    eq(mv.gather(xn, 2, small), torch.gather(x, 2, small).numpy())
    along = torch.randint(0, 4, (1, 1, 2, 6), generator=g)
    eq(mv.take_along_dim(xn, along, 2), torch.take_along_dim(x, along, 2).numpy())


@pytest.mark.parametrize(
    "kind, layers, bidirectional, proj",
    [("LSTM", 1, False, 0), ("LSTM", 2, True, 0), ("LSTM", 1, False, 2), ("LSTM", 2, True, 2),
     ("GRU", 1, False, 0), ("GRU", 2, True, 0), ("RNN_TANH", 2, False, 0)],
)  # fmt: skip
@pytest.mark.parametrize("state", ["none", "node", "const"])
def test_unrolled_recurrent_layer_with_states_equals_torch(
    kind, layers, bidirectional, proj, state
):
    """Given initial states (input-dependent or constant) and proj_size: the unrolled float64
    layer equals torch's to 1e-9."""
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=True)
    if kind == "LSTM":
        m = nn.LSTM(3, 4, proj_size=proj, **kw)
    elif kind == "GRU":
        m = nn.GRU(3, 4, **kw)
    else:
        m = nn.RNN(3, 4, **kw)
    randomize_(m, layers + 2 * bidirectional + proj)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    k = layers * (2 if bidirectional else 1)
    h_size = proj or 4
    h0 = torch.randn(k, 2, h_size, generator=g, dtype=torch.float64)
    c0 = torch.randn(k, 2, 4, generator=g, dtype=torch.float64)
    if state == "const":  # equal in every sample
        h0, c0 = h0[:, :1].expand(-1, 2, -1), c0[:, :1].expand(-1, 2, -1)
    lstm = kind == "LSTM"

    def spec(v, name):
        if state == "none":
            return None
        return ("node", name) if state == "node" else ("const", v[:, 0].numpy())

    exp = rnn_expansion(
        "rnn",
        m,
        "x",
        tuple(x.shape),
        _params(m, "rnn"),
        spec(h0, "h0"),
        spec(c0, "c0") if lstm else None,
    )
    inputs = [x.numpy()] + (
        [h0.numpy()] + ([c0.numpy()] if lstm else []) if state == "node" else []
    )
    values = exp.compute(inputs)
    with torch.no_grad():
        hx = None if state == "none" else ((h0, c0) if lstm else h0)
        out, st = m(x, hx)
    h_n = st[0] if lstm else st
    readouts = {(0,): out, (1, 0) if lstm else (1,): h_n}
    if lstm:
        readouts[(1, 1)] = st[1]
    for path, want in readouts.items():
        slots, slot, flat = exp.outputs[path]
        want = want.numpy() if path == (0,) else np.moveaxis(want.numpy(), 1, 0)
        got = np.stack([values[slots[s]][:, f] for s, f in zip(slot, flat, strict=True)], 1)
        np.testing.assert_allclose(got, want.reshape(len(got), -1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "batch_first, kw, masks",
    [
        (True, {}, ("bool", None)),
        (False, {}, ("float", "bool")),
        (True, {"add_bias_kv": True}, (None, "bool")),
        (False, {"add_zero_attn": True}, ("inf", None)),
        (True, {"add_bias_kv": True, "add_zero_attn": True}, ("bool3d", "float")),
    ],
)
def test_decomposed_attention_with_masks_equals_torch(batch_first, kw, masks) -> None:
    from reference.attention import mha_expansion

    m = nn.MultiheadAttention(4, 2, batch_first=batch_first, **kw)
    randomize_(m, 3)
    g = torch.Generator().manual_seed(5)
    shape = (2, 3, 4) if batch_first else (3, 2, 4)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    am = {
        None: None,
        "bool": torch.ones(3, 3, dtype=torch.bool).triu(1),
        "float": torch.randn(3, 3, generator=g, dtype=torch.float64),
        "inf": nn.Transformer.generate_square_subsequent_mask(3, dtype=torch.float64),
        "bool3d": torch.rand(4, 3, 3, generator=g) < 0.3,
    }[masks[0]]
    if am is not None and am.dtype == torch.bool:
        am[..., 0] = False  # no row masked entirely
    kpm = {
        None: None,
        "bool": torch.tensor([[False, True, False], [False, False, True]]),
        "float": torch.randn(2, 3, generator=g, dtype=torch.float64),
    }[masks[1]]
    consts = [c for c in ("am", "kpm") if {"am": am, "kpm": kpm}[c] is not None]
    exp = mha_expansion(
        "attn", m, ["x"] * 3, [shape] * 3, _params(m, "attn"),
        "am" if am is not None else None, "kpm" if kpm is not None else None,
    )  # fmt: skip
    assert exp.consts == consts
    values = exp.compute([x.numpy()] * 3 + [{"am": am, "kpm": kpm}[c] for c in consts])
    with torch.no_grad():
        want = m(x, x, x, key_padding_mask=kpm, attn_mask=am, need_weights=False)[0].numpy()
    want = want if batch_first else np.moveaxis(want, 1, 0)
    np.testing.assert_allclose(values["attn.out"], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "kw",
    [
        {"attn_mask": "bool"},
        {"attn_mask": "float"},
        {"is_causal": True},
        {"is_causal": True, "scale": 0.7},
        {"enable_gqa": True},
        {"enable_gqa": True, "attn_mask": "bool4d"},
    ],
)
def test_decomposed_sdpa_with_options_equals_torch(kw) -> None:
    g = torch.Generator().manual_seed(6)
    kv_heads = 1 if kw.get("enable_gqa") else 2
    q = torch.randn(2, 2, 4, 3, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, kv_heads, 5, 3, generator=g, dtype=torch.float64) for _ in "kv")
    masks = {
        "bool": torch.rand(4, 5, generator=g) < 0.7,
        "float": torch.randn(4, 5, generator=g, dtype=torch.float64),
        "bool4d": torch.rand(2, 2, 4, 5, generator=g) < 0.7,
    }
    mask = masks.get(kw.get("attn_mask"))
    if mask is not None and mask.dtype == torch.bool:
        mask[..., 0] = True  # every query may attend to something
    options = {key: val for key, val in kw.items() if key != "attn_mask"}
    exp = sdpa_expansion(
        "sdpa", ["q", "k", "v"], [tuple(t.shape[1:]) for t in (q, k, v)], None if "scale" not in
        kw else kw["scale"], "mask" if mask is not None else None,
        kw.get("is_causal", False), kw.get("enable_gqa", False),
    )  # fmt: skip
    del options
    values = exp.compute([q.numpy(), k.numpy(), v.numpy()] + ([mask] if mask is not None else []))
    vv = values.get("sdpa.value_rep", v.numpy())
    got = values["sdpa.weights"] @ vv
    with torch.no_grad():
        want = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=kw.get("is_causal", False), scale=kw.get("scale"),
            enable_gqa=kw.get("enable_gqa", False),
        )  # fmt: skip
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_decomposed_encoder_layer_equals_torch(norm_first, activation, batch_first) -> None:
    from reference.attention import encoder_layer_expansion

    m = nn.TransformerEncoderLayer(
        4, 2, 6, dropout=0.1, activation=activation, batch_first=batch_first,
        norm_first=norm_first,
    ).double().eval()  # fmt: skip
    randomize_(m, 2 + norm_first)
    g = torch.Generator().manual_seed(8)
    shape = (2, 3, 4) if batch_first else (3, 2, 4)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=torch.float64)
    exp = encoder_layer_expansion("enc", m, "x", shape, _params(m, "enc"), "mask")
    values = exp.compute([x.numpy(), mask])
    last = values["enc.add2"] if not norm_first else None
    with torch.no_grad():
        want = m(x, src_mask=mask).numpy()
    want = want if batch_first else np.moveaxis(want, 1, 0)
    if norm_first:
        got = values["enc.add1"] + values["enc.linear2"]
    else:
        from reference.rules import layer_norm_np

        p = _params(m, "enc")
        got = layer_norm_np(last, (4,), p["enc.norm2.weight"], p["enc.norm2.bias"], m.norm2.eps)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_bag_reduction_equals_torch(mode: str, padding_idx: int | None) -> None:
    """bags.py's reduction gives PyTorch's values (padding entries left out, an all-padding bag
    0), and the entry its max selects holds PyTorch's output value."""
    from reference.bags import bag_forward, bag_max_sources

    m = nn.EmbeddingBag(4, 3, mode=mode, padding_idx=padding_idx).double()
    randomize_(m, 4)
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, 4, (40, 4), generator=g)
    x[0] = 0  # an all-padding bag when padding_idx = 0
    x[1] = torch.tensor([2, 3, 2, 1])  # a repeated token
    table = m.weight.detach().numpy()
    with torch.no_grad():
        want = m(x).numpy()
    for b in range(len(x)):
        tok = x[b].numpy()
        got = bag_forward(table[tok], tok, None, mode, padding_idx)
        np.testing.assert_allclose(got, want[b], rtol=1e-12, atol=1e-12)
        if mode == "max":
            src = bag_max_sources(table[tok], tok, padding_idx)
            if (src < 0).all():
                np.testing.assert_array_equal(want[b], 0.0)
                continue
            assert padding_idx is None or (tok[src // 3] != padding_idx).all()
            np.testing.assert_array_equal(table[tok].reshape(-1)[src], want[b])


# --- 5. §8 slices worked out by hand ------------------------------------------------------------


class _ClampNet(nn.Module):
    """x (B, 1) -> clamp(x, 0, 1) -> Linear(1, 2) with rows (1, -1)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        self.double().eval()

    def forward(self, x):
        return self.fc(torch.clamp(x, 0.0, 1.0))


@pytest.mark.parametrize("x0, want", [(0.0, 1), (1.0, 1), (1.5, 0), (-0.5, 0)])
def test_clamp_passes_at_its_bounds_by_hand(x0: float, want: int) -> None:
    # Profile x ∈ {0.25, 0.75}: clamp is the identity there; mean of x and of clamp 0.5.
    # Target class 0 (fc row +1): one term t = Δy, kept with s = sign(T)·sign(t) = +1 whenever
    # Δy ≠ 0, so C(clamp) = +1. Then s = sign(C)·sign(Δy)·sign(f′(x))·sign(Δx):
    # x = 0 (at min): Δy = Δx = −0.5 and PyTorch's clamp′ is 1 at a bound -> C(x) = +1;
    # x = 1 (at max): Δy = Δx = +0.5 -> +1; x = 1.5 and x = −0.5: outside, f′ = 0 -> 0.
    ref = ReferenceSlicer(_ClampNet(), theta=0.0)
    ref.profile([torch.tensor([[0.25], [0.75]], dtype=torch.float64)])
    s = ref.slice(torch.tensor([[x0]], dtype=torch.float64), target=0, check=True)
    np.testing.assert_array_equal(s.synapses["fc.weight"], [[1], [0]])
    np.testing.assert_array_equal(s.neurons["clamp"], [1])
    np.testing.assert_array_equal(s.neurons["x"], [want])


class _MaskedScores(nn.Module):
    """x (B, 3): one query x0, keys x0, x1, x2; scores x0·x_j + mask (0, 0, −∞); softmax;
    Linear(3, 2) on the weights."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mask", torch.tensor([[0.0, 0.0, float("-inf")]]))
        self.fc = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [1.0, -1.0, 1.0]]))
        self.double().eval()

    def forward(self, x):
        q, k = x[:, None, :1], x[:, :, None]  # (B, 1, 1), (B, 3, 1)
        w = torch.softmax(q @ k.transpose(1, 2) + self.mask, dim=-1)  # (B, 1, 3)
        return self.fc(torch.flatten(w, 1))


@pytest.mark.parametrize("theta", [0.0, 0.5])
def test_masked_score_has_delta_zero_and_passes_nothing_by_hand(theta: float) -> None:
    # The score against key 2 is −∞ in every sample: value and reference both −∞, so its Δ is
    # 0 (docs/spec.md §8; not NaN), its softmax weight is 0 in every sample (Δ = 0, the fc
    # term 1·Δw2 = 0 is never kept), the softmax rule hands it s = sign(C)·sign(Δy)·sign(Δx)
    # = 0 and the "+ mask" movement before it has nothing to pass: x2, read only through that
    # score, gets nothing, while x0 and x1 do.
    ref = ReferenceSlicer(_MaskedScores(), theta=theta)
    g = torch.Generator().manual_seed(0)
    ref.profile([torch.randn(6, 3, generator=g, dtype=torch.float64)])
    x = torch.tensor([[1.5, -0.5, 2.0]], dtype=torch.float64)
    add = ref.forward_values(x)["add"].numpy()
    assert np.isneginf(add[0, 0, 2]) and np.isfinite(add[0, 0, :2]).all()
    for target in (0, 1):
        s = ref.slice(x, target=target, check=True)
        assert s.neurons["add"][0, 2] == 0 and s.neurons["softmax"][0, 2] == 0
        assert s.neurons["x"][2] == 0
        assert np.abs(s.neurons["x"][:2]).sum() > 0
