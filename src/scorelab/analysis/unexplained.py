"""How much of a network's score an analytical model explains, across noise levels
(Gaussian-score paper, Sec. 4, eq. 28, Figures 6 and 9).

For each sigma and each candidate denoiser, at query points ``x`` the reference (usually the
trained network) is compared with the candidate:

- on the score, per query point, ``|s_ref - s_cand|^2 / |s_ref|^2`` (eq. 28), which with
  ``s = (D - x) / sigma^2`` is ``|D_ref - D_cand|^2 / |D_ref - x|^2``;
- on the denoiser output, ``|D_ref - D_cand|^2 / V`` with ``V`` the mean of ``|D_ref - mean D_ref|^2``
  over the query points, so that the mean over points is the usual fraction of unexplained
  variance ``1 - R^2`` of the reference's outputs.

Query points come two ways: ``"data"``, training images plus ``sigma`` times noise (where the
sampler actually is at low noise), and ``"noise"``, pure ``sigma`` times noise (the paper's
choice).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..analytic import DeltaMixture, Gaussian, GaussianMixture, Isotropic
from ..denoiser import Denoiser, unexplained_score_fraction

DEFAULT_SIGMAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.75, 1, 1.5, 2, 5, 10, 20, 30, 40, 80)
QUERIES = ("data", "noise")


@dataclass
class UnexplainedVariance:
    """Per-point fractions ``score[query][name]`` and ``denoiser[query][name]``, each ``(S, n)``
    float64 for the ``S`` levels ``sigmas``; ``eigenvalues`` of the data covariance (descending)
    for the figure's marks."""

    sigmas: Tensor
    score: dict[str, dict[str, Tensor]]
    denoiser: dict[str, dict[str, Tensor]]
    eigenvalues: Tensor | None = None
    names: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, float | str]]:
        """One row per (query, candidate, sigma, measure): mean, standard deviation, quartiles."""
        out = []
        for measure, table in (("score", self.score), ("denoiser", self.denoiser)):
            for query, per_name in table.items():
                for name, values in per_name.items():
                    for sigma, v in zip(self.sigmas.tolist(), values):
                        q25, q50, q75 = np.quantile(v.numpy(), [0.25, 0.5, 0.75])
                        out.append({"measure": measure, "query": query, "candidate": name, "sigma": sigma,
                                    "mean": float(v.mean()), "std": float(v.std()), "q25": q25, "median": q50,
                                    "q75": q75, "n": len(v)})
        return out

    def mean(self, name: str, query: str = "noise", measure: str = "score") -> Tensor:
        """The mean fraction per sigma, ``(S,)``."""
        return getattr(self, measure)[query][name].mean(1)

    def to_csv(self, path: str | Path) -> Path:
        from ..checkpoint import atomic_write_text

        rows = self.rows()
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(Path(path), text.getvalue())
        return Path(path)


def standard_candidates(data: Tensor, *, n_components: int = 10, ranks: Sequence[int | None] = (None,),
                        seed: int = 0) -> dict[str, nn.Module]:
    """The paper's analytical models of ``data`` ``(N, *shape)``: ``isotropic``, ``gaussian``,
    ``gmm{K}`` (full rank, k-means fit) and ``gmm{K}-r{rank}`` for each rank, and ``delta`` (the
    training set itself). Built in ``data``'s dtype."""
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"the mixtures need n_components >= 1 component, got {n_components!r}")
    candidates: dict[str, nn.Module] = {"isotropic": Isotropic.fit(data), "gaussian": Gaussian.fit(data)}
    for rank in ranks:
        name = f"gmm{n_components}" + (f"-r{rank}" if rank is not None else "")
        candidates[name] = GaussianMixture.fit(data, n_components, rank=rank, seed=seed)
    candidates["delta"] = DeltaMixture(data)
    return candidates


def _query(kind: str, data: Tensor | None, sigma: float, n: int, generator: torch.Generator,
           shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    noise = sigma * torch.randn(n, *shape, generator=generator, dtype=dtype).to(device)
    if kind == "noise":
        return noise
    assert data is not None
    idx = torch.randint(len(data), (n,), generator=generator)
    return data[idx].to(device=device, dtype=dtype) + noise


@torch.no_grad()
def unexplained_variance(reference: Denoiser, candidates: Mapping[str, Denoiser], data: Tensor | None,
                         sigmas: Sequence[float] = DEFAULT_SIGMAS, *, n: int = 256,
                         queries: Sequence[str] = QUERIES, generator: torch.Generator | None = None,
                         batch_size: int = 256, shape: Sequence[int] | None = None,
                         device: torch.device | str = "cpu") -> UnexplainedVariance:
    """The fraction of the reference's score (and denoiser output) that each candidate leaves
    unexplained, at ``n`` query points per sigma and query kind. ``data`` ``(N, *shape)`` are the
    training images (needed for ``"data"`` queries and the eigenvalue marks); the query points
    are drawn from ``generator`` (default: seeded 0) in ``data``'s dtype, the same points for
    every candidate."""
    unknown = set(queries) - set(QUERIES)
    if unknown or not queries:
        raise ValueError(f"queries must be among {QUERIES}, got {list(queries)}")
    if data is None and "data" in queries:
        raise ValueError("'data' queries need the training data")
    if shape is None:
        if data is None:
            raise ValueError("give data or shape")
        shape = tuple(data.shape[1:])
    if n < 2 or batch_size < 1:
        raise ValueError("need n >= 2 query points and batch_size >= 1")
    levels = torch.as_tensor([float(s) for s in sigmas], dtype=torch.float64)
    if not bool((levels > 0).all()) or not bool(torch.isfinite(levels).all()):
        raise ValueError("sigmas must be finite and > 0")
    dtype = data.dtype if data is not None else torch.float32
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    score = {q: {name: torch.empty(len(levels), n, dtype=torch.float64) for name in candidates} for q in queries}
    denoised = {q: {name: torch.empty(len(levels), n, dtype=torch.float64) for name in candidates} for q in queries}
    for q in queries:
        for i, sigma in enumerate(levels.tolist()):
            x = _query(q, data, sigma, n, generator, shape, dtype, torch.device(device))
            d_ref = torch.cat([reference(x[j:j + batch_size], sigma) for j in range(0, n, batch_size)])
            d_ref64 = d_ref.flatten(1).double()
            score_den = (d_ref64 - x.flatten(1).double()).pow(2).sum(1)
            spread = (d_ref64 - d_ref64.mean(0)).pow(2).sum(1).mean()
            for name, cand in candidates.items():
                d = torch.cat([cand(x[j:j + batch_size], sigma) for j in range(0, n, batch_size)])
                fraction = unexplained_score_fraction(d_ref, d, x)
                score[q][name][i] = fraction.cpu()
                err = fraction * score_den  # |D_ref - D_cand|^2
                denoised[q][name][i] = (err / spread).cpu() if spread > 0 else torch.full_like(err, math.nan).cpu()
    eigenvalues = Gaussian.fit(data.double()).lam.cpu() if data is not None else None
    return UnexplainedVariance(levels, score, denoised, eigenvalues, list(candidates))


def plot_unexplained(result: UnexplainedVariance, path: str | Path, *, measure: str = "score",
                     marks: int = 5, title: str = "") -> Path:
    """Log-log mean fraction against sigma, one line per candidate with its quartile band, one
    panel per query kind; dotted verticals at the square roots of the top ``marks`` covariance
    eigenvalues (the paper's Figures 6 and 9)."""
    from matplotlib.figure import Figure

    from ..viz import save_figure

    table = getattr(result, measure)
    fig = Figure(figsize=(5.2 * len(table), 4.2), layout="constrained")
    sig = result.sigmas.numpy()
    for k, (query, per_name) in enumerate(table.items()):
        ax = fig.add_subplot(1, len(table), k + 1)
        for name, values in per_name.items():
            v = values.numpy()
            line, = ax.plot(sig, np.maximum(v.mean(1), 1e-12), marker="o", ms=3, label=name)
            lo, hi = np.quantile(v, [0.25, 0.75], axis=1)
            ax.fill_between(sig, np.maximum(lo, 1e-12), np.maximum(hi, 1e-12), color=line.get_color(), alpha=0.15)
        if result.eigenvalues is not None:
            for lam in result.eigenvalues[:marks].sqrt().tolist():
                ax.axvline(lam, color="gray", linestyle=":", linewidth=0.8)
        ax.axhline(0.01, color="black", linestyle="--", linewidth=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sigma")
        ax.set_ylabel(f"fraction of unexplained variance ({measure})")
        ax.set_title(f"{query} queries" + (" (data + sigma z)" if query == "data" else " (sigma z)"))
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


__all__ = ["DEFAULT_SIGMAS", "QUERIES", "UnexplainedVariance", "plot_unexplained", "standard_candidates",
           "unexplained_variance"]
