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
