"""``scorelab demo``: train on gmm3 and digits, sample, measure, draw; several minutes on a 2-core CPU.

Everything it reports is measured on fresh data: gmm3 samples against new exact draws, digits
samples against the held-out split that neither the model nor the classifier saw."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import atomic_write_text, save_npz
from .runs import CONFIG, load_denoiser
from .sample import generate
from .schedules import karras
from .train import TrainConfig, train

# Sized for a few minutes on 2 CPU cores (benchmarks/RESULTS.md, "scorelab demo"): a width-128 MLP
# with a cosine learning-rate decay reaches the bars of the width-256 one in half the steps at a
# quarter of the cost per step; the digits UNet has one residual block per level and no attention.
GMM3 = TrainConfig(data="gmm3", model="mlp", steps=2000, batch_size=1024, lr=3e-3, lr_decay="cosine",
                   ema_halflife=250, checkpoint_every=1000, model_options={"width": 128}, device="cpu")
DIGITS = TrainConfig(data="digits", model="unet", steps=2000, batch_size=128, lr=2e-3, ema_halflife=200,
                     checkpoint_every=500, model_options={"model_channels": 32, "num_res_blocks": 1, "attn_levels": []},
                     device="cpu")
QUICK_STEPS = 20
# 18 Heun steps. EDM's image grid (0.002, 80, rho 7) spends its steps below the scale of gmm3's
# unit-variance modes; this grid, the best of a scan with the *exact* denoiser (README), halves
# the covariance error there (max |eig - 1| 0.178 -> 0.093).
GMM3_SAMPLER = {"steps": 18, "sigma_min": 0.1, "sigma_max": 80.0, "rho": 9.0}
GMM3_SIGMAS = karras(18, sigma_min=0.1, sigma_max=80.0, rho=9.0)


def _train(config: TrainConfig, run: Path, quick: bool, progress: bool) -> float:
    if quick:
        config = replace(config, steps=QUICK_STEPS, checkpoint_every=QUICK_STEPS)
    t0 = time.perf_counter()
    train(config, run, resume=(run / CONFIG).exists(), progress=progress)
    return time.perf_counter() - t0


def _train_and_sample(config: TrainConfig, run: Path, shape: tuple[int, ...], n: int, quick: bool,
                      progress: bool, **sampler: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Train (or resume) the run, draw seeds 0..n-1 with 18 Heun steps (``sampler`` settings for
    ``generate``, EDM's grid by default), save them; return the samples and the NFE and timings."""
    train_s = _train(config, run, quick, progress)
    _phase(f"{run.name}: trained", train_s)
    denoiser, _ = load_denoiser(run)
    seeds = list(range(n))
    t0 = time.perf_counter()
    samples, nfe = generate(denoiser, shape, seeds, progress=progress, **sampler)
    sample_s = time.perf_counter() - t0
    _phase(f"{run.name}: sampled {n} with {nfe:g} NFE", sample_s)
    (run / "samples").mkdir(parents=True, exist_ok=True)
    save_npz(run / "samples" / "heun-18.npz", samples=samples.numpy(), seeds=np.array(seeds))
    return samples, {"n_samples": n, "nfe": nfe, "train_seconds": train_s, "sample_seconds": sample_s}


def _phase(what: str, seconds: float) -> None:
    print(f"  {what} in {seconds:.0f} s", flush=True)


def demo_gmm3(out: Path, quick: bool, progress: bool) -> dict[str, Any]:
    """Mode weights and per-mode covariances of 10 000 Heun samples, and the sliced Wasserstein
    distance to fresh exact samples next to that between two exact samples (the floor)."""
    from . import viz
    from .data import toy
    from .metrics.distances import sliced_wasserstein
    from .metrics.modes import mode_statistics

    run = out / "gmm3"
    n = 1000 if quick else 10_000
    samples, timing = _train_and_sample(GMM3, run, (2,), n, quick, progress, batch_size=n, sigmas=GMM3_SIGMAS)
    t0 = time.perf_counter()
    dist = toy.load("gmm3")
    fresh = dist.sample(n, torch.Generator().manual_seed(10**6))
    fresh2 = dist.sample(n, torch.Generator().manual_seed(10**6 + 1))
    g = torch.Generator().manual_seed(0)
    stats = mode_statistics(samples, torch.as_tensor(dist.params["means"]))
    figure = viz.scatter_2d(samples, run / "figures" / "samples.png", log_prob=dist.log_prob, reference=fresh,
                            title="gmm3")
    timing["measure_seconds"] = time.perf_counter() - t0
    _phase("gmm3: measured and drawn", timing["measure_seconds"])
    return {
        "mode_weights": stats["mode_weights"], "true_mode_weights": [0.2, 0.6, 0.2],
        "mode_covs": stats["mode_covs"], "cov_eig_max_dev": stats["cov_eig_max_dev"],
        "sliced_wasserstein": sliced_wasserstein(samples, fresh, generator=g),
        "sliced_wasserstein_floor": sliced_wasserstein(fresh2, fresh, generator=g),
        "sampler": GMM3_SAMPLER, **timing, "figure": str(figure),
    }


def demo_digits(out: Path, quick: bool, progress: bool) -> dict[str, Any]:
    """Classifier confidence and class histogram of 1 000 generated digits next to the held-out
    real digits, a Frechet distance on classifier features, and nearest-training-image distances."""
    from . import viz
    from .data.images import load_digits
    from .metrics.digits import digits_quality

    run = out / "digits"
    samples, timing = _train_and_sample(DIGITS, run, (1, 8, 8), 100 if quick else 1000, quick, progress,
                                        batch_size=500)
    t0 = time.perf_counter()
    train_set, held_out = load_digits("train"), load_digits("test")
    figure = viz.image_grid(samples[:100], run / "figures" / "samples.png", nrow=10, title="generated digits")
    viz.image_grid(held_out[:100], run / "figures" / "held_out.png", nrow=10, title="held-out real digits")
    quality = {
        "samples": digits_quality(samples, reference=held_out, train=train_set),
        # the floor: real held-out digits; their Frechet distance is taken to the train split
        "held_out_real": digits_quality(held_out, reference=train_set, train=train_set),
    }
    timing["measure_seconds"] = time.perf_counter() - t0
    _phase("digits: measured and drawn", timing["measure_seconds"])
    return quality | {**timing, "figure": str(figure), "held_out_figure": str(run / "figures" / "held_out.png")}


def run_demo(out: Path, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train, sample and measure both demo problems; write ``out/summary.json``. Re-running
    resumes unfinished training instead of starting again."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"gmm3": demo_gmm3(out, quick, progress)}
    summary["digits"] = demo_digits(out, quick, progress)
    summary["quick"] = quick
    summary["machine"] = {"platform": platform.platform(), "processor": platform.machine(),
                          "torch": torch.__version__, "threads": torch.get_num_threads()}
    summary["total_seconds"] = time.perf_counter() - t0
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    g, d = summary["gmm3"], summary["digits"]
    print(f"gmm3: mode weights {[round(w, 3) for w in g['mode_weights']]} (true 0.2, 0.6, 0.2); "
          f"sliced W2 {g['sliced_wasserstein']:.3f} (floor {g['sliced_wasserstein_floor']:.3f})")
    print(f"digits: confident fraction {d['samples']['confident_fraction']:.3f} "
          f"(held-out real {d['held_out_real']['confident_fraction']:.3f})")
    print(f"figures: {g['figure']}, {d['figure']}\nsummary: {out / 'summary.json'} "
          f"({summary['total_seconds']:.0f} s)")
    return summary
