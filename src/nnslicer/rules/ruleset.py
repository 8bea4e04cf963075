"""Which rule slices which node: an ordered list of (matcher, rule) pairs, bound per Slicer.

A matcher looks at one traced node — its operator, its module (if any, with its qualified
name) and which of its operands depend on the model input — and says whether its rule applies.
The first matching entry wins, so ``rules.with_rule(...)`` puts a new entry in front of the
others. ``default_rules()`` is the set every Slicer starts from; ``register_rule`` extends it
for the whole process (the shortcut for custom layers), ``Slicer(model, rules=...)`` gives one
slicer its own set.

The rule set also answers the three questions tracing asks (``trace.graph.GraphHooks``): which
modules are traced as leaves, which nodes produce a value that carries no Δ (shape queries,
``zeros_like``…) and which return several tensors.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from torch import nn

from .base import Rule, unsupported

if TYPE_CHECKING:
    from ..trace.graph import OperatorGraph, OpNode


class Matcher:
    """Says whether a rule applies to a node. Combine with ``|`` (either) and ``&`` (both)."""

    def __call__(self, node: OpNode) -> bool:
        raise NotImplementedError

    def leaf(self, module: nn.Module, qualname: str) -> bool | None:
        """Whether this matcher claims ``module`` as one node (its forward is not traced
        into); None when it says nothing about modules (a condition on operands)."""
        return None

    def __or__(self, other: Matcher) -> Matcher:
        return _Any((self, other))

    def __and__(self, other: Matcher) -> Matcher:
        return _All((self, other))


class _Any(Matcher):
    def __init__(self, parts: Iterable[Matcher]):
        self.parts = tuple(parts)

    def __call__(self, node: OpNode) -> bool:
        return any(p(node) for p in self.parts)

    def leaf(self, module: nn.Module, qualname: str) -> bool | None:
        return any(p.leaf(module, qualname) for p in self.parts)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.parts))


class _All(Matcher):
    def __init__(self, parts: Iterable[Matcher]):
        self.parts = tuple(parts)

    def __call__(self, node: OpNode) -> bool:
        return all(p(node) for p in self.parts)

    def leaf(self, module: nn.Module, qualname: str) -> bool | None:
        # a leaf only if every part with an opinion accepts it (a class and a name pattern)
        opinions = [p.leaf(module, qualname) for p in self.parts]
        said = [o for o in opinions if o is not None]
        return bool(said) and all(said)

    def __repr__(self) -> str:
        return " & ".join(map(repr, self.parts))


def keeps_forward(module: nn.Module, types: tuple[type, ...]) -> bool:
    """``module`` is one of ``types``, or a subclass that keeps that class's forward (a subclass
    with its own forward computes something else and is traced into)."""
    kind = type(module)
    if kind in types:
        return True
    return any(parent in types and kind.forward is parent.forward for parent in kind.__mro__[1:])


class ModuleMatcher(Matcher):
    """Calls of modules of these classes (traced as leaves)."""

    def __init__(self, types: tuple[type, ...]):
        self.types = types

    def __call__(self, node: OpNode) -> bool:
        return node.op == "call_module" and keeps_forward(node.module, self.types)

    def leaf(self, module: nn.Module, qualname: str) -> bool:
        return keeps_forward(module, self.types)

    def __repr__(self) -> str:
        return "modules(" + ", ".join(t.__name__ for t in self.types) + ")"


class ModuleNamed(Matcher):
    """Calls of the modules whose qualified names match a glob pattern (``layer*.se``)."""

    def __init__(self, pattern: str):
        self.pattern = pattern

    def __call__(self, node: OpNode) -> bool:
        return node.op == "call_module" and fnmatch.fnmatchcase(node.module_path or "",
                                                                self.pattern)

    def leaf(self, module: nn.Module, qualname: str) -> bool:
        return fnmatch.fnmatchcase(qualname, self.pattern)

    def __repr__(self) -> str:
        return f"module_named({self.pattern!r})"


class FunctionMatcher(Matcher):
    """Calls of these functions (by identity)."""

    def __init__(self, functions: tuple[Any, ...]):
        self.functions = functions

    def __call__(self, node: OpNode) -> bool:
        return node.op == "call_function" and any(node.target is f for f in self.functions)

    def __repr__(self) -> str:
        return "functions(" + ", ".join(getattr(f, "__name__", repr(f))
                                        for f in self.functions) + ")"


class FunctionNamed(Matcher):
    """Calls of functions with one of these ``__name__`` s, wherever they are defined (for
    functions a model defines itself, such as a ``torch.fx.wrap``-ped ``stochastic_depth``)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def __call__(self, node: OpNode) -> bool:
        return node.op == "call_function" and getattr(node.target, "__name__", None) in self.names

    def __repr__(self) -> str:
        return f"functions_named{self.names}"


class MethodMatcher(Matcher):
    """Tensor method calls by name (``x.view(...)``)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def __call__(self, node: OpNode) -> bool:
        return node.op == "call_method" and node.target in self.names

    def __repr__(self) -> str:
        return f"methods{self.names}"


class Where(Matcher):
    """Any condition on the node, e.g. how many of its operands depend on the input."""

    def __init__(self, condition: Callable[[OpNode], bool], label: str = "where"):
        self.condition = condition
        self.label = label

    def __call__(self, node: OpNode) -> bool:
        return bool(self.condition(node))

    def __repr__(self) -> str:
        return self.label


def ops(*targets: Any) -> Matcher:
    """One matcher for module classes, functions and method names (strings) together."""
    types = tuple(t for t in targets if isinstance(t, type) and issubclass(t, nn.Module))
    names = tuple(t for t in targets if isinstance(t, str))
    functions = tuple(t for t in targets if t not in types and not isinstance(t, str))
    parts: list[Matcher] = []
    if types:
        parts.append(ModuleMatcher(types))
    if functions:
        parts.append(FunctionMatcher(functions))
    if names:
        parts.append(MethodMatcher(names))
    return parts[0] if len(parts) == 1 else _Any(parts)


class LiveOperands(Matcher):
    """Nodes with exactly ``count`` input-dependent tensors among their first two operands."""

    def __init__(self, count: int):
        self.count = count

    def __call__(self, node: OpNode) -> bool:
        return node.live_operand_count(2) == self.count

    def __repr__(self) -> str:
        return f"live_operands({self.count})"


def live_operands(count: int) -> Matcher:
    return LiveOperands(count)


class AttributeOf(Matcher):
    """Attribute reads ``x.<name>`` (``x.shape``, ``x.T``) for these names."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def __call__(self, node: OpNode) -> bool:
        return (node.op == "call_function" and node.target is getattr
                and node.fx_node.args[1] in self.names)

    def __repr__(self) -> str:
        return f"attributes{self.names}"


class ItemOf(Matcher):
    """One tensor of an operator that returns several (``trace.graph.select_output``): of
    these functions / method names, item ``index`` (any item when None)."""

    def __init__(self, functions: tuple[Any, ...], index: int | None = None):
        self.functions = functions
        self.index = index

    def __call__(self, node: OpNode) -> bool:
        from ..trace.graph import select_output

        if node.target is not select_output:
            return False
        fn, index = node.fx_node.args[:2]
        return any(fn is f or fn == f for f in self.functions) and (
            self.index is None or index == self.index)

    def __repr__(self) -> str:
        return f"items{self.functions}[{self.index}]"


Entry = tuple[Matcher, Rule]


def _flatten(matchers: Iterable[Matcher]) -> Iterator[Matcher]:
    for m in matchers:
        if isinstance(m, _Any | _All):
            yield from _flatten(m.parts)
        else:
            yield m


class RuleSet:
    """An ordered list of (matcher, rule): the first entry whose matcher accepts a node slices
    it. Immutable: ``with_rule`` returns a new set."""

    def __init__(self, entries: Iterable[Entry] = ()):
        self.entries: tuple[Entry, ...] = tuple(entries)
        for matcher, rule in self.entries:
            if not isinstance(matcher, Matcher) or not isinstance(rule, Rule):
                raise TypeError(
                    f"a rule set entry is (Matcher, Rule), got ({type(matcher).__name__}, "
                    f"{type(rule).__name__}); build matchers with nnslicer.rules.ops(...)"
                )

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Built-in entries travel as references (family, position): their matchers hold
        # functions such as F.max_pool2d that only compare equal to themselves in the process
        # that unpickles them. Entries a user added travel as they are.
        from .default import entry_reference

        return _rebuild, ([entry_reference(e) or e for e in self.entries],)

    def __len__(self) -> int:
        return len(self.entries)

    def with_rule(self, target: Any, rule: Rule) -> RuleSet:
        """A copy where ``target`` (a Matcher, module class, function or method name) is sliced
        by ``rule``, ahead of every other entry."""
        if not isinstance(rule, Rule):
            raise TypeError(
                f"rule must be an nnslicer.Rule instance, got {type(rule).__name__}"
            )
        matcher = target if isinstance(target, Matcher) else ops(target)
        return RuleSet(((matcher, rule), *self.entries))

    def rule_for(self, node: OpNode) -> Rule | None:
        for matcher, rule in self.entries:
            if matcher(node):
                return rule
        return None

    # --- what tracing asks (trace.graph.GraphHooks) ------------------------------------------
    def is_leaf(self, module: nn.Module, qualname: str) -> bool:
        return any(matcher.leaf(module, qualname) for matcher, _ in self.entries)

    def claims_function(self, name: str) -> bool:
        """Whether an entry names a function by ``__name__`` (FunctionNamed): such a function,
        if a model ``torch.fx.wrap``-s it, stays one node."""
        return any(name in getattr(m, "names", ()) and isinstance(m, FunctionNamed)
                   for m in _flatten(e[0] for e in self.entries))

    def is_constant(self, node: OpNode) -> bool:
        rule = self.rule_for(node)
        return rule is not None and rule.constant

    def several_outputs(self, node: OpNode) -> bool:
        rule = self.rule_for(node)
        return rule is not None and rule.several_outputs(node)

    # --- binding ------------------------------------------------------------------------------
    def bind(self, graph: OperatorGraph) -> None:
        """Give every live node of ``graph`` its rule; UnsupportedOperation names the first node
        without one (its module and operator), or whose configuration its rule refuses."""
        for node in graph.nodes:
            if not node.live or node.op == "placeholder":
                continue
            rule = self.rule_for(node)
            if rule is None:
                raise unsupported(node, "no slicing rule is registered for this operator")
            rule.check(node, graph)
            node.rule = rule


def _rebuild(items: list[Any]) -> RuleSet:
    from .default import resolve_entry

    return RuleSet(resolve_entry(item) for item in items)
