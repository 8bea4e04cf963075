"""Ray backend: sharded slicing and profiling give exactly the serial results."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

ray = pytest.importorskip("ray")

import nnslicer  # noqa: E402
from nnslicer.models.zoo import build_model  # noqa: E402
from nnslicer.parallel import RAY_MISSING, RayPool, import_ray, ray_profile, ray_slice  # noqa: E402

pytestmark = pytest.mark.ray

SHAPE = (3, 8, 8)


def small_model() -> torch.nn.Module:
    """A ResNet-10 (conv, BN, ReLU, residual add, avg pool, linear) small enough to be quick."""
    torch.manual_seed(0)
    return build_model("resnet10", in_channels=3, num_classes=10, width=2).eval()


def profiling_data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.rand(6, *SHAPE, generator=g), torch.randint(0, 10, (6,), generator=g))
        for _ in range(5)
    ]


def assert_same(a: nnslicer.Slice, b: nnslicer.Slice) -> None:
    assert list(a.neurons) == list(b.neurons)
    assert list(a.synapses) == list(b.synapses)
    for k in a.neurons:
        assert torch.equal(a.neurons[k], b.neurons[k]), k
    for k in a.synapses:
        assert torch.equal(a.synapses[k], b.synapses[k]), k
    assert a.meta == b.meta


@pytest.fixture(scope="module")
def profiled():
    slicer = nnslicer.Slicer(small_model(), theta=0.2, batch_size=2)
    slicer.profile(profiling_data())
    x = torch.rand(7, *SHAPE, generator=torch.Generator().manual_seed(2))
    return slicer, x


def test_import_error_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when not installed
    with pytest.raises(ImportError) as err:
        import_ray()
    assert str(err.value) == RAY_MISSING
    assert "pip install 'nnslicer[ray]'" in str(err.value)


def test_nnslicer_imports_ray_lazily():
    code = (
        "import sys, nnslicer, nnslicer.parallel, nnslicer.parallel.ray_backend; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


TWO_NODES = textwrap.dedent("""
    import torch
    from ray.cluster_utils import Cluster

    import nnslicer
    from nnslicer.models.zoo import build_model
    from nnslicer.parallel import RayPool

    torch.manual_seed(0)
    model = build_model("resnet10", in_channels=3, num_classes=10, width=2).eval()
    slicer = nnslicer.Slicer(model, theta=0.2, batch_size=2)
    slicer.profile([torch.rand(6, 3, 8, 8) for _ in range(2)])
    x = torch.rand(5, 3, 8, 8)
    serial = slicer.slice(x, per_sample=True)

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        with RayPool(slicer, address=cluster.address, num_workers=2) as pool:
            nodes = {w["node"] for w in pool.workers()}
            sharded = pool.slice(x, per_sample=True, shard_size=2)
    finally:
        import ray
        ray.shutdown()
        cluster.shutdown()
    assert len(nodes) == 2, nodes
    assert sharded.meta == serial.meta
    for a, b in ((serial.neurons, sharded.neurons), (serial.synapses, sharded.synapses)):
        assert list(a) == list(b)
        assert all(torch.equal(a[k], b[k]) for k in a)
    print("TWO-NODE-OK")
""")


def test_two_node_cluster_gives_identical_result(tmp_path):
    # A process can be connected to one Ray cluster only, so this runs in its own process
    # (and before the session's local cluster starts: tests run in file order).
    script = tmp_path / "two_nodes.py"
    script.write_text(TWO_NODES)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert "TWO-NODE-OK" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]


def test_pool_slices_are_identical_to_serial(ray_local, profiled):
    slicer, x = profiled
    mask = torch.zeros(7, 10, dtype=torch.bool)
    mask[:, 1] = True
    mask[::2, 4] = True
    cases = [
        ({}, None),
        ({"per_sample": True}, None),
        ({"target": 3, "reference": "class"}, 3),  # shard_size 3 rounds up to 4 = 2 chunks
        ({"target": torch.arange(7) % 10, "per_sample": True}, 1),
        ({"target": mask, "reference": "class", "per_sample": True}, 5),
        ({"per_sample": True, "synapses": [next(iter(slicer.graph.synapse_parameters()))]}, 2),
    ]
    with RayPool(slicer, num_workers=2) as pool:
        assert len({w["pid"] for w in pool.workers()}) == 2
        for kwargs, shard_size in cases:
            assert_same(pool.slice(x, shard_size=shard_size, **kwargs), slicer.slice(x, **kwargs))
        with pytest.raises(nnslicer.InputError):  # the worker's error comes back as is
            pool.slice(x, target=10)
        # an actor gone for good (no Ray restart): its shard goes to a fresh actor
        ray_local.kill(pool.actors[0], no_restart=True)
        assert_same(pool.slice(x, per_sample=True), slicer.slice(x, per_sample=True))


def test_killed_worker_is_retried_with_identical_result(ray_local, profiled, tmp_path):
    slicer, x = profiled
    flag = tmp_path / "crashed"
    target = torch.arange(7) % 3
    result = ray_slice(
        slicer, x, target=target, per_sample=True, num_workers=2, _crash=(str(flag), 1)
    )
    assert flag.exists()  # the worker of shard 1 did die
    assert_same(result, slicer.slice(x, target=target, per_sample=True))


def test_ray_profile_equals_serial_profile(ray_local, tmp_path):
    data = profiling_data()
    serial = nnslicer.Slicer(small_model(), batch_size=2).profile(data)
    slicer = nnslicer.Slicer(small_model(), batch_size=2)
    flag = tmp_path / "crashed"
    sharded = ray_profile(slicer, data, num_workers=2, shard_batches=2, _crash=(str(flag), 1))
    assert flag.exists()
    assert slicer.current_profile is not None
    # exact: counts, fingerprint, node set and shapes
    assert torch.equal(sharded.class_counts, serial.class_counts)
    assert sharded.fingerprint == serial.fingerprint
    assert list(sharded.sums) == list(serial.sums)
    # the float64 sums are added in another order (per shard, then shards): equal up to rounding
    for k in serial.sums:
        torch.testing.assert_close(sharded.sums[k], serial.sums[k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            sharded.class_sums[k], serial.class_sums[k], rtol=1e-12, atol=1e-12
        )


def test_slicer_executor_ray_matches_serial(ray_local):
    # the user path: Slicer(..., executor="ray") profiles and slices through this backend
    data, x = profiling_data(), torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(3))
    serial = nnslicer.Slicer(small_model(), batch_size=2)
    serial.profile(data)
    sharded = nnslicer.Slicer(small_model(), batch_size=2, executor="ray", num_workers=2)
    sharded.profile(data)
    assert torch.equal(sharded.current_profile.class_counts, serial.current_profile.class_counts)
    sharded.use_profile(serial.current_profile)  # slice identity must not hinge on sum rounding
    assert_same(sharded.slice(x, per_sample=True), serial.slice(x, per_sample=True))


def test_a_model_traced_at_its_first_input_slices_identically_on_ray(ray_local):
    """An LSTM (unrolled with concrete shapes) profiled and sliced by Ray workers, which
    rebuild it from the traced graph and the rule set: the same slice as in this process."""
    from nnslicer.models.modern import LSTMClassifier

    torch.manual_seed(0)
    model = LSTMClassifier(1, 10, 12, hidden=8).eval()
    data = [torch.randn(8, 1, 12, 12) for _ in range(2)]
    x = torch.randn(6, 1, 12, 12)
    serial = nnslicer.Slicer(model, batch_size=2)
    serial.profile(data)
    remote = nnslicer.Slicer(model, batch_size=2, executor="ray")
    remote.profile(data)
    a, b = serial.slice(x, per_sample=True), remote.slice(x, per_sample=True)
    for name, t in a.synapses.items():
        assert torch.equal(t, b.synapses[name]), name
    for name, t in a.neurons.items():
        assert torch.equal(t, b.neurons[name]), name
