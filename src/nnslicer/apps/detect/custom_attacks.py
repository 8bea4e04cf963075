"""Attacks that neither foolbox 3 nor ART provide, written from their papers.

* :func:`adef` -- ADef (Alaifari, Alberti & Gauksson, ICLR 2019): an iterative,
  DeepFool-like attack on a smooth deformation vector field instead of on the pixels.
* :func:`single_pixel` and :func:`local_search` -- the black-box attacks of
  Narodytska & Kasiviswanathan, "Simple Black-Box Adversarial Perturbations for Deep
  Networks" (CVPR-W 2017). They only query the model's outputs, never its gradients.

All three take a batch of images ``x`` of shape ``(N, C, H, W)`` inside ``bounds`` with
labels ``y`` and return adversarial candidates of the same shape inside ``bounds``;
inputs on which an attack fails are returned as the attack left them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["adef", "local_search", "single_pixel"]


def _check_images(x: Tensor, y: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"expected labels of shape ({x.shape[0]},), got {tuple(y.shape)}")


@torch.no_grad()
def _logits(model: nn.Module, x: Tensor, chunk_size: int) -> Tensor:
    """Model outputs for ``x``, evaluated in chunks of at most ``chunk_size`` inputs."""
    return torch.cat([model(part) for part in torch.split(x, chunk_size)]) if len(x) else x


# --------------------------------------------------------------------------------------
# ADef
# --------------------------------------------------------------------------------------


def _gaussian_smooth(field: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian filter (std ``sigma`` pixels) over the last two dimensions."""
    if sigma <= 0:
        return field
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=field.dtype, device=field.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    shape = field.shape
    f = field.reshape(-1, 1, shape[-2], shape[-1])
    f = F.conv2d(F.pad(f, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    f = F.conv2d(F.pad(f, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return f.reshape(shape)


def _deform(x: Tensor, tau: Tensor) -> Tensor:
    """``x_tau(p) = x(p + tau(p))`` by bilinear interpolation; ``tau`` is (N, 2, H, W) in pixels.

    ``tau[:, 0]`` moves along the width (x) axis and ``tau[:, 1]`` along the height (y) axis.
    """
    _, _, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    # align_corners=True maps pixel index 0 to -1 and index (size - 1) to +1.
    gx = 2 * (cols + tau[:, 0]) / max(w - 1, 1) - 1
    gy = 2 * (rows + tau[:, 1]) / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def adef(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    max_iter: int = 50,
    smooth: float = 1.0,
    overshoot: float = 0.1,
    candidates: int = 10,
) -> Tensor:
    """ADef: deform ``x`` along a smooth vector field until the label is no longer ``y``.

    Each iteration linearises ``g_k(tau) = F_k(x_tau) - F_y(x_tau)`` in the vector field
    ``tau`` for the ``candidates - 1`` most likely other classes ``k``. The derivative is
    ``D g_k = sum_c dg_k/dx_tau * grad(x_tau)`` (chain rule through the deformation, image
    gradient by central differences). The step is restricted to the smoothed direction
    ``S D g_k`` (``S`` a Gaussian filter of std ``smooth`` pixels) and scaled so that the
    linearised ``g_k`` reaches 0, times ``1 + overshoot``; the class whose accumulated
    field has the smallest L2 norm wins. The field is always applied to the original ``x``.
    """
    _check_images(x, y)
    lo, hi = bounds
    x0 = x.detach()
    n = len(x0)
    tau = torch.zeros(n, 2, *x0.shape[2:], dtype=x0.dtype, device=x0.device)
    x_adv = x0.clone()
    rows = torch.arange(n, device=x0.device)

    logits = _logits(model, x0, 256)
    num_classes = logits.shape[1]
    k_count = min(candidates, num_classes) - 1
    if k_count < 1:
        return x_adv
    others = logits.clone()
    others[rows, y] = -math.inf
    # Candidate classes are fixed from the clean prediction, as in DeepFool.
    cand = others.topk(k_count, dim=1).indices
    active = logits.argmax(1) == y

    for it in range(max_iter + 1):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xd = _deform(x0[idx], tau[idx]).clamp(lo, hi).requires_grad_(True)
        out = model(xd)
        x_adv[idx] = xd.detach()
        fooled = out.argmax(1) != y[idx]
        active[idx[fooled]] = False
        if it == max_iter or bool(fooled.all()):
            break

        keep = ~fooled
        sub = torch.arange(len(idx), device=x0.device)[keep]
        grad_y_img, grad_x_img = torch.gradient(xd.detach(), dim=(2, 3))
        f_true = out[sub, y[idx[sub]]]
        best_norm = torch.full((len(sub),), math.inf, dtype=x0.dtype, device=x0.device)
        best_tau = tau[idx[sub]].clone()
        for j in range(k_count):
            target = cand[idx[sub], j]
            g = out[sub, target] - f_true
            (dg,) = torch.autograd.grad(g.sum(), xd, retain_graph=j + 1 < k_count)
            dg = dg[sub]
            field = torch.stack(
                [(dg * grad_x_img[sub]).sum(1), (dg * grad_y_img[sub]).sum(1)], dim=1
            )
            smoothed = _gaussian_smooth(field, smooth)
            denom = (field * smoothed).flatten(1).sum(1)
            valid = denom > 1e-12
            scale = torch.where(valid, -g.detach() / denom.clamp_min(1e-12), 0.0)
            new_tau = tau[idx[sub]] + (1 + overshoot) * scale.view(-1, 1, 1, 1) * smoothed
            norm = torch.where(valid, new_tau.flatten(1).norm(dim=1), math.inf)
            better = norm < best_norm
            best_norm = torch.where(better, norm, best_norm)
            best_tau[better] = new_tau[better]
        stuck = torch.isinf(best_norm)
        # A zero derivative for every candidate class means no direction helps: give up.
        active[idx[sub[stuck]]] = False
        tau[idx[sub]] = best_tau
    return x_adv.clamp(lo, hi)


# --------------------------------------------------------------------------------------
# Narodytska & Kasiviswanathan: single-pixel and local-search attacks
# --------------------------------------------------------------------------------------


def single_pixel(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    max_pixels: int = 1000,
    chunk_size: int = 1024,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Set one pixel (all channels) to ``lo`` or ``hi`` at random locations until fooled.

    Up to ``max_pixels`` locations per image are tried in a random order, each with both
    extreme values; the first candidate (in that order) that changes the label wins.
    Candidates of all images still being attacked are evaluated together in chunks.
    """
    _check_images(x, y)
    lo, hi = bounds
    n, c, h, w = x.shape
    n_loc = h * w
    budget = min(max_pixels, n_loc)
    x_flat = x.detach().reshape(n, c, n_loc)
    order = torch.stack([torch.randperm(n_loc, generator=generator)[:budget] for _ in range(n)])
    order = order.to(x.device)
    values = torch.tensor([lo, hi], dtype=x.dtype, device=x.device)
    x_adv = x.detach().clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    start = 0
    while start < budget:
        act = (~found).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        per_chunk = max(1, chunk_size // (2 * len(act)))
        locs = order[act, start : start + per_chunk]  # (A, m)
        a, m = locs.shape
        cand = x_flat[act].unsqueeze(1).unsqueeze(1).repeat(1, m, 2, 1, 1)  # (A, m, 2, C, L)
        index = locs.view(a, m, 1, 1, 1).expand(a, m, 2, c, 1)
        src = values.view(1, 1, 2, 1, 1).expand(a, m, 2, c, 1)
        cand.scatter_(4, index, src)
        cand = cand.reshape(a, m * 2, c, h, w)
        pred = _logits(model, cand.reshape(-1, c, h, w), chunk_size).argmax(1).view(a, m * 2)
        hit = pred != y[act].unsqueeze(1)
        has = hit.any(1)
        first = hit.int().argmax(1)
        winners = has.nonzero().squeeze(1)
        x_adv[act[winners]] = cand[winners, first[winners]]
        found[act[winners]] = True
        start += per_chunk
    return x_adv


def _cyclic(z: Tensor, lower: float, upper: float) -> Tensor:
    """The paper's CYC: values leaving ``[lower, upper]`` wrap around to the other end."""
    width = upper - lower
    return torch.where(z < lower, z + width, torch.where(z > upper, z - width, z))


def local_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    p: float | None = None,
    r: float = 1.5,
    d: int = 5,
    t: int = 5,
    rounds: int = 150,
    init_fraction: float = 0.1,
    chunk_size: int = 2048,
    generator: torch.Generator | None = None,
) -> Tensor:
    """LocSearchAdv: greedy local search over a few pixels, using only output scores.

    Pixel values are mapped to ``[-1/2, 1/2]``. Each round probes every candidate location
    (all channels at once) and measures the true class's probability; the ``t`` locations
    with the lowest probability are perturbed for real by the paper's ``CYC(r * value)``,
    which wraps values leaving the range around to its other end. The next round's
    candidates are the ``(2d+1) x (2d+1)`` squares around them; the first round uses a
    random ``init_fraction`` of the locations. The search stops once the label changes or
    after ``rounds`` rounds.

    ``p=None`` (default) probes each location with the very perturbation ``CYC(r * value)``
    it would get. The paper probes with ``p * sign(value)`` instead (pass a float ``p``,
    e.g. 10 as in foolbox 2); that probe can point the opposite way from the real update
    when pixels sit at the bounds (``r * (-1/2)`` wraps to ``+1/4``), which is the common
    case for MNIST-like images, and the search then makes no progress. Paper-style probes
    (queries only) may lie outside the bounds; the returned images never do.
    """
    _check_images(x, y)
    lo, hi = bounds
    mid, span = (lo + hi) / 2, hi - lo
    n, c, h, w = x.shape
    n_loc = h * w
    cur = ((x.detach() - mid) / span).reshape(n, c, n_loc).clone()
    n_init = max(1, round(init_fraction * n_loc))
    cand = torch.zeros(n, n_loc, dtype=torch.bool, device=x.device)
    for i in range(n):
        cand[i, torch.randperm(n_loc, generator=generator)[:n_init].to(x.device)] = True
    done = _logits(model, x.detach(), chunk_size).argmax(1) != y

    def to_input(v: Tensor) -> Tensor:
        return (mid + v * span).reshape(-1, c, h, w)

    for _ in range(rounds):
        act = (~done).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        pairs = cand[act].nonzero()  # (M, 2): (position in act, location)
        if len(pairs) == 0:
            break
        owner, loc = pairs[:, 0], pairs[:, 1]
        probes = cur[act[owner]].clone()  # (M, C, L)
        picked = probes[torch.arange(len(loc)), :, loc]
        if p is None:
            probes[torch.arange(len(loc)), :, loc] = _cyclic(r * picked, -0.5, 0.5)
        else:
            sign = torch.where(picked >= 0, 1.0, -1.0).to(probes.dtype)
            probes[torch.arange(len(loc)), :, loc] = p * sign
        with torch.no_grad():
            probs = torch.cat(
                [
                    F.softmax(model(part), dim=1)
                    for part in torch.split(to_input(probes), chunk_size)
                ]
            )
        score = probs[torch.arange(len(loc)), y[act[owner]]]
        dense = torch.full((len(act), n_loc), math.inf, dtype=score.dtype, device=x.device)
        dense[owner, loc] = score
        k = min(t, n_loc)
        best_score, best_loc = dense.topk(k, dim=1, largest=False)
        chosen = torch.zeros(len(act), n_loc, dtype=torch.bool, device=x.device)
        rows = torch.arange(len(act), device=x.device).unsqueeze(1).expand(-1, k)
        chosen[rows[torch.isfinite(best_score)], best_loc[torch.isfinite(best_score)]] = True

        sub = cur[act]
        mask = chosen.unsqueeze(1).expand_as(sub)
        sub = torch.where(mask, _cyclic(r * sub, -0.5, 0.5), sub)
        cur[act] = sub
        pred = _logits(model, to_input(sub), chunk_size).argmax(1)
        done[act] = pred != y[act]
        # Next candidates: the squares of half-width d around this round's chosen pixels.
        grown = F.max_pool2d(chosen.view(-1, 1, h, w).float(), 2 * d + 1, stride=1, padding=d)
        cand[act] = grown.view(len(act), n_loc) > 0
    return (mid + cur * span).reshape(x.shape).clamp(lo, hi)
