"""The early-stop baseline to MAD: the PF-ODE down to a noise level, then the denoiser's estimate there."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..denoiser import Denoiser
from .common import Callback, Generators, check_finite_result, check_setting, check_sigmas
from .ode import heun


def early_stop(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *, generator: Generators = None,
               callback: Callback | None = None, progress: bool = False, sigma_stop: float,
               from_end: bool = False) -> Tensor:
    """What a user tries before MAD on a model trained on noisy data: Heun's steps (Karras et al. 2022,
    Algorithm 1) on the levels of ``sigmas`` above ``sigma_stop``, then to ``sigma_stop``, and the
    denoiser's estimate ``D(x, sigma_stop)``: the model's posterior mean at that noise level (the
    data's own, if the data's noise is Gaussian of that size). One evaluation more than the Heun
    steps: ``2 k + 1`` for ``k`` levels above ``sigma_stop``.

    With ``from_end`` Heun walks the whole grid instead and the estimate ``D(x_end, sigma_stop)`` is
    taken of its final sample. Deterministic: ``generator`` is accepted for the shared signature."""
    sigmas = check_sigmas(sigmas, x)
    sigma_stop = check_setting("sigma_stop", sigma_stop)
    if not 0 < sigma_stop < float(sigmas[0]):
        raise ValueError(f"sigma_stop must lie in (0, sigmas[0] = {float(sigmas[0]):.4g}), got {sigma_stop}")
    if from_end:
        path = sigmas
    else:
        above = sigmas[sigmas > sigma_stop]
        path = torch.cat([above, above.new_full((1,), sigma_stop)])
    x = heun(denoiser, x, path, callback=callback, progress=progress)
    stop = torch.as_tensor(sigma_stop, dtype=x.dtype, device=x.device)
    denoised = denoiser(x, stop.expand(len(x)))
    if callback is not None:
        callback(len(path) - 1, stop, x, denoised)
    return check_finite_result(denoised, "early-stop")


__all__ = ["early_stop"]
