"""What the detectors' classifiers see: slice synapses, EffectivePath synapses or feature maps.

Every extractor turns a batch of inputs into one row of features per input plus the model's
prediction (the slicing criterion). The layers are weighted-sum layers (Conv/Linear) chosen once
by :func:`resolve_layers`: ``"last"`` means the convolutions of the last resolution stage (the
last conv layer of LeNet-5, every conv of ``layer4`` in the zoo ResNets), ``"all"`` every
weighted-sum layer, or a list of node names, weight names or module paths.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...errors import InputError
from ...forward.recorder import record_values
from ...profile.profile import Profile
from ...slicer import EffectivePath, Slicer

LayerSpec = str | Sequence[str]
Features = np.ndarray | sp.csr_matrix


@dataclass(frozen=True)
class Layer:
    """One weighted-sum layer: its graph node, its weight and the node's output shape."""

    node: str
    weight: str
    kind: str
    output_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]

    @property
    def module_path(self) -> str:
        return self.weight.rsplit(".", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def weighted_layers(slicer: Slicer, x: Tensor) -> list[Layer]:
    """Weighted-sum layers of the slicer's graph in topological order (``x``: one sample)."""
    graph = slicer.graph
    values = record_values(graph, x[:1].to(slicer.device))
    params = dict(graph.module.named_parameters())
    layers = []
    for node in graph.live_nodes():
        names = node.rule.synapse_names(node) if node.rule is not None else []
        if not names:
            continue
        layers.append(Layer(
            node=node.name,
            weight=names[0],
            kind=node.kind,
            output_shape=tuple(values[node.name].shape[1:]),
            weight_shape=tuple(params[names[0]].shape),
        ))
    if not layers:
        raise InputError("the model has no Conv or Linear layer; a detector needs some")
    return layers


def resolve_layers(spec: LayerSpec, layers: list[Layer]) -> list[Layer]:
    """The layers named by ``spec`` ("last", "all" or names), in topological order."""
    if isinstance(spec, str) and spec == "all":
        return list(layers)
    if isinstance(spec, str) and spec == "last":
        convs = [layer for layer in layers if len(layer.weight_shape) >= 3]
        if not convs:
            # no conv stage (an MLP): the last hidden layer, or the only layer there is
            return [layers[-2] if len(layers) > 1 else layers[-1]]
        # the last stage = the convs at the last conv's output resolution (a stride-2 conv
        # starts a stage, and a ResNet's shortcut conv has the same resolution as its block)
        spatial = convs[-1].output_shape[1:]
        return [layer for layer in convs if layer.output_shape[1:] == spatial]
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise InputError("layers is empty; give 'last', 'all' or layer names")
    chosen: set[str] = set()
    for item in items:
        hits = [layer.node for layer in layers if item in (layer.node, layer.weight)
                or layer.weight.startswith(item + ".")]
        if not hits:
            known = ", ".join(layer.module_path for layer in layers)
            raise InputError(f"layer {item!r} matches no Conv/Linear layer; layers: {known}")
        chosen.update(hits)
    return [layer for layer in layers if layer.node in chosen]


def check_inputs(x: Tensor, input_shape: tuple[int, ...] | None = None) -> None:
    """Reject non-float, empty, non-finite or wrongly shaped input batches."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise InputError(f"inputs must be a float tensor, got {getattr(x, 'dtype', type(x))}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise InputError(f"inputs must be a non-empty batch, got shape {tuple(x.shape)}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise InputError(
            f"inputs have sample shape {tuple(x.shape[1:])} but the detector was fitted on "
            f"{tuple(input_shape)}"
        )
    if not torch.isfinite(x).all():
        raise InputError("inputs contain NaN or Inf values")


class FeatureExtractor(ABC):
    """Turns inputs into (features, model predictions); ``bind`` chooses the layers first."""

    method: ClassVar[str]
    #: rows are scipy CSR matrices (True) or dense float32 arrays (False)
    sparse: ClassVar[bool]

    def __init__(self, model: nn.Module, layers: LayerSpec = "last", *, batch_size: int = 16,
                 progress: bool = False, slicer: Slicer | None = None):
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.layer_spec = layers
        self.batch_size = batch_size
        self.progress = progress
        self.slicer = slicer if slicer is not None else self._make_slicer(model)
        self.layers: list[Layer] | None = None
        self.all_layers: list[Layer] | None = None

    def _make_slicer(self, model: nn.Module) -> Slicer:
        # plain Slicer: only its traced graph is used (no profile, no slicing)
        return Slicer(model, batch_size=self.batch_size)

    @property
    def chunk_size(self) -> int:
        return self.batch_size

    def bind(self, x: Tensor) -> list[Layer]:
        """Resolve the layer spec against the model (``x``: any sample of the right shape)."""
        if self.layers is None:
            self.all_layers = weighted_layers(self.slicer, x)
            self.layers = resolve_layers(self.layer_spec, self.all_layers)
        return self.layers

    def prepare(self, x: Tensor, y: Tensor | None) -> None:
        """Hook run once before fitting (the NNSlicer extractor profiles here)."""
        return None

    @property
    def num_features(self) -> int:
        if self.layers is None:
            raise InputError("the extractor is not bound to layers yet; fit the detector first")
        return sum(self._width(layer) for layer in self.layers)

    def layout(self) -> list[dict[str, Any]]:
        """Which feature columns come from which layer."""
        start, rows = 0, []
        for layer in self.layers or []:
            width = self._width(layer)
            rows.append({**layer.to_json(), "columns": [start, start + width]})
            start += width
        return rows

    def config(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    @torch.no_grad()
    def predictions(self, x: Tensor) -> Tensor:
        """The model's top-1 classes (the detectors' slicing criterion)."""
        module = self.slicer.graph.module
        return torch.cat([module(part.to(self.slicer.device)).argmax(1).cpu()
                          for part in torch.split(x, 256)])

    def extract(self, x: Tensor, desc: str | None = None) -> tuple[Features, np.ndarray]:
        """Features (N, F) and the model's predictions (N,) for inputs ``x``."""
        layers = self.bind(x)
        pred = self.predictions(x)
        parts = []
        starts = range(0, x.shape[0], self.chunk_size)
        bar = tqdm(starts, desc=desc or f"{self.method} features", unit="chunk",
                   disable=not self.progress, leave=False)
        for start in bar:
            stop = min(start + self.chunk_size, x.shape[0])
            parts.append(self._extract_chunk(x[start:stop], pred[start:stop], layers))
        feats = sp.vstack(parts, format="csr") if self.sparse else np.concatenate(parts)
        return feats, pred.numpy()

    @abstractmethod
    def _width(self, layer: Layer) -> int: ...

    @abstractmethod
    def _extract_chunk(self, x: Tensor, pred: Tensor, layers: list[Layer]) -> Features: ...


class SynapseFeatures(FeatureExtractor):
    """Per-sample synapse contributions of the chosen layers' weights (sparse rows)."""

    sparse = True

    def _width(self, layer: Layer) -> int:
        return int(np.prod(layer.weight_shape))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "theta": self.slicer.theta}

    def _slice_options(self) -> dict[str, Any]:
        return {}

    def _extract_chunk(self, x: Tensor, pred: Tensor, layers: list[Layer]) -> sp.csr_matrix:
        s = self.slicer.slice(x, target=pred, per_sample=True,
                              synapses=[layer.weight for layer in layers], **self._slice_options())
        dense = torch.cat([s.synapses[layer.weight].flatten(1) for layer in layers], 1)
        # float32: what scikit-learn's trees compute in; counts stay exact below 2**24
        return sp.csr_matrix(dense.numpy(), dtype=np.float32)


class SliceFeatures(SynapseFeatures):
    """NNSlicer slices with the model's prediction as criterion (needs a profile)."""

    method = "nnslicer"

    def __init__(self, model: nn.Module, layers: LayerSpec = "last", *, theta: float = 0.2,
                 reference: str = "dataset", profile: Profile | str | None = None,
                 batch_size: int = 16, progress: bool = False):
        self.theta = theta
        self.reference = reference
        super().__init__(model, layers, batch_size=batch_size, progress=progress)
        if profile is not None:
            self.slicer.use_profile(profile)

    def _make_slicer(self, model: nn.Module) -> Slicer:
        return Slicer(model, theta=self.theta, batch_size=self.batch_size)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "reference": self.reference}

    def _slice_options(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def prepare(self, x: Tensor, y: Tensor | None) -> None:
        if self.slicer.current_profile is not None:
            return
        # the paper's profiling set D is the training data the detector is fitted on
        batches = [(x[i:i + 256], y[i:i + 256]) if y is not None else x[i:i + 256]
                   for i in range(0, x.shape[0], 256)]
        self.slicer.profile(batches)


class EffectivePathFeatures(SynapseFeatures):
    """EffectivePath (SPEC §7) synapse paths with the model's prediction as criterion."""

    method = "effective-path"

    def __init__(self, model: nn.Module, layers: LayerSpec = "last", *, theta: float = 0.5,
                 batch_size: int = 16, progress: bool = False):
        self.theta = theta
        super().__init__(model, layers, batch_size=batch_size, progress=progress)

    def _make_slicer(self, model: nn.Module) -> Slicer:
        return EffectivePath(model, theta=self.theta, batch_size=self.batch_size)


class FeatureMapFeatures(FeatureExtractor):
    """The chosen layers' outputs (conv feature maps), flattened (dense rows)."""

    method = "feature-map"
    sparse = False

    @property
    def chunk_size(self) -> int:
        return max(self.batch_size, 256)  # one forward pass each: much cheaper than slicing

    def _width(self, layer: Layer) -> int:
        return int(np.prod(layer.output_shape))

    def _extract_chunk(self, x: Tensor, pred: Tensor, layers: list[Layer]) -> np.ndarray:
        values = record_values(self.slicer.graph, x.to(self.slicer.device))
        rows = torch.cat([values[layer.node].flatten(1) for layer in layers], 1)
        return rows.detach().to("cpu", torch.float32).numpy()
