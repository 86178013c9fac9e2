"""Learning dynamics: how much of the network's score analytical models explain, recorded during
training (Gaussian-score paper, Sec. 5.2, Figure 12: the Gaussian structure is learned first)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .unexplained import standard_candidates, unexplained_variance

KEY = "fuv"  # metrics.jsonl keys: fuv/<candidate>/<sigma>


def tracked_candidates(data: Tensor, names: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """The analytical models named in ``names`` among :func:`standard_candidates`' (``isotropic``,
    ``gaussian``, ``gmm{K}``, ``gmm{K}-r{rank}``, ``delta``), fitted to ``data``."""
    available: dict[str, Any] = {}
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
                         n: int = 128, seed: int = 0):
    """A ``train`` callback: every ``every`` steps, the mean unexplained fraction of the network's
    score (eq. 28) by each named model at each sigma, on the same ``n`` pure-noise query points
    each time, as metrics ``fuv/<name>/<sigma>``. It measures the raw weights, not the EMA."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    candidates = tracked_candidates(data, names, seed)
    moved: dict[str, Any] = {}

    def callback(state) -> dict[str, float] | None:
        if state.step % every and state.step != 1:
            return None
        device = next(state.model.parameters()).device
        if not moved:
            moved.update({k: v.to(device) for k, v in candidates.items()})
        model, was_training = state.model, state.model.training
        model.eval()
        result = unexplained_variance(model, moved, None, sigmas, n=n, queries=("noise",), shape=data.shape[1:],
                                      generator=torch.Generator().manual_seed(seed), device=device)
        model.train(was_training)
        return {f"{KEY}/{name}/{sigma:g}": float(result.mean(name, "noise")[i])
                for name in candidates for i, sigma in enumerate(result.sigmas.tolist())}

    return callback


def read_dynamics(metrics: str | Path) -> dict[tuple[str, float], tuple[list[int], list[float]]]:
    """``(name, sigma) -> (steps, fractions)`` from a run's ``metrics.jsonl`` (or the file)."""
    path = Path(metrics)
    if path.is_dir():
        path = path / "metrics.jsonl"
    curves: dict[tuple[str, float], tuple[list[int], list[float]]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for key, value in row.items():
            if key.startswith(KEY + "/"):
                _, name, sigma = key.split("/")
                steps, values = curves.setdefault((name, float(sigma)), ([], []))
                steps.append(int(row["step"]))
                values.append(float(value))
    return curves


def plot_dynamics(metrics: str | Path, path: str | Path, title: str = "") -> Path:
    """Unexplained fraction against training step, one panel per sigma, one line per model."""
    from matplotlib.figure import Figure

    curves = read_dynamics(metrics)
    if not curves:
        raise ValueError(f"{metrics} holds no {KEY}/... metrics: train with --track-every and --track")
    sigmas = sorted({s for _, s in curves})
    fig = Figure(figsize=(4.0 * len(sigmas), 3.6), layout="constrained")
    for k, sigma in enumerate(sigmas):
        ax = fig.add_subplot(1, len(sigmas), k + 1)
        for (name, s), (steps, values) in sorted(curves.items()):
            if s == sigma:
                ax.plot(steps, values, marker=".", label=name)
        ax.set_yscale("log")
        ax.set_xscale("symlog", linthresh=max(1, min(min(st) for st, _ in curves.values()) or 1))
        ax.set_xlabel("training step")
        ax.set_ylabel("unexplained fraction of the score")
        ax.set_title(f"sigma = {sigma:g}")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


__all__ = ["gaussianity_callback", "plot_dynamics", "read_dynamics", "tracked_candidates"]
