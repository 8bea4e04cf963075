"""What the detectors' classifiers see: slice synapses, EffectivePath synapses or feature maps.

Every extractor turns a batch of inputs into one row of features per input plus the model's
prediction (the slicing criterion). The layers are weighted-sum layers (Conv/Linear) chosen once
by :func:`resolve_layers`: ``"last"`` means the convolutions of the last resolution stage (the
last conv layer of LeNet-5, every conv of ``layer4`` in the zoo ResNets), ``"last-conv"`` only
the last convolution (what the authors' release slices), ``"all"`` every weighted-sum layer,
or a list of node names, weight names or module paths.

Slice features come in three representations of one slicing pass (``representation=``):
``"signed"`` synapse contributions, ``"binary"`` synapse membership, and ``"channels"``, the
chosen layers' neuron contributions summed per output channel. Feature maps have ``"signed"``
(the raw values, flattened) and ``"channels"`` (their spatial means). With ``cache_dir`` the
features of every chunk of inputs are kept on disk, so an interrupted fit resumes; with
``slice_layers`` (a superset of ``layers``) more layers are sliced and cached than the features
use, so detectors and sweeps that differ only in their layers share one slicing pass.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...errors import InputError
from ...forward.recorder import record_values
from ...hashing import tensor_digest, text_digest
from ...io_utils import atomic_write
from ...profile.profile import Profile, parameter_hash
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
    if isinstance(spec, str) and spec == "last-conv":
        convs = [layer for layer in layers if len(layer.weight_shape) >= 3]
        # a ResNet's 1x1 shortcut conv comes last in graph order; the authors' layers
        # (conv2d_11, conv2d_12) are the block's own 3x3 convs, so skip 1x1 kernels
        spatial = [layer for layer in convs if any(k > 1 for k in layer.weight_shape[2:])]
        convs = spatial or convs
        return [convs[-1] if convs else (layers[-2] if len(layers) > 1 else layers[-1])]
    if isinstance(spec, str) and spec in ("middle", "several"):
        stages = _conv_stages(layers)
        if not stages:
            return resolve_layers("last", layers)
        middle = stages[(len(stages) - 1) // 2]
        if spec == "middle":
            return middle
        # from the middle stage on, every weighted layer but the output layer
        first = layers.index(middle[0])
        return layers[first:-1] if len(layers) - first > 1 else layers[first:]
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
        raise InputError("layers is empty; give 'last', 'last-conv', 'all' or layer names")
    chosen: set[str] = set()
    for item in items:
        hits = [layer.node for layer in layers if item in (layer.node, layer.weight)
                or layer.weight.startswith(item + ".")]
        if not hits:
            known = ", ".join(layer.module_path for layer in layers)
            raise InputError(f"layer {item!r} matches no Conv/Linear layer; layers: {known}")
        chosen.update(hits)
    return [layer for layer in layers if layer.node in chosen]


def _conv_stages(layers: list[Layer]) -> list[list[Layer]]:
    """The convs grouped by output resolution, in order (a stage = one spatial size)."""
    stages: list[list[Layer]] = []
    for layer in layers:
        if len(layer.weight_shape) < 3:
            continue
        if stages and stages[-1][0].output_shape[1:] == layer.output_shape[1:]:
            stages[-1].append(layer)
        else:
            stages.append([layer])
    return stages


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


REPRESENTATIONS: tuple[str, ...] = ("signed", "binary", "channels")
# inputs per cached chunk: small enough that an interrupted fit loses little, large enough
# that the cache directory stays a few hundred files for 10 000 inputs
CACHE_CHUNK = 64


class FeatureExtractor(ABC):
    """Turns inputs into (features, model predictions); ``bind`` chooses the layers first."""

    method: ClassVar[str]

    def __init__(self, model: nn.Module, layers: LayerSpec = "last", *, batch_size: int = 16,
                 progress: bool = False, slicer: Slicer | None = None,
                 representation: str = "signed", cache_dir: str | Path | None = None,
                 slice_layers: LayerSpec | None = None):
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        if representation not in REPRESENTATIONS:
            raise InputError(f"unknown feature representation {representation!r}; known: "
                             f"{', '.join(REPRESENTATIONS)}")
        self.layer_spec = layers
        self.batch_size = batch_size
        self.progress = progress
        self.representation = representation
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.slice_layer_spec = slice_layers
        self.slicer = slicer if slicer is not None else self._make_slicer(model)
        self.layers: list[Layer] | None = None
        self.all_layers: list[Layer] | None = None
        self.sliced: list[Layer] | None = None  # the layers computed (and cached)

    def _make_slicer(self, model: nn.Module) -> Slicer:
        # plain Slicer: only its traced graph is used (no profile, no slicing)
        return Slicer(model, batch_size=self.batch_size)

    @property
    def sparse(self) -> bool:
        """Rows are scipy CSR matrices (True) or dense float32 arrays (False)."""
        return False

    @property
    def chunk_size(self) -> int:
        return self.batch_size

    def bind(self, x: Tensor) -> list[Layer]:
        """Resolve the layer spec against the model (``x``: any sample of the right shape)."""
        if self.layers is None:
            self.all_layers = weighted_layers(self.slicer, x)
            self.layers = resolve_layers(self.layer_spec, self.all_layers)
            self.sliced = self.layers
            if self.slice_layer_spec is not None:
                extra = resolve_layers(self.slice_layer_spec, self.all_layers)
                wanted = {layer.node for layer in [*extra, *self.layers]}
                self.sliced = [layer for layer in self.all_layers if layer.node in wanted]
        return self.layers

    def prepare(self, x: Tensor, y: Tensor | None) -> None:
        """Hook run once before fitting (the NNSlicer extractor profiles here)."""
        return None

    @property
    def num_features(self) -> int:
        if self.layers is None:
            raise InputError("the extractor is not bound to layers yet; fit the detector first")
        return sum(self.width(layer) for layer in self.layers)

    def width(self, layer: Layer, representation: str | None = None) -> int:
        """Feature columns of ``layer`` in ``representation`` (default: the extractor's)."""
        if (representation or self.representation) == "channels":
            return int(layer.output_shape[0])
        return self._width(layer)

    def layout(self, representation: str | None = None,
               layers: Sequence[Layer] | None = None) -> list[dict[str, Any]]:
        """Which feature columns come from which layer (of ``layers``, default the bound)."""
        start, rows = 0, []
        for layer in (self.layers or []) if layers is None else layers:
            width = self.width(layer, representation)
            rows.append({**layer.to_json(), "columns": [start, start + width]})
            start += width
        return rows

    def config(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "representation": self.representation}

    @torch.no_grad()
    def predictions(self, x: Tensor) -> Tensor:
        """The model's top-1 classes (the detectors' slicing criterion)."""
        module = self.slicer.graph.module
        return torch.cat([module(part.to(self.slicer.device)).argmax(1).cpu()
                          for part in torch.split(x, 256)])

    def extract(self, x: Tensor, desc: str | None = None) -> tuple[Features, np.ndarray]:
        """Features (N, F) and the model's predictions (N,) for inputs ``x``."""
        raw, pred = self.extract_raw(x, desc)
        return self.represent(raw, layers=self.layers), pred

    def extract_raw(self, x: Tensor, desc: str | None = None
                    ) -> tuple[dict[str, Features], np.ndarray]:
        """Every representation's source arrays for ``x`` over the sliced layers (see
        :meth:`represent`), cached per chunk of inputs in ``cache_dir`` when it is set."""
        self.bind(x)
        layers = self.sliced or []
        pred = self.predictions(x)
        step = CACHE_CHUNK if self.cache_dir is not None else self.chunk_size
        identity = self._cache_identity() if self.cache_dir is not None else ""
        parts: list[dict[str, Features]] = []
        bar = tqdm(total=x.shape[0], desc=desc or f"{self.method} features", unit="input",
                   disable=not self.progress, leave=False, smoothing=0.1)
        for start in range(0, x.shape[0], step):
            stop = min(start + step, x.shape[0])
            parts.append(self._cached_chunk(x[start:stop], pred[start:stop], layers, identity))
            bar.update(stop - start)
        bar.close()
        raw = {key: (sp.vstack([p[key] for p in parts], format="csr") if sp.issparse(parts[0][key])
                     else np.concatenate([p[key] for p in parts])) for key in parts[0]}
        return raw, pred.numpy()

    def represent(self, raw: dict[str, Features], representation: str | None = None,
                  layers: Sequence[Layer] | None = None) -> Features:
        """The feature matrix of ``representation`` from :meth:`extract_raw`'s arrays,
        restricted to ``layers`` (a subset of the sliced layers; default: all of them)."""
        rep = representation or self.representation
        key = "channels" if rep == "channels" else "values"
        matrix = raw[key]
        if layers is not None and [la.node for la in layers] != [la.node for la in
                                                                 self.sliced or []]:
            spans = {row["node"]: row["columns"] for row in self.layout(rep, self.sliced)}
            cols = np.concatenate([np.arange(*spans[layer.node]) for layer in layers])
            matrix = matrix[:, cols]
        if rep == "binary":
            if sp.issparse(matrix):
                matrix = matrix.copy()
                matrix.data = (matrix.data != 0).astype(np.float32)
                matrix.eliminate_zeros()
            else:
                matrix = (matrix > 0).astype(np.float32)
        return matrix

    def _cache_identity(self) -> str:
        return text_digest(self.method, parameter_hash(self.slicer.graph.module),
                           json.dumps([layer.node for layer in self.sliced or []]),
                           json.dumps({k: v for k, v in self.config().items()
                                       if k not in ("batch_size", "representation")},
                                      sort_keys=True))

    def _cached_chunk(self, x: Tensor, pred: Tensor, layers: list[Layer], identity: str
                      ) -> dict[str, Features]:
        if self.cache_dir is None:
            return self._extract_chunk(x, pred, layers)
        key = tensor_digest([("x", x.detach().to(torch.float32))], header=identity)
        path = self.cache_dir / f"{self.method}-{identity[:12]}-{key[:20]}.npz"
        if path.is_file():
            try:
                return _load_chunk(path)
            except (OSError, ValueError, KeyError):  # a torn or foreign file: compute again
                pass
        raw = self._extract_chunk(x, pred, layers)
        _save_chunk(path, raw)
        return raw

    @abstractmethod
    def _width(self, layer: Layer) -> int: ...

    @abstractmethod
    def _extract_chunk(self, x: Tensor, pred: Tensor, layers: list[Layer]
                       ) -> dict[str, Features]: ...


def _save_chunk(path: Path, raw: dict[str, Features]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for key, m in raw.items():
        if sp.issparse(m):
            m = m.tocsr()
            arrays.update({f"{key}.data": m.data, f"{key}.indices": m.indices,
                           f"{key}.indptr": m.indptr, f"{key}.shape": np.array(m.shape)})
        else:
            arrays[key] = np.asarray(m)
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def _load_chunk(path: Path) -> dict[str, Features]:
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        out: dict[str, Features] = {}
        for name in files:
            key, _, part = name.partition(".")
            if not part:
                out[key] = z[name]
            elif part == "data":
                out[key] = sp.csr_matrix(
                    (z[f"{key}.data"], z[f"{key}.indices"], z[f"{key}.indptr"]),
                    shape=tuple(z[f"{key}.shape"]))
    return out


class SynapseFeatures(FeatureExtractor):
    """Per-sample synapse contributions of the chosen layers' weights (sparse rows)."""

    @property
    def sparse(self) -> bool:
        return self.representation != "channels"

    @property
    def chunk_size(self) -> int:
        return max(self.batch_size, 64)  # the slicer splits a chunk into its own batches

    def _width(self, layer: Layer) -> int:
        return int(np.prod(layer.weight_shape))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "theta": self.slicer.theta}

    def _slice_options(self) -> dict[str, Any]:
        return {}

    def _extract_chunk(self, x: Tensor, pred: Tensor, layers: list[Layer]
                       ) -> dict[str, Features]:
        s = self.slicer.slice(x, target=pred, per_sample=True, neurons=False,
                              synapses=[layer.weight for layer in layers], **self._slice_options())
        dense = torch.cat([s.synapses[layer.weight].flatten(1) for layer in layers], 1)
        channels = torch.cat([s.channels(layer.node).flatten(1) for layer in layers], 1)
        # float32: what scikit-learn's trees compute in; counts stay exact below 2**24
        return {"values": sp.csr_matrix(dense.numpy(), dtype=np.float32),
                "channels": channels.to(torch.float32).numpy()}


class SliceFeatures(SynapseFeatures):
    """NNSlicer slices with the model's prediction as criterion (needs a profile)."""

    method = "nnslicer"

    def __init__(self, model: nn.Module, layers: LayerSpec = "last", *, theta: float = 0.2,
                 reference: str = "dataset", profile: Profile | str | None = None,
                 batch_size: int = 16, progress: bool = False, representation: str = "signed",
                 cache_dir: str | Path | None = None, slice_layers: LayerSpec | None = None):
        self.theta = theta
        self.reference = reference
        super().__init__(model, layers, batch_size=batch_size, progress=progress,
                         representation=representation, cache_dir=cache_dir,
                         slice_layers=slice_layers)
        if profile is not None:
            self.slicer.use_profile(profile)

    def _make_slicer(self, model: nn.Module) -> Slicer:
        return Slicer(model, theta=self.theta, batch_size=self.batch_size)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "reference": self.reference}

    def _slice_options(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def _cache_identity(self) -> str:
        # the slices depend on the profile's means: a fit on other data is another cache
        profile = self.slicer.current_profile
        digest = "" if profile is None else tensor_digest(
            [*sorted(profile.sums.items()), *sorted(profile.class_sums.items()),
             ("class_counts", profile.class_counts)])
        return text_digest(super()._cache_identity(), digest)

    def prepare(self, x: Tensor, y: Tensor | None) -> None:
        if self.slicer.current_profile is not None:
            return
        # the paper's profiling set D is the training data the detector is fitted on
        batches = [(x[i:i + 256], y[i:i + 256]) if y is not None else x[i:i + 256]
                   for i in range(0, x.shape[0], 256)]
        self.slicer.profile(batches)


class EffectivePathFeatures(SynapseFeatures):
    """EffectivePath (docs/spec.md §7) synapse paths with the model's prediction as criterion."""

    method = "effective-path"

    def __init__(self, model: nn.Module, layers: LayerSpec = "last", *, theta: float = 0.5,
                 batch_size: int = 16, progress: bool = False, representation: str = "signed",
                 cache_dir: str | Path | None = None, slice_layers: LayerSpec | None = None):
        self.theta = theta
        super().__init__(model, layers, batch_size=batch_size, progress=progress,
                         representation=representation, cache_dir=cache_dir,
                         slice_layers=slice_layers)

    def _make_slicer(self, model: nn.Module) -> Slicer:
        return EffectivePath(model, theta=self.theta, batch_size=self.batch_size)


class FeatureMapFeatures(FeatureExtractor):
    """The chosen layers' outputs (conv feature maps): flattened, or their channel means."""

    method = "feature-map"

    @property
    def chunk_size(self) -> int:
        return max(self.batch_size, 256)  # one forward pass each: much cheaper than slicing

    def _width(self, layer: Layer) -> int:
        return int(np.prod(layer.output_shape))

    def _extract_chunk(self, x: Tensor, pred: Tensor, layers: list[Layer]
                       ) -> dict[str, Features]:
        values = record_values(self.slicer.graph, x.to(self.slicer.device))
        outs = [values[layer.node].detach().to("cpu", torch.float32) for layer in layers]
        rows = torch.cat([o.flatten(1) for o in outs], 1)
        means = torch.cat([o.flatten(2).mean(2) if o.dim() > 2 else o for o in outs], 1)
        return {"values": rows.numpy(), "channels": means.numpy()}
