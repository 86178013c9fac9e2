"""MAD's (a, b) chosen from the data's noise level instead of a grid search.

MAD thresholds variance (MAD paper, Sec. 3-4): directions whose variance is small are treated as
Diracs and collapsed, large ones are kept. For a Gaussian direction of variance ``v`` with the
exact denoiser the update of :func:`~scorelab.sample.mad.mad` is linear,
``x_{i+1} = mu_i(v) x_i``, so what MAD does to that direction on a given grid is the product of the
step factors, in closed form (:func:`gaussian_response`). The rule (:func:`auto_parameters`) picks,
for the noise variance of the data, the ``(a, b)`` whose response cuts a direction at the noise
level to ``kill`` of its standard-inference size while keeping the sharpest threshold (the
smallest variance that keeps ``keep`` of its size), among the pairs that amplify or mirror no
direction the noisy data can have (:func:`faithful`).

What it assumes, and where it may fail: the noise is additive, of one variance in every direction
(white), well below the variance of the directions that carry the signal; the data is locally
Gaussian along its directions (the response is exact for a Gaussian and a heuristic for a
manifold); the network's denoiser is close to the exact one. Structured corruption (the shapes'
blots) has no single variance and is not what the rule aims at.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..denoiser import Denoiser
from .mad import _check_parameters, mad_gamma

A_RANGE = (1e-4, 1e2)  # the a and b values the rule searches, log-spaced
B_RANGE = (1e-3, 1e4)
VARIANCES = torch.logspace(0, 8, 161, dtype=torch.float64)  # multiples of the noise variance the response is checked at


def gaussian_response(v: Tensor | Sequence[float] | float, sigmas: Tensor | Sequence[float], a: float, b: float,
                      p: float) -> Tensor:
    """The factor by which :func:`~scorelab.sample.mad.mad` (exact derivative) scales a direction of
    variance ``v > 0`` of a Gaussian on the grid ``sigmas`` (ending at 0), relative to the exact
    PF-ODE, which maps that direction's start to ``sqrt(v / (v + sigmas[0]^2))`` of its size:
    1 leaves it as standard inference does, 0 collapses it.

    With the exact score ``S = -x / (v + t^2)`` and ``dS/dsigma = 2 t x / (v + t^2)^2``, the update
    ``x - m (t' - t) t ((1 + gamma) S + b gamma / (2 t) dS/dsigma)`` is ``mu x`` with
    ``mu = 1 - (h / t) w (1 + K (1 - w))``, ``h = t - t'``, ``w = t^2 / (v + t^2)`` and
    ``K = m b gamma / t^2 = b gamma / (gamma t^2 + a gamma^(2/p))``. For ``v = 0`` (a Dirac) ``mu = t' / t``,
    the standard step. Float64 throughout."""
    _check_parameters(a, b, p)
    v = torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1)
    t, h, K = _grid_terms(sigmas, a, b, p)
    w = t**2 / (v + t**2)
    mu = 1 - (h / t) * w * (1 + K * (1 - w))
    standard = torch.sqrt(v[:, 0] / (v[:, 0] + t[0] ** 2))
    return mu.prod(dim=1) / standard


def _grid_terms(sigmas: Tensor | Sequence[float], a: float, b: float, p: float) -> tuple[Tensor, Tensor, Tensor]:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0 or not bool((sigmas[:-1] > 0).all()):
        raise ValueError("sigmas must be a decreasing grid of positive levels ending at 0")
    t = sigmas[:-1]
    h = t - sigmas[1:]
    gamma = mad_gamma(t, a, b, p)
    K = b * gamma / (gamma * t**2 + a * gamma ** (2 / p))
    return t, h, K


def faithful(noise_var: float, sigmas: Tensor | Sequence[float], a: float, b: float, p: float) -> bool:
    """Whether MAD with these parameters neither amplifies nor mirrors any direction the noisy data can
    have: the response lies in [0, 1] for every variance from ``noise_var`` up (white noise of that
    variance puts at least that much in every direction). Where it fails, some steps over-shoot: a
    too-small ``a`` with a large ``b`` makes directions near the noise level grow by orders of
    magnitude, the saturated samples of a bad grid point."""
    return _in_unit_range(gaussian_response(noise_var * VARIANCES, sigmas, a, b, p))


def _in_unit_range(response: Tensor) -> bool:
    return bool((response >= 0).all() and (response <= 1 + 1e-9).all())


def noise_variance(images: Tensor) -> float:
    """The variance of white noise in a stack of images ``(N, C, H, W)``, from their finest spatial
    frequencies: the diagonal Haar detail ``(x00 - x01 - x10 + x11) / 2`` of each 2x2 block has the
    noise's variance and almost none of a smooth image's, and its median absolute value over 0.6745
    is a robust estimate of the noise's standard deviation (Donoho & Johnstone 1994, "Ideal spatial
    adaptation by wavelet shrinkage", Sec. 1.4). Edges bias it slightly upward."""
    if images.ndim != 4 or images.shape[-1] < 2 or images.shape[-2] < 2:
        raise ValueError(f"noise_variance needs images (N, C, H, W) of side >= 2, got shape {tuple(images.shape)}")
    x = images.double()
    H, W = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :H, :W]
    hh = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return float((hh.abs().median() / 0.6745) ** 2)


def model_noise_variance(denoiser: Denoiser, shape: Sequence[int],
                         sigmas: Tensor | Sequence[float], n: int = 64, device: torch.device | str = "cpu") -> float:
    """:func:`noise_variance` of ``n`` Heun samples (seeds ``0 .. n-1``) of a model: trained on noisy
    data, standard inference reproduces the data's noise (MAD paper, Sec. 5.3), so this estimates the
    training data's noise from the model alone."""
    from .generate import generate

    if len(shape) != 3:
        raise ValueError(f"the noise level is estimated on images (C, H, W); this model's examples are {tuple(shape)}")
    samples, _ = generate(denoiser, tuple(shape), range(n), sigmas=sigmas, batch_size=n, device=device)
    return noise_variance(samples.cpu())


def auto_parameters(noise_var: float, sigmas: Tensor | Sequence[float], p: float, *, kill: float = 0.1,
                    keep: float = 0.9) -> tuple[float, float]:
    """``(a, b)`` for MAD with this ``p`` on this grid, chosen from the data's noise variance (module
    docstring). Over log-spaced ``a`` in :data:`A_RANGE` and ``b`` in :data:`B_RANGE` (the response
    is closed-form, so this costs no sampling): the pairs that are :func:`faithful` and cut a
    direction at the noise level to at most ``kill`` of its size; of those, the one whose response
    stays at or above ``keep`` from the smallest variance on (the sharpest threshold), ties to the
    smaller ``b`` (the weaker MAD). ``kill = 0.1`` leaves a tenth of the noise's standard deviation,
    ``keep = 0.9`` asks nine tenths of a direction's size."""
    if not (np.isfinite(noise_var) and noise_var > 0):
        raise ValueError(f"the noise variance must be a finite number > 0, got {noise_var!r}")
    if not 0 < kill < keep < 1:
        raise ValueError(f"need 0 < kill < keep < 1, got kill={kill}, keep={keep}")
    _check_parameters(1.0, 1.0, p)
    v = noise_var * VARIANCES
    best: tuple[float, float, float] | None = None
    for a in np.geomspace(*A_RANGE, 31):
        for b in np.geomspace(*B_RANGE, 57):
            try:
                r = gaussian_response(v, sigmas, float(a), float(b), p)
            except ValueError:  # gamma out of float64 range for this pair
                continue
            if not _in_unit_range(r) or r[0] > kill:
                continue
            below = torch.nonzero(r < keep)
            if len(below) == len(v) or int(below[-1]) == len(v) - 1:
                continue  # never keeps: too strong
            v_keep = float(v[int(below[-1]) + 1])
            if best is None or v_keep < best[2]:
                best = (float(a), float(b), v_keep)
    if best is None:
        raise ValueError(f"no (a, b) cuts the noise variance {noise_var:.3g} to {kill} and keeps the response to "
                         f"every larger variance in [0, 1] on this grid of {len(torch.as_tensor(sigmas)) - 1} "
                         "steps: use more steps or a larger kill")
    return best[0], best[1]


__all__ = ["auto_parameters", "faithful", "gaussian_response", "model_noise_variance", "noise_variance"]
