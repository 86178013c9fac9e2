"""Gaussian-score paper on `digits`: how much of a trained UNet's score the analytical models
explain (Sec. 4, Figures 6 and 9), and teleportation (Sec. 6, Algorithm 1) against the number
of skipped steps.

    python examples/gaussian_teleport.py [--run runs/demo/digits] [--out examples/figures]

Without ``--run`` the demo's digits UNet is trained first (about 5 minutes on 2 CPU cores).

1. Unexplained variance of the network's score (eq. 28) by ``isotropic``, ``gaussian``,
   ``gmm10`` (full rank and ranks 4 and 16) and ``delta`` (the training set), at the default sigma
   grid, for 256 query points of each kind (training digits + sigma z, and sigma z alone).
2. Teleportation on an 18-step Karras grid: for each number of skipped steps, three disjoint
   sets of 1000 seeds. Each set is scored by the digits classifier (fraction of confident
   samples) and by the Frechet distance of the classifier's features to the 360 held-out
   digits. The ``auto`` choice (`sample.auto_skip`, threshold 1%) is marked. The run-to-run
   noise is the spread over the three seed sets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from scorelab.analysis import plot_unexplained, standard_candidates, unexplained_variance
from scorelab.analytic import Gaussian
from scorelab.data.images import load_digits
from scorelab.metrics.digits import digits_quality
from scorelab.runs import load_denoiser
from scorelab.sample import auto_skip, noise_for_seeds
from scorelab.sample.generate import generate
from scorelab.schedules import karras

STEPS = 18
SETS = 3
PER_SET = 1000


def _run(path: str | None) -> Path:
    if path is not None:
        return Path(path)
    from scorelab.demo import DIGITS
    from scorelab.train import train

    run = Path("runs/teleport-digits")
    if not (run / "config.json").exists():
        train(DIGITS, run, progress=False)
    return run


def gaussianity(denoiser, train: torch.Tensor, out: Path) -> dict:
    candidates = standard_candidates(train, n_components=10, ranks=(None, 4, 16))
    t0 = time.perf_counter()
    result = unexplained_variance(denoiser, candidates, train, n=256)
    seconds = time.perf_counter() - t0
    result.to_csv(out / "gaussian_unexplained_digits.csv")
    eig = result.eigenvalues[:5].sqrt().tolist()
    plot_unexplained(result, out / "gaussian_unexplained_digits.png",
                     title="digits UNet: fraction of its score the analytical models leave unexplained")
    print(f"## 1. unexplained variance of the UNet's score (mean over 256 points; {seconds:.0f} s)")
    print("sqrt of the top covariance eigenvalues: " + ", ".join(f"{v:.2f}" for v in eig))
    for query in ("noise", "data"):
        print(f"\n{query} queries\n| sigma | " + " | ".join(result.names) + " |")
        print("|---" * (len(result.names) + 1) + "|")
        for i, sigma in enumerate(result.sigmas.tolist()):
            row = [f"{float(result.mean(name, query)[i]):.2g}" for name in result.names]
            print(f"| {sigma:g} | " + " | ".join(row) + " |")
    return {q: {n: result.mean(n, q).tolist() for n in result.names} for q in ("noise", "data")} | {
        "sigmas": result.sigmas.tolist()}


def teleportation(denoiser, meta: dict, train: torch.Tensor, held_out: torch.Tensor, skips: list[int],
                  sampler: str = "heun", steps: int = STEPS) -> dict:
    gaussian = Gaussian.fit(train)
    sigmas = karras(steps)
    probe, _ = noise_for_seeds(range(1_000_000, 1_000_064), meta["data_shape"])
    auto = auto_skip(denoiser, gaussian, probe * sigmas[0], sigmas)
    rows = {}
    skips = [k for k in skips if k <= steps]
    print(f"\n## 2. teleportation, {steps} {sampler} steps, {SETS} sets of {PER_SET} seeds; auto skip = {auto}")
    print("| skipped | sigma_skip | NFE | NFE saved | confident fraction | Frechet distance | s / 1000 |")
    print("|---|---|---|---|---|---|---|")
    for k in sorted(set(skips) | {auto}):
        conf, fd, nfe, seconds = [], [], 0.0, 0.0
        for r in range(SETS):
            seeds = list(range(r * PER_SET, (r + 1) * PER_SET))
            t0 = time.perf_counter()
            x, nfe = generate(denoiser, meta["data_shape"], seeds, sampler=sampler, sigmas=sigmas, n_skip=k,
                              gaussian=gaussian)
            seconds += time.perf_counter() - t0
            q = digits_quality(x.clamp(-1, 1), reference=held_out)
            conf.append(q["confident_fraction"])
            fd.append(q["frechet_distance"])
        rows[k] = {"sigma_skip": float(sigmas[k]), "nfe": nfe, "confident": conf, "frechet": fd,
                   "seconds_per_1000": seconds / SETS}
        mark = " (auto)" if k == auto else ""
        print(f"| {k}{mark} | {float(sigmas[k]):.3g} | {nfe:g} | {1 - nfe / rows[min(rows)]['nfe']:.0%} | "
              f"{np.mean(conf):.3f} +- {np.std(conf):.3f} | {np.mean(fd):.2f} +- {np.std(fd):.2f} | "
              f"{seconds / SETS:.2f} |")
    return {"sampler": sampler, "steps": steps, "auto": auto, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a trained digits run (default: train the demo's digits UNet)")
    parser.add_argument("--out", default="examples/figures")
    parser.add_argument("--skips", default="0,2,4,6,8,10,12,14,16,18")
    parser.add_argument("--sampler", default="heun", help="the sampler that continues after the jump (any "
                        "deterministic one of the registry: heun, euler, ddim, dpmpp-2m)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"Karras grid steps (default {STEPS})")
    parser.add_argument("--teleport-only", action="store_true", help="skip part 1 (the unexplained variance)")
    args = parser.parse_args()
    run = _run(args.run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    denoiser, meta = load_denoiser(run)
    train, held_out = load_digits("train"), load_digits("test")
    results = {"run": str(run)} | ({} if args.teleport_only else {"gaussianity": gaussianity(denoiser, train, out)})
    results["teleport"] = teleportation(denoiser, meta, train, held_out, [int(k) for k in args.skips.split(",")],
                                        args.sampler, args.steps)
    name = "gaussian_teleport_digits" + ("" if args.sampler == "heun" else f"_{args.sampler}")
    (out / f"{name}.json").write_text(json.dumps(results, indent=1))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
