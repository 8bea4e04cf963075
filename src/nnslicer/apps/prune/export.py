"""Channel structure of a model, and physically smaller models made from pruned ones.

``analyze_channels`` traces the model with ``torch.fx`` and groups tensors into *channel spaces*:
the output channels of a conv/linear layer flow unchanged through BatchNorm, zero-preserving
activations, pooling and flatten until the next conv/linear layer reads them; a tensor add ties
the spaces of its operands together (a residual stream is one space with many producers).

``export_pruned`` then drops a channel of a space when it provably cannot change the output:

* *dead*: every producer writes exactly 0 there (all its weights and bias are 0, and every
  BatchNorm of the space maps 0 to 0), so its consumers read zeros; or
* *unused*: every consumer has only zero weights on it.

For a residual stream this means a channel is only dropped where *all* producers into the add
(and every layer reading the stream) agree; the inner conv of a block (conv1 -> bn1 -> relu ->
conv2) is a space of its own and shrinks freely. Channels of the model input and output are
never dropped. The exported model has the same class and ``forward`` as the original with
smaller modules; it computes the same function up to float rounding (checked on export).
"""

from __future__ import annotations

import copy
import json
import operator
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from nnslicer.errors import NNSlicerError
from nnslicer.io_utils import atomic_write_bytes, atomic_write_text

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# Modules and functions that map a channel of zeros to zeros and keep channels apart.
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardtanh,
    nn.Dropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_PASS_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh, F.hardtanh,
    F.dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
}  # fmt: skip
_PASS_METHODS = {"relu", "tanh", "contiguous"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}


class ExportError(NNSlicerError, ValueError):
    """The model's structure cannot be exported (or the export did not reproduce it)."""


@dataclass
class ChannelGroup:
    """One channel space: who writes it, who reads it, which BatchNorms act on it."""

    channels: int | None
    producers: list[str] = field(default_factory=list)
    #: (layer path, positions per channel): 1 for a conv, H*W for a linear after flatten
    consumers: list[tuple[str, int]] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    fixed_source: str | None = None  # something other than a layer writes it (model input...)
    fixed_use: str | None = None  # something other than a layer reads it (model output...)


@dataclass
class ChannelGraph:
    """Result of :func:`analyze_channels`."""

    layers: dict[str, nn.Module]  # weighted layers by module path, in execution order
    groups: list[ChannelGroup]
    output_group: dict[str, int]  # layer path -> group of its output channels
    input_group: dict[str, int]  # layer path -> group it reads
    input_positions: dict[str, int]  # layer path -> input features per channel
    direct_norm: dict[str, str]  # layer path -> BatchNorm applied right after it
    classifier: str | None  # the layer whose output is the model output
    problems: list[str]  # why the graph cannot be exported (empty when it can)

    def weight_name(self, path: str) -> str:
        return f"{path}.weight" if path else "weight"


class _Spaces:
    """Union-find over channel spaces."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []

    def new(self, channels: int | None) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(ChannelGroup(channels))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> str | None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        ga, gb = self.groups[ra], self.groups[rb]
        if ga.channels is not None and gb.channels is not None and ga.channels != gb.channels:
            return f"an add joins {ga.channels} and {gb.channels} channels"
        self.parent[rb] = ra
        ga.channels = ga.channels if ga.channels is not None else gb.channels
        ga.producers += gb.producers
        ga.consumers += gb.consumers
        ga.norms += gb.norms
        ga.fixed_source = ga.fixed_source or gb.fixed_source
        ga.fixed_use = ga.fixed_use or gb.fixed_use
        return None


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; all mean "not traceable"
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExportError(
            f"cannot trace {type(model).__name__} with torch.fx ({msg}); pruning needs a "
            "traceable model (the same requirement as slicing)"
        ) from exc


def analyze_channels(model: nn.Module) -> ChannelGraph:
    """Group the model's tensors into channel spaces (see the module docstring)."""
    gm = _trace(model)
    modules = dict(model.named_modules())
    spaces = _Spaces()
    # node name -> (space id, positions per channel: 1 = channel layout, >1 flattened, None unknown)
    at: dict[str, tuple[int, int | None]] = {}
    layers: dict[str, nn.Module] = {}
    output_group: dict[str, int] = {}
    input_group: dict[str, int] = {}
    input_positions: dict[str, int] = {}
    direct_norm: dict[str, str] = {}
    layer_of_node: dict[str, str] = {}
    problems: list[str] = []
    called: set[str] = set()

    def pin_inputs(node: fx.Node, why: str) -> None:
        for a in node.all_input_nodes:
            if a.name in at:
                spaces.groups[spaces.find(at[a.name][0])].fixed_use = why

    def fixed_output(node: fx.Node, why: str) -> None:
        sid = spaces.new(None)
        spaces.groups[sid].fixed_source = why
        at[node.name] = (sid, 1)

    for node in gm.graph.nodes:
        live = [a for a in node.all_input_nodes if a.name in at]
        if node.op == "placeholder":
            fixed_output(node, "model input")
            continue
        if node.op == "output":
            pin_inputs(node, "model output")
            continue
        if not live:
            continue  # parameters, constants, shapes
        src = node.args[0] if node.args else None
        first = at.get(src.name) if isinstance(src, fx.Node) else None
        if node.op == "call_module":
            m = modules[node.target]
            if node.target in called and isinstance(m, WEIGHTED + NORMS):
                problems.append(f"module '{node.target}' is called more than once")
            called.add(node.target)
            if isinstance(m, WEIGHTED) and first is not None:
                path = str(node.target)
                gid, positions = first
                out_ch = m.out_features if isinstance(m, nn.Linear) else m.out_channels
                in_ch = m.in_features if isinstance(m, nn.Linear) else m.in_channels
                g = spaces.groups[spaces.find(gid)]
                if isinstance(m, nn.Linear):
                    if positions != 1 and g.channels:
                        positions = in_ch // g.channels
                        if positions * g.channels != in_ch:
                            problems.append(f"'{path}' reads {in_ch} features from a flattened "
                                            f"map of {g.channels} channels")
                elif positions != 1:
                    problems.append(f"conv '{path}' reads a flattened tensor")
                if positions == 1 and g.channels and g.channels != in_ch:
                    problems.append(f"'{path}' reads {in_ch} features from a tensor of "
                                    f"{g.channels} channels (not along the channel dim)")
                if not isinstance(m, nn.Linear) and m.groups != 1:
                    problems.append(f"conv '{path}' has groups={m.groups} (only groups=1)")
                if g.channels is None and g.fixed_source:
                    g.channels = in_ch if positions == 1 else None
                g.consumers.append((path, positions or 1))
                sid = spaces.new(out_ch)
                spaces.groups[sid].producers.append(path)
                at[node.name] = (sid, 1)
                layers[path] = m
                layer_of_node[node.name] = path
                output_group[path] = sid
                input_group[path] = gid
                input_positions[path] = positions or 1
                continue
            if isinstance(m, NORMS) and first is not None:
                spaces.groups[spaces.find(first[0])].norms.append(str(node.target))
                if not m.track_running_stats:
                    problems.append(f"BatchNorm '{node.target}' has no running statistics")
                if (isinstance(src, fx.Node) and src.name in layer_of_node
                        and len(src.users) == 1):
                    direct_norm[layer_of_node[src.name]] = str(node.target)
                at[node.name] = first
                continue
            if isinstance(m, _PASS_MODULES) and first is not None:
                at[node.name] = first
                continue
            if isinstance(m, nn.Flatten) and first is not None and m.start_dim == 1 and \
                    m.end_dim == -1:
                at[node.name] = (first[0], None)
                continue
            what = f"module '{node.target}' ({type(m).__name__})"
        elif node.op == "call_function":
            if node.target in _ADD_FUNCTIONS and not node.kwargs.get("alpha"):
                args = [a for a in node.args[:2] if isinstance(a, fx.Node) and a.name in at]
                if len(args) == 2 and at[args[0].name][1] == at[args[1].name][1]:
                    err = spaces.union(at[args[0].name][0], at[args[1].name][0])
                    if err:
                        problems.append(f"'{node.name}': {err}")
                    at[node.name] = at[args[0].name]
                    continue
            if node.target in _PASS_FUNCTIONS and first is not None:
                at[node.name] = first
                continue
            if node.target is torch.flatten and first is not None and \
                    _flatten_from_one(node.args[1:], node.kwargs):
                at[node.name] = (first[0], None)
                continue
            what = f"function {getattr(node.target, '__name__', node.target)}"
        else:  # call_method
            if node.target in _PASS_METHODS and first is not None:
                at[node.name] = first
                continue
            if node.target == "flatten" and first is not None and \
                    _flatten_from_one(node.args[1:], node.kwargs):
                at[node.name] = (first[0], None)
                continue
            what = f"method .{node.target}()"
        problems.append(f"node '{node.name}' ({what}) is not supported for channel removal")
        pin_inputs(node, f"node '{node.name}'")
        fixed_output(node, f"node '{node.name}'")

    roots: dict[int, int] = {}
    groups: list[ChannelGroup] = []
    for sid in range(len(spaces.parent)):
        r = spaces.find(sid)
        if r == sid:
            roots[r] = len(groups)
            groups.append(spaces.groups[r])

    def index(sid: int) -> int:
        return roots[spaces.find(sid)]

    output_node = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    classifier = layer_of_node.get(output_node.name) if isinstance(output_node, fx.Node) else None
    if classifier is None and layers:
        classifier = list(layers)[-1]
    return ChannelGraph(
        layers=layers,
        groups=groups,
        output_group={k: index(v) for k, v in output_group.items()},
        input_group={k: index(v) for k, v in input_group.items()},
        input_positions=input_positions,
        direct_norm=direct_norm,
        classifier=classifier,
        problems=problems,
    )


def _flatten_from_one(args: tuple, kwargs: dict) -> bool:
    start = args[0] if args else kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
    return start == 1 and end == -1


# --------------------------------------------------------------------------- channel removal


def _zero_rows(layer: nn.Module) -> Tensor:
    w = layer.weight.detach()
    dead = (w.reshape(w.shape[0], -1) == 0).all(1)
    if layer.bias is not None:
        dead &= layer.bias.detach() == 0
    return dead


def _norm_shift(norm: nn.Module) -> Tensor:
    """BatchNorm's output for an input of 0, per channel."""
    shift = -norm.running_mean / torch.sqrt(norm.running_var + norm.eps)
    if norm.affine:
        shift = shift * norm.weight.detach() + norm.bias.detach()
    return shift


def _unused_columns(layer: nn.Module, channels: int, positions: int) -> Tensor:
    w = layer.weight.detach()
    if isinstance(layer, nn.Linear):
        return (w.reshape(w.shape[0], channels, positions) == 0).all(2).all(0)
    return (w.transpose(0, 1).reshape(w.shape[1], -1) == 0).all(1)


def removable_channels(model: nn.Module, graph: ChannelGraph | None = None) -> list[Tensor]:
    """Per channel group, a bool mask of the channels that can be dropped exactly."""
    graph = graph or analyze_channels(model)
    modules = dict(model.named_modules())
    result = []
    for g in graph.groups:
        n = g.channels or 0
        if g.fixed_source or g.fixed_use or not n or not g.producers:
            result.append(torch.zeros(n, dtype=torch.bool))
            continue
        dead = torch.ones(n, dtype=torch.bool)
        for p in g.producers:
            dead &= _zero_rows(modules[p]).cpu()
        for name in g.norms:
            dead &= (_norm_shift(modules[name]).detach() == 0).cpu()
        unused = torch.ones(n, dtype=torch.bool)
        for c, positions in g.consumers:
            unused &= _unused_columns(modules[c], n, positions).cpu()
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
    if isinstance(m, NORMS):
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
    graph = analyze_channels(model)
    if graph.problems:
        raise ExportError(f"cannot export {type(model).__name__}: {graph.problems[0]}")
    drops = removable_channels(model, graph)
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
        elif isinstance(m, NORMS):
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
