"""Pieces every sampler shares: the sampler signature, grid and start checks, per-sample seeded
noise, NFE counting, and full-float32 matmuls for finite differences on CUDA."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..errors import SamplingError

Generators = torch.Generator | Sequence[torch.Generator] | None
Callback = Callable[[int, Tensor, Tensor, Tensor], None]
"""``callback(i, sigma, x, denoised)``: step ``i``, its noise level, the state and the denoiser's estimate."""


Sampler = Callable[..., Tensor]
"""Every sampler has one signature (k-diffusion's)::

    x = sampler(denoiser, x, sigmas, *, generator=None, callback=None, progress=False, **params)

``x`` starts at ``sigmas[0]``; a trailing 0 in ``sigmas`` ends at the clean sample; ``generator`` (one,
or one per sample) drives any noise the sampler draws; ``params`` are its own settings, keyword-only."""


def check_sigmas(sigmas: Tensor | Sequence[float], x: Tensor, *, min_len: int = 2) -> Tensor:
    """The grid as a 1-D tensor in x's dtype/device; it must hold at least ``min_len`` values, be
    finite and strictly decreasing, positive except possibly for a trailing 0. ``x``, the state the
    sampler starts from, must be a finite floating-point tensor."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or len(sigmas) < min_len:
        raise ValueError(f"sigmas must be a 1-D sequence of at least {min_len} values, got shape "
                         f"{tuple(sigmas.shape)}")
    if not bool(torch.isfinite(sigmas).all()):
        raise ValueError("sigmas must be finite")
    if not bool((sigmas[:-1] > 0).all()) or float(sigmas[-1]) < 0:
        raise ValueError("sigmas must be positive (only the last may be 0)")
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be strictly decreasing")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"x must hold a batch of at least one sample, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"the starting state x holds {int((~torch.isfinite(x)).sum())} non-finite values")
    cast = sigmas.to(dtype=x.dtype, device=x.device)
    if not bool(torch.isfinite(cast).all()) or not bool((cast[:-1] > 0).all()):
        raise ValueError(f"sigmas {float(sigmas.max()):.4g} .. {float(sigmas[sigmas > 0].min()):.4g} leave the range "
                         f"of {x.dtype}: sample in float64 or choose another grid")
    return cast


def check_setting(name: str, value: float, *, low: float = 0.0, allow_inf: bool = False) -> float:
    """A sampler's numeric setting: a real number >= ``low`` and finite (unless ``allow_inf``); a
    clear error otherwise, so a NaN or infinite setting never turns into NaN samples."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or value < low:
        raise ValueError(f"{name} must be a number >= {low:g}, got {value!r}")
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_finite_result(x: Tensor, sampler: str) -> Tensor:
    """``x`` if it is finite; a :class:`~scorelab.errors.SamplingError` naming ``sampler`` otherwise."""
    if not bool(torch.isfinite(x).all()):
        raise SamplingError(f"the {sampler} sampler produced {int((~torch.isfinite(x)).sum())} non-finite values; "
                            "check the model and the sigma range")
    return x


def generators_for_seeds(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, so that a sample depends only on its own seed."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def randn(shape: Sequence[int], generator: Generators = None, *, dtype: torch.dtype = torch.float32,
          device: torch.device | str = "cpu") -> Tensor:
    """Standard normal noise of ``shape``. With a list of generators, row ``i`` is drawn from
    ``generator[i]`` alone (drawn on the generator's device, then moved)."""
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generator]
    return torch.stack(rows).to(device)


def noise_for_seeds(seeds: Sequence[int], shape: Sequence[int], *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> tuple[Tensor, list[torch.Generator]]:
    """Initial unit noise (len(seeds), *shape) and the per-sample generators, advanced past it,
    for the sampler's later draws (churn, Langevin)."""
    generators = generators_for_seeds(seeds)
    return randn((len(seeds), *shape), generators, dtype=dtype, device=device), generators


class CountNFE:
    """Wraps a denoiser and counts its evaluations: ``calls`` (batched calls) and ``rows``
    (sample evaluations); ``rows / batch`` is the usual NFE per sample."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self.calls = 0
        self.rows = 0

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.denoiser(x, sigma)

    def nfe(self, batch: int) -> float:
        return self.rows / batch


@contextmanager
def full_float32(enabled: bool = True) -> Iterator[None]:
    """Turn off TF32 (10-bit mantissa) in CUDA convolutions and matmuls: a finite difference of two
    network outputs divided by a small step (MAD's sigma-derivative) would be swamped by TF32 rounding."""
    if not enabled:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
