"""Nothing loads wrong and nothing escapes as a traceback: checksums of every file we write,
damaged files, and the bad-input matrix of docs/errors.md (one test per row)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import nnslicer
from nnslicer import FileFormatError
from nnslicer.models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from nnslicer.storage import CHECKSUM_KEY, UncheckedFileWarning, load_tensors, save_tensors

torch.set_num_threads(1)


# --------------------------------------------------------------------------- damaging files


def data_offset(path: Path) -> int:
    """Where a safetensors file's data section starts."""
    raw = path.read_bytes()
    return 8 + int.from_bytes(raw[:8], "little")


def flip_data_byte(path: Path, where: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    start = data_offset(path)
    i = start + int((len(raw) - start - 1) * where)
    raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def splice(header_of: Path, data_of: Path, out: Path) -> None:
    """The header of one file with the data section of another."""
    a, b = header_of.read_bytes(), data_of.read_bytes()
    out.write_bytes(a[: data_offset(header_of)] + b[data_offset(data_of):])


def one_line(exc: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)
    return message


def small_slice(seed: int, classes: int = 3) -> nnslicer.Slice:
    g = torch.Generator().manual_seed(seed)
    neurons = {"x": torch.randint(-3, 4, (1, 4, 4), generator=g),
               "fc": torch.randint(-3, 4, (classes,), generator=g)}
    synapses = {"fc.weight": torch.randint(-3, 4, (classes, 16), generator=g)}
    meta = {"node_weights": {"fc": "fc.weight"}, "node_kinds": {"x": "input", "fc": "linear"},
            "node_modules": {"fc": "fc"}, "input_node": "x", "output_node": "fc",
            "model": "Tiny", "num_samples": 2, "per_sample": False, "theta": 0.2,
            "method": "nnslicer"}
    return nnslicer.Slice(neurons, synapses, meta)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    slicer = nnslicer.Slicer(Tiny().eval())
    path = tmp_path_factory.mktemp("profile") / "p.safetensors"
    slicer.profile([(torch.rand(8, 1, 6, 6), torch.arange(8) % 3)]).save(path)
    return path


def _meta(arch: str = "lenet5", **kwargs) -> dict:
    return {"arch": arch, "arch_kwargs": kwargs, "dataset": "mnist-digits", "test_accuracy": 0.9}


@pytest.fixture()
def two_checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    stems = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        stem = tmp_path / f"m{seed}"
        save_checkpoint(stem, build_model("lenet5"), _meta())
        stems.append(stem)
    return stems[0], stems[1]


# ------------------------------------------------------------------------------- checksums


def test_every_file_carries_a_checksum_that_loading_verifies(tmp_path: Path,
                                                            profile_file: Path) -> None:
    path = save_tensors(tmp_path / "t.safetensors", {"a": torch.arange(6.0)}, {"kind": "thing"})
    from safetensors import safe_open

    for p in (path, profile_file):
        with safe_open(str(p), framework="pt") as f:
            assert len(f.metadata()[CHECKSUM_KEY]) == 64
    tensors, meta = load_tensors(path, "thing")
    assert torch.equal(tensors["a"], torch.arange(6.0)) and meta == {"kind": "thing"}


def test_tensors_sharing_memory_are_saved_apart(tmp_path: Path) -> None:
    t = torch.arange(4)
    path = save_tensors(tmp_path / "s.safetensors", {"a": t, "b": t}, {"kind": "thing"})
    tensors, _ = load_tensors(path, "thing")
    assert torch.equal(tensors["a"], t) and torch.equal(tensors["b"], t)


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_flipped_data_byte_in_a_profile_is_refused(tmp_path: Path, profile_file: Path,
                                                   where: float) -> None:
    bad = tmp_path / "p.safetensors"
    bad.write_bytes(profile_file.read_bytes())
    flip_data_byte(bad, where)
    with pytest.raises(FileFormatError) as info:
        nnslicer.Profile.load(bad)
    one_line(info, str(bad), "corrupted", "checksum")


def test_flipped_data_byte_in_a_slice_is_refused(tmp_path: Path) -> None:
    path = small_slice(0).save(tmp_path / "s.safetensors")
    flip_data_byte(path)
    with pytest.raises(FileFormatError) as info:
        nnslicer.Slice.load(path)
    one_line(info, str(path), "corrupted")


def test_edited_header_is_refused(tmp_path: Path) -> None:
    path = small_slice(0).save(tmp_path / "s.safetensors")
    raw = path.read_bytes()
    assert raw.count(b'\\"theta\\": 0.2') == 1
    path.write_bytes(raw.replace(b'\\"theta\\": 0.2', b'\\"theta\\": 0.7'))
    with pytest.raises(FileFormatError) as info:
        nnslicer.Slice.load(path)
    one_line(info, "corrupted")


@pytest.mark.parametrize("keep", [0, 5, 8, 20, "header", "data"])
def test_truncated_files_are_refused(tmp_path: Path, profile_file: Path, keep) -> None:
    raw = profile_file.read_bytes()
    cut = {"header": data_offset(profile_file) - 3, "data": len(raw) - 1}.get(keep, keep)
    bad = tmp_path / "p.safetensors"
    bad.write_bytes(raw[:cut])
    with pytest.raises(FileFormatError) as info:
        nnslicer.Profile.load(bad)
    one_line(info, str(bad))
    assert any(w in str(info.value) for w in ("truncated", "corrupt"))


def test_swapped_headers_are_refused(tmp_path: Path) -> None:
    a = small_slice(0).save(tmp_path / "a.safetensors")
    b = small_slice(1).save(tmp_path / "b.safetensors")
    assert data_offset(a) == data_offset(b)  # same layout, different values
    spliced = tmp_path / "spliced.safetensors"
    splice(a, b, spliced)
    with pytest.raises(FileFormatError) as info:
        nnslicer.Slice.load(spliced)
    one_line(info, "corrupted")
    # a header describing another layout
    other = small_slice(0, classes=5).save(tmp_path / "c.safetensors")
    splice(other, b, spliced)
    with pytest.raises(FileFormatError) as info:
        nnslicer.Slice.load(spliced)
    one_line(info, str(spliced))


def test_files_without_checksum_load_with_a_warning(tmp_path: Path) -> None:
    s = small_slice(0)
    old = tmp_path / "old.safetensors"
    tensors = {f"neurons/{k}": v for k, v in s.neurons.items()}
    tensors.update({f"synapses/{k}": v for k, v in s.synapses.items()})
    header = {"kind": "slice", "meta": s.meta,
              "order": {"neurons": list(s.neurons), "synapses": list(s.synapses)}}
    save_file(tensors, str(old), metadata={"nnslicer": json.dumps(header)})
    with pytest.warns(UncheckedFileWarning, match="no checksum"):
        loaded = nnslicer.Slice.load(old)
    assert torch.equal(loaded.synapses["fc.weight"], s.synapses["fc.weight"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnslicer.Slice.load(s.save(tmp_path / "new.safetensors"))  # no warning


@pytest.mark.parametrize(("content", "says"), [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "PNG"),
    (b"PK\x03\x04" + b"\x00" * 40, "zip"),
    (b'{"arch": "lenet5"}', "JSON"),
])
def test_files_of_the_wrong_kind(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(FileFormatError) as info:
        nnslicer.Slice.load(path)
    one_line(info, str(path), says)


def test_a_profile_passed_as_a_slice_and_weights_passed_as_a_profile(
        tmp_path: Path, profile_file: Path, two_checkpoints: tuple[Path, Path]) -> None:
    with pytest.raises(FileFormatError) as info:
        nnslicer.Slice.load(profile_file)
    one_line(info, "holds a profile file, not a slice")
    with pytest.raises(FileFormatError) as info:
        nnslicer.Profile.load(two_checkpoints[0].with_suffix(".safetensors"))
    one_line(info, "model weights", "not a profile")
    with pytest.raises(FileFormatError) as info:
        nnslicer.Profile.load(tmp_path)
    one_line(info, "is a directory")


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_records_its_checksum_in_both_files(two_checkpoints) -> None:
    stem, _ = two_checkpoints
    meta = json.loads(stem.with_suffix(".json").read_text())
    from safetensors import safe_open

    with safe_open(str(stem.with_suffix(".safetensors")), framework="pt") as f:
        assert f.metadata()[CHECKSUM_KEY] == meta["weights_sha256"]
    model, _ = load_checkpoint(stem)
    assert not model.training


def test_checkpoint_with_flipped_weight_bytes_is_refused(two_checkpoints) -> None:
    stem, _ = two_checkpoints
    flip_data_byte(stem.with_suffix(".safetensors"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(stem)
    one_line(info, "corrupted", str(stem.with_suffix(".safetensors")))


def test_checkpoint_with_the_weights_of_another_is_refused(two_checkpoints) -> None:
    a, b = two_checkpoints
    a.with_suffix(".safetensors").write_bytes(b.with_suffix(".safetensors").read_bytes())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(a)
    one_line(info, "does not belong to", str(a.with_suffix(".json")))


def test_checkpoint_written_before_checksums_loads_with_a_warning(tmp_path: Path) -> None:
    import safetensors.torch

    model = build_model("lenet5")
    stem = tmp_path / "old"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    stem.with_suffix(".safetensors").write_bytes(
        safetensors.torch.save(state, metadata={"format": "pt"}))
    stem.with_suffix(".json").write_text(json.dumps(
        {"format": "nnslicer-checkpoint", "format_version": 1, **_meta()}))
    with pytest.warns(UncheckedFileWarning, match="unchecked"):
        loaded, _ = load_checkpoint(stem)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


def test_checkpoint_of_a_diverged_model_is_not_saved(tmp_path: Path) -> None:
    model = build_model("lenet5")
    with torch.no_grad():
        model.classifier.fc3.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path / "nan", model, _meta())
    one_line(info, "NaN", "classifier.fc3.weight", "learning rate")
    assert list(tmp_path.iterdir()) == []
