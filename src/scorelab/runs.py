"""A run directory on disk (DESIGN.md, "Runs on disk"): config.json, checkpoints/, metrics.jsonl,
figures/, samples/. A run directory is enough to resume, sample and analyse."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, load_checkpoint, load_module_state, split_prefix
from .nets import EDMPrecond, build_denoiser

CONFIG = "config.json"
METRICS = "metrics.jsonl"
_STEP = re.compile(r"step-(\d+)\.safetensors$")


def checkpoint_path(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}.safetensors"


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, path) of the run's checkpoints, oldest first."""
    found = []
    for p in (run / "checkpoints").glob("step-*.safetensors"):
        m = _STEP.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run: Path) -> Path | None:
    found = checkpoints(run)
    return found[-1][1] if found else None


def read_config(run: Path) -> dict[str, Any]:
    path = run / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{run} is not a scorelab run (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is corrupted ({e})") from None


def load_denoiser(path: str | Path, weights: str = "ema",
                  device: str | torch.device = "cpu") -> tuple[EDMPrecond, dict[str, Any]]:
    """The denoiser of a run directory (its latest checkpoint) or of one checkpoint file, in eval
    mode, with the checkpoint's metadata. ``weights`` is "ema" or "model"."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    path = Path(path)
    if path.is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise CheckpointError(f"run {path} has no checkpoint yet")
        path = ckpt
    tensors, meta = load_checkpoint(path)
    try:
        config = meta["config"]
        denoiser = build_denoiser(config["model"], meta["data_shape"], config["sigma_data"],
                                  config.get("model_options"))
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} lacks model information ({e})") from None
    load_module_state(denoiser, split_prefix(tensors, weights), f"checkpoint {path}")
    return denoiser.to(device).eval().requires_grad_(False), meta
