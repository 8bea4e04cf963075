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
    decomposition of SPEC §4 has no layout movement (transposing query, key and value apart
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
