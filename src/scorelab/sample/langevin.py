"""Langevin and annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; the denoising-score-matching
report, Sec. 6.1 and 6.5), driven by a denoiser through its score ``(D(x, sigma) - x) / sigma^2``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import Denoiser, score
from .common import Generators, randn
from .ode import Callback


def langevin(denoiser: Denoiser, x: Tensor, sigma: float, eps: float, steps: int, generator: Generators = None, *,
             callback: Callback | None = None, progress: bool = False) -> Tensor:
    """``steps`` updates ``x <- x + (eps / 2) s(x, sigma) + sqrt(eps) z`` with ``z ~ N(0, I)`` from
    ``generator`` (one, or one per sample). Its stationary law is the sigma-noised data
    distribution as ``eps -> 0``."""
    return annealed_langevin(denoiser, x, [sigma], eps, steps, generator, step_scale="constant", callback=callback,
                             progress=progress)


def annealed_langevin(denoiser: Denoiser, x: Tensor, levels: Tensor | Sequence[float], eps: float,
                      steps_per_level: int, generator: Generators = None, *, denoise_last: bool = False,
                      step_scale: str = "ncsn", callback: Callback | None = None, progress: bool = False) -> Tensor:
    """Annealed Langevin dynamics over decreasing ``levels`` ``sigma_1 > ... > sigma_L``: at level i,
    ``steps_per_level`` Langevin steps of size ``alpha_i = eps sigma_i^2 / sigma_L^2`` (Song & Ermon
    2019, Algorithm 1; ``step_scale="constant"`` uses ``alpha_i = eps``). With ``denoise_last`` a
    final ``x <- D(x, sigma_L)`` removes the last level's noise (Tweedie; Jolicoeur-Martineau
    et al. 2021). ``callback(i, sigma, x, denoised)`` sees every step, with ``i`` counting steps."""
    levels = torch.as_tensor(levels, dtype=torch.float64)
    if levels.ndim != 1 or len(levels) == 0 or not bool((levels > 0).all()) or not bool(torch.isfinite(levels).all()):
        raise ValueError("levels must be a non-empty 1-D sequence of finite values > 0")
    if len(levels) > 1 and not bool((levels[1:] < levels[:-1]).all()):
        raise ValueError("levels must be strictly decreasing (sigma_1 > ... > sigma_L)")
    if not eps > 0 or steps_per_level < 1:
        raise ValueError(f"need eps > 0 and steps_per_level >= 1, got eps={eps}, steps_per_level={steps_per_level}")
    if step_scale not in ("ncsn", "constant"):
        raise ValueError(f"step_scale must be 'ncsn' or 'constant', got {step_scale!r}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    sigma_L = float(levels[-1])
    bar = tqdm(total=len(levels) * steps_per_level, disable=not progress, desc="langevin")
    i = 0
    for sigma in levels.tolist():
        alpha = eps * (sigma / sigma_L) ** 2 if step_scale == "ncsn" else eps
        sigma_t = torch.full((len(x),), sigma, dtype=x.dtype, device=x.device)
        for _ in range(steps_per_level):
            s = score(denoiser, x, sigma_t)
            if callback is not None:
                callback(i, sigma_t[0], x, x + sigma**2 * s)
            x = x + (alpha / 2) * s + alpha**0.5 * randn(x.shape, generator, dtype=x.dtype, device=x.device)
            i += 1
            bar.update(1)
    bar.close()
    if denoise_last:
        x = denoiser(x, torch.full((len(x),), sigma_L, dtype=x.dtype, device=x.device))
    return x


__all__ = ["annealed_langevin", "langevin"]
