"""Song & Ermon 2019 (NCSN) on scikit-learn's 8x8 digits: the reports' experiments 3, 4 and 5.

3. Geometric, linear and sqrt noise schedules (L = 10, sigma from 1 to 0.1; the schedules report,
   Sec. 2.1 and 5.1) trained with the same budget, sampled by annealed Langevin dynamics and
   measured with the digits classifier.
4. The effect of the step size eps, the steps per level T and the largest level sigma_1 on annealed
   Langevin samples (the Langevin report, Sec. 8.2, Figures 8-10).
5. Inpainting of held-out digits from each of the four sides (the Langevin report, Sec. 8.3):
   reconstruction error on the hidden half and agreement of the classifier with the true label.

    python examples/ncsn_digits.py [--steps 3000] [--n 500] [--only 3,4,5]

Runs go to runs/ncsn-digits/ (resumed if present), results to examples/results/ncsn_digits.json,
figures to examples/figures/ncsn_digits_*.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import Tensor

from scorelab import viz
from scorelab.data.images import digits
from scorelab.metrics.digits import classify_digits, digits_quality
from scorelab.runs import load_denoiser
from scorelab.sample import annealed_langevin, inpaint, noise_for_seeds, side_mask, unknown_rmse
from scorelab.schedules import karras, parse_levels
from scorelab.train import TrainConfig, train

ROOT = Path(__file__).parent
RUNS = Path("runs/ncsn-digits")
SCHEDULES = {"geometric": "geometric:1:0.1:10", "linear": "linear:1:0.1:10", "sqrt": "sqrt:1:0.1:10"}
SIGMA_1 = {1.0: "geometric:1:0.1:10", 3.0: "geometric:3:0.1:10", 10.0: "geometric:10:0.1:10"}
EPS = 2e-3    # alpha_i / sigma_i^2 = eps / sigma_L^2 = 0.2, NCSN's ratio (2e-5 / 0.01^2)
T = 50        # Langevin steps per level (NCSN: 100; 50 halves the sampling time)
SIDES = ("top", "bottom", "left", "right")


def train_ncsn(levels: str, steps: int, *, seed: int = 0) -> tuple[torch.nn.Module, float]:
    """An NCSN (conditional instance norm on the level index, 32 channels) trained with the NCSN
    loss over ``levels`` on the 1437 training digits; resumed from runs/ncsn-digits/ if present.
    Returns the EMA denoiser and the training seconds of this call."""
    run = RUNS / levels.replace(":", "_")
    config = TrainConfig(data="digits", model="ncsn", loss="ncsn", levels=levels, steps=steps, batch_size=128,
                         lr=1e-3, warmup=100, ema_halflife=500, seed=seed, checkpoint_every=1000, log_every=100,
                         model_options={"channels": 32, "levels": levels})
    start = time.perf_counter()
    train(config, run, resume=(run / "config.json").exists(), progress=False)
    seconds = time.perf_counter() - start
    denoiser, _ = load_denoiser(run)
    return denoiser.eval(), seconds


_SAMPLES: dict[tuple, dict[str, Tensor]] = {}  # one model per levels string: settings recur across experiments


@torch.no_grad()
def sample(denoiser: torch.nn.Module, levels: str, n: int, *, eps: float = EPS, steps_per_level: int = T,
           seed: int = 0) -> dict[str, Tensor]:
    """Annealed Langevin samples from seeds ``seed .. seed + n - 1`` (``raw``), the same samples after
    one final denoising step D(x, sigma_L) (``denoised``), and the first 8 samples at the end of every
    level (``snapshots``); remembered for the model of ``levels`` and these settings."""
    key = (levels, n, eps, steps_per_level, seed)
    if key not in _SAMPLES:
        _SAMPLES[key] = _annealed(denoiser, parse_levels(levels), n, eps, steps_per_level, seed)
    return _SAMPLES[key]


def _annealed(denoiser: torch.nn.Module, levels: Tensor, n: int, eps: float, steps_per_level: int,
              seed: int) -> dict[str, Tensor]:
    noise, generators = noise_for_seeds(range(seed, seed + n), (1, 8, 8))
    kept: list[Tensor] = []

    def keep(i: int, sigma: Tensor, x: Tensor, denoised: Tensor) -> None:
        if (i + 1) % steps_per_level == 0:
            kept.append(x[:8].clone())

    raw = annealed_langevin(denoiser, noise * levels[0], levels, eps=eps, steps_per_level=steps_per_level,
                            generator=generators, callback=keep)
    denoised = denoiser(raw, torch.full((n,), float(levels[-1])))
    return {"raw": raw, "denoised": denoised, "snapshots": torch.stack(kept, 1)}  # snapshots (8, L, 1, 8, 8)


def quality(samples: Tensor) -> dict:
    """The digits-classifier measures against the held-out split, plus the distance to the training set."""
    q = digits_quality(samples.clamp(-1, 1), digits("test")[0], digits("train")[0])
    return {"confident": q["confident_fraction"], "frechet": q["frechet_distance"], "tv": q["class_histogram_tv"],
            "nearest_train": q["nearest_train_distance"]["median"]}


def row(name: str, q: dict) -> str:
    return f"| {name} | {q['confident']:.3f} | {q['frechet']:.2f} | {q['tv']:.3f} | {q['nearest_train']:.2f} |"


HEADER = "| samples | confident > 0.9 | Frechet (features) | class TV | median nearest-train L2 |\n|---|---|---|---|---|"


def experiment_3(args: argparse.Namespace) -> dict:
    print("\n## Experiment 3: geometric vs linear vs sqrt schedules (L = 10, sigma 1 -> 0.1)\n")
    results, grids, progressions = {}, [], []
    real = digits("train")[0][: args.n]  # real digits measured like samples: against the held-out split
    results["training digits"] = quality(real)
    lines = [HEADER, row(f"{args.n} training digits", results["training digits"])]
    for name, levels in SCHEDULES.items():
        denoiser, seconds = train_ncsn(levels, args.steps)
        s = sample(denoiser, levels, args.n)
        for kind in ("raw", "denoised"):
            results[f"{name} {kind}"] = quality(s[kind])
            lines.append(row(f"{name}, {kind}", results[f"{name} {kind}"]))
        results[f"{name} levels"] = [round(v, 4) for v in parse_levels(levels).tolist()]
        grids.append(s["denoised"][:40])
        progressions.append(s["snapshots"][:4].flatten(0, 1))
        print(f"trained {name} in {seconds:.0f} s this call")
    print("\n".join(lines))
    viz.image_grid(torch.cat(grids), ROOT / "figures" / "ncsn_digits_schedules.png", nrow=20,
                   title="final samples (denoised): geometric (rows 1-2), linear (3-4), sqrt (5-6)")
    viz.image_grid(torch.cat(progressions), ROOT / "figures" / "ncsn_digits_progression.png", nrow=10,
                   title="end of each level 1..10: geometric (rows 1-4), linear (5-8), sqrt (9-12)")
    return results


def experiment_4(args: argparse.Namespace) -> dict:
    print(f"\n## Experiment 4: eps, steps per level T and sigma_1 (annealed Langevin, n = {args.n})\n")
    results: dict = {"eps": {}, "T": {}, "sigma_1": {}}
    denoiser, _ = train_ncsn(SCHEDULES["geometric"], args.steps)
    lines = [HEADER]
    for eps in (2e-5, 2e-4, 2e-3, 5e-3, 1e-2):
        q = quality(sample(denoiser, SCHEDULES["geometric"], args.n, eps=eps)["denoised"])
        results["eps"][f"{eps:g}"] = q
        lines.append(row(f"eps {eps:g} (T {T}, sigma_1 1)", q))
    for steps in (10, 50, 200):
        q = quality(sample(denoiser, SCHEDULES["geometric"], args.n, steps_per_level=steps)["denoised"])
        results["T"][str(steps)] = q
        lines.append(row(f"T {steps} (eps {EPS:g}, sigma_1 1)", q))
    grids = []
    for sigma_1, levels in SIGMA_1.items():
        model, _ = train_ncsn(levels, args.steps)
        s = sample(model, levels, args.n)
        for kind in ("raw", "denoised"):
            results["sigma_1"][f"{sigma_1:g} {kind}"] = q = quality(s[kind])
            lines.append(row(f"sigma_1 {sigma_1:g}, {kind} (eps {EPS:g}, T {T})", q))
        grids.append(s["denoised"][:20])
    print("\n".join(lines))
    viz.image_grid(torch.cat(grids), ROOT / "figures" / "ncsn_digits_sigma1.png", nrow=20,
                   title="sigma_1 = 1, 3, 10 (one row each); sigma_L = 0.1, L = 10")
    return results


def experiment_5(args: argparse.Namespace) -> dict:
    print("\n## Experiment 5: inpainting the 360 held-out digits from each side\n")
    denoiser, _ = train_ncsn(SCHEDULES["geometric"], args.steps)
    images, labels = digits("test")
    train_images = digits("train")[0]
    levels = parse_levels(SCHEDULES["geometric"])
    generators = noise_for_seeds(range(len(images)), (1, 8, 8))[1]
    results: dict = {"original accuracy": accuracy(images, labels)}
    lines = ["| hidden side | method | RMSE on hidden half | classifier agrees with label |", "|---|---|---|---|",
             f"| none | original digits | 0 | {results['original accuracy']:.3f} |"]
    figure = []
    for side in SIDES:
        mask = side_mask((1, 8, 8), side)
        with torch.no_grad():
            methods = {
                "annealed Langevin": inpaint(denoiser, images, mask, torch.cat([levels, levels.new_zeros(1)]),
                                             eps=EPS, steps_per_level=T, generator=generators),
                "Heun (18 steps, sigma 1 -> 0.1)": inpaint(denoiser, images, mask, karras(18, 0.1, 1.0),
                                                           sampler="heun", generator=generators),
                "nearest training digit on the known half": nearest_completion(images, mask, train_images),
                "hidden half left blank": mask * images - (1 - mask),
            }
        for method, filled in methods.items():
            r = {"rmse": unknown_rmse(filled, images, mask), "agreement": accuracy(filled, labels)}
            results[f"{side} {method}"] = r
            lines.append(f"| {side} | {method} | {r['rmse']:.3f} | {r['agreement']:.3f} |")
        figure += [images[:12], mask * images, methods["annealed Langevin"][:12]]
    print("\n".join(lines))
    viz.image_grid(torch.cat([f[:12] for f in figure]), ROOT / "figures" / "ncsn_digits_inpainting.png", nrow=12,
                   title="hidden top, bottom, left, right: original / known half / annealed Langevin")
    return results


def accuracy(images: Tensor, labels: Tensor) -> float:
    return float((classify_digits(images.clamp(-1, 1)).argmax(1) == labels).double().mean())


def nearest_completion(images: Tensor, mask: Tensor, train_images: Tensor) -> Tensor:
    """A baseline: the hidden half copied from the training digit closest on the known half."""
    m = mask.expand_as(images[:1]).flatten()
    d = torch.cdist((images.flatten(1) * m).double(), (train_images.flatten(1) * m).double())
    nearest = train_images[d.argmin(1)]
    return mask * images + (1 - mask) * nearest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps per model (batch 128)")
    parser.add_argument("--n", type=int, default=250, help="samples per setting (seeds 0 .. n-1)")
    parser.add_argument("--only", default="3,4,5", help="experiments to run")
    args = parser.parse_args()
    out = ROOT / "results" / "ncsn_digits.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    start = time.perf_counter()
    for k in args.only.split(","):
        results[f"experiment_{k}"] = {"3": experiment_3, "4": experiment_4, "5": experiment_5}[k](args)
    results["settings"] = {"steps": args.steps, "n": args.n, "eps": EPS, "T": T}
    out.write_text(json.dumps(results, indent=1))
    print(f"\n{time.perf_counter() - start:.0f} s; results -> {out}")


if __name__ == "__main__":
    main()
