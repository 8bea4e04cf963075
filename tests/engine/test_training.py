"""Training, evaluation and prediction."""

from __future__ import annotations

import pytest
import torch

from nnslicer.data import ArrayDataset, load_dataset
from nnslicer.models import build_model
from nnslicer.training import TrainReport, evaluate_accuracy, predict, train_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits() -> tuple[ArrayDataset, ArrayDataset]:
    return load_dataset("mnist-digits", "train"), load_dataset("mnist-digits", "test")


def test_lenet5_one_epoch_on_mnist_digits(digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    train, test = digits
    torch.manual_seed(0)
    model = build_model("lenet5")
    report = train_model(model, train, test, epochs=1, lr=3e-3, seed=0, progress=False)
    assert isinstance(report, TrainReport)
    # Measured 0.88-0.91 over seeds; 0.8 leaves room for platform differences.
    assert report.test_accuracy is not None and report.test_accuracy > 0.80
    assert len(report.train_loss_history) == 1 and report.train_loss_history[0] < 2.0
    assert report.seconds > 0
    assert not model.training
    assert evaluate_accuracy(model, test) == pytest.approx(report.test_accuracy)


def _small_run(data: ArrayDataset, seed: int, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    model = build_model("lenet5")
    train_model(model, data, None, epochs=1, batch_size=32, seed=seed, progress=False, **kwargs)
    return model.state_dict()


def test_training_is_deterministic(digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    small = digits[0].subset(range(256))
    a, b, c = _small_run(small, 0), _small_run(small, 0), _small_run(small, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    cosine = _small_run(small, 0, lr_schedule="cosine")
    assert not all(torch.equal(a[k], cosine[k]) for k in a)
    # The caller's global RNG stream is not consumed by training.
    model = build_model("lenet5")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_model(model, small.subset(range(8)), None, epochs=1, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_train_report_without_test_set_and_resnet_bn(
    digits: tuple[ArrayDataset, ArrayDataset],
) -> None:
    model = build_model("resnet10", width=4)
    report = train_model(model, digits[0].subset(range(64)), None, epochs=2, progress=False)
    assert report.test_accuracy is None and len(report.train_loss_history) == 2
    assert not model.training
    assert int(model.bn1.num_batches_tracked) == 2  # one batch of 64 per epoch


def test_progress_bar(
    digits: tuple[ArrayDataset, ArrayDataset], capsys: pytest.CaptureFixture[str]
) -> None:
    small = digits[0].subset(range(64))
    train_model(build_model("lenet5"), small, None, epochs=1, progress=False)
    assert capsys.readouterr().err == ""
    train_model(build_model("lenet5"), small, None, epochs=1, progress=True)
    assert "train" in capsys.readouterr().err


def test_predict_and_evaluate(digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    test = digits[1].subset(range(300))
    model = build_model("lenet5")
    model.train()
    pred = predict(model, test.x, batch_size=64)
    assert pred.dtype == torch.int64 and pred.shape == (300,)
    assert model.training  # the caller's mode is restored
    assert torch.equal(pred, model.eval()(test.x).argmax(1))
    acc = evaluate_accuracy(model, test, batch_size=7)
    assert acc == pytest.approx(float((pred == test.y).float().mean()))
    assert predict(model, test.x[:0]).shape == (0,)


def test_bad_arguments(digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    empty = digits[0].subset([])
    with pytest.raises(ValueError, match="empty"):
        train_model(build_model("lenet5"), empty, None, progress=False)
    with pytest.raises(ValueError, match="empty"):
        evaluate_accuracy(build_model("lenet5"), empty)
    with pytest.raises(ValueError, match="lr_schedule"):
        train_model(build_model("lenet5"), digits[0], None, lr_schedule="step", progress=False)
