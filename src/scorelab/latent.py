"""Latent generation: a PCA codec, so that a score model is trained and sampled on the
codes of the top principal components and its samples are decoded back to images (student report
on NCSN, Sec. 3 "Latent generation", and App. 8.1 for the elbow choice of the dimension).

Codes are ``z = U (x - mu)`` with ``U`` the ``(k, D)`` orthonormal principal directions, so the
code space is an isometric copy of the k-dimensional principal subspace: a noise level sigma and
the EDM loss mean the same there as in pixel space (restricted to the subspace). Whitening
(``z / sqrt(lam)``) is available but off by default; see :meth:`PCA.fit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

KINDS = ("pca",)
RANK_TOL = 1e-10  # eigenvalues <= RANK_TOL * largest count as zero (as analytic.Gaussian)
FRACTION_TOL = 1e-12  # a cumulative fraction within this of the target reaches it (float rounding)


@dataclass(frozen=True)
class LatentSpec:
    """A parsed ``--latent`` value: exactly one of ``n_components``, ``explained_variance``, ``elbow``."""

    kind: str = "pca"
    n_components: int | None = None
    explained_variance: float | None = None
    elbow: bool = False
    whiten: bool = False


def parse_latent(spec: str) -> LatentSpec:
    """``pca:K`` (K components), ``pca:F`` (F with a decimal point, 0 < F <= 1: the fewest components
    that explain a fraction F of the variance), ``pca:elbow`` (:func:`elbow_components`); a trailing ``:whiten``
    scales each code to unit variance. ``pca:20``, ``pca:0.95``, ``pca:elbow:whiten``."""
    parts = [p.strip() for p in str(spec).split(":")]
    usage = "--latent looks like pca:20, pca:0.95, pca:elbow (optionally followed by :whiten)"
    if parts[0] not in KINDS:
        raise ValueError(f"unknown latent kind {parts[0]!r} in {spec!r}; choose one of {', '.join(KINDS)} ({usage})")
    whiten = len(parts) == 3 and parts[2] == "whiten"
    if len(parts) not in (2, 3) or (len(parts) == 3 and not whiten):
        raise ValueError(f"bad latent spec {spec!r}: {usage}")
    size = parts[1]
    if size == "elbow":
        return LatentSpec(parts[0], elbow=True, whiten=whiten)
    if size.isdigit():
        if int(size) < 1:
            raise ValueError(f"the number of components must be >= 1, got {size} in {spec!r}")
        return LatentSpec(parts[0], n_components=int(size), whiten=whiten)
    try:
        value = float(size)
    except ValueError:
        raise ValueError(f"bad latent spec {spec!r}: {size!r} is not a number or 'elbow' ({usage})") from None
    if not 0 < value <= 1:
        raise ValueError(f"an explained-variance fraction must lie in (0, 1], got {size} in {spec!r}")
    return LatentSpec(parts[0], explained_variance=value, whiten=whiten)


def components_for_fraction(explained_variance: Tensor, fraction: float) -> int:
    """The smallest k whose top-k eigenvalues hold at least ``fraction`` of their total."""
    if not 0 < fraction <= 1:
        raise ValueError(f"an explained-variance fraction must lie in (0, 1], got {fraction}")
    lam = explained_variance.double()
    cumulative = lam.cumsum(0) / lam.sum()
    return int((cumulative < fraction - FRACTION_TOL).sum()) + 1


def elbow_components(explained_variance: Tensor) -> int:
    """The knee of the cumulative explained-variance curve by the kneedle rule (Satopaa et al. 2011):
    over the points (k, c_k), k = 0..r, with c_k the fraction held by the top k of the r nonzero
    eigenvalues, both axes scaled to [0, 1], the k farthest above the chord from (0, 0) to (1, 1),
    i.e. argmax_k (c_k - k / r). For a sorted spectrum this is the number of eigenvalues above their
    mean (Kaiser's rule). The report (App. 8.1) picks its MNIST dimension by the elbow of this curve."""
    lam = explained_variance.double()
    r = int((lam > RANK_TOL * lam.max()).sum()) if len(lam) and float(lam.max()) > 0 else 0
    if r == 0:
        raise ValueError("the data have zero variance: no principal components")
    cumulative = torch.cat([lam.new_zeros(1), lam[:r].cumsum(0) / lam[:r].sum()])
    height = cumulative - torch.arange(r + 1, dtype=lam.dtype) / r
    if float(height.max()) <= FRACTION_TOL:
        raise ValueError(f"the spectrum is flat (all {r} nonzero eigenvalues equal): it has no elbow; "
                         "give a number of components or an explained-variance fraction")
    return int(height.argmax())


class PCA(nn.Module):
    """A linear codec ``z = U (x - mu) / s``, ``x = U^T (s z) + mu`` (report, Sec. 3: x~ = U~ x, with
    the mean removed first). Buffers: ``mean`` (one example's shape, which gives the decoded shape),
    ``components`` ``U`` (k, D) with orthonormal rows, ``explained_variance`` ``lam`` (k,) of the
    training data along them, ``total_variance`` (all D directions) and ``scale`` ``s`` (k,): ones,
    or ``sqrt(lam)`` for whitened codes. Tensors of another dtype are a TypeError, never cast."""

    mean: Tensor
    components: Tensor
    explained_variance: Tensor
    total_variance: Tensor
    scale: Tensor

    def __init__(self, mean: Tensor, components: Tensor, explained_variance: Tensor, total_variance: Tensor,
                 scale: Tensor | None = None) -> None:
        super().__init__()
        D = mean.numel()
        k = components.shape[0] if components.ndim == 2 else -1
        if components.ndim != 2 or components.shape[1] != D or not 1 <= k <= D:
            raise ValueError(f"components must be (k, {D}) with 1 <= k <= {D}, got {tuple(components.shape)}")
        scale = torch.ones(k, dtype=mean.dtype) if scale is None else scale
        if explained_variance.shape != (k,) or scale.shape != (k,) or total_variance.numel() != 1:
            raise ValueError(f"explained_variance and scale must be ({k},) and total_variance a scalar")
        if not bool((scale > 0).all()):
            raise ValueError("every code scale must be > 0 (a whitened component with zero variance?)")
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("components", components.detach().to(mean.dtype).clone())
        self.register_buffer("explained_variance", explained_variance.detach().to(mean.dtype).clone())
        self.register_buffer("total_variance", total_variance.detach().to(mean.dtype).reshape(()).clone())
        self.register_buffer("scale", scale.detach().to(mean.dtype).clone())

    @classmethod
    def fit(cls, data: Tensor, n_components: int | None = None, *, explained_variance: float | None = None,
            elbow: bool = False, whiten: bool = False, solver: str = "full") -> PCA:
        """PCA of ``data`` (N, *shape) by scikit-learn (``solver``: its ``svd_solver``; "full" is an
        exact LAPACK SVD, computed in float64; buffers take the data's dtype). Choose the dimension by
        exactly one of: ``n_components`` (1 <= k <= min(N, D)), ``explained_variance`` (the fewest
        components reaching that fraction, :func:`components_for_fraction`) or ``elbow``
        (:func:`elbow_components`). ``whiten`` scales codes to unit variance. It is off by default: unwhitened
        codes keep pixel-space distances, so the EDM loss on codes is the pixel loss restricted to
        the subspace and weights each component by its share of the image, where whitening would
        blow the faint trailing components up to the size of the first. On digits (an MLP, 1000 steps)
        whitening lowered the confident fraction from 0.80 to 0.77 at 14 components, 0.78 to 0.75 at 28."""
        from sklearn.decomposition import PCA as SkPCA

        if sum((n_components is not None, explained_variance is not None, bool(elbow))) != 1:
            raise ValueError("give exactly one of n_components, explained_variance and elbow")
        if not isinstance(data, Tensor) or data.ndim < 2 or len(data) < 2 or not data.is_floating_point():
            raise ValueError("PCA.fit needs a floating tensor (N, *shape) with N >= 2")
        N, D = len(data), data[0].numel()
        if n_components is not None and not 1 <= n_components <= min(N, D):
            raise ValueError(f"n_components must lie in [1, min(N, D)] = [1, {min(N, D)}] for {N} examples of "
                             f"{D} values, got {n_components}")
        x = data.detach().cpu().flatten(1).double().numpy()
        sk = SkPCA(svd_solver=solver).fit(x)
        lam_all = torch.from_numpy(sk.explained_variance_.copy())
        if explained_variance is not None:
            n_components = components_for_fraction(lam_all, explained_variance)
        elif elbow:
            n_components = elbow_components(lam_all)
        k = int(n_components)  # type: ignore[arg-type]
        lam = lam_all[:k]
        if whiten and not bool((lam > RANK_TOL * lam_all[0]).all()):
            raise ValueError(f"cannot whiten {k} components: the data have only "
                             f"{int((lam_all > RANK_TOL * lam_all[0]).sum())} with nonzero variance")
        dtype = data.dtype
        mean = torch.from_numpy(sk.mean_.copy()).to(dtype).reshape(data.shape[1:])
        return cls(mean, torch.from_numpy(sk.components_[:k].copy()).to(dtype), lam.to(dtype),
                   lam_all.sum().to(dtype), lam.sqrt().to(dtype) if whiten else None)

    @classmethod
    def from_spec(cls, spec: str | LatentSpec, data: Tensor) -> PCA:
        """:meth:`fit` with the dimension rule of a ``--latent`` spec (:func:`parse_latent`)."""
        s = parse_latent(spec) if isinstance(spec, str) else spec
        return cls.fit(data, s.n_components, explained_variance=s.explained_variance, elbow=s.elbow,
                       whiten=s.whiten)

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one decoded example, e.g. (1, 8, 8)."""
        return tuple(self.mean.shape)

    @property
    def whitened(self) -> bool:
        return not bool((self.scale == 1).all())

    @property
    def explained_variance_ratio(self) -> Tensor:
        """The fraction of the training data's variance along each kept component."""
        return self.explained_variance / self.total_variance

    def _check(self, x: Tensor, shape: Sequence[int], what: str) -> None:
        if x.dtype != self.mean.dtype:
            raise TypeError(f"{what} are {x.dtype} but the codec is {self.mean.dtype}; convert one of them")
        if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(f"{what} must be (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> Tensor:
        """Codes (N, k) of examples (N, *shape)."""
        self._check(x, self.shape, "images")
        return (x.flatten(1) - self.mean.flatten()) @ self.components.T / self.scale

    def decode(self, z: Tensor) -> Tensor:
        """Examples (N, *shape) of codes (N, k): the mean plus the codes' combination of components."""
        self._check(z, (self.n_components,), "codes")
        return ((z * self.scale) @ self.components + self.mean.flatten()).reshape(len(z), *self.shape)

    def reconstruct(self, x: Tensor) -> Tensor:
        """The projection of ``x`` onto the affine principal subspace: ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, n_components={self.n_components}, "
                f"explained={float(self.explained_variance_ratio.sum()):.4f}, whitened={self.whitened}")


def fit_or_load(spec: str, data: Tensor, saved: str | Path | None = None) -> PCA:
    """The codec of a latent run: read from ``saved`` when that file exists (a resumed run keeps the
    exact codec its model was trained on), otherwise fitted on ``data`` by ``spec``."""
    if saved is not None and Path(saved).is_file():
        return load_pca(saved)
    return PCA.from_spec(spec, data)


def save_pca(path: str | Path, pca: PCA, spec: str | None = None) -> Path:
    """Write the codec as a safetensors file, atomically, with readable metadata (``checkpoint``)."""
    meta: dict[str, Any] = {"format": 1, "kind": "pca", "spec": spec, "shape": list(pca.shape),
                            "n_components": pca.n_components, "whitened": pca.whitened,
                            "explained_variance_fraction": float(pca.explained_variance_ratio.sum())}
    save_checkpoint(path, dict(pca.state_dict()), meta)
    return Path(path)


def pca_from_tensors(tensors: dict[str, Tensor], where: str) -> PCA:
    """A :class:`PCA` from its buffers; a CheckpointError naming ``where`` if they do not make one."""
    names = ("mean", "components", "explained_variance", "total_variance", "scale")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise CheckpointError(f"{where} holds no PCA codec (missing {', '.join(missing)})")
    try:
        return PCA(*(tensors[n] for n in names))
    except ValueError as e:
        raise CheckpointError(f"{where} holds an inconsistent PCA codec ({e})") from None


def load_pca(path: str | Path) -> PCA:
    """A codec written by :func:`save_pca`."""
    tensors, _ = load_checkpoint(path)
    return pca_from_tensors(tensors, f"latent codec {path}")

