"""Langevin and annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; the denoising-score-matching
report, Sec. 6.1 and 6.5), driven by a denoiser through its score ``(D(x, sigma) - x) / sigma^2``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..denoiser import Denoiser, score
from .common import Callback, Generators, check_finite_result, check_setting, check_sigmas, randn

STEP_SCALES = ("ncsn", "constant")


def annealed_langevin(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *,
                      generator: Generators = None, callback: Callback | None = None, progress: bool = False,
                      eps: float = 2e-5, steps_per_level: int = 100, step_scale: str = "ncsn") -> Tensor:
    """Annealed Langevin dynamics over the decreasing levels ``sigmas`` = ``sigma_1 > ... > sigma_L``:
    at level i, ``steps_per_level`` updates ``x <- x + (alpha_i / 2) s(x, sigma_i) + sqrt(alpha_i) z``
    with ``alpha_i = eps sigma_i^2 / sigma_L^2`` (Song & Ermon 2019, Algorithm 1; ``step_scale="constant"``
    uses ``alpha_i = eps``) and ``z ~ N(0, I)`` from ``generator`` (one, or one per sample).

    A trailing 0 in ``sigmas`` (as in the ODE grids) ends with the step to sigma = 0, the denoiser's
    estimate ``x <- D(x, sigma_L)`` (Tweedie's formula; the final denoising of Jolicoeur-Martineau et al.
    2021), which removes the last level's noise. NFE: ``L * steps_per_level``, plus one for the trailing 0.
    ``callback(i, sigma, x, denoised)`` sees every Langevin step, ``i`` counting steps."""
    in_dtype = check_sigmas(sigmas, x, min_len=1)  # the levels the denoiser sees, in x's dtype
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)  # the step sizes from the levels in float64
    if check_setting("eps", eps) == 0 or isinstance(steps_per_level, bool) or not isinstance(steps_per_level, int) \
            or steps_per_level < 1:
        raise ValueError(f"need eps > 0 and steps_per_level >= 1, got eps={eps}, steps_per_level={steps_per_level}")
    if step_scale not in STEP_SCALES:
        raise ValueError(f"step_scale must be one of {', '.join(STEP_SCALES)}, got {step_scale!r}")
    levels = [s for s in sigmas.tolist() if s > 0]
    if not levels:
        raise ValueError("sigmas must hold at least one noise level > 0")
    sigma_L = levels[-1]
    bar = tqdm(total=len(levels) * steps_per_level, disable=not progress, desc="langevin")
    i = 0
    for k, sigma in enumerate(levels):
        alpha = eps * (sigma / sigma_L) ** 2 if step_scale == "ncsn" else eps
        sigma_t = in_dtype[k].expand(len(x))
        for _ in range(steps_per_level):
            s = score(denoiser, x, sigma_t)
            if callback is not None:
                callback(i, sigma_t[0], x, x + sigma**2 * s)
            x = x + (alpha / 2) * s + alpha**0.5 * randn(x.shape, generator, dtype=x.dtype, device=x.device)
            i += 1
            bar.update(1)
    bar.close()
    if float(sigmas[-1]) == 0:
        x = denoiser(x, in_dtype[len(levels) - 1].expand(len(x)))
    return check_finite_result(x, "annealed-langevin")


def langevin(denoiser: Denoiser, x: Tensor, sigma: float, *, eps: float, steps: int, generator: Generators = None,
             callback: Callback | None = None, progress: bool = False) -> Tensor:
    """Langevin dynamics at one noise level: ``steps`` updates ``x <- x + (eps / 2) s(x, sigma) + sqrt(eps) z``.
    Its stationary law is the sigma-noised data distribution as ``eps -> 0``. Not a grid sampler: it
    samples the noised distribution at a fixed sigma, with :func:`annealed_langevin`'s step."""
    return annealed_langevin(denoiser, x, [sigma], generator=generator, callback=callback, progress=progress,
                             eps=eps, steps_per_level=steps, step_scale="constant")


__all__ = ["STEP_SCALES", "annealed_langevin", "langevin"]
