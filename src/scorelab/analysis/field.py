"""The score on the plane through three images, for several denoisers side by side
(Gaussian-score paper, Figure 11)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..denoiser import Denoiser, score


@dataclass
class ScoreField:
    """``u``, ``v`` ``(G,)`` plane coordinates; per denoiser the score projected on the plane
    ``(G, G, 2)`` and the norm of the full score ``(G, G)`` (rows follow ``v``, columns ``u``);
    ``anchors`` ``(3, 2)``, the three images' coordinates."""

    sigma: float
    u: Tensor
    v: Tensor
    projected: dict[str, Tensor]
    norm: dict[str, Tensor]
    anchors: Tensor


def plane_basis(anchors: Tensor) -> tuple[Tensor, Tensor]:
    """The centroid of three images ``(3, *shape)`` and an orthonormal basis ``(2, D)`` of the
    plane through them (Gram-Schmidt on ``a1 - a0`` and ``a2 - a0``)."""
    if anchors.ndim < 2 or anchors.shape[0] != 3:
        raise ValueError(f"anchors must be three images (3, *shape), got {tuple(anchors.shape)}")
    a = anchors.flatten(1).double()
    e1 = a[1] - a[0]
    e2 = a[2] - a[0]
    if float(e1.norm()) == 0:
        raise ValueError("the anchors must be three distinct images")
    e1 = e1 / e1.norm()
    e2 = e2 - (e2 @ e1) * e1
    if float(e2.norm()) <= 1e-9 * float(a.norm()):
        raise ValueError("the three anchors lie on one line: they span no plane")
    return a.mean(0), torch.stack([e1, e2 / e2.norm()])


@torch.no_grad()
def score_field_plane(denoisers: Mapping[str, Denoiser], anchors: Tensor, sigma: float, grid: int = 25,
                      margin: float = 0.3, batch_size: int = 1024) -> ScoreField:
    """Evaluate each denoiser's score ``(D(x, sigma) - x) / sigma^2`` on a ``grid x grid`` lattice of
    the plane through ``anchors``, spanning the anchors plus ``margin`` of their extent on each side."""
    if grid < 2 or not sigma > 0:
        raise ValueError("need grid >= 2 and sigma > 0")
    origin, basis = plane_basis(anchors)
    coords = (anchors.flatten(1).double() - origin) @ basis.T
    lo, hi = coords.min(0).values, coords.max(0).values
    pad = margin * (hi - lo).max()
    u = torch.linspace(float(lo[0] - pad), float(hi[0] + pad), grid, dtype=torch.float64)
    v = torch.linspace(float(lo[1] - pad), float(hi[1] + pad), grid, dtype=torch.float64)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    points = origin + uu.reshape(-1, 1) * basis[0] + vv.reshape(-1, 1) * basis[1]
    x = points.to(anchors.dtype).reshape(-1, *anchors.shape[1:]).to(anchors.device)
    projected, norms = {}, {}
    for name, denoiser in denoisers.items():
        s = torch.cat([score(denoiser, x[i:i + batch_size], sigma) for i in range(0, len(x), batch_size)])
        s = s.flatten(1).double().cpu()
        projected[name] = (s @ basis.T).reshape(grid, grid, 2)
        norms[name] = s.norm(dim=1).reshape(grid, grid)
    return ScoreField(float(sigma), u, v, projected, norms, coords)


def plot_score_field(field: ScoreField, path: str | Path, title: str = "") -> Path:
    """One panel per denoiser: a heat map of |score| with the projected score as arrows and the
    three anchors marked."""
    from matplotlib.figure import Figure

    from ..viz import save_figure

    names = list(field.projected)
    fig = Figure(figsize=(4.2 * len(names), 4.0), layout="constrained")
    extent = (float(field.u[0]), float(field.u[-1]), float(field.v[0]), float(field.v[-1]))
    vmax = max(float(n.max()) for n in field.norm.values())
    step = max(1, len(field.u) // 20)
    for k, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), k + 1)
        im = ax.imshow(field.norm[name].numpy(), origin="lower", extent=extent, cmap="magma", vmin=0, vmax=vmax,
                       aspect="auto")
        p = field.projected[name][::step, ::step]
        ax.quiver(field.u[::step].numpy(), field.v[::step].numpy(), p[..., 0].numpy(), p[..., 1].numpy(),
                  color="white", angles="xy")
        ax.scatter(field.anchors[:, 0].numpy(), field.anchors[:, 1].numpy(), c="cyan", s=25, marker="x")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label="|score|")
    fig.suptitle(title or f"score on the plane through three images, sigma = {field.sigma:g}")
    return save_figure(fig, path)


__all__ = ["ScoreField", "plane_basis", "plot_score_field", "score_field_plane"]
