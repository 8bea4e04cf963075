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


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory):
    """(model, train, test, checkpoint stem): LeNet-5 trained one epoch on mnist-digits.

    Trained once per session (the checkpoint is cached in the session's temporary folder);
    each test module loads its own copy of the model.
    """
    import torch

    from nnslicer.data.datasets import load_dataset
    from nnslicer.models.checkpoint import load_checkpoint, save_checkpoint
    from nnslicer.models.zoo import build_model
    from nnslicer.training import train_model

    train = load_dataset("mnist-digits", "train")
    test = load_dataset("mnist-digits", "test")
    stem = tmp_path_factory.getbasetemp() / "lenet-mnist" / "lenet"
    if not stem.with_suffix(".json").exists():
        torch.manual_seed(0)
        model = build_model("lenet5")
        report = train_model(model, train, test, epochs=1, batch_size=32, progress=False)
        save_checkpoint(stem, model, {"arch": "lenet5", "arch_kwargs": {}, "dataset": train.name,
                                      "test_accuracy": report.test_accuracy})
    model, _ = load_checkpoint(stem)
    return model, train, test, stem
