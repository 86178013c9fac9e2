"""``scorelab sample``: samples of a trained or shipped model from seeds, with any registered sampler,
Gaussian teleportation, or a sweep over MAD's parameters."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..runs import Run
from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample from a trained run or a shipped model")
    options.add_model(p, optional=True)
    p.add_argument("--pretrained", metavar="NAME", help="a model shipped with scorelab instead of RUN (the same as "
                   "RUN = pretrained:NAME): shapes-noisy (64x64) or shapes-noisy-32 (32x32), UNets trained on "
                   "noisy shapes only, or cryoem-sim-32, on a simulated noisy cryo-EM stack only; for --sampler "
                   "mad (default: none, RUN names the model)")
    options.add_sampler(p)
    options.add_grid(p)
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=1000,
                   help="number of samples, >= 1, from seeds seed .. seed+n-1 (default %(default)s); write "
                   "--num-samples under torchrun, whose own options swallow --n")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sample; sample i draws all its noise "
                   "from seed + i (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=1000, help="samples per denoiser batch: memory, not the "
                   "samples, depends on it, up to float32 rounding (default %(default)s)")
    options.add_stochastic(p)
    ald = options.add_langevin(p, "annealed Langevin (--sampler annealed-langevin; Song & Ermon 2019, Algorithm 1)")
    ald.add_argument("--denoise-last", action="store_true", help="end with x <- D(x, sigma_L)")
    p.add_argument("--teleport", metavar="K|auto", help="replace the first K steps by the closed-form flow of the "
                   "training data's Gaussian (Gaussian-score paper, Algorithm 1); 'auto' picks K from the model "
                   "(default: no teleportation)")
    p.add_argument("--teleport-threshold", type=float, default=0.01,
                   help="for --teleport auto: the largest unexplained fraction of the score allowed (default 0.01)")
    options.add_mad(p)
    p.add_argument("--grid", metavar="a=..;b=..", help="with --sampler mad: one sample set per parameter "
                   "combination from the same seeds, beside Heun's, e.g. 'a=1,2;b=5,10,20' (any of a, b, p, delta; "
                   "default: one sample set)")
    options.add_device(p)
    options.add_out(p, "RUN/samples/SAMPLER-STEPS-seedSEED, or samples/NAME/... for a shipped model")
    p.set_defaults(run_command=run)


def teleport_steps(args: argparse.Namespace, model: Run, sigmas: Tensor) -> int:
    """``--teleport K`` or, for ``auto``, the model's own choice (measured once and cached beside the run)."""
    if args.teleport == "auto":
        n_skip = model.auto_skip(sigmas, args.teleport_threshold)
        print(f"teleport: skipping {n_skip} of {len(sigmas) - 1} steps (auto, threshold "
              f"{args.teleport_threshold:g}; cached beside the run)")
        return n_skip
    try:
        return int(args.teleport)
    except ValueError:
        raise ValueError(f"--teleport takes a number of steps or 'auto', got {args.teleport!r}") from None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..checkpoint import save_npz
    from ..distributed import is_main
    from ..sample import generate_sharded

    model = options.open_model(args, options.device(args))
    seeds = options.seed_range(args.seed, args.n)
    sigmas = options.sigma_grid(args, model, denoise_last=args.denoise_last)
    params = options.sampler_params(args, model, sigmas)
    settings: dict[str, Any] = {"sigmas": sigmas, "batch_size": args.batch_size, "device": model.device,
                                "progress": not args.no_progress}
    if args.teleport is not None:
        settings |= {"n_skip": teleport_steps(args, model, sigmas), "gaussian": model.gaussian()}
    name = f"{args.sampler}-{args.steps}-seed{args.seed}" + (f"-skip{settings['n_skip']}" if settings.get("n_skip")
                                                             else "")
    if args.grid:
        return sample_grid(args, model, seeds, settings, params, args.out or model.output_dir("samples", name + "-grid"))
    samples, nfe = generate_sharded(model.denoiser, model.data_shape, seeds, sampler=args.sampler, **settings,
                                    **params)  # under torchrun: seeds split over the ranks, rank 0 writes
    if not is_main():
        return 0
    codes: dict[str, Any] = {"codes": samples.numpy()} if model.codec is not None else {}
    samples = model.decode(samples)  # not clipped, as in data space
    out = args.out or model.output_dir("samples", name)
    save_npz(out / "samples.npz", samples=samples.numpy(), seeds=np.array(seeds), nfe=nfe,
             settings=options.settings(args), **codes)
    figure = sample_figure(samples, model.config.get("data", ""), out / "samples.png")
    print(f"{len(samples)} samples ({args.sampler}, {len(sigmas) - 1} steps, NFE {nfe:g} per sample) -> "
          f"{out / 'samples.npz'}; figure {figure}")
    return 0


def sample_grid(args: argparse.Namespace, model: Run, seeds: list[int], settings: dict[str, Any],
                params: dict[str, Any], out: Path) -> int:
    """Heun and MAD at every point of ``--grid``, all from the same seeds; one npz and one figure."""
    import numpy as np

    from ..checkpoint import save_npz
    from ..sample import parse_grid, sweep

    if args.sampler != "mad":
        raise ValueError("--grid sweeps MAD's parameters: use it with --sampler mad")
    points = parse_grid(args.grid, ("a", "b", "p", "delta"))
    rows = sweep(model.denoiser, model.data_shape, seeds, points, sampler="mad", params=params,
                 transform=model.decode, **settings)
    save_npz(out / "grid.npz", samples=torch.stack(list(rows.values())).numpy(), labels=np.array(list(rows)),
             seeds=np.array(seeds), settings=options.settings(args))
    figure = grid_figure(rows, model.config.get("data", ""), out / "grid.png")
    print(f"{len(rows)} sample sets (Heun, then MAD at {len(points)} parameter points; {len(seeds)} seeds each, "
          f"{args.steps} steps) -> {out / 'grid.npz'}; figure {figure}")
    return 0


def sample_figure(samples: Tensor, data: str, path: Path) -> Path:
    """An image grid of the first 100 images, or a scatter plot of 2-D samples (over the toy's density)."""
    from .. import viz
    from ..data import toy

    if samples.ndim == 4:
        return viz.image_grid(samples[:100], path)
    if samples.shape[1] == 2:
        log_prob = toy.load(data).log_prob if data in toy.NAMES else None
        return viz.scatter_2d(samples, path, log_prob=log_prob, title=data)
    return viz.scatter_2d(samples[:, :2], path, title=f"{data} (first two coordinates)")


def grid_figure(rows: dict[str, Tensor], data: str, path: Path) -> Path:
    """One row of images (or one scatter panel) per sample set, one column per seed."""
    from .. import viz
    from ..data import toy

    first = next(iter(rows.values()))
    if first.ndim == 4:
        n = min(len(first), 16)
        return viz.image_grid(torch.cat([r[:n] for r in rows.values()]), path, nrow=n,
                              title="rows: " + " | ".join(rows))
    log_prob = toy.load(data).log_prob if data in toy.NAMES else None
    return viz.scatter_panels({k: v[:, :2] for k, v in rows.items()}, path, log_prob=log_prob, title=data)
