"""Selection policies: which edges of an output point are kept, and with which sign.

A rule computes the edges' terms; the policy decides. NNSlicer (docs/spec.md §4) and EffectivePath
(docs/spec.md §7) share every rule and differ only here.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ..errors import InputError
from . import kernels

DEAD_OUTPUT_RATIO = 1e-3


class SelectionPolicy(ABC):
    """Decides kept edges and their signs; all methods work on whole batches of points."""

    name: str
    #: "dataset"/"class" references need a profile; "zero" compares with raw values.
    uses_profile: bool = True

    @abstractmethod
    def weighted_sum(self, terms: Tensor, c_sign: Tensor, y_raw: Tensor) -> Tensor:
        """terms (N, K) float64, c_sign (N,), y_raw (N,) raw output values -> signs (N, K) int64."""

    @abstractmethod
    def pointwise(self, c: Tensor, dy: Tensor, gain: Tensor, dx: Tensor) -> Tensor:
        """One-to-one edge with a local gain (BN scale, f'(x), 1 for max) -> signs (int64, the
        shape of C). ``c`` is C itself (only its sign counts, so rules need not take it); the
        gain (float64, or int8 for 0/1 masks) broadcasts to it."""

    def movement(self, c_sign: Tensor) -> Tensor:
        """Data movement passes the sign of C unchanged."""
        return c_sign

    def two_terms(self, c: Tensor, ta: Tensor, tb: Tensor, y_raw: Tensor
                  ) -> tuple[Tensor, Tensor]:
        """Points with two terms each (tensor ± tensor, x · y): C, the terms ta, tb (float64)
        and the raw output, all the same shape -> the signs of each term (int64, that shape;
        0 where C = 0). The weighted-sum selection of the live points."""
        flat_c = c.reshape(-1)
        idx = flat_c.nonzero().squeeze(1)
        terms = torch.stack([ta.reshape(-1)[idx], tb.reshape(-1)[idx]], dim=1)
        signs = self.weighted_sum(terms, flat_c[idx].sign(),
                                  y_raw.reshape(-1)[idx].to(torch.float64))
        out = []
        for column in (0, 1):
            full = torch.zeros(flat_c.shape, dtype=torch.int64, device=c.device)
            full[idx] = signs[:, column]
            out.append(full.view(c.shape))
        return out[0], out[1]


def _broadcast_block(gain: Tensor, shape: torch.Size) -> int | None:
    """How many consecutive points share one gain entry when ``gain`` broadcasts to ``shape``
    and its non-1 dims are one block of ``shape``'s (a scalar, a per-channel or a full gain);
    None otherwise (the caller then expands it)."""
    if gain.dim() > len(shape) or not gain.is_contiguous():
        return None
    dims = [1] * (len(shape) - gain.dim()) + list(gain.shape)
    kept = [i for i, n in enumerate(dims) if n != 1]
    if not kept:
        return 1
    lo, hi = kept[0], kept[-1] + 1
    if any(dims[i] != shape[i] for i in range(lo, hi)):
        return None
    return math.prod(shape[hi:])


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def theta_keep(terms: Tensor, theta: float) -> tuple[Tensor, Tensor]:
    """θ-selection (docs/spec.md §4). Returns (kept mask (N, K), T (N,))."""
    mag = terms.abs()
    total = terms.sum(dim=1)
    if terms.shape[1] == 0:
        return torch.zeros_like(terms, dtype=torch.bool), total
    moved = total.abs() > DEAD_OUTPUT_RATIO * mag.amax(dim=1)
    nonzero = terms != 0
    if theta == 0:
        return nonzero & moved[:, None], total
    if terms.shape[1] == 2:  # tensor ± tensor: the same rule without a sort
        larger = torch.where(mag[:, 0] >= mag[:, 1], terms[:, 0], terms[:, 1])
        first_enough = (total - larger).abs() < theta * total.abs()
        cut = torch.where(first_enough, mag.amax(dim=1), mag.amin(dim=1))
        return (mag >= cut[:, None]) & nonzero & moved[:, None], total
    # stable: equal magnitudes keep edge order (docs/spec.md §4, step 2)
    sorted_mag, order = mag.sort(dim=1, descending=True, stable=True)
    partial = terms.gather(1, order).cumsum(dim=1)
    reached = (total[:, None] - partial).abs() < theta * total.abs()[:, None]
    # k* is the first k that reaches; rounding can leave none reached, then keep all.
    any_reached = reached.any(dim=1)
    k_star = torch.where(any_reached, reached.to(torch.int8).argmax(dim=1), terms.shape[1] - 1)
    cut = sorted_mag.gather(1, k_star[:, None])
    kept = (mag >= cut) & nonzero & moved[:, None]
    return kept, total


class NNSlicerPolicy(SelectionPolicy):
    """The paper's rule: θ-selection on relative terms, signed contributions."""

    name = "nnslicer"
    kernel_mode = 0  # backward.kernels.MODE_NNSLICER

    def __init__(self, theta: float = 0.2):
        if not _is_number(theta) or not 0.0 <= theta < 1.0:
            raise InputError(f"theta must be a number in [0, 1), got {theta!r}; the default is "
                             "0.2")
        self.theta = float(theta)

    def weighted_sum(self, terms: Tensor, c_sign: Tensor, y_raw: Tensor) -> Tensor:
        if (kernels.ENABLED and terms.device.type == "cpu" and terms.shape[1] == 2
                and terms.dtype == torch.float64 and c_sign.dtype == torch.int64):
            # tensor ± tensor: one call instead of ~15 torch ops (which cost more even for a few
            # points)
            return torch.from_numpy(kernels.two_term_signs(
                terms.contiguous().numpy(), c_sign.contiguous().numpy(), self.theta))
        if (kernels.ENABLED and terms.device.type == "cpu" and terms.shape[1] > 2
                and 0 < self.theta):  # the same selection, without sorting every row
            kept = torch.from_numpy(kernels.keep_rows(terms.double().numpy(), self.theta))
            total = terms.sum(dim=1)
        else:
            kept, total = theta_keep(terms, self.theta)
        signs = (c_sign * total.sign().to(c_sign.dtype))[:, None] * terms.sign().to(c_sign.dtype)
        return signs * kept

    def two_terms(self, c: Tensor, ta: Tensor, tb: Tensor, y_raw: Tensor
                  ) -> tuple[Tensor, Tensor]:
        if (kernels.ENABLED and c.device.type == "cpu" and c.dtype == torch.int64
                and ta.dtype == tb.dtype == torch.float64):  # one pass, no gathers
            flat = [t.contiguous().view(-1).numpy() for t in (c, ta, tb)]
            sa, sb = kernels.two_operand_signs(*flat, self.theta)
            return torch.from_numpy(sa).view(c.shape), torch.from_numpy(sb).view(c.shape)
        return super().two_terms(c, ta, tb, y_raw)

    def pointwise(self, c: Tensor, dy: Tensor, gain: Tensor, dx: Tensor) -> Tensor:
        inner = _broadcast_block(gain, c.shape)
        if (kernels.ENABLED and c.device.type == "cpu" and c.dtype == torch.int64
                and c.shape == dy.shape == dx.shape and inner is not None
                and dy.dtype == dx.dtype == torch.float64
                and gain.dtype in (torch.float64, torch.int8)):
            flat = [t.reshape(-1).numpy() for t in (c, dy, gain, dx)]
            return torch.from_numpy(kernels.sign_product(*flat, inner)).view(c.shape)
        s = dy.sign() * gain.sign() * dx.sign()
        return c.sign() * s.to(torch.int64)


class EffectivePathPolicy(SelectionPolicy):
    """EffectivePath (Qiu et al. 2019) at synapse granularity: unsigned membership counts."""

    name = "effective-path"
    kernel_mode = 1  # backward.kernels.MODE_EFFECTIVE_PATH
    uses_profile = False

    def __init__(self, theta: float = 0.5):
        if not _is_number(theta) or not 0.0 < theta <= 1.0:
            raise InputError(f"EffectivePath theta must be a number in (0, 1], got {theta!r}; "
                             "the default is 0.5")
        self.theta = float(theta)

    def weighted_sum(self, terms: Tensor, c_sign: Tensor, y_raw: Tensor) -> Tensor:
        flip = torch.where(y_raw < 0, -1.0, 1.0).to(terms.dtype)
        cand = (terms * flip[:, None]).clamp_min(0)
        sorted_c, order = cand.sort(dim=1, descending=True)
        running = sorted_c.cumsum(dim=1)
        goal = self.theta * running[:, -1:]
        # fewest largest candidates whose running sum reaches the goal
        reached = running >= goal
        k_star = reached.to(torch.int8).argmax(dim=1)
        cut = sorted_c.gather(1, k_star[:, None])
        kept = (cand >= cut) & (cand > 0)
        return (c_sign != 0).to(torch.int64)[:, None] * kept

    def pointwise(self, c: Tensor, dy: Tensor, gain: Tensor, dx: Tensor) -> Tensor:
        return (c != 0).to(torch.int64) * (gain != 0).to(torch.int64)

    def movement(self, c_sign: Tensor) -> Tensor:
        return (c_sign != 0).to(torch.int64)
