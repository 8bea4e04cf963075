"""Random small models, data and comparison helpers for the reference tests.

A model is described by a plain-data :class:`NetSpec` (printed by hypothesis on failure, so a
failing example can be rebuilt with :func:`build_net`). :class:`SpecNet` turns the spec into an
fx-traceable ``nn.Module`` using real ``nn.Conv2d`` / ``nn.Conv1d`` / ``nn.BatchNorm*`` /
pooling / activation modules, ONE ``nn.ReLU`` instance shared by every ``"relu"`` layer, residual
``+`` / ``-`` / in-place ``add_``, ``torch.cat``, constants, permutes and a Linear head; and the
SPEC v2 kinds (:data:`V2_KINDS`): squeeze-excitation ``x * s``, single-head attention with
LayerNorm over a (tokens, features) view, gated MLPs with ``chunk``, LayerNorm / GroupNorm /
InstanceNorm / RMSNorm, softmax inside the network, sum / amax / max over a dim, constant
padding, roll and flip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

ACTIVATIONS = (
    "relu",  # the shared nn.ReLU instance
    "F.relu",
    "relu6",
    "leaky",
    "elu",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "hardtanh",
    "torch.tanh",
)


@dataclass(frozen=True)
class NetSpec:
    in_shape: tuple[int, ...]  # (C, H, W)
    n_classes: int
    layers: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]  # (kind, sorted params)
    head: tuple[tuple[str, Any], ...]
    seed: int


def _p(params: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return dict(params)


def _act_module(name: str) -> nn.Module | None:
    return {
        "relu6": nn.ReLU6(),
        "leaky": nn.LeakyReLU(0.1),
        "elu": nn.ELU(0.7),
        "gelu": nn.GELU(),
        "silu": nn.SiLU(),
        "sigmoid": nn.Sigmoid(),
        "tanh": nn.Tanh(),
        "hardtanh": nn.Hardtanh(-0.8, 0.6),
    }.get(name)


V2_KINDS = ("se", "attn", "gmlp", "norm", "softmax", "reduce", "pad", "roll", "flip")


class LayerNorm2d(nn.Module):
    """Channels-first LayerNorm: permute -> F.layer_norm -> permute."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), (self.weight.shape[0],), self.weight, self.bias)
        return x.permute(0, 3, 1, 2)


def _norm_module(p: dict[str, Any]) -> nn.Module:
    how, c, h, w = p["how"], p["c"], p["h"], p["w"]
    if how == "ln_last":
        return nn.LayerNorm(w)
    if how == "ln_chw":
        return nn.LayerNorm([c, h, w], elementwise_affine=p["affine"])
    if how == "ln2d":
        return LayerNorm2d(c)
    if how == "gn":
        return nn.GroupNorm(p["groups"], c, affine=p["affine"])
    if how == "in":
        return nn.InstanceNorm2d(c, affine=p["affine"])
    return nn.RMSNorm([h, w], elementwise_affine=p["affine"])


def conv_out(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def every_window_has_a_real_point(n: int, k: int, s: int, p: int, d: int) -> bool:
    """No output position of a conv reads only zero padding (such a point would be constant
    over the data, and its Δ would be pure rounding noise of the profile mean)."""
    for o in range(conv_out(n, k, s, p, d)):
        if not any(0 <= o * s - p + j * d < n for j in range(k)):
            return False
    return True


class SpecNet(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        self.relu = nn.ReLU()  # shared by every "relu" layer
        c = spec.in_shape[0]
        for i, (kind, params) in enumerate(spec.layers):
            p = _p(params)
            if kind == "conv":
                setattr(
                    self,
                    f"conv{i}",
                    nn.Conv2d(
                        c,
                        p["out"],
                        p["k"],
                        stride=p["s"],
                        padding=p["p"],
                        dilation=p["d"],
                        groups=p["g"],
                        bias=p["bias"],
                    ),
                )
                c = p["out"]
            elif kind == "conv1d":
                setattr(
                    self,
                    f"conv{i}",
                    nn.Conv1d(
                        c,
                        p["out"],
                        p["k"],
                        stride=p["s"],
                        padding=p["p"],
                        dilation=p["d"],
                        groups=p["g"],
                    ),
                )
                c = p["out"]
            elif kind == "bn":
                setattr(self, f"bn{i}", nn.BatchNorm2d(c))
            elif kind == "bn1d":
                setattr(self, f"bn{i}", nn.BatchNorm1d(c))
            elif kind == "act":
                m = _act_module(p["fn"])
                if m is not None:
                    setattr(self, f"act{i}", m)
            elif kind == "maxpool":
                setattr(self, f"pool{i}", nn.MaxPool2d(p["k"], p["s"], p["p"], dilation=p["d"]))
            elif kind == "avgpool":
                setattr(
                    self,
                    f"pool{i}",
                    nn.AvgPool2d(p["k"], p["s"], p["p"], count_include_pad=p["cip"]),
                )
            elif kind == "amax":
                setattr(self, f"pool{i}", nn.AdaptiveMaxPool2d(p["out"]))
            elif kind == "aavg":
                setattr(self, f"pool{i}", nn.AdaptiveAvgPool2d(p["out"]))
            elif kind == "res":
                setattr(
                    self,
                    f"res{i}",
                    nn.Conv2d(
                        c,
                        c,
                        p["k"],
                        padding=p["d"] * (p["k"] - 1) // 2,
                        dilation=p["d"],
                        groups=p["g"],
                    ),
                )
                if p["bn"]:
                    setattr(self, f"resbn{i}", nn.BatchNorm2d(c))
                m = _act_module(p["fn"])
                if m is not None:
                    setattr(self, f"act{i}", m)
            elif kind == "cat":
                setattr(self, f"cata{i}", nn.Conv2d(c, p["a"], 1))
                setattr(self, f"catb{i}", nn.Conv2d(c, p["b"], 3, padding=1))
                c = p["a"] + p["b"]
            elif kind == "drop":
                setattr(
                    self, f"drop{i}", nn.Dropout(0.3) if p["how"] == "dropout" else nn.Identity()
                )
            elif kind == "se":
                conv = p["how"] == "conv"
                setattr(self, f"se1_{i}", nn.Conv2d(c, p["r"], 1) if conv else nn.Linear(c, p["r"]))
                setattr(self, f"se2_{i}", nn.Conv2d(p["r"], c, 1) if conv else nn.Linear(p["r"], c))
            elif kind == "attn":
                setattr(self, f"attnnorm{i}", nn.LayerNorm(c))
                for part in "qkv":
                    setattr(self, f"{part}{i}", nn.Linear(c, p["d"]))
                setattr(self, f"o{i}", nn.Linear(p["d"], c))
            elif kind == "gmlp":
                if p["how"] == "tokens":
                    setattr(self, f"up{i}", nn.Linear(c, 2 * p["hidden"]))
                    setattr(self, f"down{i}", nn.Linear(p["hidden"], c))
                else:
                    setattr(self, f"up{i}", nn.Conv2d(c, 2 * p["hidden"], 1))
                    setattr(self, f"down{i}", nn.Conv2d(p["hidden"], c, 1))
                m = _act_module(p["fn"])
                if m is not None:
                    setattr(self, f"act{i}", m)
            elif kind == "norm":
                setattr(self, f"norm{i}", _norm_module(p))
            elif kind == "pad" and p["module"]:
                setattr(self, f"pad{i}", nn.ConstantPad2d(p["pads"], p["value"]))
            elif kind == "reduce" and p["dim"] == 1:
                c = 1
        h = _p(spec.head)
        if h["flat"] == "module":
            self.flat = nn.Flatten()
        elif h["flat"] == "gap":
            self.gap = nn.AdaptiveAvgPool2d(1) if h["rank"] == 3 else nn.AdaptiveAvgPool1d(1)
        elif h["flat"] == "gmp":
            self.gmp = nn.AdaptiveMaxPool2d(1)
        if h["hidden"]:
            self.fc1 = nn.Linear(h["features"], h["hidden"])
            m = _act_module(h["fn"])
            if m is not None:
                self.fcact = m
            self.fc2 = nn.Linear(h["hidden"], spec.n_classes)
        else:
            self.fc = nn.Linear(h["features"], spec.n_classes)

    def _act(self, name: str, i: int | str, x: torch.Tensor) -> torch.Tensor:
        if name == "relu":
            return self.relu(x)
        if name == "F.relu":
            return F.relu(x)
        if name == "torch.tanh":
            return torch.tanh(x)
        return getattr(self, f"act{i}" if isinstance(i, int) else i)(x)

    def _v2_layer(self, kind: str, i: int, p: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        if kind == "se":
            if p["how"] == "conv":
                s = self.relu(getattr(self, f"se1_{i}")(x.mean((2, 3), keepdim=True)))
                s = torch.sigmoid(getattr(self, f"se2_{i}")(s))
            else:
                s = self.relu(getattr(self, f"se1_{i}")(x.mean((2, 3))))
                s = torch.sigmoid(getattr(self, f"se2_{i}")(s)).view(-1, p["c"], 1, 1)
            if p["order"] == "torch.mul":
                return torch.mul(x, s)
            return x * s if p["order"] == "xs" else s * x
        if kind == "attn":
            t = x.flatten(2).transpose(1, 2)  # (B, tokens, features)
            h = getattr(self, f"attnnorm{i}")(t)
            q, k, v = (getattr(self, f"{part}{i}")(h) for part in "qkv")
            w = F.softmax(q @ k.transpose(-2, -1) * p["scale"], dim=-1)
            t = t + getattr(self, f"o{i}")(w @ v)
            return t.transpose(1, 2).reshape(-1, p["c"], p["h"], p["w"])
        if kind == "gmlp":
            if p["how"] == "tokens":
                t = x.flatten(2).transpose(1, 2)
                a, b = getattr(self, f"up{i}")(t).chunk(2, -1)
                t = t + getattr(self, f"down{i}")(a * self._act(p["fn"], i, b))
                return t.transpose(1, 2).reshape(-1, p["c"], p["h"], p["w"])
            a, b = torch.chunk(getattr(self, f"up{i}")(x), 2, dim=1)
            return x + getattr(self, f"down{i}")(a * self._act(p["fn"], i, b))
        if kind == "norm":
            return getattr(self, f"norm{i}")(x)
        if kind == "softmax":
            return F.log_softmax(x, p["dim"]) if p["log"] else torch.softmax(x, dim=p["dim"])
        if kind == "reduce":
            if p["op"] == "sum":
                return x.sum(p["dim"], keepdim=True)
            if p["op"] == "amax":
                return torch.amax(x, dim=p["dim"], keepdim=True)
            if p["op"] == "max":
                return torch.max(x, p["dim"], keepdim=True)[0]
            return x.max(dim=p["dim"], keepdim=True).values
        if kind == "pad":
            if p["module"]:
                return getattr(self, f"pad{i}")(x)
            return F.pad(x, p["pads"], value=p["value"])
        if kind == "roll":
            return torch.roll(x, p["shifts"], p["dims"])
        if kind == "flip":
            return x.flip(p["dims"])
        raise AssertionError(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (kind, params) in enumerate(self.spec.layers):
            p = _p(params)
            if kind in ("conv", "conv1d"):
                x = getattr(self, f"conv{i}")(x)
            elif kind in ("bn", "bn1d"):
                x = getattr(self, f"bn{i}")(x)
            elif kind == "act":
                x = self._act(p["fn"], i, x)
            elif kind in ("maxpool", "avgpool", "amax", "aavg"):
                x = getattr(self, f"pool{i}")(x)
            elif kind == "res":
                y = getattr(self, f"res{i}")(x)
                if p["bn"]:
                    y = getattr(self, f"resbn{i}")(y)
                y = self._act(p["fn"], i, y)
                if p["op"] == "add":
                    x = y + x
                elif p["op"] == "radd":
                    x = torch.add(x, y)
                elif p["op"] == "sub":
                    x = x - y
                else:  # in place
                    x = y.add_(x)
            elif kind == "cat":
                a = getattr(self, f"cata{i}")(x)
                b = self.relu(getattr(self, f"catb{i}")(x))
                x = torch.cat([a, b], dim=1)
            elif kind == "mulc":
                x = x * p["c"] if p["left"] else p["c"] * x
            elif kind == "addc":
                x = x + p["c"]
            elif kind == "swap":
                x = x.permute(0, 1, 3, 2) if p["how"] == "permute" else x.transpose(2, 3)
            elif kind == "drop":
                x = getattr(self, f"drop{i}")(x)
            elif kind == "to1d":
                x = torch.flatten(x, 2)
            elif kind in V2_KINDS:
                x = self._v2_layer(kind, i, p, x)
            else:
                raise AssertionError(kind)
        h = _p(self.spec.head)
        if h["flat"] == "module":
            x = self.flat(x)
        elif h["flat"] == "function":
            x = torch.flatten(x, 1)
        elif h["flat"] == "view":
            x = x.contiguous().view(-1, h["features"])  # a permute may precede
        elif h["flat"] == "reshape":
            x = x.reshape(-1, h["features"])
        elif h["flat"] == "mean":
            x = x.mean(dim=(2, 3)) if h["rank"] == 3 else x.mean(-1)
        elif h["flat"] == "gap":
            x = torch.flatten(self.gap(x), 1)
        elif h["flat"] == "gmp":
            x = self.gmp(x).flatten(1)
        if h["hidden"]:
            x = self._act(h["fn"], "fcact", self.fc1(x))
            x = self.fc2(x)
        else:
            x = self.fc(x)
        if h["out"] == "softmax":
            x = F.softmax(x, dim=1)
        elif h["out"] == "log_softmax":
            x = F.log_softmax(x, dim=1)
        return x


def randomize_(model: nn.Module, seed: int, zero_fraction: float = 0.15) -> nn.Module:
    """Deterministic non-trivial parameters: random weights with some exact zeros, BN running
    stats and affine parameters (some gammas negative). Returns the model in float64 eval."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                w = torch.randn(m.weight.shape, generator=g, dtype=torch.float64)
                w *= 1.5 / math.sqrt(fan_in)
                w[torch.rand(w.shape, generator=g, dtype=torch.float64) < zero_fraction] = 0.0
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(n, generator=g))
                m.running_var.copy_(0.3 + 1.7 * torch.rand(n, generator=g))
                sign = torch.where(torch.rand(n, generator=g) < 0.3, -1.0, 1.0)
                m.weight.copy_(sign * (0.5 + torch.rand(n, generator=g)))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
        _randomize_v2_(model, seed, zero_fraction)
    return model.double().eval()


_V1_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.RMSNorm)


def _randomize_v2_(model: nn.Module, seed: int, zero_fraction: float) -> None:
    """Every other parameter (normalization affine weights — some negative —, embeddings,
    recurrent and attention weights, bare ``nn.Parameter``s) from a second generator, so the
    parameters of models made only of v1 layers are exactly what they were."""
    g = torch.Generator().manual_seed(seed + 7919)
    v1 = {id(p) for m in model.modules() if isinstance(m, _V1_MODULES) for p in m.parameters()}
    for name, p in model.named_parameters():
        if id(p) in v1:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if isinstance(owner, _NORMS) and leaf == "weight":
            sign = torch.where(torch.rand(p.shape, generator=g) < 0.3, -1.0, 1.0)
            p.data.copy_(sign * (0.5 + torch.rand(p.shape, generator=g)))
        elif "bias" in leaf:
            p.data.copy_(0.3 * torch.randn(p.shape, generator=g))
        else:
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            w = torch.randn(p.shape, generator=g, dtype=torch.float64) * 1.5 / math.sqrt(fan_in)
            w[torch.rand(w.shape, generator=g, dtype=torch.float64) < zero_fraction] = 0.0
            p.data.copy_(w)


def build_net(spec: NetSpec) -> nn.Module:
    torch.manual_seed(spec.seed)
    return randomize_(SpecNet(spec), spec.seed)


# --- hypothesis strategy ---------------------------------------------------------------------


def valid_window(n: int, k: int, s: int, p: int, d: int) -> bool:
    return conv_out(n, k, s, p, d) >= 1 and every_window_has_a_real_point(n, k, s, p, d)


def _draw_window(draw: st.DrawFn, n: int) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, dilation) of a conv along a dim of size n: padding at most
    d·(k-1)/2 and every window holds at least one real point."""
    k = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    s = draw(st.integers(1, 2))
    pad = draw(st.integers(0, d * (k - 1) // 2))
    if not valid_window(n, k, s, pad, d):
        pad = 0
    if not valid_window(n, k, s, pad, d):
        k, d = 1, 1
    assert valid_window(n, k, s, pad, d)
    return k, s, pad, d


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


V1_KINDS = (
    "conv",
    "conv",
    "bn",
    "act",
    "maxpool",
    "avgpool",
    "amax",
    "aavg",
    "res",
    "cat",
    "mulc",
    "addc",
    "swap",
    "drop",
)


@st.composite
def net_specs(
    draw: st.DrawFn, max_layers: int = 5, kinds: tuple[str, ...] = V1_KINDS + V2_KINDS
) -> NetSpec:
    """Random small models; ``kinds`` (default: every kind, SPEC v1 and v2) is what the layers
    are drawn from (``V1_KINDS`` for models of SPEC v1 operators only)."""
    c = draw(st.integers(1, 3))
    h = draw(st.integers(4, 8))
    w = draw(st.integers(4, 8))
    in_shape = (c, h, w)
    spatial = [h, w]
    layers: list[tuple[str, tuple[tuple[str, Any], ...]]] = []
    n_layers = draw(st.integers(1, max_layers))
    used_relu = False
    for _ in range(n_layers):
        kind = draw(st.sampled_from(kinds))
        p: dict[str, Any] = {}
        if kind == "conv":
            out = draw(st.integers(1, 6))
            ks, ss, ps, ds = [], [], [], []
            for n in spatial:
                k, s, pad, d = _draw_window(draw, n)
                ks.append(k), ss.append(s), ps.append(pad), ds.append(d)
            common = [g for g in _divisors(c) if out % g == 0]
            grp = draw(st.sampled_from(common))
            p = dict(
                out=out,
                k=tuple(ks),
                s=tuple(ss),
                p=tuple(ps),
                d=tuple(ds),
                g=grp,
                bias=draw(st.booleans()),
            )
            spatial = [
                conv_out(n, k, s, pad, d)
                for n, k, s, pad, d in zip(spatial, ks, ss, ps, ds, strict=True)
            ]
            c = out
        elif kind == "act":
            p = dict(fn=draw(st.sampled_from(ACTIVATIONS)))
        elif kind == "maxpool":
            k = draw(st.integers(2, 3))
            s = draw(st.integers(1, 2))
            pad = draw(st.integers(0, k // 2))
            d = draw(st.integers(1, 2))
            # Every window must hold a real point (max pooling pads with -inf).
            for d_, pad_ in ((d, pad), (d, 0), (1, pad), (1, 0)):
                if all(valid_window(n, k, s, pad_, d_) for n in spatial):
                    d, pad = d_, pad_
                    break
            else:
                continue
            p = dict(k=k, s=s, p=pad, d=d)
            spatial = [conv_out(n, k, s, pad, d) for n in spatial]
        elif kind == "avgpool":
            k = draw(st.integers(2, 3))
            s = draw(st.integers(1, 2))
            pad = draw(st.integers(0, k // 2))
            if not all(valid_window(n, k, s, pad, 1) for n in spatial):
                continue
            p = dict(k=k, s=s, p=pad, cip=draw(st.booleans()))
            spatial = [conv_out(n, k, s, pad, 1) for n in spatial]
        elif kind in ("amax", "aavg"):
            out = tuple(draw(st.integers(1, n + (1 if kind == "aavg" else 0))) for n in spatial)
            p = dict(out=out)
            spatial = list(out)
        elif kind == "res":
            k = draw(st.sampled_from([1, 3]))
            p = dict(
                k=k,
                d=draw(st.integers(1, 2)) if k == 3 else 1,
                g=draw(st.sampled_from(_divisors(c))),
                bn=draw(st.booleans()),
                fn=draw(st.sampled_from(ACTIVATIONS)),
                op=draw(st.sampled_from(["add", "radd", "sub", "inplace"])),
            )
        elif kind == "cat":
            p = dict(a=draw(st.integers(1, 3)), b=draw(st.integers(1, 3)))
            c = p["a"] + p["b"]
            used_relu = True
        elif kind == "mulc":
            p = dict(c=draw(st.sampled_from([-1.5, -0.5, 0.75, 2.0])), left=draw(st.booleans()))
        elif kind == "addc":
            p = dict(c=draw(st.sampled_from([-0.25, 0.5, 1.0])))
        elif kind == "swap":
            p = dict(how=draw(st.sampled_from(["permute", "transpose"])))
            spatial = spatial[::-1]
        elif kind == "drop":
            p = dict(how=draw(st.sampled_from(["dropout", "identity"])))
        elif kind in V2_KINDS:
            drawn = _draw_v2(draw, kind, c, spatial)
            if drawn is None:
                continue
            p, c, spatial = drawn
            used_relu = used_relu or kind == "se"
        if p.get("fn") == "relu":
            used_relu = True
        layers.append((kind, tuple(sorted(p.items()))))
    rank = 3
    if draw(st.integers(0, 3)) == 0:  # continue in 1-d
        layers.append(("to1d", ()))
        rank = 2
        spatial = [spatial[0] * spatial[1]]
        for _ in range(draw(st.integers(1, 2))):
            kind = draw(st.sampled_from(["conv1d", "bn1d", "act"]))
            if kind == "conv1d":
                n = spatial[0]
                out = draw(st.integers(1, 5))
                k, s, pad, d = _draw_window(draw, n)
                grp = draw(st.sampled_from([g for g in _divisors(c) if out % g == 0]))
                layers.append(
                    ("conv1d", tuple(sorted(dict(out=out, k=k, s=s, p=pad, d=d, g=grp).items())))
                )
                spatial = [conv_out(n, k, s, pad, d)]
                c = out
            elif kind == "bn1d":
                layers.append(("bn1d", ()))
            else:
                fn = draw(st.sampled_from(ACTIVATIONS))
                used_relu = used_relu or fn == "relu"
                layers.append(("act", (("fn", fn),)))
    flat_choices = ["module", "function", "view", "reshape", "mean", "gap"]
    if rank == 3:
        flat_choices.append("gmp")
    flat = draw(st.sampled_from(flat_choices))
    features = c if flat in ("mean", "gap", "gmp") else c * int(np.prod(spatial))
    hidden = draw(st.sampled_from([0, 0, 4, 7]))
    fn = draw(st.sampled_from(ACTIVATIONS)) if hidden else None
    if not used_relu and hidden:
        fn = "relu"  # make the shared ReLU appear at least twice in most models
    head = dict(
        flat=flat,
        rank=rank,
        features=features,
        hidden=hidden,
        fn=fn,
        out=draw(st.sampled_from([None, None, None, "softmax", "log_softmax"])),
    )
    return NetSpec(
        in_shape=in_shape,
        n_classes=draw(st.integers(2, 4)),
        layers=tuple(layers),
        head=tuple(sorted(head.items())),
        seed=draw(st.integers(0, 2**16)),
    )


def _draw_v2(draw: st.DrawFn, kind: str, c: int, spatial: list[int]):
    """(params, channels after, spatial after) of a SPEC v2 layer kind, or None to skip it."""
    h, w = spatial
    shape = dict(c=c, h=h, w=w)
    if kind == "se":
        p = dict(
            r=draw(st.integers(1, 2)),
            how=draw(st.sampled_from(["linear", "conv"])),
            order=draw(st.sampled_from(["xs", "sx", "torch.mul"])),
            c=c,
        )
    elif kind == "attn":
        if h * w > 12:
            return None  # keep the reference's 2K-term matrix products tiny
        d = draw(st.integers(1, 3))
        p = dict(d=d, scale=1.0 / math.sqrt(d), **shape)
    elif kind == "gmlp":
        how = draw(st.sampled_from(["tokens", "conv"]))
        if how == "tokens" and h * w > 16:
            how = "conv"
        p = dict(
            how=how, hidden=draw(st.integers(1, 2)), fn=draw(st.sampled_from(ACTIVATIONS)), **shape
        )
    elif kind == "norm":
        how = draw(st.sampled_from(["ln_last", "ln_chw", "ln2d", "gn", "in", "rms"]))
        p = dict(
            how=how,
            affine=draw(st.booleans()),
            groups=draw(st.sampled_from(_divisors(c))),
            **shape,
        )
        group = {
            "ln_last": w,
            "ln_chw": c * h * w,
            "ln2d": c,
            "gn": c // p["groups"] * h * w,
            "in": h * w,
            "rms": h * w,
        }[how]
        if group == 1:
            return None  # normalizing a single value: the output is constant
    elif kind == "softmax":
        p = dict(dim=draw(st.integers(1, 3)), log=draw(st.booleans()))
        if (c, h, w)[p["dim"] - 1] == 1:
            return None  # softmax of a single value: constant
    elif kind == "reduce":
        dim = draw(st.integers(1, 3))
        p = dict(op=draw(st.sampled_from(["sum", "amax", "max", "values"])), dim=dim)
        if dim == 1:
            c = 1
        else:
            spatial = [1 if d == dim - 2 else n for d, n in enumerate(spatial)]
    elif kind == "pad":
        pads = tuple(draw(st.integers(0, 1)) for _ in range(4))
        p = dict(pads=pads, value=draw(st.sampled_from([0.0, 0.5])), module=draw(st.booleans()))
        spatial = [h + pads[2] + pads[3], w + pads[0] + pads[1]]
    elif kind == "roll":
        dims = draw(st.sampled_from([(2,), (3,), (1, 3)]))
        p = dict(dims=dims, shifts=tuple(draw(st.integers(-2, 2)) for _ in dims))
    elif kind == "flip":
        p = dict(dims=draw(st.sampled_from([(2,), (3,), (1, 2)])))
    else:
        raise AssertionError(kind)
    return p, c, spatial


# --- data ------------------------------------------------------------------------------------


def make_data(
    in_shape: tuple[int, ...],
    n_classes: int,
    seed: int,
    batch_sizes: tuple[int, ...] = (5, 4, 3),
    n_samples: int = 3,
    labeled: bool = True,
) -> tuple[list[Any], torch.Tensor]:
    """Profiling batches (labels cover every class) and a batch of samples to slice."""
    g = torch.Generator().manual_seed(seed)
    n = sum(batch_sizes)
    labels = torch.arange(n) % n_classes
    labels = labels[torch.randperm(n, generator=g)]
    batches: list[Any] = []
    start = 0
    for b in batch_sizes:
        x = torch.randn((b, *in_shape), generator=g, dtype=torch.float64)
        batches.append((x, labels[start : start + b]) if labeled else x)
        start += b
    samples = torch.randn((n_samples, *in_shape), generator=g, dtype=torch.float64)
    return batches, samples


def make_token_data(
    in_shape: tuple[int, ...],
    vocab: int,
    n_classes: int,
    seed: int,
    batch_sizes: tuple[int, ...] = (5, 4, 3),
    n_samples: int = 3,
    labeled: bool = True,
) -> tuple[list[Any], torch.Tensor]:
    """Like :func:`make_data`, with integer token inputs in ``[0, vocab)`` (Embedding models)."""
    g = torch.Generator().manual_seed(seed)
    n = sum(batch_sizes)
    labels = (torch.arange(n) % n_classes)[torch.randperm(n, generator=g)]
    batches: list[Any] = []
    start = 0
    for b in batch_sizes:
        x = torch.randint(0, vocab, (b, *in_shape), generator=g)
        batches.append((x, labels[start : start + b]) if labeled else x)
        start += b
    return batches, torch.randint(0, vocab, (n_samples, *in_shape), generator=g)


def target_forms(n_samples: int, n_classes: int, seed: int) -> dict[str, Any]:
    """One target of each form of docs/spec.md §6."""
    g = torch.Generator().manual_seed(seed)
    multi = torch.rand((n_samples, n_classes), generator=g) < 0.5
    multi[0, :] = False
    multi[0, 0] = multi[0, n_classes - 1] = True  # a sample with two criterion outputs
    if n_samples > 2:
        multi[2, :] = False  # a sample with no criterion output at all
    return {
        "top1": None,
        "int": n_classes - 1,
        "per_sample": torch.randint(0, n_classes, (n_samples,), generator=g),
        "bool": multi,
    }


# --- comparison ------------------------------------------------------------------------------


def as_numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def compare_maps(
    what: str, ref: dict[str, np.ndarray], eng: Any, keys: list[str] | None = None
) -> tuple[int, int, list[str]]:
    """(agreeing entries, total entries, problems) of ``eng[k]`` against ``ref[k]``."""
    agree = total = 0
    problems: list[str] = []
    for k in keys if keys is not None else list(ref):
        r = ref[k]
        total += r.size
        if k not in eng:
            problems.append(f"{what}[{k!r}] missing (engine has {sorted(eng)})")
            continue
        e = eng[k]
        if isinstance(e, torch.Tensor) and (e.is_floating_point() or e.is_complex()):
            problems.append(f"{what}[{k!r}] has non-integer dtype {e.dtype}")
        e = as_numpy(e)
        if e.shape != r.shape:
            problems.append(f"{what}[{k!r}] shape {e.shape} != reference {r.shape}")
            continue
        same = e == r
        agree += int(same.sum())
        if not same.all():
            bad = np.argwhere(~same)
            shown = ", ".join(
                f"{tuple(int(i) for i in idx)}: engine {int(e[tuple(idx)])} ref "
                f"{int(r[tuple(idx)])}"
                for idx in bad[:6]
            )
            problems.append(f"{what}[{k!r}]: {len(bad)}/{r.size} differ ({shown})")
    return agree, total, problems
