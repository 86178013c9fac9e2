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
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--n-bumps", type=int, help="bumps subtracted on each shape's boundary (default 50)")
    q.add_argument("--bump-width", type=float, help="bump standard deviation, fraction of the side (default 0.03)")
    q.add_argument("--bump-depth", type=float, help="bump height in [-1, 1] units (default 2)")
    q.add_argument("--noise-std", type=float, help="pixel noise standard deviation (default 1)")
    q.add_argument("--out", type=Path, required=True, help="output .npz: images (noisy, uint8), clean, shape_index, "
                   "angles")
    q.set_defaults(run_command=shapes)


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
