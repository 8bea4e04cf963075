"""Hypothesis property tests on random small models.

1. Engine vs the independent float64 reference (tests/reference/spec_reference.py) on random models
   mixing every operator of SPEC's table (v1 and v2 kinds, see random_models.net_specs), for every
   target form of docs/spec.md §6 including an intermediate-neuron criterion ``Neurons(node,
   channel)`` on
   a random node: ≥ 99.5 % of synapse entries (and of neuron points) must agree; the
   exact-agreement rate is collected and printed by the last test of this file.
   The profile means are compared to rounding, then both slice from the engine's means (see
   ``_share_means``).
2. Invariants, checked on the engine and, as a sanity check of the tests themselves, on the
   reference:
   * the batch result is the sum of the per-sample results (docs/spec.md §5);
   * a sample's result does not depend on the other samples of the batch: it is the same when
     the others are replaced (when torch computed its values bit-identically in both batches:
     float64 kernels may round a row differently with other rows around it);
   * θ = 0 keeps every non-zero term: on the Linear that produces the criterion, the per-sample
     synapse contributions are exactly sign(T)·sign(w·Δx) on criterion rows (0 when the row did
     not move, docs/spec.md §4 step 1) and 0 elsewhere;
   * a sliced synapse never has a zero term (zero weights and zero-Δ inputs of a Linear are never
     in the slice);
   * an intermediate criterion ``Neurons(node, channel)`` seeds C = +1 on exactly that channel's
     points, leaves every node that is not an ancestor of it and every synapse downstream of it
     at 0;
   * larger θ never keeps more on the Linear that produces the criterion, per sample. This is
     what SPEC implies: for one output point, k*(θ) is non-increasing in θ, so the kept sets are
     nested. It is NOT asserted for deeper layers (their C depends on θ upstream) nor for
     batch-summed counts (contributions of different samples can cancel);
   * slicing is deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference import DEAD_OUTPUT_RATIO, ReferenceNeurons, ReferenceSlicer
from reference.random_models import (
    NetSpec,
    as_numpy,
    build_net,
    compare_maps,
    make_data,
    net_specs,
    target_forms,
)

torch.set_num_threads(1)

THETAS = (0.0, 0.2, 0.5)
OUTPUT_FORMS = ("top1", "int", "per_sample", "bool")
TARGET_FORMS = (*OUTPUT_FORMS, "neurons")

AGREEMENT: dict[str, int] = {
    "examples": 0,
    "examples_exact": 0,
    "synapses_equal": 0,
    "synapses_total": 0,
    "neurons_equal": 0,
    "neurons_total": 0,
}

COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)


def _engine():
    import nnslicer

    return nnslicer


def make_slicer(impl: str, model: nn.Module, theta: float):
    if impl == "reference":
        return ReferenceSlicer(model, theta=theta)
    return _engine().Slicer(model, theta=theta)


def for_impl(impl: str, target: Any) -> Any:
    """The engine spells ``ReferenceNeurons(node, index)`` as ``nnslicer.Neurons(node, index)``."""
    if impl != "reference" and isinstance(target, ReferenceNeurons):
        return _engine().Neurons(target.node, target.index)
    return target


def _np(d: Any) -> dict[str, np.ndarray]:
    return {k: as_numpy(v) for k, v in d.items()}


def _setup(spec: NetSpec, labeled: bool = True):
    model = build_net(spec)
    batches, x = make_data(spec.in_shape, spec.n_classes, spec.seed, labeled=labeled)
    return model, batches, x


def _target(form: str, spec: NetSpec, n: int, model: nn.Module, x: torch.Tensor) -> Any:
    if form == "neurons":
        return neuron_target(model, x, spec.seed)
    return target_forms(n, spec.n_classes, spec.seed)[form]


def neuron_target(model: nn.Module, x: torch.Tensor, seed: int) -> ReferenceNeurons:
    """Neurons(node, channel) on a random live node: a point node other than the input (every
    node of these models lies on a path from the input to the output), a random channel."""
    ref = ReferenceSlicer(model)
    values = ref.forward_values(x)
    names = [n.name for n in ref.order if n.op not in ("placeholder", "internal")]
    rng = np.random.default_rng(seed)
    name = names[int(rng.integers(len(names)))]
    return ReferenceNeurons(name, int(rng.integers(values[name].shape[1])))


def _final_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    name = "fc2" if hasattr(model, "fc2") else "fc"
    return name, getattr(model, name)


def _profile_mean(slicer: Any, node: str) -> np.ndarray:
    if isinstance(slicer, ReferenceSlicer):
        return slicer.dataset_mean[node]
    return slicer.current_profile.mean(node).numpy()


def _forward_values(slicer: Any, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every node's value as the slicer computes it (tensors only)."""
    if isinstance(slicer, ReferenceSlicer):
        values = slicer.forward_values(x)
    else:
        from nnslicer.forward.recorder import record_values

        values = record_values(slicer.graph, x)
    # detach: a parameter read by a get_attr node is recorded as itself (it requires grad)
    return {k: v.detach().numpy() for k, v in values.items() if isinstance(v, torch.Tensor)}


def _linear_input_deltas(model: nn.Module, slicer: Any, x: torch.Tensor):
    """Per Linear module: Δ of its input for every sample of x (dataset reference). The input
    values come from forward hooks; the mean of the node feeding the Linear is the slicer's own
    profile mean, because the properties checked with it are about the backward pass (an
    independently summed float64 mean may sit one ulp away from the slicer's, see
    ``_share_means``)."""
    feeds = {
        n.target: n.args[0].name
        for n in torch.fx.symbolic_trace(model).graph.nodes
        if n.op == "call_module" and isinstance(model.get_submodule(n.target), nn.Linear)
    }
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, name=name: captured.__setitem__(name, inp[0].detach().clone())
        )
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    deltas = {k: v.numpy() - _profile_mean(slicer, feeds[k]) for k, v in captured.items()}
    return deltas, out.numpy()


def _mask(target: Any, out: np.ndarray) -> np.ndarray:
    b, k = out.shape
    mask = np.zeros((b, k), dtype=bool)
    if target is None:
        mask[np.arange(b), out.argmax(1)] = True
    elif isinstance(target, int):
        mask[:, target] = True
    elif target.dim() == 1:
        mask[np.arange(b), target.numpy()] = True
    else:
        mask = target.numpy()
    return mask


def _share_means(ref: ReferenceSlicer, profile: Any) -> None:
    """Check the engine's profile means against the reference's to rounding, then slice both
    from the engine's. The test models are float64, where a sum's rounding depends on its order
    (docs/spec.md §2 fixes none): a point constant over the data can get a mean one ulp off its
    value,
    and that ±1e-16 Δ is a real term at θ = 0 (CI once found 57 of 288 synapses flipped by it).
    Profiling is compared here (and exactly, on float32 values, in test_profile.py); the slice
    comparison then isolates the forward/backward rules."""
    counts = profile.class_counts
    for name, want in ref.dataset_mean.items():
        got = profile.mean(name).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
        ref.dataset_mean[name] = got
        for c, means in ref.class_mean.items():
            got_c = (profile.class_sums[name][c] / counts[c]).numpy()
            np.testing.assert_allclose(got_c, means[name], rtol=1e-12, atol=1e-12, err_msg=name)
            means[name] = got_c


# --- 1. engine vs reference --------------------------------------------------------------------


@settings(max_examples=30, **COMMON)
@given(
    spec=net_specs(),
    theta=st.sampled_from(THETAS),
    reference=st.sampled_from(("dataset", "class")),
    form=st.sampled_from(TARGET_FORMS),
    labeled=st.booleans(),
)
def test_engine_agrees_with_reference_on_random_models(
    spec: NetSpec, theta: float, reference: str, form: str, labeled: bool
) -> None:
    labeled = labeled or reference == "class"  # class means need every predicted class present
    model, batches, x = _setup(spec, labeled)
    target = _target(form, spec, len(x), model, x)
    ref = ReferenceSlicer(model, theta=theta)
    ref.profile(batches)
    eng = _engine().Slicer(model, theta=theta)
    eng.profile(batches)
    _share_means(ref, eng.current_profile)
    r = ref.slice(x, target=target, reference=reference, per_sample=True, check=True)
    e = eng.slice(x, target=for_impl("engine", target), reference=reference, per_sample=True)
    names = [n.name for n in ref.order if n.op != "placeholder"]
    s_eq, s_tot, s_probs = compare_maps("synapses", r.synapses, e.synapses)
    n_eq, n_tot, n_probs = compare_maps("neurons", r.neurons, e.neurons, names)
    AGREEMENT["examples"] += 1
    AGREEMENT["examples_exact"] += int(s_eq == s_tot and n_eq == n_tot)
    AGREEMENT["synapses_equal"] += s_eq
    AGREEMENT["synapses_total"] += s_tot
    AGREEMENT["neurons_equal"] += n_eq
    AGREEMENT["neurons_total"] += n_tot
    structural = [p for p in s_probs + n_probs if " differ " not in p]
    assert not structural, "\n".join(structural)
    assert s_eq >= 0.995 * s_tot, f"synapses {s_eq}/{s_tot}:\n" + "\n".join(s_probs[:8])
    assert n_eq >= 0.995 * n_tot, f"neurons {n_eq}/{n_tot}:\n" + "\n".join(n_probs[:8])


# --- 2. invariants (engine; the reference as a check of the checks) ----------------------------

IMPLS = ["engine", "reference"]


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=12, **COMMON)
@given(
    spec=net_specs(max_layers=4),
    theta=st.sampled_from(THETAS),
    reference=st.sampled_from(("dataset", "class")),
    form=st.sampled_from(TARGET_FORMS),
)
def test_batch_result_is_the_sum_of_per_sample_results(
    impl: str, spec: NetSpec, theta: float, reference: str, form: str
) -> None:
    model, batches, x = _setup(spec)
    target = for_impl(impl, _target(form, spec, len(x), model, x))
    s = make_slicer(impl, model, theta)
    s.profile(batches)
    per = s.slice(x, target=target, reference=reference, per_sample=True)
    tot = s.slice(x, target=target, reference=reference, per_sample=False)
    for what in ("synapses", "neurons"):
        p, t = _np(getattr(per, what)), _np(getattr(tot, what))
        assert set(p) == set(t), what
        for k in t:
            assert p[k].shape == (len(x), *t[k].shape), (what, k, p[k].shape, t[k].shape)
            np.testing.assert_array_equal(p[k].sum(0), t[k], err_msg=f"{what}[{k}]")


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=10, **COMMON)
@given(
    spec=net_specs(max_layers=4),
    theta=st.sampled_from(THETAS),
    form=st.sampled_from(("top1", "per_sample", "bool", "neurons")),
)
def test_a_sample_result_does_not_depend_on_the_rest_of_the_batch(
    impl: str, spec: NetSpec, theta: float, form: str
) -> None:
    model, batches, x = _setup(spec)
    # The last sample again, among other companions (same batch size, so torch's kernels
    # mostly round it the same way; a batch of one would often round differently).
    i = len(x) - 1
    g = torch.Generator().manual_seed(spec.seed + 1)
    x_other = torch.randn(x.shape, generator=g, dtype=x.dtype)
    x_other[i] = x[i]
    s = make_slicer(impl, model, theta)
    s.profile(batches)
    values, values_other = _forward_values(s, x), _forward_values(s, x_other)
    assume(
        all(
            np.array_equal(v[i], values_other[k][i])
            for k, v in values.items()
            if v.ndim and v.shape[0] == len(x)
        )
    )
    target = for_impl(impl, _target(form, spec, len(x), model, x))
    per = s.slice(x, target=target, reference="dataset", per_sample=True)
    other = s.slice(x_other, target=target, reference="dataset", per_sample=True)
    for what in ("synapses", "neurons"):
        p, o = _np(getattr(per, what)), _np(getattr(other, what))
        for k in p:
            np.testing.assert_array_equal(p[k][i], o[k][i], err_msg=f"{what}[{k}]")


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=12, **COMMON)
@given(spec=net_specs(max_layers=4), form=st.sampled_from(OUTPUT_FORMS))
def test_theta_zero_keeps_every_nonzero_term_of_the_criterion_linear(
    impl: str, spec: NetSpec, form: str
) -> None:
    model, batches, x = _setup(spec)
    target = _target(form, spec, len(x), model, x)
    s = make_slicer(impl, model, 0.0)
    s.profile(batches)
    res = s.slice(x, target=target, reference="dataset", per_sample=True)
    name, fc = _final_linear(model)
    deltas, out = _linear_input_deltas(model, s, x)
    mask = _mask(target, out)
    w = fc.weight.detach().numpy()
    got = as_numpy(res.synapses[f"{name}.weight"])
    want = np.zeros_like(got)
    for b in range(len(x)):
        for o in np.flatnonzero(mask[b]):
            t = w[o] * deltas[name][b]
            total = float(np.sum(t))
            if np.abs(t).max() == 0 or abs(total) <= DEAD_OUTPUT_RATIO * np.abs(t).max():
                continue
            want[b, o] = np.sign(total) * np.sign(t)
    np.testing.assert_array_equal(got, want)
    # The criterion itself: C = +1 on every criterion output neuron.
    out_node = ReferenceSlicer(model).output_name  # fc, or a softmax after it
    np.testing.assert_array_equal(as_numpy(res.neurons[out_node]), mask.astype(np.int64))


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=12, **COMMON)
@given(
    spec=net_specs(max_layers=4), theta=st.sampled_from(THETAS), form=st.sampled_from(TARGET_FORMS)
)
def test_a_sliced_synapse_never_has_a_zero_term(
    impl: str, spec: NetSpec, theta: float, form: str
) -> None:
    model, batches, x = _setup(spec)
    head = dict(spec.head)
    if head["hidden"] and head["fn"] in ("relu", "F.relu", "relu6"):
        with torch.no_grad():  # a dead hidden unit: its output is exactly 0, so Δ = 0
            model.fc1.bias[0] = -1e6
    target = for_impl(impl, _target(form, spec, len(x), model, x))
    s = make_slicer(impl, model, theta)
    s.profile(batches)
    res = s.slice(x, target=target, reference="dataset", per_sample=True)
    syn = _np(res.synapses)
    params = dict(model.named_parameters())
    for m_name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            c = syn[f"{m_name}.weight"]
            zero = (params[f"{m_name}.weight"] == 0).numpy()
            assert not (c[:, zero] != 0).any(), f"{m_name}: zero weight in the slice"
    deltas, _ = _linear_input_deltas(model, s, x)
    for m_name, d in deltas.items():
        if d.ndim != 2:
            continue
        c = syn[f"{m_name}.weight"]  # (B, out, in)
        dead = d == 0  # (B, in)
        assert not (c.transpose(0, 2, 1)[dead] != 0).any(), f"{m_name}: zero-Δ input in slice"


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=10, **COMMON)
@given(spec=net_specs(max_layers=3), form=st.sampled_from(OUTPUT_FORMS))
def test_larger_theta_never_keeps_more_on_the_criterion_linear(
    impl: str, spec: NetSpec, form: str
) -> None:
    model, batches, x = _setup(spec)
    target = _target(form, spec, len(x), model, x)
    name = f"{_final_linear(model)[0]}.weight"
    previous = None
    for theta in (0.0, 0.2, 0.35, 0.8):
        s = make_slicer(impl, model, theta)
        s.profile(batches)
        c = as_numpy(s.slice(x, target=target, per_sample=True).synapses[name])
        if previous is not None:
            kept, kept_before = c != 0, previous != 0
            assert not (kept & ~kept_before).any(), f"θ={theta} keeps an edge a smaller θ dropped"
            per_sample = np.abs(c).reshape(len(x), -1).sum(1)
            per_sample_before = np.abs(previous).reshape(len(x), -1).sum(1)
            assert (per_sample <= per_sample_before).all(), (theta, per_sample, per_sample_before)
        previous = c


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=8, **COMMON)
@given(spec=net_specs(max_layers=4), theta=st.sampled_from(THETAS))
def test_an_intermediate_criterion_seeds_its_points_and_nothing_downstream(
    impl: str, spec: NetSpec, theta: float
) -> None:
    model, batches, x = _setup(spec)
    target = neuron_target(model, x, spec.seed)
    s = make_slicer(impl, model, theta)
    s.profile(batches)
    res = s.slice(x, target=for_impl(impl, target), reference="dataset", per_sample=True)
    neurons, synapses = _np(res.neurons), _np(res.synapses)
    graph = ReferenceSlicer(model)  # the graph: which nodes the criterion node reads
    rules = {n.name: n.rule for n in graph.order}
    ancestors, todo = set(), [target.node]
    while todo:
        n = todo.pop()
        if n not in ancestors:
            ancestors.add(n)
            todo += list(rules[n].inputs) if rules[n] is not None else []
    # C = +1 on exactly the criterion channel's points (nothing downstream adds to it)
    want = np.zeros_like(neurons[target.node])
    want[:, target.index] = 1
    np.testing.assert_array_equal(neurons[target.node], want)
    for name, c in neurons.items():
        if name not in ancestors and name in rules:
            assert not c.any(), f"{name} is not an ancestor of {target.node} but has C != 0"
    # synapses of weights used only downstream of the criterion node are 0
    used_above = {p for n in ancestors if rules[n] is not None for p in rules[n].params if p}
    for name, c in synapses.items():
        if name not in used_above:
            assert not c.any(), f"{name} is downstream of {target.node} but in the slice"


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=6, **COMMON)
@given(
    spec=net_specs(max_layers=4),
    theta=st.sampled_from(THETAS),
    reference=st.sampled_from(("dataset", "class")),
)
def test_slicing_is_deterministic(impl: str, spec: NetSpec, theta: float, reference: str) -> None:
    model, batches, x = _setup(spec)
    results = []
    for _ in range(2):
        s = make_slicer(impl, model, theta)
        s.profile(batches)
        results.append(s.slice(x, reference=reference, per_sample=True))
        results.append(s.slice(x, reference=reference, per_sample=True))
    first = results[0]
    for other in results[1:]:
        for what in ("synapses", "neurons"):
            a, b = _np(getattr(first, what)), _np(getattr(other, what))
            assert set(a) == set(b)
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}[{k}]")


def test_zz_report_agreement(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the engine/reference exact-agreement rate seen by the random-model test."""
    a = AGREEMENT
    if not a["examples"]:
        pytest.skip("the agreement test did not run in this session")
    with capsys.disabled():
        print(
            f"\n[engine vs reference] examples {a['examples']}, fully exact "
            f"{a['examples_exact']}; synapse entries equal "
            f"{a['synapses_equal']}/{a['synapses_total']} "
            f"({100.0 * a['synapses_equal'] / max(a['synapses_total'], 1):.4f} %); neuron points "
            f"equal {a['neurons_equal']}/{a['neurons_total']} "
            f"({100.0 * a['neurons_equal'] / max(a['neurons_total'], 1):.4f} %)"
        )
