"""``scorelab data``: write a synthetic dataset to a file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="write a synthetic dataset to a file")
    kinds = p.add_subparsers(dest="dataset", required=True)
    q = kinds.add_parser("shapes", help="noisy rotated shapes (MAD paper, Sec. 5.3): 4 shapes, uniform angles, "
                         "blotted boundaries, pixel noise, 8-bit")
    q.add_argument("--n", type=int, default=20_000, help="number of images (default 20000)")
    q.add_argument("--size", type=int, default=32, help="image side in pixels (the paper: 64; default 32)")
    q.add_argument("--seed", type=int, default=0, help="seed of the shapes, angles, bumps and noise (default "
                   "%(default)s)")
    q.add_argument("--n-bumps", type=int, help="bumps subtracted on each shape's boundary (default 50)")
    q.add_argument("--bump-width", type=float, help="bump standard deviation, fraction of the side (default 0.03)")
    q.add_argument("--bump-depth", type=float, help="bump height in [-1, 1] units (default 2)")
    q.add_argument("--noise-std", type=float, help="pixel noise standard deviation in [-1, 1] units, added before "
                   "clipping to [-1, 1] (default 1)")
    q.add_argument("--out", type=Path, required=True, help="output .npz: images (noisy, uint8), clean, shape_index, "
                   "angles")
    q.set_defaults(run_command=shapes)

    c = kinds.add_parser("cryoem", help="a simulated cryo-EM particle stack (a stand-in for the MAD paper's Sec. 5.4 "
                         "data): projections of a random Gaussian-atom chain in uniform orientations, weak-phase "
                         "CTF, Gaussian noise; writes FILE.mrcs and, for measurement only, FILE.npz")
    c.add_argument("--n", type=int, default=10_000, help="number of particles (default %(default)s)")
    c.add_argument("--size", type=int, default=32, help="box side in pixels, at least 8 (default %(default)s)")
    c.add_argument("--pixel-size", type=float, default=4.0, help="pixel size in Å/px (default %(default)s: a "
                   "128 Å box at 32 px around a particle about 100 Å across)")
    c.add_argument("--snr", type=float, default=0.1, help="signal-to-noise ratio var(clean) / var(noise) per image "
                   "(default %(default)s; real particle stacks: about 0.05-0.1)")
    c.add_argument("--ctf", choices=["on", "none"], default="on", help="apply the weak-phase CTF (300 kV, Cs 2.7 mm, "
                   "amplitude contrast 0.1) or none (default %(default)s)")
    c.add_argument("--defocus-min", type=float, default=1.0, help="smallest defocus in µm, underfocus positive "
                   "(default %(default)s)")
    c.add_argument("--defocus-max", type=float, default=2.5, help="largest defocus in µm; each particle's is uniform "
                   "in [min, max] (default %(default)s)")
    c.add_argument("--seed", type=int, default=0, help="seed of the orientations, defoci and noise (default "
                   "%(default)s)")
    c.add_argument("--structure-seed", type=int, help="seed of the molecule (default: --seed), so stacks of one "
                   "molecule can differ in --seed")
    c.add_argument("--out", type=Path, required=True, help="output stack FILE.mrcs (or .mrc; float32, per-image "
                   "normalised to [-1, 1]); FILE.npz beside it holds the clean images, projections, rotations, "
                   "defoci, atoms and settings")
    c.set_defaults(run_command=cryoem)


def shapes(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .. import viz
    from ..checkpoint import save_npz
    from ..data import shapes as noisy

    if args.out.suffix != ".npz":
        raise ValueError(f"--out must end in .npz, got {args.out}")
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    corruption = {k: getattr(args, k) for k in ("n_bumps", "bump_width", "bump_depth", "noise_std")
                  if getattr(args, k) is not None}
    data = noisy.noisy_shapes(args.n, size=args.size, seed=args.seed, **corruption)
    images = np.rint((data.noisy.numpy() + 1) * 127.5).astype(np.uint8)  # the 8-bit levels, exactly

    save_npz(args.out, images=images, clean=data.clean.numpy(), shape_index=data.shape_index.numpy(),
             angles=data.angles.numpy(), params=json.dumps(data.params))
    figure = viz.image_grid(torch.cat([data.clean[:8], data.noisy[:8]]), args.out.with_suffix(".png"), nrow=8,
                            title="clean (top) and noisy (bottom)")
    print(f"{args.n} noisy {args.size}x{args.size} shapes -> {args.out} (train with --data {args.out}); "
          f"preview {figure}")
    return 0


def cryoem(args: argparse.Namespace) -> int:
    import torch

    from .. import viz
    from ..data import cryoem as simulator

    if args.out.suffix.lower() not in (".mrcs", ".mrc"):
        raise ValueError(f"--out must end in .mrcs or .mrc, got {args.out}")
    settings = simulator.Settings(size=args.size, pixel_size=args.pixel_size, snr=args.snr, ctf=args.ctf == "on",
                                  defocus_min=args.defocus_min, defocus_max=args.defocus_max, seed=args.seed,
                                  structure_seed=args.structure_seed)
    stack = simulator.simulate(args.n, settings)
    stack_path, side = simulator.save_stack(stack, args.out)
    shown = torch.cat([stack.clean[:8], stack.images[:8]])[:, None]
    figure = viz.image_grid(shown, args.out.with_suffix(".png"), nrow=8, per_image=True,
                            title=f"clean (top) and noisy at SNR {args.snr:g} (bottom), each image min-max")
    print(f"{args.n} simulated {args.size}x{args.size} particles -> {stack_path} (train with --data {stack_path}); "
          f"clean manifold for measuring in {side}; preview {figure}")
    return 0
