"""Gaussian mixture score model with low-rank components (Gaussian-score paper, Sec. 2.2, eqs. 7-8)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from scorelab.analytic.gaussian import (
    _LOG_2PI,
    _check_axes,
    _eig_from_cov,
    _flat,
    _floating,
    _param,
    principal_axes,
)
from scorelab.denoiser import as_sigma


class GaussianMixture(nn.Module):
    """``sum_k pi_k N(mu_k, U_k diag(lam_k) U_k^T)`` with each ``Sigma_k`` of rank ``r_k <= D``.

    Give ``covs`` ``(K, D, D)`` (eigenvalues ``<= tol * max`` dropped per component) or
    ``U`` ``(K, D, r)`` and ``lam`` ``(K, r)``. Components of lower rank are padded to the
    common ``r`` with zero columns of ``U`` and ``lam = 0``: a zero column adds nothing to
    ``U_k U_k^T``, and ``ranks`` ``(K,)`` counts the real directions (a given ``lam = 0``
    marks padding, and its ``U`` column is zeroed). Buffers: ``weights`` ``(K,)``,
    ``mu`` ``(K, D)``, ``U``, ``lam``, ``ranks``.
    """

    weights: Tensor  # (K,)
    mu: Tensor  # (K, D)
    U: Tensor  # (K, D, r), zero columns for padding
    lam: Tensor  # (K, r), 0 for padding
    ranks: Tensor  # (K,) integer

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        means: Tensor,
        covs: Tensor | None = None,
        *,
        U: Tensor | None = None,
        lam: Tensor | None = None,
        tol: float = 1e-10,
    ) -> None:
        super().__init__()
        means = _floating(means, "means")
        if means.ndim < 2:
            raise ValueError(f"means must have shape (K, *shape), got {tuple(means.shape)}")
        K, self.shape = means.shape[0], tuple(means.shape[1:])
        D = means[0].numel()
        weights = _param(weights, means.dtype, "weights")
        _check_weights(weights, K)
        if covs is not None:
            if U is not None or lam is not None:
                raise ValueError("give either covs or (U, lam), not both")
            covs = _param(covs, means.dtype, "covs")
            if covs.ndim != 3 or covs.shape[0] != K:
                raise ValueError(f"covs must have shape ({K}, {D}, {D}), got {tuple(covs.shape)}")
            U, lam = _pad([_eig_from_cov(c, D, tol) for c in covs])
        elif U is None or lam is None:
            raise ValueError("give covs, or both U and lam")
        U, lam = _param(U, means.dtype, "U"), _param(lam, means.dtype, "lam")
        if U.ndim != 3 or U.shape[0] != K or lam.shape != (K, U.shape[-1]):
            raise ValueError(f"U must be ({K}, D, r) and lam ({K}, r), got {tuple(U.shape)} and {tuple(lam.shape)}")
        if not bool((lam >= 0).all()):
            raise ValueError("lam must be >= 0 (0 marks a padding column)")
        U = U * (lam > 0)[:, None, :]
        for k in range(K):
            active = lam[k] > 0
            _check_axes(U[k][:, active], lam[k][active], D)
        self.register_buffer("weights", weights.clone())
        self.register_buffer("mu", means.reshape(K, D).clone())
        self.register_buffer("U", U.clone())
        self.register_buffer("lam", lam.clone())
        self.register_buffer("ranks", (lam > 0).sum(-1))

    @classmethod
    def fit(
        cls, data: Tensor, n_components: int, rank: int | None = None, seed: int = 0, tol: float = 1e-10
    ) -> GaussianMixture:
        """MiniBatchKMeans clusters of ``data`` ``(N, *shape)``, each given its mean and unbiased
        covariance (float64, top ``rank`` directions) and weight = its fraction of the data.

        Empty clusters are dropped with a warning (so the mixture may have fewer components)."""
        from sklearn.cluster import MiniBatchKMeans

        data = _floating(data, "data")
        x = data.reshape(len(data), -1).double()
        labels = MiniBatchKMeans(n_components, random_state=seed, n_init=3).fit_predict(x.cpu().numpy())
        labels = torch.as_tensor(labels, device=x.device)
        counts = torch.bincount(labels, minlength=n_components)
        if bool((counts == 0).any()):
            warnings.warn(f"GaussianMixture.fit: dropping {int((counts == 0).sum())} empty clusters", stacklevel=2)
        means, axes = [], []
        for k in torch.nonzero(counts).squeeze(1).tolist():
            xk = x[labels == k]
            means.append(xk.mean(0))
            axes.append(principal_axes(xk - means[-1], rank, tol))
        U, lam = _pad(axes)
        weights = counts[counts > 0].double() / len(x)
        return cls(
            weights.to(data.dtype),
            torch.stack(means).to(data.dtype).reshape(-1, *data.shape[1:]),
            U=U.to(data.dtype),
            lam=lam.to(data.dtype),
        )

    @property
    def means(self) -> Tensor:
        return self.mu.reshape(-1, *self.shape)

    @property
    def n_components(self) -> int:
        return self.mu.shape[0]

    @property
    def dim(self) -> int:
        return self.mu.shape[1]

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``D(x, sigma) = sum_k w_k (mu_k + U_k diag(lam_k / (lam_k + sigma^2)) U_k^T (x - mu_k))`` (eq. 7)."""
        xf = _flat(x, self.shape, self.mu.dtype)
        s2 = as_sigma(sigma, xf)[:, None, None] ** 2
        _, c, log_n = self._terms(xf, s2)
        denoised = self.mu + torch.einsum("bkr,kdr->bkd", c * self.lam / (self.lam + s2), self.U)
        w = torch.softmax(self.weights.log() + log_n, -1)
        return torch.einsum("bk,bkd->bd", w, denoised).reshape(x.shape)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``s = -sum_k w_k (Sigma_k + sigma^2 I)^{-1} (x - mu_k)`` (eq. 7), each inverse by Woodbury."""
        xf = _flat(x, self.shape, self.mu.dtype)
        s2 = as_sigma(sigma, xf)[:, None, None] ** 2
        d, c, log_n = self._terms(xf, s2)
        scores = torch.einsum("bkr,kdr->bkd", c / (self.lam + s2), self.U)
        deficient = (self.ranks < self.dim)[:, None]  # full rank: U U^T d = d, no residual term
        if bool(deficient.any()):  # (computed, it would be rounding error / sigma^2)
            scores = scores + deficient * (d - torch.einsum("bkr,kdr->bkd", c, self.U)) / s2
        w = torch.softmax(self.weights.log() + log_n, -1)
        return -torch.einsum("bk,bkd->bd", w, scores).reshape(x.shape)

    def responsibilities(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``w_k(x, sigma) = softmax_k(log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I))`` (eq. 8), ``(B, K)``."""
        return torch.softmax(self.weights.log() + self._log_n(x, sigma), -1)

    def log_prob(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``log sum_k pi_k N(x; mu_k, Sigma_k + sigma^2 I)`` (the noised density, eq. 1), ``(B,)``.

        ``sigma = 0`` is allowed only when every component has full rank."""
        return torch.logsumexp(self.weights.log() + self._log_n(x, sigma), -1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws: component ``k ~ pi`` then ``mu_k + U_k (sqrt(lam_k) * z)``, ``(n, *shape)``."""
        if n == 0:  # torch.multinomial refuses n = 0
            return self.mu.new_zeros(0, *self.shape)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.U.shape[-1], generator=generator, dtype=self.mu.dtype, device=self.mu.device)
        x = self.mu[k]
        for j in range(self.n_components):  # per component, not per sample: no (n, D, r) tensor
            idx = torch.nonzero(k == j).squeeze(1)
            x[idx] += (z[idx] * self.lam[j].sqrt()) @ self.U[j].T
        return x.reshape(n, *self.shape)

    def _log_n(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        xf = _flat(x, self.shape, self.mu.dtype)
        s = as_sigma(sigma, xf, allow_zero=True)
        if bool((s == 0).any()) and bool((self.ranks < self.dim).any()):
            raise ValueError(
                f"component ranks {self.ranks.tolist()} < dim {self.dim}: no density at sigma = 0"
            )
        return self._terms(xf, s[:, None, None] ** 2)[2]

    def _terms(self, x: Tensor, s2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``d = x - mu_k`` ``(B, K, D)``, ``c = U_k^T d`` ``(B, K, r)`` and
        ``log N(x; mu_k, Sigma_k + sigma^2 I)`` ``(B, K)`` for ``s2 = sigma^2`` ``(B, 1, 1)``.

        Padding columns (``lam = 0``, ``U = 0``) give ``c = 0`` and are masked out; the
        ``D - r_k`` directions orthogonal to ``U_k`` have variance ``sigma^2``."""
        d = x[:, None, :] - self.mu
        c = torch.einsum("bkd,kdr->bkr", d, self.U)
        active = self.lam > 0
        lam_s = torch.where(active, self.lam + s2, 1.0)  # 1 on padding: finite even at sigma = 0
        quad = (c.square() / lam_s).sum(-1)
        logdet = torch.log(lam_s).sum(-1)
        deficient = self.ranks < self.dim
        if bool(deficient.any()):  # then sigma > 0 (checked by the callers)
            resid = d - torch.einsum("bkr,kdr->bkd", c, self.U)
            quad = quad + deficient * resid.square().sum(-1) / s2[..., 0]
            logdet = logdet + (self.dim - self.ranks) * torch.log(s2[..., 0])
        return d, c, -0.5 * (self.dim * _LOG_2PI + logdet + quad)

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, shape={self.shape}, ranks={self.ranks.tolist()}"


def _check_weights(weights: Tensor, K: int) -> None:
    if weights.shape != (K,):
        raise ValueError(f"weights must have shape ({K},) like means' first axis, got {tuple(weights.shape)}")
    if not bool((weights > 0).all()):
        raise ValueError("weights must be > 0")
    total = float(weights.double().sum())
    if abs(total - 1) > 1e-6:
        raise ValueError(f"weights must sum to 1, got {total}")


def _pad(axes: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Stack per-component ``(U_k (D, r_k), lam_k (r_k,))`` to ``(K, D, r)``, ``(K, r)`` with zeros."""
    r = max((len(lam) for _, lam in axes), default=0)
    U = torch.stack([nn.functional.pad(Uk, (0, r - Uk.shape[1])) for Uk, _ in axes])
    lam = torch.stack([nn.functional.pad(lk, (0, r - len(lk))) for _, lk in axes])
    return U, lam
