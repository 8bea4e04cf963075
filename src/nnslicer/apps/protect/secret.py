"""The hidden part of a protected model in compact form, and what protection costs.

The secret of a weight tensor is its hidden values (in row-major order of the mask) and the
mask itself, packed 8 synapses to a byte. :func:`restore` puts the values back into an exposed
copy, giving the original model exactly.

:func:`protection_cost` says what an enclave or an encryption scheme would have to hold and
compute: the fraction of the parameters hidden, the bytes of the secret (values + packed
masks, and the masks zlib-compressed, which shows how structured a method's choice is) against
the bytes of the whole model (parameters and buffers), and the fraction of the conv/linear
multiply-adds that involve a hidden weight.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from nnslicer.errors import FileFormatError, InputError
from nnslicer.io_utils import atomic_write_bytes

SECRET_FORMAT = "nnslicer-protect-secret"


def _packed(mask: Tensor) -> np.ndarray:
    return np.packbits(mask.detach().cpu().reshape(-1).numpy().astype(bool))


def pack_hidden(model: nn.Module, hidden: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``value/NAME`` (the hidden values, 1-D) and ``mask/NAME`` (packed bits, uint8)."""
    params = dict(model.named_parameters())
    out: dict[str, Tensor] = {}
    for name, mask in hidden.items():
        if name not in params:
            raise InputError(f"the model has no parameter {name!r}")
        p = params[name].detach().cpu()
        if tuple(mask.shape) != tuple(p.shape):
            raise InputError(f"mask of {name} has shape {tuple(mask.shape)}, the parameter "
                             f"{tuple(p.shape)}")
        out[f"value/{name}"] = p.reshape(-1)[mask.cpu().reshape(-1)].clone().contiguous()
        out[f"mask/{name}"] = torch.from_numpy(_packed(mask).copy())
    return out


def save_hidden(path: str | Path, model: nn.Module, hidden: Mapping[str, Tensor]) -> Path:
    """Write the secret as safetensors (atomically); shapes go into the metadata."""
    tensors = pack_hidden(model, hidden)
    params = dict(model.named_parameters())
    meta = {"format": SECRET_FORMAT,
            "shapes": json.dumps({n: list(params[n].shape) for n in hidden})}
    return atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=meta))


def load_hidden(path: str | Path) -> dict[str, tuple[Tensor, Tensor]]:
    """``{name: (bool mask, hidden values)}`` from a file written by :func:`save_hidden`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no secret file at {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        if meta.get("format") != SECRET_FORMAT:
            raise FileFormatError(f"{path} is not a protection secret (format "
                                  f"{meta.get('format')!r})")
        shapes = json.loads(meta["shapes"])
        out = {}
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            bits = np.unpackbits(tensors[f"mask/{name}"].numpy(), count=n).astype(bool)
            mask = torch.from_numpy(bits).reshape(shape)
            values = tensors[f"value/{name}"]
            if int(mask.sum()) != values.numel():
                raise FileFormatError(f"{path}: {name} has {int(mask.sum())} hidden positions "
                                      f"but {values.numel()} values")
            out[name] = (mask, values)
        return out
    except FileFormatError:
        raise
    except Exception as e:  # safetensors' own errors, missing keys, bad JSON
        raise FileFormatError(f"{path} is not a readable protection secret: {e}") from e


def restore(exposed: nn.Module, secret: Mapping[str, tuple[Tensor, Tensor]]) -> nn.Module:
    """A copy of ``exposed`` with the hidden values put back."""
    model = copy.deepcopy(exposed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, (mask, values) in secret.items():
            if name not in params:
                raise InputError(f"the secret holds {name!r}, which the model lacks")
            p = params[name]
            if tuple(mask.shape) != tuple(p.shape):
                raise InputError(f"the secret's {name} has shape {tuple(mask.shape)}, the "
                                 f"model's {tuple(p.shape)}")
            flat = p.view(-1)
            flat[mask.reshape(-1).to(p.device)] = values.to(p)
    return model.eval()


def _bytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def layer_macs(model: nn.Module, layers: list[str], example: Tensor) -> dict[str, int]:
    """Multiply-adds of each conv/linear layer for one input: weight entries × the number of
    output positions each one is used at."""
    macs: dict[str, int] = {}
    handles = []
    for path in layers:
        module = model.get_submodule(path)

        def hook(mod: nn.Module, args: tuple, out: Tensor, path: str = path) -> None:
            channels = out.shape[1] if isinstance(mod, nn.modules.conv._ConvNd) else out.shape[-1]
            positions = out[:1].numel() // max(int(channels), 1)
            macs[path] = int(mod.weight.numel()) * positions

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model.eval()(example[:1])
    finally:
        for h in handles:
            h.remove()
    return macs


def protection_cost(model: nn.Module, hidden: Mapping[str, Tensor],
                    example: Tensor | None = None) -> dict[str, Any]:
    """What hiding ``hidden`` costs, against protecting the whole model (see module doc)."""
    params = dict(model.named_parameters())
    n_params = sum(p.numel() for p in params.values())
    model_bytes = sum(_bytes(t) for t in model.state_dict().values())
    n_hidden = sum(int(m.sum()) for m in hidden.values())
    synapses = sum(m.numel() for m in hidden.values())
    value_bytes = sum(int(m.sum()) * params[n].element_size() for n, m in hidden.items())
    packed = [_packed(m) for m in hidden.values()]
    mask_bytes = sum(len(b) for b in packed)
    zlib_bytes = sum(len(zlib.compress(b.tobytes(), 9)) for b in packed)
    cost: dict[str, Any] = {
        "parameters": n_params, "synapses": synapses, "hidden": n_hidden,
        "hidden_fraction_of_parameters": n_hidden / n_params if n_params else 0.0,
        "hidden_fraction_of_synapses": n_hidden / synapses if synapses else 0.0,
        "model_bytes": model_bytes, "value_bytes": value_bytes, "mask_bytes": mask_bytes,
        "mask_zlib_bytes": zlib_bytes, "secret_bytes": value_bytes + mask_bytes,
        "secret_fraction_of_model_bytes": (value_bytes + mask_bytes) / model_bytes
        if model_bytes else 0.0,
    }
    if example is not None:
        layers = [n.removesuffix(".weight") for n in hidden]
        macs = layer_macs(model, layers, example)
        total = sum(macs.values())
        hidden_macs = sum(
            macs[n.removesuffix(".weight")] * int(m.sum()) // max(m.numel(), 1)
            for n, m in hidden.items())
        cost.update({"macs": total, "hidden_macs": hidden_macs,
                     "hidden_fraction_of_macs": hidden_macs / total if total else 0.0})
    return cost
