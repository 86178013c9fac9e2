"""Learning dynamics: how much of the network's score analytical models explain, recorded during
training (Gaussian-score paper, Sec. 5.2, Figure 12: the Gaussian structure is learned first)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .unexplained import standard_candidates, unexplained_variance

KEY = "unexplained"  # metrics.jsonl keys: unexplained/<query>/<candidate>/<sigma>
LEGACY_KEYS = ("fuv",)  # the prefix of runs written before (fraction of unexplained variance), still read


class TrainingState(Protocol):
    """What the callback reads of the training state: the step just taken and the network."""

    @property
    def step(self) -> int: ...

    @property
    def model(self) -> nn.Module: ...


def tracked_candidates(data: Tensor, names: Sequence[str], seed: int = 0) -> dict[str, nn.Module]:
    """The analytical models named in ``names`` among :func:`standard_candidates`' (``isotropic``,
    ``gaussian``, ``gmm{K}``, ``gmm{K}-r{rank}``, ``delta``), fitted to ``data``."""
    available: dict[str, nn.Module] = {}
    gmms = [n for n in names if n.startswith("gmm")]
    for name in gmms:
        k, _, rank = name[3:].partition("-r")
        if not k.isdigit() or (rank and not rank.isdigit()):
            raise ValueError(f"a mixture is named gmmK or gmmK-rR (e.g. gmm10, gmm10-r8), got {name!r}")
        available |= standard_candidates(data, n_components=int(k), ranks=(int(rank) if rank else None,), seed=seed)
    if not gmms:
        available = standard_candidates(data, n_components=2, ranks=(), seed=seed)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown analytical model(s) {unknown}; choose isotropic, gaussian, gmmK, gmmK-rR or delta")
    return {n: available[n] for n in names}


def gaussianity_callback(data: Tensor, names: Sequence[str], sigmas: Sequence[float], every: int, *,
                         n: int = 128, seed: int = 0) -> Callable[[TrainingState], dict[str, float] | None]:
    """A ``train`` callback: at step 1 and every ``every`` steps, the mean unexplained fraction of the
    network's score (eq. 28) by each named model at each sigma, on the same ``n`` query points of
    each kind every time (training images + sigma z, and sigma z alone), as metrics
    ``unexplained/<query>/<name>/<sigma>``. It measures the raw weights, not the EMA."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    candidates = tracked_candidates(data, names, seed)
    moved: dict[str, Any] = {}

    def callback(state: TrainingState) -> dict[str, float] | None:
        if state.step % every and state.step != 1:
            return None
        device = next(state.model.parameters()).device
        if not moved:
            moved.update({k: v.to(device) for k, v in candidates.items()})
        model, was_training = state.model, state.model.training
        model.eval()
        result = unexplained_variance(model, moved, data, sigmas, n=n, generator=torch.Generator().manual_seed(seed),
                                      device=device)
        model.train(was_training)
        return {f"{KEY}/{query}/{name}/{sigma:g}": float(result.mean(name, query)[i])
                for query in result.score for name in candidates for i, sigma in enumerate(result.sigmas.tolist())}

    return callback


def read_dynamics(metrics: str | Path) -> dict[tuple[str, str, float], tuple[list[int], list[float]]]:
    """``(query, name, sigma) -> (steps, fractions)`` from a run's ``metrics.jsonl`` (or the file): the metrics
    ``unexplained/<query>/<name>/<sigma>``, and those of runs written with the former prefix ``fuv/``."""
    path = Path(metrics)
    if path.is_dir():
        path = path / "metrics.jsonl"
    curves: dict[tuple[str, str, float], tuple[list[int], list[float]]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for key, value in row.items():
            prefix, _, rest = key.partition("/")
            if rest and (prefix == KEY or prefix in LEGACY_KEYS):
                query, name, sigma = rest.split("/")
                steps, values = curves.setdefault((query, name, float(sigma)), ([], []))
                steps.append(int(row["step"]))
                values.append(float(value))
    return curves


def plot_dynamics(metrics: str | Path, path: str | Path, title: str = "") -> Path:
    """Unexplained fraction against training step: one row of panels per query kind, one panel per
    sigma, one line per model (the paper's Figure 12)."""
    from matplotlib.figure import Figure

    from ..viz import save_figure

    curves = read_dynamics(metrics)
    if not curves:
        raise ValueError(f"{metrics} holds no {KEY}/QUERY/MODEL/SIGMA metrics (unexplained fractions): "
                         "train with --track-every and --track")
    sigmas = sorted({s for _, _, s in curves})
    queries = sorted({q for q, _, _ in curves})
    fig = Figure(figsize=(3.6 * len(sigmas), 3.2 * len(queries)), layout="constrained")
    for r, query in enumerate(queries):
        for k, sigma in enumerate(sigmas):
            ax = fig.add_subplot(len(queries), len(sigmas), r * len(sigmas) + k + 1)
            for (q, name, s), (steps, values) in sorted(curves.items()):
                if q == query and s == sigma:
                    ax.plot(steps, values, marker=".", ms=3, label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel("unexplained fraction")
            ax.set_title(f"{query} queries, sigma = {sigma:g}", fontsize=9)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


__all__ = ["TrainingState", "gaussianity_callback", "plot_dynamics", "read_dynamics", "tracked_candidates"]
