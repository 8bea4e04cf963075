"""The rule set every Slicer starts from, and ``register_rule`` to extend it.

Each operator family declares its (matcher, rule) entries next to its rules (``ENTRIES`` at the
end of each file); this module only puts the families in order. Constants come first: a shape
query or an index never needs a rule of its own.
"""

from __future__ import annotations

from typing import Any

from . import (
    activation,
    constant,
    embedding,
    movement,
    normalization,
    product,
    scale,
    selection,
    weighted_sum,
)
from .base import Rule
from .ruleset import Entry, Matcher, RuleSet, ops

_FAMILIES = (constant, embedding, weighted_sum, product, scale, normalization, activation,
             selection, movement)

#: rules added with register_rule, newest first; they take precedence over the families
_REGISTERED: list[Entry] = []


def default_rules() -> RuleSet:
    """The rules of docs/spec.md §4, after those added with :func:`register_rule`."""
    entries = list(_REGISTERED)
    for family in _FAMILIES:
        entries.extend(family.ENTRIES)
    return RuleSet(entries)


def register_rule(target: type | Any | str | Matcher, rule: Rule) -> None:
    """Slice ``target`` — a module class, a function, a method name or a Matcher — with
    ``rule`` in every Slicer made afterwards (ahead of the built-in rules).

    A registered module class is traced as a leaf, so its forward is not looked into. For one
    Slicer only, pass ``rules=nnslicer.default_rules().with_rule(target, rule)`` instead.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be an nnslicer.Rule instance, got {type(rule).__name__}")
    matcher = target if isinstance(target, Matcher) else ops(target)
    _REGISTERED.insert(0, (matcher, rule))


def entry_reference(entry: Entry) -> tuple[str, str, int] | None:
    """("family", module name, index) of a built-in entry, None for any other."""
    for family in _FAMILIES:
        for i, known in enumerate(family.ENTRIES):
            if known is entry:
                return ("family", family.__name__, i)
    return None


def resolve_entry(item: Any) -> Entry:
    """The entry an ``entry_reference`` names in this process (other items as they are)."""
    if isinstance(item, tuple) and len(item) == 3 and item[0] == "family":
        import importlib

        return importlib.import_module(item[1]).ENTRIES[item[2]]
    return item
