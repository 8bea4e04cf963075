"""Physically smaller models made from pruned ones.

``export_pruned`` drops a channel of a channel space (:mod:`.channels`) when it provably
cannot change the output:

* *dead*: every producer writes exactly 0 there (all its weights and bias are 0), and every
  operator passing the space on maps 0 to 0 there (a BatchNorm whose shift is 0, a ReLU...),
  so its consumers read zeros; or
* *unused*: every consumer has only zero weights on it.

For a residual stream this means a channel is only dropped where *all* producers into the add
(and every layer reading the stream) agree; the inner conv of a block (conv1 -> bn1 -> relu ->
conv2) is a space of its own and shrinks freely. Channels of the model input and output, and of
whatever an operator pins, are never dropped. The exported model has the same class and
``forward`` as the original with smaller modules; it computes the same function up to float
rounding (checked on export).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from nnslicer.errors import NNSlicerError
from nnslicer.io_utils import atomic_write_bytes, atomic_write_text

from .channels import BATCH_NORMS, ChannelGraph, analyze_channels


class ExportError(NNSlicerError, ValueError):
    """The model's structure cannot be exported (or the export did not reproduce it)."""


# --------------------------------------------------------------------------- channel removal


def _zero_rows(layer: nn.Module) -> Tensor:
    w = layer.weight.detach()
    dead = (w.reshape(w.shape[0], -1) == 0).all(1)
    if layer.bias is not None:
        dead &= layer.bias.detach() == 0
    return dead


def _unused_columns(layer: nn.Module, channels: int, positions: int) -> Tensor:
    w = layer.weight.detach()
    if w.dim() == 2:  # a linear layer: ``positions`` features per channel
        return (w.reshape(w.shape[0], channels, positions) == 0).all(2).all(0)
    return (w.transpose(0, 1).reshape(w.shape[1], -1) == 0).all(1)


def removable_channels(graph: ChannelGraph) -> list[Tensor]:
    """Per channel group, a bool mask of the channels that can be dropped exactly.

    Dead channels are found only in a graph analysed with an example input (``keeps_zero``).
    """
    result = []
    for g in graph.groups:
        n = g.channels or 0
        if g.fixed_source or g.fixed_use or not n or not g.producers:
            result.append(torch.zeros(n, dtype=torch.bool))
            continue
        dead = torch.ones(n, dtype=torch.bool)
        for p in g.producers:
            dead &= _zero_rows(graph.layers[p]).cpu()
        for name in g.passes:
            dead &= graph.stays_zero(name, n).cpu()
        unused = torch.ones(n, dtype=torch.bool)
        for c, positions in g.consumers:
            unused &= _unused_columns(graph.layers[c], n, positions).cpu()
        if not g.consumers:
            unused[:] = False
        drop = dead | unused
        if drop.all():
            drop[0] = False  # a layer needs at least one channel
        result.append(drop)
    return result


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def resized_module(m: nn.Module, in_size: int | None, out_size: int | None) -> nn.Module:
    """A fresh module like ``m`` with other channel counts (weights not copied)."""
    kw = {"device": m.weight.device if getattr(m, "weight", None) is not None else None}
    if isinstance(m, nn.Linear):
        return nn.Linear(in_size, out_size, bias=m.bias is not None, dtype=m.weight.dtype, **kw)
    if isinstance(m, nn.Conv1d | nn.Conv2d):
        return type(m)(
            in_size, out_size, m.kernel_size, stride=m.stride, padding=m.padding,
            dilation=m.dilation, groups=m.groups, bias=m.bias is not None,
            padding_mode=m.padding_mode, dtype=m.weight.dtype, **kw,
        )
    if isinstance(m, BATCH_NORMS):
        return type(m)(out_size, eps=m.eps, momentum=m.momentum, affine=m.affine,
                       track_running_stats=m.track_running_stats,
                       device=m.running_mean.device)
    raise ExportError(f"cannot resize a {type(m).__name__}")


@dataclass
class ExportReport:
    """What :func:`export_pruned` removed and what it gained."""

    parameters_original: int
    parameters_exported: int
    layers: dict[str, dict[str, list[int]]]  # path -> {"in": [before, after], "out": [...]}
    max_abs_difference: float
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # batch -> times

    @property
    def parameter_ratio(self) -> float:
        return self.parameters_exported / max(self.parameters_original, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameters_original": self.parameters_original,
            "parameters_exported": self.parameters_exported,
            "parameter_ratio": self.parameter_ratio,
            "max_abs_difference": self.max_abs_difference,
            "latency_ms": self.latency_ms,
            "layers": self.layers,
        }


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (zeros included: that is what a dense model stores)."""
    return sum(p.numel() for p in model.parameters())


def export_pruned(
    model: nn.Module,
    example_input: Tensor,
    *,
    atol: float = 1e-4,
    latency_batches: tuple[int, ...] = (1, 64),
    latency_runs: int = 20,
) -> tuple[nn.Module, ExportReport]:
    """A physically smaller copy of a pruned model, checked to give the same outputs.

    ``example_input`` is a batch of real inputs: it is used for the equality check (the
    largest absolute output difference must stay below ``atol``) and for the CPU latency,
    the median of ``latency_runs`` runs at each batch size in ``latency_batches``.
    """
    graph = analyze_channels(model, example_input)
    if graph.problems:
        raise ExportError(f"cannot export {type(model).__name__}: {graph.problems[0]}")
    drops = removable_channels(graph)
    keep = [torch.nonzero(~d).flatten() for d in drops]
    small = copy.deepcopy(model).eval()
    modules = dict(model.named_modules())
    layers: dict[str, dict[str, list[int]]] = {}
    with torch.no_grad():
        for path, m in graph.layers.items():
            gin, gout = graph.input_group[path], graph.output_group[path]
            out_idx = keep[gout] if graph.groups[gout].channels else None
            in_idx = keep[gin] if graph.groups[gin].channels else None
            positions = graph.input_positions[path]
            w = m.weight.detach()
            if out_idx is None:
                out_idx = torch.arange(w.shape[0])
            if in_idx is None:
                cols = torch.arange(w.shape[1])
            elif positions > 1:
                cols = (in_idx[:, None] * positions + torch.arange(positions)).flatten()
            else:
                cols = in_idx
            if len(out_idx) == w.shape[0] and len(cols) == w.shape[1]:
                continue
            new = resized_module(m, len(cols), len(out_idx))
            new.weight.copy_(w[out_idx][:, cols])
            if m.bias is not None:
                new.bias.copy_(m.bias.detach()[out_idx])
            _set_module(small, path, new.train(m.training))
            layers[path] = {"in": [w.shape[1], len(cols)], "out": [w.shape[0], len(out_idx)]}
        for gi, g in enumerate(graph.groups):
            if not g.channels or len(keep[gi]) == g.channels:
                continue
            idx = keep[gi]
            for name in g.norms:
                old = modules[name]
                new = resized_module(old, None, len(idx))
                new.running_mean.copy_(old.running_mean[idx])
                new.running_var.copy_(old.running_var[idx])
                new.num_batches_tracked.copy_(old.num_batches_tracked)
                if old.affine:
                    new.weight.copy_(old.weight.detach()[idx])
                    new.bias.copy_(old.bias.detach()[idx])
                _set_module(small, name, new.train(old.training))
                layers[name] = {"in": [g.channels, len(idx)], "out": [g.channels, len(idx)]}
    small.eval()
    with torch.inference_mode():
        diff = float((model.eval()(example_input) - small(example_input)).abs().max())
    if not diff <= atol:
        raise ExportError(
            f"the exported model differs from the pruned one by {diff:.3g} (> {atol}); "
            "this is a bug in the export, please report it"
        )
    report = ExportReport(count_parameters(model), count_parameters(small), layers, diff)
    for b in latency_batches:
        x = example_input[:1].expand(b, *example_input.shape[1:]).contiguous()
        report.latency_ms[str(b)] = {
            "original": measure_latency(model, x, latency_runs) * 1e3,
            "exported": measure_latency(small, x, latency_runs) * 1e3,
        }
    return small, report


def measure_latency(model: nn.Module, x: Tensor, runs: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of one forward pass on ``x`` (CPU, inference mode)."""
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + max(runs, 1)):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------ persistence


def module_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Channel counts of every conv, linear and BatchNorm module (what load needs to rebuild)."""
    shapes = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            shapes[name] = {"in": m.in_features, "out": m.out_features}
        elif isinstance(m, nn.Conv1d | nn.Conv2d):
            shapes[name] = {"in": m.in_channels, "out": m.out_channels}
        elif isinstance(m, BATCH_NORMS):
            shapes[name] = {"in": m.num_features, "out": m.num_features}
    return shapes


def save_exported(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` + ``<stem>.json``; ``meta`` needs ``arch``/``arch_kwargs``.

    The zoo checkpoint loader cannot read these (the shapes differ from the architecture);
    use :func:`load_exported`.
    """
    stem = Path(path).with_suffix("") if Path(path).suffix in (".json", ".safetensors") \
        else Path(path)
    weights = stem.parent / f"{stem.name}.safetensors"
    meta_path = stem.parent / f"{stem.name}.json"
    full = {"format": "nnslicer-exported", "format_version": 1, **meta,
            "module_shapes": module_shapes(model)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(weights, safetensors.torch.save(tensors, metadata={"format": "pt"}))
    atomic_write_text(meta_path, json.dumps(full, indent=2, sort_keys=True) + "\n")
    return weights, meta_path


def load_exported(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model written by :func:`save_exported` (zoo architectures only)."""
    from nnslicer.models.checkpoint import load_safetensors
    from nnslicer.models.zoo import build_model

    stem = Path(path).with_suffix("") if Path(path).suffix in (".json", ".safetensors") \
        else Path(path)
    meta_path = stem.parent / f"{stem.name}.json"
    if not meta_path.is_file():
        raise ExportError(f"exported model metadata not found: {meta_path}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != "nnslicer-exported" or not meta.get("arch"):
        raise ExportError(f"{meta_path} is not an exported zoo model")
    model = build_model(meta["arch"], **meta["arch_kwargs"])
    modules = dict(model.named_modules())
    for name, shape in meta["module_shapes"].items():
        m = modules[name]
        if module_shapes(m)[""] != shape:
            _set_module(model, name, resized_module(m, shape["in"], shape["out"]))
    model.load_state_dict(load_safetensors(stem.parent / f"{stem.name}.safetensors"))
    return model.eval(), meta
