"""A shape classifier for the noisy-shapes benchmark (MAD paper, Sec. 5.3): which of the four
shapes an image shows, robust to the erosion that both the corruption and MAD's soft thresholding
cause, and unconfident on images that show none of them.

:func:`scorelab.metrics.shape_manifold.manifold_scores` names the shape of an image by its
best-correlated clean rendering. That matched filter misreads eroded shapes: fragments correlate
best with the thin L and compact remains with the arrowhead, so the noisy training data, a quarter
of each shape by construction, read L 0.34 / T 0.28 / arrow 0.25 / crescent 0.13. This small CNN is
trained instead on labelled renderings (:func:`scorelab.data.shapes.clean`) under the paper's
corruption, under erosion without noise, under random milder or harsher corruptions, and at
random contrast and brightness, with outlier exposure (Hendrycks et al. 2019) on noise and on
blobs (filled ellipses), which are not shapes. Every batch is freshly drawn, so it never sees an
image twice. The 32 and 64 px classifiers ship with the package (their weights under their cache
names, :data:`scorelab.metrics.classifier.SHIPPED`), so every machine measures with the same network;
for another image size it is trained deterministically on first use (about two minutes on one CPU
thread) and cached as safetensors, like :mod:`scorelab.metrics.digits`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import torch
from torch import Tensor

from scorelab.data.shapes import SHAPES, Corruption, as_size, clean, corrupt
from scorelab.metrics.classifier import (
    ConvClassifier,
    cache_file,
    cached,
    check_images,
    fit,
    outlier_exposure_loss,
    single_thread,
)

VERSION = 1
SEED = 0
STEPS = 3000
BATCH_SIZE = 96  # labelled images per step (four corruption groups of 24), plus BATCH_SIZE // 4 outliers
LR = 2e-3
WEIGHT_DECAY = 1e-4
OUTLIER_WEIGHT = 0.5
CONFIDENT = 0.9
SIDE = 32  # the network sees every image area-resized to SIDE x SIDE
CHUNK = 2048


class ShapesClassifier(ConvClassifier):
    """Conv 1->16->32->64 (3x3, each followed by a 2x2 max-pool) on images area-resized to 32x32, a
    128-d feature layer, then one logit per shape, in the order of :data:`scorelab.data.shapes.SHAPES`."""

    chunk = CHUNK

    def __init__(self) -> None:
        super().__init__((1, 16, 32, 64), pool=(True, True, True), side=SIDE, classes=len(SHAPES), resize=True)


class ShapeCensus(TypedDict):
    """The result of :func:`shape_census`."""

    shape_fraction: dict[str, float]
    confident_fraction: float
    confident_shape_fraction: dict[str, float]


# ---------------------------------------------------------------- training data


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _contrast(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random per-image contrast ``c`` in [0.4, 1] and offset keeping the values in [-1, 1]
    (MAD's samples sit on a grey background and a dimmed shape)."""
    n = len(x)
    c = 0.4 + 0.6 * torch.rand(n, 1, 1, 1, generator=generator)
    offset = (1 - c) * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    return c * x + offset


def blobs(n: int, size: int, generator: torch.Generator) -> Tensor:
    """Filled, anti-aliased ellipses (semi-axes 0.1-0.45 of the half-frame, random centre within
    0.3 of the middle and random orientation) on a -1 background: compact images that are none of
    the shapes."""
    c = (torch.arange(size) + 0.5) * (2 / size) - 1
    y, x = (-c)[:, None], c[None, :]
    draw = torch.rand(n, 5, generator=generator)
    semi = 0.1 + 0.35 * draw[:, :2]
    centre = 0.6 * draw[:, 2:4] - 0.3
    theta = math.pi * draw[:, 4]
    dx, dy = x - centre[:, 0, None, None], y - centre[:, 1, None, None]
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    u, v = (cos * dx + sin * dy) / semi[:, 0, None, None], (cos * dy - sin * dx) / semi[:, 1, None, None]
    edge = (u * u + v * v).sqrt() - 1  # in units of the semi-axes: scale by the smaller one
    sdf = edge * semi.min(1).values[:, None, None]
    return ((0.5 - sdf * (size / 2)).clamp(0, 1) * 2 - 1).unsqueeze(1)


def outliers(n: int, size: int, generator: torch.Generator) -> Tensor:
    """Non-shapes: Gaussian noise on a random background, or :func:`blobs` with a little noise, half each."""
    background = -torch.rand(n, 1, 1, 1, generator=generator)
    spread = 0.1 + 0.9 * torch.rand(n, 1, 1, 1, generator=generator)
    noise = background + spread * torch.randn(n, 1, size, size, generator=generator)
    blob = blobs(n, size, generator) + 0.3 * torch.rand(n, 1, 1, 1, generator=generator) * torch.randn(
        n, 1, size, size, generator=generator)
    pick_noise = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    return _contrast(torch.where(pick_noise, noise, blob).clamp(-1, 1), generator)


def training_batch(n: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` labelled images (``n`` divisible by 4) and their shape indices, a quarter each:

    1. clean renderings;
    2. the paper's corruption (:func:`scorelab.data.shapes.corrupt` defaults), as in the data set;
    3. erosion alone: 10-80 bumps of width 0.02-0.045 and no pixel noise;
    4. a random corruption: 0-80 bumps of width 0.015-0.04, pixel noise std 0-1.5;

    each then at a random contrast and brightness. The corruption strengths of groups 3 and 4 are
    drawn once per batch (``corrupt`` takes scalars), so many batches cover their ranges."""
    if n % 4:
        raise ValueError(f"n must be divisible by 4, got {n}")
    images, shape_index, angles = clean(n, size, generator)
    q = n // 4
    groups: list[Corruption] = [
        {},
        {"n_bumps": int(torch.randint(10, 81, (), generator=generator)),
         "bump_width": _uniform(generator, 0.02, 0.045), "noise_std": 0.0},
        {"n_bumps": int(torch.randint(0, 81, (), generator=generator)),
         "bump_width": _uniform(generator, 0.015, 0.04), "noise_std": _uniform(generator, 0.0, 1.5)},
    ]
    parts = [images[:q]]
    for k, params in enumerate(groups, start=1):
        rows = slice(k * q, (k + 1) * q)
        parts.append(corrupt(images[rows], shape_index[rows], angles[rows], generator, **params))
    return _contrast(torch.cat(parts), generator), shape_index


def loss_fn(model: ShapesClassifier, size: int, generator: torch.Generator) -> Tensor:
    """Cross-entropy on a :func:`training_batch` plus outlier exposure on :func:`outliers`
    (:func:`outlier_exposure_loss`), which keeps the classifier unconfident on images of no shape."""
    x, labels = training_batch(BATCH_SIZE, size, generator)
    logits = model(torch.cat([x, outliers(BATCH_SIZE // 4, size, generator)]))
    return outlier_exposure_loss(logits, labels, OUTLIER_WEIGHT)


def train_classifier(size: int = 64, seed: int = SEED, steps: int = STEPS) -> ShapesClassifier:
    """Train on ``steps`` freshly drawn batches of ``size``-pixel images (:func:`loss_fn`;
    :func:`~scorelab.metrics.classifier.fit`: Adam, cosine decay to 0, one CPU thread), every draw
    from one generator seeded with ``seed``."""

    def losses(model: ShapesClassifier, generator: torch.Generator) -> Iterator[Tensor]:
        for _ in range(steps):
            yield loss_fn(model, size, generator)

    return fit(ShapesClassifier(), losses, steps, seed=seed, lr=LR, weight_decay=WEIGHT_DECAY)


# ---------------------------------------------------------------- cache and measure


def cache_path(size: int) -> Path:
    """Weights file for ``size``-pixel images, keyed by the version and training settings."""
    recipe = f"{VERSION}-{size}-{SEED}-{STEPS}-{BATCH_SIZE}-{LR}-{WEIGHT_DECAY}-{OUTLIER_WEIGHT}-{SIDE}"
    return cache_file(f"shapes-classifier-v{VERSION}-{size}px", recipe.encode())


def get_classifier(size: int = 64, device: str | torch.device = "cpu") -> ShapesClassifier:
    """The classifier for ``size``-pixel images: loaded from the cache, or trained and cached first."""
    size = as_size(size)
    return cached(ShapesClassifier, lambda: train_classifier(size), cache_path(size)).to(device)


@torch.no_grad()
def classify_shapes(images: Tensor, model: ShapesClassifier | None = None) -> Tensor:
    """Shape probabilities ``(N, 4)`` of images ``(N, 1, S, S)`` in [-1, 1] (values are clipped), from
    ``model`` or the cached classifier for ``S``-pixel images."""
    check_images(images, "images")
    model = get_classifier(images.shape[-1]) if model is None else model
    with single_thread():
        return model.probabilities(images.clamp(-1, 1))


def shape_census(images: Tensor, model: ShapesClassifier | None = None) -> ShapeCensus:
    """How many images show each shape, by :func:`classify_shapes`:

    - ``shape_fraction``: fraction of all images whose most probable shape is each shape;
    - ``confident_fraction``: fraction classified with probability above ``CONFIDENT`` (0.9);
    - ``confident_shape_fraction``: each shape's fraction among those confident images
      (all zeros when there are none).
    """
    probs = classify_shapes(images, model)
    confidence, label = probs.max(1)
    n = len(label)
    counts = torch.bincount(label, minlength=len(SHAPES)).double()
    sure = label[confidence > CONFIDENT]
    sure_counts = torch.bincount(sure, minlength=len(SHAPES)).double()
    return {
        "shape_fraction": {name: float(counts[k] / n) for k, name in enumerate(SHAPES)},
        "confident_fraction": len(sure) / n,
        "confident_shape_fraction": {name: float(sure_counts[k] / max(len(sure), 1)) for k, name in enumerate(SHAPES)},
    }


def shape_kept(reference: Tensor, images: Tensor, model: ShapesClassifier | None = None) -> dict[str, float | None]:
    """For each shape, the fraction of ``reference`` images of that shape (by :func:`classify_shapes`)
    whose paired image (the same index: the same seed under another sampler) shows it too; ``None``
    for a shape no reference image shows. Paired, it tells a sampler that changes shapes from one
    whose seeds merely drew fewer of them."""
    if reference.shape != images.shape:
        raise ValueError(f"reference and images must pair up one to one, got shapes {tuple(reference.shape)} "
                         f"and {tuple(images.shape)}")
    before = classify_shapes(reference, model).argmax(1)
    after = classify_shapes(images, model).argmax(1)
    kept: dict[str, float | None] = {}
    for k, name in enumerate(SHAPES):
        mine = before == k
        kept[name] = float((after[mine] == k).double().mean()) if mine.any() else None
    return kept


def gaussian_blur(images: Tensor, width: float = 1.5) -> Tensor:
    """Images ``(N, C, H, W)`` blurred by a separable Gaussian of standard deviation ``width`` pixels
    (truncated at 2.5 ``width``, edges replicated): the deliberately blurred clean set that the
    measures of :func:`clean_distances` must tell from clean images."""
    if not width > 0:
        raise ValueError(f"width must be > 0 pixels, got {width}")
    r = math.ceil(2.5 * width)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=images.dtype) ** 2 / (2 * width**2))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    x = torch.nn.functional.pad(images, (r, r, 0, 0), mode="replicate")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = torch.nn.functional.pad(x, (0, 0, r, r), mode="replicate")
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class CleanDistances(TypedDict):
    """Distances of a sample set to clean images, from :func:`clean_distances`."""

    pixel_w1: float
    frechet_clean: float


def clean_distances(images: Tensor, clean_images: Tensor, model: ShapesClassifier | None = None) -> CleanDistances:
    """Measures that a blurred or grey image fails and a clean one passes, unlike the best
    correlation (which ignores offset and scale and tolerates blur: a posterior mean, a grey and
    blurred shape, can out-score a sharp one):

    - ``pixel_w1``: the Wasserstein-1 distance between the distributions of pixel values of
      ``images`` and of ``clean_images`` (all pixels pooled, in [-1, 1] units). Clean shapes are
      two-valued; grey, blurred or noisy pixels move mass between the two values.
    - ``frechet_clean``: the Frechet distance between the shape classifier's 128-d features of
      ``images`` and of ``clean_images`` (Heusel et al. 2017, eq. 6, on these features).

    ``clean_images`` should be a fresh clean draw, not the set the images are compared with elsewhere.
    Both sets ``(N, 1, S, S)`` of one size."""
    from scipy.stats import wasserstein_distance

    from scorelab.metrics.distances import frechet_distance_features

    check_images(images, "images")
    check_images(clean_images, "clean_images")
    if images.shape[1:] != clean_images.shape[1:]:
        raise ValueError(f"images {tuple(images.shape[1:])} and clean_images {tuple(clean_images.shape[1:])} differ")
    model = get_classifier(images.shape[-1]) if model is None else model
    with single_thread(), torch.no_grad():
        f_images = model.in_chunks(images.clamp(-1, 1), features=True)
        f_clean = model.in_chunks(clean_images.clamp(-1, 1), features=True)
    return {
        "pixel_w1": float(wasserstein_distance(images.flatten().double().numpy(), clean_images.flatten().double().numpy())),
        "frechet_clean": frechet_distance_features(f_images.double(), f_clean.double()),
    }
