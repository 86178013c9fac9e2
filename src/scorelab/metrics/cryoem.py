"""How close images lie to the clean manifold of a simulated cryo-EM stack (:mod:`scorelab.data.cryoem`).

    manifold = CleanManifold.from_side("particles.mrcs")       # reads particles.npz
    summary = evaluate(samples, manifold)                      # medians over the samples, and a set distance

The clean images of a stack are the molecule's projections in every orientation, each filtered by
a CTF whose defocus lies in the stack's range. :func:`manifold_scores` regenerates that manifold
from the side file's atoms and settings as a seeded bank of orientations (times a grid of defoci
with the CTF on) and matches every image against all of it, a chunk of the bank at a time.
Samples are read in the stack's own units, as ``load_dataset("particles.mrcs")`` returns them.

Four measures, each answering a different question:

- ``correlation``: the best Pearson correlation with a clean image. It ignores offset and
  scale, so it asks "the right structure, at any contrast?"; a blurred clean image keeps most of it.
- ``rmse``: the RMS distance to that clean image at the stack's contrast, over that contrast
  (:attr:`CleanManifold.contrast`: in the stack's per-image min-max normalisation every clean
  image has about the same pixel standard deviation, since the noise was scaled to it). The
  offset, set arbitrarily by the normalisation, is removed. With ``s`` the image's pixel standard
  deviation over the contrast and ``r`` its correlation, ``rmse^2 = s^2 + 1 - 2 s r``: a clean
  sample scores near 0, a flat grey image 1, a blurred one (lower ``r`` and ``s``) in between,
  noise above 1. It assumes the samples share the stack's normalisation.
- ``pixel_w2`` (:func:`pixel_distance`): the Wasserstein-2 distance between the pooled pixel
  values (each image centred) of the samples and of the stack's clean images in the stack's
  normalisation, over the clean pixels' RMS. One number per set; blur and low contrast narrow the
  distribution, noise widens it. It ignores where pixels are, so it cannot tell a structure from
  a shuffled one: read it beside the two per-image measures.
- ``orientation_concentration`` (:func:`orientation_concentration`): whether the poses of the best
  clean images cover SO(3) evenly (about 1) or collapse onto a few views (up to ``n``); the
  per-image measures cannot see a set that shows one view well.

The best clean image is searched over a bank of ``M`` random orientations (a clean particle lies
about ``(6 pi / M)^(1/3)`` radians from its nearest one) times a grid of defoci, then refined off
the grid by a few Gauss-Newton steps (:func:`refine_pose`), so clean particles score close to 1
(see the tests for measured values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypedDict

import numpy as np
import torch
from torch import Tensor

from scorelab.data.cryoem import (
    PAD,
    STREAM_BANK,
    Settings,
    _check_int,
    apply_ctf,
    project,
    random_rotations,
    read_side,
    stream,
)
from scorelab.errors import DataError
from scorelab.metrics.distances import quantile_w2_squared

_F64 = torch.float64
N_ORIENTATIONS = 2048
N_DEFOCUS = 8
STARTS = 4  # bank images refined per sample: the best, then the next best far enough from those kept
CANDIDATES = 8  # ranked bank images per start the distinct starts are chosen from
SEPARATION = 0.5  # radians between two starts
REFINE = 4  # Gauss-Newton steps after the bank search
MAX_REFERENCE = 2048  # clean images of the stack pooled for pixel_distance
BLOCK = 256  # images refined at a time
H_TURN, H_DEFOCUS = 1e-3, 1e-3  # forward-difference steps: radians, µm
MAX_TURN = 0.2  # radians, the largest rotation of one refinement step (about the spacing of a 2048-bank)


@dataclass(frozen=True)
class CleanManifold:
    """What the measures need from a stack's side file: the molecule and settings, the centred
    clean images in the stack's normalisation (``reference``, the first :data:`MAX_REFERENCE`;
    image ``i`` scaled by ``2 / (hi_i - lo_i)``, as the normalisation scaled its noisy image) and
    ``contrast``, the median over the stack of their per-image pixel standard deviation."""

    atoms: Tensor
    settings: Settings
    reference: Tensor
    contrast: float

    @classmethod
    def from_side(cls, path: str | Path) -> CleanManifold:
        """From ``FILE.npz``, given it or the stack ``FILE.mrcs`` beside it."""
        side = read_side(path)
        window = side.hi - side.lo
        if not bool((window > 0).all()):
            raise DataError(f"{path}: the side file holds an empty normalisation window (hi <= lo)")
        clean = 2 / window[:, None, None] * (side.clean - side.clean.mean(dim=(1, 2), keepdim=True))
        contrast = float(np.median(clean.flatten(1).square().mean(1).sqrt().numpy()))
        return cls(side.atoms, side.settings, clean[:MAX_REFERENCE].flatten(1), contrast)


class CryoEMScores(TypedDict):
    """Per-image results of :func:`manifold_scores`."""

    correlation: Tensor
    rmse: Tensor
    rotation: Tensor
    defocus: Tensor


class CryoEMSummary(TypedDict):
    """Medians over the images, the set's pixel distance and its poses' concentration, from :func:`evaluate`."""

    n: int
    median_correlation: float
    mean_correlation: float
    median_rmse: float
    pixel_w2: float
    orientation_concentration: float


def bank_orientations(n: int, seed: int = 0) -> Tensor:
    """The bank's ``n`` rotations ``(n, 3, 3)``, uniform on SO(3), from ``seed``'s bank stream (never
    the stream a stack's particles were drawn from)."""
    _check_int("n_orientations", n, 1)
    return random_rotations(int(n), stream(seed, STREAM_BANK))


def bank_defoci(settings: Settings, n: int = N_DEFOCUS) -> Tensor | None:
    """``n`` defoci (µm) at the midpoints of ``n`` equal parts of the stack's range; None without a CTF."""
    _check_int("n_defocus", n, 1)
    if not settings.ctf:
        return None
    width = settings.defocus_max - settings.defocus_min
    return settings.defocus_min + width * (torch.arange(n, dtype=_F64) + 0.5) / n


def bank_images(manifold: CleanManifold, rotations: Tensor, defoci: Tensor | None) -> Tensor:
    """Clean images ``(len(rotations) * len(defoci), S, S)`` in raw units, rotation-major: every
    rotation at every defocus (rendered once, filtered per defocus)."""
    s, st = manifold.settings.size, manifold.settings
    if defoci is None:
        return project(manifold.atoms, rotations, s, st.pixel_size, st.atom_sigma)
    padded = project(manifold.atoms, rotations, PAD * s, st.pixel_size, st.atom_sigma)
    return apply_ctf(padded[:, None], defoci, st).flatten(0, 1)


def manifold_scores(images: Tensor, manifold: CleanManifold, *, n_orientations: int = N_ORIENTATIONS,
                    n_defocus: int = N_DEFOCUS, seed: int = 0, starts: int = STARTS, refine: int = REFINE,
                    chunk: int = 128) -> CryoEMScores:
    """Each image's best ``correlation`` with, and ``rmse`` to, the clean manifold, and the
    ``rotation`` ``(N, 3, 3)`` and ``defocus`` (µm, NaN without CTF) of its best clean image; see
    the module docstring for what each measure assumes.

    The search starts over a bank of ``n_orientations`` rotations (:func:`bank_orientations` of
    ``seed``) times ``n_defocus`` defoci (:func:`bank_defoci`), rendered ``chunk`` rotations at a
    time (memory ``O(N * chunk * n_defocus)``, float32). ``refine`` Gauss-Newton steps
    (:func:`refine_pose`) then move the pose off the bank's grid: the first half from each of the
    image's ``starts`` best bank poses that lie apart (:data:`SEPARATION`), the rest from the best
    of those; 0 keeps the bank's best.
    ``images``: ``(N, 1, S, S)`` or ``(N, S, S)`` in the stack's units. A constant image correlates 0."""
    x = _as_rows(images, manifold.settings.size)
    for name, value, least in (("chunk", chunk, 1), ("starts", starts, 1), ("refine", refine, 0)):
        _check_int(name, value, least)
    xc = x - x.mean(1, keepdim=True)
    rotations, defocus = _bank_search(xc, manifold, bank_orientations(n_orientations, seed),
                                      bank_defoci(manifold.settings, n_defocus), chunk, CANDIDATES * starts)
    rotations, defocus = _distinct(rotations, defocus, starts)
    matches = [_refine_starts(xc[lo : lo + BLOCK], manifold, rotations[lo : lo + BLOCK],
                              None if defocus is None else defocus[lo : lo + BLOCK], refine)
               for lo in range(0, len(x), BLOCK)]
    image = torch.cat([m.image for m in matches])
    unit = image / image.square().mean(1, keepdim=True).sqrt().clamp_min(1e-300)  # RMS 1
    rmse = (xc - manifold.contrast * unit).square().mean(1).sqrt() / manifold.contrast
    return {"correlation": torch.cat([m.correlation for m in matches]).float(), "rmse": rmse.float(),
            "rotation": torch.cat([m.rotation for m in matches]),
            "defocus": torch.full((len(x),), math.nan, dtype=_F64) if defocus is None
            else torch.cat([m.defocus for m in matches if m.defocus is not None])}


def _refine_starts(xc: Tensor, manifold: CleanManifold, rotations: Tensor, defocus: Tensor | None,
                   steps: int) -> Match:
    """Half the ``steps`` from each of an image's starts ``(N, K, 3, 3)`` side by side (rows
    image-major), the rest from the best of them."""
    n, k = rotations.shape[:2]
    early = steps // 2 if k > 1 else 0
    tried = refine_pose(xc.repeat_interleave(k, 0), manifold, rotations.flatten(0, 1),
                        None if defocus is None else defocus.flatten(), early)
    rows = torch.arange(n) * k + tried.correlation.view(n, k).argmax(1)
    return refine_pose(xc, manifold, tried.rotation[rows], None if tried.defocus is None else tried.defocus[rows],
                       steps - early)


def _bank_search(xc: Tensor, manifold: CleanManifold, rotations: Tensor, defoci: Tensor | None, chunk: int,
                 starts: int) -> tuple[Tensor, Tensor | None]:
    """The rotations ``(N, starts, 3, 3)`` and defoci ``(N, starts)`` of each centred image's
    ``starts`` best-correlated bank images, best first (float32 matmuls)."""
    n_d = 1 if defoci is None else len(defoci)
    x_unit = (xc / xc.norm(dim=1).clamp_min(1e-300)[:, None]).float()
    best_corr = torch.full((len(xc), 0), -math.inf)
    best_k = torch.zeros(len(xc), 0, dtype=torch.long)
    for lo in range(0, len(rotations), chunk):
        bank = bank_images(manifold, rotations[lo : lo + chunk], defoci).flatten(1)
        bank = bank - bank.mean(1, keepdim=True)
        corr = x_unit @ (bank / bank.norm(dim=1).clamp_min(1e-300)[:, None]).float().T
        merged = torch.cat([best_corr, corr], 1)
        best_corr, which = merged.topk(min(starts, merged.shape[1]), dim=1)
        ks = torch.cat([best_k, lo * n_d + torch.arange(corr.shape[1]).expand(len(xc), -1)], 1)
        best_k = ks.gather(1, which)
    return rotations[best_k // n_d], None if defoci is None else defoci[best_k % n_d]


def _distinct(rotations: Tensor, defocus: Tensor | None, starts: int) -> tuple[Tensor, Tensor | None]:
    """Per image, the first ``starts`` of its ranked candidates ``(N, K, 3, 3)`` that lie at least
    :data:`SEPARATION` radians from every one kept before (greedy; short of that many, the best
    repeats), so the refinement starts in different basins, e.g. at a view and its near-mirror
    from the other side."""
    n, k = rotations.shape[:2]
    trace = torch.einsum("nkij,nlij->nkl", rotations, rotations)  # tr(R_k^T R_l) = 1 + 2 cos(angle)
    angle = ((trace - 1) / 2).clamp(-1, 1).arccos()  # (N, K, K)
    keep = torch.zeros(n, k, dtype=torch.bool)
    keep[:, 0] = True
    for j in range(1, k):
        far = ~((angle[:, j, :j] < SEPARATION) & keep[:, :j]).any(1)
        keep[:, j] = far & (keep.sum(1) < starts)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :starts]  # kept first, in rank order
    order = torch.where(torch.arange(starts) < keep.sum(1, keepdim=True), order, order[:, :1])
    rows = torch.arange(n)[:, None]
    return rotations[rows, order], None if defocus is None else defocus[rows, order]


class Match(NamedTuple):
    """Each image's pose and what it gives: ``rotation`` ``(N, 3, 3)``, ``defocus`` ``(N,)`` µm (None
    without CTF), the Pearson ``correlation`` with the clean ``image`` there (centred rows)."""

    rotation: Tensor
    defocus: Tensor | None
    correlation: Tensor
    image: Tensor


def refine_pose(xc: Tensor, manifold: CleanManifold, rotations: Tensor, defocus: Tensor | None,
                steps: int = REFINE) -> Match:
    """``steps`` damped Gauss-Newton steps raising each centred image's (rows of ``xc``) correlation
    with the clean image at its pose: rotation ``R <- exp([w]_x) R`` and defocus ``dz <- dz + d``.

    The clean image is linearised by forward differences, ``c(w, d) ~ c + J (w, d)``; the least
    squares fit ``x ~ alpha c + J beta`` (free scale, the offset removed by centring) gives the step
    ``(w, d) = beta / alpha``, at most :data:`MAX_TURN` radians and kept inside the stack's defocus
    range. A step is kept only where it raises the correlation; elsewhere the next is halved."""
    settings = manifold.settings
    scale = torch.ones(len(xc), dtype=_F64)
    current, padded = _pose_images(manifold, rotations, defocus)
    corr = _pearson(xc, current)
    axes = torch.eye(3, dtype=_F64)
    for _ in range(steps):
        columns = [(_pose_images(manifold, _turn(rotations, H_TURN * axes[i].expand(len(xc), 3)), defocus)[0]
                    - current) / H_TURN for i in range(3)]
        if defocus is not None and padded is not None:  # the same projection, another CTF
            columns.append((_centred(apply_ctf(padded, defocus + H_DEFOCUS, settings)) - current) / H_DEFOCUS)
        fit = _least_squares(torch.stack([current, *columns], 2), xc)
        alpha = fit[:, :1]
        step = torch.where(alpha > 1e-12, fit[:, 1:] / alpha.clamp_min(1e-12), 0.0) * scale[:, None]
        turn = step[:, :3] * (MAX_TURN / step[:, :3].norm(dim=1, keepdim=True).clamp_min(MAX_TURN))
        trial_rotations = _turn(rotations, turn)
        trial_defocus = None if defocus is None else (defocus + step[:, 3]).clamp(settings.defocus_min,
                                                                                   settings.defocus_max)
        trial, trial_padded = _pose_images(manifold, trial_rotations, trial_defocus)
        trial_corr = _pearson(xc, trial)
        better = trial_corr > corr
        rotations = torch.where(better[:, None, None], trial_rotations, rotations)
        if defocus is not None and trial_defocus is not None and padded is not None and trial_padded is not None:
            defocus = torch.where(better, trial_defocus, defocus)
            padded = torch.where(better[:, None, None], trial_padded, padded)
        current, corr = torch.where(better[:, None], trial, current), torch.where(better, trial_corr, corr)
        scale = torch.where(better, (2 * scale).clamp_max(1.0), scale / 2)
    return Match(rotations, defocus, corr, current)


def _least_squares(a: Tensor, b: Tensor) -> Tensor:
    """``argmin_u |a u - b|`` per row: ``a`` ``(N, P, q)``, ``b`` ``(N, P)``, by the normal equations with a
    ridge of 1e-10 of their diagonal (q is at most 5, and batched LAPACK least squares is far slower)."""
    gram = a.transpose(1, 2) @ a
    ridge = 1e-10 * gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)[:, None, None]
    return torch.linalg.solve(gram + ridge * torch.eye(a.shape[2], dtype=a.dtype), (a.transpose(1, 2) @ b[..., None]))[..., 0]


def _turn(rotations: Tensor, w: Tensor) -> Tensor:
    """``exp([w]_x) R`` for rotation vectors ``w`` ``(N, 3)`` (radians) and rotations ``(N, 3, 3)``."""
    zero = torch.zeros_like(w[:, 0])
    skew = torch.stack([torch.stack([zero, -w[:, 2], w[:, 1]], -1), torch.stack([w[:, 2], zero, -w[:, 0]], -1),
                        torch.stack([-w[:, 1], w[:, 0], zero], -1)], -2)
    return torch.linalg.matrix_exp(skew) @ rotations


def _pose_images(manifold: CleanManifold, rotations: Tensor, defocus: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The clean image at each pose, centred, as float64 rows ``(N, S * S)``, and with a CTF the
    projections on the padded grid it was filtered from."""
    st = manifold.settings
    if defocus is None:
        return _centred(project(manifold.atoms, rotations, st.size, st.pixel_size, st.atom_sigma)), None
    padded = project(manifold.atoms, rotations, PAD * st.size, st.pixel_size, st.atom_sigma)
    return _centred(apply_ctf(padded, defocus, st)), padded


def _centred(images: Tensor) -> Tensor:
    rows = images.flatten(1)
    return rows - rows.mean(1, keepdim=True)


def _pearson(xc: Tensor, yc: Tensor) -> Tensor:
    """Row-wise Pearson correlation of centred rows; 0 where either row is constant."""
    return ((xc * yc).sum(1) / (xc.norm(dim=1) * yc.norm(dim=1))).nan_to_num(0.0).clamp(-1, 1)


def pixel_distance(images: Tensor, manifold: CleanManifold) -> float:
    """Wasserstein-2 distance between the pooled pixel values of ``images`` and of the stack's
    clean images, each image centred, in the stack's normalisation, over the clean pixels' RMS (so a
    set of flat images scores 1); exact for the two empirical distributions."""
    x = _as_rows(images, manifold.settings.size)
    px = (x - x.mean(1, keepdim=True)).flatten().sort().values[:, None]
    py = manifold.reference.flatten().sort().values[:, None]
    return float(quantile_w2_squared(px, py).clamp_min(0).sqrt() / py.square().mean().sqrt())


def orientation_concentration(rotations: Tensor) -> float:
    """How far ``n`` rotations ``(n, 3, 3)`` are from covering SO(3) evenly: ``n ||mean R||_F^2 / 3``.
    Uniform rotations have ``E[R] = 0`` and entries of variance 1/3, so this is about chi^2_9 / 9
    (mean 1; 95 % of draws in [0.30, 2.11]); ``n`` identical rotations score ``n``. Read on the
    poses of the best clean images, it tells samples that show the molecule in every orientation
    from samples collapsed onto a few views, which the per-image measures cannot."""
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3) or len(rotations) == 0:
        raise DataError(f"rotations: expected (n, 3, 3) with n >= 1, got {tuple(rotations.shape)}")
    mean = rotations.to(_F64).mean(0)
    return float(len(rotations) * mean.square().sum() / 3)


def evaluate(images: Tensor, manifold: CleanManifold, **bank: int) -> CryoEMSummary:
    """Median and mean best correlation, median rmse (:func:`manifold_scores`, ``bank`` its keyword
    options), the set's :func:`pixel_distance` and the :func:`orientation_concentration` of the best
    clean images' poses."""
    scores = manifold_scores(images, manifold, **bank)
    corr = scores["correlation"].double().numpy()
    return {"n": len(corr), "median_correlation": float(np.median(corr)), "mean_correlation": float(corr.mean()),
            "median_rmse": float(np.median(scores["rmse"].double().numpy())),
            "pixel_w2": pixel_distance(images, manifold),
            "orientation_concentration": orientation_concentration(scores["rotation"])}


def _as_rows(images: Tensor, size: int) -> Tensor:
    """``images`` ``(N, 1, S, S)`` or ``(N, S, S)`` as float64 ``(N, S * S)``, checked."""
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise DataError(f"images: expected a floating torch.Tensor, got {getattr(images, 'dtype', type(images).__name__)}")
    shape = tuple(images.shape)
    if not (images.ndim == 4 and shape[1:] == (1, size, size) or images.ndim == 3 and shape[1:] == (size, size)):
        raise DataError(f"images: expected (N, 1, {size}, {size}) or (N, {size}, {size}) like the stack, got {shape}")
    if len(images) == 0:
        raise DataError("images: none given (N = 0)")
    if not bool(torch.isfinite(images).all()):
        raise DataError("images: contain NaN or infinite values")
    return images.detach().reshape(len(images), size * size).cpu().to(_F64)
