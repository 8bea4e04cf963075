"""Training and evaluation of image classifiers on :class:`ArrayDataset` objects."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from nnslicer.data.datasets import ArrayDataset


@dataclass
class TrainReport:
    """Outcome of :func:`train_model`."""

    test_accuracy: float | None
    train_loss_history: list[float] = field(default_factory=list)  # mean loss per epoch
    seconds: float = 0.0


def train_model(
    model: nn.Module,
    train: ArrayDataset,
    test: ArrayDataset | None,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    lr_schedule: Literal["constant", "cosine"] = "constant",
) -> TrainReport:
    """Train ``model`` in place with Adam and cross-entropy; it is left in eval mode.

    The shuffling order and any randomness inside the model depend only on ``seed`` (the
    global torch RNG state is restored afterwards). ``lr_schedule="cosine"`` decays the
    learning rate to zero over the run, which makes the final accuracy less seed-dependent.
    ``test_accuracy`` is measured on ``test`` after the last epoch, or None without a test set.
    """
    if len(train) == 0:
        raise ValueError("the training set is empty")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    start = time.perf_counter()
    device = _device_of(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    total_steps = epochs * -(-len(train) // batch_size)
    scheduler = None
    if lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))
        )
    history: list[float] = []
    bar = tqdm(total=total_steps, disable=not progress, desc="train", unit="batch")
    with torch.random.fork_rng(devices=[]), bar:
        torch.manual_seed(seed)
        model.train()
        for epoch in range(epochs):
            total, count = 0.0, 0
            for x, y in train.batches(batch_size, shuffle=True, seed=seed * 1_000_003 + epoch):
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total += loss.item() * len(y)
                count += len(y)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
            history.append(total / count)
    model.eval()
    accuracy = evaluate_accuracy(model, test) if test is not None and len(test) else None
    return TrainReport(accuracy, history, time.perf_counter() - start)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted class indices (int64) for inputs ``x``, computed in eval mode."""
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = [
                model(x[i : i + batch_size].to(device)).argmax(dim=1).cpu()
                for i in range(0, len(x), batch_size)
            ]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


def evaluate_accuracy(model: nn.Module, data: ArrayDataset, batch_size: int = 256) -> float:
    """Fraction of ``data`` that ``model`` classifies correctly."""
    if len(data) == 0:
        raise ValueError(f"cannot evaluate accuracy on an empty dataset ({data.name})")
    predictions = predict(model, data.x, batch_size=batch_size)
    return float((predictions == data.y).float().mean())


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
