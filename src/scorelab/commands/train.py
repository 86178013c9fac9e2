"""``scorelab train``: train a denoiser into a run directory, or resume one."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from ..train import TrainConfig
from . import options

NUMBERS = [("steps", int), ("batch_size", int), ("lr", float), ("warmup", int), ("ema_halflife", float),
           ("seed", int), ("sigma_data", float), ("P_mean", float), ("P_std", float), ("n_data", int),
           ("checkpoint_every", int), ("keep_checkpoints", int), ("log_every", int), ("track_every", int)]
NUMBER_HELP = {  # what each number does; its default is TrainConfig's
    "steps": "training steps (optimizer updates) in all, >= 1; with --resume the new total",
    "batch_size": "examples per step, >= 1; under torchrun divisible by the number of processes",
    "lr": "Adam's learning rate after the warm-up, > 0",
    "warmup": "steps of linear learning-rate warm-up from 0, >= 0",
    "ema_halflife": "half-life of the weights' EMA in steps, > 0; early on min(half-life, 0.1 x step), as in EDM",
    "seed": "seed of the batch indices, the training noise and a toy's samples",
    "sigma_data": "the data's standard deviation in EDM's preconditioning and loss, > 0 (default: measured on the "
                  "data)",
    "P_mean": "mean of ln sigma in the EDM loss (default: -1.2 + ln(sigma_data / 0.5), EDM's shifted to the "
              "data's scale)",
    "P_std": "standard deviation of ln sigma in the EDM loss, > 0",
    "n_data": "samples drawn from a toy dataset, >= 2 (other data: unused)",
    "checkpoint_every": "steps between two checkpoints, >= 1 (the last step is always saved)",
    "keep_checkpoints": "how many of the newest checkpoints are kept, >= 1",
    "log_every": "steps between two lines of metrics.jsonl, >= 1",
    "track_every": "steps between two --track measurements, >= 0 (0: no tracking)",
}


def register(sub: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    p = sub.add_parser("train", help="train a denoiser into a run directory")
    p.add_argument("--data", help=f"toy name, 'digits', a .npy/.npz file, an image folder, MNIST/CIFAR-10 files, "
                   f"an MRC stack or mmap:FILE.npy (default {defaults.data})")
    p.add_argument("--model", help="mlp or unet; mlp-gaussian or unet-gaussian for the network on top of the "
                   f"data's Gaussian denoiser (nets.GaussianResidual); ncsn-mlp, ncsn (default {defaults.model})")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    for name, kind in NUMBERS:
        default = getattr(defaults, name)
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind,
                       help=NUMBER_HELP[name] + ("" if default is None else f" (default {default})"))
    p.add_argument("--loss", help="edm (default), ncsn, ncsn-continuous (over --levels), ssm, ssm-vr, esm "
                   "(sliced, variance-reduced sliced and exact score matching)")
    p.add_argument("--levels", help=f"NCSN noise levels KIND:SIGMA_MAX:SIGMA_MIN:L, KIND geometric, linear or sqrt "
                   f"(default {defaults.levels})")
    options.add_device(p, default=None)  # None: the config's own (auto), or the run's on resume
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="network option with a JSON value, e.g. width=128 or channel_mult=[1,2] (repeatable; "
                   "default: none, the network's own defaults)")
    p.add_argument("--track", metavar="MODELS", help="analytical models to compare the network with every "
                   "--track-every steps, e.g. gaussian,gmm10,delta (metrics unexplained/QUERY/MODEL/SIGMA in "
                   "metrics.jsonl; default: none)")
    p.add_argument("--track-sigmas", metavar="S1,S2,..", help="comma-separated noise levels for --track, each > 0 "
                   "(default 0.1,1,10)")
    p.add_argument("--lr-decay", choices=["constant", "cosine"], help="the learning rate after the warm-up: "
                   "constant (default) or a half cosine down to 0 at the last of --steps (with --resume and a new "
                   "--steps, the cosine stretches to the new total)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="fp32 (default: fastest for the UNets measured, "
                   "benchmarks/RESULTS.md) or bf16 autocast of the forward pass")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the training forward pass")
    p.add_argument("--tensorboard", action="store_true", default=None, help="also log to RUN/tensorboard: the "
                   "metrics, and EMA samples at checkpoints (an image grid, or a scatter plot of vectors)")
    p.add_argument("--init", metavar="SOURCE", help="fine-tune: start the model and its EMA from the EMA weights of "
                   "SOURCE (a run directory, a checkpoint or exported weights file, or pretrained:NAME; the same "
                   "network), with a fresh optimizer and step count (EDM's --transfer; default: none, a fresh "
                   "initialisation)")
    p.add_argument("--latent", metavar="SPEC", help="train on PCA codes of the data (scorelab.latent): pca:K "
                   "components, pca:0.95 (explained-variance fraction) or pca:elbow, optionally :whiten; use a "
                   "vector model (mlp, ncsn-mlp); sample decodes to images (default: none, the data itself)")
    p.set_defaults(run_command=run)


def model_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs with JSON values (e.g. ``width=128``, ``channel_mult=[1,2]``)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-option must look like KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The run's configuration: the options given, over the saved config when resuming."""
    from pathlib import Path

    from ..runs import read_config

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if f.name != "model_options" and getattr(args, f.name, None) is not None}
    if args.model_option:
        given["model_options"] = model_options(args.model_option)
    if args.track is not None:
        given["track"] = [t.strip() for t in args.track.split(",") if t.strip()]
    if args.track_sigmas is not None:
        given["track_sigmas"] = options.floats(args.track_sigmas, "--track-sigmas")
    if not args.resume:
        return TrainConfig(**given)
    config = TrainConfig.from_dict(read_config(Path(args.out)))
    for key, value in given.items():
        setattr(config, key, value)
    return config


def run(args: argparse.Namespace) -> int:
    from ..distributed import is_main
    from ..train import train

    result = train(config_from(args), args.out, resume=args.resume, progress=not args.no_progress)
    if is_main():  # under torchrun, rank 0 speaks for all
        print(f"{'stopped' if result.interrupted else 'trained'} {result.run} to step {result.step}; "
              f"checkpoint {result.checkpoint}")
    return 130 if result.interrupted else 0
