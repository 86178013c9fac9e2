"""The extended score ``H_gamma`` of the MAD paper (Sec. 3, Definition 3.1; Appendix A).

``H_gamma p = (1 + gamma) S(p * g_gamma) + gamma d/dgamma S(p * g_gamma)``, where ``p * g_gamma``
is ``p`` noised with variance ``gamma``, i.e. the score at ``sigma = sqrt(gamma)``. Its limit
``H_0`` equals the score for a density with full support (Lemma 3.2) but stays finite for
Diracs and degenerate Gaussians, pointing to the nearest point (Lemma 3.3) or onto the
support (Appendix A.1): the property MAD inference exploits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorelab.analytic.delta_mixture import DeltaMixture
from scorelab.analytic.gaussian import Gaussian, Isotropic, _flat
from scorelab.denoiser import Denoiser, as_sigma, score_and_derivative


def extended_score(model: Denoiser, x: Tensor, gamma: Tensor | float) -> Tensor:
    """``H_gamma p(x)`` (Definition 3.1) for any denoiser, ``gamma > 0`` a float or ``(B,)``.

    With ``sigma = sqrt(gamma)``, ``d/dgamma = (1 / (2 sigma)) d/dsigma``, so
    ``H_gamma = (1 + gamma) S + (sigma / 2) dS/dsigma``; ``dS/dsigma`` is exact (forward mode)."""
    gamma = as_sigma(gamma, x)
    sigma = gamma.sqrt()
    s, ds = score_and_derivative(model, x, sigma)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return (1 + gamma).reshape(shape) * s + (sigma / 2).reshape(shape) * ds


def extended_score_limit(model: Isotropic | Gaussian | DeltaMixture, x: Tensor) -> Tensor:
    """``H_0 p(x) = lim_{gamma -> 0} H_gamma p(x)`` in closed form.

    - ``DeltaMixture``: ``-sum_i z_i(x) (x - y_i)`` with ``z`` the Voronoi indicator of the nearest
      point, a tie split in proportion to the weights ``c_i`` (Lemma 3.3).
    - ``Isotropic`` (a Dirac at the mean): ``-(x - mu)`` (Sec. 3, ``H_0 delta = -x``).
    - ``Gaussian`` ``N(mu, U diag(lam) U^T)``: ``-U diag(1/lam) U^T (x - mu) - (I - U U^T)(x - mu)``,
      the score on the support and ``-x_2`` across it (Appendix A.1); at full rank the ordinary
      clean score ``-Sigma^{-1}(x - mu)`` (Lemma 3.2).
    """
    if isinstance(model, DeltaMixture):
        return _dirac_limit(model, x)
    if isinstance(model, Isotropic):
        xf = _flat(x, model.shape, model.mu.dtype)
        return (model.mu - xf).reshape(x.shape)
    if isinstance(model, Gaussian):
        xf = _flat(x, model.shape, model.mu.dtype)
        d = xf - model.mu
        c = d @ model.U
        out = -(c / model.lam) @ model.U.T
        if model.rank < model.dim:
            out = out - (d - c @ model.U.T)
        return out.reshape(x.shape)
    raise TypeError(
        f"no closed-form H_0 for {type(model).__name__}; use extended_score(model, x, gamma) with a small gamma"
    )


def _dirac_limit(model: DeltaMixture, x: Tensor, rel_tol: float | None = None) -> Tensor:
    """Lemma 3.3 in two chunked passes: the largest ``q_i = x.y_i - ||y_i||^2/2`` (the nearest
    point), then the ``c``-weighted mean of every point within rounding of it (the ties)."""
    xf = _flat(x, model.shape, model.points.dtype)
    rel_tol = 1000 * torch.finfo(xf.dtype).eps if rel_tol is None else rel_tol
    best = torch.stack([model.proximity(xf, c).amax(-1) for c in model.chunks()]).amax(0)
    # a tie is a difference below the rounding of the q's themselves
    tol = rel_tol * (0.5 * xf.square().sum(-1) + model.half_sq.max())
    weight = xf.new_zeros(len(xf))
    acc = torch.zeros_like(xf)
    for c in model.chunks():
        z = torch.where(model.proximity(xf, c) >= (best - tol)[:, None], model.log_c[c].exp(), 0.0)
        weight = weight + z.sum(-1)
        acc = acc + z @ model.points[c]
    return (acc / weight[:, None] - xf).reshape(x.shape)


__all__ = ["extended_score", "extended_score_limit"]
