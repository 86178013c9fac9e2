"""MAD paper, Sec. 5.1 (Figures 1, 2a, 2b): extended-score inference on 2-D toys, in numbers.

    python examples/mad_toys.py [--out examples/figures] [--n 5000] [--skip-rings]

- Figure 1, ``degenerate5`` (x2 = 0; x1 a mixture of variances 0.2 ... 4), a = b = p = 1, 40-step
  Karras grid, the exact denoiser: the final x1 spread per component for standard Euler and
  Heun and for MAD with each derivative mode, and the largest |x2|.
- Figure 2a, ``anisotropic21`` (covariances R diag(1.7, 0.2) R^T), p = 1.3, a = 1, b = 1.1: the
  spread along each component's major and minor axis.
- Figure 2b, ``rings5`` (no closed-form noised score): an MLP trained here (about 2 minutes on
  2 CPU cores), then MAD with p = 2, a = 2, b = 30: the radial spread around the radius.

Every number is printed; the figures go to ``--out``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from scorelab import viz
from scorelab.data.toy import load
from scorelab.metrics.modes import axis_spread, radial_spread
from scorelab.runs import load_denoiser
from scorelab.sample import euler, heun, mad
from scorelab.schedules import karras
from scorelab.train import TrainConfig, train

GRID = karras(40, sigma_min=0.002, sigma_max=80.0)
DELTAS = {"forward": 1e-3, "central": 1e-3, "exact": 1e-3}  # delta is unused by "exact"
RINGS = TrainConfig(
    data="rings5",
    model="mlp",
    steps=3000,
    batch_size=1024,
    lr=2e-3,
    ema_halflife=300,
    checkpoint_every=3000,
    device="cpu",
)


def _noise(n: int, seed: int = 0) -> torch.Tensor:
    return GRID[0] * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _mad(denoiser, x, **kw) -> torch.Tensor:
    return mad(denoiser, x, GRID.to(x.dtype), **kw)


def _trajectory(sampler, denoiser, x, **kw) -> torch.Tensor:
    """The states of the first 40 paths, (steps + 1, 40, 2)."""
    states = []
    out = sampler(denoiser, x[:40], GRID.to(x.dtype), callback=lambda i, t, xi, d: states.append(xi), **kw)
    return torch.stack(states + [out])


def figure1(n: int, out: Path) -> dict[str, list[float]]:
    toy = load("degenerate5", dtype=torch.float64)
    means = torch.stack([toy.params["means"], torch.zeros(5, dtype=torch.float64)], -1)
    axes = torch.eye(2, dtype=torch.float64)[:, :1].expand(5, 2, 1)
    x = _noise(n)
    runs = {"euler": euler(toy.denoiser, x, GRID), "heun": heun(toy.denoiser, x, GRID)}
    for derivative, delta in DELTAS.items():
        runs[f"mad {derivative}"] = _mad(toy.denoiser, x, a=1, b=1, p=1, delta=delta, derivative=derivative)
    runs["mad forward, delta 1e-7"] = _mad(toy.denoiser, x, a=1, b=1, p=1, delta=1e-7, derivative="forward")
    print(
        "\nFigure 1: degenerate5, a = b = p = 1, 40 Karras steps, exact denoiser, float64, "
        f"{n} samples; final x1 standard deviation per component (sqrt(v) = 0.447 0.707 1 1.414 2)"
    )
    print(f"| sampler | {' | '.join(f'v = {v:g}' for v in toy.params['variances'].tolist())} | max abs x2 |")
    print("|---|---|---|---|---|---|---|")
    table = {}
    for name, samples in runs.items():
        sd = axis_spread(samples, means, axes)[:, 0].tolist()
        table[name] = sd + [float(samples[:, 1].abs().max())]
        print(f"| {name} | {' | '.join(f'{s:.3g}' for s in sd)} | {table[name][-1]:.2g} |")
    trajectories = {
        "heun": _trajectory(heun, toy.denoiser, x),
        "mad exact": _trajectory(mad, toy.denoiser, x, a=1, b=1, p=1, derivative="exact"),
    }
    viz.scatter_panels(
        {k: runs[k] for k in trajectories},
        out / "mad_fig1_degenerate5.png",
        log_prob=lambda z: toy.denoiser.log_prob(z, 0.3),
        trajectories=trajectories,
        limits=((-27.0, 27.0), (-8.0, 8.0)),
        title="degenerate5,",
    )
    return table


def figure2a(n: int, out: Path) -> dict[str, list[float]]:
    toy = load("anisotropic21", dtype=torch.float64)
    means, rotations = toy.params["means"], toy.params["rotations"]
    x = _noise(n, seed=1)
    runs = {"heun": heun(toy.denoiser, x, GRID)}
    for derivative, delta in DELTAS.items():
        runs[f"mad {derivative}"] = _mad(toy.denoiser, x, a=1, b=1.1, p=1.3, delta=delta, derivative=derivative)
    print(
        f"\nFigure 2a: anisotropic21, p = 1.3, a = 1, b = 1.1, exact denoiser, {n} samples; spread along each "
        "component's axes (mean over the 21 components; data: sqrt(1.7) = 1.304, sqrt(0.2) = 0.447)"
    )
    print("| sampler | major-axis spread | minor-axis spread |")
    print("|---|---|---|")
    table = {}
    for name, samples in runs.items():
        major, minor = axis_spread(samples, means, rotations).nanmean(0).tolist()
        table[name] = [major, minor]
        print(f"| {name} | {major:.3f} | {minor:.3f} |")
    viz.scatter_panels(
        {"heun": runs["heun"], "mad exact": runs["mad exact"]},
        out / "mad_fig2a_anisotropic21.png",
        log_prob=lambda z: toy.denoiser.log_prob(z, 1e-3),
        limits=((-24.0, 24.0), (-24.0, 24.0)),
        title="anisotropic21,",
    )
    return table


def figure2b(n: int, out: Path, run: Path | None = None) -> dict[str, float]:
    toy = load("rings5")
    run = run or Path(tempfile.mkdtemp()) / "rings5"
    t0 = time.perf_counter()
    train(RINGS, run, resume=(run / "config.json").exists(), progress=False)
    train_s = time.perf_counter() - t0
    denoiser, _ = load_denoiser(run)
    x = _noise(n, seed=2).float()
    centres, radius = toy.params["centres"], toy.params["radius"]
    with torch.no_grad():
        runs = {"heun": heun(denoiser, x, GRID.float())}
        for derivative in ("forward", "central"):
            runs[f"mad {derivative}"] = _mad(denoiser, x, a=2, b=30, p=2, delta=1e-3, derivative=derivative)
    runs["mad exact"] = _mad(denoiser, x, a=2, b=30, p=2, derivative="exact").detach()
    data = toy.sample(n, torch.Generator().manual_seed(3))
    print(
        f"\nFigure 2b: rings5, MLP trained {RINGS.steps} steps ({train_s:.0f} s), p = 2, a = 2, b = 30, {n} samples;"
        f" RMS distance from the nearest ring of radius {radius:g}"
    )
    print("| samples | radial spread |")
    print("|---|---|")
    table = {"data": radial_spread(data, centres, radius)}
    table |= {name: radial_spread(samples, centres, radius) for name, samples in runs.items()}
    for name, value in table.items():
        print(f"| {name} | {value:.3f} |")
    viz.scatter_panels(
        {"heun": runs["heun"], "mad exact": runs["mad exact"]},
        out / "mad_fig2b_rings5.png",
        log_prob=toy.log_prob,
        title="rings5,",
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--skip-rings", action="store_true", help="skip Figure 2b (it trains an MLP)")
    args = parser.parse_args()
    figure1(args.n, args.out)
    figure2a(args.n, args.out)
    if not args.skip_rings:
        figure2b(args.n, args.out)
    print(f"\nfigures in {args.out}")


if __name__ == "__main__":
    main()
