"""torch.fx tracing as nnslicer needs it.

* Modules the rule set claims are leaves (one node each); every other module — torch.nn ones
  included — is traced into, so a layer without a rule of its own is sliced through the
  functions its forward calls.
* Composite layers (LSTM, GRU, RNN, MultiheadAttention, scaled_dot_product_attention) are
  expanded while tracing into the operators that have rules (``trace.composite``).
* Optional ``forward`` arguments (``forward(x, mask=None, is_causal=False)``) are fixed to their
  defaults.
* **Concrete shapes.** Given an example input, the tracer also runs every traced operator on two
  real batches (2 and 3 copies of one sample) as it goes. Shape queries (``x.shape``,
  ``x.size(1)``, ``x.dim()``) then return Python integers wherever both runs agree, so Python
  control flow on shapes (``if h != H:``, ``for t in range(x.size(1))``) simply runs; a size that
  differs between the runs depends on the batch size and stays a graph node, so one trace
  serves every batch size. Control flow on tensor *values* is still refused: a slice is defined
  for a fixed graph.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import os
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
import torch.fx as fx
from torch import nn
from torch.fx._symbolic_trace import _assert_is_none, _maybe_revert_all_patches

from ..errors import TraceError
from .layout import example_batches


class TracingHooks(Protocol):
    """What tracing needs to know from the rule set."""

    def is_leaf(self, module: nn.Module, qualname: str) -> bool: ...

    def claims_function(self, name: str) -> bool: ...


class Composites(Protocol):
    """Expansions of composite layers (see ``trace.composite``)."""

    #: functions that stay one node (their own rule slices them), and the modules that
    #: hold them (expansions call them as ``module.function``)
    node_functions: tuple[Callable[..., Any], ...]
    node_modules: tuple[Any, ...]

    def module_expansion(self, module: nn.Module) -> Callable[..., Any] | None: ...

    def function_expansion(self, fn: Any) -> Callable[..., Any] | None: ...


class NeedsConcreteShapes(TraceError):
    """Symbolic tracing met Python control flow (or a composite layer that needs sequence
    lengths); tracing with an example input's concrete shapes may succeed."""


_TORCH_DIR = os.path.dirname(torch.__file__)
_OWN_DIR = os.path.dirname(os.path.dirname(__file__))


def user_location(exc: BaseException | None = None,
                  stack: traceback.StackSummary | None = None) -> str | None:
    """``file:line`` of the innermost frame in the user's code (not torch's, not ours)."""
    frames = stack if stack is not None else traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if not path.startswith((_TORCH_DIR, _OWN_DIR)) and not path.startswith("<"):
            return f"{frame.filename}:{frame.lineno}"
    return None


def location_in_stack_trace(stack_trace: str | None) -> str | None:
    """``file:line`` of the user's code in an fx node's recorded stack trace."""
    if not stack_trace:
        return None
    frames = []
    for line in stack_trace.splitlines():
        line = line.strip()
        if line.startswith('File "') and ", line " in line:
            path = line.split('"')[1]
            lineno = line.split(", line ")[1].split(",")[0]
            if lineno.isdigit():
                frames.append(traceback.FrameSummary(path, int(lineno), ""))
    return user_location(stack=traceback.StackSummary.from_list(frames)) if frames else None


class _NodeProxy(fx.Proxy):
    """A proxy that expands composite functions (``F.scaled_dot_product_attention``) into
    operators with rules, and, in concrete mode, answers shape queries with numbers."""

    @classmethod
    def __torch_function__(cls, orig_method: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        proxies: list[fx.Proxy] = []
        fx.node.map_aggregate((args, kwargs or {}),
                              lambda a: proxies.append(a) if isinstance(a, fx.Proxy) else None)
        if proxies:
            expand = getattr(proxies[0].tracer, "composites", None)
            expand = expand.function_expansion(orig_method) if expand is not None else None
            if expand is not None:
                return expand(*args, **(kwargs or {}))
        return super().__torch_function__(orig_method, types, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        tracer = self.__dict__.get("tracer")
        if isinstance(tracer, ModelTracer) and tracer.concrete and not name.startswith("__"):
            answer = tracer.shape_query(self, name)
            if answer is not NotImplemented:
                return answer
        return super().__getattr__(name)

    def __setitem__(self, key: Any, value: Any) -> None:
        # x[idx] = v on a traced tensor: a node that mutates it (refused when it is live)
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})

    def __len__(self) -> int:
        tracer = self.__dict__.get("tracer")
        if isinstance(tracer, ModelTracer) and tracer.concrete:
            return tracer.concrete_len(self)
        return super().__len__()


class ModelTracer(fx.Tracer):
    """Traces one model for slicing (see the module docstring)."""

    def __init__(self, hooks: TracingHooks, composites: Composites,
                 example: torch.Tensor | None = None):
        super().__init__(autowrap_modules=composites.node_modules,
                         autowrap_functions=composites.node_functions)
        self.hooks = hooks
        self.composites = composites
        self.record_stack_traces = True
        self.concrete = example is not None
        self.worlds = example_batches(example) if example is not None else None
        self.values: dict[fx.Node, tuple[Any, Any]] = {}
        self.module_outputs: dict[str, list[str]] = {}
        self._defaults: dict[str, Any] = {}

    # --- modules --------------------------------------------------------------------------------
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return self.hooks.is_leaf(m, qualname)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        qualname = self.path_of_module(m)
        expand = None if self.hooks.is_leaf(m, qualname) else self.composites.module_expansion(m)
        if expand is not None:
            forward = functools.partial(expand, m)
        out = super().call_module(m, forward, args, kwargs)
        names = self.module_outputs.setdefault(qualname, [])
        fx.node.map_aggregate(out, lambda a: names.append(a.node.name)
                              if isinstance(a, fx.Proxy) else None)
        return out

    # --- proxies and concrete values --------------------------------------------------------
    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _NodeProxy(node, self)

    def create_proxy(self, kind: str, target: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any], name: str | None = None, type_expr: Any = None,
                     proxy_factory_fn: Callable[[fx.Node], fx.Proxy] | None = None) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                     proxy_factory_fn)
        if self.concrete:
            self.values[proxy.node] = tuple(
                self._evaluate(proxy.node, kind, target, args, kwargs, w) for w in (0, 1)
            )
        return proxy

    def _evaluate(self, node: fx.Node, kind: str, target: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any], world: int) -> Any:
        def real(a: Any) -> Any:
            return self.values[a.node][world] if isinstance(a, fx.Proxy) else a

        if kind == "placeholder":
            if node.name in self._defaults:
                return self._defaults[node.name]
            return self.worlds[world]
        if kind == "get_attr":
            value: Any = self.root
            with _maybe_revert_all_patches():  # fx patches Module.__getattr__ while tracing
                for atom in str(target).split("."):
                    value = getattr(value, atom)
            return value
        args = fx.node.map_aggregate(args, real)
        kwargs = fx.node.map_aggregate(kwargs, real)
        with _maybe_revert_all_patches(), torch.no_grad():
            if kind == "call_function":
                return target(*args, **kwargs)
            if kind == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
            if kind == "call_module":
                return self.root.get_submodule(target)(*args, **kwargs)
        raise AssertionError(kind)

    def _pair(self, proxy: fx.Proxy) -> tuple[Any, Any]:
        return self.values[proxy.node]

    def shape_query(self, proxy: fx.Proxy, name: str) -> Any:
        """Numbers for shape queries where both runs agree; a graph node where the number
        depends on the batch size."""
        v0, v1 = self._pair(proxy)
        if not isinstance(v0, torch.Tensor):
            return NotImplemented
        if name == "shape":
            return self._shape(proxy)
        if name == "size":
            return lambda dim=None: self._shape(proxy) if dim is None else self._size(proxy, dim)
        if name in ("dim", "ndimension"):
            return lambda: v0.dim()
        if name in ("numel", "nelement"):
            if v0.numel() == v1.numel():
                return lambda: v0.numel()
            return lambda: self.create_proxy("call_method", name, (proxy,), {})
        a0, a1 = getattr(v0, name, None), getattr(v1, name, None)
        plain = (bool, int, float, str, torch.dtype, torch.device, torch.layout)
        if isinstance(a0, plain) and not callable(a0) and a0 == a1:
            return a0  # dtype, device, is_nested, requires_grad...
        return NotImplemented

    def _size(self, proxy: fx.Proxy, dim: int) -> Any:
        v0, v1 = self._pair(proxy)
        if v0.shape[dim] == v1.shape[dim]:
            return v0.shape[dim]
        return self.create_proxy("call_method", "size", (proxy, dim), {})

    def _shape(self, proxy: fx.Proxy) -> Any:
        v0 = self._pair(proxy)[0]
        dims = tuple(self._size(proxy, d) for d in range(v0.dim()))
        return torch.Size(dims) if all(isinstance(d, int) for d in dims) else dims

    def concrete_len(self, proxy: fx.Proxy) -> int:
        v0, v1 = self._pair(proxy)
        if len(v0) != len(v1):
            raise TraceError("len() of the batch dimension changes with the batch size")
        return len(v0)

    def iter(self, obj: fx.Proxy) -> Iterator[Any]:
        if not self.concrete:
            raise NeedsConcreteShapes("the model iterates over a traced value")
        return iter([obj[i] for i in range(self.concrete_len(obj))])

    def to_bool(self, obj: fx.Proxy) -> bool:
        if not self.concrete:
            raise NeedsConcreteShapes("Python control flow on a traced value")
        v0, v1 = self._pair(obj)
        if isinstance(v0, torch.Tensor) or isinstance(v1, torch.Tensor):
            raise TraceError(
                "Python control flow depends on tensor values (an `if` or `while` on a tensor):"
                " a slice is defined for one fixed graph; compute both branches, or make that "
                "part a leaf module with its own rule"
            )
        if bool(v0) != bool(v1):
            raise TraceError("Python control flow depends on the batch size")
        return bool(v0)

    # --- the root ----------------------------------------------------------------------------
    def trace_model(self, root: nn.Module) -> fx.Graph:
        """Trace ``root.forward(x)``, optional arguments fixed to their defaults."""
        concrete_args = _optional_arguments(root)
        self._defaults = {f"{k}_1": v for k, v in concrete_args.items()}
        self._defaults.update(concrete_args)
        with _traced_factories(), _unwrapped(self.hooks):
            graph = self.trace(root, concrete_args=concrete_args or None)
        _drop_fixed_arguments(graph)
        return graph


#: tensor factories a model may call with a traced size (``torch.zeros(x.size(0), n)``); torch
#: parses their sizes before any proxy could intercept the call
_FACTORIES = ("zeros", "ones", "full", "empty", "rand", "randn", "randint", "arange", "eye",
              "linspace")


@contextlib.contextmanager
def _unwrapped(hooks: TracingHooks) -> Iterator[None]:
    """Functions a model marks with ``torch.fx.wrap`` (to hide shape logic from fx) are traced
    through like any other code, unless a rule claims them by name: with concrete shapes their
    code traces, and their operators have rules."""
    table = fx._symbolic_trace._wrapped_fns_to_patch
    saved = dict(table)
    try:
        for key, frame_globals in list(table.items()):
            own = str(frame_globals.get("__name__", "")).startswith("torch.")  # fx's own
            if not own and not hooks.claims_function(key[1]):
                del table[key]
        yield
    finally:
        table.clear()
        table.update(saved)


@contextlib.contextmanager
def _traced_factories() -> Iterator[None]:
    """While tracing, a factory call with a traced argument becomes a graph node."""
    originals = {name: getattr(torch, name) for name in _FACTORIES}

    def traced(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def factory(*args: Any, **kwargs: Any) -> Any:
            proxies: list[fx.Proxy] = []
            fx.node.map_aggregate((args, kwargs), lambda a: proxies.append(a)
                                  if isinstance(a, fx.Proxy) else None)
            if not proxies:
                return original(*args, **kwargs)
            return proxies[0].tracer.create_proxy("call_function", original, args, kwargs)
        return factory

    try:
        for name, original in originals.items():
            setattr(torch, name, traced(name, original))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch, name, original)


def _optional_arguments(root: nn.Module) -> dict[str, Any]:
    """Every forward parameter after the first, with its default (required ones: an error)."""
    params = list(inspect.signature(root.forward).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional:
        raise TraceError(
            f"{type(root).__name__}.forward takes no input tensor; nnslicer slices models "
            "called as model(x)"
        )
    fixed: dict[str, Any] = {}
    for p in params:
        if p is positional[0] or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise TraceError(
                f"{type(root).__name__}.forward needs the input '{p.name}' besides the first "
                "one; nnslicer slices models with exactly one input tensor: wrap the model so "
                "that forward(x) takes one"
            )
        fixed[p.name] = p.default
    return fixed


def _drop_fixed_arguments(graph: fx.Graph) -> None:
    """Remove the placeholders fx makes for fixed arguments, with the checks on them."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    checks = {_assert_is_none, torch._assert, operator.eq}
    for extra in placeholders[1:]:
        for user in list(extra.users):
            for later in list(user.users):
                if later.target in checks:
                    graph.erase_node(later)
            if user.target in checks and not user.users:
                graph.erase_node(user)
        if not extra.users:
            graph.erase_node(extra)
