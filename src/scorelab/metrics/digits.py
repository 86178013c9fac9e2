"""A digits classifier as a quality measure for generated 8x8 digits (the Inception net of FID,
for scikit-learn's digits).

A small CNN is trained deterministically on the train split of :func:`scorelab.data.images.digits`
on first use (seconds on a CPU) and cached as safetensors; the 360 held-out digits are never
seen in training, so its accuracy on them is an honest check of the measure.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scorelab.data.images import digits, digits_split_indices
from scorelab.metrics.classifier import (
    cache_dir,
    cached,
    check_images,
    init_weights,
    outlier_exposure_loss,
    single_thread,
)
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


class DigitsClassifier(nn.Module):
    """Conv 1->32->64 (3x3), max-pool to 4x4, a 128-d feature layer, then 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, 128)
        self.head = nn.Linear(128, 10)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate (post-ReLU) features, ``(N, 128)``, of images ``(N, 1, 8, 8)``."""
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, 10)``."""
        return self.head(self.features(x))


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
    """Train on the digits train split (Adam, cosine learning-rate decay to 0, :func:`loss_fn`).

    Every draw comes from one generator seeded with ``seed``; the decay makes the final
    held-out accuracy stable across seeds (0.98-0.99). Runs on one CPU thread.
    """
    with single_thread():
        return _train(seed, epochs)


def _train(seed: int, epochs: int) -> DigitsClassifier:
    """The training loop of :func:`train_classifier`."""
    images, labels = digits("train")
    generator = torch.Generator().manual_seed(seed)
    model = DigitsClassifier()
    init_weights(model, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * -(-len(images) // BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(epochs):
        for index in torch.randperm(len(images), generator=generator).split(BATCH_SIZE):
            loss = loss_fn(model, images[index], labels[index], generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------- cache


def cache_path() -> Path:
    """Weights file, keyed by the version, training settings and train split, so any change retrains."""
    recipe = f"{VERSION}-{SEED}-{EPOCHS}-{BATCH_SIZE}-{LR}-{WEIGHT_DECAY}-{OUTLIER_WEIGHT}".encode()
    train_index = digits_split_indices()["train"].numpy().tobytes()
    key = hashlib.sha256(recipe + train_index).hexdigest()[:12]
    return cache_dir() / f"digits-classifier-v{VERSION}-{key}.safetensors"


def get_classifier(device: str | torch.device = "cpu") -> DigitsClassifier:
    """The digits classifier in eval mode: loaded from the cache, or trained and cached first."""
    return cached(DigitsClassifier, train_classifier, cache_path()).to(device)


# ---------------------------------------------------------------- quality measure


@torch.no_grad()
def _apply(model: DigitsClassifier, x: Tensor, fn: str) -> Tensor:
    """``model.forward`` or ``model.features`` over ``x`` in chunks, returned on the CPU."""
    device = next(model.parameters()).device
    method = getattr(model, fn)
    return torch.cat([method(c.to(device, torch.float32)).cpu() for c in x.split(CHUNK)])


def nearest_distances(x: Tensor, train: Tensor) -> Tensor:
    """For each row of ``x`` the smallest L2 distance to a row of ``train`` (both flattened)."""
    x, train = x.flatten(1).double(), train.flatten(1).double()
    if x.shape[1] != train.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} values per image, train {train.shape[1]}")
    mode = "donot_use_mm_for_euclid_dist"  # exact: a copy of a training image is at distance 0
    return torch.cat([torch.cdist(c, train, compute_mode=mode).amin(1) for c in x.split(1024)])


def _class_stats(probs: Tensor) -> dict[str, float | list[float]]:
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
    return _apply(get_classifier(), images, "forward").softmax(1)


def digits_quality(
    samples: Tensor, reference: Tensor | None = None, train: Tensor | None = None
) -> dict:
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
    result = _class_stats(classify_digits(samples))
    if reference is not None:
        ref_hist = _class_stats(_apply(model, reference, "forward").softmax(1))["class_histogram"]
        tv = 0.5 * sum(abs(a - b) for a, b in zip(result["class_histogram"], ref_hist))
        f_samples, f_ref = _apply(model, samples, "features"), _apply(model, reference, "features")
        result["frechet_distance"] = frechet_distance_features(f_samples, f_ref)
        result["class_histogram_tv"] = float(tv)
    if train is not None:
        d = nearest_distances(samples, train)
        result["nearest_train_distance"] = {"median": float(d.quantile(0.5)), "mean": float(d.mean())}
    return result
