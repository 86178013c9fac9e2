"""Figures a person looks at: 2-D scatter over a density, image grids, curves.

Uses matplotlib's object-oriented API (no pyplot global state, no display needed); imported
only where a figure is drawn, so ``import scorelab`` stays free of plotting packages."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (parent folders created, atomically), trimmed to its content."""
    from .checkpoint import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix[1:] or "png"))
    return path


def scatter_2d(samples: Tensor, path: str | Path, *, log_prob: Callable[[Tensor], Tensor] | None = None,
               reference: Tensor | None = None, title: str = "", max_points: int = 5000) -> Path:
    """Samples as points over the true density (filled contours of exp(log_prob)) and, if given,
    reference samples side by side."""
    panels = {"samples": samples} | ({"reference": reference} if reference is not None else {})
    return scatter_panels(panels, path, log_prob=log_prob, title=title, max_points=max_points)


def scatter_panels(panels: dict[str, Tensor], path: str | Path, *, log_prob: Callable[[Tensor], Tensor] | None = None,
                   trajectories: dict[str, Tensor] | None = None, title: str = "", max_points: int = 5000,
                   limits: tuple[tuple[float, float], tuple[float, float]] | None = None) -> Path:
    """One panel per entry of ``panels`` (name -> (N, 2) points, red), on one common box, over the
    density ``exp(log_prob)`` (blue contours) and, per panel, ``trajectories[name]`` ``(T, M, 2)``
    (M paths of T states, thin grey lines)."""
    fig = Figure(figsize=(5 * len(panels), 5))
    if limits is None:
        pts = torch.cat([p.reshape(-1, 2) for p in panels.values()]).double()
        lo, hi = (pts.quantile(0.001, dim=0) - 2).tolist(), (pts.quantile(0.999, dim=0) + 2).tolist()
    else:
        (lo0, hi0), (lo1, hi1) = limits
        lo, hi = [lo0, lo1], [hi0, hi1]
    density = None
    if log_prob is not None:
        gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], 200, dtype=torch.float64),
                                torch.linspace(lo[1], hi[1], 200, dtype=torch.float64), indexing="xy")
        with torch.no_grad():
            grid = torch.stack([gx.flatten(), gy.flatten()], 1).to(next(iter(panels.values())).dtype)
            density = log_prob(grid).double().exp().reshape(gx.shape).numpy()
    for j, (name, x) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), j + 1)
        if density is not None:
            ax.contourf(gx.numpy(), gy.numpy(), density, levels=20, cmap="Blues")
        if trajectories is not None and name in trajectories:
            path_xy = trajectories[name].double().numpy()
            ax.plot(path_xy[..., 0], path_xy[..., 1], color="0.4", lw=0.5, alpha=0.6)
        points = x[:max_points].double().numpy()
        ax.scatter(points[:, 0], points[:, 1], s=2, c="tab:red", alpha=0.5, linewidths=0)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), aspect="equal", title=f"{title} {name}".strip())
    return save_figure(fig, path)


def image_grid(images: Tensor, path: str | Path, *, nrow: int | None = None, title: str = "",
               row_labels: Sequence[str] | None = None, per_image: bool = False) -> Path:
    """A grid of images in [-1, 1], (N, C, H, W), C = 1 (gray) or 3 (RGB), ``nrow`` to a row.
    ``row_labels``: one label left of each row. ``per_image``: each image's own min..max mapped to
    the full gray range (as cryo-EM figures show particles) instead of [-1, 1]."""
    t = images.detach().float().cpu()
    if per_image:
        lo, hi = t.amin(dim=(1, 2, 3), keepdim=True), t.amax(dim=(1, 2, 3), keepdim=True)
        t = (t - lo) / (hi - lo).clamp_min(1e-12) * 2 - 1
    x = ((t.clamp(-1, 1) + 1) / 2).numpy()
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    if row_labels is not None and len(row_labels) != ncol:
        raise ValueError(f"row_labels: {ncol} rows need {ncol} labels, got {len(row_labels)}")
    grid = np.ones((ncol * (h + 1) + 1, nrow * (w + 1) + 1, c))
    for k in range(n):
        r, q = divmod(k, nrow)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = x[k].transpose(1, 2, 0)
    margin = 2.0 if row_labels else 0.0
    fig = Figure(figsize=(max(3.0, nrow * w / 16) + margin, max(3.0, ncol * h / 16) + (0.4 if title else 0)))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    for r, label in enumerate(row_labels or []):
        ax.text(-0.5, 1 + r * (h + 1) + h / 2, label, ha="right", va="center", fontsize=9)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
