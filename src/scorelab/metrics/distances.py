"""Distribution distances between sample sets: sliced Wasserstein-2 and the Fréchet distance."""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_SEED = 0
PSD_TOL = 1e-6


# ---------------------------------------------------------------- sliced Wasserstein


def as_rows(x: Tensor, name: str) -> Tensor:
    """``x`` as a finite floating ``(N, D)`` tensor, flattening trailing dims of ``(N, *shape)``."""
    x = torch.as_tensor(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{name}: expected shape (N, D) with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: holds non-finite values")
    return x.flatten(1)


def random_directions(d: int, n: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``n`` directions uniform on the unit sphere in ``d`` dims, as columns ``(d, n)``."""
    theta = torch.randn(d, n, generator=generator, dtype=torch.float64)
    return (theta / theta.norm(dim=0, keepdim=True)).to(dtype)


def quantile_w2_squared(px: Tensor, py: Tensor) -> Tensor:
    """Squared W2 between 1-D empirical distributions, per column of sorted ``px`` (N, P), ``py`` (M, P).

    W2² = ∫₀¹ (F⁻¹(u) − G⁻¹(u))² du with the step quantile functions F⁻¹(u) = px[⌊uN⌋]; the
    integrand is constant between the merged breakpoints {i/N} ∪ {j/M}, so the integral is an
    exact weighted sum (for N = M it is the mean squared difference of sorted values).
    """
    n, m = len(px), len(py)
    if n == m:
        return (px - py).square().mean(0)
    breaks = torch.cat([torch.arange(n + 1, dtype=torch.float64) / n,
                        torch.arange(m + 1, dtype=torch.float64) / m]).unique()
    mid, weight = (breaks[1:] + breaks[:-1]) / 2, breaks.diff()
    ix = (mid * n).floor().long().clamp_max(n - 1).to(px.device)
    iy = (mid * m).floor().long().clamp_max(m - 1).to(py.device)
    return (weight.to(px.device, px.dtype)[:, None] * (px[ix] - py[iy]) ** 2).sum(0)


def sliced_wasserstein(
    x: Tensor, y: Tensor, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2 distance between samples ``x`` (N, D) and ``y`` (M, D).

    SW₂ = sqrt(mean over random unit directions θ of W2²(θ·x, θ·y)), with each 1-D W2 computed
    exactly from the projected samples' quantile functions (:func:`quantile_w2_squared`), so
    N and M may differ. Inputs ``(N, *shape)`` are flattened. Without a ``generator`` the
    directions come from seed 0, so the value is reproducible.
    """
    x, y = as_rows(x, "x"), as_rows(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} dims, y has {y.shape[1]}")
    generator = generator or torch.Generator().manual_seed(DEFAULT_SEED)
    dtype = torch.promote_types(x.dtype, y.dtype)
    theta = random_directions(x.shape[1], n_projections, generator, dtype).to(x.device)
    px = (x.to(dtype) @ theta).sort(0).values
    py = (y.to(device=x.device, dtype=dtype) @ theta).sort(0).values
    return float(quantile_w2_squared(px, py).mean().clamp_min(0).sqrt())


# ---------------------------------------------------------------- Fréchet distance


def _symmetric_eig(c: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Eigenvalues (clamped at 0) and eigenvectors of a symmetric PSD matrix, in float64.

    Eigenvalues below -PSD_TOL times the largest are an error (not a covariance); smaller
    negative ones are rounding and set to 0.
    """
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {tuple(c.shape)}")
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"{name}: holds non-finite values")
    scale = float(c.abs().max()) or 1.0
    if float((c - c.T).abs().max()) > 1e-5 * scale:
        raise ValueError(f"{name}: not symmetric")
    lam, U = torch.linalg.eigh((c + c.T) / 2)
    if float(lam.min()) < -PSD_TOL * max(float(lam.max()), 0.0) - 1e-12 * scale:
        raise ValueError(f"{name}: not positive semi-definite (smallest eigenvalue {float(lam.min()):g})")
    return lam.clamp_min(0), U


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet (W2²) distance between N(mu1, cov1) and N(mu2, cov2).

    ||mu1 − mu2||² + tr(C1 + C2 − 2 (C1^½ C2 C1^½)^½), in float64. C1^½ C2 C1^½ is symmetric, so
    both square roots come from symmetric eigendecompositions (stable, unlike sqrtm(C1 C2)).
    """
    mu1, mu2 = (torch.as_tensor(v, dtype=torch.float64).flatten() for v in (mu1, mu2))
    cov1, cov2 = (torch.as_tensor(c, dtype=torch.float64) for c in (cov1, cov2))
    if not (mu1.shape == mu2.shape and cov1.shape == cov2.shape == (len(mu1), len(mu1))):
        raise ValueError(
            f"shapes do not match: mu1 {tuple(mu1.shape)}, cov1 {tuple(cov1.shape)}, "
            f"mu2 {tuple(mu2.shape)}, cov2 {tuple(cov2.shape)}"
        )
    lam1, U1 = _symmetric_eig(cov1, "cov1")
    _symmetric_eig(cov2, "cov2")
    sqrt1 = (U1 * lam1.sqrt()) @ U1.T
    middle = sqrt1 @ cov2 @ sqrt1
    lam_mid = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0)
    trace = torch.trace(cov1) + torch.trace(cov2) - 2 * lam_mid.sqrt().sum()
    return float((mu1 - mu2).square().sum() + trace)


def frechet_distance_features(f1: Tensor, f2: Tensor) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to features (N, D), (M, D)."""
    f1, f2 = (as_rows(f, name).double() for f, name in ((f1, "f1"), (f2, "f2")))
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError(f"need at least 2 feature vectors per set, got {len(f1)} and {len(f2)}")
    return frechet_distance(f1.mean(0), torch.cov(f1.T), f2.mean(0), torch.cov(f2.T))
