"""Attack results kept on disk: one safetensors file per (attack, model, inputs, seed).

An interrupted evaluation resumes with the attacks it had not finished; a file that cannot
be read, or that belongs to other settings, is recomputed with an :class:`AttackCacheWarning`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...hashing import tensor_digest, text_digest
from ...io_utils import atomic_write_bytes
from . import attacks
from .attacks import AttackResult, Bounds, attack_config, check_attack_inputs

__all__ = ["AttackCacheWarning", "run_attacks_cached"]

# Bump when an attack's behaviour changes, so that old cache files are not reused.
_CACHE_FORMAT = 2


class AttackCacheWarning(UserWarning):
    """A cached attack result could not be read and is being recomputed."""


def _data_hash(x: Tensor, y: Tensor, bounds: Bounds, seed: int) -> str:
    return tensor_digest(
        [("x", x.detach().to(torch.float32)), ("y", y.detach().to(torch.int64))],
        header={"bounds": list(bounds), "seed": seed},
    )


def _config_json(name: str) -> str:
    return json.dumps({"format": _CACHE_FORMAT, **attack_config(name)}, sort_keys=True)


def _cache_path(cache_dir: Path, name: str, fingerprint: str, data_hash: str) -> Path:
    key = text_digest(fingerprint, _config_json(name))
    return cache_dir / f"{name}-{key[:16]}-{data_hash[:16]}.safetensors"


def _save(path: Path, result: AttackResult, meta: dict[str, Any]) -> None:
    from safetensors.torch import save

    tensors = {
        "x_adv": result.x_adv.detach().to("cpu").contiguous(),
        "success": result.success.detach().to("cpu").contiguous(),
    }
    payload = save(tensors, metadata={"nnslicer": json.dumps({**meta, "seconds": result.seconds})})
    atomic_write_bytes(path, payload)


def _load(path: Path, meta: dict[str, Any], x: Tensor) -> AttackResult:
    """Read a cache file, checking it belongs to ``meta``; raises on any mismatch."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        stored = json.loads((fh.metadata() or {})["nnslicer"])
        x_adv = fh.get_tensor("x_adv")
        success = fh.get_tensor("success")
    for key, value in meta.items():
        if stored.get(key) != value:
            raise ValueError(f"metadata {key!r} is {stored.get(key)!r}, expected {value!r}")
    if tuple(x_adv.shape) != tuple(x.shape) or tuple(success.shape) != (len(x),):
        raise ValueError(f"tensor shapes {tuple(x_adv.shape)}, {tuple(success.shape)} do not fit")
    if success.dtype != torch.bool:
        raise ValueError(f"success has dtype {success.dtype}, expected torch.bool")
    return AttackResult(
        name=meta["attack"],
        x_adv=x_adv.to(x.device),
        success=success.to(x.device),
        seconds=float(stored["seconds"]),
    )


def run_attacks_cached(
    names: Iterable[str],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cache_dir: Path,
    *,
    model_fingerprint: str,
    bounds: Bounds = (0.0, 1.0),
    seed: int = 0,
    progress: bool = True,
) -> dict[str, AttackResult]:
    """Run each attack once per (attack, model fingerprint, data), reusing cached results.

    Results live in ``cache_dir`` as one safetensors file per attack, written atomically,
    so an interrupted run resumes with the attacks it had not finished. An unreadable or
    mismatching cache file triggers an :class:`AttackCacheWarning` and is recomputed.
    """
    names = list(dict.fromkeys(names))
    for name in names:
        attack_config(name)
    bounds = (float(bounds[0]), float(bounds[1]))
    check_attack_inputs(x, y, bounds)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    data_hash = _data_hash(x, y, bounds, seed)

    results: dict[str, AttackResult] = {}
    bar = tqdm(names, desc="attacks", unit="attack", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        path = _cache_path(cache_dir, name, model_fingerprint, data_hash)
        meta = {
            "attack": name,
            "model_fingerprint": model_fingerprint,
            "data_hash": data_hash,
            "config": _config_json(name),
        }
        if path.exists():
            try:
                results[name] = _load(path, meta, x)
                continue
            except Exception as err:  # whatever is wrong with the file, recompute it
                warnings.warn(
                    f"attack cache file {path} is unusable ({type(err).__name__}: {err}); "
                    "recomputing",
                    AttackCacheWarning,
                    stacklevel=2,
                )
        # looked up on the module at call time, so tests can count the attacks that run
        result = attacks.run_attack(name, model, x, y, bounds=bounds, seed=seed,
                                    progress=progress)
        _save(path, result, meta)
        results[name] = result
    return results
