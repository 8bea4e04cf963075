"""One tiny hand-built model per operator row of SPEC §4: engine and reference must agree exactly.

Every case is a small model around the operator with a Linear head (so there is a criterion).
For θ ∈ {0, 0.2, 0.5}, reference "dataset" and "class", and every target form of SPEC §6, the
engine's synapse contributions and the point-level contributions of every node must equal the
independent float64 reference (tests/reference/spec_reference.py) entry for entry, per sample and
summed. Also: θ-selection details on hand-computed numbers, and UnsupportedOperation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from reference import ReferenceSlicer, ReferenceUnsupported, theta_select
from reference.random_models import compare_maps, make_data, randomize_, target_forms
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
        **modules: nn.Module,
    ):
        super().__init__()
        for name, m in modules.items():
            setattr(self, name, m)
        self.body = body
        self.post = post
        with torch.no_grad():
            features = body(self.eval(), torch.zeros((2, *in_shape))).shape[-1]
        self.fc = nn.Linear(features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.body(self, x))
        return y if self.post is None else self.post(self, y)


CASES: dict[str, tuple[Callable[[], Net], tuple[int, ...]]] = {}


def case(name: str, in_shape: tuple[int, ...]):
    def deco(fn: Callable[[tuple[int, ...]], Net]) -> Callable[[tuple[int, ...]], Net]:
        assert name not in CASES
        CASES[name] = (lambda: fn(in_shape), in_shape)
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


# --- helpers --------------------------------------------------------------------------------------


def _seed(name: str) -> int:
    return sum(ord(c) * (i + 1) for i, c in enumerate(name)) % 10_000


def build_case(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    factory, shape = CASES[name]
    torch.manual_seed(_seed(name))
    model = factory()
    randomize_(model, _seed(name), zero_fraction=0.1)
    if name in ("act_relu6", "act_F_relu6"):
        with torch.no_grad():
            model.fc0.weight.mul_(5.0)  # reach both sides of ReLU6's bounds
    return model, shape


def _engine():
    import nnslicer

    return nnslicer


def _summed(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.sum(axis=0) for k, v in d.items()}


def check_against_reference(
    model: nn.Module,
    batches: list[Any],
    x: torch.Tensor,
    targets: dict[str, Any],
    thetas=THETAS,
    references=REFERENCES,
    include_input: bool = False,
) -> list[str]:
    """Every (θ, reference, target) combination; per-sample results always, batch-summed
    results for the first and last target form (sum == per-sample sum is a property test)."""
    nnslicer = _engine()
    ref = ReferenceSlicer(model)
    ref.profile(batches)
    names = [n.name for n in ref.order if include_input or n.op != "placeholder"]
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
                    # validate the reference's edge tables against the forward pass once
                    check=theta == thetas[0] and tname == tnames[0],
                )
                modes = (True, False) if tname in (tnames[0], tnames[-1]) else (True,)
                for per_sample in modes:
                    e = eng.slice(x, target=target, reference=reference, per_sample=per_sample)
                    rn = r.neurons if per_sample else _summed(r.neurons)
                    rs = r.synapses if per_sample else _summed(r.synapses)
                    where = (
                        f"theta={theta} reference={reference} target={tname} "
                        f"per_sample={per_sample}"
                    )
                    for what, rmap, emap, keys in (
                        ("synapses", rs, e.synapses, None),
                        ("neurons", rn, e.neurons, names),
                    ):
                        _, _, probs = compare_maps(what, rmap, emap, keys)
                        problems += [f"[{where}] {p}" for p in probs]
    return problems


# --- the per-operator agreement test --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_matches_reference(name: str) -> None:
    model, shape = build_case(name)
    batches, x = make_data(shape, 3, _seed(name))
    problems = check_against_reference(model, batches, x, target_forms(len(x), 3, _seed(name)))
    assert not problems, f"{len(problems)} disagreements, first:\n" + "\n".join(problems[:12])


@pytest.mark.parametrize("name", ["conv2d_stride_padding", "linear_mlp", "move_cat_channels"])
def test_input_node_contributions_match_reference(name: str) -> None:
    """The model input is a node too (SPEC §2 profiles it); its points carry contributions."""
    model, shape = build_case(name)
    batches, x = make_data(shape, 3, _seed(name))
    problems = check_against_reference(
        model, batches, x, {"top1": None}, thetas=(0.0, 0.2), include_input=True
    )
    assert not problems, "\n".join(problems[:12])


@pytest.mark.parametrize("name", ["conv2d_groups", "maxpool2d_after_relu_ties", "batchnorm1d"])
def test_unlabeled_profile_matches_reference(name: str) -> None:
    """Unlabeled profiling data: the class of a profiling sample is the model's prediction."""
    model, shape = build_case(name)
    batches, x = make_data(shape, 3, _seed(name), batch_sizes=(7, 6, 5), labeled=False)
    with torch.no_grad():
        seen = set(torch.cat([model(b) for b in batches]).argmax(1).tolist())
        wanted = set(model(x).argmax(1).tolist())
    references = REFERENCES if wanted <= seen else ("dataset",)
    problems = check_against_reference(
        model, batches, x, {"top1": None, "int": 1}, references=references
    )
    assert not problems, "\n".join(problems[:12])


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


class _Exp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0 = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.exp(self.fc0(x)))


class _MulOfActivations(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.a(x)) * torch.tanh(self.b(x)))


class _LayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0 = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.norm(self.fc0(x)))


class _Matmul(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        h = self.a(x).unsqueeze(2)
        return self.fc(torch.matmul(h, h.transpose(1, 2)).flatten(1))


class _SoftmaxInside(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0 = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.softmax(self.fc0(x), dim=1))


@pytest.mark.parametrize(
    "model_cls, node_name",
    [
        (_Exp, "exp"),
        (_MulOfActivations, "mul"),
        (_LayerNorm, "norm"),
        (_Matmul, "matmul"),
        (_SoftmaxInside, "softmax"),
    ],
)
def test_unsupported_operation_names_the_node(model_cls: type[nn.Module], node_name: str) -> None:
    model = model_cls().double().eval()
    with pytest.raises(ReferenceUnsupported, match=node_name):
        ReferenceSlicer(model)
    nnslicer = _engine()
    with pytest.raises(nnslicer.UnsupportedOperation) as info:
        nnslicer.Slicer(model, theta=0.2)
    message = str(info.value)
    assert node_name in message, message


def test_case_table_covers_every_operator_row() -> None:
    """A guard against silently dropping a row of SPEC's table from this file."""
    prefixes = {
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
    for p in prefixes:
        assert any(n.startswith(p) for n in CASES), p
