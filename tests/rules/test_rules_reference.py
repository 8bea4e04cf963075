"""One tiny hand-built model per operator row of docs/spec.md §4: engine and reference must agree
exactly.

Every case is a small model around the operator with a Linear head (so there is a criterion).
For θ ∈ {0, 0.2, 0.5}, reference "dataset" and "class", and every target form of docs/spec.md §6
(output
forms; intermediate-neuron criteria ``nnslicer.Neurons(node, index)`` where a case names a
criterion node), the engine's synapse contributions and the point-level contributions of every
node must equal the independent float64 reference (tests/reference/) entry for entry, per sample
and summed. Composite layers (LSTM/GRU/RNN, attention) compare synapses only: the names of their
rewritten internal nodes are implementation-specific. Also: θ-selection details on
hand-computed numbers, intermediate-criterion errors, and UnsupportedOperation.

SPEC v2 rows (product, matrix products, sum/max over dims, normalizations, softmax inside,
padding/chunk/…, constants, Embedding, recurrent layers, attention, intermediate criteria) were
added while the engine was being rewritten for v2: until it is, those cases fail against it.

``spec=3`` cases are docs/spec.md §8 "Beyond the operator table" (nnslicer's extensions:
element-wise functions, min/amin, more data movement, linear-mode interpolation, EmbeddingBag,
weights through views, recurrent initial states and proj_size, attention masks,
TransformerEncoderLayer). Where the engine and the reference disagree, ``ENGINE_GAPS`` holds
the case with its diagnosis as a strict xfail (it fails once the engine is fixed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from reference import ReferenceNeurons, ReferenceSlicer, ReferenceUnsupported, theta_select
from reference.random_models import (
    compare_maps,
    make_data,
    make_token_data,
    randomize_,
    target_forms,
)
from reference.spec_reference import act_derivative_sign

torch.set_num_threads(1)

THETAS = (0.0, 0.2, 0.5)
REFERENCES = ("dataset", "class")


class Net(nn.Module):
    """``post(fc(body(self, x)))`` with a Linear head on the last dim of ``body``'s output."""

    def __init__(
        self,
        body: Callable[[Any, torch.Tensor], torch.Tensor],
        in_shape: tuple[int, ...],
        n_classes: int = 3,
        post: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
        example: torch.Tensor | None = None,
        **modules: nn.Module,
    ):
        super().__init__()
        for name, m in modules.items():
            setattr(self, name, m)
        self.body = body
        self.post = post
        example = torch.zeros((2, *in_shape)) if example is None else example
        with torch.no_grad():
            features = body(self.eval(), example).shape[-1]
        self.fc = nn.Linear(features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.body(self, x))
        return y if self.post is None else self.post(self, y)


@dataclass(frozen=True)
class Case:
    factory: Callable[[], nn.Module]
    in_shape: tuple[int, ...]
    vocab: int | None = None  # integer token inputs in [0, vocab) (Embedding models)
    synapses_only: bool = False  # composite layers: internal node names are engine-specific
    criterion: str | None = None  # a node (or module) name: also slice Neurons(criterion, …)
    spec: int = 1  # the SPEC version that added the row


CASES: dict[str, Case] = {}
CASE_SPEC_VERSION = 1  # set to 2 where the SPEC v2 rows start


def case(
    name: str,
    in_shape: tuple[int, ...],
    vocab: int | None = None,
    synapses_only: bool = False,
    criterion: str | None = None,
):
    def deco(fn: Callable[[tuple[int, ...]], nn.Module]) -> Callable[[tuple[int, ...]], nn.Module]:
        assert name not in CASES
        CASES[name] = Case(
            lambda: fn(in_shape), in_shape, vocab, synapses_only, criterion, CASE_SPEC_VERSION
        )
        return fn

    return deco


def flat(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(x, 1)


# --- Conv1d / Conv2d ------------------------------------------------------------------------------

for _name, _shape, _conv in [
    ("conv2d_basic", (2, 5, 5), lambda: nn.Conv2d(2, 3, 3)),
    ("conv2d_stride_padding", (2, 6, 6), lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1)),
    ("conv2d_dilation", (2, 7, 7), lambda: nn.Conv2d(2, 3, 3, padding=2, dilation=2)),
    ("conv2d_groups", (4, 5, 5), lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2)),
    (
        "conv2d_depthwise_no_bias",
        (3, 5, 5),
        lambda: nn.Conv2d(3, 3, 3, stride=2, padding=1, groups=3, bias=False),
    ),
    (
        "conv2d_rectangular",
        (2, 6, 7),
        lambda: nn.Conv2d(2, 3, (2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
    ),
    ("conv1d_stride_padding", (3, 9), lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1)),
    (
        "conv1d_dilation_groups",
        (4, 10),
        lambda: nn.Conv1d(4, 6, 2, padding=1, dilation=3, groups=2),
    ),
]:
    case(_name, _shape)(
        lambda shape, conv=_conv: Net(lambda s, x: flat(s.conv(x)), shape, conv=conv())
    )


@case("conv2d_stack_shared_relu", (2, 6, 6))
def _(shape):
    return Net(
        lambda s, x: flat(s.relu(s.c2(s.relu(s.c1(x))))),
        shape,
        c1=nn.Conv2d(2, 3, 3, padding=1),
        c2=nn.Conv2d(3, 4, 3, stride=2),
        relu=nn.ReLU(),
    )


# --- Linear ---------------------------------------------------------------------------------------


@case("linear_mlp", (6,))
def _(shape):
    return Net(lambda s, x: torch.tanh(s.fc0(x)), shape, fc0=nn.Linear(6, 5))


@case("linear_on_last_dim_of_3d", (3, 4))
def _(shape):
    return Net(lambda s, x: flat(s.lin(x)), shape, lin=nn.Linear(4, 5))


@case("linear_on_last_dim_of_feature_map", (2, 4, 5))
def _(shape):
    return Net(
        lambda s, x: flat(s.lin(s.conv(x))), shape, conv=nn.Conv2d(2, 2, 1), lin=nn.Linear(5, 3)
    )


# --- tensor + tensor, tensor - tensor -------------------------------------------------------------


def _residual(combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape):
    def body(s, x):
        y = s.relu(s.c1(x))
        z = s.c2(y)
        return flat(combine(z, y))

    return Net(
        body,
        shape,
        c1=nn.Conv2d(2, 3, 3, padding=1),
        c2=nn.Conv2d(3, 3, 3, padding=1),
        relu=nn.ReLU(),
    )


def _iadd(z, y):
    z += y
    return z


for _name, _combine in [
    ("add_residual", lambda z, y: z + y),
    ("add_residual_reversed", lambda z, y: y + z),
    ("sub_residual", lambda z, y: z - y),
    ("sub_residual_reversed", lambda z, y: y - z),
    ("add_torch_add", lambda z, y: torch.add(z, y)),
    ("sub_torch_sub", lambda z, y: torch.sub(z, y)),
    ("add_inplace_method", lambda z, y: z.add_(y)),
    ("sub_inplace_method", lambda z, y: z.sub_(y)),
    ("add_augmented_assign", _iadd),
    ("add_same_operand_twice", lambda z, y: z + z),
    ("add_broadcast_channel_mean", lambda z, y: z + y.mean((2, 3), keepdim=True)),
    ("sub_broadcast_channel_mean", lambda z, y: z - z.mean((2, 3), keepdim=True)),
    ("add_broadcast_row", lambda z, y: z + y.mean(2, keepdim=True)),
]:
    case(_name, (2, 5, 5))(lambda shape, combine=_combine: _residual(combine, shape))


@case("add_of_linears", (5,))
def _(shape):
    return Net(
        lambda s, x: s.relu(s.a(x)) - s.b(x) + s.relu(s.b(x)),
        shape,
        a=nn.Linear(5, 4),
        b=nn.Linear(5, 4),
        relu=nn.ReLU(),
    )


# --- AvgPool, AdaptiveAvgPool, mean over dims -----------------------------------------------------


def _conv_then(shape, tail: Callable[[Any, torch.Tensor], torch.Tensor], **modules):
    return Net(
        lambda s, x: tail(s, s.conv(x)), shape, conv=nn.Conv2d(shape[0], 3, 3, padding=1), **modules
    )


for _name, _shape, _pool in [
    ("avgpool2d", (2, 6, 6), lambda: nn.AvgPool2d(2)),
    (
        "avgpool2d_padding_count_include_pad",
        (2, 6, 6),
        lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True),
    ),
    (
        "avgpool2d_padding_exclude_pad",
        (2, 6, 6),
        lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    ),
    ("avgpool2d_overlapping", (2, 5, 6), lambda: nn.AvgPool2d((2, 3), stride=1)),
    ("adaptive_avgpool2d_uneven", (2, 7, 5), lambda: nn.AdaptiveAvgPool2d((3, 2))),
    ("adaptive_avgpool2d_global", (2, 5, 5), lambda: nn.AdaptiveAvgPool2d(1)),
    ("maxpool2d", (2, 6, 6), lambda: nn.MaxPool2d(2)),
    ("maxpool2d_stride_padding", (2, 6, 7), lambda: nn.MaxPool2d(3, stride=2, padding=1)),
    ("maxpool2d_dilation", (2, 6, 6), lambda: nn.MaxPool2d(2, stride=1, dilation=2)),
    ("adaptive_maxpool2d", (2, 5, 7), lambda: nn.AdaptiveMaxPool2d((2, 3))),
    ("adaptive_maxpool2d_global", (2, 5, 5), lambda: nn.AdaptiveMaxPool2d(1)),
]:
    case(_name, _shape)(
        lambda shape, pool=_pool: _conv_then(shape, lambda s, y: flat(s.pool(y)), pool=pool())
    )


@case("maxpool2d_after_relu_ties", (2, 6, 6))
def _(shape):
    return _conv_then(
        shape, lambda s, y: flat(s.pool(s.relu(y))), pool=nn.MaxPool2d(2), relu=nn.ReLU()
    )


@case("maxpool1d", (3, 9))
def _(shape):
    return Net(
        lambda s, x: flat(s.pool(s.conv(x))),
        shape,
        conv=nn.Conv1d(3, 2, 2),
        pool=nn.MaxPool1d(3, stride=2, padding=1),
    )


for _name, _mean in [
    ("mean_over_spatial", lambda y: y.mean((2, 3))),
    ("mean_torch_keepdim", lambda y: flat(torch.mean(y, dim=[3], keepdim=True))),
    ("mean_last_dim", lambda y: flat(y.mean(-1))),
    ("mean_channels", lambda y: flat(y.mean(dim=1))),
]:
    case(_name, (2, 4, 5))(
        lambda shape, mean=_mean: _conv_then(shape, lambda s, y, mean=mean: mean(y))
    )


# --- BatchNorm (eval), multiply by a constant -----------------------------------------------------


@case("batchnorm2d", (2, 5, 5))
def _(shape):
    return _conv_then(shape, lambda s, y: flat(s.bn(y)), bn=nn.BatchNorm2d(3))


@case("batchnorm2d_relu", (2, 5, 5))
def _(shape):
    return _conv_then(
        shape, lambda s, y: flat(s.relu(s.bn(y))), bn=nn.BatchNorm2d(3), relu=nn.ReLU()
    )


@case("batchnorm1d", (6,))
def _(shape):
    return Net(
        lambda s, x: s.relu(s.bn(s.fc0(x))),
        shape,
        fc0=nn.Linear(6, 5),
        bn=nn.BatchNorm1d(5),
        relu=nn.ReLU(),
    )


for _name, _mul in [
    ("mul_negative_constant", lambda y: y * -0.5),
    ("mul_constant_on_the_left", lambda y: 2.0 * y),
    ("mul_method", lambda y: y.mul(3.0)),
    ("mul_torch_mul", lambda y: torch.mul(y, -1.25)),
]:
    case(_name, (2, 4, 4))(
        lambda shape, mul=_mul: _conv_then(shape, lambda s, y, mul=mul: flat(mul(y)))
    )


# --- element-wise activations ---------------------------------------------------------------------

_ACTS: dict[str, Callable[[], nn.Module] | Callable[[torch.Tensor], torch.Tensor]] = {
    "act_relu": nn.ReLU,
    "act_relu6": nn.ReLU6,
    "act_leaky_relu": lambda: nn.LeakyReLU(0.1),
    "act_elu": lambda: nn.ELU(0.7),
    "act_gelu": nn.GELU,
    "act_gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "act_silu": nn.SiLU,
    "act_sigmoid": nn.Sigmoid,
    "act_tanh": nn.Tanh,
    "act_hardtanh": lambda: nn.Hardtanh(-0.5, 0.8),
}
for _name, _act in _ACTS.items():
    case(_name, (6,))(
        lambda shape, act=_act: Net(
            lambda s, x: s.act(s.fc0(x)), shape, fc0=nn.Linear(6, 8), act=act()
        )
    )

for _name, _fn in [
    ("act_F_relu", F.relu),
    ("act_torch_relu", torch.relu),
    ("act_relu_method", lambda y: y.relu()),
    ("act_torch_sigmoid", torch.sigmoid),
    ("act_torch_tanh", torch.tanh),
    ("act_F_leaky_relu", lambda y: F.leaky_relu(y, 0.2)),
    ("act_F_gelu", F.gelu),
    ("act_F_silu", F.silu),
    ("act_F_elu", F.elu),
    ("act_F_relu6", F.relu6),
    ("act_F_hardtanh", lambda y: F.hardtanh(y, -0.3, 0.4)),
]:
    case(_name, (6,))(
        lambda shape, fn=_fn: Net(lambda s, x, fn=fn: fn(s.fc0(x)), shape, fc0=nn.Linear(6, 8))
    )


@case("act_relu_inplace_after_bn", (2, 5, 5))
def _(shape):
    return _conv_then(
        shape, lambda s, y: flat(s.relu(s.bn(y))), bn=nn.BatchNorm2d(3), relu=nn.ReLU(inplace=True)
    )


@case("act_relu_inplace_after_conv", (2, 5, 5))
def _(shape):
    return _conv_then(shape, lambda s, y: flat(s.relu(y)), relu=nn.ReLU(inplace=True))


@case("act_shared_relu_three_uses", (2, 5, 5))
def _(shape):
    def body(s, x):
        a = s.relu(s.c1(x))
        b = s.relu(s.c2(a))
        return s.relu(flat(a + b))

    return Net(
        body,
        shape,
        c1=nn.Conv2d(2, 3, 3, padding=1),
        c2=nn.Conv2d(3, 3, 3, padding=1),
        relu=nn.ReLU(),
    )


# --- data movement --------------------------------------------------------------------------------

for _name, _move in [
    ("move_flatten_module", lambda s, y: s.flatten(y)),
    ("move_torch_flatten", lambda s, y: torch.flatten(y, 1)),
    ("move_flatten_method", lambda s, y: y.flatten(1)),
    ("move_view", lambda s, y: y.view(-1, 48)),
    ("move_reshape", lambda s, y: y.reshape(-1, 48)),
    ("move_torch_reshape", lambda s, y: torch.reshape(y, (-1, 48))),
    ("move_permute", lambda s, y: flat(y.permute(0, 2, 3, 1))),
    ("move_torch_permute", lambda s, y: flat(torch.permute(y, (0, 3, 1, 2)))),
    ("move_transpose", lambda s, y: flat(y.transpose(1, 3))),
    ("move_transpose_negative_dims", lambda s, y: flat(torch.transpose(y, -1, -2))),
    ("move_permute_contiguous_view", lambda s, y: y.permute(0, 3, 2, 1).contiguous().view(-1, 48)),
    (
        "move_squeeze_unsqueeze",
        lambda s, y: flat(s.gap(y).squeeze(3).squeeze(2).unsqueeze(1)),
    ),
    ("move_torch_unsqueeze_squeeze", lambda s, y: torch.squeeze(torch.unsqueeze(flat(y), 2), 2)),
    ("move_cat_channels", lambda s, y: flat(torch.cat([y, s.relu(s.c2(y))], dim=1))),
    ("move_cat_same_tensor_twice", lambda s, y: torch.cat([flat(y), flat(y)], 1)),
    ("move_cat_last_dim", lambda s, y: flat(torch.cat([y, s.relu(y)], dim=-1))),
    ("move_dropout_identity", lambda s, y: flat(s.identity(s.dropout(y)))),
    ("move_F_dropout_eval", lambda s, y: flat(F.dropout(y, p=0.3, training=False))),
    ("move_add_constant", lambda s, y: flat(y + 1.5)),
    ("move_add_constant_left", lambda s, y: flat(0.25 + y)),
]:
    case(_name, (2, 4, 4))(
        lambda shape, move=_move: _conv_then(
            shape,
            move,
            flatten=nn.Flatten(),
            gap=nn.AdaptiveAvgPool2d(1),
            relu=nn.ReLU(),
            c2=nn.Conv2d(3, 2, 1),
            dropout=nn.Dropout(0.5),
            identity=nn.Identity(),
        )
    )

for _name, _post in [
    ("move_softmax_on_output", lambda s, y: F.softmax(y, dim=1)),
    ("move_log_softmax_method_on_output", lambda s, y: y.log_softmax(dim=-1)),
    ("move_softmax_module_on_output", lambda s, y: s.softmax(y)),
    ("move_torch_log_softmax_on_output", lambda s, y: torch.log_softmax(y, 1)),
]:
    case(_name, (2, 4, 4))(
        lambda shape, post=_post: Net(
            lambda s, x: flat(s.relu(s.conv(x))),
            shape,
            post=post,
            conv=nn.Conv2d(2, 3, 3, padding=1),
            relu=nn.ReLU(),
            softmax=nn.Softmax(dim=1),
        )
    )


# =================================================================================================
# SPEC v2 rows
# =================================================================================================

CASE_SPEC_VERSION = 2


def _tokens_then(shape, tail: Callable[[Any, torch.Tensor], torch.Tensor], **modules):
    """(B, T, F) tokens -> Linear(F, 4) -> tail -> (flatten) head."""
    return Net(lambda s, x: tail(s, s.inp(x)), shape, inp=nn.Linear(shape[-1], 4), **modules)


# --- product of two input-dependent tensors -------------------------------------------------------


def _two_linears(shape, combine):
    return Net(
        lambda s, x: combine(s.a(x), torch.tanh(s.b(x))),
        shape,
        a=nn.Linear(shape[-1], 4),
        b=nn.Linear(shape[-1], 4),
    )


def _imul(a, b):
    a *= b
    return a


for _name, _combine in [
    ("product_mul", lambda a, b: a * b),
    ("product_torch_mul", lambda a, b: torch.mul(b, a)),
    ("product_mul_method", lambda a, b: a.mul(b)),
    ("product_inplace_method", lambda a, b: a.mul_(b)),
    ("product_augmented_assign", _imul),
    ("product_same_operand_twice", lambda a, b: a * a),
    ("product_of_product", lambda a, b: (a * b) * b),
    ("product_broadcast_row", lambda a, b: a * b[..., :1]),
]:
    case(_name, (5,))(lambda shape, combine=_combine: _two_linears(shape, combine))


class _SE(nn.Module):
    """Squeeze-excitation: global mean -> Linear -> ReLU -> Linear -> sigmoid -> x * s."""

    def __init__(self, c: int, r: int, conv: bool = False, s_first: bool = False):
        super().__init__()
        self.conv = conv
        self.s_first = s_first
        self.fc1 = nn.Conv2d(c, r, 1) if conv else nn.Linear(c, r)
        self.fc2 = nn.Conv2d(r, c, 1) if conv else nn.Linear(r, c)
        self.act = nn.ReLU()

    def forward(self, x):
        if self.conv:
            s = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))
        else:
            s = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3))))))
            s = s.view(-1, x.shape[1], 1, 1)
        return s * x if self.s_first else x * s


for _name, _kw in [
    ("product_se_block_linear", {}),
    ("product_se_block_conv_s_first", {"conv": True, "s_first": True}),
]:
    case(_name, (2, 4, 4), criterion="se")(
        lambda shape, kw=_kw: _conv_then(shape, lambda s, y: flat(s.se(y)), se=_SE(3, 2, **kw))
    )


@case("product_gated_mlp_chunk", (3, 5), criterion="mul")
def _(shape):
    def body(s, x):
        a, b = s.up(x).chunk(2, -1)
        return flat(s.down(a * F.silu(b)))

    return Net(body, shape, up=nn.Linear(5, 6), down=nn.Linear(3, 2))


@case("product_glu_split_conv", (2, 5, 5))
def _(shape):
    def body(s, x):
        h = s.conv(x)
        a, b = torch.split(h, [2, 2], dim=1)
        return flat(a * torch.sigmoid(b))

    return Net(body, shape, conv=nn.Conv2d(2, 4, 3, padding=1))


# --- matrix product of two input-dependent tensors ------------------------------------------------


for _name, _mm in [
    ("matmul_operator", lambda q, k: q @ k.transpose(-2, -1)),
    ("matmul_torch_matmul", lambda q, k: torch.matmul(q, k.transpose(1, 2))),
    ("matmul_bmm", lambda q, k: torch.bmm(q, k.permute(0, 2, 1))),
    ("matmul_method", lambda q, k: q.matmul(k.mT)),
    ("matmul_values", lambda q, k: torch.softmax(q @ k.transpose(-2, -1), -1) @ k),
    ("matmul_same_tensor", lambda q, k: q @ q.transpose(-2, -1)),
]:
    case(_name, (3, 5))(
        lambda shape, mm=_mm: Net(
            lambda s, x, mm=mm: flat(mm(s.q(x), s.k(x))),
            shape,
            q=nn.Linear(5, 4),
            k=nn.Linear(5, 4),
        )
    )


@case("matmul_broadcast_batch_dims", (2, 3, 4))
def _(shape):
    # (B, 2, 3, 3) @ (B, 1, 3, 2): the second operand is broadcast over dim 1
    return Net(
        lambda s, x: flat(s.a(x) @ s.b(x).mean(1, keepdim=True)),
        shape,
        a=nn.Linear(4, 3),
        b=nn.Linear(4, 2),
    )


class _Attention(nn.Module):
    """Pre-norm single-head attention written out: q @ kᵀ / √d, softmax, @ v, Linear, + x."""

    def __init__(self, e: int, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(e)
        self.q, self.k, self.v = nn.Linear(e, d), nn.Linear(e, d), nn.Linear(e, d)
        self.proj = nn.Linear(d, e)
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, x):
        h = self.norm(x)
        scores = self.q(h) @ self.k(h).transpose(-2, -1) * self.scale
        return x + self.proj(F.softmax(scores, dim=-1) @ self.v(h))


@case("matmul_single_head_attention_layernorm", (4, 5), criterion="attn.proj")
def _(shape):
    return Net(
        lambda s, x: flat(s.attn(s.inp(x))), shape, inp=nn.Linear(5, 4), attn=_Attention(4, 3)
    )


@case("matmul_attention_heads_view", (4, 4))
def _(shape):
    def body(s, x):
        b, t, e = x.shape
        q = s.q(x).view(b, t, 2, 2).transpose(1, 2)  # (B, heads, T, d)
        k = s.k(x).view(b, t, 2, 2).transpose(1, 2)
        v = s.v(x).view(b, t, 2, 2).transpose(1, 2)
        w = (q @ k.transpose(-2, -1) / math.sqrt(2.0)).softmax(-1)
        return flat((w @ v).transpose(1, 2).reshape(b, t, e))

    return Net(body, shape, q=nn.Linear(4, 4), k=nn.Linear(4, 4), v=nn.Linear(4, 4))


# --- matrix product with a parameter --------------------------------------------------------------


class _ParamNet(nn.Module):
    """A model whose weighted sums use bare parameters."""

    def __init__(self, body, in_f: int, shapes: dict[str, tuple[int, ...]], n_classes=3):
        super().__init__()
        self.body = body
        for k, shp in shapes.items():
            setattr(self, k, nn.Parameter(torch.randn(shp)))
        self.emb = nn.Linear(in_f, 4)
        with torch.no_grad():
            features = body(self, torch.zeros(2, 3, in_f)).shape[-1]
        self.fc = nn.Linear(features, n_classes)

    def forward(self, x):
        return self.fc(self.body(self, x))


for _name, _body, _shapes in [
    ("param_matmul_x_at_W", lambda s, x: flat(s.emb(x) @ s.W), {"W": (4, 3)}),
    ("param_matmul_torch_matmul", lambda s, x: flat(torch.matmul(s.emb(x), s.W)), {"W": (4, 2)}),
    (
        "param_matmul_F_linear",
        lambda s, x: flat(F.linear(s.emb(x), s.W, s.b)),
        {"W": (3, 4), "b": (3,)},
    ),
    ("param_matmul_W_at_x_token_mixing", lambda s, x: flat(s.W @ s.emb(x)), {"W": (2, 3)}),
    ("param_matmul_x_at_W_T", lambda s, x: flat(s.emb(x) @ s.W.T), {"W": (3, 4)}),
    ("param_matmul_x_at_W_t", lambda s, x: flat(s.emb(x) @ s.W.t()), {"W": (2, 4)}),
    (
        "param_matmul_F_linear_module_weight",
        lambda s, x: flat(F.linear(s.emb(x), s.emb.weight[:, :3].T)),
        {},
    ),
    (
        "param_matmul_chunk_of_parameter",
        lambda s, x: flat(s.emb(x) @ s.W.chunk(2, dim=1)[1]),
        {"W": (4, 6)},
    ),
    (
        "param_matmul_mm_vector_rows",
        lambda s, x: torch.mm(s.emb(x).mean(1), s.W),
        {"W": (4, 3)},
    ),
]:
    case(_name, (3, 5))(
        lambda shape, body=_body, shapes=_shapes: _ParamNet(body, shape[-1], shapes)
    )


# --- sum over dims --------------------------------------------------------------------------------

for _name, _sum in [
    ("sum_over_spatial", lambda y: y.sum((2, 3))),
    ("sum_torch_keepdim", lambda y: flat(torch.sum(y, dim=[3], keepdim=True))),
    ("sum_last_dim", lambda y: flat(y.sum(-1))),
    ("sum_channels_dim_kwarg", lambda y: flat(y.sum(dim=1))),
]:
    case(_name, (2, 4, 5))(lambda shape, fn=_sum: _conv_then(shape, lambda s, y, fn=fn: fn(y)))


# --- max / amax over dims -------------------------------------------------------------------------

for _name, _max in [
    ("maxdim_torch_max_getitem", lambda s, y: flat(torch.max(y, 2)[0])),
    ("maxdim_values_attribute", lambda s, y: flat(y.max(dim=-1).values)),
    ("maxdim_keepdim", lambda s, y: flat(torch.max(y, dim=1, keepdim=True)[0])),
    ("maxdim_amax_several_dims", lambda s, y: torch.amax(y, dim=(2, 3))),
    ("maxdim_amax_method", lambda s, y: flat(y.amax(1))),
    ("maxdim_after_relu_ties", lambda s, y: flat(torch.amax(s.relu(y), dim=(1, 3)))),
]:
    case(_name, (2, 4, 5))(lambda shape, fn=_max: _conv_then(shape, fn, relu=nn.ReLU()))


# --- normalization with the sample's own statistics -----------------------------------------------


class _LayerNorm2d(nn.Module):
    """Channels-first LayerNorm (ConvNeXt): permute -> F.layer_norm -> permute."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, 1e-6)
        return x.permute(0, 3, 1, 2)


for _name, _norm in [
    ("norm_layernorm_feature_map_last_dim", lambda: nn.LayerNorm(4)),
    ("norm_layernorm_chw", lambda: nn.LayerNorm([3, 4, 4])),
    ("norm_layernorm_no_affine", lambda: nn.LayerNorm(4, elementwise_affine=False)),
    ("norm_layernorm2d_permute", lambda: _LayerNorm2d(3)),
    ("norm_groupnorm", lambda: nn.GroupNorm(1, 3)),
    ("norm_groupnorm_per_channel", lambda: nn.GroupNorm(3, 3)),
    ("norm_instancenorm2d_affine", lambda: nn.InstanceNorm2d(3, affine=True)),
    ("norm_instancenorm2d_plain", lambda: nn.InstanceNorm2d(3)),
    ("norm_rmsnorm", lambda: nn.RMSNorm(4)),
    ("norm_rmsnorm_eps_no_affine", lambda: nn.RMSNorm([4, 4], eps=1e-4, elementwise_affine=False)),
]:
    case(_name, (2, 4, 4))(
        lambda shape, norm=_norm: _conv_then(shape, lambda s, y: flat(s.norm(y)), norm=norm())
    )


@case("norm_instancenorm1d_running_stats", (3, 6))
def _(shape):
    def build():
        m = nn.InstanceNorm1d(3, affine=True, track_running_stats=True)
        with torch.no_grad():
            m.running_mean.copy_(torch.tensor([0.2, -0.1, 0.4]))
            m.running_var.copy_(torch.tensor([0.5, 1.5, 2.0]))
        return m

    return Net(lambda s, x: flat(s.norm(s.conv(x))), shape, conv=nn.Conv1d(3, 3, 3), norm=build())


class _FNorms(nn.Module):
    def __init__(self, which: str):
        super().__init__()
        self.which = which
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.w = nn.Parameter(torch.ones(4))
        self.b = nn.Parameter(torch.zeros(4))
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        y = self.conv(x)
        if self.which == "layer":
            y = F.layer_norm(y, (4,), self.w, self.b)
        elif self.which == "group":
            y = F.group_norm(y, 2, self.w, self.b)
        elif self.which == "instance":
            y = F.instance_norm(y, weight=self.w, bias=self.b)
        else:
            y = F.rms_norm(y, (4,), self.w)
        return self.fc(torch.flatten(y, 1))


for _which in ("layer", "group", "instance", "rms"):
    case(f"norm_F_{_which}_norm", (2, 4, 4))(lambda shape, which=_which: _FNorms(which))


@case("norm_transformer_tokens", (4, 5))
def _(shape):
    return _tokens_then(
        shape, lambda s, y: flat(s.relu(s.norm(y))), norm=nn.LayerNorm(4), relu=nn.ReLU()
    )


# --- softmax / log-softmax not at the output ------------------------------------------------------

for _name, _sm in [
    ("softmax_inside_F_softmax", lambda s, y: F.softmax(y, dim=-1)),
    ("softmax_inside_log_softmax_method", lambda s, y: y.log_softmax(dim=1)),
    ("softmax_inside_module", lambda s, y: s.softmax(y)),
    ("softmax_inside_torch_softmax_then_act", lambda s, y: torch.tanh(torch.softmax(y, 1))),
]:
    case(_name, (6,))(
        lambda shape, sm=_sm: Net(
            lambda s, x, sm=sm: sm(s, s.fc0(x)), shape, fc0=nn.Linear(6, 5), softmax=nn.Softmax(1)
        )
    )


@case("softmax_inside_feature_map_channels", (2, 4, 4))
def _(shape):
    return _conv_then(shape, lambda s, y: flat(F.softmax(y, dim=1)))


# --- data movement (v2) ---------------------------------------------------------------------------


class _DropPath(nn.Module):
    """Stochastic depth as timm writes it: the identity in eval (traces to nothing)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, 1) >= self.p
        return x * keep / (1 - self.p)


def _split_swap(y):
    a, b = y.split([1, 3], dim=3)
    return flat(torch.cat([b, a], 3))


def _unbind_stack(y):
    a, b, c = y.unbind(1)
    return flat(torch.stack([c, a, b], dim=1))


for _name, _move in [
    ("move_pad_F_pad", lambda s, y: flat(F.pad(y, (1, 2, 0, 1)))),
    ("move_pad_value", lambda s, y: flat(F.pad(y, (1, 1), value=0.5))),
    ("move_pad_negative_crops", lambda s, y: flat(F.pad(y, (-1, 1, 1, -2)))),
    ("move_pad_zeropad2d_module", lambda s, y: flat(s.zpad(y))),
    ("move_pad_constantpad2d_module", lambda s, y: flat(s.cpad(y))),
    ("move_chunk", lambda s, y: flat(y.chunk(2, dim=2)[1])),
    ("move_chunk_torch_fewer_than_asked", lambda s, y: flat(torch.chunk(y, 3, 3)[1])),
    ("move_split_sizes", lambda s, y: _split_swap(y)),
    ("move_unbind_stack", lambda s, y: _unbind_stack(y)),
    ("move_narrow", lambda s, y: flat(y.narrow(2, 1, 2))),
    ("move_torch_narrow_negative_start", lambda s, y: flat(torch.narrow(y, -1, -3, 2))),
    ("move_stack_new_dim", lambda s, y: flat(torch.stack([y, s.relu(y)], dim=2))),
    ("move_expand", lambda s, y: flat(y.mean(1, keepdim=True).expand(-1, 3, -1, -1) + y)),
    ("move_expand_sizes", lambda s, y: flat(y[:, :1].expand(y.shape[0], 2, 4, 4))),
    ("move_expand_as", lambda s, y: flat(y.amax(2, keepdim=True).expand_as(y))),
    ("move_repeat", lambda s, y: flat(y.repeat(1, 1, 2, 1))),
    ("move_roll", lambda s, y: flat(torch.roll(y, 1, 2))),
    ("move_roll_several_dims", lambda s, y: flat(y.roll(shifts=(1, -2), dims=(2, 3)))),
    ("move_flip", lambda s, y: flat(torch.flip(y, [3]))),
    ("move_flip_method_two_dims", lambda s, y: flat(y.flip(1, 2))),
    ("move_slice_getitem", lambda s, y: flat(y[:, 1:, ::2, :3])),
    ("move_index_int", lambda s, y: flat(y[:, 0])),
    ("move_index_ellipsis_none", lambda s, y: flat(y[..., None, 1])),
    ("move_index_negative_step_free", lambda s, y: flat(y[:, -2:, 1, -1:])),
    ("move_drop_path_traced_away", lambda s, y: flat(y + s.drop_path(s.relu(y)))),
    ("move_dropout2d_alpha_dropout_eval", lambda s, y: flat(s.alpha(s.drop2d(y)))),
    ("move_F_dropout2d_eval", lambda s, y: flat(F.dropout2d(y, 0.2, training=False))),
    ("move_unflatten", lambda s, y: flat(s.unflatten(y.flatten(2)).transpose(2, 3))),
    ("move_clone_contiguous", lambda s, y: flat(y.transpose(2, 3).contiguous().clone())),
]:
    case(_name, (2, 4, 4))(
        lambda shape, move=_move: _conv_then(
            shape,
            move,
            relu=nn.ReLU(),
            zpad=nn.ZeroPad2d((1, 0, 2, 1)),
            cpad=nn.ConstantPad2d(1, -0.25),
            drop_path=_DropPath(0.3),
            drop2d=nn.Dropout2d(0.5),
            alpha=nn.AlphaDropout(0.2),
            unflatten=nn.Unflatten(2, (2, 8)),
        )
    )


@case("move_pad_constantpad1d_module", (3, 6))
def _(shape):
    return Net(
        lambda s, x: flat(s.pad(s.conv(x))),
        shape,
        conv=nn.Conv1d(3, 2, 3),
        pad=nn.ConstantPad1d((2, 1), 1.0),
    )


# --- constants made without the input -------------------------------------------------------------


class _ConstNet(nn.Module):
    def __init__(self, body, shape):
        super().__init__()
        self.body = body
        self.conv = nn.Conv2d(shape[0], 3, 3, padding=1)
        self.register_buffer("buf", torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4))
        self.pos = nn.Parameter(torch.randn(1, 3, 4, 4))
        self.gamma = nn.Parameter(torch.randn(3, 1, 1))
        with torch.no_grad():
            features = body(self, self.conv(torch.zeros(2, *shape))).shape[-1]
        self.fc = nn.Linear(features, 3)

    def forward(self, x):
        return self.fc(self.body(self, self.conv(x)))


for _name, _body in [
    ("const_zeros_like_add", lambda s, y: flat(y + torch.zeros_like(y))),
    ("const_ones_like_mul", lambda s, y: flat(torch.ones_like(y) * 2.0 * y)),
    ("const_full_like_minus_x", lambda s, y: flat(torch.full_like(y, 1.0) - torch.sigmoid(y))),
    ("const_one_minus_x", lambda s, y: flat(1 - torch.sigmoid(y))),
    ("const_new_zeros_cat", lambda s, y: flat(torch.cat([y, y.new_zeros(y.shape[0], 1, 4, 4)], 1))),
    ("const_arange_broadcast_add", lambda s, y: flat(y + torch.arange(4.0) / 4)),
    ("const_buffer_add", lambda s, y: flat(y - s.buf)),
    ("const_parameter_positional", lambda s, y: flat(y + s.pos)),
    ("const_parameter_layer_scale", lambda s, y: flat(s.gamma * y)),
    ("const_divide_by_constant", lambda s, y: flat(y / 3.0)),
    ("const_divide_by_buffer", lambda s, y: flat(y / (s.buf + 2.0))),
    ("const_negate", lambda s, y: flat(-y)),
    ("const_x_broadcast_by_constant", lambda s, y: flat(y.mean(2, keepdim=True) + s.pos)),
]:
    case(_name, (2, 4, 4))(lambda shape, body=_body: _ConstNet(body, shape))


# --- Embedding ------------------------------------------------------------------------------------


def _emb_net(shape, body, **modules):
    return Net(body, shape, example=torch.zeros((2, *shape), dtype=torch.long), **modules)


@case("embedding_module", (4,), vocab=6)
def _(shape):
    return _emb_net(shape, lambda s, x: flat(s.emb(x)), emb=nn.Embedding(6, 3))


@case("embedding_mean_over_tokens", (5,), vocab=4)
def _(shape):
    return _emb_net(shape, lambda s, x: torch.tanh(s.emb(x).mean(1)), emb=nn.Embedding(4, 3))


@case("embedding_padding_idx_then_linear", (3,), vocab=5)
def _(shape):
    return _emb_net(
        shape,
        lambda s, x: flat(s.relu(s.lin(s.emb(x)))),
        emb=nn.Embedding(5, 3, padding_idx=0),
        lin=nn.Linear(3, 3),
        relu=nn.ReLU(),
    )


@case("embedding_F_embedding_and_positions", (4,), vocab=5)
def _(shape):
    def body(s, x):
        h = F.embedding(x, s.table) + s.pos  # + a learned positional constant
        return flat(s.norm(h))

    return _emb_net(
        shape,
        body,
        table=nn.Parameter(torch.randn(5, 3)),
        pos=nn.Parameter(torch.randn(4, 3)),
        norm=nn.LayerNorm(3),
    )


@case("embedding_same_token_twice", (6,), vocab=2)
def _(shape):
    return _emb_net(shape, lambda s, x: flat(s.emb(x)), emb=nn.Embedding(2, 2))


# --- composite layers: recurrent (synapses compared) ----------------------------------------------


def _rnn_net(shape, rnn: nn.Module, read: Callable[[Any, Any], torch.Tensor], first: bool):
    def body(s, x):
        out = s.rnn(x if first else x.transpose(0, 1))
        return read(s, out)

    return Net(body, shape, rnn=rnn)


for _name, _shape, _rnn, _read, _first in [
    ("lstm_batch_first_last_step", (4, 3), lambda: nn.LSTM(3, 2, batch_first=True),
     lambda s, o: o[0][:, -1], True),
    ("lstm_two_layers_bidirectional", (3, 3),
     lambda: nn.LSTM(3, 2, num_layers=2, bidirectional=True, batch_first=True),
     lambda s, o: flat(o[0]), True),
    ("lstm_seq_first_h_n", (4, 2), lambda: nn.LSTM(2, 3), lambda s, o: o[1][0][-1], False),
    ("lstm_c_n_and_h_n_no_bias", (3, 2), lambda: nn.LSTM(2, 2, num_layers=2, bias=False),
     lambda s, o: torch.cat([o[1][0][-1], o[1][1][0]], 1), False),
    ("gru_batch_first", (4, 3), lambda: nn.GRU(3, 2, batch_first=True),
     lambda s, o: flat(o[0]), True),
    ("gru_two_layers_bidirectional_seq_first", (3, 2),
     lambda: nn.GRU(2, 2, num_layers=2, bidirectional=True),
     lambda s, o: flat(o[1].transpose(0, 1)), False),
    ("rnn_tanh", (4, 3), lambda: nn.RNN(3, 3, batch_first=True), lambda s, o: o[0][:, -1], True),
    ("rnn_relu_bidirectional", (3, 2),
     lambda: nn.RNN(2, 2, nonlinearity="relu", bidirectional=True, batch_first=True),
     lambda s, o: flat(o[0]), True),
]:  # fmt: skip
    case(_name, _shape, synapses_only=True)(
        lambda shape, rnn=_rnn, read=_read, first=_first: _rnn_net(shape, rnn(), read, first)
    )


@case("lstm_residual_input_two_consumers", (3, 3), synapses_only=True)
def _(shape):
    # the LSTM's input h is also read by the residual: its C sums both consumers
    return _tokens_then(
        shape,
        lambda s, y: flat(y + s.rnn(y)[0]),
        rnn=nn.LSTM(4, 4, batch_first=True),
    )


# --- composite layers: attention (synapses compared) ----------------------------------------------


class _MHA(nn.Module):
    def __init__(self, e: int, heads: int, batch_first: bool, kdim: int | None = None):
        super().__init__()
        self.batch_first = batch_first
        self.norm = nn.LayerNorm(e)
        self.attn = nn.MultiheadAttention(e, heads, batch_first=batch_first, kdim=kdim, vdim=kdim)
        self.kv = nn.Linear(e, kdim) if kdim else None

    def forward(self, x):
        h = self.norm(x)
        if not self.batch_first:
            h = h.transpose(0, 1)
        kv = self.kv(h) if self.kv is not None else h
        out = self.attn(h, kv, kv, need_weights=False)[0]
        if not self.batch_first:
            out = out.transpose(0, 1)
        return x + out


for _name, _kw in [
    ("mha_self_attention_batch_first", {"heads": 2, "batch_first": True}),
    ("mha_seq_first_one_head", {"heads": 1, "batch_first": False}),
    ("mha_kdim_vdim", {"heads": 2, "batch_first": True, "kdim": 3}),
]:
    case(_name, (3, 5), synapses_only=True)(
        lambda shape, kw=_kw: _tokens_then(shape, lambda s, y: flat(s.mha(y)), mha=_MHA(4, **kw))
    )


@case("sdpa_heads", (3, 4), synapses_only=True)
def _(shape):
    def body(s, x):
        b, t, e = x.shape
        q, k, v = (m(x).view(b, t, 2, 2).transpose(1, 2) for m in (s.q, s.k, s.v))
        return flat(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, e))

    return Net(body, shape, q=nn.Linear(4, 4), k=nn.Linear(4, 4), v=nn.Linear(4, 4))


@case("sdpa_single_head_scale", (4, 3), synapses_only=True)
def _(shape):
    return Net(
        lambda s, x: flat(F.scaled_dot_product_attention(s.q(x), s.k(x), x, scale=0.3)),
        shape,
        q=nn.Linear(3, 3),
        k=nn.Linear(3, 3),
    )


# --- intermediate-neuron criteria -----------------------------------------------------------------


@case("criterion_conv_module_name", (2, 5, 5), criterion="c1")
def _(shape):
    return Net(
        lambda s, x: flat(s.relu(s.c2(s.relu(s.c1(x))))),
        shape,
        c1=nn.Conv2d(2, 3, 3, padding=1),
        c2=nn.Conv2d(3, 2, 3, stride=2),
        relu=nn.ReLU(),
    )


@case("criterion_branch_node_name", (2, 5, 5), criterion="relu_1")
def _(shape):
    def body(s, x):
        a = s.relu(s.c1(x))
        b = s.relu(s.c2(x))  # relu_1: the other branch (c1, relu) is not its ancestor
        return flat(a + s.c3(b))

    return Net(
        body,
        shape,
        c1=nn.Conv2d(2, 2, 3, padding=1),
        c2=nn.Conv2d(2, 3, 1),
        c3=nn.Conv2d(3, 2, 3, padding=1),
        relu=nn.ReLU(),
    )


@case("criterion_dense_hidden", (6,), criterion="fc0")
def _(shape):
    return Net(
        lambda s, x: s.fc1(torch.tanh(s.fc0(x))), shape, fc0=nn.Linear(6, 5), fc1=nn.Linear(5, 4)
    )


@case("criterion_residual_batchnorm", (2, 4, 4), criterion="bn")
def _(shape):
    return _conv_then(
        shape, lambda s, y: flat(s.relu(s.bn(y)) + y), bn=nn.BatchNorm2d(3), relu=nn.ReLU()
    )


# =================================================================================================
# docs/spec.md §8 "Beyond the operator table": nnslicer's extensions (spec=3 below)
# =================================================================================================

CASE_SPEC_VERSION = 3


class _Consts(nn.Module):
    """Holds constant tensors (buffers) for the cases below: masks, indices, initial states."""

    def __init__(self, **tensors: torch.Tensor):
        super().__init__()
        for k, v in tensors.items():
            self.register_buffer(k, v)


# --- element-wise functions with a closed-form sign of f′ (and torch's derivative) ---------------

_POS = torch.sigmoid  # a positive input for log, sqrt, rsqrt, reciprocal, fractional powers
for _name, _fn in [
    ("elem_exp", torch.exp),
    ("elem_exp_method", lambda y: y.exp()),
    ("elem_log", lambda y: torch.log(_POS(y))),
    ("elem_log_method", lambda y: _POS(y).log()),
    ("elem_log1p", lambda y: torch.log1p(_POS(y))),
    ("elem_expm1", torch.expm1),
    ("elem_sqrt", lambda y: torch.sqrt(_POS(y))),
    ("elem_sqrt_method", lambda y: _POS(y).sqrt()),
    ("elem_erf", torch.erf),
    ("elem_F_logsigmoid", F.logsigmoid),
    ("elem_F_softsign", F.softsign),
    ("elem_rsqrt", lambda y: torch.rsqrt(_POS(y))),
    ("elem_reciprocal", lambda y: torch.reciprocal(_POS(y))),
    ("elem_reciprocal_method", lambda y: _POS(y).reciprocal()),
    ("elem_abs", torch.abs),
    ("elem_abs_builtin", abs),
    ("elem_abs_method", lambda y: y.abs()),
    ("elem_square", torch.square),
    ("elem_square_method", lambda y: y.square()),
    ("elem_pow_2", lambda y: y**2),
    ("elem_pow_3", lambda y: y**3),
    ("elem_pow_negative_int", lambda y: (y + 4.0) ** -1),
    ("elem_pow_half", lambda y: _POS(y) ** 0.5),
    ("elem_torch_pow", lambda y: torch.pow(_POS(y), -1.5)),
    ("elem_pow_method", lambda y: y.pow(2)),
    ("elem_pow_relu_zero", lambda y: F.relu(y) ** 1.5),  # x = 0: c·0^0.5 = 0
    ("elem_clamp", lambda y: torch.clamp(y, -0.5, 0.8)),
    ("elem_clamp_at_bound", lambda y: torch.clamp(F.relu(y), 0.0, 1.0)),  # x == min passes
    ("elem_clamp_method_min_only", lambda y: y.clamp(min=-0.2)),
    ("elem_clamp_method_max_kw", lambda y: y.clamp(max=0.3)),
    ("elem_clip", lambda y: torch.clip(y, -1.0, 0.5)),
    ("elem_clip_method", lambda y: y.clip(-0.3, 0.3)),
    ("elem_clamp_min", lambda y: torch.clamp_min(y, 0.1)),
    ("elem_clamp_max", lambda y: torch.clamp_max(y, -0.1)),
    ("elem_clamp_min_method", lambda y: y.clamp_min(0.0)),
    ("elem_F_mish", F.mish),
    ("elem_F_softplus_beta", lambda y: F.softplus(y, beta=2.0, threshold=1.0)),
    ("elem_F_tanhshrink", F.tanhshrink),
    ("elem_F_softshrink", lambda y: F.softshrink(y, 0.3)),
    ("elem_F_hardshrink_at_bound", lambda y: F.hardshrink(y.clamp(-0.5, 0.5), 0.5)),
]:
    case(_name, (6,))(
        lambda shape, fn=_fn: Net(lambda s, x, fn=fn: fn(s.fc0(x)), shape, fc0=nn.Linear(6, 8))
    )

for _name, _act in [
    ("elem_logsigmoid_module", nn.LogSigmoid),
    ("elem_softsign_module", nn.Softsign),
    ("elem_softplus_module", nn.Softplus),
    ("elem_mish_module", nn.Mish),
    ("elem_prelu_shared", nn.PReLU),
    ("elem_prelu_per_feature", lambda: nn.PReLU(8)),
    ("elem_tanhshrink_module", nn.Tanhshrink),
    ("elem_softshrink_module", lambda: nn.Softshrink(0.4)),
    ("elem_hardshrink_module", lambda: nn.Hardshrink(0.3)),
]:
    case(_name, (6,))(
        lambda shape, act=_act: Net(
            lambda s, x: s.act(s.fc0(x)), shape, fc0=nn.Linear(6, 8), act=act()
        )
    )


@case("elem_prelu_channels_feature_map", (2, 4, 4))
def _(shape):
    return _conv_then(shape, lambda s, y: flat(s.act(y)), act=nn.PReLU(3))


@case("elem_F_prelu_parameter", (2, 4, 4))
def _(shape):
    return _conv_then(shape, lambda s, y: flat(F.prelu(y, s.slope.weight)), slope=nn.PReLU(3))


# --- min / amin over dims -------------------------------------------------------------------------

for _name, _min in [
    ("mindim_torch_min_getitem", lambda s, y: flat(torch.min(y, 2)[0])),
    ("mindim_values_attribute", lambda s, y: flat(y.min(dim=-1).values)),
    ("mindim_keepdim", lambda s, y: flat(torch.min(y, dim=1, keepdim=True)[0])),
    ("mindim_amin_several_dims", lambda s, y: torch.amin(y, dim=(2, 3))),
    ("mindim_amin_method", lambda s, y: flat(y.amin(1))),
    ("mindim_after_relu_ties", lambda s, y: flat(torch.amin(s.relu(y), dim=(1, 3)))),
    ("mindim_min_method_ties", lambda s, y: flat(s.relu(y).min(2)[0])),
]:
    case(_name, (2, 4, 5))(lambda shape, fn=_min: _conv_then(shape, fn, relu=nn.ReLU()))


# --- data movement (§8) ---------------------------------------------------------------------------


def _mask_consts() -> _Consts:
    g = torch.Generator().manual_seed(5)
    return _Consts(
        mask=torch.rand(1, 3, 4, 4, generator=g) < 0.3,
        cond=torch.rand(3, 4, 4, generator=g) < 0.5,
        idx=torch.randint(0, 4, (1, 3, 4, 2), generator=g),
        sel=torch.tensor([3, 0, 0, 2]),
        along=torch.randint(0, 4, (1, 1, 4, 3), generator=g),
    )


def _batch_index(s, y):
    """The constant (1, 3, 4, 2) index over the batch (a buffer cannot be expanded by a traced
    size; ``new_zeros`` of one can be added)."""
    return y.new_zeros(y.shape[0], 3, 4, 2, dtype=torch.long) + s.c.idx


for _name, _move in [
    ("move_masked_fill", lambda s, y: flat(y.masked_fill(s.c.mask, -2.0))),
    ("move_torch_masked_fill", lambda s, y: flat(torch.masked_fill(y, s.c.mask, 0.0))),
    ("move_where_constant_other", lambda s, y: flat(torch.where(s.c.cond, y, 0.5))),
    ("move_where_two_tensors", lambda s, y: flat(torch.where(s.c.cond, y, s.relu(y)))),
    ("move_where_constant_first", lambda s, y: flat(torch.where(s.c.cond, s.c.mask * 1.0, y))),
    ("move_where_method", lambda s, y: flat(y.where(s.c.cond, y.flip(2)))),
    ("move_gather", lambda s, y: flat(torch.gather(y, 3, _batch_index(s, y)))),
    ("move_gather_method", lambda s, y: flat(y.gather(2, _batch_index(s, y)))),
    ("move_index_select", lambda s, y: flat(torch.index_select(y, 2, s.c.sel))),
    ("move_index_select_method", lambda s, y: flat(y.index_select(-1, s.c.sel))),
    ("move_take_along_dim", lambda s, y: flat(torch.take_along_dim(y, s.c.along, dim=3))),
    ("move_upsample_nearest_module", lambda s, y: flat(s.up(y))),
    ("move_upsampling_nearest2d", lambda s, y: flat(s.up2(y))),
    ("move_interpolate_nearest_size", lambda s, y: flat(F.interpolate(y, size=(6, 3)))),
    ("move_interpolate_nearest_scale", lambda s, y: flat(F.interpolate(y, scale_factor=1.5))),
    (
        "move_interpolate_nearest_exact",
        lambda s, y: flat(F.interpolate(y, size=(7, 5), mode="nearest-exact")),
    ),
    ("move_pixel_unshuffle", lambda s, y: flat(F.pixel_unshuffle(y, 2))),
    ("move_pixel_unshuffle_module", lambda s, y: flat(s.unshuffle(y))),
    ("move_tensor_unfold", lambda s, y: flat(y.unfold(2, 2, 1))),
    ("move_tensor_unfold_step", lambda s, y: flat(y.unfold(-1, 3, 2))),
    ("move_F_unfold", lambda s, y: flat(F.unfold(y, 2, padding=1, stride=2))),
    ("move_unfold_module", lambda s, y: flat(s.im2col(y))),
    ("move_pad_reflect", lambda s, y: flat(F.pad(y, (1, 2, 2, 0), mode="reflect"))),
    ("move_pad_replicate", lambda s, y: flat(F.pad(y, (2, 1, 0, 1), mode="replicate"))),
    ("move_pad_circular", lambda s, y: flat(F.pad(y, (1, 1, 1, 2), mode="circular"))),
    ("move_pad_reflection_module", lambda s, y: flat(s.reflect(y))),
    ("move_pad_replication_module", lambda s, y: flat(s.replicate(y))),
]:
    case(_name, (2, 4, 4))(
        lambda shape, move=_move: _conv_then(
            shape,
            move,
            c=_mask_consts(),
            relu=nn.ReLU(),
            up=nn.Upsample(scale_factor=2, mode="nearest"),
            up2=nn.UpsamplingNearest2d(size=(5, 7)),
            unshuffle=nn.PixelUnshuffle(2),
            im2col=nn.Unfold((2, 3), dilation=(1, 2), padding=(0, 1)),
            reflect=nn.ReflectionPad2d((2, 1, 1, 3)),
            replicate=nn.ReplicationPad2d(1),
        )
    )


def _conv4_then(shape, tail, **modules):
    """A conv to 4 channels (pixel shuffle by 2, channel shuffle by 2) -> tail."""
    return Net(
        lambda s, x: tail(s, s.conv(x)), shape, conv=nn.Conv2d(shape[0], 4, 3, padding=1), **modules
    )


for _name, _move in [
    ("move_pixel_shuffle", lambda s, y: flat(F.pixel_shuffle(y, 2))),
    ("move_pixel_shuffle_module", lambda s, y: flat(s.shuffle(y))),
    ("move_channel_shuffle_module", lambda s, y: flat(s.cshuffle(y))),
    ("move_channel_shuffle_function", lambda s, y: flat(torch.channel_shuffle(y, 2))),
]:
    case(_name, (2, 3, 3))(
        lambda shape, move=_move: _conv4_then(
            shape, move, shuffle=nn.PixelShuffle(2), cshuffle=nn.ChannelShuffle(2)
        )
    )


@case("move_pad_reflection1d_replication1d", (3, 6))
def _(shape):
    return Net(
        lambda s, x: flat(s.rep(s.ref(s.conv(x)))),
        shape,
        conv=nn.Conv1d(3, 2, 3),
        ref=nn.ReflectionPad1d((2, 1)),
        rep=nn.ReplicationPad1d((0, 2)),
    )


# --- weights used through a view: the synapses are the parameter's own elements -----------------

for _name, _body, _shapes in [
    ("param_view_F_linear_rows", lambda s, x: flat(F.linear(s.emb(x), s.W[:3])), {"W": (5, 4)}),
    (
        "param_view_F_linear_chunk_dim0",
        lambda s, x: flat(F.linear(s.emb(x), s.W.chunk(2)[0])),
        {"W": (6, 4)},
    ),
    (
        "param_view_narrow_then_t",
        lambda s, x: flat(s.emb(x) @ s.W.narrow(0, 1, 3).t()),
        {"W": (5, 4)},
    ),
    (
        "param_view_T_then_chunk",
        lambda s, x: flat(F.linear(s.emb(x), s.W.T.chunk(2, dim=0)[1])),
        {"W": (4, 6)},
    ),
    (
        "param_view_cat_repeats_add_up",
        lambda s, x: flat(s.emb(x) @ torch.cat([s.W, s.W], 1)),
        {"W": (4, 2)},
    ),
    ("param_view_repeat_adds_up", lambda s, x: flat(s.emb(x) @ s.W.repeat(1, 2)), {"W": (4, 2)}),
    (
        "param_view_expand_repeats_add_up",
        lambda s, x: flat(s.emb(x) @ s.W.expand(4, 3)),
        {"W": (4, 1)},
    ),
    (
        "param_view_index_repeats_add_up",
        lambda s, x: flat(F.linear(s.emb(x), s.W[[0, 2, 0]])),
        {"W": (3, 4)},
    ),
    (
        "param_view_linear_bias_view",
        lambda s, x: flat(F.linear(s.emb(x), s.W[1:], s.b[1:])),
        {"W": (4, 4), "b": (4,)},
    ),
]:
    case(_name, (3, 5))(
        lambda shape, body=_body, shapes=_shapes: _ParamNet(body, shape[-1], shapes)
    )


@case("param_view_tied_embedding_output", (4,), vocab=6)
def _(shape):
    # the output projection reuses the embedding table: both uses add to emb.weight
    return _emb_net(
        shape,
        lambda s, x: flat(F.linear(torch.tanh(s.emb(x)), s.emb.weight)),
        emb=nn.Embedding(6, 3),
    )


# --- nn.EmbeddingBag over (batch, bag) tokens: a lookup, then the bag's reduction ----------------


def _bag_weights(s, x):
    """Constant per-sample weights (batch, bag) from a (1, bag) buffer."""
    return x.new_zeros(x.shape, dtype=s.c.w.dtype) + s.c.w


for _name, _kw, _weights in [
    ("bag_sum", {"mode": "sum"}, False),
    ("bag_mean", {}, False),
    ("bag_max", {"mode": "max"}, False),
    ("bag_sum_padding_idx", {"mode": "sum", "padding_idx": 0}, False),
    ("bag_mean_padding_idx", {"mode": "mean", "padding_idx": 1}, False),
    ("bag_max_padding_idx", {"mode": "max", "padding_idx": 0}, False),
    ("bag_sum_per_sample_weights", {"mode": "sum"}, True),
]:
    case(_name, (4,), vocab=4, synapses_only=True)(
        lambda shape, kw=_kw, weights=_weights: _emb_net(
            shape,
            (lambda s, x: torch.tanh(s.bag(x, per_sample_weights=_bag_weights(s, x))))
            if weights
            else (lambda s, x: torch.tanh(s.bag(x))),
            bag=nn.EmbeddingBag(4, 3, **kw),
            c=_Consts(w=torch.tensor([[0.5, -1.0, 2.0, 0.25]])),
        )
    )


# --- recurrent layers with given initial states, LSTM with proj_size -----------------------------


class _RNNWithState(nn.Module):
    """``rnn(x, state)``: the initial state made from the input (``init`` Linears on the mean
    over time), a learned parameter expanded over the batch, or zeros of the batch size."""

    def __init__(self, rnn: nn.RNNBase, in_f: int, state: str, n_classes: int = 3):
        super().__init__()
        self.rnn, self.state = rnn, state
        k = rnn.num_layers * (2 if rnn.bidirectional else 1)
        self.k = k
        self.h_size = rnn.proj_size if getattr(rnn, "proj_size", 0) else rnn.hidden_size
        self.lstm = isinstance(rnn, nn.LSTM)
        self.init_h = nn.Linear(in_f, k * self.h_size)
        self.init_c = nn.Linear(in_f, k * rnn.hidden_size)
        self.h0 = nn.Parameter(torch.randn(k, 1, self.h_size))
        self.c0 = nn.Parameter(torch.randn(k, 1, rnn.hidden_size))
        out = self.h_size * (2 if rnn.bidirectional else 1)
        self.fc = nn.Linear(out, n_classes)

    def _states(self, x):
        b = x.shape[0]
        hid = self.rnn.hidden_size
        if self.state == "input":
            m = x.mean(1)
            h = torch.tanh(self.init_h(m)).unflatten(1, (self.k, self.h_size)).transpose(0, 1)
            c = self.init_c(m).unflatten(1, (self.k, hid)).transpose(0, 1)
            return h.contiguous(), c.contiguous()
        if self.state == "parameter":
            return (
                self.h0.expand(-1, b, -1).contiguous(),
                self.c0.expand(-1, b, -1).contiguous(),
            )
        return x.new_zeros(self.k, b, self.h_size), x.new_zeros(self.k, b, hid)

    def forward(self, x):
        h, c = self._states(x)
        out = self.rnn(x, (h, c) if self.lstm else h)[0]
        return self.fc(out[:, -1])


for _name, _shape, _rnn, _state in [
    ("lstm_initial_state_from_input", (3, 3), lambda: nn.LSTM(3, 2, batch_first=True), "input"),
    (
        "lstm_initial_state_parameter_two_layers",
        (3, 2),
        lambda: nn.LSTM(2, 2, num_layers=2, batch_first=True),
        "parameter",
    ),
    ("lstm_initial_state_zeros_given", (3, 3), lambda: nn.LSTM(3, 2, batch_first=True), "zeros"),
    (
        "gru_initial_state_from_input_bidirectional",
        (3, 2),
        lambda: nn.GRU(2, 2, bidirectional=True, batch_first=True),
        "input",
    ),
    ("gru_initial_state_parameter", (3, 3), lambda: nn.GRU(3, 2, batch_first=True), "parameter"),
    ("rnn_initial_state_from_input", (4, 2), lambda: nn.RNN(2, 3, batch_first=True), "input"),
    ("lstm_proj_size", (3, 3), lambda: nn.LSTM(3, 3, proj_size=2, batch_first=True), "zeros"),
    (
        "lstm_proj_size_bidirectional_two_layers_given_states",
        (3, 2),
        lambda: nn.LSTM(2, 3, num_layers=2, proj_size=2, bidirectional=True, batch_first=True),
        "input",
    ),
]:
    case(_name, _shape, synapses_only=True)(
        lambda shape, rnn=_rnn, state=_state: _RNNWithState(rnn(), shape[-1], state)
    )


# --- attention with masks, bias_kv, zero_attn; SDPA options; TransformerEncoderLayer -------------


def _attn_consts(length: int) -> _Consts:
    g = torch.Generator().manual_seed(11)
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)  # True above the diagonal
    return _Consts(
        causal=causal,
        float_mask=0.7 * torch.randn(length, length, generator=g),
        inf_mask=nn.Transformer.generate_square_subsequent_mask(length),
        kpm=torch.tensor([[False, True, False]]),  # (1, S): key 1 is padding in every sample
        allow=torch.tensor([[True, False, True], [True, True, False], [False, True, True]]),
    )


class _MaskedMHA(nn.Module):
    """Tokens -> Linear -> MultiheadAttention(h, h, h, masks) -> + h, with constant masks."""

    def __init__(self, length, batch_first=True, attn_mask=None, padding=False, **mha):
        super().__init__()
        self.batch_first, self.attn_mask, self.padding = batch_first, attn_mask, padding
        self.attn = nn.MultiheadAttention(4, 2, batch_first=batch_first, **mha)
        self.c = _attn_consts(length)

    def forward(self, h):
        mask = None if self.attn_mask is None else getattr(self.c, self.attn_mask)
        kpm = None
        if self.padding:
            kpm = torch.logical_or(h.new_zeros(h.shape[0], 3, dtype=torch.bool), self.c.kpm)
        x = h if self.batch_first else h.transpose(0, 1)
        out = self.attn(x, x, x, key_padding_mask=kpm, attn_mask=mask, need_weights=False)[0]
        return h + (out if self.batch_first else out.transpose(0, 1))


for _name, _kw in [
    ("mha_bool_attn_mask_true_forbids", {"attn_mask": "causal"}),
    ("mha_float_attn_mask", {"attn_mask": "float_mask"}),
    ("mha_float_causal_mask_with_inf_seq_first", {"attn_mask": "inf_mask", "batch_first": False}),
    ("mha_key_padding_mask", {"padding": True}),
    ("mha_add_bias_kv", {"add_bias_kv": True}),
    ("mha_add_zero_attn_key_padding", {"add_zero_attn": True, "padding": True}),
    (
        "mha_bias_kv_zero_attn_attn_mask_seq_first",
        {"add_bias_kv": True, "add_zero_attn": True, "attn_mask": "causal", "batch_first": False},
    ),
]:
    case(_name, (3, 5), synapses_only=True)(
        lambda shape, kw=_kw: _tokens_then(
            shape, lambda s, y: flat(s.mha(y)), mha=_MaskedMHA(shape[0], **kw)
        )
    )


def _sdpa_body(mask: str | None = None, kv_heads: int = 2, **kw):
    def body(s, x):
        b, t, _ = x.shape
        q = s.q(x).view(b, t, 2, 2).transpose(1, 2)
        k, v = (m(x).view(b, t, kv_heads, 2).transpose(1, 2) for m in (s.k, s.v))
        m = None if mask is None else getattr(s.c, mask)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, **kw)
        return flat(out.transpose(1, 2).reshape(b, t, 4))

    return body


for _name, _kw in [
    ("sdpa_bool_mask_true_allows", {"mask": "allow"}),
    ("sdpa_float_mask", {"mask": "float_mask"}),
    ("sdpa_is_causal", {"is_causal": True}),
    ("sdpa_is_causal_scale", {"is_causal": True, "scale": 0.8}),
    ("sdpa_enable_gqa", {"kv_heads": 1, "enable_gqa": True}),
]:
    case(_name, (3, 4), synapses_only=True)(
        lambda shape, kw=_kw: Net(
            _sdpa_body(**kw),
            shape,
            q=nn.Linear(4, 4),
            k=nn.Linear(4, 2 * kw.get("kv_heads", 2)),
            v=nn.Linear(4, 2 * kw.get("kv_heads", 2)),
            c=_attn_consts(shape[0]),
        )
    )


class _Encoder(nn.Module):
    def __init__(self, length: int, batch_first: bool, mask: str | None, **kw):
        super().__init__()
        self.batch_first, self.mask = batch_first, mask
        self.layer = nn.TransformerEncoderLayer(
            4, 2, dim_feedforward=6, dropout=0.1, batch_first=batch_first, **kw
        )
        self.c = _attn_consts(length)

    def forward(self, h):
        x = h if self.batch_first else h.transpose(0, 1)
        if self.mask == "padding":
            kpm = torch.logical_or(h.new_zeros(h.shape[0], 3, dtype=torch.bool), self.c.kpm)
            out = self.layer(x, src_key_padding_mask=kpm)
        elif self.mask is not None:
            out = self.layer(x, src_mask=getattr(self.c, self.mask))
        else:
            out = self.layer(x)
        return out if self.batch_first else out.transpose(0, 1)


for _name, _kw in [
    ("encoder_layer_post_norm", {"batch_first": True, "mask": None}),
    ("encoder_layer_norm_first_gelu", {"batch_first": True, "mask": None, "norm_first": True,
                                       "activation": "gelu"}),
    ("encoder_layer_seq_first_src_mask", {"batch_first": False, "mask": "inf_mask"}),
    ("encoder_layer_norm_first_key_padding", {"batch_first": True, "mask": "padding",
                                              "norm_first": True}),
]:  # fmt: skip
    case(_name, (3, 5), synapses_only=True)(
        lambda shape, kw=_kw: _tokens_then(
            shape, lambda s, y: flat(s.enc(y)), enc=_Encoder(shape[0], **kw)
        )
    )


# --- linear-mode interpolation: a weighted sum with the operator's coefficients -------------------

for _name, _shape, _interp in [
    ("interp_linear_scale", (2, 5), lambda y: F.interpolate(y, scale_factor=2, mode="linear")),
    (
        "interp_linear_align_corners_size",
        (2, 5),
        lambda y: F.interpolate(y, size=8, mode="linear", align_corners=True),
    ),
    (
        "interp_bilinear_scale",
        (2, 3, 4),
        lambda y: F.interpolate(y, scale_factor=2, mode="bilinear"),
    ),
    (
        "interp_bilinear_align_corners",
        (2, 3, 4),
        lambda y: F.interpolate(y, size=(5, 7), mode="bilinear", align_corners=True),
    ),
    (
        "interp_bilinear_downsample_size",
        (2, 5, 6),
        lambda y: F.interpolate(y, size=(3, 4), mode="bilinear"),
    ),
    (
        "interp_bilinear_fractional_scale",
        (2, 4, 3),
        lambda y: F.interpolate(y, scale_factor=(1.5, 1.7), mode="bilinear"),
    ),
    (
        "interp_bilinear_recompute_scale",
        (2, 4, 3),
        lambda y: F.interpolate(y, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
    ),
    ("interp_bicubic_scale", (2, 3, 4), lambda y: F.interpolate(y, scale_factor=2, mode="bicubic")),
    (
        "interp_bicubic_align_corners_size",
        (2, 4, 3),
        lambda y: F.interpolate(y, size=(6, 5), mode="bicubic", align_corners=True),
    ),
    ("interp_area_size", (2, 5, 7), lambda y: F.interpolate(y, size=(3, 4), mode="area")),
    ("interp_area_scale", (2, 6, 4), lambda y: F.interpolate(y, scale_factor=0.5, mode="area")),
]:
    case(_name, _shape)(
        lambda shape, interp=_interp: Net(
            lambda s, x, interp=interp: flat(interp(s.conv(x))),
            shape,
            conv=(nn.Conv1d if len(shape) == 2 else nn.Conv2d)(shape[0], 2, 1),
        )
    )

for _name, _up in [
    ("interp_upsample_bilinear_module", lambda: nn.Upsample(scale_factor=2, mode="bilinear")),
    (
        "interp_upsample_bicubic_module_size",
        lambda: nn.Upsample(size=(5, 6), mode="bicubic", align_corners=False),
    ),
    ("interp_upsampling_bilinear2d_module", lambda: nn.UpsamplingBilinear2d(scale_factor=2)),
]:
    case(_name, (2, 3, 3))(
        lambda shape, up=_up: _conv_then(shape, lambda s, y: flat(s.up(y)), up=up())
    )


# --- helpers --------------------------------------------------------------------------------------


def _seed(name: str) -> int:
    return sum(ord(c) * (i + 1) for i, c in enumerate(name)) % 10_000


def build_case(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    c = CASES[name]
    torch.manual_seed(_seed(name))
    model = c.factory()
    randomize_(model, _seed(name), zero_fraction=0.1)
    if name in ("act_relu6", "act_F_relu6"):
        with torch.no_grad():
            model.fc0.weight.mul_(5.0)  # reach both sides of ReLU6's bounds
    return model, c.in_shape


def case_data(name: str, **kwargs) -> tuple[list[Any], torch.Tensor]:
    c = CASES[name]
    if c.vocab is not None:
        return make_token_data(c.in_shape, c.vocab, 3, _seed(name), **kwargs)
    return make_data(c.in_shape, 3, _seed(name), **kwargs)


def criterion_forms(ref: ReferenceSlicer, node: str, n: int, seed: int) -> dict[str, Any]:
    """Every index form of ``Neurons(node, index)`` (docs/spec.md §6) for a profiled reference."""
    shape = dict((name, shp) for name, _, shp in ref.nodes())[ref.resolve_node(node)]
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < 0.4
    per_sample = torch.rand((n, *shape), generator=g) < 0.3
    per_sample[-1] = False  # a sample without criterion points
    return {
        "neurons_channel": ReferenceNeurons(node, shape[0] - 1),
        "neurons_point": ReferenceNeurons(node, tuple(d // 2 for d in shape)),
        "neurons_mask": ReferenceNeurons(node, mask),
        "neurons_per_sample_mask": ReferenceNeurons(node, per_sample),
    }


def _engine():
    import nnslicer

    return nnslicer


def engine_target(target: Any) -> Any:
    """The engine's spelling of a target: ReferenceNeurons -> nnslicer.Neurons."""
    if isinstance(target, ReferenceNeurons):
        return _engine().Neurons(target.node, target.index)
    return target


def _summed(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.sum(axis=0) for k, v in d.items()}


def check_against_reference(
    model: nn.Module,
    batches: list[Any],
    x: torch.Tensor,
    targets: dict[str, Any] | Callable[[ReferenceSlicer], dict[str, Any]],
    thetas=THETAS,
    references=REFERENCES,
    include_input: bool = False,
    synapses_only: bool = False,
) -> list[str]:
    """Every (θ, reference, target) combination; per-sample results always, batch-summed
    results for the first and last target form (sum == per-sample sum is a property test).
    ``targets`` may be a function of the profiled reference (to name its nodes)."""
    nnslicer = _engine()
    ref = ReferenceSlicer(model)
    ref.profile(batches)
    if callable(targets):
        targets = targets(ref)
    names = [
        n.name for n in ref.order if n.op != "internal" and (include_input or n.op != "placeholder")
    ]
    problems: list[str] = []
    tnames = list(targets)
    for theta in thetas:
        eng = nnslicer.Slicer(model, theta=theta)
        eng.profile(batches)
        for reference in references:
            for tname, target in targets.items():
                r = ref.slice(
                    x,
                    target=target,
                    reference=reference,
                    per_sample=True,
                    theta=theta,
                    # validate the reference's rules against the forward pass once
                    check=theta == thetas[0] and tname == tnames[0],
                )
                modes = (True, False) if tname in (tnames[0], tnames[-1]) else (True,)
                for per_sample in modes:
                    e = eng.slice(
                        x, target=engine_target(target), reference=reference, per_sample=per_sample
                    )
                    rn = r.neurons if per_sample else _summed(r.neurons)
                    rs = r.synapses if per_sample else _summed(r.synapses)
                    where = (
                        f"theta={theta} reference={reference} target={tname} "
                        f"per_sample={per_sample}"
                    )
                    compared = [("synapses", rs, e.synapses, None)]
                    if not synapses_only:
                        compared.append(("neurons", rn, e.neurons, names))
                    for what, rmap, emap, keys in compared:
                        _, _, probs = compare_maps(what, rmap, emap, keys)
                        problems += [f"[{where}] {p}" for p in probs]
    return problems


def case_targets(name: str, n: int) -> Callable[[ReferenceSlicer], dict[str, Any]]:
    c = CASES[name]

    def targets(ref: ReferenceSlicer) -> dict[str, Any]:
        forms = target_forms(n, 3, _seed(name))
        if c.criterion is not None:
            forms |= criterion_forms(ref, c.criterion, n, _seed(name))
        return forms

    return targets


# --- the per-operator agreement test --------------------------------------------------------------


# Cases where the engine does not (yet) do what the docs say; each reason is the diagnosis.
# strict: when the engine is fixed the case passes, the xfail fails, and the entry goes.
ENGINE_GAPS: dict[str, str] = {
    "bag_sum_padding_idx": "a different reading, the engine's documented in docs/composite.md "
    "(EmbeddingBag with padding_idx): the engine sums "
    "lookup * keep, a node with its own reference (the mean of masked lookups), so its terms are "
    "Δ(masked) instead of the lookup's Δ; the reference sums the non-padding lookup points "
    "('an embedding lookup, then the bag's sum ... (padding entries left out)')",
    "bag_mean_padding_idx": "ambiguous docs (engine reading differs): as bag_sum_padding_idx, "
    "and the division by the per-sample count is a scale node whose sign uses the mean's own Δy; "
    "the reference uses the mean rule ('the divisor is one positive factor per point')",
}


def _with_gaps(names):
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=ENGINE_GAPS[n]))
        if n in ENGINE_GAPS
        else n
        for n in names
    ]


@pytest.mark.parametrize("name", _with_gaps(sorted(CASES)))
def test_rule_matches_reference(name: str) -> None:
    model, _ = build_case(name)
    batches, x = case_data(name)
    problems = check_against_reference(
        model, batches, x, case_targets(name, len(x)), synapses_only=CASES[name].synapses_only
    )
    assert not problems, f"{len(problems)} disagreements, first:\n" + "\n".join(problems[:12])


@pytest.mark.parametrize("name", ["conv2d_stride_padding", "linear_mlp", "move_cat_channels"])
def test_input_node_contributions_match_reference(name: str) -> None:
    """The model input is a node too (docs/spec.md §2 profiles it); its points carry
    contributions."""
    model, _ = build_case(name)
    batches, x = case_data(name)
    problems = check_against_reference(
        model, batches, x, {"top1": None}, thetas=(0.0, 0.2), include_input=True
    )
    assert not problems, "\n".join(problems[:12])


@pytest.mark.parametrize("name", ["conv2d_groups", "maxpool2d_after_relu_ties", "batchnorm1d"])
def test_unlabeled_profile_matches_reference(name: str) -> None:
    """Unlabeled profiling data: the class of a profiling sample is the model's prediction."""
    model, _ = build_case(name)
    batches, x = case_data(name, batch_sizes=(7, 6, 5), labeled=False)
    with torch.no_grad():
        seen = set(torch.cat([model(b) for b in batches]).argmax(1).tolist())
        wanted = set(model(x).argmax(1).tolist())
    references = REFERENCES if wanted <= seen else ("dataset",)
    problems = check_against_reference(
        model, batches, x, {"top1": None, "int": 1}, references=references
    )
    assert not problems, "\n".join(problems[:12])


class _BagWithOffsets(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(5, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        offsets = torch.arange(0, x.numel(), x.shape[1])
        return self.fc(self.bag(x.reshape(-1), offsets))


def test_embedding_bag_with_offsets_is_refused() -> None:
    """docs/spec.md §8: bags given by offsets are refused (by the engine, and the reference
    has no rule for them either)."""
    model = _BagWithOffsets().double().eval()
    x = torch.randint(0, 5, (3, 4), generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (3, 2)
    with pytest.raises(ReferenceUnsupported):
        ReferenceSlicer(model)
    nnslicer = _engine()
    with pytest.raises(Exception, match="offsets") as info:
        eng = nnslicer.Slicer(model)
        eng.profile([x])
        eng.slice(x)
    assert not isinstance(info.value, AssertionError), info.value


# --- θ-selection on hand-computed numbers (reference alone, then engine) --------------------------


def test_theta_select_hand_computed() -> None:
    # Step 1: dead output.
    assert theta_select([1.0, -0.9995], 0.2)[0] == []
    assert theta_select([0.0, 0.0], 0.0)[0] == []
    # θ = 0 keeps exactly the non-zero terms.
    assert theta_select([0.5, 0.0, -0.25, 2.0], 0.0)[0] == [0, 2, 3]
    # T = 2.25; sorted 2, 0.5, -0.25: S_1 = 2, |T - S_1| = 0.25 < 0.2·2.25 = 0.45 -> k* = 1.
    assert theta_select([0.5, 0.0, -0.25, 2.0], 0.2)[0] == [3]
    # θ = 0.1: 0.25 !< 0.225; S_2 = 2.5, |T - S_2| = 0.25 !< 0.225; S_3 = T -> k* = 3.
    assert theta_select([0.5, 0.0, -0.25, 2.0], 0.1)[0] == [0, 2, 3]
    # Ties of the k*-th magnitude are kept: T = 1, S_1 = 1 -> k* = 1, both 1's kept.
    assert theta_select([1.0, -0.5, 1.0, -0.5], 0.5)[0] == [0, 2]
    # Negative total: T = -3, sorted -4, 2, -1 -> S_1 = -4, |1| < 0.5·3 -> k* = 1.
    kept, total = theta_select([2.0, -4.0, -1.0], 0.5)
    assert kept == [1] and total == -3.0


class _Dup(nn.Module):
    """x (B, 2) -> cat([x, x]) -> Linear(4, 2): equal terms on duplicated features."""

    def __init__(self, row0: list[float]):
        super().__init__()
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([row0, [0.3, 0.1, -0.2, 0.4]]))
        self.double().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([x, x], dim=1))


def _dup_slices(row0: list[float], theta: float):
    model = _Dup(row0)
    data = [torch.tensor([[0.0, 0.0], [2.0, 4.0]], dtype=torch.float64)]  # mean (1, 2)
    x = torch.tensor([[2.0, 4.0]], dtype=torch.float64)  # Δx = (1, 2)
    ref = ReferenceSlicer(model, theta=theta)
    ref.profile(data)
    r = ref.slice(x, target=0)
    eng = _engine().Slicer(model, theta=theta)
    eng.profile(data)
    e = eng.slice(x, target=0)
    return r, e


@pytest.mark.parametrize("theta", [0.2, 0.5])
def test_ties_of_the_kstar_magnitude_are_kept(theta: float) -> None:
    # Row 0 terms: (1, -0.5, 1, -0.5), T = 1: k* = 1, and the tie at |t| = 1 is kept.
    r, e = _dup_slices([1.0, -0.25, 1.0, -0.25], theta)
    want = np.array([[1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(r.synapses["fc.weight"], want)
    np.testing.assert_array_equal(r.neurons["cat"], [1, 0, 1, 0])
    np.testing.assert_array_equal(r.neurons["x"], [2, 0])
    np.testing.assert_array_equal(np.asarray(e.synapses["fc.weight"]), want)
    np.testing.assert_array_equal(np.asarray(e.neurons["cat"]), [1, 0, 1, 0])


def test_theta_zero_keeps_every_nonzero_term_with_its_sign() -> None:
    r, e = _dup_slices([1.0, -0.25, 1.0, -0.25], 0.0)
    want = np.array([[1, -1, 1, -1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(r.synapses["fc.weight"], want)
    np.testing.assert_array_equal(r.neurons["x"], [2, -2])
    np.testing.assert_array_equal(np.asarray(e.synapses["fc.weight"]), want)
    np.testing.assert_array_equal(np.asarray(e.neurons["cat"]), [1, -1, 1, -1])


def test_negative_total_flips_signs() -> None:
    # Terms (-1, 0.2, -1, 0.2): T = -1.6 < 0, so s_i = sign(T)·sign(t_i) = (+1, -1, +1, -1).
    r, e = _dup_slices([-1.0, 0.1, -1.0, 0.1], 0.0)
    want = np.array([[1, -1, 1, -1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(r.synapses["fc.weight"], want)
    np.testing.assert_array_equal(np.asarray(e.synapses["fc.weight"]), want)


@pytest.mark.parametrize("theta", THETAS)
def test_dead_output_keeps_no_edge(theta: float) -> None:
    # Row 0 = (1, -0.49975, 0, 0) on Δx = (1, 2, 1, 2): terms (1, -0.9995, 0, 0),
    # T = 5e-4 <= 1e-3 · max|t|: the output did not move, nothing is kept.
    r, e = _dup_slices([1.0, -0.49975, 0.0, 0.0], theta)
    assert np.abs(r.synapses["fc.weight"]).sum() == 0
    assert np.abs(r.neurons["x"]).sum() == 0
    assert np.abs(np.asarray(e.synapses["fc.weight"])).sum() == 0
    assert np.abs(np.asarray(e.neurons["cat"])).sum() == 0


def test_reference_hand_computed_linear() -> None:
    """A 2-layer net small enough to slice by hand."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        model[2].weight.copy_(torch.tensor([[2.0, -1.0], [1.0, 0.5]]))
    model.double().eval()
    data = [torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)]
    # Profile: x mean (0, 1); h = W1 x: (0,0), (2,-2) -> mean (1, -1); relu: (0,0), (2,0)
    # -> mean (1, 0); out = W2 r: (0,0), (4,2) -> mean (2, 1).
    x = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    # Sample: h = (4, 2), relu = (4, 2), out = (6, 5) -> top-1 is class 0.
    # Δ: x (3, 0), h (3, 3), relu (3, 2), out (4, 4).
    # Class 0 row: terms (2·3, -1·2) = (6, -2), T = 4. θ = 0.2: S_1 = 6, |4-6| = 2 !< 0.8,
    # S_2 = 4 -> k* = 2: both kept, signs (+1, -1).
    # relu -> h: x > 0 and Δy, Δx > 0: s = sign(C) -> C(h) = (+1, -1).
    # h0 = x0 + x1: terms (3, 0), T = 3 -> keep x0 with s = +1·+1·+1 = +1.
    # h1 = x0 - x1: terms (3, -0), T = 3 -> keep x0 with s = -1·+1·+1 = -1.
    ref = ReferenceSlicer(model, theta=0.2)
    ref.profile(data)
    s = ref.slice(x)
    assert [n.name for n in ref.order] == ["input_1", "_0", "_1", "_2"]
    np.testing.assert_array_equal(s.neurons["_2"], [1, 0])
    np.testing.assert_array_equal(s.neurons["_1"], [1, -1])
    np.testing.assert_array_equal(s.neurons["_0"], [1, -1])
    np.testing.assert_array_equal(s.neurons["input_1"], [0, 0])  # +1 - 1 at x0
    np.testing.assert_array_equal(s.synapses["2.weight"], [[1, -1], [0, 0]])
    np.testing.assert_array_equal(s.synapses["0.weight"], [[1, 0], [-1, 0]])
    # θ = 0: same here (no zero term is kept: Δx1 = 0).
    np.testing.assert_array_equal(ref.slice(x, theta=0.0).synapses["0.weight"], [[1, 0], [-1, 0]])


@pytest.mark.parametrize("act, x0", [(nn.Tanh, 25.0), (nn.Sigmoid, 40.0)])
def test_saturated_activation_passes_with_the_sign_of_its_derivative(act, x0: float) -> None:
    """SPEC: s = sign(C)·sign(Δy)·sign(f'(x))·sign(Δx). tanh' and σ' are > 0 for every finite x;
    that act(x) rounds to 1.0 (so 1 - tanh² or σ(1-σ) evaluates to 0 in float64) does not make
    the derivative zero. Here Δy = 1 - mean > 0 and Δx > 0: the unit pushed the criterion up and
    must pass C on (only ReLU-like activations are documented as blocking)."""
    model = nn.Sequential(nn.Linear(1, 1), act(), nn.Linear(1, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[2].bias.zero_()
    data = [torch.tensor([[-1.0], [0.0], [1.0]], dtype=torch.float64)]
    x = torch.tensor([[x0]], dtype=torch.float64)
    assert model[1](model[0](x)).item() == 1.0  # saturated in float64
    ref = ReferenceSlicer(model, theta=0.2)
    ref.profile(data)
    r = ref.slice(x, target=0)
    eng = _engine().Slicer(model, theta=0.2)
    eng.profile(data)
    e = eng.slice(x, target=0)
    for s in (r, e):
        np.testing.assert_array_equal(np.asarray(s.neurons["_1"]), [1])
        np.testing.assert_array_equal(np.asarray(s.neurons["_0"]), [1])
        np.testing.assert_array_equal(np.asarray(s.synapses["0.weight"]), [[1]])


@pytest.mark.parametrize("fn", ["gelu", "gelu_tanh", "silu", "elu", "leaky", "sigmoid", "tanh"])
def test_reference_activation_derivative_signs_match_autograd(fn: str) -> None:
    x = torch.linspace(-6, 6, 2401, dtype=torch.float64)
    x = x[(x - (-0.7518)).abs() > 1e-2]  # away from GELU's root
    x = x[(x - (-1.2785)).abs() > 1e-2]  # and SiLU's
    x = x[x.abs() > 1e-9].requires_grad_(True)
    mod, attrs = {
        "gelu": (nn.GELU(), {"fn": "gelu", "approximate": "none"}),
        "gelu_tanh": (nn.GELU(approximate="tanh"), {"fn": "gelu", "approximate": "tanh"}),
        "silu": (nn.SiLU(), {"fn": "silu"}),
        "elu": (nn.ELU(0.7), {"fn": "elu", "alpha": 0.7}),
        "leaky": (nn.LeakyReLU(0.1), {"fn": "leaky", "slope": 0.1}),
        "sigmoid": (nn.Sigmoid(), {"fn": "sigmoid"}),
        "tanh": (nn.Tanh(), {"fn": "tanh"}),
    }[fn]
    (grad,) = torch.autograd.grad(mod(x).sum(), x)
    ours = act_derivative_sign(attrs, x.detach().numpy())
    np.testing.assert_array_equal(ours, np.sign(grad.numpy()).astype(np.int64))
    if fn in ("gelu", "silu"):
        assert (ours < 0).any()  # the negative-slope region exists and is seen


# --- UnsupportedOperation -------------------------------------------------------------------------


class _Unsupported(nn.Module):
    """Linear -> an operator SPEC has no rule for -> Linear; ``inner`` holds the operator so the
    message can name the module it sits in."""

    def __init__(self, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fc0 = nn.Linear(4, 4)
        self.fc1 = nn.Linear(4, 4)
        self.block = nn.Sequential(_Inner(op))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.block((self.fc0(x), self.fc1(x))))


class _Inner(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, ab):
        return self.op(*ab)


@pytest.mark.parametrize(
    "op, node_name",
    [
        (lambda a, b: torch.cumsum(a, 1), "cumsum"),
        (lambda a, b: torch.sort(a, 1)[0], "sort"),
        (lambda a, b: torch.maximum(a, b), "maximum"),
        (lambda a, b: torch.einsum("bi,bi->bi", a, b), "einsum"),
    ],
)
def test_unsupported_operation_names_the_node_and_its_module(op, node_name: str) -> None:
    """docs/spec.md §4: any other operator raises UnsupportedOperation naming the node and the
    module
    it sits in (its qualified name)."""
    model = _Unsupported(op).double().eval()
    with pytest.raises(ReferenceUnsupported, match=node_name) as info:
        ReferenceSlicer(model)
    assert "block.0" in str(info.value), info.value
    nnslicer = _engine()
    with pytest.raises(nnslicer.UnsupportedOperation) as info:
        nnslicer.Slicer(model, theta=0.2)
    message = str(info.value)
    assert node_name in message and "block.0" in message, message


# --- intermediate-neuron criteria: errors and zero downstream synapses ----------------------------


@pytest.mark.parametrize("module", ["blk.0", "blk"])
def test_criterion_module_used_twice_is_an_error_listing_its_nodes(module: str) -> None:
    """docs/spec.md §6: a module name that produces several nodes is an error that lists them (here
    a
    leaf module, and the non-leaf module holding it, both called twice)."""
    model = Net(
        lambda s, x: s.blk(s.fc1(s.blk(s.fc0(x)))),
        (5,),
        fc0=nn.Linear(5, 4),
        fc1=nn.Linear(4, 4),
        blk=nn.Sequential(nn.Tanh()),
    )
    randomize_(model, 3)
    batches, x = make_data((5,), 3, 3)
    ref = ReferenceSlicer(model)
    ref.profile(batches)
    assert {"blk_0", "blk_1"} <= {n.name for n in ref.order}
    with pytest.raises(ValueError, match="blk_1"):
        ref.slice(x, target=ReferenceNeurons(module, 0))
    nnslicer = _engine()
    eng = nnslicer.Slicer(model)
    eng.profile(batches)
    with pytest.raises(Exception) as info:
        eng.slice(x, target=nnslicer.Neurons(module, 0))
    message = str(info.value)
    assert "blk_0" in message and "blk_1" in message, message


@pytest.mark.parametrize("name", ["criterion_conv_module_name", "criterion_branch_node_name"])
def test_criterion_synapses_downstream_are_present_and_zero(name: str) -> None:
    """docs/spec.md §6: synapses downstream of the criterion node are present in ``synapses``, all
    0;
    so are the points of nodes that are not on a path from the input to it."""
    model, _ = build_case(name)
    batches, x = case_data(name)
    node = CASES[name].criterion
    ref = ReferenceSlicer(model, theta=0.0)
    ref.profile(batches)
    target = ReferenceNeurons(node, 0)
    r = ref.slice(x, target=target)
    eng = _engine().Slicer(model, theta=0.0)
    eng.profile(batches)
    e = eng.slice(x, target=engine_target(target))
    crit = ref.resolve_node(node)
    ancestors = _ancestors(ref, crit)
    for s in (r, e):
        assert np.abs(np.asarray(s.synapses["fc.weight"])).sum() == 0
        for n in ref.order:
            if n.name not in ancestors and n.op != "internal":
                assert np.abs(np.asarray(s.neurons[n.name])).sum() == 0, n.name
        assert np.asarray(s.neurons[crit]).sum() > 0


def _ancestors(ref: ReferenceSlicer, name: str) -> set[str]:
    """The node and every point node it reads, transitively."""
    rules = {n.name: n.rule for n in ref.order}
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        rule = rules[n]
        if rule is not None:
            todo += list(rule.inputs)
            if rule.kind == "move" and rule.attrs["op"] == "composite":
                todo += ref.expansions[rule.attrs["root"]].outputs[rule.attrs["path"]][0]
    return seen


def test_case_table_covers_every_operator_row() -> None:
    """A guard against silently dropping a row of SPEC's table from this file."""
    v1 = {
        "conv2d",
        "conv1d",
        "linear",
        "add",
        "sub",
        "avgpool2d",
        "adaptive_avgpool2d",
        "mean",
        "batchnorm2d",
        "batchnorm1d",
        "mul",
        "act",
        "maxpool2d",
        "maxpool1d",
        "adaptive_maxpool2d",
        "move",
    }
    v2 = {
        "product_",  # a * b (incl. broadcast, in place)
        "product_se_block",  # squeeze-excitation
        "product_gated_mlp_chunk",
        "matmul_",  # a @ b, matmul, bmm
        "matmul_single_head_attention_layernorm",
        "param_matmul_",  # x @ W, F.linear(x, W), W @ x
        "sum_",
        "maxdim_",  # max / amax over dims
        "norm_layernorm",
        "norm_layernorm2d_permute",
        "norm_groupnorm",
        "norm_instancenorm",
        "norm_rmsnorm",
        "norm_F_layer_norm",
        "norm_F_group_norm",
        "norm_F_instance_norm",
        "norm_F_rms_norm",
        "softmax_inside_",
        "move_pad_",
        "move_chunk",
        "move_split",
        "move_unbind",
        "move_narrow",
        "move_stack",
        "move_expand",
        "move_repeat",
        "move_roll",
        "move_flip",
        "move_slice",
        "move_index",
        "move_drop_path",
        "move_dropout2d",
        "const_",  # zeros_like, ones_like, full_like, new_zeros, arange, buffers
        "embedding_",
        "lstm_",
        "gru_",
        "rnn_",
        "mha_",
        "sdpa_",
        "criterion_",  # intermediate-neuron criteria
    }
    beyond = {  # docs/spec.md §8 "Beyond the operator table"
        "elem_exp",
        "elem_log",
        "elem_log1p",
        "elem_expm1",
        "elem_sqrt",
        "elem_erf",
        "elem_F_logsigmoid",
        "elem_logsigmoid_module",
        "elem_F_softsign",
        "elem_softsign_module",
        "elem_rsqrt",
        "elem_reciprocal",
        "elem_abs",
        "elem_square",
        "elem_pow_",
        "elem_torch_pow",
        "elem_clamp",
        "elem_clip",
        "elem_clamp_min",
        "elem_clamp_max",
        "elem_prelu",
        "elem_F_prelu",
        "elem_mish_module",
        "elem_F_mish",
        "elem_softplus_module",
        "elem_F_softplus",
        "elem_tanhshrink_module",
        "elem_softshrink_module",
        "elem_hardshrink_module",
        "mindim_",  # min / amin over dims
        "move_masked_fill",
        "move_where",
        "move_gather",
        "move_index_select",
        "move_take_along_dim",
        "move_upsample_nearest",
        "move_interpolate_nearest",
        "move_pixel_shuffle",
        "move_pixel_unshuffle",
        "move_channel_shuffle",
        "move_tensor_unfold",
        "move_F_unfold",
        "move_unfold_module",
        "move_pad_reflect",
        "move_pad_replicate",
        "move_pad_reflection",
        "move_pad_replication",
        "interp_linear",
        "interp_bilinear",
        "interp_bicubic",
        "interp_area",
        "interp_upsample",
        "bag_sum",
        "bag_mean",
        "bag_max",
        "bag_sum_per_sample_weights",
        "param_view_",  # weights used through a view
        "lstm_initial_state",
        "gru_initial_state",
        "rnn_initial_state",
        "lstm_proj_size",
        "mha_bool_attn_mask",
        "mha_float_attn_mask",
        "mha_key_padding_mask",
        "mha_add_bias_kv",
        "mha_add_zero_attn",
        "sdpa_bool_mask",
        "sdpa_float_mask",
        "sdpa_is_causal",
        "sdpa_enable_gqa",
        "encoder_layer_post_norm",
        "encoder_layer_norm_first",
    }
    for p in v1 | v2 | beyond:
        assert any(n.startswith(p) for n in CASES), p
    for mode in ("linear", "bilinear", "bicubic", "area"):  # align_corners both ways, size/scale
        names = [n for n in CASES if n.startswith(f"interp_{mode}")]
        assert any("size" in n for n in names) and any("scale" in n for n in names), mode
    assert any("align_corners" in n for n in CASES if n.startswith("interp_"))
    assert all(c.spec == 3 for n, c in CASES.items() if any(n.startswith(p) for p in beyond))
    assert any(c.vocab for c in CASES.values())  # integer token inputs
    assert sum(c.criterion is not None for c in CASES.values()) >= 5
