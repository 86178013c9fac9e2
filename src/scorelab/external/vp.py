"""Variance-preserving models (DDPM, DDIM, score_sde's VP SDE) as denoisers ``D(x, sigma)``.

A VP model sees ``x_t = alpha_t x_0 + s_t eps`` with ``alpha_t^2 + s_t^2 = 1``; diffusers'
``alphas_cumprod`` is ``alpha_t^2`` (the Gaussian-score paper, App. D). Dividing by ``alpha_t``
gives the sigma form ``x = x_0 + sigma eps`` with ``sigma_t = s_t / alpha_t =
sqrt((1 - alphabar_t) / alphabar_t)``, so at noise level sigma the network is shown
``x / sqrt(1 + sigma^2)`` at the time ``t(sigma)`` whose sigma matches, and its prediction becomes
the clean estimate (Karras et al. 2022, Table 1, "VP"; Salimans & Ho 2022 for v):

- ``epsilon``: ``D = x - sigma eps_hat``;
- ``v_prediction`` (``v = alpha eps - s x_0``): ``D = alpha x_t - s v_hat``;
- ``sample``: ``D = x0_hat``.

Nothing here samples: every sampler of ``scorelab.sample`` runs on these denoisers unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..denoiser import append_dims, as_sigma

Network = Callable[[Tensor, Tensor], Tensor]
"""``network(x_t, t) -> prediction``: the VP network at (fractional) times ``t`` ``(B,)``."""
PREDICTIONS = ("epsilon", "v_prediction", "sample")


class VPDenoiser(nn.Module):
    """What every VP wrapper shares: the input scaling, the conversion of the network's prediction
    to the clean estimate, and the range of noise levels the model was trained on
    (``sigma_min``, ``sigma_max``). Subclasses give ``timestep(sigma)``."""

    sigma_min: float
    sigma_max: float

    def __init__(self, network: Network, prediction_type: str = "epsilon") -> None:
        super().__init__()
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {', '.join(PREDICTIONS)}, got {prediction_type!r}")
        self.network, self.prediction_type = network, prediction_type  # a Module is registered: .to() reaches it

    def timestep(self, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = as_sigma(sigma, x)
        sig = append_dims(sigma, x.ndim)
        alpha = 1 / torch.sqrt(1 + sig**2)  # alpha_t; the VP noise scale is s_t = alpha_t sigma
        x_t = x * alpha
        out = self.network(x_t, self.timestep(sigma.double())).to(x.dtype)
        if self.prediction_type == "epsilon":
            return x - sig * out
        if self.prediction_type == "v_prediction":
            return alpha * x_t - alpha * sig * out
        return out

    def extra_repr(self) -> str:
        return f"prediction_type={self.prediction_type!r}, sigma_min={self.sigma_min:.4g}, sigma_max={self.sigma_max:.4g}"


class DiscreteVP(VPDenoiser):
    """A discrete-time VP model (DDPM / DDIM; diffusers' ``UNet2DModel`` with its scheduler's
    ``alphas_cumprod``) as a denoiser. Its noise levels are ``sigma_t = sqrt((1 - alphabar_t) /
    alphabar_t)``, ``t = 0 .. T-1`` (:attr:`levels`, increasing). A sigma between two levels is
    shown to the network at the fractional time interpolated linearly in log sigma between them
    (k-diffusion's ``sigma_to_t``), or, with ``interpolate=False``, at the nearest level's time;
    outside ``[sigma_min, sigma_max]`` the interpolation extends the end segments, and
    :func:`scorelab.denoiser.check_range` refuses sampling grids that leave the range."""

    log_levels: Tensor

    def __init__(self, network: Network, alphas_cumprod: Tensor, prediction_type: str = "epsilon", *,
                 interpolate: bool = True) -> None:
        super().__init__(network, prediction_type)
        alphabar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if len(alphabar) < 2 or not bool(((alphabar > 0) & (alphabar < 1)).all()):
            raise ValueError("alphas_cumprod must hold at least 2 values in (0, 1)")
        if not bool((alphabar[1:] < alphabar[:-1]).all()):
            raise ValueError("alphas_cumprod must decrease strictly with t")
        self.register_buffer("log_levels", 0.5 * torch.log((1 - alphabar) / alphabar), persistent=False)
        self.interpolate = interpolate
        self.sigma_min, self.sigma_max = math.exp(float(self.log_levels[0])), math.exp(float(self.log_levels[-1]))

    @property
    def levels(self) -> Tensor:
        """The model's noise levels ``sigma_t``, ``t = 0 .. T-1`` (float64, increasing)."""
        return self.log_levels.exp()

    def timestep(self, sigma: Tensor) -> Tensor:
        """The (fractional) time whose noise level is ``sigma`` (float64 ``(B,)``)."""
        log_levels = self.log_levels.to(sigma.device)
        log_sigma = sigma.log()
        if not self.interpolate:
            return (log_sigma[:, None] - log_levels[None]).abs().argmin(1).double()
        hi = torch.searchsorted(log_levels, log_sigma).clamp(1, len(log_levels) - 1)
        lo = hi - 1
        w = (log_sigma - log_levels[lo]) / (log_levels[hi] - log_levels[lo])
        return lo + w

    def sigma_at(self, t: Tensor) -> Tensor:
        """The noise level at the (fractional) time ``t``: the inverse of :meth:`timestep` (float64)."""
        log_levels = self.log_levels.to(t.device)
        t = t.double()
        if not self.interpolate:
            return log_levels[t.round().long().clamp(0, len(log_levels) - 1)].exp()
        lo = t.floor().long().clamp(0, len(log_levels) - 2)
        return (log_levels[lo] + (t - lo) * (log_levels[lo + 1] - log_levels[lo])).exp()

    def uniform_levels(self, n: int) -> Tensor:
        """``n`` of the model's own levels uniform in t, from ``t = T-1`` down to ``t = 0`` (the
        timesteps DDIM samples on, "linspace" spacing), then 0: ``(n + 1,)`` float64, decreasing."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self.log_levels):
            raise ValueError(f"the number of levels must be an integer in [1, {len(self.log_levels)}], got {n!r}")
        t = torch.linspace(len(self.log_levels) - 1, 0, n, dtype=torch.float64).round().long()
        return torch.cat([self.log_levels.cpu()[t].exp(), torch.zeros(1, dtype=torch.float64)])


class ContinuousVP(VPDenoiser):
    """A continuous-time VP model (score_sde's VP SDE, Song et al. 2021, eq. 11) with the linear
    ``beta(t) = beta_min + t (beta_max - beta_min)`` on ``t in [t_min, 1]``: ``log alphabar(t) =
    -(beta_min t + (beta_max - beta_min) t^2 / 2)``, so ``t(sigma)`` is the positive root of that
    quadratic at ``log alphabar = -log(1 + sigma^2)``, in closed form. The network sees
    ``time_scale * t`` (999 for score_sde's DDPM++ networks, 1 for networks conditioned on t)."""

    def __init__(self, network: Network, prediction_type: str = "epsilon", *, beta_min: float = 0.1,
                 beta_max: float = 20.0, t_min: float = 1e-5, time_scale: float = 999.0) -> None:
        super().__init__(network, prediction_type)
        if not (0 < beta_min < beta_max and 0 < t_min < 1 and time_scale > 0):
            raise ValueError("need 0 < beta_min < beta_max, 0 < t_min < 1 and time_scale > 0")
        self.beta_min, self.beta_d, self.t_min, self.time_scale = beta_min, beta_max - beta_min, t_min, time_scale
        self.sigma_min, self.sigma_max = float(self.sigma(torch.tensor(t_min))), float(self.sigma(torch.tensor(1.0)))

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = sqrt(1 / alphabar(t) - 1)``."""
        t = t.double()
        return torch.expm1(self.beta_min * t + 0.5 * self.beta_d * t**2).sqrt()

    def t(self, sigma: Tensor) -> Tensor:
        """The time whose noise level is ``sigma``: ``(-beta_min + sqrt(beta_min^2 + 2 beta_d log(1 + sigma^2))) / beta_d``."""
        sigma = sigma.double()
        return (torch.sqrt(self.beta_min**2 + 2 * self.beta_d * torch.log1p(sigma**2)) - self.beta_min) / self.beta_d

    def timestep(self, sigma: Tensor) -> Tensor:
        return self.time_scale * self.t(sigma)

    def uniform_levels(self, n: int) -> Tensor:
        """``n`` levels uniform in t from 1 down to ``t_min``, then 0: ``(n + 1,)`` float64."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of levels must be an integer >= 1, got {n!r}")
        t = torch.linspace(1.0, self.t_min, n, dtype=torch.float64)
        return torch.cat([self.sigma(t), torch.zeros(1, dtype=torch.float64)])


__all__ = ["PREDICTIONS", "ContinuousVP", "DiscreteVP", "Network", "VPDenoiser"]
