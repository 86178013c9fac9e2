"""MAD on noisy shapes: which sampler settings besides (a, b) move its results. From one base point,
each variant changes one setting (steps, p, the derivative and delta, a, b, and the paper's own
Figure 7 point), all from the same seeds as one Heun run, measured as ``mad_shapes.py`` does.

    python examples/mad_shapes_settings.py --model pretrained:shapes-noisy --n 64

Besides the median correlation and the shape fractions, every MAD row gives the fraction of each of
Heun's shapes that the same seed keeps under MAD (``kept``): a paired measure, so it separates a
setting that turns one shape into another from seeds that merely drew fewer of it. Writes
``settings.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mad_shapes import header, measure, row

from scorelab.runs import load_denoiser
from scorelab.sample import generate
from scorelab.schedules import karras
from scorelab.train import resolve_device

BASE = {"a": 0.01, "b": 1.0, "p": 8.0, "delta": 1e-3, "derivative": "central", "steps": 32}
VARIANTS = {
    "base": {},
    "64 steps": {"steps": 64},
    "p = 4": {"p": 4.0},
    "p = 16": {"p": 16.0},
    "forward, delta 0.02": {"derivative": "forward", "delta": 0.02},
    "a = 0.002": {"a": 0.002},
    "a = 0.1": {"a": 0.1},
    "b = 0.5": {"b": 0.5},
    "paper Fig. 7 point": {"a": 0.002, "b": 15.0, "derivative": "forward", "delta": 0.02},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="run directory, checkpoint file or pretrained:NAME")
    parser.add_argument("--out", default="runs/shapes-settings")
    parser.add_argument("--n", type=int, default=64, help="seeds 0 .. n-1")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    denoiser, meta = load_denoiser(args.model, device=device)
    seeds = list(range(args.n))
    common = {"batch_size": args.batch_size, "device": device}
    results: dict = {"settings": vars(args) | {"device": str(device), "base": BASE}}

    t0 = time.perf_counter()
    heun, nfe = generate(denoiser, meta["data_shape"], seeds, sampler="heun", sigmas=karras(BASE["steps"]), **common)
    results["heun"] = measure(heun) | {"steps": BASE["steps"], "nfe": nfe, "seconds": time.perf_counter() - t0}
    baseline = results["heun"]["median_correlation"]
    print(f"seeds 0..{args.n - 1}, base point {BASE}, device {device}")
    print(header())
    print(row(f"heun, {BASE['steps']} steps", results["heun"], baseline), flush=True)
    for name, change in VARIANTS.items():
        options = BASE | change
        params = {k: v for k, v in options.items() if k != "steps"}
        t0 = time.perf_counter()
        x, nfe = generate(denoiser, meta["data_shape"], seeds, sampler="mad", sigmas=karras(int(options["steps"])),
                          **params, **common)
        results[name] = measure(x, heun) | options | {"nfe": nfe, "seconds": time.perf_counter() - t0}
        print(row(name, results[name], baseline), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(results, indent=2))
    print(f"-> {out / 'settings.json'}")


if __name__ == "__main__":
    main()
