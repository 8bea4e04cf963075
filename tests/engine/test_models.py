"""Model zoo, checkpoints and user-model loading."""

from __future__ import annotations

import json
import operator
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.fx
from torch import nn

from nnslicer.models import (
    ARCHITECTURES,
    CheckpointError,
    ModelLoadError,
    build_model,
    checkpoint_paths,
    load_checkpoint,
    load_model,
    load_user_model,
    save_checkpoint,
)

torch.set_num_threads(1)

ALLOWED_MODULES = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Linear,
)
ALLOWED_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.flatten, torch.relu}

# (arch, kwargs, input shape); the ResNets use a small width to keep the tests fast.
CASES = [
    ("lenet5", {}, (2, 1, 28, 28)),
    ("lenet5", {"in_channels": 3, "input_size": 32, "num_classes": 7}, (2, 3, 32, 32)),
    ("resnet10", {"in_channels": 3, "width": 8}, (2, 3, 32, 32)),
    ("resnet18", {"in_channels": 1, "width": 8, "num_classes": 4}, (2, 1, 28, 28)),
]


def _perturb_bn(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Give BatchNorm layers non-default running stats so round trips test buffers too."""
    model.train()
    with torch.no_grad():
        model(torch.rand(8, *shape))
    model.eval()


@pytest.mark.parametrize(("arch", "kwargs", "shape"), CASES)
def test_build_forward_and_fx_trace(arch: str, kwargs: dict, shape: tuple) -> None:
    torch.manual_seed(0)
    model = build_model(arch, **kwargs).eval()
    x = torch.rand(shape)
    out = model(x)
    assert out.shape == (shape[0], kwargs.get("num_classes", 10))

    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), out)
    modules = dict(traced.named_modules())
    for node in traced.graph.nodes:
        if node.op == "call_module":
            assert isinstance(modules[node.target], ALLOWED_MODULES), node.target
        elif node.op in ("call_function", "call_method"):
            assert node.target in ALLOWED_FUNCTIONS, node.target
    # Every ReLU module is called exactly once, so activations have unique names.
    relu_calls = [
        n.target
        for n in traced.graph.nodes
        if n.op == "call_module" and isinstance(modules[n.target], nn.ReLU)
    ]
    assert len(relu_calls) == len(set(relu_calls)) > 0


def test_architecture_list() -> None:
    assert ARCHITECTURES[:3] == ("lenet5", "resnet10", "resnet18")
    assert len(set(ARCHITECTURES)) == len(ARCHITECTURES)
    with pytest.raises(ValueError, match="lenet5, resnet10, resnet18"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("lenet5", num_classes=0)


def test_lenet5_layout() -> None:
    names = dict(build_model("lenet5").named_modules())
    assert {"features.conv1", "features.pool2", "classifier.fc1", "classifier.fc3"} <= set(names)
    assert names["features.conv1"].padding == (2, 2)
    assert names["classifier.fc1"].in_features == 16 * 5 * 5
    assert (
        dict(build_model("lenet5", input_size=32).named_modules())["classifier.fc1"].in_features
        == 16 * 6 * 6
    )


def test_resnet18_layout() -> None:
    model = build_model("resnet18", in_channels=3)
    names = dict(model.named_modules())
    # The standard CIFAR ResNet-18 has 11,173,962 parameters.
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert names["conv1"].kernel_size == (3, 3) and names["conv1"].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert [names[f"layer{i}.0.conv1"].out_channels for i in range(1, 5)] == [64, 128, 256, 512]
    assert names["layer1.0"].shortcut is None and names["layer1.1"].shortcut is None
    assert names["layer2.0.shortcut.conv"].kernel_size == (1, 1)
    assert names["layer2.0.shortcut.conv"].stride == (2, 2)
    assert isinstance(names["layer4.1.bn2"], nn.BatchNorm2d)
    assert names["fc"].in_features == 512
    assert len([m for m in model.modules() if type(m).__name__ == "BasicBlock"]) == 8
    resnet10 = build_model("resnet10", width=16)
    assert len([m for m in resnet10.modules() if type(m).__name__ == "BasicBlock"]) == 4
    assert dict(resnet10.named_modules())["fc"].in_features == 128


# --- checkpoints ------------------------------------------------------------------------------


def _meta(arch: str, **kwargs) -> dict:
    return {"arch": arch, "arch_kwargs": kwargs, "dataset": "mnist-digits", "test_accuracy": 0.5}


@pytest.mark.parametrize(("arch", "kwargs"), [("lenet5", {}), ("resnet10", {"width": 4})])
def test_checkpoint_round_trip(tmp_path: Path, arch: str, kwargs: dict) -> None:
    torch.manual_seed(1)
    model = build_model(arch, **kwargs)
    _perturb_bn(model, (1, 28, 28))
    meta = {**_meta(arch, **kwargs), "epochs": 3}
    weights, meta_path = save_checkpoint(tmp_path / "ckpt" / "model.safetensors", model, meta)
    assert weights == tmp_path / "ckpt" / "model.safetensors"
    assert meta_path == tmp_path / "ckpt" / "model.json"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "model.json",
        "model.safetensors",
    ]

    for name in ("model", "model.json", "model.safetensors"):
        loaded, loaded_meta = load_checkpoint(tmp_path / "ckpt" / name)
        assert not loaded.training
        assert {k: loaded_meta[k] for k in meta} == meta
        x = torch.rand(4, 1, 28, 28)
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        for (k, a), (_, b) in zip(
            model.state_dict().items(), loaded.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), k


def test_checkpoint_paths_keep_dotted_stems() -> None:
    assert checkpoint_paths("runs/lenet.v1") == (
        Path("runs/lenet.v1.safetensors"),
        Path("runs/lenet.v1.json"),
    )


def test_save_checkpoint_validates_meta(tmp_path: Path) -> None:
    model = build_model("lenet5")
    with pytest.raises(CheckpointError, match="missing keys: dataset, test_accuracy"):
        save_checkpoint(tmp_path / "m", model, {"arch": "lenet5", "arch_kwargs": {}})
    with pytest.raises(CheckpointError, match="classifier.fc3"):
        save_checkpoint(tmp_path / "m", model, _meta("lenet5", num_classes=3))
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "m", model, {**_meta("lenet5"), "x": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def saved_lenet(tmp_path: Path) -> Path:
    save_checkpoint(tmp_path / "lenet", build_model("lenet5"), _meta("lenet5"))
    return tmp_path / "lenet"


def test_checkpoint_missing_files(saved_lenet: Path) -> None:
    weights, meta_path = checkpoint_paths(saved_lenet)
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"weights file not found: .*lenet\.safetensors"):
        load_checkpoint(saved_lenet)
    meta_path.unlink()
    with pytest.raises(CheckpointError, match=r"metadata file not found: .*lenet\.json"):
        load_checkpoint(saved_lenet)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_checkpoint_corrupt_weights(saved_lenet: Path, damage: str) -> None:
    weights, _ = checkpoint_paths(saved_lenet)
    data = weights.read_bytes()
    weights.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"\x07" * 100, "empty": b""}[damage]
    )
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(saved_lenet)
    message = str(info.value)
    assert "\n" not in message and "nnslicer train" in message and str(weights) in message


def test_checkpoint_bad_json(saved_lenet: Path) -> None:
    _, meta_path = checkpoint_paths(saved_lenet)
    meta = json.loads(meta_path.read_text())
    del meta["arch_kwargs"], meta["dataset"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="missing keys: arch_kwargs, dataset"):
        load_checkpoint(saved_lenet)
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(saved_lenet)
    meta_path.write_text(json.dumps({**_meta("lenet5"), "arch": "alexnet"}))
    with pytest.raises(CheckpointError, match="unknown arch 'alexnet'"):
        load_checkpoint(saved_lenet)


def test_checkpoint_weights_do_not_match_arch(saved_lenet: Path) -> None:
    _, meta_path = checkpoint_paths(saved_lenet)
    meta_path.write_text(json.dumps(_meta("lenet5", num_classes=5)))
    with pytest.raises(CheckpointError, match=r"shape mismatch: classifier\.fc3\.bias") as info:
        load_checkpoint(saved_lenet)
    assert "\n" not in str(info.value)
    meta_path.write_text(json.dumps(_meta("resnet10", width=4)))
    with pytest.raises(CheckpointError, match=r"missing keys: .*unexpected keys: classifier"):
        load_checkpoint(saved_lenet)


# --- user models ------------------------------------------------------------------------------

USER_MODULE = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 6 * 6, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def make(num_classes=3):
    return Tiny(num_classes)


def not_a_model():
    return 42


def broken():
    raise RuntimeError("boom")


VALUE = 3
"""


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"nns_user_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _trained_state(module_name: str) -> tuple[nn.Module, dict]:
    torch.manual_seed(3)
    source = load_user_model(f"{module_name}:make")
    _perturb_bn(source, (1, 8, 8))
    return source, source.state_dict()


@pytest.mark.parametrize("fmt", ["safetensors", "torch-bare", "torch-nested", "torch-prefixed"])
def test_load_user_model_with_weights(tmp_path: Path, user_module: str, fmt: str) -> None:
    source, state = _trained_state(user_module)
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        safetensors.torch.save_file(state, str(path))
    else:
        path = tmp_path / "w.pt"
        payload = {
            "torch-bare": state,
            "torch-nested": {"state_dict": state, "epoch": 3},
            "torch-prefixed": {f"module.{k}": v for k, v in state.items()},
        }[fmt]
        torch.save(payload, path)
    model = load_user_model(f"{user_module}:make", str(path))
    assert not model.training
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)

    model, meta = load_model(f"{user_module}:make", weights=str(path))
    assert meta == {"arch": None, "spec": f"{user_module}:make", "weights": str(path)}
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)


def test_load_user_model_factory_kwargs(user_module: str) -> None:
    model = load_user_model(f"{user_module}:Tiny", num_classes=5)
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 5)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("no_colon_here", "invalid model spec"),
        ("a:b:c", "invalid model spec"),
        ("pkg/mod.py:make", "invalid model spec"),
        ("nns_definitely_missing_module:make", "cannot import module"),
        ("{mod}:nope", r"has no attribute 'nope' \(callables there: .*make"),
        ("{mod}:VALUE", "is not callable"),
        ("{mod}:not_a_model", "returned a int, expected a torch.nn.Module"),
        ("{mod}:broken", "RuntimeError: boom"),
    ],
)
def test_load_user_model_errors(user_module: str, spec: str, pattern: str) -> None:
    with pytest.raises(ModelLoadError, match=pattern) as info:
        load_user_model(spec.format(mod=user_module))
    assert "\n" not in str(info.value)


def test_load_user_model_bad_weights(tmp_path: Path, user_module: str) -> None:
    spec = f"{user_module}:make"
    with pytest.raises(ModelLoadError, match="weights file not found"):
        load_user_model(spec, str(tmp_path / "missing.pt"))

    other = load_user_model(spec, num_classes=7).state_dict()
    other["extra.weight"] = torch.zeros(1)
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match=r"unexpected keys: extra\.weight; shape mismatch: fc"):
        load_user_model(spec, str(tmp_path / "other.pt"))

    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="not a safetensors or torch.save file"):
        load_user_model(spec, str(tmp_path / "junk.pt"))

    torch.save({"optimizer": [1, 2, 3]}, tmp_path / "nostate.pt")
    with pytest.raises(ModelLoadError, match="not a state dict"):
        load_user_model(spec, str(tmp_path / "nostate.pt"))

    # Arbitrary pickled objects are refused by weights_only=True instead of being executed.
    torch.save({"conv.weight": Path("x")}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match="Unsupported global: GLOBAL pathlib") as info:
        load_user_model(spec, str(tmp_path / "evil.pt"))
    assert "weights_only=True" in str(info.value) and "\n" not in str(info.value)

    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_user_model(spec, str(tmp_path / "bad.safetensors"))


def test_load_model_dispatch(saved_lenet: Path, tmp_path: Path) -> None:
    for arg in (f"{saved_lenet}.safetensors", f"{saved_lenet}.json", str(saved_lenet)):
        model, meta = load_model(arg)
        assert meta["arch"] == "lenet5" and not model.training

    safetensors.torch.save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelLoadError, match="has no nnslicer metadata"):
        load_model(str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        load_model(str(tmp_path / "nothing.safetensors"))
    with pytest.raises(ModelLoadError, match="neither a checkpoint"):
        load_model(str(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match="--weights cannot be combined"):
        load_model(str(saved_lenet), weights="w.pt")


# --- atomic writes (used by checkpoints) ------------------------------------------------------


def test_atomic_write(tmp_path: Path) -> None:
    from nnslicer.io_utils import atomic_write, atomic_write_bytes, atomic_write_text

    target = tmp_path / "sub" / "report.json"
    assert atomic_write_text(target, "v1") == target and target.read_text() == "v1"
    assert target.stat().st_mode & 0o777 != 0o600  # not the temp file's private mode
    seen: list[Path] = []

    def fail(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "v1" and sorted(p.name for p in target.parent.iterdir()) == [
        "report.json"
    ]
    # The temp file sits next to the target and keeps its suffix (savefig, np.save rely on it).
    assert seen[0].parent == target.parent and seen[0].suffix == ".json"
    atomic_write_bytes(target, b"v2")
    assert target.read_bytes() == b"v2"
