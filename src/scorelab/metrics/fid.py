"""FID and KID of generated samples' features: a pluggable feature extractor, cached reference
statistics, and the metric from two sets of features.

The standard extractor is torch-fidelity's Inception-v3 (``inception_extractor``), read from a local
weights file; any ``Callable[[uint8 Tensor (N, C, H, W)], Tensor (N, D)]`` works in its place.
torch-fidelity imports torchvision, so it is imported only inside ``inception_extractor``. Samples
reach the extractor as uint8 (:func:`to_uint8`), as saved; the features of a model's samples come
from ``scorelab.sample.generate(..., transform=lambda x: extractor(to_uint8(x)))``, so that only the
features of each batch are kept, and sharded over ranks by ``generate_sharded`` under torchrun.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .distances import as_rows, frechet_distance

if TYPE_CHECKING:
    from ..data import MappedImages

Extractor = Callable[[Tensor], Tensor]
INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's registered name for this network
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
WEIGHTS_ENV = "SCORELAB_INCEPTION_WEIGHTS"


# ---------------------------------------------------------------- KID


def polynomial_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³ between equal-size sets x, y (m, d); diagonals left out."""
    m, d = x.shape
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off_diagonal = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return off_diagonal - 2 * k_xy.sum() / m**2


def kernel_inception_distance(features_a: Tensor, features_b: Tensor, subsets: int = 100, subset_size: int = 1000,
                              generator: torch.Generator | None = None) -> float:
    """KID (Bińkowski et al. 2018): the unbiased polynomial-kernel MMD² averaged over ``subsets`` random
    subsets of m = min(subset_size, N_a, N_b) rows of each set, drawn without replacement (subset i takes
    ``randperm(N_a)[:m]`` then ``randperm(N_b)[:m]`` from ``generator``; seed 0 without one). In float64."""
    a, b = (as_rows(f, name).double() for f, name in ((features_a, "features_a"), (features_b, "features_b")))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a has {a.shape[1]} dims, features_b has {b.shape[1]}")
    m = min(subset_size, len(a), len(b))
    if m < 2 or subsets < 1:
        raise ValueError(f"KID needs subsets >= 1 of at least 2 rows, got {subsets} subsets of {m}")
    generator = generator or torch.Generator().manual_seed(0)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for _ in range(subsets):
        ia, ib = torch.randperm(len(a), generator=generator)[:m], torch.randperm(len(b), generator=generator)[:m]
        total += polynomial_mmd2(a[ia.to(a.device)], b[ib.to(b.device)])
    return float(total / subsets)


# ---------------------------------------------------------------- reference statistics and their cache


@dataclass
class ReferenceStats:
    """A reference set's feature mean ``mu``, covariance ``sigma`` (float64) and ``features`` (for KID)."""

    mu: Tensor
    sigma: Tensor
    features: Tensor


def reference_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (float64) of features (N, D), N >= 2: the Gaussian FID compares."""
    f = as_rows(features, "features").double()
    if len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors, got {len(f)}")
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def reference_key(spec: str, n: int, extractor: str, weights: str | Path | None = None) -> dict[str, Any]:
    """What reference statistics depend on: the data spec, the number of images, the extractor's name
    and its weights file's size and modification time (so replaced weights are not mistaken for the old)."""
    key: dict[str, Any] = {"reference": spec, "n": int(n), "extractor": extractor}
    if weights is not None:
        stat = Path(weights).stat()
        key |= {"weights": str(Path(weights).resolve()), "weights_size": stat.st_size,
                "weights_mtime_ns": stat.st_mtime_ns}
    return key


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def _read_cached(path: Path, key_json: str) -> ReferenceStats | None:
    """The statistics in ``path`` if it exists, holds ``key_json`` and its tensors match their checksum."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        if meta.get("key") != key_json or meta.get("sha256") != _digest(tensors):
            raise ValueError("key or checksum does not match")
        stats = ReferenceStats(tensors["mu"], tensors["sigma"], tensors["features"])
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        warnings.warn(f"ignoring the unreadable reference cache {path} ({e}); recomputing it", stacklevel=3)
        return None
    return stats


def cached_reference(key: dict[str, Any], compute_fn: Callable[[], Tensor],
                     cache: str | Path | None = None) -> ReferenceStats:
    """The reference statistics for ``key``, read from ``cache`` (default ``$SCORELAB_CACHE`` or ``~/.cache/scorelab``, as the digits classifier's) when a valid
    file for it exists, else computed from ``compute_fn() -> features (N, D)`` and written atomically to
    ``reference-HASH.safetensors`` (HASH of ``key``). A file that fails to load, holds another key or whose
    tensors do not match their stored SHA-256 is recomputed, not trusted."""
    from safetensors.torch import save_file

    from ..checkpoint import atomic_write
    from .classifier import cache_dir

    key_json = json.dumps(key, sort_keys=True)
    path = Path(cache or cache_dir()) / f"reference-{hashlib.sha256(key_json.encode()).hexdigest()[:20]}.safetensors"
    stats = _read_cached(path, key_json)
    if stats is not None:
        return stats
    features = as_rows(compute_fn(), "reference features").detach().cpu()
    mu, sigma = reference_statistics(features)
    tensors = {"mu": mu, "sigma": sigma, "features": features.contiguous()}
    meta = {"key": key_json, "sha256": _digest(tensors)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return ReferenceStats(mu, sigma, tensors["features"])


# ---------------------------------------------------------------- samples -> features -> metric


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] as the 8-bit levels saving writes: round((x + 1) * 127.5), clipped to [0, 255]."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def image_features(images: Tensor | MappedImages, extractor: Extractor, batch_size: int = 1000,
                   n: int | None = None) -> Tensor:
    """Features of the first ``n`` (default all) images in [-1, 1], read ``batch_size`` at a time from a
    tensor or anything sliceable into tensors (a ``MappedImages`` then never loads the whole set)."""
    n = len(images) if n is None else min(n, len(images))
    chunks = [extractor(to_uint8(torch.as_tensor(images[i:min(i + batch_size, n)]))).detach().cpu()
              for i in range(0, n, batch_size)]
    return torch.cat(chunks)


def metric_from_features(features: Tensor, reference: ReferenceStats, metric: str = "fid", *,
                         kid_subsets: int = 100, kid_subset_size: int = 1000, kid_seed: int = 0) -> float:
    """FID (Fréchet distance of the fitted Gaussians) or KID of sample features against a reference."""
    if metric == "fid":
        mu, sigma = reference_statistics(features)
        return frechet_distance(mu, sigma, reference.mu, reference.sigma)
    if metric == "kid":
        return kernel_inception_distance(features, reference.features, kid_subsets, kid_subset_size,
                                         torch.Generator().manual_seed(kid_seed))
    raise ValueError(f"unknown metric {metric!r}; choose fid or kid")


# ---------------------------------------------------------------- torch-fidelity's Inception-v3


def resolve_inception_weights(path: str | Path | None = None) -> Path:
    """The Inception weights file: ``path``, else ``$SCORELAB_INCEPTION_WEIGHTS``; it must exist locally."""
    given = path or os.environ.get(WEIGHTS_ENV)
    how = (f"download {INCEPTION_FILE} ({INCEPTION_URL}) on a machine with internet access and pass "
           f"--inception-weights FILE or set {WEIGHTS_ENV}=FILE")
    if not given:
        raise ValueError(f"FID/KID need the Inception-v3 weights as a local file; they cannot be downloaded here: {how}")
    if not Path(given).expanduser().is_file():
        raise ValueError(f"Inception weights {given} not found (they cannot be downloaded here): {how}")
    return Path(given).expanduser()


def inception_extractor(weights_path: str | Path | None = None, device: str | torch.device = "cpu",
                        feature: str = "2048") -> Extractor:
    """torch-fidelity's TF-compatible Inception-v3 (the FID network) from a local weights file, as an
    extractor: uint8 images (N, 1 or 3, H, W) -> float64 features (N, 2048) (pool3). Grayscale is repeated
    to 3 channels; torch-fidelity resizes to 299x299 itself and maps [0, 255] to [-1, 1] inside."""
    path = resolve_inception_weights(weights_path)
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except (ImportError, RuntimeError, OSError, AttributeError) as e:  # a mismatched torchvision: RuntimeError
        raise ValueError(f"FID/KID need torch-fidelity and a torchvision that matches torch {torch.__version__} "
                         f"(pip install 'scorelab[fid]'); importing it failed: {e}") from None
    net = FeatureExtractorInceptionV3(INCEPTION_NAME, [feature], feature_extractor_weights_path=str(path))
    net = net.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def extract(images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need uint8 images (N, 1 or 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        (features,) = net(images.expand(-1, 3, -1, -1).contiguous().to(device))
        return features.double().cpu()

    extract.name = f"{INCEPTION_NAME}:{feature}"  # type: ignore[attr-defined]
    return extract
