"""How close images lie to the clean shape manifolds of the noisy-shapes benchmark (MAD paper, Sec. 5.3).

    scores = manifold_scores(samples)    # best correlation with, and distance to, a clean rendering
    summarize(scores)                    # medians over the images

Each shape of :mod:`scorelab.data.shapes`, rotated through all angles, traces a closed curve in
pixel space; :func:`reference_bank` samples those curves on an angle grid and
:func:`manifold_scores` matches every image against the whole bank. Which shape an image shows is
better told by the shape classifier of :mod:`scorelab.metrics.shapes`: the best-matching rendering
misreads eroded shapes (fragments correlate best with the thin L).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor

from scorelab.data.shapes import SHAPES, TWO_PI, as_size, render
from scorelab.errors import DataError

_F64 = torch.float64


class ManifoldScores(TypedDict):
    """Per-image results of :func:`manifold_scores`."""

    correlation: Tensor
    rmse: Tensor
    shape: Tensor
    angle: Tensor


class ManifoldSummary(TypedDict):
    """Medians over the images, from :func:`summarize`."""

    n: int
    median_correlation: float
    mean_correlation: float
    median_rmse: float


@lru_cache(maxsize=4)
def _renderings(size: int, n_angles: int) -> tuple[Tensor, Tensor, Tensor]:
    """The bank of :func:`reference_bank`, cached and shared (callers must not modify it)."""
    angles = torch.arange(n_angles, dtype=_F64) * (TWO_PI / n_angles)
    bank = torch.cat([render(name, angles, size).reshape(n_angles, -1) for name in SHAPES])
    shape_index = torch.arange(len(SHAPES)).repeat_interleave(n_angles)
    return bank, shape_index, angles.repeat(len(SHAPES))


def reference_bank(size: int, n_angles: int = 360) -> tuple[Tensor, Tensor, Tensor]:
    """Every shape at ``n_angles`` equally spaced angles ``2 pi j / n_angles``: renderings
    ``(4 n_angles, size * size)`` float32 (shape-major), their ``shape_index`` and ``angles``
    (float64). A sampled version of the clean manifolds (MAD paper, Sec. 5.3)."""
    bank, shape_index, angles = _renderings(as_size(size), _check_n_angles(n_angles))
    return bank.clone(), shape_index.clone(), angles.clone()


def _check_n_angles(n_angles: int) -> int:
    if isinstance(n_angles, bool) or not isinstance(n_angles, (int, np.integer)) or n_angles < 1:
        raise ValueError(f"n_angles must be an integer >= 1, got {n_angles!r}")
    return int(n_angles)


@dataclass(frozen=True)
class _Reference:
    """The bank prepared for matching: float32 and float64 rows, centred float64 rows with their
    norms, unit-norm centred float32 rows (for the correlation matmul) and squared row norms (for
    the distance matmul), with each row's shape index and angle."""

    bank: Tensor
    bank64: Tensor
    centred: Tensor
    norm: Tensor
    unit: Tensor
    sq: Tensor
    shape: Tensor
    angle: Tensor


@lru_cache(maxsize=4)
def _reference(size: int, n_angles: int) -> _Reference:
    bank, shape, angle = _renderings(size, n_angles)
    bank64 = bank.to(_F64)
    centred = bank64 - bank64.mean(1, keepdim=True)
    norm = centred.norm(dim=1)
    unit = (centred / norm[:, None]).float()
    return _Reference(bank, bank64, centred, norm, unit, (bank64 * bank64).sum(1), shape, angle)


def manifold_scores(images: Tensor, size: int | None = None, n_angles: int = 360, chunk: int = 1024) -> ManifoldScores:
    """How close each image lies to the clean shape manifolds (no picture needed), against
    :func:`reference_bank` ``(size, n_angles)``.

    ``images``: ``(N, 1, size, size)``, ``(N, size, size)`` or, with ``size`` given, ``(N, size * size)``.
    Returns per-image tensors:

    - ``correlation``: best Pearson correlation with any rendering (float32). Pearson ignores an
      intensity offset and a positive scale, so a faint but clean shape still scores ~1; a
      constant image scores 0.
    - ``shape``, ``angle``: shape index and angle of that best-correlated rendering.
    - ``rmse``: root-mean-square distance (in [-1, 1] pixel units) to the nearest rendering.

    A rendering on the angle grid scores 1; off the grid the grid spacing costs a little (see the
    tests for measured values). Computed as float32 matmuls over ``chunk`` images at a time (memory
    ``O(chunk * 4 n_angles)``); each image's winners are rescored in float64."""
    x = _as_batch(images, size)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    n, p = x.shape
    ref = _reference(math.isqrt(p), _check_n_angles(n_angles))
    correlation, rmse = torch.empty(n), torch.empty(n)
    best = torch.empty(n, dtype=torch.long)
    for lo in range(0, n, chunk):
        xc = x[lo : lo + chunk].to(_F64)
        centred = xc - xc.mean(1, keepdim=True)
        norm = centred.norm(dim=1)
        k = ((centred / norm.clamp_min(1e-12)[:, None]).float() @ ref.unit.T).argmax(1)
        corr = (centred * ref.centred[k]).sum(1) / (norm * ref.norm[k])
        correlation[lo : lo + chunk] = corr.nan_to_num_(0.0).float()  # a constant image correlates 0
        best[lo : lo + chunk] = k
        d2 = ref.sq - 2 * (xc.float() @ ref.bank.T).to(_F64)  # |x - r|^2 - |x|^2
        j = d2.argmin(1)
        rmse[lo : lo + chunk] = (xc - ref.bank64[j]).pow_(2).mean(1).sqrt_().float()
    return {"correlation": correlation, "rmse": rmse, "shape": ref.shape[best], "angle": ref.angle[best]}


def _as_batch(images: Tensor, size: int | None) -> Tensor:
    """``images`` as ``(N, size * size)``, checking the layout, dtype and finiteness."""
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise DataError(
            f"images: expected a floating torch.Tensor, got {getattr(images, 'dtype', type(images).__name__)}"
        )
    shape = tuple(images.shape)
    if images.ndim == 4 and shape[1] == 1 and shape[2] == shape[3]:
        side = shape[2]
    elif images.ndim == 3 and shape[1] == shape[2]:
        side = shape[1]
    elif images.ndim == 2 and size is not None and shape[1] == size * size:
        side = size
    else:
        raise DataError(f"images: expected (N, 1, S, S), (N, S, S) or (N, size * size) with size given, got {shape}")
    if size is not None and side != size:
        raise DataError(f"images are {side}x{side} but size={size}")
    as_size(side)
    if not bool(torch.isfinite(images).all()):
        raise DataError("images: contain NaN or infinite values")
    return images.detach().reshape(shape[0], side * side).cpu()


def summarize(scores: ManifoldScores) -> ManifoldSummary:
    """Median and mean best correlation and median RMSE over the images of :func:`manifold_scores`."""
    corr = scores["correlation"].double()
    n = len(corr)
    if n == 0:
        raise ValueError("summarize: no scores (0 images)")
    return {
        "n": n,
        "median_correlation": float(np.median(corr.numpy())),
        "mean_correlation": float(corr.mean()),
        "median_rmse": float(np.median(scores["rmse"].double().numpy())),
    }
