"""Training objectives. Each loss maps (denoiser, clean batch, generator) to per-example losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import Denoiser, append_dims
from .schedules import LogNormal


@dataclass(frozen=True)
class EDMLoss:
    """EDM denoising loss (Karras et al. 2022, eq. 2 and Table 1):
    lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2 with ln sigma ~ N(P_mean, P_std^2) and
    lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2, averaged over dimensions."""

    sigma_data: float = 0.5
    P_mean: float = -1.2
    P_std: float = 1.2

    def __call__(self, denoiser: Denoiser, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        sigma = LogNormal(self.P_mean, self.P_std).sample(len(x0), generator, x0.device).to(x0.dtype)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        s = append_dims(sigma, x0.ndim)
        denoised = denoiser(x0 + s * noise, sigma)
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return weight * (denoised - x0).square().flatten(1).mean(1)
