"""Song & Ermon 2019 as reproduced by the two student reports (experiments 1, 2 and 6), in numbers.

    python examples/ncsn_toys.py [--only 1,2,6] [--quick] [--n 5000] [--steps 3000] [--seeds 3]

1. ``gmm3`` (weights 1/5, 3/5, 1/5): plain Langevin from uniform starting points keeps the weights of
   the basins it started in; annealed Langevin recovers 1/5, 3/5, 1/5. With the exact score and with
   ``ncsn-mlp`` models (``--seeds`` of them) trained here with the NCSN loss (denoising-score-matching
   report, Fig. 4).
2. Discrete against continuous sigma conditioning on ``gmm3`` (NCSN-schedules report, Sec. 4.2 and
   5.2, Figs. 4 and 5): two ``ncsn-mlp`` models with the same budget, one trained on the 10 geometric
   levels 10 ... 1, one on sigma log-uniform in [1, 10] (``--seeds`` of each). Their score's mean squared error against the
   exact score over a grid, at sigma = 4.85 (between two levels) and along sigma; then samples with
   few annealed-Langevin steps and their spread around the modes.
6. ECDFs of a noised 1-D three-component mixture for sigma = 1 ... 8 (denoising-score-matching
   report, Fig. 6), against the closed-form CDF.

Every number is printed; results go to ``--results`` (JSON) and figures to ``--out``. ``--quick`` is
a smoke run (small sizes, results and figures in a temporary folder unless given). Torch runs on one
thread by default (``--threads``): the tensors are small, and on a shared CPU two threads ran 9x slower.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from scipy import stats
from torch import Tensor, nn

from scorelab import viz
from scorelab.analytic import GaussianMixture
from scorelab.data.toy import load
from scorelab.denoiser import as_sigma, score
from scorelab.metrics.modes import mode_statistics
from scorelab.runs import load_denoiser
from scorelab.sample import annealed_langevin, langevin
from scorelab.schedules import geometric, parse_levels
from scorelab.train import TrainConfig, train

HERE = Path(__file__).parent
GMM3 = load("gmm3", dtype=torch.float64)
MEANS = GMM3.params["means"]
TARGET = (0.2, 0.6, 0.2)

# Experiment 1: plain Langevin at the smallest level against annealed Langevin over 10 geometric levels.
EXP1_LEVELS = "geometric:10:0.1:10"
PLAIN = {"sigma": 0.1, "eps": 0.05, "steps": 1000}
ANNEALED = {"eps": 0.01, "steps_per_level": 100}

# Experiment 2: the discrete levels (geometric 10 -> 1, L = 10) and the few-step schedules.
EXP2_LEVELS = "geometric:10:1:10"
SIGMA_OFF = 4.85
EXP2_EPS = 0.2
SCHEDULES = {  # name -> (levels, steps per level)
    "10 levels x 50 steps": (geometric(10, 10.0, 1.0), 50),  # the converged reference
    "5 levels x 5 steps": (geometric(5, 10.0, 1.0), 5),
    "10 levels x 2 steps": (geometric(10, 10.0, 1.0), 2),
}

# Experiment 6: our choice of mixture (the report's text gives none): gmm3's weights, unit variances.
MIX1D = {"weights": (0.2, 0.6, 0.2), "means": (-10.0, 0.0, 10.0), "variances": (1.0, 1.0, 1.0)}
ECDF_SIGMAS = (1, 2, 3, 4, 5, 6, 7, 8)


def ncsn_config(loss: str, levels: str, steps: int, seed: int = 0) -> TrainConfig:
    """The ``ncsn-mlp`` recipe of both reports' toys: Softplus MLP on ``[x, log sigma]``, lambda(sigma) = sigma^2."""
    return TrainConfig(data="gmm3", model="ncsn-mlp", loss=loss, levels=levels, steps=steps, batch_size=256, lr=2e-3,
                       ema_halflife=300, n_data=20_000, seed=seed, checkpoint_every=steps, device="cpu")


def train_ncsn(config: TrainConfig, run: Path) -> tuple[nn.Module, float]:
    """Train (or reuse a finished run in ``run``) and return the EMA denoiser in float64 and the seconds spent."""
    t0 = time.perf_counter()
    if not (run / "config.json").exists():
        train(config, run, progress=False)
    denoiser, _ = load_denoiser(run)
    return denoiser.double(), time.perf_counter() - t0


def mode_weights(samples: Tensor) -> list[float]:
    """Fraction of the samples nearest to each gmm3 mean."""
    return mode_statistics(samples, MEANS)["mode_weights"]


def weight_error(weights: list[float]) -> float:
    return max(abs(w - t) for w, t in zip(weights, TARGET))


# --- experiment 1 -------------------------------------------------------------------------------------------------

def uniform_start(n: int, seed: int = 0, half_width: float = 8.0) -> Tensor:
    """``n`` points uniform on ``[-half_width, half_width]^2``, float64."""
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1) * half_width


@torch.no_grad()
def plain_and_annealed(denoiser, x0: Tensor, levels: Tensor, seed: int = 1, plain: dict | None = None,
                       annealed: dict | None = None) -> dict[str, Tensor]:
    """Plain Langevin (settings ``plain``, default PLAIN) and annealed Langevin over ``levels`` (settings
    ``annealed``, default ANNEALED), both from ``x0``."""
    p, a = PLAIN | (plain or {}), ANNEALED | (annealed or {})
    return {"plain": langevin(denoiser, x0, p["sigma"], eps=p["eps"], steps=p["steps"],
                              generator=torch.Generator().manual_seed(seed)),
            "annealed": annealed_langevin(denoiser, x0, levels, eps=a["eps"], steps_per_level=a["steps_per_level"],
                                          generator=torch.Generator().manual_seed(seed))}


def experiment1(n: int, steps: int, seeds: int, out: Path, runs: Path) -> dict:
    levels = parse_levels(EXP1_LEVELS)
    x0 = uniform_start(n)
    samples = {"exact": plain_and_annealed(GMM3.denoiser, x0, levels)}
    seconds = []
    for seed in range(seeds):
        model, train_s = train_ncsn(ncsn_config("ncsn", EXP1_LEVELS, steps, seed), runs / f"exp1-ncsn-{seed}")
        samples[f"ncsn-mlp seed {seed}"] = plain_and_annealed(model, x0, levels)
        seconds.append(train_s)
    print(f"\nExperiment 1: gmm3 mode weights (target 0.2 / 0.6 / 0.2), {n} samples from uniform points on [-8, 8]^2;"
          f" plain Langevin sigma = {PLAIN['sigma']}, eps = {PLAIN['eps']}, {PLAIN['steps']} steps; annealed over"
          f" {EXP1_LEVELS} (eps = {ANNEALED['eps']}, {ANNEALED['steps_per_level']} steps per level). The ncsn-mlp"
          f" models were trained {steps} steps each with the NCSN loss on the same levels ({np.mean(seconds):.0f} s).")
    print("| score | sampler | samples | w(-5,-5) | w(5,5) | w(5,-5) | max abs error |")
    print("|---|---|---|---|---|---|---|")
    table = {}
    for name, by_sampler in samples.items():
        for sampler, x in by_sampler.items():
            w = mode_weights(x)
            table[f"{name}, {sampler}"] = {"n": n, "weights": w, "max_error": weight_error(w)}
            print(f"| {name} | {sampler} | {n} | {w[0]:.3f} | {w[1]:.3f} | {w[2]:.3f} | {weight_error(w):.3f} |")
    figure1({k: samples[k] for k in ("exact", "ncsn-mlp seed 0")}, x0, out / "ncsn_toys_exp1_langevin.png", steps)
    return {"settings": {"plain": PLAIN, "annealed": ANNEALED | {"levels": EXP1_LEVELS}, "train_steps": steps,
                         "train_seconds": seconds}, "weights": table}


def _density_axes(ax, lim: float = 11.0) -> None:
    g = torch.linspace(-lim, lim, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    density = GMM3.denoiser.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1), 0.0).exp().reshape(gx.shape)
    ax.contourf(gx.numpy(), gy.numpy(), density.numpy(), levels=20, cmap="Blues")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="$x_1$", ylabel="$x_2$")


def _scatter(ax, x: Tensor, title: str, max_points: int = 3000) -> None:
    x = x[:max_points].double().numpy()
    ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:red", alpha=0.5, linewidths=0)
    ax.set_title(title, fontsize=10)


def figure1(samples: dict[str, dict[str, Tensor]], x0: Tensor, path: Path, steps: int) -> Path:
    fig = Figure(figsize=(13, 4.6 * len(samples)), layout="constrained")
    cols = 3
    for r, (name, by_sampler) in enumerate(samples.items()):
        panels = {"uniform starting points": x0} | by_sampler
        for c, (sampler, x) in enumerate(panels.items()):
            ax = fig.add_subplot(len(samples), cols, r * cols + c + 1)
            _density_axes(ax)
            trained = f" ({steps} training steps)" if name.startswith("ncsn") else ""
            label = sampler if sampler.startswith("uniform") else f"{sampler} Langevin\n{name} score{trained}"
            if sampler != "uniform starting points":
                w = mode_weights(x)
                label += f"\nweights {w[0]:.2f} / {w[1]:.2f} / {w[2]:.2f} (target 0.2 / 0.6 / 0.2)"
            _scatter(ax, x, label)
    fig.suptitle(f"gmm3: plain Langevin (sigma = {PLAIN['sigma']}) vs annealed Langevin ({EXP1_LEVELS}), "
                 f"{len(x0)} samples; blue: the data density", fontsize=11)
    return viz.save_figure(fig, path)


# --- experiment 2 -------------------------------------------------------------------------------------------------

class NearestLevel(nn.Module):
    """A score model read only at the level of ``levels`` nearest to the asked sigma (in log sigma), as a
    network conditioned on the level's index would be: ``D(x, sigma) = x + sigma^2 s(x, sigma_i)``."""

    def __init__(self, denoiser: nn.Module, levels: Tensor) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.register_buffer("log_levels", torch.as_tensor(levels, dtype=torch.float64).log())

    def nearest(self, sigma: Tensor) -> Tensor:
        index = (sigma.double().log()[:, None] - self.log_levels[None]).abs().argmin(1)
        return self.log_levels[index].exp().to(sigma.dtype)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return score(self.denoiser, x, self.nearest(as_sigma(sigma, x)))

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = as_sigma(sigma, x)
        return x + sigma[:, None] ** 2 * self.score(x, sigma)


def score_grid(half_width: float = 8.0, n: int = 81) -> Tensor:
    """An ``n x n`` grid on ``[-half_width, half_width]^2`` (it covers gmm3's data), ``(n^2, 2)`` float64."""
    g = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    return torch.stack([gx.flatten(), gy.flatten()], 1)


@torch.no_grad()
def score_mse(denoiser, reference, x: Tensor, sigma: float) -> tuple[float, float]:
    """``mean_x |s(x, sigma) - s_ref(x, sigma)|^2`` over the points ``x`` and the same divided by
    ``mean_x |s_ref(x, sigma)|^2`` (the fraction of the score left unexplained), in float64."""
    s_ref = score(reference, x, sigma).double()
    mse = float((score(denoiser, x, sigma).double() - s_ref).square().sum(1).mean())
    return mse, mse / float(s_ref.square().sum(1).mean())


def rms_spread(samples: Tensor) -> float:
    """Per-axis root-mean-square distance of the samples from their nearest gmm3 mean (data: 1;
    the sigma-noised data: sqrt(1 + sigma^2))."""
    d2 = torch.cdist(samples.double(), MEANS).min(1).values.square()
    return float((d2.mean() / 2).sqrt())


def _mean_sd(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def train_models(steps: int, seeds: int, runs: Path) -> tuple[dict[str, list[nn.Module]], dict[str, list[float]]]:
    """``seeds`` ncsn-mlp models per conditioning, the same budget each: the NCSN loss on the levels EXP2_LEVELS
    (discrete) or with sigma log-uniform on their range (continuous); plus the discrete ones read at the nearest
    level only."""
    models: dict[str, list[nn.Module]] = {"discrete": [], "continuous": []}
    seconds: dict[str, list[float]] = {"discrete": [], "continuous": []}
    for seed in range(seeds):
        for kind, loss in (("discrete", "ncsn"), ("continuous", "ncsn-continuous")):
            model, s = train_ncsn(ncsn_config(loss, EXP2_LEVELS, steps, seed), runs / f"exp2-{kind}-{seed}")
            models[kind].append(model)
            seconds[kind].append(s)
    models["discrete, nearest level"] = [NearestLevel(m, parse_levels(EXP2_LEVELS)) for m in models["discrete"]]
    return models, seconds


def score_errors(models: dict[str, list[nn.Module]], grid: Tensor) -> dict:
    """The score error of every model against the exact gmm3 score over ``grid``: at SIGMA_OFF, at the levels
    and the midpoints between them (printed), and along a fine sigma range (for the figure)."""
    seeds = len(models["discrete"])
    print(f"\nScore error at sigma = {SIGMA_OFF} on an 81 x 81 grid over [-8, 8]^2 (mean +- sd over {seeds} seeds)")
    print("| conditioning | score MSE | relative MSE |")
    print("|---|---|---|")
    at_off = {}
    for kind, ms in models.items():
        errs = [score_mse(m, GMM3.denoiser, grid, SIGMA_OFF) for m in ms]
        (mse, mse_sd), (rel, rel_sd) = _mean_sd([e[0] for e in errs]), _mean_sd([e[1] for e in errs])
        at_off[kind] = {"mse": [e[0] for e in errs], "relative": [e[1] for e in errs]}
        print(f"| {kind} | {mse:.3g} +- {mse_sd:.2g} | {rel:.3g} +- {rel_sd:.2g} |")
    probe = [1.0, 1.47, 2.15, 2.45, 3.59, 4.08, 4.64, SIGMA_OFF, 5.27, 5.99, 7.74, 8.8, 10.0, 12.0]
    print(f"\nRelative score MSE along sigma (mean over {seeds} seeds); levels among these: 1, 2.15, 3.59, 4.64, 5.99,"
          " 7.74, 10; midpoints (in log sigma) between two levels: 1.47, 2.45, 4.08, 5.27, 8.8")
    print("| sigma | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    along = {}
    for s in probe:
        row = {kind: _mean_sd([score_mse(m, GMM3.denoiser, grid, s)[1] for m in ms])[0] for kind, ms in models.items()}
        along[str(s)] = row
        print(f"| {s:g} | " + " | ".join(f"{v:.3g}" for v in row.values()) + " |")
    sigmas = np.exp(np.linspace(math.log(0.8), math.log(12.5), 161))
    curve = {kind: [[score_mse(m, GMM3.denoiser, grid, float(s))[1] for s in sigmas] for m in ms]
             for kind, ms in models.items()}
    return {"at_sigma_off": at_off, "along_sigma": along, "curve": {"sigmas": sigmas.tolist(), **curve}}


def experiment2(n: int, steps: int, seeds: int, out: Path, runs: Path) -> dict:
    levels = parse_levels(EXP2_LEVELS)
    nearest = float(levels[(levels.log() - math.log(SIGMA_OFF)).abs().argmin()])
    assert not bool(torch.isclose(levels, torch.tensor(SIGMA_OFF, dtype=levels.dtype), rtol=1e-3).any())
    models, seconds = train_models(steps, seeds, runs)
    print(f"\nExperiment 2: gmm3, ncsn-mlp trained {steps} steps (batch 256, seeds 0-{seeds - 1}) with the NCSN loss on"
          f" the discrete levels {EXP2_LEVELS} ({', '.join(f'{v:.3g}' for v in levels.tolist())}) or on sigma"
          f" log-uniform in [1, 10]. sigma = {SIGMA_OFF} is not a level (nearest: {nearest:.3f}, "
          f"{100 * (SIGMA_OFF / nearest - 1):.1f}% away; the level spacing is a factor {float(levels[0] / levels[1]):.3f})."
          " 'discrete, nearest level' reads the discrete model at the nearest level, as an index-conditioned"
          " network would. Training time per model: " + ", ".join(f"{k} {np.mean(v):.0f} s" for k, v in seconds.items()))
    errors = score_errors(models, score_grid())
    figure2_error(errors["curve"], levels, out / "ncsn_toys_exp2_score_error.png", steps)
    few = few_step_samples(models, n)
    figure2_samples(few, out / "ncsn_toys_exp2_few_steps.png")
    return {"settings": {"levels": EXP2_LEVELS, "sigma_off": SIGMA_OFF, "nearest_level": nearest, "train_steps": steps,
                         "seeds": seeds, "train_seconds": seconds, "grid": "81 x 81 on [-8, 8]^2", "eps": EXP2_EPS},
            "score_error_at_sigma_off": errors["at_sigma_off"], "relative_score_error_along_sigma": errors["along_sigma"],
            "curve": errors["curve"], "few_steps": few["table"]}


@torch.no_grad()
def few_step_samples(models: dict[str, list[nn.Module]], n: int) -> dict:
    """Annealed Langevin (eps = EXP2_EPS) with each schedule of SCHEDULES from ``10 z`` for the exact score and
    every model; mode weights and spread, mean over the seeds. Where every level of a schedule is a training
    level, the nearest-level reading is the discrete model itself and is not run again."""
    x0 = 10 * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    trained = parse_levels(EXP2_LEVELS)
    print(f"\nFew-step sampling: annealed Langevin from 10 z, eps = {EXP2_EPS} (step eps sigma_i^2 / sigma_L^2),"
          f" {n} samples, no final denoising; spread: per-axis RMS distance to the nearest mode (target for"
          f" sigma_L = 1: sqrt(2) = 1.414 with gmm3's weights); models: mean +- sd over seeds. The 5 levels are "
          + ", ".join(f"{v:.3g}" for v in SCHEDULES["5 levels x 5 steps"][0].tolist()) + " (only 10 and 1 are trained)")
    print("| schedule | score | w(-5,-5) | w(5,5) | w(5,-5) | max weight error | spread |")
    print("|---|---|---|---|---|---|---|")
    table, shown = {}, {}
    for sched, (levels, steps) in SCHEDULES.items():
        on_grid = all(bool(torch.isclose(trained, lv).any()) for lv in levels)
        for kind, ms in ({"exact": [GMM3.denoiser]} | models).items():
            if on_grid and kind == "discrete, nearest level":
                table[f"{sched}, {kind}"] = table[f"{sched}, discrete"]
                shown[(sched, kind)] = shown[(sched, "discrete")]
                print(f"| {sched} | {kind} | (the discrete model: every level is a training level) | | | | |")
                continue
            measured = []
            for j, m in enumerate(ms):
                x = annealed_langevin(m, x0, levels, eps=EXP2_EPS, steps_per_level=steps,
                                      generator=torch.Generator().manual_seed(1))
                measured.append((mode_weights(x), rms_spread(x)))
                if j == 0:
                    shown[(sched, kind)] = x
            w = np.mean([s[0] for s in measured], 0).tolist()
            spread, spread_sd = _mean_sd([s[1] for s in measured])
            err = _mean_sd([weight_error(s[0]) for s in measured])
            table[f"{sched}, {kind}"] = {"weights": w, "spread": [s[1] for s in measured],
                                         "max_weight_error": [weight_error(s[0]) for s in measured]}
            sd = f" +- {spread_sd:.2f}" if len(ms) > 1 else ""
            print(f"| {sched} | {kind} | {w[0]:.3f} | {w[1]:.3f} | {w[2]:.3f} | {err[0]:.3f} | {spread:.2f}{sd} |")
    return {"table": table, "samples": shown}


def figure2_error(curve: dict, levels: Tensor, path: Path, steps: int) -> Path:
    curve = dict(curve)
    sigmas = np.asarray(curve.pop("sigmas"))
    fig = Figure(figsize=(8.5, 5.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for lv in levels.tolist():
        ax.axvline(lv, color="0.8", lw=0.8, zorder=0)
    ax.axvline(SIGMA_OFF, color="tab:red", ls="--", lw=1, label=f"sigma = {SIGMA_OFF}")
    colours = {"discrete": "tab:blue", "continuous": "tab:orange", "discrete, nearest level": "tab:green"}
    for kind, per_seed in curve.items():
        a = np.asarray(per_seed)
        ax.plot(sigmas, a.mean(0), color=colours[kind], lw=1.6, label=f"{kind} ({len(a)} seeds, mean; band min-max)")
        if len(a) > 1:
            ax.fill_between(sigmas, a.min(0), a.max(0), color=colours[kind], alpha=0.2, lw=0)
    ax.plot([], [], color="0.8", lw=0.8, label="training levels (discrete)")
    ax.set(xscale="log", yscale="log", xlabel=r"$\sigma$",
           ylabel=r"relative score MSE:  mean $|s - s^*|^2$ / mean $|s^*|^2$",
           title=f"gmm3, ncsn-mlp trained {steps} steps: score error over [-8, 8]^2 against the exact score")
    ax.legend(fontsize=8)
    return viz.save_figure(fig, path)


def figure2_samples(few: dict, path: Path) -> Path:
    kinds = ["exact", "discrete", "continuous", "discrete, nearest level"]
    scheds = list(SCHEDULES)
    fig = Figure(figsize=(4.2 * len(kinds), 4.6 * len(scheds)), layout="constrained")
    for r, sched in enumerate(scheds):
        for c, kind in enumerate(kinds):
            ax = fig.add_subplot(len(scheds), len(kinds), r * len(kinds) + c + 1)
            _density_axes(ax, lim=14.0)
            x = few["samples"][(sched, kind)]
            w = mode_weights(x)
            same = " (= discrete: trained levels)" if kind.endswith("nearest level") and x is few["samples"][
                (sched, "discrete")] else ""
            _scatter(ax, x, f"{kind} score{same}\nspread {rms_spread(x):.2f}, weights {w[0]:.2f} / {w[1]:.2f} / "
                     f"{w[2]:.2f}")
            if c == 0:
                ax.set_ylabel(f"{sched}\n$x_2$", fontsize=11)
    fig.suptitle(f"gmm3: annealed Langevin 10 -> 1, eps = {EXP2_EPS}, seed-0 models; blue: the data density",
                 fontsize=11)
    return viz.save_figure(fig, path)


# --- experiment 6 -------------------------------------------------------------------------------------------------

def mixture_1d() -> GaussianMixture:
    """The 1-D three-component mixture of MIX1D as an analytical model (float64)."""
    return GaussianMixture(torch.tensor(MIX1D["weights"], dtype=torch.float64),
                           torch.tensor(MIX1D["means"], dtype=torch.float64)[:, None],
                           torch.tensor(MIX1D["variances"], dtype=torch.float64)[:, None, None])


def noised_samples(n: int, sigma: float, generator: torch.Generator) -> np.ndarray:
    """``n`` draws of ``x0 + sigma z`` with ``x0`` from the mixture, ``(n,)``."""
    x0 = mixture_1d().sample(n, generator)[:, 0]
    return (x0 + sigma * torch.randn(n, generator=generator, dtype=torch.float64)).numpy()


def noised_cdf(x: np.ndarray, sigma: float, variances=None) -> np.ndarray:
    """Closed-form CDF of the noised mixture: ``sum_k w_k Phi((x - mu_k) / sqrt(v_k + sigma^2))``."""
    v = np.asarray(MIX1D["variances"] if variances is None else variances, dtype=np.float64)
    w, mu = np.asarray(MIX1D["weights"]), np.asarray(MIX1D["means"])
    return (w * stats.norm.cdf(np.asarray(x)[..., None], mu, np.sqrt(v + sigma**2))).sum(-1)


def noised_pdf(x: np.ndarray, sigma: float) -> np.ndarray:
    v, w, mu = (np.asarray(MIX1D[k], dtype=np.float64) for k in ("variances", "weights", "means"))
    return (w * stats.norm.pdf(np.asarray(x)[..., None], mu, np.sqrt(v + sigma**2))).sum(-1)


def ks_distance(samples: np.ndarray, sigma: float) -> tuple[float, float]:
    """Kolmogorov-Smirnov distance of the samples' ECDF from the closed-form CDF, and its p-value."""
    result = stats.kstest(samples, lambda x: noised_cdf(x, sigma))
    return float(result.statistic), float(result.pvalue)


def experiment6(n: int, out: Path) -> dict:
    g = torch.Generator().manual_seed(6)
    samples = {s: noised_samples(n, s, g) for s in ECDF_SIGMAS}
    valley = np.array([-5.0, 5.0])
    print(f"\nExperiment 6: ECDF of x0 + sigma z, x0 ~ {MIX1D['weights']} N({MIX1D['means']}, 1) (our choice), {n}"
          " samples per sigma, against the closed-form CDF sum_k w_k Phi((x - mu_k) / sqrt(1 + sigma^2)); valley / peak:"
          " the noised density midway between two components over its value at the central one")
    print("| sigma | samples | KS distance | KS p-value | ECDF at -5 | closed form at -5 | valley / peak |")
    print("|---|---|---|---|---|---|---|")
    table = {}
    for s, x in samples.items():
        ks, p = ks_distance(x, s)
        at = float(stats.ecdf(x).cdf.evaluate(-5.0))
        ratio = float(noised_pdf(valley, s).mean() / noised_pdf(np.array([0.0]), s)[0])
        table[str(s)] = {"n": n, "ks": ks, "p": p, "ecdf_at_minus5": at, "cdf_at_minus5": float(noised_cdf(-5.0, s)),
                         "valley_over_peak": ratio}
        print(f"| {s} | {n} | {ks:.4f} | {p:.2f} | {at:.3f} | {float(noised_cdf(-5.0, s)):.3f} | {ratio:.3g} |")
    figure6(samples, out / "ncsn_toys_exp6_ecdf.png")
    return {"mixture": MIX1D, "table": table}


def figure6(samples: dict[int, np.ndarray], path: Path) -> Path:
    fig = Figure(figsize=(13, 5), layout="constrained")
    ax, ax_pdf = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    xs = np.linspace(-35, 35, 1401)
    cmap = matplotlib.colormaps["viridis"]
    colours = [cmap(i / (len(samples) - 1)) for i in range(len(samples))]
    for c, (s, x) in zip(colours, samples.items()):
        ecdf = stats.ecdf(x).cdf
        ax.step(ecdf.quantiles, ecdf.probabilities, where="post", color=c, lw=1.2, label=f"sigma = {s}")
        ax.plot(xs, noised_cdf(xs, s), color="k", ls=":", lw=0.7)
        ax_pdf.plot(xs, noised_pdf(xs, s), color=c, lw=1.2, label=f"sigma = {s}")
    ax.plot([], [], color="k", ls=":", lw=0.7, label="closed-form CDF")
    ax.set(xlim=(-35, 35), ylim=(0, 1), xlabel="x", ylabel="empirical CDF",
           title=f"ECDFs of the noised mixture ({len(next(iter(samples.values())))} samples per sigma)")
    ax.legend(fontsize=8, loc="upper left")
    ax_pdf.set(xlim=(-35, 35), xlabel="x", ylabel="density",
               title="closed-form density: noise fills the low-density gaps")
    ax_pdf.legend(fontsize=8, loc="upper left")
    fig.suptitle("x0 ~ 0.2 N(-10, 1) + 0.6 N(0, 1) + 0.2 N(10, 1), x = x0 + sigma z, sigma = 1 ... 8", fontsize=11)
    return viz.save_figure(fig, path)


# --- main ---------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="1,2,6", help="comma-separated experiments to run (1, 2, 6)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, output in a temporary folder")
    parser.add_argument("--n", type=int, default=None, help="samples per run (default 5000; --quick: 500)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default 3000; --quick: 200)")
    parser.add_argument("--seeds", type=int, default=None, help="trained models per kind (default 3; --quick: 1)")
    parser.add_argument("--out", type=Path, default=None, help="figures folder (default examples/figures)")
    parser.add_argument("--results", type=Path, default=None, help="JSON file (default examples/results/ncsn_toys.json)")
    parser.add_argument("--runs", type=Path, default=None, help="training runs folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: these tensors are small,"
                        " and on a shared CPU more threads are much slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    only = {int(k) for k in args.only.split(",")}
    if not only <= {1, 2, 6}:
        parser.error(f"--only takes experiments among 1, 2, 6, got {args.only}")
    tmp = Path(tempfile.mkdtemp(prefix="ncsn_toys_"))
    n = args.n or (500 if args.quick else 5000)
    steps = args.steps or (200 if args.quick else 3000)
    seeds = args.seeds or (1 if args.quick else 3)
    out = args.out or (tmp / "figures" if args.quick else HERE / "figures")
    results = args.results or (tmp / "ncsn_toys.json" if args.quick else HERE / "results" / "ncsn_toys.json")
    runs = args.runs or tmp / "runs"
    t0 = time.perf_counter()
    record = json.loads(results.read_text()) if results.exists() else {}
    experiments = {1: lambda: experiment1(n, steps, seeds, out, runs), 2: lambda: experiment2(n, steps, seeds, out, runs),
                   6: lambda: experiment6(n, out)}
    for k in sorted(only):
        t = time.perf_counter()
        record[f"experiment{k}"] = experiments[k]() | {"seconds": time.perf_counter() - t}
        print(f"(experiment {k}: {time.perf_counter() - t:.0f} s)")
    record["machine"] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=1))
    print(f"\nresults in {results}, figures in {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
