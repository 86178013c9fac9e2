"""Checkpoints: safetensors files whose header carries the JSON metadata, written atomically.

The metadata (config, step, ...) lives inside the safetensors header, so one file holds
everything and a crash mid-write never leaves a tensor file without its metadata. A
human-readable ``.json`` copy is written beside it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from .errors import CheckpointError

__all__ = ["CheckpointError", "atomic_write", "atomic_write_text", "load_checkpoint", "load_module_state",
           "save_checkpoint", "save_npz", "split_prefix"]


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the file into place (os.replace is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_npz(path: Path, **arrays: Any) -> Path:
    """``np.savez`` written atomically (:func:`atomic_write`): an interrupted command leaves the old
    file or none, never a truncated one."""
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, **arrays)

    atomic_write(Path(path), write)
    return Path(path)


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    path = Path(path)
    header = {"scorelab": json.dumps(metadata)}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata=header))
    atomic_write_text(path.with_suffix(".json"), json.dumps(metadata, indent=2))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint; a clear CheckpointError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupted or not a safetensors file ({e})") from None
    if "scorelab" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a scorelab checkpoint (no metadata)")
    try:
        metadata = json.loads(header["scorelab"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path} has corrupted metadata ({e})") from None
    return tensors, metadata


def split_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix.`` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_module_state(module: torch.nn.Module, state: dict[str, Tensor], what: str) -> None:
    """load_state_dict with a clear error when the checkpoint is from another model."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} shape mismatches (e.g. {k}: checkpoint "
                           f"{tuple(state[k].shape)} vs model {tuple(expected[k].shape)})")
        raise CheckpointError(f"{what} does not fit this model: " + "; ".join(details))
    module.load_state_dict(state)
