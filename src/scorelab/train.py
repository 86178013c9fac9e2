"""The training loop, one for every model and loss: Adam with LR warm-up, EMA of the weights,
a non-finite guard, atomic checkpoints, exact resume, metrics.jsonl and a progress bar."""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import __version__
from . import distributed as dist
from .analytic import Gaussian
from .checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
    split_prefix,
)
from .data import load_dataset
from .data.formats import MappedImages
from .denoiser import Denoiser
from .errors import DataError, TrainingError
from .latent import fit_or_load, parse_latent, save_pca
from .losses import EDMLoss, Loss, NCSNLoss, ScoreMatching
from .nets import RESIDUAL, EDMPrecond, GaussianResidual, build_denoiser
from .runs import (
    CONFIG,
    LATENT,
    METRICS,
    checkpoint_path,
    checkpoints,
    latest_checkpoint,
    load_denoiser,
    read_config,
)
from .schedules import parse_levels

LOSSES = ("edm", "ncsn", "ncsn-continuous", "ssm", "ssm-vr", "esm")
PRECISIONS = ("fp32", "bf16")
LR_DECAYS = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Every setting of a run; saved as config.json so the run can be repeated."""

    data: str = "gmm3"
    model: str = "mlp"
    loss: str = "edm"
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 100            # steps of linear learning-rate warm-up
    lr_decay: str = "constant"   # after the warm-up: "constant", or "cosine" down to 0 at the last step
    ema_halflife: float = 500.0  # EMA half-life in steps (EDM's ema_halflife_kimg, in steps)
    ema_rampup: float = 0.1      # half-life at most ema_rampup * step early on (EDM)
    seed: int = 0
    levels: str = "geometric:1:0.01:10"  # NCSN noise levels, KIND:SIGMA_MAX:SIGMA_MIN:L (losses ncsn, ncsn-continuous)
    sigma_data: float | None = None  # None: the data's standard deviation
    P_mean: float | None = None      # None: -1.2 + ln(sigma_data / 0.5), EDM's shifted to the data scale
    P_std: float = 1.2
    n_data: int = 100_000            # samples drawn for a toy dataset
    model_options: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 50
    device: str = "auto"
    track: list[str] = field(default_factory=list)  # analytical models to compare the network with while training
    track_sigmas: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0])
    track_every: int = 0                            # 0: no tracking (analysis.dynamics)
    latent: str | None = None  # e.g. 'pca:20', 'pca:0.95', 'pca:elbow': train on PCA codes (scorelab.latent)
    tensorboard: bool = False  # also log to RUN/tensorboard: scalars, and EMA samples at checkpoints (tblog)
    precision: str = "fp32"      # "bf16": the forward pass under bfloat16 autocast (benchmarks/RESULTS.md)
    compile: bool = False        # torch.compile the training forward pass
    init: str | None = None      # start from these weights (EDM's --transfer): run, weights file or pretrained:NAME

    # Settings that may change when a run is resumed; all others must match. ``data`` may name the
    # same data at another path (a run resumed from another folder, or after the data moved).
    RESUMABLE = ("data", "steps", "checkpoint_every", "keep_checkpoints", "log_every", "device", "track", "track_sigmas",
                 "track_every", "tensorboard", "precision", "compile")

    def validate(self) -> None:
        """Every setting in range, before a run writes anything: a clear ValueError naming the first
        that is not (or a TrainingError for a missing optional package)."""
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "n_data", "keep_checkpoints"):
            _check_int(name, getattr(self, name), 1)
        _check_int("warmup", self.warmup, 0)
        _check_int("track_every", self.track_every, 0)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        for name in ("lr", "ema_halflife", "P_std"):
            _check_float(name, getattr(self, name), positive=True)
        _check_float("ema_rampup", self.ema_rampup, positive=False)
        if self.sigma_data is not None:
            _check_float("sigma_data", self.sigma_data, positive=True)
        if self.P_mean is not None:
            _check_float("P_mean", self.P_mean, positive=False, signed=True)
        if self.track_every > 0 and not self.track:
            raise ValueError("tracking (track_every > 0) needs at least one model in track")
        for sigma in self.track_sigmas:
            _check_float("each of track_sigmas", sigma, positive=True)
        if self.tensorboard:
            from .tblog import summary_writer

            summary_writer()
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.loss.startswith("ncsn"):
            parse_levels(self.levels)
        if self.latent is not None:
            parse_latent(self.latent)
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, got {self.lr_decay!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class TrainState:
    """Everything that changes during training and is saved in a checkpoint."""

    model: EDMPrecond
    ema: EDMPrecond
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    skipped: int = 0


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        where = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {where}, got {value!r}")


def _check_float(name: str, value: Any, *, positive: bool, signed: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (positive and value <= 0) or (not positive and not signed and value < 0):
        bound = "> 0" if positive else ("" if signed else ">= 0")
        raise ValueError(f"{name} must be a finite number {bound}".rstrip() + f", got {value!r}")


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is a GPU, else the CPU) or a device torch knows and this machine has;
    a clear error otherwise, before any work."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this machine has no CUDA GPU that torch {torch.__version__} can use")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available on this machine")
    return device


def lr_at(step: int, lr: float, warmup: int, decay: str = "constant", steps: int = 0) -> float:
    """Linear warm-up over the first ``warmup`` steps, then constant, or with ``decay="cosine"`` a
    half cosine from ``lr`` down to 0 at step ``steps`` (Loshchilov & Hutter 2017, SGDR, eq. 5 with
    one cycle and no restart): for a fixed budget it ends on the small steps that EMA otherwise has
    to average over."""
    if warmup > 0 and step < warmup:
        return lr * step / warmup
    if decay == "cosine" and steps > warmup:
        progress = min(1.0, (step - warmup) / (steps - warmup))
        return lr * 0.5 * (1 + math.cos(math.pi * progress))
    return lr


def ema_beta(step: int, halflife: float, rampup: float) -> float:
    """Per-step EMA decay with half-life ``halflife`` steps, ramped up as min(halflife, rampup*step)."""
    h = min(halflife, rampup * step) if rampup > 0 else halflife
    return 0.5 ** (1 / max(h, 1e-8))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - beta)


def resolve_config(config: TrainConfig, data: Tensor | MappedImages) -> TrainConfig:
    """Fill in the data-dependent defaults (sigma_data, P_mean). Memory-mapped images give the std
    of a fixed subsample (MappedImages.std) and cannot fit the Gaussians of residual models or tracking."""
    if isinstance(data, MappedImages) and _needs_gaussian(config):
        raise TrainingError(f"{config.data}: memory-mapped images cannot fit the Gaussian that model "
                            f"{config.model!r} or tracking needs; load the data in memory (without 'mmap:')")
    if config.sigma_data is not None:
        sigma_data = config.sigma_data
    else:
        sigma_data = data.std() if isinstance(data, MappedImages) else float(data.double().std())
    if not sigma_data > 0:
        raise TrainingError("the data have zero variance; pass sigma_data explicitly")
    P_mean = config.P_mean if config.P_mean is not None else -1.2 + math.log(sigma_data / 0.5)
    options = dict(config.model_options)
    if config.model.endswith(RESIDUAL) and "gaussian_rank" not in options:
        options["gaussian_rank"] = Gaussian.fit(_in_memory(data)).rank
    return replace(config, sigma_data=sigma_data, P_mean=P_mean, model_options=options)


def _needs_gaussian(config: TrainConfig) -> bool:
    """Whether the run fits the data's Gaussian: a residual model's bypass, or tracking."""
    return config.model.endswith(RESIDUAL) or config.track_every > 0


def _in_memory(data: Tensor | MappedImages) -> Tensor:
    """``data`` as one tensor (a memory-mapped set read whole)."""
    return data[:] if isinstance(data, MappedImages) else data


def _resolved(value: float | None, name: str) -> float:
    if value is None:
        raise ValueError(f"{name} is not resolved yet: pass the config through resolve_config first")
    return value


def build_state(config: TrainConfig, data: Tensor | MappedImages, device: torch.device) -> TrainState:
    torch.manual_seed(config.seed)  # network initialisation
    model = build_denoiser(config.model, tuple(data.shape[1:]), _resolved(config.sigma_data, "sigma_data"),
                           config.model_options)
    if isinstance(model, GaussianResidual):  # the bypass: the training data's Gaussian, fitted once
        fitted = Gaussian.fit(_in_memory(data).cpu(), rank=config.model_options["gaussian_rank"])
        model.gaussian.load_state_dict(fitted.state_dict())
    model = model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr_at(0, config.lr, config.warmup, config.lr_decay,
                                                              config.steps))
    generator = torch.Generator(device).manual_seed(config.seed)
    return TrainState(model, ema, optimizer, generator)


def start_from(state: TrainState, source: str) -> None:
    """Fine-tuning (EDM's ``--transfer``): the model and its EMA start from the EMA weights of
    ``source`` (a run directory, a checkpoint or exported weights file, or ``pretrained:NAME``); the
    optimizer, the step count and the random state start fresh. The source's weights must fit this
    network (the same model and options), else a clear error; a UNet's also fit another image size
    with the same number of levels (32x32 and 64x64), which makes fine-tuning across sizes possible."""
    weights = load_denoiser(source)[0].state_dict()
    for module in (state.model, state.ema):
        load_module_state(module, weights, f"--init {source}")


def state_tensors(state: TrainState) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state as flat tensors plus JSON-able optimizer hyper-parameters."""
    tensors = {f"model.{k}": v for k, v in state.model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in state.ema.state_dict().items()})
    opt = state.optimizer.state_dict()
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value)
    tensors["rng.train"] = state.generator.get_state()
    return tensors, {"param_groups": opt["param_groups"]}


def restore_state(state: TrainState, tensors: dict[str, Tensor], meta: dict[str, Any], where: Path) -> None:
    load_module_state(state.model, split_prefix(tensors, "model"), f"checkpoint {where}")
    load_module_state(state.ema, split_prefix(tensors, "ema"), f"checkpoint {where}")
    optim: dict[int, dict[str, Tensor]] = {}
    for key, value in split_prefix(tensors, "optim").items():
        idx, name = key.split(".", 1)
        optim.setdefault(int(idx), {})[name] = value
    try:
        state.optimizer.load_state_dict({"state": optim, "param_groups": meta["optimizer"]["param_groups"]})
        state.generator.set_state(tensors["rng.train"].cpu())
        state.step, state.skipped = int(meta["step"]), int(meta.get("skipped", 0))
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {where} has an incomplete training state ({e})") from None


def save_state(run: Path, state: TrainState, config: TrainConfig, data_shape: tuple[int, ...]) -> Path:
    tensors, optimizer = state_tensors(state)
    meta = {"format": 1, "scorelab_version": __version__, "step": state.step, "skipped": state.skipped,
            "config": asdict(config), "data_shape": list(data_shape), "optimizer": optimizer}
    path = checkpoint_path(run, state.step)
    save_checkpoint(path, tensors, meta)
    for _, old in checkpoints(run)[:-config.keep_checkpoints]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


@contextmanager
def stop_requests() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C or SIGTERM, so the loop stops between two steps and saves;
    a second Ctrl-C interrupts at once."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum: int, frame: Any) -> None:
        if event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        event.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def adopt_resolved(config: TrainConfig, saved: dict[str, Any]) -> TrainConfig:
    """``config`` with the data-dependent defaults it leaves open (sigma_data, P_mean) taken from a
    saved run, so resuming does not depend on how a reduction over the data rounds (thread count,
    library version)."""
    resolved = {k: saved[k] for k in ("sigma_data", "P_mean") if getattr(config, k) is None and k in saved}
    return replace(config, **resolved)


def check_resumable(run: Path, config: TrainConfig) -> None:
    saved = read_config(run)
    for key, value in asdict(config).items():
        if key not in TrainConfig.RESUMABLE and saved.get(key) != value:
            raise TrainingError(f"cannot resume {run}: setting {key!r} is {value!r} now but "
                                f"{saved.get(key)!r} in the run")


def restore_latest(state: TrainState, run: Path, device: torch.device) -> tuple[Path | None, list[Path]]:
    """Restore ``state`` from the run's newest checkpoint that loads; returns it (None when the run
    has none) and the newer ones that did not load (corrupted or truncated by a crash). A run whose
    every checkpoint is unreadable is an error naming them."""
    failed: list[tuple[Path, CheckpointError]] = []
    for _, path in reversed(checkpoints(run)):
        try:
            tensors, meta = load_checkpoint(path, device)
            restore_state(state, tensors, meta, path)
        except CheckpointError as e:
            failed.append((path, e))
            continue
        return path, [p for p, _ in failed]
    if failed:
        raise CheckpointError(f"no checkpoint of {run} can be read: " + "; ".join(str(e) for _, e in failed))
    return None, []


def remove_stale_temporaries(run: Path) -> None:
    """Delete the temporary files an interrupted atomic write left (``.NAME.XXXX.tmp``) in the run."""
    for folder in (run, run / "checkpoints"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (written before a crash, then redone on resume), and a
    line a kill cut short."""
    if path.is_file():
        atomic_write_text(path, "".join(line + "\n" for line in path.read_text().splitlines()
                                        if (logged := _logged_step(line)) is not None and logged <= step))


def _logged_step(line: str) -> int | None:
    """The step of a metrics line, or None for a blank or torn one."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class TrainResult:
    run: Path
    step: int
    checkpoint: Path
    interrupted: bool
    last_loss: float


Callback = Callable[[TrainState], "dict[str, Any] | None"]
Network = Callable[..., Tensor]  # the module, or it wrapped by DistributedDataParallel or torch.compile


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
          callbacks: list[Callback] | None = None, stop: threading.Event | None = None) -> TrainResult:
    """Train a denoiser into the run directory ``out``; with ``resume`` continue from its latest
    checkpoint (exactly: optimizer, EMA and RNG state are restored). Stops cleanly between two
    steps on Ctrl-C/SIGTERM or when ``stop`` is set, leaving a resumable checkpoint.

    Under torchrun every rank trains on its shard of each global batch with DistributedDataParallel
    (``scorelab.distributed``); the trajectory is that of one process with the same ``batch_size``.
    ``callbacks`` run on every rank after every step (one that changes the state must do so alike on all
    ranks) and only rank 0 writes the metrics they return; the built-in tracking (``track_every``) runs on
    rank 0 alone."""
    config.validate()
    device = dist.device_for(resolve_device(config.device))
    with dist.process_group(device):
        dist.shard(config.batch_size)  # a clear error before any work when the batch does not divide
        return _train(config, Path(out), device, resume, progress, callbacks, stop)


def _train(config: TrainConfig, run: Path, device: torch.device, resume: bool, progress: bool,
           callbacks: list[Callback] | None, stop: threading.Event | None) -> TrainResult:
    try:
        data = load_dataset(config.data, n=config.n_data, seed=config.seed)
    except DataError as e:
        if resume and not Path(config.data).is_absolute():
            raise DataError(f"{e}. A relative path in {run / CONFIG} is relative to the folder the run was "
                            "started in: resume from there, or pass --data with the same data's path") from e
        raise
    codec = None
    if config.latent:  # the model sees the codes (PCA fitted on the whole set); resume reuses the saved codec
        codec = fit_or_load(config.latent, _in_memory(data), run / LATENT if resume else None)
        data = codec.encode(_in_memory(data))
    if resume and (run / CONFIG).exists():  # the run's own sigma_data: a recomputed std may differ in the last bits
        config = adopt_resolved(config, read_config(run))
    config = resolve_config(config, data)
    if resume:
        check_resumable(run, config)
    elif (run / CONFIG).exists() and latest_checkpoint(run) is not None:
        raise TrainingError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
    callbacks = list(callbacks or []) + _tracking(config, data)
    data = data.to(device)
    state = build_state(config, data, device)
    ckpt, corrupt = restore_latest(state, run, device) if resume else (None, [])
    if ckpt is None and config.init is not None:
        start_from(state, config.init)
    dist.barrier()  # every rank has read the run before rank 0 writes to it
    if dist.is_main():
        if (run / CONFIG).exists() and not resume:
            tqdm.write(f"{run} holds a run that never reached a checkpoint: starting it again")
        for path in corrupt:  # moved aside, so that nothing loads them again, and kept for inspection
            path.replace(path.with_name(path.name + ".corrupt"))
            path.with_suffix(".json").unlink(missing_ok=True)
        if corrupt:
            tqdm.write(f"resumed from {ckpt} (step {state.step}); the newer, unreadable checkpoint(s) "
                       f"{', '.join(p.name for p in corrupt)} were renamed *.corrupt")
        truncate_metrics(run / METRICS, state.step)
        remove_stale_temporaries(run)
        run.mkdir(parents=True, exist_ok=True)
        if codec is not None:
            save_pca(run / LATENT, codec, config.latent)
        atomic_write_text(run / CONFIG, json.dumps(asdict(config), indent=2))
    dist.barrier()
    loss_fn = build_loss(config)
    net: Network = state.model
    if dist.active():
        device_ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
    if config.compile:  # the parameters stay state.model's: checkpoints and EMA see the plain module
        net = torch.compile(net)
    return _loop(config, run, data, state, loss_fn, progress and dist.is_main(), callbacks, stop, net)


def _tracking(config: TrainConfig, data: Tensor | MappedImages) -> list[Callback]:
    """The built-in tracking callback (``track_every``, ``analysis.dynamics``) on rank 0 only: only rank 0
    writes metrics, and the ranks' weights are identical, so the others would fit and measure for nothing."""
    if config.track_every == 0 or not dist.is_main():
        return []
    from .analysis.dynamics import gaussianity_callback

    return [gaussianity_callback(_in_memory(data), config.track, config.track_sigmas, config.track_every,
                                 seed=config.seed)]


def build_loss(config: TrainConfig) -> Loss:
    """The objective named by ``config.loss``: EDM's, NCSN's over ``config.levels`` (discrete or
    log-uniform), or sliced / variance-reduced sliced / exact score matching (score read at sigma 1)."""
    if config.loss == "edm":
        return EDMLoss(_resolved(config.sigma_data, "sigma_data"), _resolved(config.P_mean, "P_mean"), config.P_std)
    if config.loss.startswith("ncsn"):
        return NCSNLoss(tuple(parse_levels(config.levels).tolist()), continuous=config.loss == "ncsn-continuous")
    return ScoreMatching({"ssm": "sliced", "ssm-vr": "sliced-vr", "esm": "exact"}[config.loss])


def _on_shard(model: Network, part: slice) -> Denoiser:
    """A denoiser that runs ``model`` on the rows ``part`` of the batch only; the other rows come back as
    their (detached) input, so a loss drawing its noise for the whole batch computes this rank's rows
    exactly as one process would, and costs the network nothing for the others. The score-matching losses,
    which differentiate with respect to x, see a zero score with a constant Jacobian on the other rows; those
    rows' losses are dropped, and as the network treats each row alone, the shard's rows are exact too."""
    def denoiser(x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma_part = sigma[part] if isinstance(sigma, Tensor) and sigma.ndim > 0 else sigma
        return torch.cat([x[:part.start].detach(), model(x[part], sigma_part), x[part.stop:].detach()])
    return denoiser


def _step(state: TrainState, data: Tensor | MappedImages, loss_fn: Loss, config: TrainConfig,
          net: Network | None = None) -> float:
    """One optimizer step; returns the loss (the global batch's mean). Non-finite gradients skip the update.

    ``net`` runs the forward pass: ``state.model`` by default, else it wrapped (torch.compile, DDP). Under
    torchrun (``net`` a DistributedDataParallel), every rank draws the global batch and its noise from the
    shared generator, as one process would, and back-propagates its shard's mean loss; DDP's gradient
    average over the equal shards is then the gradient of the global mean. ``config.precision == "bf16"``
    runs the forward pass under bfloat16 autocast; the loss is reduced in float32."""
    net = state.model if net is None else net
    idx = torch.randint(len(data), (config.batch_size,), generator=state.generator, device=data.device)
    with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        if not dist.active():
            loss = loss_fn(net, data[idx], state.generator).float().mean()
            reported = loss
        else:
            part = dist.shard(config.batch_size)
            loss = loss_fn(_on_shard(net, part), data[idx], state.generator)[part].float().mean()
            reported = dist.mean(loss)
    if not torch.isfinite(reported):
        raise TrainingError(f"non-finite loss ({reported.item()}) at step {state.step + 1}")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), math.inf)  # one fused pass, no clipping
    state.step += 1
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(state.step, config.lr, config.warmup, config.lr_decay, config.steps)
    if bool(torch.isfinite(grad_norm)):
        state.optimizer.step()
    else:
        state.skipped += 1
    ema_update(state.ema, state.model, ema_beta(state.step, config.ema_halflife, config.ema_rampup))
    return reported.item()


def _save(run: Path, state: TrainState, config: TrainConfig, data_shape: tuple[int, ...]) -> Path:
    """``save_state`` on rank 0 while the other ranks wait for it."""
    path = save_state(run, state, config, data_shape) if dist.is_main() else checkpoint_path(run, state.step)
    dist.barrier()
    return path


def _tensorboard(config: TrainConfig, run: Path, data_shape: tuple[int, ...]) -> Any:
    """The run's TensorBoard log (rank 0 only), or None without ``config.tensorboard``."""
    if not config.tensorboard or not dist.is_main():
        return None
    from .tblog import TensorBoardLog

    return TensorBoardLog(run, data_shape)


def _loop(config: TrainConfig, run: Path, data: Tensor | MappedImages, state: TrainState, loss_fn: Loss,
          progress: bool, callbacks: list[Callback], stop: threading.Event | None,
          net: Network | None = None) -> TrainResult:
    data_shape = tuple(data.shape[1:])
    losses: list[float] = []
    last_loss = float("nan")
    last_ckpt = latest_checkpoint(run)
    saved_step = state.step if last_ckpt is not None else None  # a resumed state is its latest checkpoint's
    interrupted = False
    bar = tqdm(total=config.steps, initial=state.step, disable=not progress, desc=f"train {run.name}")
    t_log = time.perf_counter()
    log = (run / METRICS).open("a") if dist.is_main() else nullcontext()
    board = _tensorboard(config, run, data_shape)
    with stop_requests() as signalled, log as metrics:
        while state.step < config.steps:
            if dist.any_rank(signalled.is_set() or (stop is not None and stop.is_set()), data.device):
                interrupted = True
                break
            last_loss = _step(state, data, loss_fn, config, net)
            losses.append(last_loss)
            extra: dict[str, Any] = {}
            for cb in callbacks:
                extra.update(cb(state) or {})
            if state.step % config.log_every == 0 or extra:
                elapsed = time.perf_counter() - t_log
                speed = len(losses) * config.batch_size / max(elapsed, 1e-9)
                line = {"step": state.step, "loss": sum(losses) / len(losses),
                        "lr": state.optimizer.param_groups[0]["lr"], "examples_per_s": speed,
                        "skipped": state.skipped, **extra}
                if metrics is not None:
                    metrics.write(json.dumps(line) + "\n")
                    metrics.flush()
                if board is not None:
                    board.scalars(line)
                bar.set_postfix(loss=f"{line['loss']:.4f}", ex_s=f"{speed:.0f}")
                losses, t_log = [], time.perf_counter()
            bar.update(1)
            if state.step % config.checkpoint_every == 0:
                last_ckpt, saved_step = _save(run, state, config, data_shape), state.step
                if board is not None:
                    board.samples(state.ema, state.step)
        bar.close()
        if saved_step != state.step:
            last_ckpt = _save(run, state, config, data_shape)
            if board is not None:
                board.samples(state.ema, state.step)
    if board is not None:
        board.close()
    if interrupted and dist.is_main():
        tqdm.write(f"interrupted at step {state.step}: checkpoint {last_ckpt}; resume with --resume")
    assert last_ckpt is not None  # a checkpoint is saved at the last step if none was
    return TrainResult(run, state.step, last_ckpt, interrupted, last_loss)
