"""Named 2-D toy distributions with exact samplers and, where one exists, the exact denoiser.

    toy = load("rings5")
    x = toy.sample(10_000, generator=torch.Generator().manual_seed(0))   # (10000, 2) float32

Every parameter is fixed (random ones come from a seeded CPU ``torch.Generator`` in
float64), so a name means the same distribution on every machine. Draws use only the
``generator`` given to :meth:`Toy.sample` (the global RNG when it is None).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from scorelab.analytic import GaussianMixture

_F64 = torch.float64


@dataclass(frozen=True, eq=False)
class Toy:
    """A named 2-D distribution.

    ``denoiser`` is the exact ``D(x, sigma) = E[x0 | x_sigma = x]`` of the noised toy (a
    :class:`GaussianMixture`), None where no closed form exists; ``log_prob(x)`` is the clean
    log-density ``(B, 2) -> (B,)``, None where there is none. Both are in ``dtype``;
    ``params`` holds the exact float64 parameters.
    """

    name: str
    description: str
    sampler: Callable[[int, torch.Generator | None], Tensor] = field(repr=False)
    denoiser: GaussianMixture | None = field(default=None, repr=False)
    log_prob: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)
    params: dict[str, Tensor | float] = field(default_factory=dict, repr=False)
    dtype: torch.dtype = torch.float32

    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None) -> Tensor:
        """``n`` exact draws, ``(n, 2)``, in ``dtype`` (default: the toy's); drawn in float64."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return self.sampler(n, generator).to(dtype or self.dtype)


def gmm3(dtype: torch.dtype = torch.float32) -> Toy:
    """``p(x) = 1/5 N(x; (-5,-5), I) + 3/5 N(x; (5,5), I) + 1/5 N(x; (5,-5), I)``.

    The three-mode toy of the NCSN variance-schedule report (Sec. 2, its Fig. 4)."""
    weights = torch.tensor([0.2, 0.6, 0.2], dtype=_F64)
    means = torch.tensor([[-5.0, -5.0], [5.0, 5.0], [5.0, -5.0]], dtype=_F64)
    covs = torch.eye(2, dtype=_F64).expand(3, 2, 2)
    mixture = GaussianMixture(weights, means, covs)
    return _mixture_toy(
        "gmm3", "weights (1/5, 3/5, 1/5) at (-5,-5), (5,5), (5,-5), identity covariances",
        mixture, dtype, {"weights": weights, "means": means, "covs": covs.clone()},
    )


def degenerate5(dtype: torch.dtype = torch.float32) -> Toy:
    """``p(x1, x2) = delta(x2) sum_i 1/5 N(x1; mu_i, v_i)``, ``v = (0.2, 0.5, 1, 2, 4)``,
    ``mu = (-20, -10, 0, 10, 20)`` (MAD paper, Fig. 1).

    The denoiser has rank-1 covariances ``diag(v_i, 0)``; there is no clean density."""
    mu = torch.tensor([-20.0, -10.0, 0.0, 10.0, 20.0], dtype=_F64)
    v = torch.tensor([0.2, 0.5, 1.0, 2.0, 4.0], dtype=_F64)
    weights = torch.full((5,), 0.2, dtype=_F64)
    means = torch.stack([mu, torch.zeros_like(mu)], -1)
    U = torch.tensor([1.0, 0.0], dtype=_F64).expand(5, 2).unsqueeze(-1)
    mixture = GaussianMixture(weights, means, U=U, lam=v[:, None])
    toy = _mixture_toy(
        "degenerate5", "x2 = 0; x1 ~ equal mixture of N(mu_i, v_i), v = (0.2, 0.5, 1, 2, 4), mu = (-20, ..., 20)",
        mixture, dtype, {"weights": weights, "means": mu, "variances": v},
    )
    return replace(toy, log_prob=None)


def anisotropic21(dtype: torch.dtype = torch.float32, seed: int = 21) -> Toy:
    """``p(x) = sum_i 1/21 N(x; mu_i, R_i diag(1.7, 0.2) R_i^T)`` (MAD paper, Fig. 2a).

    Drawn with ``torch.Generator().manual_seed(seed)`` in float64, in this order:
    ``mu_i ~ U([-20, 20]^2)`` (21 x 2), then angles ``theta_i ~ U[0, pi)``;
    ``R_i = [[cos, -sin], [sin, cos]]``, so column 0 of ``R_i`` is the major axis (variance
    1.7) and column 1 the minor one (0.2). ``params``: ``means``, ``angles``, ``rotations``,
    ``variances``."""
    g = torch.Generator().manual_seed(seed)
    means = 40 * torch.rand(21, 2, generator=g, dtype=_F64) - 20
    angles = math.pi * torch.rand(21, generator=g, dtype=_F64)
    cos, sin = angles.cos(), angles.sin()
    rotations = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    variances = torch.tensor([1.7, 0.2], dtype=_F64)
    weights = torch.full((21,), 1 / 21, dtype=_F64)
    mixture = GaussianMixture(weights, means, U=rotations, lam=variances.expand(21, 2))
    return _mixture_toy(
        "anisotropic21", "21 equal Gaussians, covariance R_i diag(1.7, 0.2) R_i^T, means in [-20, 20]^2",
        mixture, dtype, {"means": means, "angles": angles, "rotations": rotations, "variances": variances},
    )


def rings5(dtype: torch.dtype = torch.float32, seed: int = 5) -> Toy:
    """``p(x) = 1/(5 Z) sum_i exp(-(||x - mu_i|| - r)^2 / (2 v))``, ``r = 10``, ``v = 2.5`` (MAD paper, Fig. 2b).

    Centres ``mu_i ~ U([-30, 30]^2)`` from ``torch.Generator().manual_seed(seed)``, each
    redrawn until it is ``>= 2 r + 6 sqrt(v)`` from the earlier ones (the rings do not
    overlap). ``Z = 2 pi (v e^{-r^2/(2v)} + r sqrt(2 pi v) Phi(r / sqrt(v)))``. The radius has
    density ``∝ rho exp(-(rho - r)^2 / (2v))`` on ``rho >= 0`` (with the Jacobian ``rho``),
    sampled exactly by :func:`_ring_radii`. No closed-form noised denoiser."""
    r, v = 10.0, 2.5
    centres = _separated_points(5, 2 * r + 6 * math.sqrt(v), -30.0, 30.0, seed)
    phi = 0.5 * (1 + math.erf(r / math.sqrt(2 * v)))
    log_z = math.log(2 * math.pi * (v * math.exp(-r * r / (2 * v)) + r * math.sqrt(2 * math.pi * v) * phi))

    def log_prob(x: Tensor) -> Tensor:
        rho = (x[:, None, :] - centres.to(x)).norm(dim=-1)
        return torch.logsumexp(-((rho - r) ** 2) / (2 * v), -1) - math.log(5) - log_z

    def sampler(n: int, generator: torch.Generator | None) -> Tensor:
        k = torch.randint(0, 5, (n,), generator=generator)
        rho = _ring_radii(n, r, v, generator)
        theta = 2 * math.pi * torch.rand(n, generator=generator, dtype=_F64)
        return centres[k] + rho[:, None] * torch.stack([theta.cos(), theta.sin()], -1)

    return Toy(
        name="rings5",
        description="5 equal radial Gaussians exp(-(||x - mu_i|| - 10)^2 / 5), centres in [-30, 30]^2",
        sampler=sampler,
        log_prob=log_prob,
        params={"centres": centres, "radius": r, "variance": v},
        dtype=dtype,
    )


_BUILDERS: dict[str, Callable[..., Toy]] = {
    "gmm3": gmm3, "degenerate5": degenerate5, "anisotropic21": anisotropic21, "rings5": rings5,
}
NAMES: tuple[str, ...] = tuple(_BUILDERS)


def load(name: str, *, dtype: torch.dtype = torch.float32) -> Toy:
    """The toy called ``name`` (one of :data:`NAMES`), its denoiser and samples in ``dtype``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown toy {name!r}; known toys: {', '.join(NAMES)}")
    return _BUILDERS[name](dtype)


def _mixture_toy(name: str, description: str, mixture: GaussianMixture, dtype: torch.dtype, params: dict) -> Toy:
    """A toy whose clean distribution is ``mixture`` (float64): it samples from it, and its
    ``denoiser`` / ``log_prob`` (``sigma = 0``) are a copy in ``dtype``."""
    denoiser = copy.deepcopy(mixture).to(dtype)
    return Toy(
        name=name,
        description=description,
        sampler=mixture.sample,
        denoiser=denoiser,
        log_prob=lambda x: denoiser.log_prob(x, 0.0),
        params=params,
        dtype=dtype,
    )


def _ring_radii(n: int, r: float, v: float, generator: torch.Generator | None) -> Tensor:
    """``n`` exact draws, float64, of ``rho`` with density ``∝ rho exp(-(rho - r)^2 / (2v))``, ``rho >= 0``.

    With ``s = sqrt(v)`` and ``rho = r + s z`` the target is ``∝ (r + s z) phi(z)`` on
    ``z >= -r/s``. Proposal ``∝ (r + s|z|) phi(z)``: a standard normal with weight ``r``, or
    ``±`` a Rayleigh(1) variate with weight ``s * 2 phi(0) = s sqrt(2/pi)``; accept with
    probability ``(r + s z) / (r + s|z|)`` when ``z >= -r/s`` (otherwise reject)."""
    s = math.sqrt(v)
    p_normal = r / (r + s * math.sqrt(2 / math.pi))
    accepted, count = [torch.zeros(0, dtype=_F64)], 0
    while count < n:
        m = 2 * (n - count) + 64
        u = torch.rand(4, m, generator=generator, dtype=_F64)
        normal = torch.randn(m, generator=generator, dtype=_F64)
        rayleigh = torch.sqrt(-2 * torch.log1p(-u[1])) * torch.where(u[2] < 0.5, 1.0, -1.0)
        z = torch.where(u[0] < p_normal, normal, rayleigh)
        keep = (z >= -r / s) & (u[3] * (r + s * z.abs()) < r + s * z)
        accepted.append(z[keep])
        count += int(keep.sum())
    return r + s * torch.cat(accepted)[:n]


def _separated_points(k: int, min_dist: float, lo: float, hi: float, seed: int) -> Tensor:
    """``k`` points uniform in ``[lo, hi]^2`` (float64): each is redrawn until it is ``>= min_dist``
    from the earlier ones, and the whole set restarts when a point finds no room in 1000 draws."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(1000):
        points: list[Tensor] = []
        misses = 0
        while len(points) < k and misses < 1000:
            p = lo + (hi - lo) * torch.rand(2, generator=g, dtype=_F64)
            if all(float((p - q).norm()) >= min_dist for q in points):
                points.append(p)
                misses = 0
            else:
                misses += 1
        if len(points) == k:
            return torch.stack(points)
    raise RuntimeError(f"could not place {k} points {min_dist} apart in [{lo}, {hi}]^2")
