"""Gaussian mixture score model with low-rank components (Gaussian-score paper, Sec. 2.2, eqs. 7-8)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from scorelab.analytic.gaussian import (
    _LOG_2PI,
    _check_axes,
    _eig_from_cov,
    _flat,
    _floating,
    _param,
    _tracks_gradients,
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

    Cost. A call needs ``c_k = U_k^T (x - mu_k)`` for every ``k``, one ``(B, D) @ (D, K r)``
    product, and (``forward``, ``score``) the back-projection ``sum_k U_k (...)``, one
    ``(B, K r) @ (K r, D)`` product; everything else is ``O(B K r + B K D)``: no ``(B, K, D)``
    tensor is formed. ``U`` is stored ``(D, K, r)``-contiguous (still indexed ``(K, D, r)``) so
    that the ``(D, K r)`` matrix of all axes is a view; the terms that depend on the model alone
    are cached until a buffer changes.

    Accuracy. The residual ``|(I - U_k U_k^T)(x - mu_k)|^2`` of a component of rank ``r_k < D``
    is taken as ``|x - mu_k|^2 - |c_k|^2`` (``U_k`` orthonormal), both from products; its rounding
    reaches ``log N_k`` divided by ``2 sigma^2``. ``|x - mu_k|^2`` is expanded around the prior mean
    ``m`` in float64 even for a float32 model, which leaves (float32) the rounding of ``c_k``, as when
    the residual was formed from the ``(B, K, D)`` differences; a float64 model keeps the expansion's
    ``~eps (|x - m|^2 + |mu_k - m|^2) / (2 sigma^2)`` in ``log N_k`` (forming the differences instead
    would cost a third product of the size of the two).

    Limits. At ``sigma = inf`` the likelihoods no longer differ: ``w = pi``, ``D = sum_k pi_k mu_k``,
    the score is 0 and ``log_prob = -inf``. As ``sigma -> 0`` no quantity is formed as
    ``1 / sigma^2`` alone (it would overflow first): a point off every component's support
    gets the component of least residual, ``log_prob -> -inf``.
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
        # stored (D, K, r)-contiguous, so that the (D, K r) matrix of all axes is a view
        self.register_buffer("U", U.permute(1, 0, 2).contiguous().permute(1, 0, 2))
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
        """``D(x, sigma) = sum_k w_k (mu_k + U_k diag(lam_k / (lam_k + sigma^2)) U_k^T (x - mu_k))`` (eq. 7).

        The sum over ``k`` of the ``U_k (...)`` is one ``(B, K r) @ (K r, D)`` product. At
        ``sigma = inf`` every ``w_k = pi_k`` and ``D`` is the prior mean ``sum_k pi_k mu_k``."""
        t = self._terms(x, sigma)
        coef = _coef(t.w, self.lam / t.lam_s, t.c, out=t.scratch)  # 0 on padding and at sigma = inf
        return (t.w @ self.mu + coef @ t.const.U_flat.T).reshape(x.shape)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``s = -sum_k w_k (Sigma_k + sigma^2 I)^{-1} (x - mu_k)`` (eq. 7), each inverse by Woodbury.

        A component of full rank contributes ``-U_k diag(1 / (lam_k + sigma^2)) c_k`` (no ``1 / sigma^2``
        term, whose two halves would cancel to rounding error / sigma^2); one of lower rank
        ``-[(x - mu_k) - U_k diag(lam_k / (lam_k + sigma^2)) c_k] / sigma^2``, the bracket summed over
        ``k`` before dividing, so it is ``(D - x) / sigma^2`` from the same numbers as ``forward``."""
        t = self._terms(x, sigma)
        const = t.const
        full = self.ranks == self.dim  # (K,)
        out = torch.zeros_like(t.x0)
        if bool(full.any()):
            coef = _coef(t.w * full, 1 / t.lam_s, t.c, out=None if not bool(full.all()) else t.scratch)
            out = out - coef @ const.U_flat.T
        if not bool(full.all()):
            wd = t.w * ~full  # deficient components only
            coef = _coef(wd, self.lam / t.lam_s, t.c, out=t.scratch)
            numer = wd.sum(-1, keepdim=True) * t.x0 - wd @ const.mu0 - coef @ const.U_flat.T
            s = t.s[:, None]
            out = out - numer / s / s  # not / s^2: sigma^2 may underflow where sigma does not
        return out.reshape(x.shape)

    def responsibilities(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``w_k(x, sigma) = softmax_k(log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I))`` (eq. 8), ``(B, K)``.

        At ``sigma = inf`` the likelihoods no longer differ and ``w = pi``."""
        return self._terms(x, sigma, allow_zero=True).w

    def log_prob(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``log sum_k pi_k N(x; mu_k, Sigma_k + sigma^2 I)`` (the noised density, eq. 1), ``(B,)``.

        ``sigma = 0`` is allowed only when every component has full rank; ``sigma = inf`` gives ``-inf``."""
        t = self._terms(x, sigma, allow_zero=True)
        return torch.logsumexp(t.z, -1) + t.base

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

    def _constants(self) -> _Constants:
        """The per-model terms every call uses, recomputed only when a buffer changed (in place,
        by ``load_state_dict``, or replaced by ``.to()``): they cost ``O(K D r)``, a tenth of a call."""
        bufs = (self.weights, self.mu, self.U, self.lam)
        key = _cache_key(bufs)
        cached = self.__dict__.get("_const_cache")
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        K, D, r = self.U.shape
        center = self.weights @ self.mu  # (D,), the prior mean
        mu0 = self.mu - center  # means relative to it: smaller terms in the expanded distances
        # (D, K r) with column block k = U_k: a free view of the buffer's (D, K, r) storage
        U_flat = self.U.permute(1, 0, 2).reshape(D, K * r)
        wide = torch.promote_types(mu0.dtype, torch.float64)
        mu0_wide = self.mu.to(wide) - center.to(wide)
        const = _Constants(
            center=center,
            mu0=mu0,
            mu0_wide=mu0_wide,
            mu0_sq_wide=mu0_wide.square().sum(-1),
            U_mu0=torch.einsum("kdr,kd->kr", self.U, mu0),
            U_flat=U_flat,
            log_w=self.weights.log(),
        )
        if key is not None and not any(b.requires_grad for b in bufs):  # never cache a graph
            self.__dict__["_const_cache"] = (key, const)
        return const

    def _terms(self, x: Tensor, sigma: Tensor | float, *, allow_zero: bool = False) -> _Terms:
        """Everything the methods share, from the one ``(B, D) @ (D, K r)`` product ``c = U^T (x - mu)``.

        ``log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I) = z_k + base`` with ``base`` the same for
        every ``k``: ``-(1/2) (D log 2 pi + D log sigma^2 + e_0 / sigma^2)``, so that ``z`` stays
        finite at ``sigma = inf`` (where ``z = log pi``) and at sigma so small that the distances
        over ``sigma^2`` overflow (``e_0`` is the smallest residual below). In ``z``:

        - ``log det(Sigma_k + sigma^2 I) - D log sigma^2 = sum_j log(1 + lam_kj / sigma^2)``;
        - ``c^T diag(1 / (lam + sigma^2)) c`` on the ``r_k`` axes (padding: ``c = 0``, masked);
        - for ``r_k < D`` the residual ``|x - mu_k|^2 - |c_k|^2`` (Pythagoras, ``U_k`` orthonormal)
          over ``sigma^2``: the ``D - r_k`` directions orthogonal to ``U_k`` have variance ``sigma^2``.
          Both norms come from products (``|x - mu_k|^2`` expanded, in float64 at least), never from
          the ``(B, K, D)`` differences (see the class docstring on the rounding).

        ``sigma = 0`` (``allow_zero``, full rank only) uses ``log det Sigma_k`` and ``base = -D log(2 pi) / 2``."""
        xf = _flat(x, self.shape, self.mu.dtype)
        s = as_sigma(sigma, xf, allow_zero=allow_zero)
        deficient = self.ranks < self.dim  # (K,)
        any_deficient = bool(deficient.any())
        if allow_zero and any_deficient and bool((s == 0).any()):
            raise ValueError(f"component ranks {self.ranks.tolist()} < dim {self.dim}: no density at sigma = 0")
        const = self._constants()
        B, K, r = len(xf), self.n_components, self.lam.shape[-1]
        # in place where no gradient is tracked: fewer fresh (B, K, r) blocks, whose first touch costs
        # as much as the arithmetic on them (the product's own output is always safe to reuse)
        inplace = not _tracks_gradients(xf, s, self.weights, self.mu, self.U, self.lam)
        x0 = xf - const.center
        c = (x0 @ const.U_flat).view(B, K, r).sub_(const.U_mu0)
        c2 = c.square()
        c2_sum = c2.sum(-1) if any_deficient else None
        # one sigma for the whole batch (the usual case): the (K, r) terms once, not per row
        sv = s[:1] if B > 1 and bool((s == s[0]).all()) else s
        s2 = (sv * sv)[:, None, None]  # (S, 1, 1), S = 1 or B
        lam_s = self.lam + s2  # (S, K, r)
        if bool((s2 == 0).any()):  # padding (lam = 0, c = 0): any finite value
            lam_s = torch.where(self.lam > 0, lam_s, 1.0)
        q = (c2.div_(lam_s) if inplace else c2 / lam_s).sum(-1)
        z = const.log_w - 0.5 * (q + _logdet_ratio(self.lam, sv))
        positive = s > 0
        base = -0.5 * (self.dim * _LOG_2PI + torch.where(positive, 2 * self.dim * torch.log(torch.where(positive, s, 1.0)), 0.0))
        if c2_sum is not None:  # then sigma > 0
            # |x - mu_k|^2 expanded, in float64 at least: a (B, D) @ (D, K) product, 1/r of the main one
            xw = x0.to(const.mu0_wide.dtype)
            d2 = xw.square().sum(-1, keepdim=True) - 2 * xw @ const.mu0_wide.T + const.mu0_sq_wide
            resid = torch.where(deficient, (d2 - c2_sum).clamp(min=0), 0.0).to(x0.dtype)  # (B, K)
            e0 = resid.amin(-1, keepdim=True)
            st = s[:, None]
            z = z - 0.5 * ((resid - e0) / st / st)
            base = base - 0.5 * (e0[:, 0] / s / s)
        w = torch.softmax(z, -1)
        scratch = c2 if inplace else None
        return _Terms(x0=x0, s=s, lam_s=lam_s, c=c, z=z, w=w, base=base, const=const, scratch=scratch)

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, shape={self.shape}, ranks={self.ranks.tolist()}"


class _Constants(NamedTuple):
    center: Tensor  # (D,) prior mean sum_k pi_k mu_k
    mu0: Tensor  # (K, D) mu_k - center
    mu0_wide: Tensor  # the same in float64 (or wider)
    mu0_sq_wide: Tensor  # (K,) |mu_k - center|^2, float64 (or wider)
    U_mu0: Tensor  # (K, r) U_k^T (mu_k - center)
    U_flat: Tensor  # (D, K r)
    log_w: Tensor  # (K,)


class _Terms(NamedTuple):
    x0: Tensor  # (B, D) x - center
    s: Tensor  # (B,) sigma
    lam_s: Tensor  # (S, K, r) lam + sigma^2 (1 on padding where sigma^2 = 0); S = 1 when the batch shares one sigma
    c: Tensor  # (B, K, r) U_k^T (x - mu_k)
    z: Tensor  # (B, K) log pi_k + log N_k - base
    w: Tensor  # (B, K) softmax(z), the responsibilities
    base: Tensor  # (B,)
    const: _Constants
    scratch: Tensor | None  # a free (B, K, r) block (None where gradients are tracked)


def _coef(w: Tensor, factor: Tensor, c: Tensor, out: Tensor | None) -> Tensor:
    """``w_k factor_kj c_kj`` as ``(B, K r)``, the left factor of the back-projection ``@ U_flat^T``."""
    if out is None:
        return (c * (w[:, :, None] * factor)).reshape(len(w), -1)
    return torch.mul(w[:, :, None], factor, out=out).mul_(c).reshape(len(w), -1)


def _cache_key(bufs: tuple[Tensor, ...]) -> tuple[object, ...] | None:
    """Identity and in-place version of each buffer; None where a tensor keeps no version (inference mode)."""
    try:
        return tuple((b.data_ptr(), b._version, b.dtype, b.device, b.shape) for b in bufs)
    except RuntimeError:
        return None


def _logdet_ratio(lam: Tensor, s: Tensor) -> Tensor:
    """``sum_j log(1 + lam_kj / s^2)`` (0 on padding, ``lam = 0``), ``(S, K)`` for ``s`` ``(S,)``; at ``s = 0``
    ``sum_j log lam_kj`` (the whole log-determinant: the caller drops ``D log s^2``).

    ``log1p(lam / s^2)`` (0 at ``s = inf``) where ``lam / s^2`` cannot overflow; for smaller ``s``
    ``log(lam + s^2) - 2 log s``, finite however small ``s`` is."""
    s2 = (s * s)[:, None, None]
    out = torch.log1p(lam / s2).sum(-1)
    tiny = (s2 < 4 * lam.max() / torch.finfo(lam.dtype).max)[:, 0, 0]  # includes s = 0
    if bool(tiny.any()):
        positive = s > 0
        log_s = torch.log(torch.where(positive, s, 1.0))[:, None, None]
        near = torch.where(lam > 0, torch.log(torch.where(lam > 0, lam, 1.0) + s2) - 2 * log_s, 0.0).sum(-1)
        out = torch.where(tiny[:, None], near, out)
    return out


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
