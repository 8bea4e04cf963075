"""Profiling sums against a direct float64 computation, on the numba and the torch paths."""

import numpy as np
import pytest
import torch
from torch import nn

import nnslicer
from nnslicer.forward import recorder
from nnslicer.forward.recorder import record_values
from nnslicer.profile import accumulate
from nnslicer.profile import profile as profile_module
from nnslicer.profile.profile import _ClassSums, profile_batches

torch.set_num_threads(1)


@pytest.fixture(params=["numba", "torch"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the numba additions (accumulate.py) and again with the torch ones."""
    if request.param == "numba" and not accumulate.AVAILABLE:
        pytest.skip("numba not installed")
    monkeypatch.setattr(accumulate, "ENABLED", request.param == "numba")
    return request.param


def wide_model() -> nn.Module:
    """Activations of 32·32·16 = 16384 values per sample: large enough for the per-sample path,
    while the linear layers stay on the index_add_ path."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(64, 5),
    ).double().eval()  # float64: conv results do not depend on the batch split


def direct_class_sums(slicer: nnslicer.Slicer, x: torch.Tensor, classes: torch.Tensor,
                      k: int) -> dict[str, torch.Tensor]:
    values = record_values(slicer.graph, x)
    out = {}
    for node in slicer.graph.live_nodes():
        v = values[node.name].to(torch.float64)
        sums = torch.zeros(k, *v.shape[1:], dtype=torch.float64)
        for i, c in enumerate(classes.tolist()):  # sample order, as the engine adds them
            sums[c] += v[i]
        out[node.name] = sums
    return out


def test_both_accumulation_paths_are_exercised() -> None:
    slicer = nnslicer.Slicer(wide_model())
    values = record_values(slicer.graph, torch.rand(1, 1, 32, 32, dtype=torch.float64))
    sizes = [values[n.name][0].numel() for n in slicer.graph.live_nodes()]
    assert max(sizes) >= _ClassSums.PER_SAMPLE_MIN > min(sizes)


@pytest.mark.parametrize("kept", ["all", None, [1, 3]])
@pytest.mark.parametrize("labelled", [True, False])
def test_class_sums_equal_direct_float64_sums(labelled: bool, kept: object, path: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # runs of up to two large samples are summed first, longer ones added sample by sample
    monkeypatch.setattr(_ClassSums, "RUN_SUM_MAX", 2 * _ClassSums.PER_SAMPLE_MIN)
    slicer = nnslicer.Slicer(wide_model())
    g = torch.Generator().manual_seed(1)
    x = torch.rand(23, 1, 32, 32, generator=g, dtype=torch.float64)
    with torch.no_grad():
        predicted = slicer.graph.module(x).argmax(1)
    labels = torch.randint(0, 5, (23,), generator=g) if labelled else predicted
    parts = [(x[:7], labels[:7]), (x[7:16], labels[7:16]), (x[16:], labels[16:])]
    data = parts if labelled else [p[0] for p in parts]
    # chunk_size 4 splits the batches (unlabelled ones are held per chunk when rows are kept)
    profile = profile_batches(lambda x: (slicer.graph, x), data, chunk_size=4, classes=kept)
    want = direct_class_sums(slicer, x, labels, 5)
    rows = [0, 1, 2, 3, 4] if kept == "all" else kept or []
    assert profile.class_ids.tolist() == rows
    assert profile.class_counts.tolist() == torch.bincount(labels, minlength=5).tolist()
    assert set(profile.sums) == set(want)
    assert set(profile.class_sums) == (set(want) if rows else set())
    for name, sums in want.items():
        torch.testing.assert_close(profile.sums[name], sums.sum(0), rtol=1e-12, atol=1e-12)
        if rows:
            torch.testing.assert_close(profile.class_sums[name], sums[rows], rtol=1e-12,
                                       atol=1e-12)


def test_out_of_range_labels_in_first_and_later_batches() -> None:
    slicer = nnslicer.Slicer(wide_model())
    x = torch.rand(4, 1, 32, 32, dtype=torch.float64)
    ok = torch.tensor([0, 1, 2, 3])
    bad = torch.tensor([0, 1, 2, 5])
    for data in ([(x, bad)], [(x, ok), (x, bad)]):
        with pytest.raises(nnslicer.InputError, match=r"labels must be in \[0, 5\)"):
            slicer.profile(data)


def test_float32_values_are_summed_in_float64(path: str) -> None:
    """A float32 model: each batch is run whole here (chunks of up to 64 samples), so the direct
    sums see the same values."""
    slicer = nnslicer.Slicer(wide_model().float())
    g = torch.Generator().manual_seed(2)
    batches = [torch.rand(n, 1, 32, 32, generator=g) * 1e4 for n in (5, 6)]
    labels = [torch.randint(0, 5, (n,), generator=g) for n in (5, 6)]
    profile = profile_batches(lambda x: (slicer.graph, x), list(zip(batches, labels, strict=True)))
    for name in profile.class_sums:
        want = sum(direct_class_sums(slicer, x, c, 5)[name]
                   for x, c in zip(batches, labels, strict=True))
        assert profile.class_sums[name].dtype == torch.float64
        torch.testing.assert_close(profile.class_sums[name], want, rtol=1e-15, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
@pytest.mark.parametrize("points", [7, 3 * 16384 + 5])  # one block, several (and parallel)
def test_numba_addition_equals_a_float64_loop(dtype: torch.dtype, points: int) -> None:
    if not accumulate.AVAILABLE:
        pytest.skip("numba not installed")
    g = torch.Generator().manual_seed(3)
    v = (torch.randn(5, points, generator=g) * 1e3).to(dtype)
    rows = np.array([2, -1, 0, 2, 1], dtype=np.int64)
    sums, total = np.zeros((3, points)), np.zeros(points)
    accumulate.add_batch(v, rows, sums, total)
    accumulate.add_batch(v, rows, sums, np.zeros(0))  # no overall row this time
    want_rows, want_total = np.zeros((3, points)), np.zeros(points)
    x = v.numpy().astype(np.float64)
    for _ in range(2):
        for i, r in enumerate(rows):  # sample order, as the kernel adds them
            if r >= 0:
                want_rows[r] += x[i]
    for i in range(len(rows)):
        want_total += x[i]
    assert np.array_equal(sums, want_rows)
    assert np.array_equal(total, want_total)


def counted_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batch sizes of the forward passes profiling makes from now on."""
    sizes: list[int] = []
    stream = recorder.stream_values

    def counting(graph, x, visit):  # type: ignore[no-untyped-def]
        sizes.append(x.shape[0])
        return stream(graph, x, visit)

    monkeypatch.setattr(profile_module, "stream_values", counting)
    return sizes


def test_small_batches_are_gathered_into_chunks(path: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    slicer = nnslicer.Slicer(wide_model())
    g = torch.Generator().manual_seed(4)
    x = torch.rand(23, 1, 32, 32, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (23,), generator=g)
    sizes = counted_passes(monkeypatch)
    # labelled batches, then unlabelled ones: a chunk never mixes them
    data = [(x[:3], labels[:3]), (x[3:5], labels[3:5]), (x[5:13], labels[5:13]), x[13:15],
            x[15:23]]
    profile = profile_batches(lambda b: (slicer.graph, b), data, chunk_size=4, classes="all")
    assert sizes == [4, 4, 4, 1, 4, 4, 2]  # 13 labelled samples in chunks of 4, then 10 more
    predicted = slicer.graph.module(x[13:]).argmax(1)
    want = direct_class_sums(slicer, x, torch.cat([labels[:13], predicted]), 5)
    for name, sums in want.items():
        torch.testing.assert_close(profile.class_sums[name], sums, rtol=1e-12, atol=1e-12)


def test_unlabelled_values_are_held_a_few_samples_at_a_time(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_module, "HELD_BYTES", 1)  # one sample at a time
    slicer = nnslicer.Slicer(wide_model())
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(5),
                   dtype=torch.float64)
    sizes = counted_passes(monkeypatch)
    profile = profile_batches(lambda b: (slicer.graph, b), [x], chunk_size=4, classes="all")
    assert sizes == [1] * 6
    want = direct_class_sums(slicer, x, slicer.graph.module(x).argmax(1), 5)
    for name, sums in want.items():
        torch.testing.assert_close(profile.class_sums[name], sums, rtol=1e-12, atol=1e-12)


def test_class_tables_are_the_callers_choice() -> None:
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    x = torch.randn(64, 6)
    labels = torch.arange(64) % 4
    data = list(zip(x.split(16), labels.split(16), strict=True))
    full = nnslicer.Slicer(model).profile(data, classes="all")
    some = nnslicer.Slicer(model).profile(data, classes=[1, 3])
    none = nnslicer.Slicer(model).profile(data, classes=None)
    for name, total in full.sums.items():  # the overall means never depend on the choice
        torch.testing.assert_close(some.sums[name], total, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(none.sums[name], total, rtol=1e-12, atol=1e-12)
    cls = torch.tensor([3, 1, 3])
    for name in full.sums:
        torch.testing.assert_close(some.class_mean(name, cls), full.class_mean(name, cls))
    with pytest.raises(nnslicer.InputError, match=r"class\(es\) \[0\] have no per-class mean"):
        some.class_mean("_0", torch.tensor([0, 1]))
    predicted = sorted(set(model(x[:2]).argmax(1).tolist()))  # reference="class" reads these
    slicer = nnslicer.Slicer(model)
    slicer.profile(data, classes=predicted)
    assert slicer.slice(x[:2], reference="class").synapses["0.weight"].any()
    old = profile_module.CLASS_TABLE_BUDGET
    profile_module.CLASS_TABLE_BUDGET = 16  # bytes: too small for any class table
    try:
        with pytest.warns(UserWarning, match="per-class means of 4 classes would take"):
            auto = nnslicer.Slicer(model).profile(data)
        assert auto.class_ids.numel() == 0
    finally:
        profile_module.CLASS_TABLE_BUDGET = old
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nnslicer.Slicer(model).profile(data).class_ids.numel() == 4


def test_profiling_refuses_an_output_that_is_not_batch_by_classes() -> None:
    class Grid(nn.Module):  # (batch, 3, 4) scores
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 12)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x).view(-1, 3, 4)

    with pytest.raises(nnslicer.InputError, match=r"output has shape \(1, 3, 4\); nnslicer "
                                                  r"needs \(batch, classes\)"):
        nnslicer.Slicer(Grid().eval()).profile(torch.rand(5, 4))
