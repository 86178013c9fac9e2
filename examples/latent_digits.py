"""Experiment 7 of the NCSN-schedules report: PCA latent space against pixel space on `digits`. Time per training step,
time per sample and sample quality, all measured in one process (student report on NCSN, Sec. 3
"Latent generation" and Sec. 5.3).

    python examples/latent_digits.py [--steps 500] [--long 10] [--n 1000] [--threads 1] [--runs DIR] [--out examples]

Every model is trained by ``scorelab.train`` on the 1437 training digits with the same budget: seed 0,
``--steps`` steps, batch 128, lr 1e-3, EMA half-life steps/5.
- ``pixels``: the UNet (model_channels 32) on the 8x8 images.
- ``pca:1.0``: an MLP (width 256, depth 4) on all 61 principal components with nonzero variance.
  For an MLP this is pixel space: a rotation of it that drops the three constant pixels.
- ``pca:0.99``, ``pca:0.95``, ``pca:elbow``: the same MLP on the top 41, 28 and 14 components.
- ``pca:0.95 x10``, ``pca:elbow x10``: the same again with ``--long`` times the steps (EMA half-life
  scaled alike), which costs about the UNet's training time: equal compute instead of equal steps.

Time per training step is the median over steps 12 to the end, in wall time and in process CPU time
(the machine is shared, so wall time carries other people's load). Time per sample is the median of
``--repeats`` runs of ``--n`` samples in one batch (18 Heun steps, 35 NFE; latent codes are decoded
inside the timed region), again in wall and CPU time. Torch runs on ``--threads`` threads (default 1:
on a busy 2-core machine two threads wait on each other, and a UNet step took 6x longer). Quality is measured on the ``--n`` samples from seeds 0..n-1, clipped to
[-1, 1] as they are shown: the digits classifier's confident fraction, the Frechet distance of its
features to the 360 held-out digits, the total variation between the class histograms, and the median
distance to the nearest training digit. The same measures on the training digits and on their PCA
projections give the floor of the Frechet distance and the best each codec can do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from scorelab.data.images import load_digits
from scorelab.latent import PCA
from scorelab.metrics.digits import digits_quality
from scorelab.runs import Run
from scorelab.sample import generate
from scorelab.schedules import karras
from scorelab.train import TrainConfig, TrainState, train

MODELS = {  # name -> (model, latent spec, model options)
    "pixels": ("unet", None, {"model_channels": 32}),
    "pca:1.0": ("mlp", "pca:1.0", {}),
    "pca:0.99": ("mlp", "pca:0.99", {}),
    "pca:0.95": ("mlp", "pca:0.95", {}),
    "pca:elbow": ("mlp", "pca:elbow", {}),
}
LONG = ("pca:0.95", "pca:elbow")  # also trained for --long times the steps
SKIP = 10  # first steps left out of the per-step median (allocations, warm-up)
SAMPLER_STEPS = 18


def train_timed(name: str, steps: int, root: Path) -> dict:
    """Train one model (``name`` in MODELS, or ``"NAME xK"`` for K times the steps); the wall and CPU
    time of every step from a training callback."""
    base, _, times = name.partition(" x")
    model, latent, options = MODELS[base]
    steps *= int(times or 1)
    config = TrainConfig(data="digits", model=model, latent=latent, steps=steps, batch_size=128, lr=1e-3,
                         ema_halflife=steps / 5, model_options=options, checkpoint_every=steps, log_every=50,
                         device="cpu")
    stamps: list[tuple[float, float]] = []

    def clock(state: TrainState) -> None:
        stamps.append((time.perf_counter(), time.process_time()))

    run = root / name.replace(":", "-").replace(" ", "-")
    t0 = time.perf_counter()
    train(config, run, progress=False, callbacks=[clock])
    seconds = time.perf_counter() - t0
    wall = [b[0] - a[0] for a, b in zip(stamps[SKIP:], stamps[SKIP + 1:])]
    cpu = [b[1] - a[1] for a, b in zip(stamps[SKIP:], stamps[SKIP + 1:])]
    return {"run": run, "steps": steps, "train_seconds": seconds, "step_ms": 1e3 * statistics.median(wall),
            "step_cpu_ms": 1e3 * statistics.median(cpu)}


def sample_timed(run: Path, n: int, repeats: int) -> tuple[torch.Tensor, list[tuple[float, float]], int]:
    """``n`` samples from seeds 0..n-1 (decoded for a latent run), the (wall, CPU) seconds per sample
    of each repeat, and the dimension the model works in."""
    model = Run.open(run)
    per_sample = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        x, _ = generate(model.denoiser, model.data_shape, list(range(n)), sigmas=karras(SAMPLER_STEPS), batch_size=n)
        images = model.decode(x)
        per_sample.append(((time.perf_counter() - t0) / n, (time.process_time() - c0) / n))
    return images, per_sample, math.prod(model.data_shape)


def quality(images: torch.Tensor, held_out: torch.Tensor, train_digits: torch.Tensor | None) -> dict:
    q = digits_quality(images.clamp(-1, 1), reference=held_out, train=train_digits)
    keep = ("confident_fraction", "frechet_distance", "class_histogram_tv")
    out = {k: q[k] for k in keep}
    if "nearest_train_distance" in q:
        out["nearest_train_median"] = q["nearest_train_distance"]["median"]
    return out


def ceilings(train_digits: torch.Tensor, held_out: torch.Tensor, names: list[str]) -> dict:
    """Quality of the training digits themselves and of their projection by each codec, with the fit time."""
    rows = {"training digits": {"dim": 64, **quality(train_digits, held_out, None)}}
    for name, (_, latent, _) in MODELS.items():
        if latent is None or name not in names:
            continue
        t0 = time.perf_counter()
        pca = PCA.from_spec(latent, train_digits)
        fit = time.perf_counter() - t0
        rows[f"training digits through {name}"] = {
            "dim": pca.n_components, "explained": float(pca.explained_variance_ratio.sum()), "fit_seconds": fit,
            **quality(pca.reconstruct(train_digits), held_out, None)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps of every model (default 500)")
    parser.add_argument("--long", type=int, default=10, help=f"steps multiplier for the extra {', '.join(LONG)} "
                        "rows (default 10; 0: none)")
    parser.add_argument("--n", type=int, default=1000, help="samples per model (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed sampling runs per model (default 3)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--runs", type=Path, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    names += [f"{m} x{args.long}" for m in LONG if m in names and args.long > 1]
    train_digits, held_out = load_digits("train"), load_digits("test")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.runs or Path(tmp)
        results, grids = {}, {}
        for name in names:
            row = train_timed(name, args.steps, root)
            images, per_sample, row["dim"] = sample_timed(row.pop("run"), args.n, args.repeats)
            row["ms_per_sample"] = 1e3 * statistics.median(w for w, _ in per_sample)
            row["cpu_ms_per_sample"] = 1e3 * statistics.median(c for _, c in per_sample)
            row.update(quality(images, held_out, train_digits))
            results[name], grids[name] = row, images[:64]
            print(f"{name}: {row}", flush=True)
    reference = ceilings(train_digits, held_out, names)
    wall = time.perf_counter() - t_start
    report(results, reference, args, wall)
    args.out.joinpath("results").mkdir(parents=True, exist_ok=True)
    args.out.joinpath("figures").mkdir(parents=True, exist_ok=True)
    machine = {"machine": platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__}
    settings = {"steps": args.steps, "long": args.long, "batch_size": 128, "lr": 1e-3, "ema_halflife": "steps / 5",
                "n": args.n,
                "repeats": args.repeats, "sampler": f"heun, {SAMPLER_STEPS} steps", "skip_steps": SKIP}
    (args.out / "results" / "latent_digits.json").write_text(json.dumps(
        {"settings": settings, "machine": machine, "wall_seconds": wall, "models": results,
         "reference": reference}, indent=1))
    figure(grids, train_digits[:64], args.out / "figures" / "latent_digits.png", results)
    print(f"-> {args.out / 'results' / 'latent_digits.json'}, {args.out / 'figures' / 'latent_digits.png'} "
          f"({wall:.0f} s)")


def report(results: dict, reference: dict, args: argparse.Namespace, wall: float) -> None:
    base = results.get("pixels")
    longer = f" (x{args.long}: {args.long * args.steps})" if args.long > 1 else ""
    print(f"\ndigits, {args.steps} steps at batch 128 per model{longer}; {args.n} samples, {SAMPLER_STEPS} Heun steps; "
          f"torch threads {torch.get_num_threads()}; {wall:.0f} s in all")
    print("| model | dim | steps | ms / step (wall) | ms / step (CPU) | train s | ms / sample (wall) "
          "| ms / sample (CPU) | confident | Frechet | class TV | nearest train |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def vs_pixels(name: str, key: str) -> str:
        return f" ({base[key] / results[name][key]:.1f}x)" if base and name != "pixels" else ""

    for name, r in results.items():
        print(f"| {name} | {r['dim']} | {r['steps']} | {r['step_ms']:.1f}{vs_pixels(name, 'step_ms')} "
              f"| {r['step_cpu_ms']:.1f}{vs_pixels(name, 'step_cpu_ms')} | {r['train_seconds']:.0f} "
              f"| {r['ms_per_sample']:.2f}{vs_pixels(name, 'ms_per_sample')} "
              f"| {r['cpu_ms_per_sample']:.2f}{vs_pixels(name, 'cpu_ms_per_sample')} "
              f"| {r['confident_fraction']:.3f} | {r['frechet_distance']:.1f} "
              f"| {r['class_histogram_tv']:.3f} | {r['nearest_train_median']:.2f} |")
    print("\n| reference | dim | explained | confident | Frechet | class TV |")
    print("|---|---|---|---|---|---|")
    for name, r in reference.items():
        print(f"| {name} | {r['dim']} | {r.get('explained', 1.0):.3f} | {r['confident_fraction']:.3f} "
              f"| {r['frechet_distance']:.1f} | {r['class_histogram_tv']:.3f} |")


def figure(grids: dict, real: torch.Tensor, path: Path, results: dict) -> None:
    from matplotlib.figure import Figure

    panels = {"training digits": real, **grids}
    cols = math.ceil(len(panels) / 2)
    fig = Figure(figsize=(3.0 * cols, 6.6), layout="constrained")
    for k, (name, images) in enumerate(panels.items()):
        ax = fig.add_subplot(2, cols, k + 1)
        ax.imshow(tile(images), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        r = results.get(name)
        ax.set_title(name if r is None else f"{name} ({r['dim']}-d)\nconfident {r['confident_fraction']:.2f}, "
                     f"FD {r['frechet_distance']:.0f}", fontsize=9)
    fig.savefig(path, dpi=110)


def tile(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """(N, 1, H, W) images in [-1, 1] as one (rows (H+1), nrow (W+1)) array in [0, 1] with white gaps."""
    x = (images.clamp(-1, 1) + 1) / 2
    n, _, h, w = x.shape
    rows = -(-n // nrow)
    grid = torch.ones(rows * (h + 1) + 1, nrow * (w + 1) + 1)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = x[i, 0]
    return grid


if __name__ == "__main__":
    main()
