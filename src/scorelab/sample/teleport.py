"""Gaussian teleportation (Gaussian-score paper, Sec. 6, Algorithm 1): replace the first steps of
an ODE sampler by the closed-form PF-ODE solution of the data's Gaussian, then continue with
the network on the rest of the same grid.

At high noise a trained network's score is almost exactly the Gaussian's (the paper's Sec. 4),
so the jump costs no network evaluation and changes the sample little. Skipping ``n_skip`` of ``N``
Heun steps saves ``2 n_skip`` evaluations: ``2 (N - n_skip) - 1`` remain (the last step to sigma = 0
is Euler). The paper notes that the jump combines with any deterministic or stochastic sampler; every
sampler of the registry can continue after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..analytic import Gaussian, gaussian_flow
from ..denoiser import Denoiser, unexplained_score_fraction
from .common import Callback, Generators, check_sigmas
from .registry import get_sampler


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
    """Our rule for the number of steps to teleport over (the paper had none): the largest ``n_skip``
    such that at every grid level ``sigmas[0] .. sigmas[n_skip]`` the Gaussian leaves at most
    ``threshold`` of the network's score unexplained (:func:`gaussian_agreement` on the probe
    noise ``x`` at ``sigmas[0]``). 0 when the Gaussian misses already at ``sigmas[0]``."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    fractions = gaussian_agreement(denoiser, gaussian, x, sigmas)
    above = torch.nonzero(fractions > threshold)
    k = int(above[0]) - 1 if len(above) else len(fractions) - 1
    return max(k, 0)


def teleport(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *, gaussian: Gaussian,
             n_skip: int | str, sampler: str = "heun", generator: Generators = None,
             callback: Callback | None = None, progress: bool = False, threshold: float = 0.01,
             **params: Any) -> Tensor:
    """The final sample of the hybrid sampler (Algorithm 1): ``x`` (noise at ``sigmas[0]``) is moved
    to ``sigmas[n_skip]`` by :func:`scorelab.analytic.gaussian_flow` (no network call), then the
    registered ``sampler`` (``params`` go to it) integrates ``sigmas[n_skip:]``; its callback sees the
    step indices of the whole grid. ``n_skip = len(sigmas) - 1`` is the Gaussian's own end point;
    ``n_skip = "auto"`` asks :func:`auto_skip` with ``threshold``, probing with ``x`` itself."""
    sigmas = check_sigmas(sigmas, x)
    run = get_sampler(sampler)
    n_steps = len(sigmas) - 1
    if n_skip == "auto":
        n_skip = auto_skip(denoiser, gaussian, x, sigmas, threshold)
    if isinstance(n_skip, bool) or not isinstance(n_skip, int) or not 0 <= n_skip <= n_steps:
        raise ValueError(f"n_skip must be an integer in [0, {n_steps}] or 'auto', got {n_skip!r}")
    if n_skip > 0:
        x = gaussian_flow(gaussian, x, sigmas[0], sigmas[n_skip : n_skip + 1])[0]
    if n_skip == n_steps:
        return x
    shifted = None if callback is None else _shifted(callback, n_skip)
    return run(denoiser, x, sigmas[n_skip:], generator=generator, callback=shifted, progress=progress, **params)


def _shifted(callback: Callback, offset: int) -> Callback:
    return lambda i, sigma, x, denoised: callback(i + offset, sigma, x, denoised)


__all__ = ["auto_skip", "gaussian_agreement", "teleport"]
