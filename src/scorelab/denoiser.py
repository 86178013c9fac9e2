"""The one convention: a denoiser ``D(x, sigma) -> x0_hat`` (Karras et al. 2022, Sec. 2).

``x`` has shape ``(B, *shape)``; ``sigma`` is a float, a 0-d tensor or a ``(B,)`` tensor. The
noised data are ``x = x0 + sigma * eps`` and the score is ``(D(x, sigma) - x) / sigma**2``.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor


class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor: ...


def as_sigma(sigma: Tensor | float, x: Tensor, *, allow_zero: bool = False) -> Tensor:
    """``sigma`` as a ``(B,)`` tensor in ``x``'s dtype and device; rejects sigma <= 0
    (sigma < 0 with ``allow_zero``, for densities of the clean distribution)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or have shape ({x.shape[0]},), got {tuple(sigma.shape)}")
    if not torch.compiler.is_compiling():
        if allow_zero and not bool((sigma >= 0).all()):
            raise ValueError("sigma must be >= 0")
        if not allow_zero and not bool((sigma > 0).all()):
            raise ValueError("sigma must be > 0 for a denoiser evaluation")
    return sigma


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape a ``(B,)`` tensor to ``(B, 1, ..., 1)`` with ``ndim`` dimensions, for broadcasting."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def score(denoiser: Denoiser, x: Tensor, sigma: Tensor | float) -> Tensor:
    """Score of the noised distribution, ``(D(x, sigma) - x) / sigma**2`` (Tweedie's formula);
    a model with its own closed-form ``score`` (the analytical ones) is asked directly, which
    avoids the cancellation in ``D - x`` at small sigma."""
    exact = getattr(denoiser, "score", None)
    if callable(exact):
        return exact(x, sigma)
    s = as_sigma(sigma, x)
    return (denoiser(x, s) - x) / append_dims(s, x.ndim) ** 2


def score_and_derivative(denoiser: Denoiser, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
    """``S(x, sigma)`` and its sigma-derivative ``dS/dsigma`` at fixed ``x``, the derivative exact by
    forward-mode autograd: one Jacobian-vector product through the denoiser (MAD paper, footnote 2)."""
    s = as_sigma(sigma, x).clone()  # a dual tensor cannot be an expanded view
    with fwAD.dual_level():
        value, tangent = fwAD.unpack_dual(score(denoiser, x, fwAD.make_dual(s, torch.ones_like(s))))
    return value, torch.zeros_like(value) if tangent is None else tangent


def unexplained_score_fraction(d_ref: Tensor, d_cand: Tensor, x: Tensor) -> Tensor:
    """Per point ``|s_ref - s_cand|^2 / |s_ref|^2`` (Gaussian-score paper, eq. 28) from two denoiser
    outputs at the same ``x`` and sigma: with ``s = (D - x) / sigma^2`` it is
    ``|D_ref - D_cand|^2 / |D_ref - x|^2``, sigma cancels. Float64, shape ``(B,)``."""
    d_ref64 = d_ref.flatten(1).double()
    return (d_ref64 - d_cand.flatten(1).double()).pow(2).sum(1) / (d_ref64 - x.flatten(1).double()).pow(2).sum(1)


def sigma_range(denoiser: object) -> tuple[float, float] | None:
    """``(sigma_min, sigma_max)`` of a denoiser that knows the noise levels it was trained on (a
    wrapped VP model), else None (ours are defined at every sigma > 0)."""
    lo, hi = getattr(denoiser, "sigma_min", None), getattr(denoiser, "sigma_max", None)
    return (float(lo), float(hi)) if lo is not None and hi is not None else None


def check_range(denoiser: object, sigmas: Tensor, *, rtol: float = 1e-6) -> None:
    """Refuse a grid whose positive levels leave the denoiser's own range (:func:`sigma_range`): such
    a model is never evaluated outside it silently. ``rtol`` allows the grid's own rounding."""
    known = sigma_range(denoiser)
    if known is None:
        return
    lo, hi = known
    levels = torch.as_tensor(sigmas, dtype=torch.float64)
    levels = levels[levels > 0]
    if len(levels) and (float(levels.min()) < lo * (1 - rtol) or float(levels.max()) > hi * (1 + rtol)):
        raise ValueError(f"the grid spans sigma {float(levels.min()):.4g} .. {float(levels.max()):.4g} but the model "
                         f"knows only {lo:.4g} .. {hi:.4g}: choose --sigma-min/--sigma-max inside it (the default "
                         "grid of a wrapped model is its own range)")
