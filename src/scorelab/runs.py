"""A run directory on disk (DESIGN.md, "Runs on disk"): config.json, checkpoints/, metrics.jsonl,
figures/, samples/. A run directory is enough to resume, sample and analyse."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, load_checkpoint, load_module_state, save_checkpoint, split_prefix
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
    if not split_prefix(tensors, weights):
        held = sorted({k.split(".", 1)[0] for k in tensors} & {"ema", "model"})
        raise CheckpointError(f"checkpoint {path} holds no {weights!r} weights (it holds: {', '.join(held) or 'none'})")
    try:
        config = meta["config"]
        denoiser = build_denoiser(config["model"], meta["data_shape"], config["sigma_data"],
                                  config.get("model_options"))
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} lacks model information ({e})") from None
    load_module_state(denoiser, split_prefix(tensors, weights), f"checkpoint {path}")
    return denoiser.to(device).eval().requires_grad_(False), meta


EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_weights(source: str | Path, out: str | Path, weights: str = "ema", dtype: str = "float32") -> Path:
    """A weights-only checkpoint of a run (its latest checkpoint) or of a checkpoint file: the
    ``weights`` tensors ("ema" or "model") stored as ``dtype``, with the model metadata and the
    training step, loadable by :func:`load_denoiser`; no optimizer or RNG state, so it cannot resume.
    Half precision halves the file; the loader casts the weights back to float32."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    source = Path(source)
    denoiser, meta = load_denoiser(source, weights=weights)
    if source.is_dir():
        source = latest_checkpoint(source) or source
    tensors = {f"{weights}.{k}": v.to(EXPORT_DTYPES[dtype]) if v.is_floating_point() else v
               for k, v in denoiser.state_dict().items()}
    exported = {"weights": weights, "dtype": dtype, "source": source.name}
    meta = {k: v for k, v in meta.items() if k != "optimizer"} | {"exported": exported}
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"the exported file must end in .safetensors, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, tensors, meta)
    return out
