"""Gaussian teleportation (Gaussian-score paper, Sec. 6, Algorithm 1): replace the first steps of
an ODE sampler by the closed-form PF-ODE solution of the data's Gaussian, then continue with
the network on the rest of the same grid.

At high noise a trained network's score is almost exactly the Gaussian's (the paper's Sec. 4),
so the jump costs no network evaluation and changes the sample little. Skipping ``k`` of ``N``
Heun steps saves ``2k`` evaluations: ``2 (N - k) - 1`` remain (the last step to sigma = 0 is Euler).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..analytic import Gaussian, gaussian_flow
from ..denoiser import Denoiser, unexplained_score_fraction
from .common import check_sigmas
from .mad import mad
from .ode import euler, heun

ODE_SAMPLERS = {"euler": euler, "heun": heun, "mad": mad}


def gaussian_agreement(denoiser: Denoiser, gaussian: Gaussian, x: Tensor, sigmas: Tensor | Sequence[float]) -> Tensor:
    """The mean fraction of the network's score that the Gaussian leaves unexplained,
    ``|s_net - s_gauss|^2 / |s_net|^2`` (the paper's eq. 28), at each grid level ``sigmas[i] > 0``,
    evaluated on the states the teleport would land on: the Gaussian PF-ODE from ``x`` at
    ``sigmas[0]``. Returns ``(levels,)`` float64; ``sigma = 0`` levels are left out.

    As ``s = (D - x) / sigma^2``, the fraction is ``|D_net - D_gauss|^2 / |D_net - x|^2``."""
    sigmas = check_sigmas(sigmas, x)
    levels = sigmas[sigmas > 0]
    states = gaussian_flow(gaussian, x, sigmas[0], levels)
    fractions = []
    with torch.no_grad():
        for sigma, x_s in zip(levels, states):
            fractions.append(unexplained_score_fraction(denoiser(x_s, sigma), gaussian(x_s, sigma), x_s).mean())
    return torch.stack(fractions)


def auto_skip(denoiser: Denoiser, gaussian: Gaussian, x: Tensor, sigmas: Tensor | Sequence[float],
              threshold: float = 0.01) -> int:
    """Our rule for the number of steps to teleport over (the paper had none): the largest ``k``
    such that at every grid level ``sigmas[0] .. sigmas[k]`` the Gaussian leaves at most
    ``threshold`` of the network's score unexplained (:func:`gaussian_agreement` on the probe
    noise ``x`` at ``sigmas[0]``). 0 when the Gaussian misses already at ``sigmas[0]``."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    fractions = gaussian_agreement(denoiser, gaussian, x, sigmas)
    above = torch.nonzero(fractions > threshold)
    k = int(above[0]) - 1 if len(above) else len(fractions) - 1
    return max(k, 0)


def teleport(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *, gaussian: Gaussian,
             skip: int | str, sampler: str = "heun", threshold: float = 0.01, **options) -> Tensor:
    """The final sample of the hybrid sampler (Algorithm 1): ``x`` (noise at ``sigmas[0]``) is moved
    to ``sigmas[skip]`` by :func:`scorelab.analytic.gaussian_flow` (no network call), then
    ``sampler`` ("heun", "euler" or "mad"; ``options`` go to it) integrates ``sigmas[skip:]``.
    ``skip = len(sigmas) - 1`` is the Gaussian's own end point; ``skip = "auto"`` asks
    :func:`auto_skip` with ``threshold``, probing with ``x`` itself."""
    sigmas = check_sigmas(sigmas, x)
    n_steps = len(sigmas) - 1
    if skip == "auto":
        skip = auto_skip(denoiser, gaussian, x, sigmas, threshold)
    if isinstance(skip, bool) or not isinstance(skip, int) or not 0 <= skip <= n_steps:
        raise ValueError(f"skip must be an integer in [0, {n_steps}] or 'auto', got {skip!r}")
    if sampler not in ODE_SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(ODE_SAMPLERS)}")
    if skip > 0:
        x = gaussian_flow(gaussian, x, sigmas[0], sigmas[skip : skip + 1])[0]
    if skip == n_steps:
        return x
    return ODE_SAMPLERS[sampler](denoiser, x, sigmas[skip:], **options)


__all__ = ["auto_skip", "gaussian_agreement", "teleport"]
