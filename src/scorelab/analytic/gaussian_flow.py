"""Closed-form probability-flow ODE of a Gaussian model (Gaussian-score paper, Sec. 3.2-3.3, App. D.1-D.4).

For :class:`~scorelab.analytic.Gaussian` ``N(mu, U diag(lam) U^T)`` the PF-ODE
``dx/dsigma = (x - D(x, sigma)) / sigma`` is linear and separates along the principal axes ``u_k``:
the off-manifold part of ``x - mu`` shrinks like ``sigma`` and the coefficient along ``u_k`` is scaled
by ``state_scale(sigma, lam_k)`` (the paper's ``psi``, eq. 15). This module holds the paper's scalar
functions (:func:`state_scale`, the paper's ``psi``; :func:`denoised_scale`, its ``xi``; the perturbation
:func:`amplification` of eq. 23 and the rotation residual ``J`` of eqs. 104-105, :func:`rotation_residual`)
and the exact trajectories of the state, of the denoiser output and of the end point: in the EDM (sigma) form
(eqs. 15-17) and with a data scale ``alpha_t``, ``x_t = alpha_t x_0 + sigma_t eps`` (VP / DDIM,
eqs. 18-21, 64-66). Nothing forms a ``D x D`` matrix.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from scorelab.analytic.gaussian import Gaussian, _flat

Levels = Tensor | Sequence[float]


def state_scale(
    sigma: Tensor | float,
    lam: Tensor | float,
    sigma_T: Tensor | float,
    alpha: Tensor | float = 1.0,
    alpha_T: Tensor | float = 1.0,
) -> Tensor:
    """The factor by which the PF-ODE scales the state's coefficient along an axis of variance ``lam`` from
    ``(alpha_T, sigma_T)`` to ``(alpha, sigma)``: the Gaussian-score paper's
    ``psi = sqrt((sigma^2 + lam alpha^2) / (sigma_T^2 + lam alpha_T^2))`` (eq. 15; with data scale,
    eq. 18). Broadcasts; Python numbers alone give float64."""
    sigma, lam, sigma_T, alpha, alpha_T = _tensors(sigma, lam, sigma_T, alpha, alpha_T)
    return torch.sqrt((sigma**2 + lam * alpha**2) / (sigma_T**2 + lam * alpha_T**2))


def denoised_scale(
    sigma: Tensor | float,
    lam: Tensor | float,
    sigma_T: Tensor | float,
    alpha: Tensor | float = 1.0,
    alpha_T: Tensor | float = 1.0,
) -> Tensor:
    """The denoiser output's coefficient along an axis of variance ``lam`` on the PF-ODE trajectory at
    ``(alpha, sigma)``, per unit of the start coefficient at ``(alpha_T, sigma_T)``: the Gaussian-score paper's
    ``xi = alpha lam / sqrt((alpha^2 lam + sigma^2) (alpha_T^2 lam + sigma_T^2))`` (eq. 16; with data scale,
    eq. 20), i.e. :func:`state_scale` times the denoiser's shrinkage
    ``alpha lam / (sigma^2 + lam alpha^2)``. Broadcasts like :func:`state_scale`."""
    sigma, lam, sigma_T, alpha, alpha_T = _tensors(sigma, lam, sigma_T, alpha, alpha_T)
    now, start = alpha**2 * lam + sigma**2, alpha_T**2 * lam + sigma_T**2
    return alpha * lam / (torch.sqrt(now) * torch.sqrt(start))


def amplification(
    lam: Tensor | float,
    sigma: Tensor | float,
    alpha: Tensor | float = 1.0,
) -> Tensor:
    """``sqrt(lam / (sigma^2 + lam alpha^2))``: the change of the end point ``x_0`` along ``u_k`` per unit
    perturbation along ``u_k`` of the state at ``(alpha, sigma)`` (Gaussian-score paper, eq. 23)."""
    lam, sigma, alpha = _tensors(lam, sigma, alpha)
    return torch.sqrt(lam / (sigma**2 + lam * alpha**2))


def rotation_residual(
    alpha: Tensor | float,
    lam: Tensor | float,
    sigma: Tensor | float | None = None,
) -> Tensor:
    """``J(alpha; lam) = sqrt(sigma^2 + lam alpha^2) - alpha sqrt(lam) - sigma`` (Gaussian-score paper, eq. 104),
    computed without cancellation as ``-2 sigma alpha sqrt(lam) / (sqrt(sigma^2 + lam alpha^2) + alpha sqrt(lam)
    + sigma)`` (eq. 105). ``sigma`` defaults to ``sqrt(1 - alpha^2)`` (VP), which needs ``0 <= alpha <= 1``."""
    if sigma is None:
        alpha, lam = _tensors(alpha, lam)
        _require((alpha >= 0) & (alpha <= 1), "alpha must be in [0, 1] (VP sigma)")
        sigma = _vp_sigma(alpha)
    alpha, lam, sigma = _tensors(alpha, lam, sigma)
    a = alpha * torch.sqrt(lam)
    den = torch.sqrt(sigma**2 + a**2) + a + sigma
    den = torch.where(den > 0, den, torch.ones_like(den))  # den = 0 only where J = 0
    return -2 * sigma * a / den


def gaussian_flow(
    model: Gaussian,
    x_T: Tensor,
    sigma_T: Tensor | float,
    sigmas: Levels,
) -> Tensor:
    """The exact PF-ODE states ``x(sigma)`` ``(S, *x_T.shape)`` at each of ``sigmas`` (``S`` levels >= 0, any
    order, 0 = the end point) of the ODE through ``x_T`` ``(B, *shape)`` at ``sigma_T > 0`` (a float or ``(B,)``):
    ``mu + (sigma / sigma_T) (I - U U^T)(x_T - mu) + sum_k state_scale(sigma, lam_k) c_k u_k``,
    ``c = U^T (x_T - mu)`` (Gaussian-score paper, eq. 15)."""
    return _sigma_form(model, x_T, sigma_T, sigmas, denoised=False)


def gaussian_flow_denoised(
    model: Gaussian,
    x_T: Tensor,
    sigma_T: Tensor | float,
    sigmas: Levels,
) -> Tensor:
    """The denoiser outputs ``D(x(sigma), sigma) = mu + sum_k denoised_scale(sigma, lam_k) c_k u_k``
    ``(S, *x_T.shape)`` along the trajectory of :func:`gaussian_flow` (Gaussian-score paper, eq. 16)."""
    return _sigma_form(model, x_T, sigma_T, sigmas, denoised=True)


def gaussian_flow_endpoint(
    model: Gaussian,
    x_T: Tensor,
    sigma_T: Tensor | float,
) -> Tensor:
    """The end point ``x(0) = mu + sum_k sqrt(lam_k / (sigma_T^2 + lam_k)) c_k u_k`` of the PF-ODE through
    ``x_T`` at ``sigma_T``, shape of ``x_T`` (Gaussian-score paper, eq. 17)."""
    return gaussian_flow(model, x_T, sigma_T, [0.0])[0]


def gaussian_flow_vp(
    model: Gaussian,
    x_T: Tensor,
    alpha_T: Tensor | float,
    alphas: Levels,
    *,
    sigma_T: Tensor | float | None = None,
    sigmas: Levels | None = None,
) -> Tensor:
    """The exact PF-ODE states ``(S, *x_T.shape)`` with data scale, ``x_t = alpha_t x_0 + sigma_t eps``:
    ``alpha_t mu + (sigma_t / sigma_T) (I - U U^T)(x_T - alpha_T mu) + sum_k state_scale(sigma_t, lam_k,
    sigma_T, alpha_t, alpha_T) c_k u_k``, ``c = U^T (x_T - alpha_T mu)`` (Gaussian-score paper, eqs. 18-19, 65).

    ``alpha_T`` and ``sigma_T`` are floats or ``(B,)``; ``alphas`` and ``sigmas`` are 1-D ``(S,)``. The sigmas
    default to ``sqrt(1 - alpha^2)`` (VP / DDIM), which needs alphas in ``[0, 1]``: ``alpha_T = 0`` is a pure
    noise start and ``alpha_t = 1`` the end point (eq. 21). ``sigma_T`` must be > 0."""
    levels = _vp_start(model, x_T, alpha_T, alphas, sigma_T, sigmas)
    return _flow(model, *levels, denoised=False)


def gaussian_flow_vp_denoised(
    model: Gaussian,
    x_T: Tensor,
    alpha_T: Tensor | float,
    alphas: Levels,
    *,
    sigma_T: Tensor | float | None = None,
    sigmas: Levels | None = None,
) -> Tensor:
    """The denoiser outputs (clean-data estimates) ``D(t) = mu + sum_k denoised_scale(sigma_t, lam_k, sigma_T,
    alpha_t, alpha_T) c_k u_k`` ``(S, *x_T.shape)`` along :func:`gaussian_flow_vp` (Gaussian-score paper,
    eqs. 20, 66); ``D(t)`` is the sigma-form denoiser at ``x_t / alpha_t`` and ``sigma_t / alpha_t``
    (``mu`` at ``alpha_t = 0``)."""
    levels = _vp_start(model, x_T, alpha_T, alphas, sigma_T, sigmas)
    return _flow(model, *levels, denoised=True)


def _flow(
    model: Gaussian,
    xf: Tensor,
    shape: torch.Size,
    alpha_T: Tensor,
    sigma_T: Tensor,
    alphas: Tensor,
    sigmas: Tensor,
    *,
    denoised: bool,
) -> Tensor:
    """Eq. 18 (the states) or eq. 20 (the denoiser outputs), ``(S, *shape)``, for a checked start ``xf``
    ``(B, D)`` at ``(alpha_T, sigma_T)`` ``(B,)`` and levels ``(alphas, sigmas)`` ``(S,)``."""
    d = xf - alpha_T[:, None] * model.mu
    c = d @ model.U  # (B, r): c_k = u_k^T (x_T - alpha_T mu), eq. 19
    a, s = alphas[:, None, None], sigmas[:, None, None]
    a_T, s_T = alpha_T[:, None], sigma_T[:, None]
    if denoised:
        out = model.mu + (denoised_scale(s, model.lam, s_T, a, a_T) * c) @ model.U.T
    else:
        off = d - c @ model.U.T  # (I - U U^T)(x_T - alpha_T mu), without a D x D matrix
        on = (state_scale(s, model.lam, s_T, a, a_T) * c) @ model.U.T
        out = a * model.mu + (s / s_T) * off + on
    return out.reshape(len(sigmas), *shape)


def _sigma_form(
    model: Gaussian,
    x_T: Tensor,
    sigma_T: Tensor | float,
    sigmas: Levels,
    *,
    denoised: bool,
) -> Tensor:
    """Eq. 15 or eq. 16: :func:`_flow` with ``alpha = 1`` throughout (Gaussian-score paper, App. D.1)."""
    xf, sigma_T = _start(model, x_T, sigma_T)
    sigmas = _levels(sigmas, xf, "sigmas")
    one_T, one = torch.ones_like(sigma_T), torch.ones_like(sigmas)
    return _flow(model, xf, x_T.shape, one_T, sigma_T, one, sigmas, denoised=denoised)


def _start(model: Gaussian, x_T: Tensor, sigma_T: Tensor | float) -> tuple[Tensor, ...]:
    """``x_T`` as ``(B, D)`` (its dtype and shape checked against ``model``) and ``sigma_T > 0`` as ``(B,)``."""
    xf = _checked_x(model, x_T)
    sigma_T = _per_sample(sigma_T, xf, "sigma_T")
    _require(sigma_T > 0, "sigma_T must be > 0")
    return xf, sigma_T


def _vp_start(
    model: Gaussian,
    x_T: Tensor,
    alpha_T: Tensor | float,
    alphas: Levels,
    sigma_T: Tensor | float | None,
    sigmas: Levels | None,
) -> tuple[Tensor, torch.Size, Tensor, Tensor, Tensor, Tensor]:
    """The checked arguments of :func:`_flow` for the VP form: ``x_T`` as ``(B, D)``, its shape,
    ``alpha_T`` and ``sigma_T`` ``(B,)``, ``alphas`` and ``sigmas`` ``(S,)``."""
    xf = _checked_x(model, x_T)
    alpha_T = _per_sample(alpha_T, xf, "alpha_T")
    alphas = _levels(alphas, xf, "alphas")
    _require(alpha_T >= 0, "alpha_T must be >= 0")
    if sigma_T is None:
        _require(alpha_T < 1, "alpha_T must be < 1 when sigma_T is defaulted")
        sigma_T = _vp_sigma(alpha_T)
    else:
        sigma_T = _per_sample(sigma_T, xf, "sigma_T")
        _require(sigma_T > 0, "sigma_T must be > 0")
    if sigmas is None:
        _require(alphas <= 1, "alphas must be in [0, 1] when sigmas are defaulted")
        sigmas = _vp_sigma(alphas)
    else:
        sigmas = _levels(sigmas, xf, "sigmas")
        if sigmas.shape != alphas.shape:
            shapes = f"{tuple(sigmas.shape)} and {tuple(alphas.shape)}"
            raise ValueError(f"sigmas and alphas must have one shape, got {shapes}")
    _require((alphas > 0) | (sigmas > 0), "alpha and sigma cannot both be 0")
    return xf, x_T.shape, alpha_T, sigma_T, alphas, sigmas


def _checked_x(model: Gaussian, x_T: Tensor) -> Tensor:
    """``x_T`` ``(B, *model.shape)`` as ``(B, D)``; ``model`` must be a :class:`Gaussian` of ``x_T``'s dtype."""
    if not isinstance(model, Gaussian):
        name = type(model).__name__
        raise TypeError(f"model must be a scorelab.analytic.Gaussian, got {name}")
    return _flat(x_T, model.shape, model.mu.dtype)


def _vp_sigma(alpha: Tensor) -> Tensor:
    """``sqrt(1 - alpha^2)``, as ``sqrt((1 - alpha)(1 + alpha))`` to keep its precision near ``alpha = 1``."""
    return torch.sqrt((1 - alpha) * (1 + alpha))


def _per_sample(v: Tensor | float, xf: Tensor, name: str) -> Tensor:
    """A float or ``(B,)`` tensor as a finite ``(B,)`` tensor in the dtype and device of ``xf`` ``(B, D)``."""
    v = torch.as_tensor(v, dtype=xf.dtype, device=xf.device)
    if v.ndim == 0:
        v = v.expand(xf.shape[0])
    if v.shape != (xf.shape[0],):
        shape = f"({xf.shape[0]},), got {tuple(v.shape)}"
        raise ValueError(f"{name} must be a float or have shape {shape}")
    _require(torch.isfinite(v), f"{name} must be finite")
    return v


def _levels(v: Levels, xf: Tensor, name: str) -> Tensor:
    """A 1-D sequence of levels as a finite, non-negative ``(S,)`` tensor in the dtype and device of ``xf``."""
    v = torch.as_tensor(v, dtype=xf.dtype, device=xf.device)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(v.shape)}")
    _require(torch.isfinite(v), f"{name} must be finite")
    _require(v >= 0, f"{name} must be >= 0")
    return v


def _require(ok: Tensor, message: str) -> None:
    if not bool(ok.all()):
        raise ValueError(message)


def _tensors(*values: Tensor | float) -> list[Tensor]:
    """``values`` as tensors of one floating dtype and device: the promoted dtype of the tensors among them,
    float64 when there are none (or none is floating point)."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    dtypes = [t.dtype for t in tensors]
    dtype = functools.reduce(torch.promote_types, dtypes, torch.bool)
    if not dtype.is_floating_point:
        dtype = torch.float64
    device = tensors[0].device if tensors else None
    return [torch.as_tensor(v, dtype=dtype, device=device) for v in values]


__all__ = [
    "amplification",
    "denoised_scale",
    "gaussian_flow",
    "gaussian_flow_denoised",
    "gaussian_flow_endpoint",
    "gaussian_flow_vp",
    "gaussian_flow_vp_denoised",
    "rotation_residual",
    "state_scale",
]
