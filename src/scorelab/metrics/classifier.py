"""What the dataset classifiers behind the quality measures share (:mod:`.digits`, :mod:`.shapes`):
deterministic initialisation, the outlier-exposure loss, single-threaded training, an atomic
safetensors cache, and the check of the images they are given."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from scorelab.checkpoint import atomic_write

M = TypeVar("M", bound=nn.Module)


def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default uniform(±1/sqrt(fan_in)) initialisation, drawn from ``generator``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                bound = module.weight[0].numel() ** -0.5
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.uniform_(-bound, bound, generator=generator)


def outlier_exposure_loss(logits: Tensor, labels: Tensor, outlier_weight: float) -> Tensor:
    """Cross-entropy of the first ``len(labels)`` rows of ``logits`` plus ``outlier_weight`` times the
    cross-entropy of the remaining rows (outliers) against the uniform distribution (Hendrycks et al.
    2019, "Deep anomaly detection with outlier exposure"): it keeps a classifier unconfident off its
    classes, so a confident fraction measures class-likeness rather than a plain CNN's overconfidence."""
    inliers, outliers = logits[: len(labels)], logits[len(labels):]
    uniform_ce = -outliers.log_softmax(1).mean(1).mean()
    return F.cross_entropy(inliers, labels) + outlier_weight * uniform_ce


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one CPU thread, then restore the previous setting.

    The networks are too small to gain from intra-op threads, a fixed thread count fixes the
    reduction order (so the weights do not depend on the machine's core count), and one thread
    cannot be starved by spinning worker threads on a busy machine.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def cache_dir() -> Path:
    """``$SCORELAB_CACHE`` if set, else ``~/.cache/scorelab``."""
    return Path(os.environ.get("SCORELAB_CACHE") or Path.home() / ".cache" / "scorelab").expanduser()


def load_cached(model: M, path: Path) -> M | None:
    """``model`` with the weights in ``path`` in eval mode, or ``None`` when the file is missing,
    unreadable, mismatched or not finite (the caller then retrains and replaces it)."""
    if not path.is_file():
        return None
    try:
        model.load_state_dict(load_file(path))
    except Exception:  # noqa: BLE001 (any unreadable or mismatched file is retrained and replaced)
        return None
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return None
    return model.eval().requires_grad_(False)


def cached(make: Callable[[], M], train: Callable[[], M], path: Path) -> M:
    """The classifier cached at ``path`` (built by ``make``), or ``train()``'s, saved there first
    (atomically: :func:`scorelab.checkpoint.atomic_write`). Training runs with gradients on even
    when the first use comes from inside ``torch.no_grad()`` (a metric called while sampling)."""
    model = load_cached(make(), path)
    if model is None:
        with torch.enable_grad():
            model = train()
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(weights, tmp))
    return model


def check_images(x: Tensor, name: str, side: int | None = None) -> Tensor:
    """Require finite floating images ``(N, 1, S, S)`` with N >= 1 (and ``S == side`` when given)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    square = x.ndim == 4 and x.shape[1] == 1 and x.shape[2] == x.shape[3]
    if not square or len(x) == 0 or (side is not None and x.shape[2] != side):
        layout = "(N, 1, S, S)" if side is None else f"(N, 1, {side}, {side})"
        raise ValueError(f"{name}: expected shape {layout} with N >= 1, got {tuple(x.shape)}")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name}: {bad} non-finite values (NaN or inf)")
    return x
