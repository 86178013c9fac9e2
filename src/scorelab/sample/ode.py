"""Probability-flow ODE samplers, dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, eq. 3
with sigma(t) = t, s(t) = 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import trange

from ..denoiser import Denoiser
from .common import Callback, Generators, check_finite_result, check_setting, check_sigmas, randn


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
    return check_finite_result(x, "euler")


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
    S_churn, S_noise = check_setting("S_churn", S_churn), check_setting("S_noise", S_noise)
    S_min, S_max = check_setting("S_min", S_min), check_setting("S_max", S_max, allow_inf=True)
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
    return check_finite_result(x, "heun")


def ddim(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *, generator: Generators = None,
         callback: Callback | None = None, progress: bool = False) -> Tensor:
    """Deterministic DDIM (eta = 0; Song et al. 2021, "Denoising diffusion implicit models", eq. 12),
    written in the VP form: with ``alpha = 1 / sqrt(1 + sigma^2)`` the state is ``x_t = alpha x``, the
    predicted noise ``eps = (x_t - alpha D) / (alpha sigma)``, and ``x_{t'} = alpha' D + alpha' sigma' eps``.
    Divided by ``alpha'`` this is exactly the Euler step in the sigma form, ``x' = x + (sigma' - sigma)
    (x - D) / sigma``: DDIM is Euler on the same levels (a VP model's own timesteps:
    ``DiscreteVP.uniform_levels``). One evaluation per step; ``generator`` is not used."""
    sigmas = check_sigmas(sigmas, x)
    for i in trange(len(sigmas) - 1, disable=not progress, desc="ddim"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma.expand(len(x)))
        if callback is not None:
            callback(i, sigma, x, denoised)
        alpha, alpha_next = (1 + sigma**2).rsqrt(), (1 + sigma_next**2).rsqrt()
        eps = (alpha * x - alpha * denoised) / (alpha * sigma)
        x = (alpha_next * denoised + alpha_next * sigma_next * eps) / alpha_next
    return check_finite_result(x, "ddim")


def dpmpp_2m(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *, generator: Generators = None,
             callback: Callback | None = None, progress: bool = False) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): the multistep second-order
    solver of the PF-ODE in data prediction, in ``lambda = -log sigma``. With ``h = lambda' - lambda``,
    ``x' = (sigma' / sigma) x - expm1(-h) D_eff``; ``D_eff`` is ``D`` on the first and the last step
    (first order) and otherwise ``(1 + 1/(2r)) D - 1/(2r) D_prev``, ``r = h_prev / h``. One
    evaluation per step, so N steps are N NFE; ``generator`` is not used."""
    sigmas = check_sigmas(sigmas, x)
    n_steps = len(sigmas) - 1
    previous: Tensor | None = None
    for i in trange(n_steps, disable=not progress, desc="dpmpp-2m"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma.expand(len(x)))
        if callback is not None:
            callback(i, sigma, x, denoised)
        if sigma_next == 0:
            x = denoised  # the step to sigma = 0: (sigma'/sigma) x - expm1(-inf) D
            continue
        h = torch.log(sigma / sigma_next)
        effective = denoised
        if previous is not None and i < n_steps - 1:
            r = torch.log(sigmas[i - 1] / sigma) / h
            effective = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (sigma_next / sigma) * x - torch.expm1(-h) * effective
        previous = denoised
    return check_finite_result(x, "dpmpp-2m")
