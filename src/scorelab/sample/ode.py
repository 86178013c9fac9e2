"""Probability-flow ODE samplers, dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, eq. 3
with sigma(t) = t, s(t) = 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor
from tqdm.auto import trange

from ..denoiser import Denoiser
from .common import Callback, Generators, check_sigmas, randn


def euler(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *, generator: Generators = None,
          callback: Callback | None = None, progress: bool = False) -> Tensor:
    """Euler steps of the PF-ODE; one evaluation per step. ``x`` starts at sigmas[0]. Deterministic:
    ``generator`` is accepted for the shared signature and not used."""
    sigmas = check_sigmas(sigmas, x)
    for i in trange(len(sigmas) - 1, disable=not progress, desc="euler"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma.expand(len(x)))
        if callback is not None:
            callback(i, sigma, x, denoised)
        x = x + (sigma_next - sigma) * (x - denoised) / sigma
    return x


def churn_gamma(sigma: float, n_steps: int, S_churn: float, S_min: float, S_max: float) -> float:
    """gamma_i of EDM's stochastic sampler (Karras et al. 2022, Algorithm 2)."""
    if S_churn <= 0 or not (S_min <= sigma <= S_max):
        return 0.0
    return min(S_churn / n_steps, math.sqrt(2) - 1)


def heun(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *, generator: Generators = None,
         callback: Callback | None = None, progress: bool = False, S_churn: float = 0.0, S_min: float = 0.0,
         S_max: float = math.inf, S_noise: float = 1.0) -> Tensor:
    """Heun's second-order PF-ODE sampler (Karras et al. 2022, Algorithm 1; with S_churn > 0 the
    stochastic Algorithm 2). The last step to sigma = 0 is an Euler step: 2N - 1 evaluations
    for N steps ending at 0. ``generator`` (one, or one per sample) drives the churn noise."""
    sigmas = check_sigmas(sigmas, x)
    n_steps = len(sigmas) - 1
    levels = sigmas.tolist()
    for i in trange(n_steps, disable=not progress, desc="heun"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = churn_gamma(levels[i], n_steps, S_churn, S_min, S_max)
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            eps = randn(x.shape, generator, dtype=x.dtype, device=x.device)
            x = x + (sigma_hat**2 - sigma**2).sqrt() * S_noise * eps
        denoised = denoiser(x, sigma_hat.expand(len(x)))
        if callback is not None:
            callback(i, sigma_hat, x, denoised)
        d = (x - denoised) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if levels[i + 1] > 0:
            d_next = (x_next - denoiser(x_next, sigma_next.expand(len(x)))) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = x_next
    return x
