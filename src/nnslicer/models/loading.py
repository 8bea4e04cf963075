"""Loading user-defined models (``package.module:factory``) and checkpoints behind one helper."""

from __future__ import annotations

import importlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnslicer.errors import NNSlicerError
from nnslicer.models.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    load_safetensors,
    non_finite_parameters,
    state_dict_mismatch,
)
from nnslicer.storage import describe_file

_SPEC_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# Keys under which training scripts commonly nest the state dict.
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict")


class ModelLoadError(NNSlicerError, ValueError):
    """A user model spec or weights file could not be loaded."""


def load_user_model(spec: str, weights: str | None = None, **factory_kwargs: Any) -> nn.Module:
    """Import ``package.module:factory``, call it with ``factory_kwargs`` and load ``weights``.

    ``weights`` may be a ``.safetensors`` file or anything ``torch.load(weights_only=True)``
    reads: a bare state dict or a dict with a ``state_dict`` entry. The model is returned in
    eval mode.
    """
    if not _SPEC_RE.match(spec):
        raise ModelLoadError(
            f"invalid model spec {spec!r}: expected 'package.module:factory' "
            "(e.g. 'mypkg.nets:make_model')"
        )
    module_name, attr_path = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelLoadError(
            f"cannot import module {module_name!r} for model spec {spec!r}: {_one_line(e)} "
            "(is it installed or on PYTHONPATH?)"
        ) from e
    except Exception as e:
        raise ModelLoadError(
            f"importing module {module_name!r} failed: {type(e).__name__}: {_one_line(e)}"
        ) from e

    factory: Any = module
    for part in attr_path.split("."):
        if not hasattr(factory, part):
            available = sorted(
                n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
            )
            hint = f" (callables there: {', '.join(available[:10])})" if available else ""
            raise ModelLoadError(f"module {module_name!r} has no attribute {attr_path!r}{hint}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ModelLoadError(f"{spec!r} is not callable (it is a {type(factory).__name__})")

    try:
        model = factory(**factory_kwargs)
    except Exception as e:
        raise ModelLoadError(f"calling {spec} failed: {type(e).__name__}: {_one_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"{spec} returned a {type(model).__name__}, expected a torch.nn.Module"
        )
    if weights is not None:
        load_weights_into(model, weights)
    model.eval()
    return model


def load_weights_into(model: nn.Module, weights: str | os.PathLike[str]) -> nn.Module:
    """Load a ``.safetensors`` or ``torch.save``d state dict into ``model`` (strict).

    The format is told from the file's first bytes, not its name. Pickled files are read with
    ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers
    (no code in the file ever runs). A checksum written by nnslicer is verified.
    """
    path = Path(weights)
    if path.is_dir():
        raise ModelLoadError(f"weights {path} is a directory; pass the weights file")
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    looks = describe_file(path)
    if path.suffix == ".safetensors" or _is_safetensors(path):
        if path.suffix == ".safetensors" and looks.startswith(("a zip", "a Python pickle")):
            raise ModelLoadError(
                f"weights {path} is named .safetensors but is {looks}; rename it to .pt"
            )
        try:
            state = load_safetensors(path, hint="re-create it with the tool that made it")
        except CheckpointError as e:
            raise ModelLoadError(str(e)) from e
    elif not looks.startswith(("a zip", "a Python pickle")):
        what = "" if looks == "not a safetensors file" else f" ({looks})"
        raise ModelLoadError(f"weights {path} is not a safetensors or torch.save file{what}")
    else:
        try:
            with warnings.catch_warnings():
                # torch warns about the pickle protocol of files it then refuses anyway
                warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelLoadError(
                f"cannot read weights {path} with torch.load(weights_only=True): "
                f"{_torch_load_reason(e)}"
            ) from e
        state = _extract_state_dict(obj, path)
    state = _strip_prefix(model, state, "module.")
    mismatch = state_dict_mismatch(model, state) or _dtype_mismatch(model, state)
    if mismatch:
        raise ModelLoadError(f"weights {path} do not fit {type(model).__name__}: {mismatch}")
    model.load_state_dict(state, strict=True)
    bad = non_finite_parameters(model)
    if bad:
        raise ModelLoadError(
            f"weights {path} hold NaN or Inf in {', '.join(bad[:3])}"
            f"{f' (+{len(bad) - 3} more)' if len(bad) > 3 else ''}; the training that made "
            "them diverged"
        )
    return model


def load_model(
    arg: str, weights: str | None = None, **factory_kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint (``x.safetensors``, ``x.json`` or stem ``x``) or a user model spec.

    Returns ``(model, meta)``: the checkpoint's metadata, or for a user model
    ``{"arch": None, "spec": arg, "weights": weights}``. The model is in eval mode.
    """
    if isinstance(arg, os.PathLike):
        arg = os.fspath(arg)
    if not isinstance(arg, str) or not arg:
        raise ModelLoadError(
            f"model must be a checkpoint path or 'package.module:factory', got {arg!r}"
        )
    weights_path, meta_path = checkpoint_paths(arg)
    is_checkpoint_name = arg.endswith((".safetensors", ".json"))
    if is_checkpoint_name or (":" not in arg and meta_path.is_file()):
        if weights is not None:
            raise ModelLoadError(f"--weights cannot be combined with checkpoint {arg}")
        if meta_path.is_file():
            return load_checkpoint(arg)
        if weights_path.is_file():
            raise ModelLoadError(
                f"{weights_path} has no nnslicer metadata ({meta_path.name}); to use your own "
                f"architecture pass 'package.module:factory' with weights {weights_path}"
            )
        raise ModelLoadError(f"checkpoint not found: {weights_path} / {meta_path}")
    if ":" not in arg:
        raise ModelLoadError(
            f"{arg!r} is neither a checkpoint (no {meta_path} found) nor a "
            "'package.module:factory' model spec"
        )
    model = load_user_model(arg, weights, **factory_kwargs)
    return model, {"arch": None, "spec": arg, "weights": weights}


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _NESTED_STATE_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ModelLoadError(
            f"{path} does not hold a state dict (got {type(obj).__name__}); save "
            "model.state_dict() or {'state_dict': model.state_dict()}"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ModelLoadError(
            f"{path} is not a state dict: entries that are not tensors: {', '.join(bad[:5])}"
        )
    return obj


def _strip_prefix(
    model: nn.Module, state: dict[str, torch.Tensor], prefix: str
) -> dict[str, torch.Tensor]:
    # Weights saved from nn.DataParallel carry a "module." prefix on every key.
    expected = model.state_dict()
    if (
        state
        and all(k.startswith(prefix) for k in state)
        and not any(k.startswith(prefix) for k in expected)
    ):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _is_safetensors(path: Path) -> bool:
    """A safetensors file under another name: 8-byte header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30


def _dtype_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Integer or bool tensors where the model has floats (or the reverse): load_state_dict
    would convert them silently."""
    expected = model.state_dict()
    bad = [f"{k} (file {state[k].dtype} vs model {v.dtype})" for k, v in expected.items()
           if k in state and state[k].is_floating_point() != v.is_floating_point()]
    return f"dtype mismatch: {', '.join(bad[:5])}" if bad else None


def _torch_load_reason(e: BaseException) -> str:
    # torch.load's messages span paragraphs of advice; keep the sentence that says what failed.
    text = _one_line(re.sub(r"\x1b\[[0-9;]*m", "", str(e)))
    blocked = re.search(r"unsupported GLOBAL (\S+) whose module \S+ is blocked", text)
    if blocked:
        return (f"{type(e).__name__}: the file holds a pickled {blocked.group(1)}, which is "
                "refused (only tensors and plain containers are loaded)")
    if isinstance(e, KeyError | EOFError | IndexError):
        return f"{type(e).__name__}: the file is truncated or not a torch.save file"
    operand = re.search(r"Unsupported operand \d+", text)
    if operand:
        return (f"{type(e).__name__}: a pickle it cannot read safely ({operand.group(0)}); save "
                "the state dict with torch.save(model.state_dict(), path) or safetensors")
    found = re.search(
        r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global| Check the doc|\.\s|$)", text
    )
    reason = found.group(1) if found else text.split(". ")[0]
    return f"{type(e).__name__}: {reason.rstrip('.')}"


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split()) or type(e).__name__
