"""The suite's registry: one :class:`Entry` per architecture, filled by the ``@entry`` decorator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Entry:
    """One architecture of the suite.

    ``build`` makes the model with random weights (call :meth:`model` for a seeded, eval-mode
    one). ``input_shape`` is one sample's shape (no batch dim). ``vocab`` is None for float
    inputs, else the inputs are int64 tokens in ``[0, vocab)``. ``origin`` names the zoo and file
    the code mirrors, ``features`` the SPEC v2 operators and tracing hazards it exercises.
    ``unused`` lists prefixes of parameter names that the eval-mode forward never reads (auxiliary
    heads used only in training), which therefore cannot have synapses.
    """

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    origin: str
    features: tuple[str, ...]
    num_classes: int = 10
    vocab: int | None = None
    distribution: str = "uniform"
    unused: tuple[str, ...] = ()

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.vocab is None else torch.int64

    def model(self, seed: int = 0) -> nn.Module:
        """The model with weights drawn from ``torch.manual_seed(seed)``, in eval mode."""
        torch.manual_seed(seed)
        return self.build().eval()

    def inputs(self, n: int, seed: int) -> Tensor:
        """``n`` random samples: uniform [0, 1) or standard normal floats, or uniform tokens."""
        g = torch.Generator().manual_seed(seed)
        shape = (n, *self.input_shape)
        if self.vocab is not None:
            return torch.randint(0, self.vocab, shape, generator=g)
        if self.distribution == "normal":
            return torch.randn(shape, generator=g)
        return torch.rand(shape, generator=g)


SUITE: dict[str, Entry] = {}


def entry(name: str, shape: tuple[int, ...], origin: str, features: tuple[str, ...], *,
          num_classes: int = 10, vocab: int | None = None, distribution: str = "uniform",
          unused: tuple[str, ...] = ()) -> Callable[[Callable[[], nn.Module]],
                                                     Callable[[], nn.Module]]:
    """Register the decorated zero-argument builder as suite entry ``name``."""

    def register(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in SUITE:
            raise ValueError(f"suite entry {name!r} registered twice")
        if not (build.__doc__ or "").strip():
            raise ValueError(f"suite entry {name!r}: its builder needs a docstring (origin)")
        SUITE[name] = Entry(name, build, tuple(shape), origin, tuple(features), num_classes,
                            vocab, distribution, tuple(unused))
        return build

    return register
