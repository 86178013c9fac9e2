"""Isotropic and (low-rank) Gaussian score models (Gaussian-score paper, Sec. 2.2, 3.1, 4.2).

Both are denoisers ``D(x, sigma) -> x0_hat`` (see :mod:`scorelab.denoiser`) whose statistics
are buffers. Data of any shape are flattened to ``D = prod(shape)`` internally; the
covariance is held as ``Sigma = U diag(lam) U^T`` with ``U`` ``(D, r)``, so no call ever
forms or inverts a ``D x D`` matrix (Woodbury identity, eq. 12).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad

from scorelab.denoiser import as_sigma

_LOG_2PI = math.log(2 * math.pi)


class Isotropic(nn.Module):
    """All mass at ``mean``: ``D(x, sigma) = mu``, score ``(mu - x) / sigma^2``.

    The "Iso" reference model of the Gaussian-score paper (Sec. 4.2): the Gaussian model
    with its covariance information removed. ``p_sigma = N(mu, sigma^2 I)``.
    """

    mu: Tensor  # (D,)

    def __init__(self, mean: Tensor) -> None:
        super().__init__()
        mean = _floating(mean, "mean")
        self.shape = tuple(mean.shape)
        self.register_buffer("mu", mean.reshape(-1).clone())

    @classmethod
    def fit(cls, data: Tensor) -> Isotropic:
        """The isotropic model of ``data`` ``(N, *shape)``: its mean (accumulated in float64)."""
        data = _floating(data, "data")
        return cls(data.double().mean(0).to(data.dtype))

    @property
    def mean(self) -> Tensor:
        return self.mu.reshape(self.shape)

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``D(x, sigma) = mu`` for every ``x``."""
        x = _flat(x, self.shape, self.mu.dtype)
        as_sigma(sigma, x)
        return self.mu.expand_as(x).clone().reshape(-1, *self.shape)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``s(x, sigma) = (mu - x) / sigma^2`` (Gaussian-score paper, Sec. 4.2)."""
        xf = _flat(x, self.shape, self.mu.dtype)
        s = as_sigma(sigma, xf)
        return ((self.mu - xf) / s[:, None] ** 2).reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``log N(x; mu, sigma^2 I)``, shape ``(B,)``; a point mass has no density at sigma = 0."""
        xf = _flat(x, self.shape, self.mu.dtype)
        s = as_sigma(sigma, xf, allow_zero=True)
        if bool((s == 0).any()):
            raise ValueError("Isotropic is a point mass: log_prob needs sigma > 0")
        s2 = s**2
        quad = (xf - self.mu).square().sum(-1) / s2
        return -0.5 * (self.dim * (_LOG_2PI + torch.log(s2)) + quad)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` copies of the mean (the clean distribution is a point mass; ``generator`` unused)."""
        return self.mu.expand(n, -1).clone().reshape(n, *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Gaussian(nn.Module):
    """Gaussian ``N(mu, U diag(lam) U^T)`` of rank ``r <= D`` (Gaussian-score paper, Sec. 2.2, 3.1).

    Give either ``cov`` ``(D, D)`` (its eigenvalues ``<= tol * max`` are dropped, so a
    degenerate covariance becomes low rank) or ``U`` ``(D, r)`` with orthonormal columns and
    ``lam`` ``(r,) > 0``. Buffers: ``mu`` ``(D,)``, ``U`` ``(D, r)``, ``lam`` ``(r,)``
    (descending when built from ``cov``).
    """

    mu: Tensor  # (D,)
    U: Tensor  # (D, r), orthonormal columns
    lam: Tensor  # (r,) > 0

    def __init__(
        self,
        mean: Tensor,
        cov: Tensor | None = None,
        *,
        U: Tensor | None = None,
        lam: Tensor | None = None,
        tol: float = 1e-10,
    ) -> None:
        super().__init__()
        mean = _floating(mean, "mean")
        self.shape = tuple(mean.shape)
        D = mean.numel()
        if cov is not None:
            if U is not None or lam is not None:
                raise ValueError("give either cov or (U, lam), not both")
            U, lam = _eig_from_cov(_param(cov, mean.dtype, "cov"), D, tol)
        elif U is None or lam is None:
            raise ValueError("give cov, or both U and lam")
        U, lam = _param(U, mean.dtype, "U"), _param(lam, mean.dtype, "lam")
        _check_axes(U, lam, D)
        if not bool((lam > 0).all()):
            raise ValueError("lam must be > 0 (leave zero-variance directions out of U)")
        self.register_buffer("mu", mean.reshape(-1).clone())
        self.register_buffer("U", U.clone())
        self.register_buffer("lam", lam.clone())

    @classmethod
    def fit(cls, data: Tensor, rank: int | None = None, tol: float = 1e-10) -> Gaussian:
        """Mean and unbiased covariance of ``data`` ``(N, *shape)`` (float64 internally), keeping
        the top ``rank`` eigen-directions (all above ``tol * max`` when ``rank`` is None)."""
        data = _floating(data, "data")
        x = data.reshape(len(data), -1).double()
        mu = x.mean(0)
        U, lam = principal_axes(x - mu, rank, tol)
        return cls(mu.to(data.dtype).reshape(data.shape[1:]), U=U.to(data.dtype), lam=lam.to(data.dtype))

    @property
    def mean(self) -> Tensor:
        return self.mu.reshape(self.shape)

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    @property
    def rank(self) -> int:
        return self.lam.shape[0]

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``D(x, sigma) = mu + U diag(lam / (lam + sigma^2)) U^T (x - mu)`` (eq. 6 in the form of eq. 12)."""
        xf = _flat(x, self.shape, self.mu.dtype)
        s2 = as_sigma(sigma, xf)[:, None] ** 2
        c = (xf - self.mu) @ self.U
        return (self.mu + (c * self.lam / (self.lam + s2)) @ self.U.T).reshape(x.shape)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``s = -(Sigma + sigma^2 I)^{-1} (x - mu)`` via Woodbury (eqs. 5, 12):
        ``-[(d - U U^T d) / sigma^2 + U diag(1 / (lam + sigma^2)) U^T d]``, ``d = x - mu``."""
        xf = _flat(x, self.shape, self.mu.dtype)
        s2 = as_sigma(sigma, xf)[:, None] ** 2
        d = xf - self.mu
        c = d @ self.U
        score = -(c / (self.lam + s2)) @ self.U.T
        if self.rank < self.dim:  # at full rank U U^T d = d: the term would be rounding error / sigma^2
            score = score - (d - c @ self.U.T) / s2
        return score.reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``log N(x; mu, Sigma + sigma^2 I)`` (the noised density, eq. 1), shape ``(B,)``.

        ``sigma = 0`` is allowed only for a non-degenerate Gaussian (``rank == dim``)."""
        xf = _flat(x, self.shape, self.mu.dtype)
        s = as_sigma(sigma, xf, allow_zero=True)
        deficient = self.rank < self.dim
        if deficient and bool((s == 0).any()):
            raise ValueError(
                f"a Gaussian of rank {self.rank} < dim {self.dim} has no density at sigma = 0"
            )
        s2 = s**2
        d = xf - self.mu
        c = d @ self.U
        lam_s = self.lam + s2[:, None]
        quad = (c.square() / lam_s).sum(-1)
        logdet = torch.log(lam_s).sum(-1)
        if deficient:  # the (D - r) directions orthogonal to U have variance sigma^2
            quad = quad + (d - c @ self.U.T).square().sum(-1) / s2
            logdet = logdet + (self.dim - self.rank) * torch.log(s2)
        return -0.5 * (self.dim * _LOG_2PI + logdet + quad)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``mu + U (sqrt(lam) * z)``, ``z ~ N(0, I_r)``, shape ``(n, *shape)``."""
        z = torch.randn(n, self.rank, generator=generator, dtype=self.mu.dtype, device=self.mu.device)
        return (self.mu + (z * self.lam.sqrt()) @ self.U.T).reshape(n, *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, rank={self.rank}"


def principal_axes(xc: Tensor, rank: int | None = None, tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Eigen-directions ``(U, lam)``, descending, of the unbiased covariance of centred rows
    ``xc`` ``(N, D)``: the top ``rank`` of those with ``lam > tol * max(lam)``."""
    n, D = xc.shape
    if n < 2:  # one point: zero covariance
        return xc.new_zeros(D, 0), xc.new_zeros(0)
    return _truncate(*_eigh_desc(xc.T @ xc / (n - 1)), rank, tol)


def _eig_from_cov(cov: Tensor, D: int, tol: float) -> tuple[Tensor, Tensor]:
    """``(U, lam)`` of a symmetric PSD ``cov`` (eigh in float64), null directions dropped."""
    if cov.shape != (D, D):
        raise ValueError(f"cov must have shape ({D}, {D}), got {tuple(cov.shape)}")
    cov64 = cov.double()
    scale = float(cov64.abs().max())
    if not torch.allclose(cov64, cov64.T, rtol=0, atol=1e-6 * scale):
        raise ValueError("cov must be symmetric")
    U, lam = _eigh_desc(cov64)
    if D and float(lam[-1]) < -1e-6 * scale:
        raise ValueError(f"cov must be positive semi-definite (smallest eigenvalue {float(lam[-1]):.3g})")
    U, lam = _truncate(U, lam, None, tol)
    return U.to(cov.dtype), lam.to(cov.dtype)


def _eigh_desc(cov: Tensor) -> tuple[Tensor, Tensor]:
    lam, U = torch.linalg.eigh(cov)
    return U.flip(-1), lam.flip(-1)


def _truncate(U: Tensor, lam: Tensor, rank: int | None, tol: float) -> tuple[Tensor, Tensor]:
    """The leading columns of descending ``(U, lam)``: ``lam > tol * lam[0]``, at most ``rank``."""
    r = int((lam > tol * lam[0]).sum()) if len(lam) and float(lam[0]) > 0 else 0
    if rank is not None:
        r = min(r, rank)
    return U[:, :r], lam[:r]


def _check_axes(U: Tensor, lam: Tensor, D: int) -> None:
    if U.ndim != 2 or U.shape[0] != D or lam.shape != (U.shape[1],):
        raise ValueError(f"U must be (D={D}, r) and lam (r,), got {tuple(U.shape)} and {tuple(lam.shape)}")
    eye = torch.eye(U.shape[1], dtype=U.dtype, device=U.device)
    if not torch.allclose(U.T @ U, eye, atol=100 * torch.finfo(U.dtype).eps * max(D, 1) ** 0.5):
        raise ValueError("U must have orthonormal columns")


def _floating(t: Tensor | Sequence[float], name: str) -> Tensor:
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has non-finite values")
    return t


def _param(t: Tensor | Sequence[float], dtype: torch.dtype, name: str) -> Tensor:
    """A model parameter in the model's dtype; a tensor of another dtype is an error, not a cast."""
    if isinstance(t, Tensor) and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, but the model's (the mean's) dtype is {dtype}")
    return _floating(torch.as_tensor(t, dtype=dtype), name)


def _flat(x: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """``x`` ``(B, *shape)`` as ``(B, D)``, after checking its dtype and shape (no casting)."""
    if x.dtype != dtype:
        raise TypeError(f"x has dtype {x.dtype} but the model is {dtype}; convert one of them explicitly")
    if tuple(x.shape[1:]) != shape or x.ndim != len(shape) + 1:
        raise ValueError(f"x must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _tracks_gradients(*tensors: Tensor) -> bool:
    """Whether any input carries a gradient: reverse mode (``requires_grad`` with grad enabled),
    forward mode (a dual tensor) or a ``torch.func`` transform; those take the out-of-place path."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return True
    if any(forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        return True
    is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return is_wrapped is not None and any(is_wrapped(t) for t in tensors)


__all__ = ["Gaussian", "Isotropic", "principal_axes"]
