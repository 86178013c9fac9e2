"""The ``scorelab`` command: train, sample, demo."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError
from .data import DataError


def _model_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs with JSON values (e.g. ``width=128``, ``channel_mult=[1,2]``)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--model-option must look like KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def cmd_train(args: argparse.Namespace) -> int:
    from .runs import read_config
    from .train import TrainConfig, train

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if f.name != "model_options" and getattr(args, f.name, None) is not None}
    if args.model_option:
        given["model_options"] = _model_options(args.model_option)
    if args.resume:
        config = TrainConfig.from_dict(read_config(Path(args.out)))
        for key, value in given.items():
            setattr(config, key, value)
    else:
        config = TrainConfig(**given)
    result = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"{'stopped' if result.interrupted else 'trained'} {result.run} to step {result.step}; "
          f"checkpoint {result.checkpoint}")
    return 130 if result.interrupted else 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .runs import load_denoiser
    from .sample.generate import generate
    from .train import resolve_device

    device = resolve_device(args.device)
    denoiser, meta = load_denoiser(args.run, weights=args.weights, device=device)
    seeds = list(range(args.seed, args.seed + args.n))
    options = {"S_churn": args.churn} if args.sampler == "heun" and args.churn else {}
    samples, nfe = generate(denoiser, meta["data_shape"], seeds, sampler=args.sampler, steps=args.steps,
                            sigma_min=args.sigma_min, sigma_max=args.sigma_max, rho=args.rho,
                            batch_size=args.batch_size, device=device, progress=not args.no_progress, **options)
    if not bool(torch.isfinite(samples).all()):
        raise RuntimeError("the sampler produced non-finite values; check the checkpoint and the sigma range")
    out = Path(args.out) if args.out else Path(args.run) / "samples" / f"{args.sampler}-{args.steps}-seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "samples.npz", samples=samples.numpy(), seeds=np.array(seeds), nfe=nfe,
             settings=json.dumps({k: v for k, v in vars(args).items() if k != "func"}))
    figure = _sample_figure(samples, meta["config"]["data"], out / "samples.png")
    print(f"{len(samples)} samples ({args.sampler}, {args.steps} steps, NFE {nfe:g} per sample) -> "
          f"{out / 'samples.npz'}; figure {figure}")
    return 0


def _sample_figure(samples: Any, data: str, path: Path) -> Path:
    from . import viz
    from .data import toy

    if samples.ndim == 4:
        return viz.image_grid(samples[:100], path)
    if samples.shape[1] == 2:
        log_prob = toy.load(data).log_prob if data in toy.NAMES else None
        return viz.scatter_2d(samples, path, log_prob=log_prob, title=data)
    return viz.scatter_2d(samples[:, :2], path, title=f"{data} (first two coordinates)")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), quick=args.quick, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="scorelab", description="Train, sample and dissect score-based "
                                     "diffusion models (EDM denoiser convention).")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a denoiser into a run directory")
    p.add_argument("--data", help=f"toy name, 'digits', a .npy/.npz file or an image folder (default {defaults.data})")
    p.add_argument("--model", help=f"mlp or unet (default {defaults.model})")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    for name, kind in [("steps", int), ("batch_size", int), ("lr", float), ("warmup", int),
                       ("ema_halflife", float), ("seed", int), ("sigma_data", float), ("P_mean", float),
                       ("P_std", float), ("n_data", int), ("checkpoint_every", int), ("keep_checkpoints", int),
                       ("log_every", int)]:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind,
                       help=f"default {getattr(defaults, name)}")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="network option, e.g. width=128 or channel_mult=[1,2] (repeatable)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample from a trained run")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--sampler", default="heun", choices=["heun", "euler"])
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--n", type=int, default=1000, help="number of samples (seeds seed .. seed+n-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--sigma-min", type=float, default=0.002)
    p.add_argument("--sigma-max", type=float, default=80.0)
    p.add_argument("--rho", type=float, default=7.0)
    p.add_argument("--churn", type=float, default=0.0, help="EDM S_churn (Heun only)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="output directory (default RUN/samples/SAMPLER-STEPS-seedSEED)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("demo", help="train on gmm3 and digits, sample, measure and draw (under 10 min on CPU)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a few steps only (checks the plumbing, not quality)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .train import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, CheckpointError, TrainingError, ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"scorelab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scorelab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
