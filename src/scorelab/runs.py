"""A run directory on disk (DESIGN.md, "Runs on disk"): config.json, checkpoints/, metrics.jsonl,
figures/, samples/, and latent.safetensors for a run trained on PCA codes. A run directory is enough
to resume, sample and analyse."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .checkpoint import CheckpointError, load_checkpoint, load_module_state, save_checkpoint, split_prefix
from .latent import PCA, load_pca, pca_from_tensors
from .nets import EDMPrecond, build_denoiser

if TYPE_CHECKING:
    from .data import MappedImages

CONFIG = "config.json"
METRICS = "metrics.jsonl"
LATENT = "latent.safetensors"
PRETRAINED = "pretrained:"  # prefix of a shipped checkpoint's name where a path is expected
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


def model_path(spec: str | Path) -> Path:
    """The file or run directory named by ``spec``: a path, or ``pretrained:NAME`` for a checkpoint
    shipped with scorelab (``scorelab.pretrained``)."""
    if str(spec).startswith(PRETRAINED):
        from .pretrained import pretrained_path

        return pretrained_path(str(spec)[len(PRETRAINED):])
    return Path(spec)


def load_denoiser(path: str | Path, weights: str = "ema",
                  device: str | torch.device = "cpu") -> tuple[EDMPrecond, dict[str, Any]]:
    """The denoiser of a run directory (its latest checkpoint), of one checkpoint or exported weights
    file, or of ``pretrained:NAME``, in eval mode, with the checkpoint's metadata. ``weights`` is
    "ema" or "model"."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    path = model_path(path)
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


def load_codec(path: str | Path, meta: dict[str, Any]) -> PCA | None:
    """The latent codec (``scorelab.latent.PCA``) of the run directory or checkpoint file ``path``
    whose metadata :func:`load_denoiser` returned as ``meta``; None for a model of the data itself.
    Codes sampled from the denoiser become examples by ``codec.decode``. An exported weights file
    carries its codec inside (tensors ``latent.*``); a checkpoint uses its run's ``latent.safetensors``."""
    spec = (meta.get("config") or {}).get("latent")
    if not spec:
        return None
    path = Path(path)
    codec = None
    if path.is_file() and (inside := split_prefix(load_checkpoint(path)[0], "latent")):
        codec = pca_from_tensors(inside, f"checkpoint {path}")
    if codec is None:
        file = (path if path.is_dir() else path.parent.parent) / LATENT
        if not file.is_file():
            raise CheckpointError(f"{path} is a model of {spec} codes, but its codec {file} is missing")
        codec = load_pca(file)
    if [codec.n_components] != list(meta.get("data_shape", [])):
        raise CheckpointError(f"the codec of {path} has {codec.n_components} components but the model was "
                              f"trained on codes of shape {meta.get('data_shape')}")
    return codec


def training_data(path: str | Path, meta: dict[str, Any]) -> Tensor | MappedImages:
    """The training set of a run as its model saw it: loaded by the run's config and, for a latent
    run, encoded by its codec (so analytical models and teleportation live in the model's space)."""
    from .data import MappedImages, load_dataset

    config = meta["config"]
    data = load_dataset(config["data"], n=config.get("n_data", 100_000), seed=config.get("seed", 0))
    if isinstance(data, MappedImages):  # the analyses need the whole set in memory
        data = data[:]
    codec = load_codec(path, meta)
    return codec.encode(data) if codec is not None else data


EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_weights(source: str | Path, out: str | Path, weights: str = "ema", dtype: str = "float32") -> Path:
    """A weights-only checkpoint of a run (its latest checkpoint) or of a checkpoint file: the
    ``weights`` tensors ("ema" or "model") stored as ``dtype``, with the model metadata and the
    training step, loadable by :func:`load_denoiser`; no optimizer or RNG state, so it cannot resume.
    Half precision halves the file; the loader casts the weights back to float32. A latent run's
    codec is stored inside, at full precision."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    source = Path(source)
    denoiser, meta = load_denoiser(source, weights=weights)
    codec = load_codec(source, meta)
    if source.is_dir():
        source = latest_checkpoint(source) or source
    tensors = {f"{weights}.{k}": v.to(EXPORT_DTYPES[dtype]) if v.is_floating_point() else v
               for k, v in denoiser.state_dict().items()}
    if codec is not None:
        tensors.update({f"latent.{k}": v for k, v in codec.state_dict().items()})
    exported = {"weights": weights, "dtype": dtype, "source": source.name}
    meta = {k: v for k, v in meta.items() if k != "optimizer"} | {"exported": exported}
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"the exported file must end in .safetensors, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, tensors, meta)
    return out
