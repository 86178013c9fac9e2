"""Per-mode statistics of samples from a well-separated mixture (mode weights, covariances)."""

from __future__ import annotations

import torch
from torch import Tensor


def mode_statistics(samples: Tensor, means: Tensor) -> dict[str, list]:
    """Assign each sample to its nearest mode mean; return the fraction of samples per mode
    (``mode_weights``), each mode's sample mean and covariance (``mode_means``, ``mode_covs``)
    and the largest |eigenvalue(cov) - 1| per mode (``cov_eig_max_dev``, for unit covariances)."""
    samples, means = samples.double().flatten(1), means.double().flatten(1)
    if samples.shape[1] != means.shape[1]:
        raise ValueError(f"samples of dimension {samples.shape[1]} vs means of dimension {means.shape[1]}")
    label = torch.cdist(samples, means).argmin(1)
    weights, mode_means, covs, dev = [], [], [], []
    for k in range(len(means)):
        members = samples[label == k]
        weights.append(len(members) / len(samples))
        if len(members) < 2:
            mode_means.append([float("nan")] * samples.shape[1])
            covs.append([[float("nan")] * samples.shape[1]] * samples.shape[1])
            dev.append(float("nan"))
            continue
        cov = torch.cov(members.T).reshape(samples.shape[1], samples.shape[1])
        mode_means.append(members.mean(0).tolist())
        covs.append(cov.tolist())
        dev.append(float((torch.linalg.eigvalsh(cov) - 1).abs().max()))
    return {"mode_weights": weights, "mode_means": mode_means, "mode_covs": covs, "cov_eig_max_dev": dev}


def axis_spread(samples: Tensor, means: Tensor, axes: Tensor) -> Tensor:
    """Per-mode standard deviation of the samples along each mode's own axes, ``(K, A)``.

    Each sample goes to its nearest mean; ``axes`` ``(K, D, A)`` holds mode ``k``'s directions as
    columns (e.g. a rotation's major and minor axis). A mode with fewer than 2 samples gives NaN.
    Measures what MAD's soft thresholding does to each direction (MAD paper, Figs. 1, 2a)."""
    samples, means, axes = samples.double().flatten(1), means.double().flatten(1), axes.double()
    if axes.shape[:2] != means.shape:
        raise ValueError(f"axes must be (K, D, A) with (K, D) = {tuple(means.shape)}, got {tuple(axes.shape)}")
    label = torch.cdist(samples, means).argmin(1)
    local = torch.einsum("nda,nd->na", axes[label], samples - means[label])
    out = torch.full((len(means), axes.shape[2]), float("nan"), dtype=torch.float64)
    for k in range(len(means)):
        if int((label == k).sum()) >= 2:
            out[k] = local[label == k].std(0)
    return out


def radial_spread(samples: Tensor, centres: Tensor, radius: float) -> float:
    """Root-mean-square distance of the samples from the nearest of the circles of ``radius``
    around ``centres`` ``(K, 2)``: the spread across a ring manifold (MAD paper, Fig. 2b)."""
    samples, centres = samples.double(), centres.double()
    rho = torch.cdist(samples, centres).min(1).values
    return float((rho - radius).square().mean().sqrt())
