"""Ancestral sampling: each step lands below the next level and adds fresh noise up to it, so the
sampler is stochastic, driven by the per-sample generators (a sample still depends on its seed alone)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from tqdm.auto import trange

from ..denoiser import Denoiser
from .common import Callback, Generators, check_finite_result, check_setting, check_sigmas, randn


def ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """``(sigma_down, sigma_up)`` of a step from ``sigma`` to ``sigma_next``: the deterministic part
    goes to ``sigma_down`` and noise of standard deviation ``sigma_up`` brings the level back to
    ``sigma_next`` (``sigma_down^2 + sigma_up^2 = sigma_next^2``). ``eta = 1`` is the DDPM posterior's
    noise, ``sigma_up^2 = sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2`` (Ho et al. 2020, in the
    sigma form); ``eta = 0`` is the deterministic Euler step."""
    sigma_up = (eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt()).clamp(max=float(sigma_next))
    return (sigma_next**2 - sigma_up**2).sqrt(), sigma_up


def euler_ancestral(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *,
                    generator: Generators = None, callback: Callback | None = None, progress: bool = False,
                    eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    """Euler ancestral: an Euler step of the PF-ODE to ``sigma_down``, then ``s_noise * sigma_up``
    times fresh standard noise from ``generator`` (:func:`ancestral_step`); the step to sigma = 0
    adds none. One evaluation per step."""
    sigmas = check_sigmas(sigmas, x)
    eta, s_noise = check_setting("eta", eta), check_setting("s_noise", s_noise)
    if eta > 1:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    for i in trange(len(sigmas) - 1, disable=not progress, desc="euler-ancestral"):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma.expand(len(x)))
        if callback is not None:
            callback(i, sigma, x, denoised)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = x + (sigma_down - sigma) * (x - denoised) / sigma
        if sigma_next > 0:
            x = x + s_noise * sigma_up * randn(x.shape, generator, dtype=x.dtype, device=x.device)
    return check_finite_result(x, "euler-ancestral")


__all__ = ["ancestral_step", "euler_ancestral"]
