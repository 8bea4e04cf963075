"""The 17 adversarial attacks of NNSlicer's detection experiment, as named configurations.

``run_attack(name, model, x, y)`` attacks a batch of inputs and reports, per input,
whether the attack succeeded -- judged by us from the model's own predictions.
:mod:`.attack_cache` runs several attacks and keeps each result on disk.

Gradient and decision attacks come from foolbox 3 (JSMA from ART); ADef, single-pixel and
local-search are our own (:mod:`.custom_attacks`). Both libraries are imported lazily: they
are the optional ``nnslicer[attacks]`` dependencies.

Conventions: models are classifiers returning logits, inputs lie in ``bounds``, and the
L-infinity budgets of FGSM/PGD are fractions of the input range (``8/255`` of ``hi - lo``).
Only inputs the model classifies correctly are attacked; the others are returned as they
are and never count as a success.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nnslicer.apps.detect import custom_attacks

__all__ = [
    "ATTACK_NAMES",
    "FAST_ATTACKS",
    "AttackResult",
    "attack_config",
    "check_attack_inputs",
    "run_attack",
]

Bounds = tuple[float, float]
# (model, x, y, bounds) -> adversarial candidates for one batch x
Runner = Callable[[nn.Module, Tensor, Tensor, Bounds], Tensor]

@dataclass
class AttackResult:
    """What one attack produced on a batch of inputs."""

    name: str
    x_adv: Tensor  # (N, ...) adversarial inputs, always inside the bounds
    success: Tensor  # (N,) bool: clean input correct and adversarial input misclassified
    seconds: float


# --------------------------------------------------------------------------------------
# Library wrappers
# --------------------------------------------------------------------------------------


def _foolbox() -> Any:
    try:
        with warnings.catch_warnings():
            # foolbox 3.3.4 imports gaussian_filter from the deprecated scipy.ndimage.filters
            warnings.simplefilter("ignore", DeprecationWarning)
            import foolbox
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("this attack needs foolbox: pip install 'nnslicer[attacks]'") from err
    return foolbox


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _fmodel(model: nn.Module, bounds: Bounds) -> Any:
    return _foolbox().PyTorchModel(model, bounds=bounds, device=_device_of(model))


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat([model(part).argmax(1) for part in torch.split(x, batch_size)])


def _fixed_eps(make: Callable[[Any], Any], eps: float) -> Runner:
    def run(model: nn.Module, x: Tensor, y: Tensor, bounds: Bounds) -> Tensor:
        fb = _foolbox()
        _, clipped, _ = make(fb.attacks)(_fmodel(model, bounds), x, y, epsilons=eps * _span(bounds))
        return clipped

    return run


def _minimization(make: Callable[[Any], Any]) -> Runner:
    def run(model: nn.Module, x: Tensor, y: Tensor, bounds: Bounds) -> Tensor:
        fb = _foolbox()
        _, clipped, _ = make(fb.attacks)(_fmodel(model, bounds), x, y, epsilons=None)
        return clipped

    return run


def _with_init(make_init: Callable[[Any], Any], make: Callable[[Any], Any]) -> Runner:
    """A foolbox attack that refines a starting adversarial found by an init attack.

    foolbox raises (Boundary) or asserts (Pointwise) when the init attack fails on any
    input, so the init attack runs here and only its successes are refined.
    """

    def run(model: nn.Module, x: Tensor, y: Tensor, bounds: Bounds) -> Tensor:
        fb = _foolbox()
        fmodel = _fmodel(model, bounds)
        criterion = fb.criteria.Misclassification(y)
        starts = make_init(fb.attacks).run(fmodel, x, criterion)
        starts = starts.clamp(*bounds)
        ok = _predict(model, starts) != y
        out = starts.clone()
        if bool(ok.any()):
            out[ok] = make(fb.attacks).run(
                fmodel, x[ok], fb.criteria.Misclassification(y[ok]), starting_points=starts[ok]
            )
        return out

    return run


def _spatial(stages: tuple[tuple[float, float], ...], steps: int) -> Runner:
    """foolbox's rotation + translation grid search, escalated over growing ranges.

    foolbox returns the first grid point that fools the model, and its grid starts at the
    most extreme corner (-max_rotation, -max_translation, -max_translation); searching
    small ranges first keeps the transformation no larger than needed.
    """

    def run(model: nn.Module, x: Tensor, y: Tensor, bounds: Bounds) -> Tensor:
        fb = _foolbox()
        fmodel = _fmodel(model, bounds)
        out = x.clone()
        todo = torch.arange(len(x), device=x.device)
        for max_rotation, max_translation in stages:
            attack = fb.attacks.SpatialAttack(
                max_rotation=max_rotation,
                max_translation=max_translation,
                num_rotations=steps,
                num_translations=steps,
            )
            with warnings.catch_warnings():
                # foolbox 3.3.4 calls torch.meshgrid without indexing=
                warnings.filterwarnings("ignore", message="torch.meshgrid")
                adv, _, _ = attack(fmodel, x[todo], y[todo])  # its __call__ has no epsilons
            out[todo] = adv
            todo = todo[_predict(model, adv) == y[todo]]
            if len(todo) == 0:
                break
        return out

    return run


def _jsma(theta: float, gamma: float) -> Runner:
    def run(model: nn.Module, x: Tensor, y: Tensor, bounds: Bounds) -> Tensor:
        try:
            from art.attacks.evasion import SaliencyMapMethod
            from art.estimators.classification import PyTorchClassifier
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ImportError("jsma needs ART: pip install 'nnslicer[attacks]'") from err
        device = _device_of(model)
        with torch.no_grad():
            logits = model(x)
        classifier = PyTorchClassifier(
            model=model,
            loss=nn.CrossEntropyLoss(),
            input_shape=tuple(x.shape[1:]),
            nb_classes=logits.shape[1],
            clip_values=bounds,
            device_type="gpu" if device.type == "cuda" else "cpu",
        )
        # ART's JSMA is targeted (random targets when none are given); aim for the
        # runner-up class, the cheapest way out of the true class for an untargeted attack.
        others = logits.clone()
        others[torch.arange(len(y)), y] = -math.inf
        targets = others.argmax(1).cpu().numpy()
        attack = SaliencyMapMethod(
            classifier, theta=theta * _span(bounds), gamma=gamma, batch_size=len(x), verbose=False
        )
        adv = attack.generate(x=x.detach().cpu().numpy().astype(np.float32), y=targets)
        return torch.from_numpy(adv).to(x.device, x.dtype)

    return run


def _custom(fn: Callable[..., Tensor], **settings: Any) -> Runner:
    def run(model: nn.Module, x: Tensor, y: Tensor, bounds: Bounds) -> Tensor:
        return fn(model, x, y, bounds=bounds, **settings)

    return run


def _span(bounds: Bounds) -> float:
    return float(bounds[1] - bounds[0])


@dataclass(frozen=True)
class _Spec:
    runner: Runner
    config: Mapping[str, Any]  # the settings, recorded in cache keys and metadata
    linf_eps: float | None = None  # fraction of the input range; enforced on the output
    images_only: bool = False


def _fgsm(eps: float) -> _Spec:
    return _Spec(
        _fixed_eps(lambda a: a.LinfFastGradientAttack(random_start=False), eps),
        {"attack": "foolbox.LinfFastGradientAttack", "eps": eps},
        linf_eps=eps,
    )


def _pgd(eps: float) -> _Spec:
    # Madry et al.'s step of 2.5 * eps / steps, so that 10 steps can cross the whole ball
    # (foolbox's default rel_stepsize of 0.033 would move at most 0.33 eps in 10 steps).
    settings = {"steps": 10, "rel_stepsize": 0.25, "random_start": True}
    return _Spec(
        _fixed_eps(lambda a: a.LinfPGD(**settings), eps),
        {"attack": "foolbox.LinfPGD", "eps": eps, **settings},
        linf_eps=eps,
    )


def _deepfool(norm: str) -> _Spec:
    settings = {"steps": 50, "candidates": 10, "overshoot": 0.02}
    cls = f"{norm}DeepFoolAttack"
    return _Spec(
        _minimization(lambda a: getattr(a, cls)(**settings)),
        {"attack": f"foolbox.{cls}", **settings},
    )


def _cw() -> _Spec:
    # Far fewer steps than the paper's 9 x 10000: with a larger Adam step and a higher
    # initial constant this still fools LeNet-class models on every input in seconds.
    settings = {
        "binary_search_steps": 5,
        "steps": 100,
        "stepsize": 0.05,
        "confidence": 0.0,
        "initial_const": 0.01,
    }
    return _Spec(
        _minimization(lambda a: a.L2CarliniWagnerAttack(**settings)),
        {"attack": "foolbox.L2CarliniWagnerAttack", **settings},
    )


def _boundary(steps: int, init_steps: int) -> _Spec:
    return _Spec(
        _with_init(
            lambda a: a.LinearSearchBlendedUniformNoiseAttack(steps=init_steps),
            lambda a: a.BoundaryAttack(steps=steps),
        ),
        {"attack": "foolbox.BoundaryAttack", "steps": steps, "init_steps": init_steps},
    )


def _pointwise(init_steps: int) -> _Spec:
    return _Spec(
        _with_init(
            lambda a: a.SaltAndPepperNoiseAttack(steps=init_steps),
            lambda a: a.PointwiseAttack(l2_binary_search=True),
        ),
        {"attack": "foolbox.PointwiseAttack", "init": "salt-and-pepper", "init_steps": init_steps},
    )


def _own(fn: Callable[..., Tensor], **settings: Any) -> _Spec:
    return _Spec(
        _custom(fn, **settings), {"attack": f"nnslicer.{fn.__name__}", **settings}, images_only=True
    )


# (max rotation in degrees, max translation in pixels), tried in this order
_SPATIAL = {"stages": ((10.0, 1.0), (20.0, 2.0), (30.0, 3.0)), "steps": 5}
_JSMA = {"theta": 1.0, "gamma": 0.145}  # Papernot et al.: saturate pixels, change <= 14.5 %

_SPECS: dict[str, _Spec] = {
    "fgsm-2": _fgsm(2 / 255),
    "fgsm-4": _fgsm(4 / 255),
    "fgsm-8": _fgsm(8 / 255),
    "deepfool-l2": _deepfool("L2"),
    "deepfool-linf": _deepfool("Linf"),
    "jsma": _Spec(
        _jsma(**_JSMA), {"attack": "art.SaliencyMapMethod", "target": "runner-up", **_JSMA}
    ),
    "pgd-2": _pgd(2 / 255),
    "pgd-4": _pgd(4 / 255),
    "pgd-8": _pgd(8 / 255),
    "cw-l2": _cw(),
    "adef": _own(custom_attacks.adef, max_iter=50, smooth=1.0, overshoot=0.1, candidates=10),
    "single-pixel": _own(custom_attacks.single_pixel, max_pixels=1000),
    "local-search": _own(custom_attacks.local_search, p=None, r=1.5, d=5, t=5, rounds=150),
    "boundary": _boundary(steps=1000, init_steps=50),
    "spatial": _Spec(
        _spatial(**_SPATIAL), {"attack": "foolbox.SpatialAttack", **_SPATIAL}, images_only=True
    ),
    "pointwise": _pointwise(init_steps=200),
    "gaussian-blur": _Spec(
        _minimization(lambda a: a.GaussianBlurAttack(steps=200)),
        {"attack": "foolbox.GaussianBlurAttack", "steps": 200},
        images_only=True,
    ),
}

ATTACK_NAMES: tuple[str, ...] = tuple(_SPECS)
# Seconds for ~100 digits on LeNet-5 (single-pixel needs ~70 ms per digit, ADef ~10 ms).
FAST_ATTACKS: tuple[str, ...] = ("fgsm-8", "pgd-8", "deepfool-linf", "adef")


# --------------------------------------------------------------------------------------
# Running attacks
# --------------------------------------------------------------------------------------


def attack_config(name: str) -> Mapping[str, Any]:
    """The settings of attack ``name`` (what its cache entries and metadata record)."""
    return _spec(name).config


def _spec(name: str) -> _Spec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown attack {name!r}; known attacks: {', '.join(ATTACK_NAMES)}"
        ) from None


def check_attack_inputs(x: Tensor, y: Tensor, bounds: Bounds) -> None:
    """ValueError unless ``bounds`` are ordered, ``y`` fits ``x`` and ``x`` lies in them."""
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"bounds must satisfy lo < hi, got {bounds}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"expected labels of shape ({len(x)},), got {tuple(y.shape)}")
    if x.numel() == 0:
        return
    x_min, x_max = float(x.min()), float(x.max())
    if math.isnan(x_min) or math.isnan(x_max) or x_min < lo or x_max > hi:
        raise ValueError(
            f"inputs lie in [{x_min:.6g}, {x_max:.6g}] but the attack bounds are [{lo:g}, {hi:g}]"
        )


@contextlib.contextmanager
def _attack_context(model: nn.Module, seed: int) -> Iterator[None]:
    """Seed all RNGs the attacks use, without disturbing the caller's RNG state.

    The model's parameters are frozen meanwhile: foolbox and ART differentiate with
    ``loss.backward()``, which would otherwise accumulate ``.grad`` on the model.
    """
    params = list(model.parameters())
    grad_flags = [p.requires_grad for p in params]
    training = model.training
    np_state = np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            for p in params:
                p.requires_grad_(False)
            yield
    finally:
        np.random.set_state(np_state)
        for p, flag in zip(params, grad_flags, strict=True):
            p.requires_grad_(flag)
        model.train(training)


def run_attack(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    bounds: Bounds = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> AttackResult:
    """Run attack ``name`` on ``x`` (labels ``y``) in batches; success judged by ``model``."""
    spec = _spec(name)
    bounds = (float(bounds[0]), float(bounds[1]))
    check_attack_inputs(x, y, bounds)
    if spec.images_only and x.ndim != 4:
        shape = tuple(x.shape)
        raise ValueError(f"attack {name!r} needs images of shape (N, C, H, W), got {shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    start = time.perf_counter()
    device = _device_of(model)
    out_device = x.device
    x = x.detach().to(device=device, dtype=torch.float32).contiguous()
    y = y.detach().to(device=device, dtype=torch.long)
    x_adv = x.clone()

    with _attack_context(model, seed):
        correct = _predict(model, x, batch_size) == y
        todo = correct.nonzero().squeeze(1)
        # torch.split of an empty tensor still yields one (empty) chunk
        batches = torch.split(todo, batch_size) if len(todo) else ()
        for idx in tqdm(batches, desc=name, unit="batch", disable=not progress, leave=False):
            xb = x[idx]
            adv = spec.runner(model, xb, y[idx], bounds).detach().to(device, torch.float32)
            adv = torch.where(torch.isfinite(adv), adv, xb).reshape(xb.shape)
            if spec.linf_eps is not None:
                eps = spec.linf_eps * _span(bounds)
                adv = xb + (adv - xb).clamp(-eps, eps)
            x_adv[idx] = adv.clamp(*bounds)
        success = correct & (_predict(model, x_adv, batch_size) != y)

    return AttackResult(
        name=name,
        x_adv=x_adv.to(out_device),
        success=success.to(out_device),
        seconds=time.perf_counter() - start,
    )
