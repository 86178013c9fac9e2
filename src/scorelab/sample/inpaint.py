"""Inpainting by replacement: the known part of the image is re-noised to the current level at every
step, so the sampler only fills in the rest (Song & Ermon 2019, Sec. 5 and App. B.3; the denoising
score matching report, Sec. 7). Two drivers: annealed Langevin dynamics and Heun's PF-ODE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .common import Generators, check_sigmas, randn
from .langevin import langevin
from .ode import heun


def _check(image: Tensor, mask: Tensor) -> Tensor:
    if mask.shape != image.shape[-mask.ndim:] and mask.shape != image.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(image.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold 0 (unknown) and 1 (known) only")
    return mask.to(dtype=image.dtype, device=image.device).expand_as(image)


def inpaint_langevin(denoiser: Denoiser, image: Tensor, mask: Tensor, levels: Tensor | Sequence[float], eps: float,
                     steps_per_level: int, generator: Generators = None, *, denoise_last: bool = True) -> Tensor:
    """Annealed Langevin dynamics (alpha_i = eps sigma_i^2 / sigma_L^2) in which, before every step,
    the known pixels (``mask == 1``) are set to ``image + sigma_i z``. The unknown pixels start from
    ``N(0, sigma_1^2)``; at the end the known pixels are exactly ``image``."""
    m = _check(image, mask)
    levels = torch.as_tensor(levels, dtype=torch.float64)
    if levels.ndim != 1 or len(levels) == 0 or not bool((levels > 0).all()):
        raise ValueError("levels must be a non-empty 1-D sequence of values > 0")
    if not eps > 0 or steps_per_level < 1:
        raise ValueError("need eps > 0 and steps_per_level >= 1")
    sigma_L = float(levels[-1])
    x = float(levels[0]) * randn(image.shape, generator, dtype=image.dtype, device=image.device)
    for sigma in levels.tolist():
        alpha = eps * (sigma / sigma_L) ** 2
        for _ in range(steps_per_level):
            known = image + sigma * randn(image.shape, generator, dtype=image.dtype, device=image.device)
            x = langevin(denoiser, m * known + (1 - m) * x, sigma, alpha, 1, generator)
    if denoise_last:
        x = denoiser(m * image + (1 - m) * x, torch.full((len(x),), sigma_L, dtype=x.dtype, device=x.device))
    return m * image + (1 - m) * x


def inpaint_heun(denoiser: Denoiser, image: Tensor, mask: Tensor, sigmas: Tensor | Sequence[float],
                 generator: Generators = None) -> Tensor:
    """Heun's PF-ODE on the grid ``sigmas`` with the known pixels set to ``image + sigma_i z`` (fresh
    ``z`` per step) before each step; the final sample keeps ``image`` where ``mask == 1``."""
    m = _check(image, mask)
    sigmas = check_sigmas(sigmas, image)
    x = sigmas[0] * randn(image.shape, generator, dtype=image.dtype, device=image.device)
    for i in range(len(sigmas) - 1):
        known = image + sigmas[i] * randn(image.shape, generator, dtype=image.dtype, device=image.device)
        x = heun(denoiser, m * known + (1 - m) * x, sigmas[i : i + 2])  # one Heun step
    return m * image + (1 - m) * x


def side_mask(shape: Sequence[int], side: str) -> Tensor:
    """A mask ``(C, H, W)`` hiding one half of the image: ``side`` is the *unknown* half, one of
    top, bottom, left, right (the reports' four inpainting experiments)."""
    c, h, w = shape
    mask = torch.ones(c, h, w)
    every = slice(None)
    halves = {"top": (every, slice(0, h // 2), every), "bottom": (every, slice(h // 2, h), every),
              "left": (every, every, slice(0, w // 2)), "right": (every, every, slice(w // 2, w))}
    if side not in halves:
        raise ValueError(f"side must be one of {', '.join(halves)}, got {side!r}")
    mask[halves[side]] = 0
    return mask


INPAINTERS = {"annealed-langevin": inpaint_langevin, "heun": inpaint_heun}


def inpaint(denoiser: Denoiser, image: Tensor, mask: Tensor, *, sampler: str = "annealed-langevin",
            **options: Any) -> Tensor:
    """Fill in the pixels of ``image`` where ``mask == 0`` with ``sampler``: ``"annealed-langevin"``
    (options of :func:`inpaint_langevin`: ``levels``, ``eps``, ``steps_per_level``, ``generator``,
    ``denoise_last``) or ``"heun"`` (:func:`inpaint_heun`: ``sigmas``, ``generator``)."""
    if sampler not in INPAINTERS:
        raise ValueError(f"unknown inpainting sampler {sampler!r}; choose one of {', '.join(INPAINTERS)}")
    return INPAINTERS[sampler](denoiser, image, mask, **options)


__all__ = ["INPAINTERS", "inpaint", "inpaint_heun", "inpaint_langevin", "side_mask"]
