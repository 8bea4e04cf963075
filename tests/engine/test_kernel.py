"""The fused numba kernel must give exactly what the torch reference policy gives."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnslicer.backward import kernels
from nnslicer.backward.policy import EffectivePathPolicy, NNSlicerPolicy

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba not installed")


def weighted_rows(x: np.ndarray, w: np.ndarray, xrow: np.ndarray, wrow: np.ndarray,
                  csign: np.ndarray, yraw: np.ndarray, synrow: np.ndarray, group: np.ndarray,
                  syn_rows: int, mode: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """The kernel on explicit rows x (R, K): returns (row signs (R, K), synapse signs)."""
    R, K = x.shape
    syn = np.zeros((syn_rows, K), dtype=np.int64)
    out = kernels.weighted_windows(np.ascontiguousarray(x).reshape(-1), np.arange(R) * K,
                                   np.arange(K), w, xrow, wrow, csign, yraw, synrow, group, syn,
                                   mode, theta, False)
    return out.reshape(R, K), syn


def torch_policy_signs(policy, terms: torch.Tensor, csign: torch.Tensor, yraw: torch.Tensor
                       ) -> torch.Tensor:
    """The policy's torch formulation (the sorted rule), not the kernels it may call."""
    enabled, kernels.ENABLED = kernels.ENABLED, False
    try:
        return policy.weighted_sum(terms, csign, yraw)
    finally:
        kernels.ENABLED = enabled


def sliced_both_ways(slicer, x: torch.Tensor, monkeypatch) -> tuple:
    """Per-sample slices of x through the numba kernels, then through the torch formulation."""
    fast = slicer.slice(x, per_sample=True)
    monkeypatch.setattr(kernels, "ENABLED", False)
    return fast, slicer.slice(x, per_sample=True)


def kernel_vs_policy(x: np.ndarray, w: np.ndarray, csign: np.ndarray, yraw: np.ndarray,
                     mode: int, theta: float) -> None:
    """One output point per (row of x, row of w); compare the signs both paths add."""
    R, O = x.shape[0], w.shape[0]
    xrow = np.repeat(np.arange(R), O)
    wrow = np.tile(np.arange(O), R)
    x_out, syn = weighted_rows(x, w, xrow, wrow, csign, yraw, wrow, xrow, O, mode, theta)
    policy = NNSlicerPolicy(theta) if mode == kernels.MODE_NNSLICER else EffectivePathPolicy(theta)
    terms = torch.from_numpy(w[wrow] * x[xrow])
    signs = torch_policy_signs(policy, terms, torch.from_numpy(csign), torch.from_numpy(yraw))
    want_x = torch.zeros(x.shape, dtype=torch.int64).index_add_(0, torch.from_numpy(xrow), signs)
    want_syn = torch.zeros(w.shape, dtype=torch.int64).index_add_(0, torch.from_numpy(wrow), signs)
    np.testing.assert_array_equal(x_out.astype(np.int64), want_x.numpy())
    np.testing.assert_array_equal(syn, want_syn.numpy())


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 70),
    theta=st.sampled_from([0.0, 0.05, 0.2, 0.5, 0.9]),
    kind=st.sampled_from(["gauss", "biased", "heavy", "sparse", "ties"]),
    mode=st.sampled_from([kernels.MODE_NNSLICER, kernels.MODE_EFFECTIVE_PATH]),
)
def test_kernel_equals_reference(seed: int, k: int, theta: float, kind: str, mode: int) -> None:
    rng = np.random.default_rng(seed)
    R, O = 5, 4
    if kind == "gauss":
        x = rng.standard_normal((R, k))
    elif kind == "biased":
        x = rng.standard_normal((R, k)) + 0.7
    elif kind == "heavy":
        x = rng.standard_cauchy((R, k))
    elif kind == "sparse":
        x = rng.standard_normal((R, k)) * (rng.random((R, k)) < 0.3)
    else:  # small integers: many equal magnitudes
        x = rng.integers(-2, 3, (R, k)).astype(np.float64)
    w = rng.standard_normal((O, k)) if kind != "ties" else rng.integers(-1, 2, (O, k)) * 1.0
    csign = rng.choice([-1, 1], R * O).astype(np.int64)
    yraw = rng.standard_normal(R * O)
    if mode == kernels.MODE_EFFECTIVE_PATH and theta == 0.0:
        theta = 0.5
    if kind == "ties" and mode == kernels.MODE_NNSLICER and theta > 0:
        # with exactly equal magnitudes k* depends on the order inside the tie (SPEC leaves it
        # open), so compare only points without ties among their non-zero terms
        terms = w[np.tile(np.arange(O), R)] * x[np.repeat(np.arange(R), O)]
        mags = [np.abs(r[r != 0]) for r in terms]
        if any(len(np.unique(m)) != len(m) for m in mags):
            return
    kernel_vs_policy(x, w, csign, yraw, mode, theta)


def test_dead_output_keeps_nothing() -> None:
    x = np.array([[1.0, -1.0, 1e-9]])
    w = np.ones((1, 3))
    x_out, syn = weighted_rows(x, w, np.array([0]), np.array([0]), np.array([1]),
                               np.array([0.0]), np.array([0]), np.array([0]), 1, 0, 0.2)
    assert not x_out.any() and not syn.any()


def test_chunks_never_split_a_group() -> None:
    group = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    for chunks in range(1, 8):
        starts = kernels.chunk_starts(group, chunks)
        assert starts[0] == 0 and starts[-1] == len(group)
        assert np.all(np.diff(starts) > 0)
        for c in starts[1:-1]:
            assert group[c] != group[c - 1]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), theta=st.sampled_from([0.0, 0.1, 0.2, 0.5, 0.9]),
       ties=st.booleans())
def test_two_term_shortcut_equals_sorted_rule(seed: int, theta: float, ties: bool) -> None:
    """A zero third term changes nothing in SPEC's rule but sends theta_keep down the sort path."""
    from nnslicer.backward.policy import theta_keep

    gen = torch.Generator().manual_seed(seed)
    terms = torch.randn(200, 2, generator=gen, dtype=torch.float64)
    if ties:
        terms = terms.round()
    kept2, total2 = theta_keep(terms, theta)
    kept3, total3 = theta_keep(torch.cat([terms, torch.zeros(200, 1, dtype=torch.float64)], 1),
                               theta)
    assert torch.equal(kept2, kept3[:, :2]) and torch.equal(total2, total3)


def test_cut_below_the_top_level() -> None:
    """k* among terms smaller than max/8: the kernel must go on past its first level."""
    x = np.array([[10.0, -10.0] + [1.0] * 20 + [0.01] * 5])
    w = np.ones((1, x.shape[1]))
    x_out, _ = weighted_rows(x, w, np.array([0]), np.array([0]), np.array([1]),
                             np.array([20.05]), np.array([0]), np.array([0]), 1, 0, 0.2)
    # T = 20.05; after ±10 and 16 ones |T − S| = 4.05 ≥ 4.01, the 17th one reaches it
    assert x_out[0, :2].tolist() == [1.0, -1.0]
    assert x_out[0, 2:22].tolist() == [1.0] * 20  # equal magnitudes: all ties are kept
    assert not x_out[0, 22:].any()
    kernel_vs_policy(x, w, np.array([1]), np.array([20.05]), kernels.MODE_NNSLICER, 0.2)


def test_float32_weights_are_widened_exactly() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 50))
    w32 = rng.standard_normal((4, 50)).astype(np.float32)
    xrow, wrow = np.repeat(np.arange(6), 4), np.tile(np.arange(4), 6)
    csign, yraw = np.ones(24, dtype=np.int64), rng.standard_normal(24)
    for mode in (kernels.MODE_NNSLICER, kernels.MODE_EFFECTIVE_PATH):
        got = weighted_rows(x, w32, xrow, wrow, csign, yraw, wrow, xrow, 4, mode, 0.2)
        want = weighted_rows(x, w32.astype(np.float64), xrow, wrow, csign, yraw, wrow,
                             xrow, 4, mode, 0.2)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("conv", [
    dict(kernel_size=2, stride=2),                      # windows do not overlap: one output copy
    dict(kernel_size=3, stride=1, padding=1),           # overlapping: one output copy per chunk
    dict(kernel_size=3, stride=2, dilation=2, padding=2, groups=2),
    dict(kernel_size=(1, 3), stride=(1, 3)),            # touching, not overlapping
])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_windows_read_in_place_equal_the_torch_path(conv, threads, monkeypatch) -> None:
    import nnslicer

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(4, 6, **conv), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(24, 5),
    ).eval()
    slicer = nnslicer.Slicer(model, theta=0.2, batch_size=8)
    slicer.profile([torch.randn(24, 4, 9, 9)])
    x = torch.randn(8, 4, 9, 9)
    # two threads: several chunks, so overlapping windows need their own copies; one: a
    # single chunk and output
    kernels.set_threads(threads)
    try:
        fast = slicer.slice(x, per_sample=True)
    finally:
        kernels.set_threads(2)
    monkeypatch.setattr(kernels, "ENABLED", False)
    slow = slicer.slice(x, per_sample=True)
    for name, s in slow.synapses.items():
        assert torch.equal(fast.synapses[name], s), name
    for name, n in slow.neurons.items():
        assert torch.equal(fast.neurons[name], n), name
    assert fast.neurons["input_1"].abs().sum() > 0  # the comparison is not between empty slices


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("groups", [1, 4])
def test_live_points_are_the_nonzero_points_in_row_major_order(transposed: bool,
                                                               groups: int) -> None:
    g = torch.Generator().manual_seed(11)
    B, Q, O = 3, 37, 8  # Q not a multiple of the 8-position tile of the transposed read
    c = torch.randint(-2, 3, (B, Q, O), generator=g)
    c[1] = 0  # a sample without live points
    y = torch.randn(B, Q, O, generator=g)
    layout = (lambda t: t.transpose(1, 2).contiguous()) if transposed else (lambda t: t)
    got = kernels.live_points(layout(c).numpy(), layout(y).numpy(), groups, transposed)
    b, q, o = c.nonzero().unbind(1)  # the torch formulation weighted_sum_windows uses
    want = ((b * groups + o // (O // groups)) * Q + q, o, c[b, q, o].sign(),
            y[b, q, o].double(), b * Q + q)
    assert len(got[0]) == int((c != 0).sum()) > 0
    for a, e in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, e.numpy())
    empty = kernels.live_points(np.zeros((2, 3, 4), dtype=np.int64),
                                np.zeros((2, 3, 4), dtype=np.float32), 1, False)
    assert all(len(a) == 0 for a in empty)


@pytest.mark.parametrize("pool", [
    lambda: torch.nn.AvgPool2d(2),
    lambda: torch.nn.AvgPool2d(3, stride=2, padding=1),           # overlapping, padded
    lambda: torch.nn.AvgPool2d(3, stride=2, ceil_mode=True),      # a partial last window
    lambda: torch.nn.AdaptiveAvgPool2d((3, 1)),                   # sizes that divide 9 x 9
    lambda: torch.nn.AdaptiveAvgPool2d((2, 4)),                   # uneven: the window table
])
def test_pool_windows_through_the_kernel_equal_the_torch_path(pool, monkeypatch) -> None:
    import nnslicer

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), pool(), torch.nn.Flatten(),
        torch.nn.LazyLinear(5),
    )
    model(torch.randn(1, 3, 9, 9))
    model.eval()
    slicer = nnslicer.Slicer(model, theta=0.2, batch_size=8)
    slicer.profile([torch.randn(24, 3, 9, 9)])
    x = torch.randn(8, 3, 9, 9)
    fast, slow = sliced_both_ways(slicer, x, monkeypatch)
    for name, n in slow.neurons.items():
        assert torch.equal(fast.neurons[name], n), name
    assert slow.neurons["_1"].abs().sum() > 0  # the pool passed signs back (to the ReLU)


def test_pool_1d_windows_through_the_kernel_equal_the_torch_path(monkeypatch) -> None:
    import nnslicer

    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3), torch.nn.ReLU(), torch.nn.AvgPool1d(3, stride=2, padding=1),
        torch.nn.AdaptiveAvgPool1d(2), torch.nn.Flatten(), torch.nn.Linear(8, 3),
    ).eval()
    slicer = nnslicer.Slicer(model, theta=0.2, batch_size=8)
    slicer.profile([torch.randn(24, 2, 14)])
    x = torch.randn(8, 2, 14)
    fast, slow = sliced_both_ways(slicer, x, monkeypatch)
    for name, n in slow.neurons.items():
        assert torch.equal(fast.neurons[name], n), name
    assert slow.neurons["_1"].abs().sum() > 0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(3, 300), st.sampled_from([0.05, 0.2, 0.5, 0.9]),
       st.floats(0.0, 0.9), st.integers(0, 2**31 - 1))
def test_row_selection_kernel_equals_the_sorted_rule(n, k, theta, zeros, seed) -> None:
    """``keep_rows`` (used for terms formed in torch, e.g. products of two live tensors) keeps
    exactly the terms the sorted θ rule keeps."""
    from nnslicer.backward.policy import theta_keep

    rng = np.random.default_rng(seed)
    terms = rng.standard_normal((n, k)) * rng.random((n, 1)) ** 3
    terms[rng.random((n, k)) < zeros] = 0.0
    want, _ = theta_keep(torch.from_numpy(terms), theta)
    np.testing.assert_array_equal(kernels.keep_rows(terms, theta), want.numpy())


def test_row_selection_breaks_ties_in_edge_order() -> None:
    """Equal magnitudes rank in edge order (docs/spec.md §4) in both paths: these rows reach
    θ|T| inside a run of equal magnitudes, so the order inside the run decides k*."""
    from nnslicer.backward.policy import theta_keep

    for row in ([1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, 1.0], [2.0, -1.0, 1.0, 1.0, -1.0]):
        terms = np.array([row])
        want, _ = theta_keep(torch.from_numpy(terms), 0.5)
        np.testing.assert_array_equal(kernels.keep_rows(terms, 0.5), want.numpy())


@pytest.mark.parametrize("gain_shape", [(2, 8, 16, 16), (1, 8, 1, 1), (8, 1, 1), (1, 1, 16, 16),
                                        (8, 16, 16), (), (1, 8, 16, 1), (1, 8, 1, 16)])
def test_fused_sign_product_equals_the_torch_path(gain_shape, monkeypatch) -> None:
    from nnslicer.backward.policy import _broadcast_block

    g = torch.Generator().manual_seed(3)
    shape = (2, 8, 16, 16)
    # every gain but the last is one block of dims (fused); (1, 8, 1, 16) is not (torch)
    assert (_broadcast_block(torch.zeros(gain_shape), torch.Size(shape)) is None) == (
        gain_shape == (1, 8, 1, 16))
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    dx = torch.randn(shape, generator=g, dtype=torch.float64)
    gain = torch.randn(gain_shape, generator=g, dtype=torch.float64)
    dy[0, 0], dx[0, 1] = 0.0, 0.0
    if gain.numel() > 2:
        gain.view(-1)[:2] = 0.0  # zero factors give sign 0
    c_sign = torch.randint(-1, 2, shape, generator=g)
    policy = NNSlicerPolicy(0.2)
    fused = policy.pointwise(c_sign, dy, gain, dx)
    monkeypatch.setattr(kernels, "ENABLED", False)
    reference = policy.pointwise(c_sign, dy, gain, dx)
    assert fused.dtype == reference.dtype == torch.int64
    assert torch.equal(fused, reference)
    assert (fused == 0).any() and (fused == 1).any() and (fused == -1).any()
    if gain.numel() > 1:  # the gain's placement matters, so the equality above checks it
        reordered = gain.reshape(-1).flip(0).reshape(gain.shape)
        assert not torch.equal(fused, policy.pointwise(c_sign, dy, reordered, dx))


@pytest.mark.parametrize("theta", [0.0, 0.2, 0.9])
def test_two_term_rows_equal_the_torch_path(theta: float, monkeypatch) -> None:
    """tensor ± tensor rows (the add rule's): the fused signs against ``theta_keep``."""
    g = torch.Generator().manual_seed(4)
    n = 4096
    terms = torch.randn(n, 2, generator=g, dtype=torch.float64)
    terms[:300, 1] = -terms[:300, 0] * (1 + 1e-5 * torch.rand(300, generator=g,
                                                                dtype=torch.float64))
    terms[300:400, 0] = 0.0  # zero terms are never kept
    terms[400:500, 1] = terms[400:500, 0]  # equal magnitudes
    terms[500:600] = 0.0
    c_sign = torch.randint(-1, 2, (n,), generator=g)
    policy = NNSlicerPolicy(theta)
    fused = policy.weighted_sum(terms, c_sign, terms.sum(1))
    monkeypatch.setattr(kernels, "ENABLED", False)
    reference = policy.weighted_sum(terms, c_sign, terms.sum(1))
    assert fused.dtype == reference.dtype == torch.int64
    assert torch.equal(fused, reference)
    kept = (reference != 0).sum(1)
    assert (kept == 0).any() and (kept == 1).any() and (kept == 2).any()


@pytest.mark.parametrize("theta", [0.0, 0.2, 0.9])
def test_two_operand_points_equal_the_torch_path(theta: float, monkeypatch) -> None:
    """Whole tensors of two-term points (the add and product rules'): the fused pass against
    the torch path, which lists the live points and selects them with ``theta_keep``."""
    g = torch.Generator().manual_seed(6)
    shape = (3, 4, 10, 10)
    ta = torch.randn(shape, generator=g, dtype=torch.float64)
    tb = torch.randn(shape, generator=g, dtype=torch.float64)
    tb[0] = -ta[0] * (1 + 1e-5 * torch.rand(shape[1:], generator=g, dtype=torch.float64))
    ta[1, 0] = 0.0  # zero terms are never kept
    tb[1, 1] = ta[1, 1]  # equal magnitudes
    c = torch.randint(-2, 3, shape, generator=g)  # C = 0: no signs; |C| > 1: only its sign
    policy = NNSlicerPolicy(theta)
    fused = policy.two_terms(c, ta, tb, ta + tb)
    monkeypatch.setattr(kernels, "ENABLED", False)
    reference = policy.two_terms(c, ta, tb, ta + tb)
    for f, r in zip(fused, reference, strict=True):
        assert f.dtype == r.dtype == torch.int64 and f.shape == shape
        assert torch.equal(f, r)
    kept = (reference[0] != 0).int() + (reference[1] != 0).int()
    assert (kept[c != 0] == 0).any() and (kept == 1).any() and (kept == 2).any()
    assert not kept[c == 0].any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("sample_shape", [(2, 3, 4), (5, 40, 41), (5, 80, 81)],
                         ids=["serial", "a-block-a-row", "blocks-in-a-row"])
def test_fused_delta_equals_the_torch_path(dtype: torch.dtype, per_sample: bool,
                                           sample_shape: tuple[int, ...], monkeypatch) -> None:
    from nnslicer.backward import engine

    g = torch.Generator().manual_seed(5)
    value = torch.randn(3, *sample_shape, generator=g).to(dtype)
    ref = torch.randn(3 if per_sample else 1, *sample_shape, generator=g, dtype=torch.float64)
    value[0, 0, 0, :3] = torch.tensor([float("-inf"), float("inf"), 2.5])
    ref[0, 0, 0, :3] = torch.tensor([float("-inf"), float("inf"), 2.5])  # Δ 0, not NaN
    value[1, 1, 1, 1] = float("-inf")  # against a finite reference: stays -inf

    class State:  # the two fields BackwardState.delta reads
        values = {"n": value}

        def __init__(self) -> None:
            self._deltas: dict = {}

        def reference_value(self, name: str) -> torch.Tensor:
            return ref

    assert engine._fused_delta(value, ref)
    fused = engine.BackwardState.delta(State(), "n")
    monkeypatch.setattr(kernels, "ENABLED", False)
    reference = engine.BackwardState.delta(State(), "n")
    assert fused.dtype == reference.dtype == torch.float64
    assert torch.equal(fused, reference)
    assert fused.shape == value.shape and not fused.isnan().any()


@pytest.mark.parametrize("layout", ["contiguous", "slice", "transposed", "scalar"])
def test_any_nonzero_equals_torch_any(layout: str) -> None:
    from nnslicer.backward import engine

    base = torch.zeros(4, 3, 9, 10, dtype=torch.int64)
    view = {"contiguous": lambda t: t, "slice": lambda t: t[:, :, 1:-1, 2:-2],
            "transposed": lambda t: t.transpose(1, 3), "scalar": lambda t: t[0, 0, 0, 0]}[layout]
    assert not engine._any_nonzero(view(base))
    seen = set()
    for pos in [(0, 0, 0, 0), (3, 2, 8, 9), (2, 1, 1, 2), (1, 2, 0, 5)]:
        c = base.clone()  # non-zero first, last, inside and outside the slice
        c[pos] = -2
        want = bool(view(c).any())
        assert engine._any_nonzero(view(c)) == want
        seen.add(want)
    assert seen == {True, False} if layout in ("slice", "scalar") else seen == {True}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bounds", [(0.0, None), (0.0, 6.0), (-3.0, 3.0)])
def test_interval_gain_equals_the_torch_comparisons(dtype: torch.dtype, bounds: tuple,
                                                    monkeypatch) -> None:
    from nnslicer.rules import activation

    lo, hi = bounds
    x = torch.randn(4, 5, 6, dtype=dtype) * 5
    x.view(-1)[:8] = torch.tensor([lo, 6.0, 3.0, -3.0, float("nan"), float("inf"),
                                   float("-inf"), 0.0], dtype=dtype)
    fused = activation._inside(x, lo, hi)
    monkeypatch.setattr(kernels, "ENABLED", False)
    reference = activation._inside(x, lo, hi)
    assert fused.dtype == reference.dtype == torch.int8 and fused.shape == x.shape
    assert torch.equal(fused, reference)
    assert 0 < int(fused.sum()) < x.numel()


class _Attention(torch.nn.Module):
    """Two heads of self-attention: both matrix products have two input-dependent operands."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)
        self.head = torch.nn.Linear(5 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, 2, 4).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * 0.5, dim=-1)
        return self.head((attn @ v).transpose(1, 2).reshape(B, -1))


@pytest.mark.parametrize("policy", ["nnslicer", "effective-path"])
def test_matrix_products_through_the_kernel_equal_the_torch_path(policy: str,
                                                                 monkeypatch) -> None:
    import nnslicer

    torch.manual_seed(3)
    model = _Attention().eval()
    if policy == "nnslicer":
        slicer = nnslicer.Slicer(model, theta=0.2, progress=False)
        slicer.profile([torch.randn(16, 5, 8)])
    else:
        slicer = nnslicer.EffectivePath(model, theta=0.5, progress=False)
    x = torch.randn(4, 5, 8)
    fast, slow = sliced_both_ways(slicer, x, monkeypatch)
    for name, s in slow.synapses.items():
        assert torch.equal(fast.synapses[name], s), name
    for name, n in slow.neurons.items():
        assert torch.equal(fast.neurons[name], n), name
    assert any(bool(s.any()) for s in slow.synapses.values())
