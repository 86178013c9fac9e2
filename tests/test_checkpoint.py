import pytest
import torch
from safetensors.torch import save_file

from scorelab.checkpoint import CheckpointError, load_checkpoint, load_module_state, save_checkpoint
from scorelab.nets import build_denoiser


def test_checkpoint_round_trips_tensors_and_metadata(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    save_checkpoint(tmp_path / "c.safetensors", tensors, {"step": 7, "config": {"x": [1, 2]}})
    loaded, meta = load_checkpoint(tmp_path / "c.safetensors")
    assert meta == {"step": 7, "config": {"x": [1, 2]}}
    assert torch.equal(loaded["a"], tensors["a"]) and torch.equal(loaded["b"], tensors["b"])
    assert (tmp_path / "c.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_corrupted_and_foreign_files_raise_checkpoint_error(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", {"a": torch.randn(100)}, {"step": 1})
    data = (tmp_path / "c.safetensors").read_bytes()
    (tmp_path / "c.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "c.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.safetensors")
    save_file({"a": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a scorelab checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_a_checkpoint_of_another_model_is_refused_by_name():
    small = build_denoiser("mlp", (2,), 1.0, {"width": 16, "depth": 1})
    big = build_denoiser("mlp", (2,), 1.0, {"width": 32, "depth": 1})
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_module_state(big, small.state_dict(), "checkpoint x")
    unet = build_denoiser("unet", (1, 8, 8), 0.5, {"model_channels": 8})
    with pytest.raises(CheckpointError, match="missing"):
        load_module_state(unet, small.state_dict(), "checkpoint x")
