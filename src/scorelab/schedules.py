"""Noise levels: sampling schedules (decreasing sigma sequences) and training noise distributions.

Sampling schedules end in the trailing 0 of the ODE grid (``karras``); level schedules
(``geometric``, ``linear``, ``sqrt``) list the L noise levels of NCSN-style training and
annealed Langevin sampling, from sigma_1 (largest) down to sigma_L, with no trailing 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DiscreteLevels",
    "LogNormal",
    "LogUniform",
    "geometric",
    "karras",
    "linear",
    "parse_levels",
    "sqrt",
]


def _check_range(n: int, sigma_max: float, sigma_min: float, *, min_n: int = 1) -> None:
    if int(n) != n or n < min_n:
        raise ValueError(f"the number of levels must be an integer >= {min_n}, got {n}")
    if not (0 < sigma_min < sigma_max < math.inf):
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def karras(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
           dtype: torch.dtype = torch.float64) -> Tensor:
    """The EDM time steps (Karras et al. 2022, eq. 5): n values from sigma_max to sigma_min,
    uniform in sigma^(1/rho), followed by a trailing 0 (n + 1 values in all)."""
    _check_range(n, sigma_max, sigma_min)
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a finite number > 0, got {rho}")
    if n == 1:
        return torch.tensor([sigma_max, 0.0], dtype=dtype)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    inv_max, inv_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(dtype)


def _levels(n: int, sigma_max: float, sigma_min: float, fraction: Tensor, dtype: torch.dtype) -> Tensor:
    return (sigma_max + (sigma_min - sigma_max) * fraction).to(dtype)


def geometric(n: int, sigma_max: float, sigma_min: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """Levels with a constant ratio sigma_{i+1}/sigma_i (Song & Ermon 2019)."""
    _check_range(n, sigma_max, sigma_min, min_n=2)
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n, dtype=torch.float64).to(dtype)


def linear(n: int, sigma_max: float, sigma_min: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """sigma_i = sigma_1 + (sigma_L - sigma_1)(i-1)/(L-1) (NCSN-schedules report)."""
    _check_range(n, sigma_max, sigma_min, min_n=2)
    return _levels(n, sigma_max, sigma_min, torch.linspace(0, 1, n, dtype=torch.float64), dtype)


def sqrt(n: int, sigma_max: float, sigma_min: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """sigma_i = sigma_1 + (sigma_L - sigma_1) sqrt((i-1)/(L-1)) (NCSN-schedules report)."""
    _check_range(n, sigma_max, sigma_min, min_n=2)
    return _levels(n, sigma_max, sigma_min, torch.linspace(0, 1, n, dtype=torch.float64).sqrt(), dtype)


_LEVEL_SCHEDULES = {"geometric": geometric, "linear": linear, "sqrt": sqrt}


def parse_levels(spec: str) -> Tensor:
    """Levels from ``"KIND:SIGMA_MAX:SIGMA_MIN:L"``, e.g. ``"geometric:1:0.01:10"``."""
    parts = spec.split(":")
    if len(parts) != 4 or parts[0] not in _LEVEL_SCHEDULES:
        raise ValueError(f"levels must look like KIND:SIGMA_MAX:SIGMA_MIN:L with KIND in "
                         f"{sorted(_LEVEL_SCHEDULES)}, got {spec!r}")
    try:
        sigma_max, sigma_min, n = float(parts[1]), float(parts[2]), int(parts[3])
    except ValueError as e:
        raise ValueError(f"levels {spec!r}: {e}") from None
    return _LEVEL_SCHEDULES[parts[0]](n, sigma_max, sigma_min)


@dataclass(frozen=True)
class LogNormal:
    """ln(sigma) ~ N(P_mean, P_std^2), the EDM training distribution (Karras et al. 2022, Table 1)."""

    P_mean: float = -1.2
    P_std: float = 1.2

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
        z = torch.randn(n, generator=generator, device=device)
        return (self.P_mean + self.P_std * z).exp()


@dataclass(frozen=True)
class LogUniform:
    """ln(sigma) uniform on [ln sigma_min, ln sigma_max] (continuous NCSN conditioning)."""

    sigma_min: float = 0.01
    sigma_max: float = 1.0

    def __post_init__(self) -> None:
        _check_range(1, self.sigma_max, self.sigma_min)

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
        u = torch.rand(n, generator=generator, device=device)
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return (lo + (hi - lo) * u).exp()


@dataclass(frozen=True)
class DiscreteLevels:
    """sigma drawn uniformly from a finite set of levels (NCSN, Song & Ermon 2019)."""

    levels: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.levels) == 0 or min(self.levels) <= 0:
            raise ValueError("levels must be a non-empty sequence of positive values")

    def sample_index(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
        return torch.randint(len(self.levels), (n,), generator=generator, device=device)

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
        levels = torch.tensor(self.levels, dtype=torch.float32, device=device)
        return levels[self.sample_index(n, generator, device)]
