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


# ------------------------------------------------------------------------- weights files


USER_MODULE = """
import torch
from torch import nn


def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
"""


@pytest.fixture()
def user_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    import sys
    import uuid

    name = f"nns_err_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{name}:make"
    sys.modules.pop(name, None)


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo this-must-not-run",))


@pytest.mark.parametrize(("write", "says"), [
    (lambda p: torch.save({"1.weight": _RunsCode()}, p), "pickled posix.system, which is refused"),
    (lambda p: torch.save({"1.weight": _RunsCode()}, p, _use_new_zipfile_serialization=False),
     "pickled posix.system"),
    (lambda p: p.write_bytes(__import__("pickle").dumps({"a": _RunsCode()}, protocol=4)),
     "a pickle it cannot read safely"),
])
def test_pickled_code_is_refused_without_torch_warnings(tmp_path: Path, user_spec: str,
                                                        capfd, write, says: str) -> None:
    from nnslicer.models import ModelLoadError, load_user_model

    path = tmp_path / "evil.pt"
    write(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's pickle-protocol UserWarning would fail here
        with pytest.raises(ModelLoadError) as info:
            load_user_model(user_spec, str(path))
    one_line(info, says, str(path))
    assert "this-must-not-run" not in capfd.readouterr().out


@pytest.mark.parametrize(("content", "name", "says"), [
    (b"hello, not weights", "w.pt", "not a safetensors or torch.save file"),
    (None, "zip.safetensors", "named .safetensors but is a zip archive"),
    (b"", "w.pt", "not a safetensors or torch.save file (empty)"),
    ("dir", "w.pt", "is a directory"),
])
def test_weights_of_the_wrong_kind(tmp_path: Path, user_spec: str, content, name: str,
                                   says: str) -> None:
    from nnslicer.models import ModelLoadError, load_user_model

    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is None:
        torch.save({"1.weight": torch.zeros(3, 4)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        load_user_model(user_spec, str(path))
    one_line(info, says)


def test_safetensors_under_another_name_loads(tmp_path: Path, user_spec: str) -> None:
    from nnslicer.models import load_user_model

    state = {"1.weight": torch.full((3, 4), 0.5), "1.bias": torch.ones(3)}
    save_file(state, str(tmp_path / "w.bin"))
    model = load_user_model(user_spec, str(tmp_path / "w.bin"))
    assert torch.equal(model[1].weight, state["1.weight"])


def test_weights_with_integer_dtype_or_nan_are_refused(tmp_path: Path, user_spec: str) -> None:
    from nnslicer.models import ModelLoadError, load_user_model

    torch.save({"1.weight": torch.ones(3, 4, dtype=torch.int64), "1.bias": torch.ones(3)},
               tmp_path / "int.pt")
    with pytest.raises(ModelLoadError) as info:
        load_user_model(user_spec, str(tmp_path / "int.pt"))
    one_line(info, "dtype mismatch: 1.weight (file torch.int64 vs model torch.float32)")
    nan = torch.ones(3, 4)
    nan[1, 2] = float("nan")
    torch.save({"1.weight": nan, "1.bias": torch.ones(3)}, tmp_path / "nan.pt")
    with pytest.raises(ModelLoadError) as info:
        load_user_model(user_spec, str(tmp_path / "nan.pt"))
    one_line(info, "NaN or Inf in 1.weight")


@pytest.mark.parametrize("arg", [None, 123, ""])
def test_load_model_argument_types(arg) -> None:
    from nnslicer.models import ModelLoadError, load_model

    with pytest.raises(ModelLoadError) as info:
        load_model(arg)
    one_line(info, "checkpoint path or 'package.module:factory'")


def test_checkpoint_whose_arch_cannot_be_built(two_checkpoints) -> None:
    stem, _ = two_checkpoints
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["arch_kwargs"] = {"input_size": 4}
    stem.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(stem)
    one_line(info, "cannot build lenet5", "input_size >= 12")


# ---------------------------------------------------------------------------------- data


def test_array_dataset_inputs() -> None:
    import numpy as np

    from nnslicer.data import ArrayDataset

    ok = ArrayDataset(np.zeros((2, 1, 4, 4), np.float32), np.array([0, 1]), "np", ["a", "b"])
    assert ok.x.dtype == torch.float32 and ok.y.tolist() == [0, 1]
    cases = [
        ((np.zeros((2, 1, 4, 4)), np.array([0, 1])), "got float64 of shape (2, 1, 4, 4); "
                                                     "convert it with x.float()"),
        (([[0.0]], torch.tensor([0])), "must be a torch tensor or a numpy array, got list"),
        ((torch.zeros(2, 16), torch.tensor([0, 1])), "float32 NCHW"),
        ((torch.full((2, 1, 2, 2), float("nan")), torch.tensor([0, 1])), "NaN or Inf"),
        ((torch.zeros(2, 1, 2, 2), torch.tensor([0, 5])), "label 5 is outside 0..1"),
        ((torch.zeros(2, 1, 2, 2), torch.tensor([0, -1])), "label -1 is outside 0..1"),
        ((torch.zeros(2, 1, 2, 2), torch.tensor([0.0, 1.0])), "convert it with y.long()"),
    ]
    for (x, y), says in cases:
        with pytest.raises(nnslicer.InputError) as info:
            ArrayDataset(x, y, "t", ["a", "b"])
        one_line(info, says)


def _toy():
    from nnslicer.data import ArrayDataset

    return ArrayDataset(torch.rand(10, 1, 2, 2), torch.arange(10) % 3, "toy", ["a", "b", "c"])


@pytest.mark.parametrize(("indices", "says"), [
    ([5000], "index 5000 is out of range: toy has 10 samples (indices 0..9)"),
    ([-11], "index -11 is out of range"),
    (torch.tensor([True, False]), "one entry per sample (10)"),
    ([0.5], "must be integers, got torch.float64"),
    (["a"], "integers or a boolean mask"),
])
def test_subset_refuses_bad_indices(indices, says: str) -> None:
    with pytest.raises(nnslicer.InputError) as info:
        _toy().subset(indices)
    one_line(info, says)


def test_subset_and_filter_edge_cases() -> None:
    data = _toy()
    assert len(data.subset([])) == 0 and data.subset([-1]).y.tolist() == [0]
    assert data.filter_classes("c").y.tolist() == [2, 2, 2]  # a name, not its letters
    assert data.filter_classes(1).y.tolist() == [1, 1, 1]
    with pytest.raises(nnslicer.InputError, match="a class index is an integer"):
        data.filter_classes([1.5])


@pytest.mark.parametrize("size", ["4", 0, -1, 2.5, True])
def test_batches_refuse_bad_sizes(size) -> None:
    with pytest.raises(nnslicer.InputError) as info:
        next(_toy().batches(size))
    one_line(info, "batch_size must be a positive integer")


def test_load_dataset_bad_arguments(tmp_path: Path) -> None:
    from nnslicer.data import DatasetNotFound, load_dataset

    with pytest.raises(nnslicer.InputError, match="unknown dataset 123"):
        load_dataset(123)
    with pytest.raises(nnslicer.InputError, match="limit must be a positive integer, got True"):
        load_dataset("mnist-digits", limit=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetNotFound, match="is a file; give the directory"):
        load_dataset("fashion-mnist", root=tmp_path / "file")


# -------------------------------------------------------------------------------- slices


def test_slice_lookups_and_their_errors() -> None:
    w = torch.arange(6).reshape(3, 2)
    s = nnslicer.Slice({"x": torch.ones(2), "head_fc": torch.ones(3)}, {"head.fc.weight": w},
                       {"node_modules": {"head_fc": "head.fc"},
                        "node_weights": {"head_fc": "head.fc.weight"}})
    assert torch.equal(s.neurons["head.fc"], s.neurons["head_fc"])
    for name in ("head.fc", "head_fc", "head.fc.weight"):
        assert torch.equal(s.synapses[name], w), name
    assert list(s.neurons) == ["x", "head_fc"] and "head.fc" in s.neurons
    with pytest.raises(KeyError) as info:
        s.neurons["nope"]
    one_line(info, "no neurons for 'nope'", "x, head_fc")
    with pytest.raises(KeyError) as info:
        s.synapses["x"]
    one_line(info, "no synapses for 'x'", "head.fc.weight")
    assert "nope" not in s.neurons and s.neurons.get("nope") is None
    assert s.name("head_fc") == "head.fc" and s.summary()[1].name == "head.fc"


def test_ambiguous_module_names_say_which_nodes() -> None:
    s = nnslicer.Slice({"block_conv": torch.ones(2), "add": torch.ones(2)}, {},
                       {"node_modules": {"block_conv": "block.conv", "add": "block"}})
    with pytest.raises(KeyError) as info:
        s.neurons["block"]
    one_line(info, "module 'block' holds several nodes (add, block_conv)")
    assert torch.equal(s.neurons["block.conv"], torch.ones(2))


def test_slice_sample_and_add_errors() -> None:
    s = small_slice(0)
    with pytest.raises(nnslicer.InputError, match="needs a slice computed with per_sample=True"):
        s.sample(0)
    per = nnslicer.Slice({k: v.unsqueeze(0).repeat(2, *[1] * v.dim())
                          for k, v in s.neurons.items()},
                         {k: v.unsqueeze(0).repeat(2, 1, 1) for k, v in s.synapses.items()},
                         dict(s.meta, per_sample=True))
    assert torch.equal(per.sample(-1).synapses["fc.weight"], s.synapses["fc.weight"])
    for bad in (2, -3, "0", 1.0):
        with pytest.raises(nnslicer.InputError, match="out of range: this slice holds 2"):
            per.sample(bad)
    other = small_slice(1, classes=5)
    other.meta["model"] = "Other"
    with pytest.raises(nnslicer.InputError) as info:
        s + other
    one_line(info, "different models (a Tiny and a Other)")
    with pytest.raises(TypeError):
        s + 1
    assert sum([s, small_slice(1)]).num_samples == 4


def test_slice_repr_is_a_summary() -> None:
    text = repr(small_slice(0))
    assert text.startswith("<Slice of Tiny (nnslicer θ=0.2, 2 samples)")
    assert "tensor(" not in text and "\n" not in text and "synapses" in text


def test_slice_file_without_node_order(tmp_path: Path) -> None:
    save_tensors(tmp_path / "s.safetensors", {"neurons/x": torch.ones(1)}, {"kind": "slice"})
    with pytest.raises(FileFormatError) as info:
        nnslicer.Slice.load(tmp_path / "s.safetensors")
    one_line(info, "no node order or meta")


# ------------------------------------------------------------------------------- figures


def test_figure_errors(tmp_path: Path) -> None:
    from nnslicer.viz.slices import plot_slices

    s = small_slice(0)
    cases = [
        (({}, tmp_path / "f.png"), "no slices to draw"),
        (({"a": s}, tmp_path / "f.txt"), "give a name ending in .png, .pdf or .svg"),
        (({"a": s}, tmp_path / "f"), "give a name ending in .png"),
        (({"a": s, "b": nnslicer.Slice(dict(s.neurons), dict(s.synapses),
                                         dict(s.meta, model="Other"))}, tmp_path / "f.png"),
         "slices 'a' and 'b' are of different models (a Tiny and a Other)"),
        (({"a": nnslicer.Slice(dict(s.neurons), {}, {})}, tmp_path / "f.png"),
         "no layers with synapses"),
    ]
    for (slices, path), says in cases:
        with pytest.raises(nnslicer.InputError) as info:
            plot_slices(slices, path)
        one_line(info, says)
    assert list(tmp_path.iterdir()) == []
    plot_slices({"a": s}, tmp_path / "f.pdf")
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from typer.testing import CliRunner

    from nnslicer.cli.main import app

    folder = tmp_path_factory.mktemp("cli-errors")
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "num_classes": 10, "width": 64, "input_size": 28}
    save_checkpoint(folder / "lenet", build_model("lenet5", **kwargs),
                    {**_meta(**kwargs)})
    r = CliRunner().invoke(app, ["profile", "--model", str(folder / "lenet"), "--limit", "20",
                                 "--out", str(folder / "p.safetensors"), "--quiet"])
    assert r.exit_code == 0, r.output
    return {"model": folder / "lenet", "profile": folder / "p.safetensors", "dir": folder}


def cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from nnslicer.cli.main import app

    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r.exit_code, r.output


def cli_error(*args: str) -> str:
    """Run a command that must fail; return its one error line."""
    code, output = cli(*args)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    errors = [line for line in lines if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, output
    return errors[0]


SLICE_ERRORS = [
    (["--indices", "99999"], "--indices 99999 is out of range: mnist-digits/test has 1000 samples"),
    (["--indices", "1,x"], "--indices takes comma-separated integers, got '1,x'"),
    (["--classes", "42"], "class index 42 out of range 0..9"),
    (["--target", "abc"], "--target takes top1, label or a class index, got 'abc'"),
    (["--reference", "median"], "--reference takes dataset or class, got 'median'"),
    (["--neuron", "junk"], "--neuron takes NODE:CHANNEL or NODE:i,j,..."),
    (["--theta", "1.5"], "Invalid value for '--theta'"),
    (["--theta", "nan"], "Invalid value for '--theta'"),
    (["--limit", "0"], "Invalid value for '--limit'"),
    (["--split", "val"], "dataset 'mnist-digits' has no split 'val'"),
]


@pytest.mark.parametrize(("extra", "says"), SLICE_ERRORS)
def test_cli_slice_bad_options(cli_files, tmp_path: Path, extra: list[str], says: str) -> None:
    line = cli_error("slice", "--model", cli_files["model"], "--profile", cli_files["profile"],
                     "--out", tmp_path / "s.safetensors", "--quiet", *extra)
    assert says in line, line
    assert not (tmp_path / "s.safetensors").exists()


def test_cli_no_samples_left(cli_files) -> None:
    from nnslicer.data import load_dataset

    test = load_dataset("mnist-digits", "test")
    not_one = int((test.y != 1).nonzero()[0])
    line = cli_error("slice", "--model", cli_files["model"], "--profile", cli_files["profile"],
                     "--quiet", "--classes", "1", "--indices", str(not_one))
    assert "no samples left after --classes/--indices" in line


def test_cli_damaged_profile_and_checkpoint(cli_files, tmp_path: Path) -> None:
    bad = tmp_path / "p.safetensors"
    bad.write_bytes(cli_files["profile"].read_bytes())
    flip_data_byte(bad)
    line = cli_error("slice", "--model", cli_files["model"], "--profile", bad, "--quiet",
                     "--out", tmp_path / "s.safetensors")
    assert "corrupted" in line and str(bad) in line
    line = cli_error("slice", "--model", cli_files["model"], "--quiet",
                     "--profile", cli_files["model"].with_suffix(".safetensors"))
    assert "model weights without an nnslicer header, not a profile" in line
    stem = tmp_path / "lenet"
    for suffix in (".json", ".safetensors"):
        stem.with_suffix(suffix).write_bytes(cli_files["model"].with_suffix(suffix).read_bytes())
    flip_data_byte(stem.with_suffix(".safetensors"))
    line = cli_error("profile", "--model", stem, "--limit", "5", "--quiet",
                     "--out", tmp_path / "p2.safetensors")
    assert "corrupted" in line
    assert not (tmp_path / "p2.safetensors").exists()


def test_cli_model_that_cannot_take_the_data(cli_files, tmp_path: Path) -> None:
    line = cli_error("profile", "--model", cli_files["model"], "--data", "sklearn-digits",
                     "--quiet", "--out", tmp_path / "p.safetensors")
    assert "cannot take the samples of sklearn-digits/train (shape [1, 8, 8])" in line


def test_cli_output_paths(cli_files, tmp_path: Path) -> None:
    line = cli_error("slice", "--model", cli_files["model"], "--profile", cli_files["profile"],
                     "--quiet", "--out", tmp_path)
    assert "is a directory; give a file name inside it" in line
    (tmp_path / "afile").write_text("x")
    line = cli_error("profile", "--model", cli_files["model"], "--quiet",
                     "--out", tmp_path / "afile" / "p.safetensors")
    assert "is a file, not a directory" in line
    line = cli_error("demo", "--out", tmp_path / "afile", "--quiet")
    assert "is a file; give a directory" in line


def test_cli_show_errors(cli_files, tmp_path: Path) -> None:
    a = small_slice(0).save(tmp_path / "a.safetensors")
    other = small_slice(1, classes=5)
    other.meta["model"] = "LeNet5"
    b = other.save(tmp_path / "b.safetensors")
    line = cli_error("show", a, b, "--out", tmp_path / "f.png")
    assert "slices 'a' and 'b' are of different models (a Tiny and a LeNet5)" in line
    line = cli_error("show", a, "--out", tmp_path / "figure")
    assert "give a name ending in .png, .pdf or .svg" in line
    line = cli_error("show", a, cli_files["profile"], "--out", tmp_path / "f.png")
    assert "holds a profile file, not a slice" in line
    assert not (tmp_path / "f.png").exists()


def test_cli_old_file_warns_in_one_line(tmp_path: Path) -> None:
    s = small_slice(0)
    tensors = {f"neurons/{k}": v for k, v in s.neurons.items()}
    tensors.update({f"synapses/{k}": v for k, v in s.synapses.items()})
    header = {"kind": "slice", "meta": s.meta,
              "order": {"neurons": list(s.neurons), "synapses": list(s.synapses)}}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"nnslicer": json.dumps(header)})
    code, output = cli("show", tmp_path / "old.safetensors", "--out", tmp_path / "f.png")
    assert code == 0, output
    warning = [line for line in output.splitlines() if "no checksum" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: slice file ")


@pytest.mark.parametrize(("extra", "says"), [
    (["--lr", "nan"], "--lr must be a positive number, got nan"),
    (["--lr", "-1"], "--lr must be a positive number, got -1.0"),
    (["--arch", "vgg16"], "unknown --arch 'vgg16'; known: lenet5, resnet10, resnet18"),
    (["--epochs", "0"], "Invalid value for '--epochs'"),
    (["--seed", "-1"], "Invalid value for '--seed'"),
])
def test_cli_train_bad_options(tmp_path: Path, extra: list[str], says: str) -> None:
    line = cli_error("train", "--out", tmp_path / "m", "--quiet", *extra)
    assert says in line, line
    assert list(tmp_path.iterdir()) == []


def test_cli_refused_pickle_is_one_line(tmp_path: Path, user_spec: str) -> None:
    torch.save({"1.weight": _RunsCode()}, tmp_path / "evil.pt")
    import pickle

    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"a": _RunsCode()}, protocol=4))
    for weights in ("evil.pt", "raw.pt"):
        code, output = cli("nodes", "--model", user_spec, "--weights", tmp_path / weights)
        assert code == 2 and "UserWarning" not in output and "pickle protocol" not in output
        assert [line[:6] for line in output.splitlines() if line.strip()] == ["error:"], output


# --------------------------------------------------- rows whose code other modules own
# (docs/errors.md lists them; the xfail rows name the change they wait for)


@pytest.fixture(scope="module")
def tiny_slicer() -> nnslicer.Slicer:
    torch.manual_seed(0)
    slicer = nnslicer.Slicer(Tiny().eval())
    slicer.profile([(torch.rand(8, 1, 6, 6), torch.arange(8) % 3)])
    return slicer


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_float_dtypes_are_converted_with_a_note(tiny_slicer, dtype) -> None:
    x = torch.rand(2, 1, 6, 6)
    with pytest.warns(UserWarning, match=f"input is {dtype} but the model's weights are"):
        s = tiny_slicer.slice(x.to(dtype))
    assert s.num_samples == 2


def test_numpy_input_is_accepted(tiny_slicer) -> None:
    x = torch.rand(2, 1, 6, 6)
    a, b = tiny_slicer.slice(x.numpy()), tiny_slicer.slice(x)
    assert all(torch.equal(a.synapses[k], b.synapses[k]) for k in a.synapses)


def test_all_false_target_mask_warns(tiny_slicer) -> None:
    with pytest.warns(UserWarning, match="selects no output neuron"):
        tiny_slicer.slice(torch.rand(2, 1, 6, 6), target=torch.zeros(2, 3, dtype=torch.bool))


def test_profile_of_a_differently_shaped_model_says_what_differs(tiny_slicer) -> None:
    other = Tiny()
    other.fc = nn.Linear(32, 5)
    with pytest.raises(nnslicer.ProfileMismatch) as info:
        nnslicer.Slicer(other.eval()).use_profile(tiny_slicer.current_profile)
    one_line(info, "node 'fc' has shape [5] in the model but [3] in the profile")


def test_theta_given_as_a_string_is_refused() -> None:
    with pytest.raises(nnslicer.InputError, match="theta must be a number in"):
        nnslicer.Slicer(Tiny().eval(), theta="0.2")


def test_profiling_an_array_dataset() -> None:
    from nnslicer.data import ArrayDataset

    data = ArrayDataset(torch.rand(8, 1, 6, 6), torch.arange(8) % 3, "t", ["a", "b", "c"])
    try:
        assert nnslicer.Slicer(Tiny().eval()).profile(data).count == 8
    except nnslicer.InputError as e:
        assert ".batches(" in str(e)


def test_weights_changed_after_profiling_are_noticed() -> None:
    torch.manual_seed(0)
    model = Tiny().eval()
    slicer = nnslicer.Slicer(model)
    slicer.profile([(torch.rand(8, 1, 6, 6), torch.arange(8) % 3)])
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    with pytest.raises(nnslicer.ProfileMismatch):
        slicer.slice(torch.rand(2, 1, 6, 6))


def test_every_row_of_the_matrix_names_a_test_that_exists() -> None:
    """docs/errors.md is the matrix; each test it names is defined where it says."""
    import re

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "errors.md").read_text(encoding="utf-8")
    rows = [line for line in doc.splitlines()
            if line.startswith("| ") and not line.startswith(("| case", "|---"))]
    assert len(rows) >= 60
    for row in rows:
        last = row.rstrip(" |").rsplit("|", 1)[-1]
        names = re.findall(r"`(?:(tests/(?:\w+/)?\w+\.py)::)?(test_\w+)`", last)
        if not names:
            assert last.strip().startswith("—") or last.strip() == "same", row
        for file, name in names:
            source = (root / (file or "tests/cli/test_errors.py")).read_text(encoding="utf-8")
            assert f"def {name}(" in source, (name, row)
