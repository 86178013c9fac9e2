"""A digits classifier as a quality measure for generated 8x8 digits (the Inception net of FID,
for scikit-learn's digits).

A small CNN is trained deterministically on the train split of :func:`scorelab.data.images.digits`
on first use (seconds on a CPU) and cached as safetensors; the 360 held-out digits are never
seen in training, so its accuracy on them is an honest check of the measure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from scorelab.data.images import digits, digits_split_indices
from scorelab.metrics.classifier import ConvClassifier, cache_file, cached, check_images, fit, outlier_exposure_loss
from scorelab.metrics.distances import frechet_distance_features

VERSION = 1
SEED = 0
EPOCHS = 20
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4
OUTLIER_WEIGHT = 0.5
CONFIDENT = 0.9
CHUNK = 4096


class DigitsClassifier(ConvClassifier):
    """Conv 1->32->64 (3x3), max-pool to 4x4, a 128-d feature layer, then 10 logits, on 8x8 images."""

    chunk = CHUNK

    def __init__(self) -> None:
        super().__init__((1, 32, 64), pool=(False, True), side=8, classes=10)


class ClassStats(TypedDict):
    """What :func:`digits_quality` reports for any set of images."""

    confident_fraction: float
    mean_confidence: float
    class_histogram: list[float]


class NearestDistance(TypedDict):
    """Median and mean L2 distance of the samples to their nearest training image."""

    median: float
    mean: float


class DigitsQuality(ClassStats, total=False):
    """:func:`digits_quality`'s result: :class:`ClassStats`, plus the comparisons with a reference
    set (``frechet_distance``, ``class_histogram_tv``) and with the training set
    (``nearest_train_distance``) when those are given."""

    frechet_distance: float
    class_histogram_tv: float
    nearest_train_distance: NearestDistance


# ---------------------------------------------------------------- training


def random_shift(x: Tensor, generator: torch.Generator) -> Tensor:
    """Shift each image by a random -1, 0 or +1 pixel along each axis, filling with background -1."""
    n, _, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (2, n, 1), generator=generator)
    rows = (torch.arange(h) + dy)[:, :, None]
    cols = (torch.arange(w) + dx)[:, None, :]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def outliers(images: Tensor, generator: torch.Generator) -> Tensor:
    """Non-digits of the same shape: uniform noise or digits with their pixels shuffled, half each."""
    n = len(images)
    noise = torch.rand(images.shape, generator=generator) * 2 - 1
    order = torch.rand(n, images[0].numel(), generator=generator).argsort(1)
    shuffled = images.flatten(1).gather(1, order).view_as(images)
    pick_noise = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    return torch.where(pick_noise, noise, shuffled)


def loss_fn(model: DigitsClassifier, x: Tensor, labels: Tensor, generator: torch.Generator) -> Tensor:
    """Cross-entropy on shifted digits plus outlier exposure on non-digits (:func:`outlier_exposure_loss`),
    so ``confident_fraction`` measures digit-likeness."""
    logits = model(torch.cat([random_shift(x, generator), outliers(x, generator)]))
    return outlier_exposure_loss(logits, labels, OUTLIER_WEIGHT)


def train_classifier(seed: int = SEED, epochs: int = EPOCHS) -> DigitsClassifier:
    """Train on the digits train split (:func:`~scorelab.metrics.classifier.fit`: Adam, cosine
    learning-rate decay to 0, one CPU thread) with :func:`loss_fn`, in shuffled batches.

    Every draw comes from one generator seeded with ``seed``; the decay makes the final
    held-out accuracy stable across seeds (0.98-0.99).
    """
    images, labels = digits("train")

    def losses(model: DigitsClassifier, generator: torch.Generator) -> Iterator[Tensor]:
        for _ in range(epochs):
            for index in torch.randperm(len(images), generator=generator).split(BATCH_SIZE):
                yield loss_fn(model, images[index], labels[index], generator)

    steps = epochs * -(-len(images) // BATCH_SIZE)
    return fit(DigitsClassifier(), losses, steps, seed=seed, lr=LR, weight_decay=WEIGHT_DECAY)


# ---------------------------------------------------------------- cache


def cache_path() -> Path:
    """Weights file, keyed by the version, training settings and train split, so any change retrains."""
    recipe = f"{VERSION}-{SEED}-{EPOCHS}-{BATCH_SIZE}-{LR}-{WEIGHT_DECAY}-{OUTLIER_WEIGHT}".encode()
    train_index = digits_split_indices()["train"].numpy().tobytes()
    return cache_file(f"digits-classifier-v{VERSION}", recipe + train_index)


def get_classifier(device: str | torch.device = "cpu") -> DigitsClassifier:
    """The digits classifier in eval mode: loaded from the cache, or trained and cached first."""
    return cached(DigitsClassifier, train_classifier, cache_path()).to(device)


# ---------------------------------------------------------------- quality measure


def nearest_distances(x: Tensor, train: Tensor) -> Tensor:
    """For each row of ``x`` the smallest L2 distance to a row of ``train`` (both flattened)."""
    x, train = x.flatten(1).double(), train.flatten(1).double()
    if x.shape[1] != train.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} values per image, train {train.shape[1]}")
    mode = "donot_use_mm_for_euclid_dist"  # exact: a copy of a training image is at distance 0
    return torch.cat([torch.cdist(c, train, compute_mode=mode).amin(1) for c in x.split(1024)])


def _class_stats(probs: Tensor) -> ClassStats:
    """Confident fraction, mean confidence and argmax-class histogram of softmax outputs."""
    confidence, label = probs.max(1)
    histogram = torch.bincount(label, minlength=10).double() / len(label)
    return {
        "confident_fraction": float((confidence > CONFIDENT).double().mean()),
        "mean_confidence": float(confidence.double().mean()),
        "class_histogram": [float(v) for v in histogram],
    }


def classify_digits(images: Tensor) -> Tensor:
    """Class probabilities ``(N, 10)`` of the digits classifier (trained and cached on first use)."""
    check_images(images, "images", 8)
    return get_classifier().probabilities(images)


def digits_quality(samples: Tensor, reference: Tensor | None = None, train: Tensor | None = None) -> DigitsQuality:
    """Quality of generated digits ``(N, 1, 8, 8)`` as JSON-ready floats and lists.

    Always: ``confident_fraction`` (max softmax probability > 0.9), ``mean_confidence`` and
    ``class_histogram`` (10 fractions of argmax classes). With ``reference`` images:
    ``frechet_distance`` between the classifier's 128-d features of samples and reference, and
    ``class_histogram_tv`` (total variation between the two class histograms). With ``train``:
    ``nearest_train_distance`` = {"median", "mean"} of each sample's L2 distance to its nearest
    training image, which drops to 0 for a model that copies its training set.
    """
    check_images(samples, "samples", 8)
    if reference is not None:
        check_images(reference, "reference", 8)
    model = get_classifier()
    result: DigitsQuality = {**_class_stats(classify_digits(samples))}
    if reference is not None:
        ref_hist = _class_stats(model.probabilities(reference))["class_histogram"]
        tv = 0.5 * sum(abs(a - b) for a, b in zip(result["class_histogram"], ref_hist))
        f_samples, f_ref = model.in_chunks(samples, features=True), model.in_chunks(reference, features=True)
        result["frechet_distance"] = frechet_distance_features(f_samples, f_ref)
        result["class_histogram_tv"] = float(tv)
    if train is not None:
        d = nearest_distances(samples, train)
        result["nearest_train_distance"] = {"median": float(d.quantile(0.5)), "mean": float(d.mean())}
    return result
