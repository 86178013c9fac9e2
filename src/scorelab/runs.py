"""A run on disk and the :class:`Run` object that opens it. A run directory holds config.json,
checkpoints/, metrics.jsonl, figures/, samples/, and latent.safetensors for a run trained on PCA codes;
it is enough to resume, sample and analyse. A checkpoint or exported weights file, or a model shipped
with scorelab (``pretrained:NAME``), opens the same way."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .analytic import Gaussian
from .checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
    split_prefix,
)
from .denoiser import sigma_range
from .external import DIFFUSERS, load_diffusers
from .latent import PCA, load_pca, pca_from_tensors
from .nets import EDMPrecond, build_denoiser

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


class Run:
    """A trained model, however it is named: a run directory (its latest checkpoint), one checkpoint
    or exported weights file, ``pretrained:NAME`` (a model shipped with scorelab), or
    ``diffusers:PATH`` (a diffusers model folder or Hub id, wrapped as a denoiser by
    :mod:`scorelab.external`).

    It holds the checkpoint's metadata and what follows from it: the ``config`` the model was trained
    with, the ``data_shape`` of one example, the ``denoiser`` (EMA or raw weights, in eval mode), the
    latent ``codec`` of a run trained on PCA codes (None otherwise), its range of noise levels, the
    training data as the model saw it (``data`` names another reference set, and is needed for a model
    trained elsewhere), and the folders its outputs go to. Open one with :meth:`Run.open`."""

    def __init__(self, spec: str | Path, checkpoint: Path, meta: dict[str, Any], denoiser: nn.Module,
                 codec: PCA | None, weights: str, home: Path | None, device: torch.device,
                 data: str | None = None) -> None:
        self.spec, self.checkpoint, self.meta, self.denoiser = str(spec), checkpoint, meta, denoiser
        self.codec, self.weights, self.home, self.device = codec, weights, home, device
        self.data = data or (meta.get("config") or {}).get("data")
        self._gaussian: Gaussian | None = None

    @classmethod
    def open(cls, spec: str | Path, *, weights: str = "ema", device: str | torch.device = "cpu",
             data: str | None = None, class_label: int | None = None) -> Run:
        """The model named by ``spec`` with its ``weights`` ("ema" or "model") on ``device``; a clear
        :class:`CheckpointError` for a missing, corrupted or foreign file. ``data`` is the reference set
        of :meth:`training_data` (default: the run's training data); ``class_label`` is the class a
        class-conditional diffusers model generates."""
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        device = torch.device(device)
        if str(spec).startswith(DIFFUSERS):
            if weights != "ema":
                raise ValueError(f"{spec} holds one set of weights: --weights applies to scorelab checkpoints")
            source = str(spec)[len(DIFFUSERS):]
            wrapped, meta = load_diffusers(source, class_label=class_label)
            return cls(spec, Path(source), meta, wrapped.to(device), None, weights, None, device, data)
        if class_label is not None:
            raise ValueError(f"{spec} is not class-conditional: --class applies to diffusers models")
        path = model_path(spec)
        home: Path | None = path if path.is_dir() else _run_of(path)
        run_dir = path if path.is_dir() else None
        if run_dir is not None:
            ckpt = latest_checkpoint(run_dir)
            if ckpt is None:
                raise CheckpointError(f"run {run_dir} has no checkpoint yet")
            path = ckpt
        try:
            tensors, meta = load_checkpoint(path)
        except CheckpointError as e:
            intact = _older_intact(run_dir, path) if run_dir is not None else None
            if intact is None:
                raise
            raise CheckpointError(f"{e}. The run's newest intact checkpoint is {intact}: open that file, or "
                                  "resume training, which falls back to it") from None
        denoiser = _denoiser(tensors, meta, weights, path)
        codec = _codec(tensors, meta, path, home)
        if str(spec).startswith(PRETRAINED):
            home = None
        return cls(spec, path, meta, denoiser.to(device).eval().requires_grad_(False), codec, weights, home, device,
                   data)

    @property
    def config(self) -> dict[str, Any]:
        """The training configuration (``TrainConfig`` as a dict)."""
        return self.meta["config"]

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of one example the model generates (a code's for a latent run)."""
        return tuple(self.meta["data_shape"])

    @property
    def step(self) -> int | None:
        """The training step of the weights."""
        return self.meta.get("step")

    @property
    def name(self) -> str:
        """How outputs name the model: the shipped name, the diffusers folder's name or Hub id
        (``owner--name``), or the path."""
        if self.spec.startswith(DIFFUSERS):
            source = self.spec[len(DIFFUSERS):].rstrip("/")
            return Path(source).name if Path(source).exists() else source.replace("/", "--")
        return self.spec.removeprefix(PRETRAINED)

    @property
    def sigma_range(self) -> tuple[float, float]:
        """The noise levels the model knows: a wrapped model's own range, else EDM's default grid's
        (0.002 .. 80; our networks are defined at every sigma > 0)."""
        return sigma_range(self.denoiser) or (0.002, 80.0)

    def uniform_levels(self, n: int) -> Tensor:
        """``n`` of the model's own discrete levels uniform in t, then 0 (DDIM's timesteps), for a
        wrapped VP model; a clear error for a model without levels."""
        levels = getattr(self.denoiser, "uniform_levels", None)
        if levels is None:
            raise ValueError(f"{self.spec} has no noise levels of its own (a model trained by scorelab samples on any "
                             "grid): use the Karras grid")
        return levels(n)

    def decode(self, z: Tensor) -> Tensor:
        """Examples from what the denoiser generates: a latent run's codes decoded (on the CPU), else ``z``."""
        return z if self.codec is None else self.codec.decode(z.cpu())

    def training_data(self) -> Tensor:
        """The training set as the model saw it: loaded by the run's config (all of it in memory) and,
        for a latent run, encoded by its codec, so analytical models and teleportation live in the
        model's space."""
        from .data import MappedImages, load_dataset

        if not self.data:
            raise ValueError(f"{self.spec} carries no record of its training data: name the reference set the "
                             "analyses fit their models on with --data (a folder, .npz, CIFAR-10 batches, ...)")
        data = load_dataset(self.data, n=self.config.get("n_data", 100_000), seed=self.config.get("seed", 0))
        if isinstance(data, MappedImages):
            data = data[:]
        if tuple(data.shape[1:]) != (self.data_shape if self.codec is None else self.codec.shape):
            raise ValueError(f"{self.data}: examples of shape {tuple(data.shape[1:])}, the model's are {self.data_shape}")
        return data if self.codec is None else self.codec.encode(data)

    def gaussian(self) -> Gaussian:
        """The Gaussian fitted to :meth:`training_data` (fitted once, on the denoiser's device)."""
        if self._gaussian is None:
            self._gaussian = Gaussian.fit(self.training_data()).to(self.device)
        return self._gaussian

    def output_dir(self, kind: str, name: str) -> Path:
        """Where an output of ``kind`` (samples, inpaint, eval, analysis) named ``name`` goes by default:
        ``RUN/KIND/NAME`` beside the run (or the weights file), ``KIND/MODEL/NAME`` for a shipped model."""
        return (self.home / kind if self.home is not None else Path(kind) / self.name) / name

    def auto_skip(self, sigmas: Tensor, threshold: float, *, n_probe: int = 64) -> int:
        """:func:`scorelab.sample.auto_skip` for this model on the grid ``sigmas``, probed with ``n_probe``
        seeds from 1 000 000 on: measured once per checkpoint step, weights, grid and threshold and cached
        in ``teleport.json`` beside the run."""
        from .sample import auto_skip, noise_for_seeds

        grid = ",".join(f"{s:.9g}" for s in sigmas.tolist())
        key = (f"step={self.step}:weights={self.weights}:grid={hashlib.sha256(grid.encode()).hexdigest()[:12]}:"
               f"threshold={threshold:g}")
        cache = self.output_dir("samples", "teleport.json") if self.home is None else self.home / "teleport.json"
        known = json.loads(cache.read_text()) if cache.is_file() else {}
        if key not in known:
            probe, _ = noise_for_seeds(range(1_000_000, 1_000_000 + n_probe), self.data_shape, device=self.device)
            with torch.no_grad():
                known[key] = auto_skip(self.denoiser, self.gaussian(), probe * float(sigmas[0]), sigmas, threshold)
            atomic_write_text(cache, json.dumps(known, indent=2))
        return int(known[key])


WEIGHTS = ("ema", "model")


def _older_intact(run: Path, newest: Path) -> Path | None:
    """The newest checkpoint of ``run`` older than ``newest`` that loads, or None."""
    for _, path in reversed(checkpoints(run)):
        if path != newest:
            try:
                load_checkpoint(path)
            except CheckpointError:
                continue
            return path
    return None


def _run_of(file: Path) -> Path:
    """The folder a file's outputs go beside: its run for a checkpoint in ``RUN/checkpoints/``, else its folder."""
    run = file.parent.parent
    return run if file.parent.name == "checkpoints" and (run / CONFIG).is_file() else file.parent


def _denoiser(tensors: dict[str, Tensor], meta: dict[str, Any], weights: str, path: Path) -> EDMPrecond:
    if not split_prefix(tensors, weights):
        held = sorted({k.split(".", 1)[0] for k in tensors} & set(WEIGHTS))
        raise CheckpointError(f"checkpoint {path} holds no {weights!r} weights (it holds: {', '.join(held) or 'none'})")
    try:
        config = meta["config"]
        denoiser = build_denoiser(config["model"], meta["data_shape"], config["sigma_data"],
                                  config.get("model_options"))
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} lacks model information ({e})") from None
    load_module_state(denoiser, split_prefix(tensors, weights), f"checkpoint {path}")
    return denoiser


def _codec(tensors: dict[str, Tensor], meta: dict[str, Any], path: Path, home: Path | None) -> PCA | None:
    """The latent codec of a run trained on PCA codes: inside an exported weights file (tensors
    ``latent.*``), else the run's ``latent.safetensors``; None for a model of the data itself."""
    spec = (meta.get("config") or {}).get("latent")
    if not spec:
        return None
    inside = split_prefix(tensors, "latent")
    if inside:
        codec = pca_from_tensors(inside, f"checkpoint {path}")
    else:
        file = (home or path.parent) / LATENT
        if not file.is_file():
            raise CheckpointError(f"{path} is a model of {spec} codes, but its codec {file} is missing")
        codec = load_pca(file)
    if [codec.n_components] != list(meta.get("data_shape", [])):
        raise CheckpointError(f"the codec of {path} has {codec.n_components} components but the model was "
                              f"trained on codes of shape {meta.get('data_shape')}")
    return codec


def load_denoiser(spec: str | Path, weights: str = "ema",
                  device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The denoiser and metadata of :meth:`Run.open` ``(spec, weights=weights, device=device)``."""
    run = Run.open(spec, weights=weights, device=device)
    return run.denoiser, run.meta


EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_weights(source: str | Path, out: str | Path, weights: str = "ema", dtype: str = "float32") -> Path:
    """A weights-only checkpoint of a run (its latest checkpoint) or of a checkpoint file: the
    ``weights`` tensors ("ema" or "model") stored as ``dtype``, with the model metadata and the
    training step, loadable by :func:`load_denoiser`; no optimizer or RNG state, so it cannot resume.
    Half precision halves the file; the loader casts the weights back to float32. A latent run's
    codec is stored inside, at full precision."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    if str(source).startswith(DIFFUSERS):
        raise ValueError(f"{source} is a diffusers model: it is already saved in its own format")
    run = Run.open(source, weights=weights)
    tensors = {f"{weights}.{k}": v.to(EXPORT_DTYPES[dtype]) if v.is_floating_point() else v
               for k, v in run.denoiser.state_dict().items()}
    if run.codec is not None:
        tensors.update({f"latent.{k}": v for k, v in run.codec.state_dict().items()})
    exported = {"weights": weights, "dtype": dtype, "source": run.checkpoint.name}
    meta = {k: v for k, v in run.meta.items() if k != "optimizer"} | {"exported": exported}
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"the exported file must end in .safetensors, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, tensors, meta)
    return out
