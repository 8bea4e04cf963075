"""Which rule slices which operator. Only what is listed here is sliced; the rest is refused.

Keys are module classes (``call_module``), functions (``call_function``) and method names
(``call_method``). ``register_rule`` adds or replaces an entry, e.g. for a custom layer.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .activation import ActivationRule
from .base import Rule, unsupported
from .max_pool import MaxPoolRule
from .movement import IdentityMovementRule, RearrangeRule
from .scale import BatchNormRule, ConstantScaleRule
from .weighted_sum import (
    AdaptiveAvgPoolRule,
    AddSubRule,
    AvgPoolRule,
    ConvRule,
    LinearRule,
    MeanRule,
)

if TYPE_CHECKING:
    from ..trace.graph import OperatorGraph, OpNode

_conv, _linear = ConvRule(), LinearRule()
_add, _sub = AddSubRule(subtract=False), AddSubRule(subtract=True)
_avg, _adaptive_avg, _mean = AvgPoolRule(), AdaptiveAvgPoolRule(), MeanRule()
_bn, _scale = BatchNormRule(), ConstantScaleRule()
_act, _max = ActivationRule(), MaxPoolRule()
_same, _rearrange = IdentityMovementRule(), RearrangeRule()
_output_only = IdentityMovementRule(output_only=True)

_ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.Hardtanh, nn.Softplus, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.SELU, nn.CELU, nn.PReLU,
)
_ACTIVATION_FUNCTIONS = (
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, torch.sigmoid,
    F.sigmoid, torch.tanh, F.tanh, F.hardtanh, F.softplus, F.mish, F.hardswish,
    F.hardsigmoid, F.selu, F.celu,
)

MODULE_RULES: dict[type, Rule] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Linear: _linear,
    nn.AvgPool1d: _avg, nn.AvgPool2d: _avg,
    nn.AdaptiveAvgPool1d: _adaptive_avg, nn.AdaptiveAvgPool2d: _adaptive_avg,
    nn.BatchNorm1d: _bn, nn.BatchNorm2d: _bn,
    nn.MaxPool1d: _max, nn.MaxPool2d: _max,
    nn.AdaptiveMaxPool1d: _max, nn.AdaptiveMaxPool2d: _max,
    nn.Dropout: _same, nn.Dropout1d: _same, nn.Dropout2d: _same, nn.Identity: _same,
    nn.Flatten: _rearrange, nn.Unflatten: _rearrange,
    nn.Softmax: _output_only, nn.LogSoftmax: _output_only,
    **dict.fromkeys(_ACTIVATION_MODULES, _act),
}

FUNCTION_RULES: dict[Any, Rule] = {
    F.conv1d: _conv, F.conv2d: _conv, F.linear: _linear,
    operator.add: _add, torch.add: _add, operator.sub: _sub, torch.sub: _sub,
    F.avg_pool1d: _avg, F.avg_pool2d: _avg,
    F.adaptive_avg_pool1d: _adaptive_avg, F.adaptive_avg_pool2d: _adaptive_avg,
    torch.mean: _mean,
    operator.mul: _scale, torch.mul: _scale, operator.truediv: _scale, torch.div: _scale,
    operator.neg: _scale, torch.neg: _scale,
    F.max_pool1d: _max, F.max_pool2d: _max,
    F.adaptive_max_pool1d: _max, F.adaptive_max_pool2d: _max,
    F.dropout: _same,
    torch.flatten: _rearrange, torch.reshape: _rearrange, torch.permute: _rearrange,
    torch.transpose: _rearrange, torch.squeeze: _rearrange, torch.unsqueeze: _rearrange,
    torch.cat: _rearrange, torch.concat: _rearrange, operator.getitem: _rearrange,
    F.softmax: _output_only, F.log_softmax: _output_only, torch.softmax: _output_only,
    torch.log_softmax: _output_only,
    **dict.fromkeys(_ACTIVATION_FUNCTIONS, _act),
}

METHOD_RULES: dict[str, Rule] = {
    "add": _add, "sub": _sub, "mean": _mean, "mul": _scale, "div": _scale, "neg": _scale,
    "flatten": _rearrange, "view": _rearrange, "reshape": _rearrange, "permute": _rearrange,
    "transpose": _rearrange, "squeeze": _rearrange, "unsqueeze": _rearrange,
    "contiguous": _same, "softmax": _output_only, "log_softmax": _output_only,
    "relu": _act, "sigmoid": _act, "tanh": _act,
}

# Operators on shapes, not on values: their results are integers and carry no contribution.
META_FUNCTIONS = {getattr, len}
META_METHODS = {"size", "dim"}


def register_rule(target: type | Any | str, rule: Rule) -> None:
    """Slice ``target`` (module class, function or method name) with ``rule``.

    A registered module class is traced as a leaf, so its forward is not looked into.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an nnslicer.rules.Rule instance, got {type(rule).__name__}")
    if isinstance(target, str):
        METHOD_RULES[target] = rule
    elif isinstance(target, type) and issubclass(target, nn.Module):
        MODULE_RULES[target] = rule
    else:
        FUNCTION_RULES[target] = rule


def leaf_module_types() -> tuple[type, ...]:
    return tuple(MODULE_RULES)


def _module_rule(module: nn.Module) -> Rule | None:
    kind = type(module)
    if kind in MODULE_RULES:
        return MODULE_RULES[kind]
    # a subclass counts only if it keeps its parent's forward
    for parent in kind.__mro__[1:]:
        if parent in MODULE_RULES and kind.forward is parent.forward:
            return MODULE_RULES[parent]
    return None


def is_meta(node: OpNode) -> bool:
    """Shape queries (x.size(0), x.shape, len(x)) produce integers, not activations."""
    if node.op == "call_method":
        return node.target in META_METHODS
    return node.op == "call_function" and node.target in META_FUNCTIONS


def resolve_rule(node: OpNode, graph: OperatorGraph) -> Rule:
    """The rule that slices ``node``, checked against its configuration."""
    if node.op == "call_module":
        rule = _module_rule(node.module)
    elif node.op == "call_function":
        rule = FUNCTION_RULES.get(node.target)
    elif node.op == "call_method":
        rule = METHOD_RULES.get(node.target)
    else:
        rule = None
    if rule is None:
        raise unsupported(node, "no slicing rule is registered for this operator")
    rule.check(node, graph)
    return rule
