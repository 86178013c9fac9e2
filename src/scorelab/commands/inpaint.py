"""``scorelab inpaint``: fill in the unknown part of images with any registered sampler (inpainting by
replacement, Song & Ermon 2019, Sec. 5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inpaint", help="fill in the unknown part of images (Song & Ermon 2019, Sec. 5; the known "
                       "part, noised to the current level, is re-imposed before every denoiser evaluation)")
    options.add_model(p)
    p.add_argument("--images", help="images to inpaint, as --data of train (default: the run's training data), "
                   "e.g. digits:test")
    p.add_argument("--first", type=int, default=0, help="index of the first image (default 0)")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--mask", required=True, help="the unknown half: top, bottom, left, right; or a .npy (0/1) or "
                   "PNG (white = known) file of shape (H, W) or (C, H, W)")
    options.add_sampler(p, default="annealed-langevin")
    p.add_argument("--seed", type=int, default=0, help="image i draws its noise from seed + i (default %(default)s)")
    ald = options.add_langevin(p, "annealed Langevin (--sampler annealed-langevin)")
    ald.add_argument("--no-denoise-last", action="store_true", help="skip the final x <- D(x, sigma_L)")
    options.add_grid(p.add_argument_group("the Karras grid (every --sampler but annealed-langevin)"))
    options.add_stochastic(p)
    options.add_mad(p)
    options.add_device(p)
    options.add_out(p, "RUN/inpaint/SAMPLER-MASK-seedSEED")
    p.set_defaults(run_command=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .. import viz
    from ..checkpoint import save_npz
    from ..data import load_dataset
    from ..sample import generators_for_seeds, inpaint, read_mask, unknown_rmse

    model = options.open_model(args, options.device(args))
    if model.codec is not None:
        raise ValueError(f"{args.run} is a model of PCA codes ({model.config['latent']}); inpainting needs a "
                         "model of the pixels")
    spec = args.images or model.config["data"]
    if args.first < 0 or args.n < 1:
        raise ValueError(f"need --first >= 0 and --n >= 1, got {args.first} and {args.n}")
    images = load_dataset(spec)[args.first:args.first + args.n]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"{spec}: inpainting needs images (N, C, H, W) from index {args.first}; got shape "
                         f"{tuple(images.shape)}")
    if tuple(images.shape[1:]) != model.data_shape:
        raise ValueError(f"{spec}: images of shape {tuple(images.shape[1:])}, the model's are {model.data_shape}")
    mask = read_mask(args.mask, images.shape[1:])
    seeds = options.seed_range(args.seed, len(images))
    sigmas = options.sigma_grid(args, model, denoise_last=not args.no_denoise_last)
    generators = generators_for_seeds(seeds, model.device)
    with torch.no_grad():
        out = inpaint(model.denoiser, images.to(model.device), mask.to(model.device), sigmas, sampler=args.sampler,
                      generator=generators, progress=not args.no_progress,
                      **options.sampler_params(args, model, sigmas)).cpu()
    rmse = unknown_rmse(out, images, mask)
    target = args.out or model.output_dir("inpaint", f"{args.sampler}-{Path(args.mask).stem}-seed{args.seed}")
    target.mkdir(parents=True, exist_ok=True)
    save_npz(target / "inpainted.npz", inpainted=out.numpy(), original=images.numpy(), mask=mask.numpy(),
             seeds=np.array(seeds), rmse_unknown=rmse, settings=options.settings(args))
    shown = min(len(images), 16)
    masked = torch.where(mask.bool(), images, torch.zeros_like(images))
    figure = viz.image_grid(torch.cat([images[:shown], masked[:shown], out[:shown]]), target / "inpainted.png",
                            nrow=shown, title=f"original, known part (mask {args.mask}), {args.sampler}")
    print(f"{len(images)} images of {spec} inpainted ({args.sampler}, mask {args.mask}): RMSE on the unknown "
          f"pixels {rmse:.4f} -> {target / 'inpainted.npz'}; figure {figure}")
    return 0
