"""MAD: inference with the extended score (MAD paper, Sec. 4, Algorithm 1, eqs. 5 and 7).

Each step follows ``H_gamma`` instead of the score, with ``gamma`` tied to the grid by
``a gamma^(2/p) + b gamma = t^2``: components of the data with small variance are treated as
Diracs and collapsed, so a model trained on noisy data gives clean samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import elementwise
from torch import Tensor
from tqdm.auto import trange

from ..denoiser import Denoiser, score_and_derivative
from .common import Callback, Generators, check_finite_result, check_sigmas, full_float32

DERIVATIVES = ("forward", "central", "exact")


def mad_gamma(t: Tensor | Sequence[float], a: float, b: float, p: float) -> Tensor:
    """``gamma`` solving ``a gamma^(2/p) + b gamma = t^2`` for every ``t > 0`` at once (Algorithm 1,
    line 4). The left side increases strictly from 0, so the root is unique and lies in
    ``(0, min(t^2 / b, (t^2 / a)^(p/2))]``; Chandrupatla's bracketing method (scipy) finds it."""
    _check_parameters(a, b, p)
    t64 = torch.as_tensor(t, dtype=torch.float64).cpu().numpy()
    if not np.all(t64 > 0):
        raise ValueError("gamma is defined for t > 0 only")
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values fail the root finding, checked below
        t2 = t64**2
        upper = np.minimum(t2 / b, (t2 / a) ** (p / 2))
        res = elementwise.find_root(
            lambda g, t2: a * g ** (2 / p) + b * g - t2,
            (np.zeros_like(t2), upper),
            args=(t2,),
            tolerances={"xatol": 0.0, "xrtol": 4 * np.finfo(np.float64).eps},
        )
    if not np.all(res.success):
        raise ValueError(  # only when a, b, p push gamma out of floating-point range
            f"no gamma solves a gamma^(2/p) + b gamma = t^2 in float64 for t = {t64[~res.success]} "
            f"(a={a}, b={b}, p={p})"
        )
    return torch.as_tensor(res.x)


def mad(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    a: float,
    b: float,
    p: float,
    delta: float = 1e-3,
    derivative: str = "central",
) -> Tensor:
    """Algorithm 1 of the MAD paper in the sigma-parametrisation, from ``x`` at ``sigmas[0]``.

    With ``t = sigmas[i]``, ``s = S(t, x) = (D(x, t) - x) / t^2`` and ``s' = dS/dsigma``:
    ``x <- x - m (t_next - t) t ((1 + gamma) s + b gamma / (2 t) s')`` where
    ``m = (1 + gamma - b gamma / t^2)^-1`` (eq. 7). ``s'`` is ``"forward"`` (the paper:
    ``(S((1+delta)t) - S(t)) / (delta t)``), ``"central"`` (``S((1 +- delta) t)``; ``s`` is their
    mean) or ``"exact"`` (forward-mode autograd through the denoiser). The two evaluations of a
    step are one denoiser call on a doubled batch. ``a = 1, b -> 0`` is the Euler sampler. On CUDA
    the finite differences run in full float32 (:func:`full_float32`). Deterministic: ``generator``
    is accepted for the shared signature and not used.

    The default is ``"central"``: for ``p <= 2``, ``m`` grows like ``1 / (2 t^2)`` as ``t -> 0`` and
    multiplies the derivative's error. On ``degenerate5`` (a = b = p = 1, delta = 1e-3, 40 Karras
    steps) the forward difference leaves |x2| up to 4e2 where central reaches 9e-4 and exact 6e-13
    (examples/mad_toys.py).
    """
    sigmas, gammas, m = _setup(x, sigmas, a, b, p, delta, derivative)
    with full_float32(derivative != "exact" and x.is_cuda):
        for i in trange(len(sigmas) - 1, disable=not progress, desc="mad"):
            t, t_next = sigmas[i], sigmas[i + 1]
            velocity, denoised = _velocity(denoiser, x, t, gammas[i], m[i], b, delta, derivative)
            if callback is not None:
                callback(i, t, x, denoised)
            x = x + (t_next - t) * velocity
    return check_finite_result(x, "mad")


def mad_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    progress: bool = False,
    a: float,
    b: float,
    p: float,
    delta: float = 1e-3,
    derivative: str = "central",
) -> Tensor:
    """MAD's ODE integrated with Heun's second-order predictor-corrector (Karras et al. 2022,
    Algorithm 1, applied to the MAD paper's Algorithm 1): with ``f(x, t) = -m t ((1 + gamma) s +
    b gamma / (2 t) s')``, the update of :func:`mad`, each step takes the Euler predictor
    ``x' = x + (t_next - t) f(x, t)`` and then ``x + (t_next - t) (f(x, t) + f(x', t_next)) / 2``;
    the last step to sigma = 0 stays an Euler step, where ``f`` is not defined. Two drift evaluations
    per step (each one doubled batch for the finite differences, as in :func:`mad`). Same parameters,
    derivative modes and conventions as :func:`mad`; deterministic."""
    sigmas, gammas, m = _setup(x, sigmas, a, b, p, delta, derivative, every_level=True)
    n_levels = len(gammas)
    with full_float32(derivative != "exact" and x.is_cuda):
        for i in trange(len(sigmas) - 1, disable=not progress, desc="mad-heun"):
            t, t_next = sigmas[i], sigmas[i + 1]
            velocity, denoised = _velocity(denoiser, x, t, gammas[i], m[i], b, delta, derivative)
            if callback is not None:
                callback(i, t, x, denoised)
            x_next = x + (t_next - t) * velocity
            if i + 1 < n_levels:
                velocity_next, _ = _velocity(denoiser, x_next, t_next, gammas[i + 1], m[i + 1], b, delta, derivative)
                x_next = x + (t_next - t) * (velocity + velocity_next) / 2
            x = x_next
    return check_finite_result(x, "mad-heun")


def _setup(x: Tensor, sigmas: Tensor | Sequence[float], a: float, b: float, p: float, delta: float,
           derivative: str, *, every_level: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The checked grid, and ``gamma`` and ``m`` at every level a step starts from (with
    ``every_level``, at every positive level, the last one included)."""
    _check_parameters(a, b, p)
    if derivative not in DERIVATIVES:
        raise ValueError(f"derivative must be one of {DERIVATIVES}, got {derivative!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta, the relative sigma step of the finite difference, must lie in (0, 1), got {delta}")
    sigmas = check_sigmas(sigmas, x)
    n_levels = int((sigmas > 0).sum()) if every_level else len(sigmas) - 1
    positive = sigmas[:n_levels].double().cpu()  # m and gamma in float64 on the CPU
    gammas = mad_gamma(positive, a, b, p)
    # 1 + gamma - b gamma / t^2 = gamma + a gamma^(2/p) / t^2 by the definition of gamma: the
    # right side has no cancellation (for p <= 2, b gamma / t^2 -> 1 as t -> 0)
    m = 1 / (gammas + a * gammas ** (2 / p) / positive**2)
    if not bool(torch.isfinite(m).all()):
        i = int(torch.nonzero(~torch.isfinite(m))[0])
        raise ValueError(
            f"m = 1/(1 + gamma - b gamma / t^2) is undefined at step {i} (t = {float(positive[i]):.4g}, "
            f"gamma = {float(gammas[i]):.3g}): choose a smaller b or a larger a"
        )
    return sigmas, gammas.to(dtype=x.dtype, device=x.device), m.to(dtype=x.dtype, device=x.device)


def _velocity(denoiser: Denoiser, x: Tensor, t: Tensor, gamma: Tensor, m: Tensor, b: float, delta: float,
              derivative: str) -> tuple[Tensor, Tensor]:
    """MAD's drift ``dx/dt = -m t ((1 + gamma) s + b gamma / (2 t) s')`` at ``(x, t)`` (eq. 7) and the
    denoised estimate there."""
    s, ds, denoised = _score_and_derivative(denoiser, x, t, delta, derivative)
    return -m * t * ((1 + gamma) * s + (b * gamma / (2 * t)) * ds), denoised


def _score_and_derivative(
    denoiser: Denoiser, x: Tensor, t: Tensor, delta: float, derivative: str
) -> tuple[Tensor, Tensor, Tensor]:
    """``S(t, x)``, ``dS/dsigma (t, x)`` and the denoised estimate at ``t``."""
    B = len(x)
    if derivative == "exact":
        s, ds = score_and_derivative(denoiser, x, t.expand(B))
        return s, ds, x + t**2 * s
    lo, hi = (t, (1 + delta) * t) if derivative == "forward" else ((1 - delta) * t, (1 + delta) * t)
    sig = torch.cat([lo.expand(B), hi.expand(B)])
    both = denoiser(torch.cat([x, x]), sig)
    d_lo, d_hi = both[:B], both[B:]
    s_lo, s_hi = (d_lo - x) / lo**2, (d_hi - x) / hi**2
    if derivative == "forward":
        return s_lo, (s_hi - s_lo) / (delta * t), d_lo
    return (s_lo + s_hi) / 2, (s_hi - s_lo) / (2 * delta * t), (d_lo + d_hi) / 2


def _check_parameters(a: float, b: float, p: float) -> None:
    for name, value in (("a", a), ("b", b), ("p", p)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


__all__ = ["DERIVATIVES", "mad", "mad_gamma", "mad_heun"]
