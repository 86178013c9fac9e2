"""The few-step samplers against each other: error against the exact answer versus NFE, and sample
quality of a trained digits model at about 10, 15, 20 and 35 NFE.

    python benchmarks/bench_samplers.py [--run runs/demo/digits] [--n 1000] [--out samplers.json]

1. Exact models, float64, 1000 seeds, Karras grid (0.002, 80, rho 7) of N steps: the mean L2 distance
   of the final samples to the exact PF-ODE end point from the same noise. On the digits Gaussian
   (64-D, `Gaussian.fit` of the training digits) the end point is the closed form (eq. 17); on gmm3
   (the exact mixture denoiser) it is Heun on 4000 steps (second order: it moves the samples by
   4e-6 in the mean from 2000 steps, so its own error is about 1e-6).
2. The trained digits UNet (the demo's), two disjoint blocks of seeds: the digits classifier's
   confident fraction and the Frechet distance of its features to the 360 held-out digits
   (`metrics.digits.digits_quality`), per sampler at steps giving about 10, 15, 20 and 35 NFE.
   Without ``--run`` part 2 is skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from scorelab.analytic import Gaussian, gaussian_flow_endpoint
from scorelab.data import toy
from scorelab.data.images import load_digits
from scorelab.sample import SAMPLERS, CountNFE, generate, heun, noise_for_seeds
from scorelab.schedules import karras

SAMPLERS_COMPARED = ("euler", "ddim", "heun", "dpmpp-2m")
STEPS = {"euler": (5, 10, 20, 40, 80), "ddim": (5, 10, 20, 40, 80), "heun": (3, 5, 10, 20, 40),
         "dpmpp-2m": (5, 10, 20, 40, 80)}
QUALITY_STEPS = {"euler": (10, 15, 20, 35), "ddim": (10, 15, 20, 35), "dpmpp-2m": (10, 15, 20, 35),
                 "heun": (5, 8, 10, 18), "euler-ancestral": (10, 15, 20, 35)}


def exact_errors(n: int) -> dict:
    """Mean distance to the exact end point against NFE, per exact model and sampler."""
    digits_gaussian = Gaussian.fit(load_digits("train").double())
    gmm3 = toy.load("gmm3", dtype=torch.float64).denoiser
    models = {"digits Gaussian (64-D)": (digits_gaussian, (1, 8, 8)), "gmm3 (exact mixture)": (gmm3, (2,))}
    out: dict = {}
    for name, (model, shape) in models.items():
        noise, _ = noise_for_seeds(range(n), shape, dtype=torch.float64)
        x_T = noise * 80.0
        if isinstance(model, Gaussian):
            truth = gaussian_flow_endpoint(model, x_T, 80.0)
        else:
            truth = heun(model, x_T, karras(4000, dtype=torch.float64))
        out[name] = {}
        for sampler in SAMPLERS_COMPARED:
            rows = []
            for steps in STEPS[sampler]:
                counted = CountNFE(model)
                x = SAMPLERS[sampler](counted, x_T, karras(steps, dtype=torch.float64))
                rows.append({"steps": steps, "nfe": counted.nfe(n),
                             "error": float((x - truth).flatten(1).norm(dim=1).mean())})
            out[name][sampler] = rows
    return out


def quality(run: str, n: int) -> dict:
    from scorelab.metrics.digits import digits_quality
    from scorelab.runs import Run

    model = Run.open(run)
    held_out = load_digits("test")
    out: dict = {}
    for sampler, steps_list in QUALITY_STEPS.items():
        out[sampler] = []
        for steps in steps_list:
            row: dict = {"steps": steps, "confident": [], "frechet": []}
            t0 = time.perf_counter()
            for block in range(2):
                seeds = range(block * n, (block + 1) * n)
                x, row["nfe"] = generate(model.denoiser, model.data_shape, seeds, sampler=sampler,
                                         sigmas=karras(steps), batch_size=n)
                q = digits_quality(x.clamp(-1, 1), reference=held_out)
                row["confident"].append(q["confident_fraction"])
                row["frechet"].append(q["frechet_distance"])
            row["seconds"] = time.perf_counter() - t0
            out[sampler].append(row)
            print(f"| {sampler} | {steps} | {row['nfe']:g} | " + " / ".join(f"{c:.3f}" for c in row["confident"])
                  + " | " + " / ".join(f"{f:.2f}" for f in row["frechet"]) + " |", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a trained digits run for part 2 (e.g. runs/demo/digits)")
    parser.add_argument("--n", type=int, default=1000, help="seeds per block (default 1000)")
    parser.add_argument("--out", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    result: dict = {"exact": exact_errors(args.n)}
    for name, table in result["exact"].items():
        print(f"\n## {name}: mean distance to the exact end point\n| sampler | steps | NFE | error |\n|---|---|---|---|")
        for sampler, rows in table.items():
            for r in rows:
                print(f"| {sampler} | {r['steps']} | {r['nfe']:g} | {r['error']:.3g} |")
    if args.run:
        print("\n## digits UNet: confident fraction and Frechet distance, seeds 0-999 / 1000-1999")
        print("| sampler | steps | NFE | confident | Frechet |\n|---|---|---|---|---|")
        result["quality"] = quality(args.run, args.n)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"-> {args.out}")


if __name__ == "__main__":
    main()
