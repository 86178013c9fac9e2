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

    from .runs import load_denoiser
    from .sample.generate import generate
    from .train import resolve_device

    device = resolve_device(args.device)
    denoiser, meta = load_denoiser(args.run, weights=args.weights, device=device)
    seeds = list(range(args.seed, args.seed + args.n))
    settings = {"steps": args.steps, "sigma_min": args.sigma_min, "sigma_max": args.sigma_max, "rho": args.rho,
                "batch_size": args.batch_size, "device": device, "progress": not args.no_progress}
    options: dict[str, Any] = {"S_churn": args.churn} if args.sampler == "heun" and args.churn else {}
    if args.sampler == "mad":
        options = {"a": args.a, "b": args.b, "p": args.p, "delta": args.delta, "derivative": args.derivative}
    name = f"{args.sampler}-{args.steps}-seed{args.seed}"
    out = Path(args.out) if args.out else Path(args.run) / "samples" / name
    if args.grid:
        if args.sampler != "mad":
            raise ValueError("--grid sweeps MAD's parameters: use it with --sampler mad")
        return _sample_grid(denoiser, meta, seeds, settings, options, _parse_grid(args.grid),
                            Path(args.out) if args.out else Path(args.run) / "samples" / f"{name}-grid")
    samples, nfe = generate(denoiser, meta["data_shape"], seeds, sampler=args.sampler, **settings, **options)
    _check_finite(samples)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "samples.npz", samples=samples.numpy(), seeds=np.array(seeds), nfe=nfe,
             settings=json.dumps({k: v for k, v in vars(args).items() if k != "func"}))
    figure = _sample_figure(samples, meta["config"]["data"], out / "samples.png")
    print(f"{len(samples)} samples ({args.sampler}, {args.steps} steps, NFE {nfe:g} per sample) -> "
          f"{out / 'samples.npz'}; figure {figure}")
    return 0


def _parse_grid(spec: str) -> list[dict[str, float]]:
    """``'a=1,2;b=5,10'`` -> every combination, ``[{'a': 1, 'b': 5}, {'a': 1, 'b': 10}, ...]``."""
    import itertools

    axes = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, sep, values = part.partition("=")
        if not sep or key.strip() not in ("a", "b", "p", "delta"):
            raise ValueError(f"--grid parts look like a=1,2 (keys a, b, p, delta), got {part!r}")
        try:
            axes[key.strip()] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--grid values must be numbers, got {part!r}") from None
        if not axes[key.strip()]:
            raise ValueError(f"--grid {key.strip()} has no values")
    if not axes:
        raise ValueError(f"--grid is empty: {spec!r}")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def _sample_grid(denoiser: Any, meta: dict, seeds: list[int], settings: dict, options: dict,
                 grid: list[dict[str, float]], out: Path) -> int:
    """Standard Heun and MAD at every grid point, all from the same seeds; one npz and one figure."""
    import numpy as np
    import torch

    from .sample.generate import generate

    shape = meta["data_shape"]
    rows = {"heun": generate(denoiser, shape, seeds, sampler="heun", **settings)[0]}
    for point in grid:
        samples, _ = generate(denoiser, shape, seeds, sampler="mad", **settings, **(options | point))
        _check_finite(samples)
        rows[", ".join(f"{k}={v:g}" for k, v in point.items())] = samples
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "grid.npz", samples=torch.stack(list(rows.values())).numpy(), labels=np.array(list(rows)),
             seeds=np.array(seeds), settings=json.dumps(options | {"grid": grid}))
    figure = _grid_figure(rows, meta["config"]["data"], out / "grid.png")
    print(f"{len(rows)} sample sets (Heun, then MAD at {len(grid)} parameter points; {len(seeds)} seeds each, "
          f"{settings['steps']} steps) -> {out / 'grid.npz'}; figure {figure}")
    return 0


def _grid_figure(rows: dict[str, Any], data: str, path: Path) -> Path:
    import torch

    from . import viz
    from .data import toy

    first = next(iter(rows.values()))
    if first.ndim == 4:  # one row per sampler setting, one column per seed
        n = min(len(first), 16)
        return viz.image_grid(torch.cat([r[:n] for r in rows.values()]), path, nrow=n,
                              title="rows: " + " | ".join(rows))
    log_prob = toy.load(data).log_prob if data in toy.NAMES else None
    return viz.scatter_panels({k: v[:, :2] for k, v in rows.items()}, path, log_prob=log_prob, title=data)


def _check_finite(samples: Any) -> None:
    import torch

    if not bool(torch.isfinite(samples).all()):
        raise RuntimeError("the sampler produced non-finite values; check the checkpoint and the sigma range")


def _sample_figure(samples: Any, data: str, path: Path) -> Path:
    from . import viz
    from .data import toy

    if samples.ndim == 4:
        return viz.image_grid(samples[:100], path)
    if samples.shape[1] == 2:
        log_prob = toy.load(data).log_prob if data in toy.NAMES else None
        return viz.scatter_2d(samples, path, log_prob=log_prob, title=data)
    return viz.scatter_2d(samples[:, :2], path, title=f"{data} (first two coordinates)")


def cmd_data_shapes(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import viz
    from .checkpoint import atomic_write
    from .data import shapes

    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {out}")
    corruption = {k: getattr(args, k) for k in ("n_bumps", "bump_width", "bump_depth", "noise_std")
                  if getattr(args, k) is not None}
    data = shapes.noisy_shapes(args.n, size=args.size, seed=args.seed, **corruption)
    noisy = np.rint((data.noisy.numpy() + 1) * 127.5).astype(np.uint8)  # the 8-bit levels, exactly

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, images=noisy, clean=data.clean.numpy(), shape_index=data.shape_index.numpy(),
                     angles=data.angles.numpy(), params=json.dumps(data.params))

    atomic_write(out, write)
    figure = viz.image_grid(torch.cat([data.clean[:8], data.noisy[:8]]), out.with_suffix(".png"), nrow=8,
                            title="clean (top) and noisy (bottom)")
    print(f"{args.n} noisy {args.size}x{args.size} shapes -> {out} (train with --data {out}); preview {figure}")
    return 0


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
    p.add_argument("--sampler", default="heun", choices=["heun", "euler", "mad"])
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--n", type=int, default=1000, help="number of samples (seeds seed .. seed+n-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--sigma-min", type=float, default=0.002)
    p.add_argument("--sigma-max", type=float, default=80.0)
    p.add_argument("--rho", type=float, default=7.0)
    p.add_argument("--churn", type=float, default=0.0, help="EDM S_churn (Heun only)")
    mad_group = p.add_argument_group("MAD (--sampler mad): extended-score inference, MAD paper Algorithm 1")
    mad_group.add_argument("--a", type=float, default=1.0, help="sigma_gamma^2 = a sigma^2 + b gamma (default 1)")
    mad_group.add_argument("--b", type=float, default=1.0, help="strength of the extended score (default 1)")
    mad_group.add_argument("--p", type=float, default=1.0, help="gamma = sigma^p speed (default 1)")
    mad_group.add_argument("--delta", type=float, default=1e-3, help="finite-difference step (default 1e-3)")
    mad_group.add_argument("--derivative", default="central", choices=["forward", "central", "exact"])
    mad_group.add_argument("--grid", metavar="a=..;b=..",
                           help="one sample set per parameter combination from the same seeds, e.g. "
                                "'a=1,2;b=5,10,20' (any of a, b, p, delta)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="output directory (default RUN/samples/SAMPLER-STEPS-seedSEED)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("data", help="write a synthetic dataset to a file")
    data_sub = p.add_subparsers(dest="dataset", required=True)
    q = data_sub.add_parser("shapes", help="noisy rotated shapes (MAD paper, Sec. 5.3): 4 shapes, uniform angles, "
                            "blotted boundaries, pixel noise, 8-bit")
    q.add_argument("--n", type=int, default=20_000, help="number of images (default 20000)")
    q.add_argument("--size", type=int, default=32, help="image side in pixels (the paper: 64; default 32)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--n-bumps", type=int, help="bumps subtracted on each shape's boundary (default 50)")
    q.add_argument("--bump-width", type=float, help="bump standard deviation, fraction of the side (default 0.03)")
    q.add_argument("--bump-depth", type=float, help="bump height in [-1, 1] units (default 2)")
    q.add_argument("--noise-std", type=float, help="pixel noise standard deviation (default 1)")
    q.add_argument("--out", required=True, help="output .npz: images (noisy, uint8), clean, shape_index, angles")
    q.set_defaults(func=cmd_data_shapes)

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
