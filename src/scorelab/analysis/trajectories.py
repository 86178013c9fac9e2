"""How far a network's sampling trajectory strays from an analytical model's, from the same
initial noise (Gaussian-score paper, Sec. 5, Figures 7, 8 and 15)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..analytic import Gaussian, gaussian_flow, gaussian_flow_denoised, gaussian_flow_vp, gaussian_flow_vp_denoised
from ..denoiser import Denoiser
from ..sample import check_sigmas, get_sampler


@dataclass
class TrajectoryDeviation:
    """Per grid level ``sigmas[i]`` (``S`` levels, the final 0 included) and per sample: the
    distance between the two states ``x_i`` and between the two denoiser outputs at ``x_i``
    (``(S, B)``, float64), plus both trajectories ``(S, B, *shape)``. With ``vp`` the states are
    in a VP model's coordinates, ``x_t = alpha_t x`` (``alpha_t = 1 / sqrt(1 + sigma^2)``)."""

    sigmas: Tensor
    state_distance: Tensor
    denoised_distance: Tensor
    states: Tensor
    reference_states: Tensor
    sampler: str = "heun"
    vp: bool = False


def sampler_trajectory(denoiser: Denoiser, x: Tensor, sigmas: Tensor, sampler: str = "heun") -> tuple[Tensor, Tensor]:
    """The states at every grid level (final sample included) and the denoiser output at each
    state before the last, ``(S, B, *shape)`` and ``(S - 1, B, *shape)``, of a deterministic
    registered sampler (one callback per step)."""
    states, denoised = [], []

    def record(i: int, sigma: Tensor, x_i: Tensor, d_i: Tensor) -> None:
        states.append(x_i)
        denoised.append(d_i)

    final = get_sampler(sampler)(denoiser, x, sigmas, callback=record)
    return torch.stack(states + [final]), torch.stack(denoised)


@torch.no_grad()
def trajectory_deviation(denoiser: Denoiser, reference: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *,
                         sampler: str = "heun", vp: bool = False) -> TrajectoryDeviation:
    """The ``sampler`` path (a deterministic registered one: heun, euler, ddim, dpmpp-2m) of
    ``denoiser`` against ``reference`` from the same noise ``x`` at ``sigmas[0]``. A
    :class:`scorelab.analytic.Gaussian` reference follows its exact PF-ODE solution: in the sigma form
    (eqs. 15-16), or with ``vp`` in a VP model's coordinates ``x_t = alpha_t x``, the closed form with
    data scale (``gaussian_flow_vp``, eqs. 18-20), beside the VP model's own path (DDIM's, the paper's
    Fig. 16); any other reference is integrated by the same sampler on the same grid. The last level's
    denoiser distance compares the final samples (a denoiser at sigma = 0 is the identity)."""
    sigmas = check_sigmas(sigmas, x)
    states, denoised = sampler_trajectory(denoiser, x, sigmas, sampler)
    alphas = (1 + sigmas.double() ** 2).rsqrt().to(x.dtype)
    if isinstance(reference, Gaussian) and vp:
        start = x * alphas[0]
        ref_states = gaussian_flow_vp(reference, start, alphas[0], alphas) / alphas.reshape(-1, *[1] * x.ndim)
        ref_denoised = gaussian_flow_vp_denoised(reference, start, alphas[0], alphas[:-1])
    elif isinstance(reference, Gaussian):
        ref_states = gaussian_flow(reference, x, sigmas[0], sigmas)
        ref_denoised = gaussian_flow_denoised(reference, x, sigmas[0], sigmas[:-1])
    else:
        ref_states, ref_denoised = sampler_trajectory(reference, x, sigmas, sampler)
    # the reference's denoiser at the network's states would mix the two errors; compare each
    # model's own estimate along its own path, and the final samples at the end
    denoised = torch.cat([denoised, states[-1:]])
    ref_denoised = torch.cat([ref_denoised, ref_states[-1:]])
    if vp:  # distances between states in the VP model's own coordinates
        scale = alphas.reshape(-1, *[1] * x.ndim)
        states, ref_states = states * scale, ref_states * scale

    def distance(a: Tensor, b: Tensor) -> Tensor:
        return (a - b).flatten(2).double().norm(dim=2)

    return TrajectoryDeviation(sigmas.double().cpu(), distance(states, ref_states).cpu(),
                               distance(denoised, ref_denoised).cpu(), states.cpu(), ref_states.cpu(), sampler, vp)


def plot_trajectory_deviation(result: TrajectoryDeviation, path: str | Path, reference: str = "reference") -> Path:
    """Mean distance (with the 10-90% band over samples) between the two states and between the
    two denoiser outputs against sigma, along the sampling direction (the paper's Figure 15)."""
    from matplotlib.figure import Figure

    from ..viz import save_figure

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    steps = torch.arange(len(result.sigmas))
    for values, label in ((result.state_distance, "states x"), (result.denoised_distance, "denoiser outputs")):
        lo, hi = torch.quantile(values, torch.tensor([0.1, 0.9], dtype=values.dtype), dim=1)
        line, = ax.plot(steps, values.mean(1), marker="o", ms=3, label=label)
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xticks(steps[::3], [f"{s:.3g}" for s in result.sigmas[::3].tolist()])
    ax.set_xlabel("sigma (sampling goes left to right)")
    ax.set_ylabel("L2 distance")
    where = " (VP coordinates)" if result.vp else ""
    ax.set_title(f"network {result.sampler} path against {reference}{where}, same initial noise")
    ax.legend()
    return save_figure(fig, path)


__all__ = ["TrajectoryDeviation", "plot_trajectory_deviation", "sampler_trajectory", "trajectory_deviation"]
