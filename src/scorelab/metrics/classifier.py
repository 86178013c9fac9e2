"""What the dataset classifiers behind the quality measures share (:mod:`.digits`, :mod:`.shapes`):
the network skeleton, deterministic single-threaded training with the outlier-exposure loss, a
safetensors cache keyed by the training recipe, and the check of the images they are given."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from scorelab.checkpoint import atomic_write

M = TypeVar("M", bound=nn.Module)
FEATURES = 128  # width of the feature layer: the embedding a Frechet distance is measured in


class ConvClassifier(nn.Module):
    """A small CNN: 3x3 convolutions ``conv1``, ``conv2``, ... from ``channels[0]`` input channels,
    each followed by a ReLU and, where ``pool`` says so, a 2x2 max-pool; then a :data:`FEATURES`-d
    feature layer ``fc`` and one logit per class, ``head``.

    It is built for ``side x side`` images; with ``resize``, images of another side are first
    area-resized to it. :attr:`chunk` bounds how many images one forward pass of
    :meth:`in_chunks` takes.
    """

    chunk = 2048

    def __init__(self, channels: Sequence[int], pool: Sequence[bool], side: int, classes: int, *,
                 resize: bool = False) -> None:
        super().__init__()
        if len(pool) != len(channels) - 1:
            raise ValueError(f"one pool flag per convolution: {len(channels) - 1} convolutions, {len(pool)} flags")
        for i, (c_in, c_out) in enumerate(itertools.pairwise(channels), start=1):
            self.add_module(f"conv{i}", nn.Conv2d(c_in, c_out, 3, padding=1))
        self.pool, self.side, self.resize = tuple(pool), side, resize
        out = side // 2 ** sum(self.pool)
        self.fc = nn.Linear(channels[-1] * out * out, FEATURES)
        self.head = nn.Linear(FEATURES, classes)

    def convs(self) -> list[nn.Conv2d]:
        """The convolutions in order."""
        return [m for m in self.children() if isinstance(m, nn.Conv2d)]

    def features(self, x: Tensor) -> Tensor:
        """Penultimate (post-ReLU) features ``(N, FEATURES)`` of images ``(N, C, S, S)``."""
        h = F.adaptive_avg_pool2d(x, self.side) if self.resize and x.shape[-1] != self.side else x
        for conv, pool in zip(self.convs(), self.pool):
            h = F.relu(conv(h))
            if pool:
                h = F.max_pool2d(h, 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, classes)``."""
        return self.head(self.features(x))

    @torch.no_grad()
    def in_chunks(self, x: Tensor, *, features: bool = False) -> Tensor:
        """Logits (or, with ``features``, :meth:`features`) of images ``x``, :attr:`chunk` images at
        a time as float32 on the model's device, returned on the CPU."""
        device = next(self.parameters()).device
        fn = self.features if features else self.forward
        return torch.cat([fn(c.to(device, torch.float32)).cpu() for c in x.split(self.chunk)])

    def probabilities(self, x: Tensor) -> Tensor:
        """Class probabilities ``(N, classes)`` of images ``x``: the softmax of :meth:`in_chunks`."""
        return self.in_chunks(x).softmax(1)


def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default uniform(±1/sqrt(fan_in)) initialisation, drawn from ``generator``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                bound = module.weight[0].numel() ** -0.5
                module.weight.uniform_(-bound, bound, generator=generator)
                if module.bias is not None:
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


def fit(model: M, losses: Callable[[M, torch.Generator], Iterable[Tensor]], steps: int, *, seed: int, lr: float,
        weight_decay: float) -> M:
    """Train ``model`` and return it in eval mode with gradients off.

    Every draw comes from one generator seeded with ``seed``: first the weights
    (:func:`init_weights`), then whatever ``losses(model, generator)`` draws for its batches. Each
    loss it yields takes one Adam step (``weight_decay`` added to the gradient), the learning rate
    decaying from ``lr`` to 0 along a cosine over ``steps`` steps. Runs on one CPU thread
    (:func:`single_thread`), so the weights are the same on every machine.
    """
    with single_thread():
        generator = torch.Generator().manual_seed(seed)
        init_weights(model, generator)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for loss in losses(model, generator):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval().requires_grad_(False)


def cache_dir() -> Path:
    """``$SCORELAB_CACHE`` if set, else ``~/.cache/scorelab``."""
    return Path(os.environ.get("SCORELAB_CACHE") or Path.home() / ".cache" / "scorelab").expanduser()


def cache_file(stem: str, recipe: bytes) -> Path:
    """``STEM-KEY.safetensors`` in :func:`cache_dir`, KEY the first 12 hex digits of the SHA-256 of
    ``recipe`` (the training settings), so any change to the recipe trains a new file."""
    return cache_dir() / f"{stem}-{hashlib.sha256(recipe).hexdigest()[:12]}.safetensors"


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


SHIPPED = Path(__file__).resolve().parent.parent / "pretrained" / "classifiers"
"""Classifier weights shipped with the package, named as in the cache (the recipe's hash in the name),
so every machine measures with the same network and none has to train it."""


def cached(make: Callable[[], M], train: Callable[[], M], path: Path) -> M:
    """The classifier cached at ``path`` (built by ``make``), else the one shipped under the same name
    (:data:`SHIPPED`), else ``train()``'s, saved at ``path`` first (atomically:
    :func:`scorelab.checkpoint.atomic_write`). Training runs with gradients on even when the first
    use comes from inside ``torch.no_grad()`` (a metric called while sampling)."""
    model = load_cached(make(), path)
    if model is None:
        model = load_cached(make(), SHIPPED / path.name)
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
