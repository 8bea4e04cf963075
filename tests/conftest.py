"""Fixtures shared by the test files."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster (2 CPUs, no dashboard) for the session, started on first request."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    if started:
        ray.shutdown()
