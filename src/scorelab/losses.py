"""Training objectives. Each loss maps (denoiser, clean batch, generator) to per-example losses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import Denoiser, append_dims
from .schedules import DiscreteLevels, LogNormal, LogUniform

Loss = Callable[[Denoiser, Tensor, "torch.Generator | None"], Tensor]  # per-example losses


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


@dataclass(frozen=True)
class NCSNLoss:
    """NCSN denoising score matching (Song & Ermon 2019, eqs. 5-6) with lambda(sigma) = sigma^2:
    ``(1/L) sum_i sigma_i^2 E |s(x~, sigma_i) + (x~ - x) / sigma_i^2|^2`` over the discrete ``levels``,
    estimated with one level per example drawn uniformly; with ``continuous=True``, sigma is drawn
    log-uniformly in ``[min(levels), max(levels)]`` instead. In the denoiser convention
    ``s = (D - x~) / sigma^2`` the summand is ``|D(x~, sigma) - x|^2 / sigma^2`` (summed over dimensions)."""

    levels: tuple[float, ...]
    continuous: bool = False

    def __post_init__(self) -> None:
        if len(self.levels) == 0 or min(self.levels) <= 0:
            raise ValueError("NCSN levels must be a non-empty sequence of values > 0")

    def __call__(self, denoiser: Denoiser, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.continuous:
            dist = LogUniform(min(self.levels), max(self.levels)) if len(self.levels) > 1 else None
            sigma = dist.sample(len(x0), generator, x0.device) if dist else torch.full((len(x0),), self.levels[0])
        else:
            sigma = DiscreteLevels(tuple(self.levels)).sample(len(x0), generator, x0.device)
        sigma = sigma.to(device=x0.device, dtype=x0.dtype)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        denoised = denoiser(x0 + append_dims(sigma, x0.ndim) * noise, sigma)
        return (denoised - x0).square().flatten(1).sum(1) / sigma**2


@dataclass(frozen=True)
class ScoreMatching:
    """Score matching without noise conditioning, on the score ``s(x) = (D(x, sigma) - x) / sigma^2``
    read at the fixed conditioning value ``sigma`` (default 1, so ``D = x + s``).

    - ``"exact"``: ``tr(grad_x s(x)) + |s(x)|^2 / 2`` (Hyvarinen 2005), the trace by one backward pass
      per dimension: for low-dimensional data.
    - ``"sliced"``: ``v^T grad_x (v^T s) + (v^T s)^2 / 2`` with ``v ~ N(0, I)`` (Song et al. 2019, sliced
      score matching); ``"sliced-vr"`` replaces the second term by ``|s|^2 / 2`` (their variance-reduced
      form). ``n_projections`` directions per example are averaged.

    ``noise > 0`` first perturbs the data with ``noise`` times Gaussian noise (the score learned is
    then that of the noised density)."""

    method: str = "sliced-vr"
    sigma: float = 1.0
    n_projections: int = 1
    noise: float = 0.0

    METHODS = ("exact", "sliced", "sliced-vr")

    def __post_init__(self) -> None:
        if self.method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {self.method!r}")
        if not self.sigma > 0 or self.n_projections < 1 or self.noise < 0:
            raise ValueError("need sigma > 0, n_projections >= 1 and noise >= 0")

    def __call__(self, denoiser: Denoiser, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = x0
        if self.noise > 0:
            x = x0 + self.noise * torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x = x.detach().requires_grad_(True)
        sigma = torch.full((len(x),), self.sigma, dtype=x.dtype, device=x.device)
        s = (denoiser(x, sigma) - x).flatten(1) / self.sigma**2
        if self.method == "exact":
            trace = sum(torch.autograd.grad(s[:, d].sum(), x, create_graph=True)[0].flatten(1)[:, d]
                        for d in range(s.shape[1]))
            return trace + s.square().sum(1) / 2
        losses = []
        for _ in range(self.n_projections):
            v = torch.randn(s.shape, generator=generator, device=x.device, dtype=x.dtype)
            sv = (s * v).sum(1)
            jvp = (torch.autograd.grad(sv.sum(), x, create_graph=True)[0].flatten(1) * v).sum(1)
            second = s.square().sum(1) if self.method == "sliced-vr" else sv.square()
            losses.append(jvp + second / 2)
        return torch.stack(losses).mean(0)
