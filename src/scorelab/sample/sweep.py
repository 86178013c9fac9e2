"""Sweeps over a sampler's parameters from the same seeds: every point of a grid of settings beside a
baseline sampler, so that a difference between two rows is the settings' alone."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from ..denoiser import Denoiser
from .generate import generate


def parse_grid(spec: str, keys: Sequence[str]) -> list[dict[str, float]]:
    """``'a=1,2;b=5,10'`` -> every combination, ``[{'a': 1, 'b': 5}, {'a': 1, 'b': 10}, ...]``; only
    ``keys`` may be swept."""
    axes: dict[str, list[float]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or key not in keys:
            raise ValueError(f"grid parts look like {keys[0]}=1,2 (keys {', '.join(keys)}), got {part!r}")
        try:
            axes[key] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"grid values must be numbers, got {part!r}") from None
        if not axes[key]:
            raise ValueError(f"grid {key} has no values")
    if not axes:
        raise ValueError(f"the grid is empty: {spec!r}")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def point_label(point: dict[str, float]) -> str:
    """``{'a': 1.0, 'b': 5.0}`` -> ``'a=1, b=5'``."""
    return ", ".join(f"{k}={v:g}" for k, v in point.items())


def sweep(denoiser: Denoiser, shape: Sequence[int], seeds: Sequence[int], points: Sequence[dict[str, float]], *,
          sampler: str, baseline: str = "heun", params: dict[str, Any] | None = None,
          transform: Callable[[Tensor], Tensor] | None = None, **settings: Any) -> dict[str, Tensor]:
    """Samples of ``seeds`` from ``baseline`` (its default settings), then from ``sampler`` at every grid
    point (``params`` updated by the point), keyed ``baseline`` and :func:`point_label`. ``settings`` go
    to :func:`~scorelab.sample.generate.generate` for every row (grid, batch size, device, ...)."""
    rows = {baseline: generate(denoiser, shape, seeds, sampler=baseline, transform=transform, **settings)[0]}
    for point in points:
        rows[point_label(point)] = generate(denoiser, shape, seeds, sampler=sampler, transform=transform,
                                            **settings, **(dict(params or {}) | point))[0]
    return rows


__all__ = ["parse_grid", "point_label", "sweep"]
