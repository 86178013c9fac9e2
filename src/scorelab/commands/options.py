"""Option groups that several commands share, each declared once, and what turns them into the
library's arguments: the model to load, the device, the Karras grid, MAD's and Langevin's settings,
seeds and number lists."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..external import DIFFUSERS
from ..runs import PRETRAINED, WEIGHTS, Run
from ..sample import SAMPLERS
from ..sample.mad import DERIVATIVES

Parser = argparse.ArgumentParser | argparse._ArgumentGroup
NCSN_LEVELS = "geometric:1:0.01:10"  # Song & Ermon 2019's levels, for a run trained without --levels


def add_model(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    """``RUN`` (a run directory, a checkpoint or weights file, pretrained:NAME or diffusers:PATH),
    ``--weights``, ``--class`` and ``--data``."""
    parser.add_argument("run", nargs="?" if optional else None, metavar="RUN",
                        help=f"run directory, checkpoint or exported weights file, {PRETRAINED}NAME (a model "
                             f"shipped with scorelab) or {DIFFUSERS}PATH (a diffusers model folder or Hub id)")
    parser.add_argument("--weights", default="ema", choices=list(WEIGHTS), help="ema (the EMA of the weights) or model (the raw "
                        "training weights); default %(default)s")
    parser.add_argument("--class", dest="class_label", type=int, metavar="K",
                        help="the class a class-conditional diffusers model generates, 0 .. its number of "
                        "classes - 1 (default: none; such a model needs one)")
    parser.add_argument("--data", metavar="SPEC", help="the reference set the analyses and teleportation fit their "
                        "Gaussian and other models on, as --data of train (default: the run's training data; "
                        "needed for a diffusers model)")


def add_device(parser: Parser, default: str | None = "auto") -> None:
    parser.add_argument("--device", default=default, help="auto (a GPU if there is one; the default), cpu, cuda, "
                        "cuda:1, mps")


def device(args: argparse.Namespace) -> torch.device:
    """The device of ``--device``; under torchrun a GPU becomes the local rank's."""
    from ..distributed import device_for
    from ..train import resolve_device

    return device_for(resolve_device(args.device))


def open_model(args: argparse.Namespace, on: torch.device) -> Run:
    """The :class:`~scorelab.runs.Run` named by ``RUN`` (or ``--pretrained NAME``) with ``--weights``."""
    pretrained = getattr(args, "pretrained", None)
    if (args.run is None) == (pretrained is None):
        raise ValueError("give either a run directory / checkpoint file or --pretrained NAME")
    return Run.open(args.run if pretrained is None else PRETRAINED + pretrained, weights=args.weights, device=on,
                    data=getattr(args, "data", None), class_label=getattr(args, "class_label", None))


def add_out(parser: Parser, default: str) -> None:
    parser.add_argument("--out", type=Path, help=f"output directory (default {default})")


def add_grid(parser: Parser) -> None:
    """``--steps``, ``--sigma-min``, ``--sigma-max``, ``--rho`` and ``--schedule``: the sampling grid."""
    parser.add_argument("--steps", type=int, default=18, help="sampler steps, >= 1: the grid's levels before its "
                        "trailing 0 (default %(default)s)")
    parser.add_argument("--sigma-min", type=float, help="smallest noise level of the grid, > 0, in the data's "
                        "units (default: the model's own, 0.002 for a scorelab model)")
    parser.add_argument("--sigma-max", type=float, help="largest noise level of the grid, the start's standard "
                        "deviation (default: the model's own, 80 for a scorelab model)")
    parser.add_argument("--rho", type=float, default=7.0, help="Karras et al.'s rho, > 0: the grid is uniform in "
                        "sigma^(1/rho), so a larger rho puts more steps at small sigma (default %(default)g)")
    parser.add_argument("--schedule", default="karras", choices=["karras", "model"],
                        help="karras (Karras et al. 2022, eq. 5; default) or model: a VP model's own levels, "
                        "uniform in t as DDIM uses them")


def grid(args: argparse.Namespace, model: Run) -> Tensor:
    """The grid of :func:`add_grid`'s options, ending in 0: Karras's between the model's own range
    (or ``--sigma-min``/``--sigma-max``), or the model's own levels."""
    from ..schedules import karras

    if args.schedule == "model":
        if args.sigma_min is not None or args.sigma_max is not None:
            raise ValueError("--schedule model takes the model's own levels: drop --sigma-min/--sigma-max")
        return model.uniform_levels(args.steps)
    lo, hi = model.sigma_range
    return karras(args.steps, lo if args.sigma_min is None else args.sigma_min,
                  hi if args.sigma_max is None else args.sigma_max, args.rho)


def add_sampler(parser: Parser, default: str = "heun", choices: Sequence[str] | None = None) -> None:
    names = list(choices or SAMPLERS)
    parser.add_argument("--sampler", default=default, choices=names,
                        help="a sampler of the registry, scorelab.sample.SAMPLERS (default %(default)s)")


def add_stochastic(parser: Parser) -> None:
    """``--churn`` (Heun) and ``--eta`` (Euler ancestral): how much noise the stochastic samplers add."""
    parser.add_argument("--churn", type=float, default=0.0, help="EDM's S_churn, >= 0 (Heun only): each step first "
                        "raises sigma by the factor 1 + min(S_churn / steps, sqrt(2) - 1) with fresh noise "
                        "(default %(default)g: deterministic)")
    parser.add_argument("--eta", type=float, default=1.0, help="Euler ancestral's noise, in [0, 1]: 1 the DDPM "
                        "posterior's, 0 none (default %(default)g)")


def add_mad(parser: argparse.ArgumentParser) -> None:
    """MAD's parameters (MAD paper, Algorithm 1): gamma solves a gamma^(2/p) + b gamma = sigma^2."""
    group = parser.add_argument_group("MAD (--sampler mad, or mad-heun, its second-order form): extended-score "
                                      "inference, MAD paper Algorithm 1; at each level gamma solves "
                                      "a gamma^(2/p) + b gamma = sigma^2")
    group.add_argument("--a", type=auto_or_float, default=1.0, help="a of that equation, > 0, or auto: (a, b) "
                       "from the training data's noise variance (scorelab.sample.mad_tuning; both or neither auto; "
                       "default 1)")
    group.add_argument("--b", type=auto_or_float, default=1.0, help="b of that equation, > 0, MAD's strength: the step "
                       "follows (1 + gamma) S + b gamma / (2 sigma) dS/dsigma (default 1)")
    group.add_argument("--p", type=float, default=1.0, help="p of that equation, > 0: the exponent of gamma^(2/p) "
                       "(default %(default)g)")
    group.add_argument("--delta", type=float, default=1e-3,
                       help="relative sigma step of the finite-difference dS/dsigma, in (0, 1): central reads S at "
                       "(1 +- delta) sigma, forward at sigma and (1 + delta) sigma (default %(default)g)")
    group.add_argument("--derivative", default="central", choices=list(DERIVATIVES),
                       help="dS/dsigma by central (default) or forward differences, or exact (forward-mode AD)")
    stop = parser.add_argument_group("early stop (--sampler early-stop): Heun down to --sigma-stop, then the "
                                     "denoiser's estimate there, the baseline to MAD")
    stop.add_argument("--sigma-stop", type=float, default=None, metavar="S",
                      help="the noise level to stop at and denoise from, in the data's units (> 0, below the "
                      "grid's sigma_max; no default: required by --sampler early-stop)")
    stop.add_argument("--from-end", action="store_true",
                      help="walk Heun's whole grid first, then denoise its final sample at --sigma-stop")


def auto_or_float(text: str) -> float | str:
    """A number, or the word ``auto``."""
    return text if text == "auto" else float(text)


def mad_params(args: argparse.Namespace, model: Run, sigmas: Tensor) -> dict[str, Any]:
    """MAD's settings; ``--a auto --b auto`` solves for (a, b) from the noise variance of the run's
    training data (its finest wavelet band), else, where that data cannot be read, of 64 Heun samples
    of the model."""
    a, b = args.a, args.b
    if "auto" in (a, b):
        from ..sample.mad_tuning import auto_parameters, model_noise_variance, noise_variance

        if a != b:
            raise ValueError("--a auto needs --b auto (and --b auto needs --a auto): the rule picks both")
        try:  # the run's training data, where it can still be read
            noise_var, source = noise_variance(model.training_data()[:1024]), "its training data"
        except (ValueError, OSError):  # none recorded, moved or gone (a shipped model): the model's own samples
            noise_var, source = model_noise_variance(model.denoiser, model.data_shape, sigmas, device=model.device), \
                "64 Heun samples"
        a, b = auto_parameters(noise_var, sigmas.cpu(), args.p)
        print(f"MAD auto: noise variance {noise_var:.4g} (from {source}) -> a = {a:.4g}, b = {b:.4g} (p = {args.p:g})",
              file=sys.stderr)
    return {"a": a, "b": b, "p": args.p, "delta": args.delta, "derivative": args.derivative}


def add_langevin(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """``--levels``, ``--eps``, ``--steps-per-level``: annealed Langevin dynamics (NCSN's defaults)."""
    group = parser.add_argument_group(title)
    group.add_argument("--levels", help="noise levels KIND:SIGMA_MAX:SIGMA_MIN:L, KIND geometric, linear or sqrt "
                       f"(default: the run's --levels, else {NCSN_LEVELS})")
    group.add_argument("--eps", type=float, default=2e-5, help="Langevin step size at the last level, > 0; level i "
                       "steps eps sigma_i^2 / sigma_L^2 (default %(default)g)")
    group.add_argument("--steps-per-level", type=int, default=100, help="Langevin steps per level, >= 1 (default "
                       "%(default)s)")
    return group


def langevin_levels(args: argparse.Namespace, model: Run, denoise_last: bool) -> Tensor:
    """The levels of ``--levels`` (else the run's, else NCSN's), with a trailing 0 for the final
    denoising step when ``denoise_last``."""
    from ..schedules import parse_levels

    levels = parse_levels(args.levels or model.config.get("levels") or NCSN_LEVELS)
    return torch.cat([levels, levels.new_zeros(1)]) if denoise_last else levels


def langevin_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"eps": args.eps, "steps_per_level": args.steps_per_level}


def sampler_params(args: argparse.Namespace, model: Run, sigmas: Tensor) -> dict[str, Any]:
    """The chosen sampler's own settings from the options (``--churn``, MAD's, Langevin's)."""
    if args.sampler == "heun":
        return {"S_churn": args.churn} if args.churn else {}
    if args.sampler == "euler-ancestral":
        return {"eta": args.eta}
    if args.sampler in ("mad", "mad-heun"):
        return mad_params(args, model, sigmas)
    if args.sampler == "early-stop":
        if args.sigma_stop is None:
            raise ValueError("--sampler early-stop needs --sigma-stop")
        return {"sigma_stop": args.sigma_stop, "from_end": args.from_end}
    if args.sampler == "annealed-langevin":
        return langevin_params(args)
    return {}


def sigma_grid(args: argparse.Namespace, model: Run, *, denoise_last: bool) -> Tensor:
    """The noise levels the chosen sampler walks: annealed Langevin's levels (with the final
    denoising step when ``denoise_last``), else the Karras grid."""
    if args.sampler == "annealed-langevin":
        return langevin_levels(args, model, denoise_last)
    return grid(args, model)


def floats(text: str, what: str) -> list[float]:
    """Comma-separated numbers; a clear error naming the option otherwise."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} takes comma-separated numbers, got {text!r}") from None


def seed_range(first: int, n: int, what: str = "--n") -> list[int]:
    """Seeds ``first .. first + n - 1``; ``n`` must be at least 1."""
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {n}")
    if not 0 <= first <= first + n - 1 < 2**63:
        raise ValueError(f"seeds must lie in [0, 2^63), got {first} .. {first + n - 1}")
    return list(range(first, first + n))


def settings(args: argparse.Namespace) -> str:
    """The command's options as JSON, saved beside its outputs."""
    import json

    return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run_command"})
