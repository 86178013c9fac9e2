"""Rotated-shapes data set of the MAD paper (Sec. 5.3): the shapes, their clean renderings and the corruption.

    data = noisy_shapes(100_000, size=64, seed=0)     # data.noisy: (N, 1, 64, 64) float32 in [-1, 1]

The clean distribution draws one of four shapes (:data:`SHAPES`, equal probability) and rotates it
about the image centre by an angle uniform in ``[0, 2 pi)``. No shape has a rotational symmetry, so
each shape's renderings form a closed curve (a 1-D manifold) in pixel space and the four curves are
disjoint. :func:`corrupt` blots out parts of the shape with Gaussian bumps centred on its boundary,
adds i.i.d. Gaussian pixel noise, clips and quantises to 8 bits; a diffusion model is trained on
those noisy images only. :mod:`scorelab.metrics.shape_manifold` measures how close images (e.g.
samples) lie to the clean manifolds, :mod:`scorelab.metrics.shapes` which shape they show.

Geometry lives in normalised coordinates: ``x`` to the right and ``y`` up, the frame is
``[-1, 1]^2`` and pixel centres sit at ``+-(1 - 1/size)``; a positive angle turns the shape
counter-clockwise as displayed (row 0 at the top). Images are float32 in ``[-1, 1]``: background
-1, shape +1. Every random draw comes from the ``generator`` passed in (the global RNG when None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import torch
from torch import Tensor

from scorelab.errors import DataError

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

_F64 = torch.float64
TWO_PI = 2 * math.pi
MIN_SIZE = 8
RADIUS = 0.75  # every shape reaches exactly this far from its centroid (the image centre): it never leaves the frame
_MAX_ELEMENTS = 1 << 22  # rows x pixels per rendering chunk, bounding temporary memory (~16 MB per buffer)

# Default corruption (see :func:`corrupt` for the reasoning).
N_BUMPS = 50
BUMP_WIDTH = 0.03
BUMP_DEPTH = 2.0
NOISE_STD = 1.0


# ---------------------------------------------------------------- geometry


class _Polygon:
    """A simple polygon (vertices in order): exact signed distance and arc-length boundary samples."""

    def __init__(self, vertices: list[tuple[float, float]]) -> None:
        self.vertices = torch.tensor(vertices, dtype=_F64)

    def outline(self) -> Tensor:
        """The closed boundary as polygon vertices ``(M, 2)`` (exact for a polygon)."""
        return self.vertices

    def transformed(self, shift: Tensor, scale: float) -> _Polygon:
        """The polygon moved by ``shift`` and then scaled about the origin by ``scale``."""
        return _Polygon(((self.vertices + shift) * scale).tolist())

    def sdf(self, qx: Tensor, qy: Tensor) -> Tensor:
        """Exact signed distance (negative inside) at points ``(qx, qy)``: distance to the nearest
        edge, sign from the even-odd crossing rule."""
        v = self.vertices.tolist()
        d2: Tensor | None = None
        inside: Tensor | None = None
        for k in range(len(v)):
            (ax, ay), (bx, by) = v[k], v[(k + 1) % len(v)]
            ex, ey = bx - ax, by - ay
            px, py = qx - ax, qy - ay
            h = ((px * ex + py * ey) * (1.0 / (ex * ex + ey * ey))).clamp_(0.0, 1.0)
            dx, dy = px - ex * h, py - ey * h
            dd = dx * dx + dy * dy
            d2 = dd if d2 is None else torch.minimum(d2, dd)
            if ay != by:
                cross = ((ay > qy) != (by > qy)) & (qx < (qy - ay) * (ex / ey) + ax)
                inside = cross if inside is None else inside ^ cross
        assert d2 is not None and inside is not None
        return torch.where(inside, -d2.sqrt(), d2.sqrt())

    def boundary(self, u: Tensor) -> Tensor:
        """Points ``(..., 2)`` at arc-length fractions ``u`` in ``[0, 1)`` along the boundary (float64)."""
        start = self.vertices
        edge = torch.roll(self.vertices, -1, 0) - start
        length = edge.norm(dim=-1)
        cum = torch.cat([torch.zeros(1, dtype=_F64), length.cumsum(0)])
        s = u.to(_F64) * cum[-1]
        k = torch.searchsorted(cum[1:], s, right=True).clamp_(max=len(length) - 1)
        t = ((s - cum[k]) / length[k]).unsqueeze(-1)
        return start[k] + t * edge[k]


class _Crescent:
    """Disc ``|q - c1| <= r1`` minus disc ``|q - c2| < r2`` with both centres on the x axis."""

    def __init__(self, c1: float, r1: float, c2: float, r2: float) -> None:
        self.c1, self.r1, self.c2, self.r2 = c1, r1, c2, r2
        d = c2 - c1
        a = (r1 * r1 - r2 * r2 + d * d) / (2 * d)  # the circles meet at (c1 + a, +-b)
        b = math.sqrt(r1 * r1 - a * a)
        self.phi0 = math.atan2(b, a)  # outer arc: angles [phi0, 2 pi - phi0] about c1
        self.psi0 = math.atan2(b, a - d)  # inner arc: angles [psi0, 2 pi - psi0] about c2
        self.outer = r1 * (TWO_PI - 2 * self.phi0)
        self.inner = r2 * (TWO_PI - 2 * self.psi0)

    def outline(self, m: int = 4096) -> Tensor:
        """The closed boundary as ``m`` polygon vertices (outer arc, then the inner arc backwards)."""
        return self.boundary(torch.arange(m, dtype=_F64) / m)

    def transformed(self, shift: Tensor, scale: float) -> _Crescent:
        """The crescent moved by ``shift[0]`` along x (it is symmetric about the x axis, so its centroid
        has y = 0 and ``shift[1]``, a rounding residue, is ignored) and scaled about the origin."""
        sx = float(shift[0])
        return _Crescent((self.c1 + sx) * scale, self.r1 * scale, (self.c2 + sx) * scale, self.r2 * scale)

    def sdf(self, qx: Tensor, qy: Tensor) -> Tensor:
        """Signed distance of the set difference, ``max(d1, -d2)``: exact on and near the boundary
        away from the two horn tips, where it underestimates slightly."""
        d1 = torch.hypot(qx - self.c1, qy) - self.r1
        d2 = torch.hypot(qx - self.c2, qy) - self.r2
        return torch.maximum(d1, -d2)

    def boundary(self, u: Tensor) -> Tensor:
        """Points ``(..., 2)`` at arc-length fractions ``u`` in ``[0, 1)``: the outer arc
        counter-clockwise, then the inner arc clockwise (float64)."""
        s = u.to(_F64) * (self.outer + self.inner)
        on_outer = s < self.outer
        phi = self.phi0 + s / self.r1
        psi = (TWO_PI - self.psi0) - (s - self.outer) / self.r2
        x = torch.where(on_outer, self.c1 + self.r1 * phi.cos(), self.c2 + self.r2 * psi.cos())
        y = torch.where(on_outer, self.r1 * phi.sin(), self.r2 * psi.sin())
        return torch.stack([x, y], -1)


def _normalised(shape: _Polygon | _Crescent) -> _Polygon | _Crescent:
    """``shape`` moved so its area centroid is the origin and scaled so its farthest boundary point
    lies at :data:`RADIUS` (shoelace formulas on the outline, in float64)."""
    p = shape.outline()
    q = torch.roll(p, -1, 0)
    w = p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]
    area = w.sum() / 2
    centroid = ((p + q) * w[:, None]).sum(0) / (6 * area)
    radius = float((p - centroid).norm(dim=-1).max())
    return shape.transformed(-centroid, RADIUS / radius)


_RAW: dict[str, _Polygon | _Crescent] = {
    # unequal arms: no symmetry at all
    "L": _Polygon([(0.0, 0.0), (1.0, 0.0), (1.0, 0.36), (0.36, 0.36), (0.36, 1.55), (0.0, 1.55)]),
    # a long thin bar on a stubby stem
    "T": _Polygon(
        [(-0.17, 0.0), (0.17, 0.0), (0.17, 0.8), (0.8, 0.8), (0.8, 1.12), (-0.8, 1.12), (-0.8, 0.8), (-0.17, 0.8)]
    ),
    # a thin shaft under a broad triangular head
    "arrow": _Polygon([(-0.13, 0.0), (0.13, 0.0), (0.13, 0.85), (0.6, 0.85), (0.0, 1.65), (-0.6, 0.85), (-0.13, 0.85)]),
    # a thick crescent opening to the right
    "crescent": _Crescent(0.0, 1.0, 0.55, 0.8),
}
_GEOMETRY: dict[str, _Polygon | _Crescent] = {name: _normalised(s) for name, s in _RAW.items()}
SHAPES: tuple[str, ...] = tuple(_GEOMETRY)
"""The four shape names; a shape's index in this tuple is its label (``shape_index``)."""


# ---------------------------------------------------------------- rendering


def as_size(size: int) -> int:
    """``size`` (an image side in pixels) as an ``int``, refusing anything but an integer >= :data:`MIN_SIZE`."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE} pixels, got {size!r}")
    return int(size)


def _shape_index(shape: str | int) -> int:
    if isinstance(shape, str) and shape in SHAPES:
        return SHAPES.index(shape)
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool) and 0 <= shape < len(SHAPES):
        return int(shape)
    raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)} (or their index 0-3)")


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel-centre coordinates ``(x, y)`` (float64) of the pixels that can touch a shape (within
    :data:`RADIUS` plus two pixels of the centre) and their flat indices; the rest are background."""
    c = (torch.arange(size, dtype=_F64) + 0.5) * (2 / size) - 1
    y, x = (-c)[:, None].expand(size, size).reshape(-1), c[None, :].expand(size, size).reshape(-1)
    index = torch.nonzero(x * x + y * y <= (RADIUS + 4 / size) ** 2).squeeze(1)
    return x[index], y[index], index


def _coverage(sdf: Tensor, size: int, antialias: bool) -> Tensor:
    """Pixel value in [-1, 1] from the signed distance (normalised units) at its centre; anti-aliased
    as the fraction of a one-pixel-wide ramp across the edge that lies inside."""
    if not antialias:
        return torch.where(sdf < 0, 1.0, -1.0).to(sdf.dtype)
    return (0.5 - sdf * (size / 2)).clamp_(0.0, 1.0).mul_(2).sub_(1)


def _render(k: int, angles: Tensor, size: int, antialias: bool) -> Tensor:
    """Shape ``k`` at float64 ``angles`` ``(A,)``: float32 images ``(A, size, size)``."""
    shape = _GEOMETRY[SHAPES[k]]
    x, y, index = _grid(size)
    out = torch.full((len(angles), size * size), -1.0)
    theta = torch.remainder(angles.to(_F64), TWO_PI)
    cos, sin = theta.cos()[:, None], theta.sin()[:, None]
    step = max(1, _MAX_ELEMENTS // max(1, len(index)))
    for lo in range(0, len(angles), step):
        c, s = cos[lo : lo + step], sin[lo : lo + step]
        qx = (x * c + y * s).float()  # pixel centres turned back by -angle: the shape's own frame
        qy = (y * c - x * s).float()
        out[lo : lo + step, index] = _coverage(shape.sdf(qx, qy), size, antialias)
    return out.view(len(angles), size, size)


def _as_angles(angle: float | Tensor, name: str = "angle") -> Tensor:
    a = torch.as_tensor(angle, dtype=_F64)
    if a.ndim > 1:
        raise ValueError(f"{name} must be a number or a 1-D tensor, got shape {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"{name} must be finite")
    return a


def render(shape: str, angle: float | Tensor, size: int = 64, *, antialias: bool = True) -> Tensor:
    """Clean rendering(s) of ``shape`` (one of :data:`SHAPES`) turned counter-clockwise by ``angle``
    radians about the image centre (MAD paper, Sec. 5.3, its Fig. 6 left).

    A number (or 0-d tensor) gives ``(size, size)``, a 1-D tensor of ``A`` angles ``(A, size, size)``;
    float32, background -1, shape +1, with one-pixel anti-aliased edges unless ``antialias=False``.
    Angles are reduced modulo ``2 pi`` first, so ``0`` and ``2 pi`` render identically."""
    k = _shape_index(shape)
    size = as_size(size)
    a = _as_angles(angle)
    images = _render(k, a.reshape(-1), size, antialias)
    return images[0] if a.ndim == 0 else images


def signed_distance(shape: str, points: Tensor, angle: float | Tensor = 0.0) -> Tensor:
    """Signed distance (normalised units, negative inside) from ``points`` ``(..., 2)`` to ``shape``
    turned by ``angle`` (broadcast against ``points[..., 0]``); exact for the polygons, and for the
    crescent on and near its boundary. Its zero set is the boundary :func:`boundary_points` samples."""
    k = _shape_index(shape)
    p = torch.as_tensor(points, dtype=_F64)
    if p.ndim < 1 or p.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {tuple(p.shape)}")
    theta = torch.as_tensor(angle, dtype=_F64)
    cos, sin = theta.cos(), theta.sin()
    x, y = p[..., 0], p[..., 1]
    return _GEOMETRY[SHAPES[k]].sdf(x * cos + y * sin, y * cos - x * sin)


def boundary_points(
    shape_index: Tensor, angles: Tensor, n_points: int, generator: torch.Generator | None = None
) -> Tensor:
    """``n_points`` points per image drawn uniformly by arc length on the boundary of shape
    ``shape_index[i]`` turned by ``angles[i]``: ``(N, n_points, 2)`` float64, normalised coordinates.

    The bump centres of :func:`corrupt` ("uniformly randomly picking 50 locations on the boundary of
    the shape", MAD paper, Sec. 5.3). Draws ``torch.rand(N, n_points)`` (float64) from ``generator``."""
    if n_points < 0:
        raise ValueError(f"n_points must be >= 0, got {n_points}")
    shape_index, angles = _check_labels(shape_index, angles)
    u = torch.rand(len(shape_index), n_points, generator=generator, dtype=_F64)
    local = torch.empty(len(shape_index), n_points, 2, dtype=_F64)
    for k, name in enumerate(SHAPES):
        rows = shape_index == k
        if bool(rows.any()):
            local[rows] = _GEOMETRY[name].boundary(u[rows])
    theta = angles.to(_F64)[:, None]
    cos, sin = theta.cos(), theta.sin()
    x, y = local[..., 0], local[..., 1]
    return torch.stack([x * cos - y * sin, x * sin + y * cos], -1)


def _check_labels(shape_index: Tensor, angles: Tensor, n: int | None = None) -> tuple[Tensor, Tensor]:
    shape_index, angles = torch.as_tensor(shape_index), torch.as_tensor(angles)
    if shape_index.ndim != 1 or angles.shape != shape_index.shape:
        raise ValueError(
            f"shape_index and angles must be 1-D of equal length, got shapes "
            f"{tuple(shape_index.shape)} and {tuple(angles.shape)}"
        )
    if n is not None and len(shape_index) != n:
        raise ValueError(f"expected {n} labels (one per image), got {len(shape_index)}")
    if shape_index.is_floating_point() or shape_index.is_complex():
        raise ValueError(f"shape_index must be an integer tensor, got {shape_index.dtype}")
    if len(shape_index) and (int(shape_index.min()) < 0 or int(shape_index.max()) >= len(SHAPES)):
        raise ValueError(f"shape_index values must lie in [0, {len(SHAPES) - 1}]")
    if not bool(torch.isfinite(angles.to(_F64)).all()):
        raise ValueError("angles must be finite")
    return shape_index.long(), angles.to(_F64)


# ---------------------------------------------------------------- data set


def clean(n: int, size: int = 64, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` clean images: a uniformly random shape (each with probability 1/4) at an angle uniform in
    ``[0, 2 pi)`` (MAD paper, Sec. 5.3).

    Returns ``images`` ``(n, 1, size, size)`` float32 in [-1, 1], ``shape_index`` ``(n,)`` int64 (into
    :data:`SHAPES`) and ``angles`` ``(n,)`` float64. Draws ``randint(0, 4, (n,))`` then ``rand(n)``
    (float64) from ``generator``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    size = as_size(size)
    shape_index = torch.randint(0, len(SHAPES), (int(n),), generator=generator)
    angles = TWO_PI * torch.rand(int(n), generator=generator, dtype=_F64)
    images = torch.empty(int(n), 1, size, size)
    for k in range(len(SHAPES)):
        rows = torch.nonzero(shape_index == k).squeeze(1)
        if len(rows):
            images[rows, 0] = _render(k, angles[rows], size, True)
    return images, shape_index, angles


def corrupt(
    images: Tensor,
    shape_index: Tensor,
    angles: Tensor,
    generator: torch.Generator | None = None,
    *,
    n_bumps: int = N_BUMPS,
    bump_width: float = BUMP_WIDTH,
    bump_depth: float = BUMP_DEPTH,
    noise_std: float = NOISE_STD,
    quantize: bool = True,
) -> Tensor:
    """The corruption of MAD paper, Sec. 5.3 (its Fig. 6 right) applied to clean ``images``
    ``(N, 1, size, size)`` of shapes ``shape_index`` at ``angles``; returns a new float32 tensor.

    1. Blot: draw ``n_bumps`` points uniformly by arc length on each shape's boundary
       (:func:`boundary_points`) and subtract ``bump_depth * exp(-|p - c|^2 / (2 w^2))`` for each,
       ``w = bump_width * size`` pixels; then clip to [-1, 1] so a blotted region reads as background.
    2. Add i.i.d. ``N(0, noise_std^2)`` noise to every pixel.
    3. Clip to [-1, 1] and, if ``quantize``, round to 8 bits: 256 levels ``k / 127.5 - 1``.

    Defaults (the paper gives only "50 locations", "large parts" and "can hardly be discerned"):
    ``n_bumps = 50`` as in the paper; ``bump_depth = 2`` is the full shape-to-background contrast,
    so a bump turns its centre into background and erases the shape within ~1.2 w of it;
    ``bump_width = 0.03`` (w = 1.9 px at 64, 1 px at 32) then erases ~60 % of the shape's pixels
    (L 72 %, T 59 %, arrow 65 %, crescent 53 %) and breaks the rest into fragments - "blot out large
    parts of the shape" - whereas 0.04 erases ~90 % (nearly all of an L) and 0.02 only nibbles the
    edges. ``noise_std = 1.0`` (half the contrast) hides the fragments to the eye in most single
    images; the shape classifier of :mod:`scorelab.metrics.shapes` still names the right shape for
    at least 98 % of them at 64 px, so the data set as a whole carries the shapes. Clipping after
    the blots is our choice (the paper does not say): without it blots would push the background
    below -1 and leave a dark halo tracing the boundary. Draws from ``generator``: the boundary points
    (``rand(N, n_bumps)``, float64), then the noise (``randn`` per block of 1024 images).
    """
    if n_bumps < 0:
        raise ValueError(f"n_bumps must be >= 0, got {n_bumps}")
    if not bump_width > 0:
        raise ValueError(f"bump_width must be > 0 (a fraction of the image size), got {bump_width}")
    if not math.isfinite(bump_depth) or bump_depth < 0:
        raise ValueError(f"bump_depth must be finite and >= 0, got {bump_depth}")
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 1 or not images.is_floating_point():
        raise DataError(
            f"images: expected a float tensor (N, 1, size, size), got "
            f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}"
        )
    n, _, size, width = images.shape
    if size != width:
        raise DataError(f"images must be square, got {size}x{width}")
    as_size(size)
    shape_index, angles = _check_labels(shape_index, angles, n)

    centres = boundary_points(shape_index, angles, n_bumps, generator)  # (n, K, 2)
    c = (torch.arange(size, dtype=_F64) + 0.5) * (2 / size) - 1
    sigma = 2 * bump_width  # normalised units: the frame is 2 wide
    out = images.detach().to(torch.float32, copy=True)
    chunk = 1024
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        if n_bumps and bump_depth:
            cx, cy = centres[lo:hi, :, 0, None], centres[lo:hi, :, 1, None]
            gx = torch.exp(-((c - cx) ** 2) / (2 * sigma**2))  # (m, K, size): columns
            gy = torch.exp(-((-c - cy) ** 2) / (2 * sigma**2))  # rows (y points up)
            bumps = torch.einsum("mki,mkj->mij", gy, gx).float()  # separable Gaussians, summed over K
            out[lo:hi, 0].sub_(bumps, alpha=bump_depth).clamp_(-1.0, 1.0)
        noise = torch.randn(hi - lo, 1, size, size, generator=generator)
        out[lo:hi].add_(noise, alpha=noise_std).clamp_(-1.0, 1.0)
        if quantize:
            out[lo:hi].add_(1).mul_(127.5).round_().div_(127.5).sub_(1)
    return out


class Corruption(TypedDict, total=False):
    """Keyword arguments of :func:`corrupt`, any subset; :func:`noisy_shapes` records all of them."""

    n_bumps: int
    bump_width: float
    bump_depth: float
    noise_std: float
    quantize: bool


@dataclass(frozen=True, eq=False)
class NoisyShapes:
    """A generated data set: ``noisy`` (the training images), their ``clean`` originals, labels
    ``shape_index`` (into :data:`SHAPES`), ``angles`` (radians) and the corruption ``params`` used."""

    noisy: Tensor
    clean: Tensor
    shape_index: Tensor
    angles: Tensor
    params: Corruption = field(default_factory=Corruption)


def noisy_shapes(n: int, size: int = 64, seed: int = 0, **corruption: Unpack[Corruption]) -> NoisyShapes:
    """The MAD paper's Sec. 5.3 training set: :func:`clean` images corrupted by :func:`corrupt`
    (keyword overrides in ``corruption``), both drawn from ``torch.Generator().manual_seed(seed)``
    in that order, so ``(n, size, seed, corruption)`` fixes the data set. The paper's 100 000 images at
    64 px take ~30 s on one CPU thread and 3.3 GB (noisy and clean, float32)."""
    params: Corruption = {
        "n_bumps": N_BUMPS,
        "bump_width": BUMP_WIDTH,
        "bump_depth": BUMP_DEPTH,
        "noise_std": NOISE_STD,
        "quantize": True,
    }
    unknown = sorted(set(corruption) - set(params))
    if unknown:
        raise ValueError(f"unknown corruption parameter(s) {', '.join(unknown)}; known: {', '.join(params)}")
    params.update(corruption)
    generator = torch.Generator().manual_seed(seed)
    images, shape_index, angles = clean(n, size, generator)
    noisy = corrupt(images, shape_index, angles, generator, **params)
    return NoisyShapes(noisy, images, shape_index, angles, params)
