"""The shape classifier of the noisy-shapes benchmark: accuracy on held-out clean, noisy and eroded
shapes (labels known), rejection of non-shapes, the census, the cache and bad input."""

from __future__ import annotations

import pytest
import torch

from scorelab.data import shapes
from scorelab.metrics import shapes as shapes_metric
from scorelab.metrics.classifier import cached
from scorelab.metrics.shape_manifold import manifold_scores
from scorelab.metrics.shapes import ShapesClassifier, classify_shapes, get_classifier, shape_census, shape_kept


@pytest.fixture(scope="module", autouse=True)
def cache(module_cache):
    """Every test of this module uses one temporary cache (``conftest.module_cache``)."""
    return module_cache


@pytest.fixture(scope="module")
def classifier(cache) -> ShapesClassifier:
    return get_classifier(64)


@pytest.fixture(scope="module")
def held_out() -> shapes.NoisyShapes:
    """Noisy shapes from a seed the classifier's training stream never uses, with their labels."""
    return shapes.noisy_shapes(800, size=64, seed=12345)


def _accuracy(model: ShapesClassifier, x: torch.Tensor, labels: torch.Tensor) -> float:
    return float((classify_shapes(x, model).argmax(1) == labels).double().mean())


def test_training_batch_is_labelled_and_in_range():
    x, labels = shapes_metric.training_batch(16, 32, torch.Generator().manual_seed(0))
    assert x.shape == (16, 1, 32, 32) and labels.shape == (16,)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert set(labels.tolist()) <= set(range(len(shapes.SHAPES)))
    with pytest.raises(ValueError, match="divisible by 4"):
        shapes_metric.training_batch(10, 32, torch.Generator())


def test_blobs_are_compact_filled_ellipses():
    b = shapes_metric.blobs(64, 32, torch.Generator().manual_seed(1))
    inside = (b > 0).double().mean((1, 2, 3))
    assert float(b.min()) >= -1 and float(b.max()) <= 1
    # area pi * s1 * s2 / 4 of the frame, with semi-axes s in [0.1, 0.45]
    assert float(inside.min()) > 3.14 * 0.01 / 4 * 0.5 and float(inside.max()) < 3.14 * 0.45**2 / 4 * 1.2


def test_names_clean_noisy_and_eroded_shapes(classifier, held_out):
    """Held-out accuracy (labels known). The paper's corruption fools the matched filter of
    ``manifold_scores`` on ~13 % of the noisy images; the classifier must do much better."""
    labels = held_out.shape_index
    assert _accuracy(classifier, held_out.clean, labels) >= 0.99
    assert _accuracy(classifier, held_out.noisy, labels) >= 0.98
    eroded = shapes.corrupt(held_out.clean, labels, held_out.angles, torch.Generator().manual_seed(7), noise_std=0.0)
    assert _accuracy(classifier, eroded, labels) >= 0.98
    matched = float((manifold_scores(held_out.noisy)["shape"] == labels).double().mean())
    assert _accuracy(classifier, held_out.noisy, labels) > matched + 0.05


def test_census_of_noisy_data_matches_its_labels(classifier, held_out):
    census = shape_census(held_out.noisy, classifier)
    truth = torch.bincount(held_out.shape_index, minlength=4).double() / len(held_out.shape_index)
    for k, name in enumerate(shapes.SHAPES):
        assert census["shape_fraction"][name] == pytest.approx(float(truth[k]), abs=0.02)
    assert census["confident_fraction"] >= 0.95
    assert sum(census["confident_shape_fraction"].values()) == pytest.approx(1.0)


def test_shape_kept_counts_paired_changes_of_shape(classifier, held_out):
    """Half the images keep their shape (the clean original), the other half become the next shape
    at the same angle: the kept fractions follow the known pairing within the classifier's error."""
    n = 400
    reference, labels, angles = held_out.noisy[:n], held_out.shape_index[:n], held_out.angles[:n]
    changed = torch.arange(n) % 2 == 1
    images = held_out.clean[:n].clone()
    for i in torch.nonzero(changed).flatten().tolist():
        other = shapes.SHAPES[(int(labels[i]) + 1) % len(shapes.SHAPES)]
        images[i] = shapes.render(other, float(angles[i]), 64)
    kept = shape_kept(reference, images, classifier)
    for k, name in enumerate(shapes.SHAPES):
        truth = float((~changed[labels == k]).double().mean())
        assert kept[name] == pytest.approx(truth, abs=0.03)
    only_l = shape_kept(reference[labels == 0][:5], reference[labels == 0][:5], classifier)
    assert only_l["L"] == 1.0 and only_l["T"] is None
    with pytest.raises(ValueError, match="pair up"):
        shape_kept(reference, images[:-1], classifier)


def test_is_unconfident_on_non_shapes(classifier):
    g = torch.Generator().manual_seed(3)
    blob = shapes_metric.blobs(200, 64, g)
    noise = (torch.randn(200, 1, 64, 64, generator=g) * 0.5 - 0.5).clamp(-1, 1)
    assert shape_census(blob, classifier)["confident_fraction"] <= 0.05
    assert shape_census(noise, classifier)["confident_fraction"] <= 0.05


def test_the_shipped_classifier_is_used_and_a_cached_one_comes_first(classifier, monkeypatch, tmp_path):
    """The package ships the 32 and 64 px classifiers under their cache names: nothing trains, every
    machine measures with the same weights; a file in the cache (a retrained recipe) comes first."""
    from safetensors.torch import load_file, save_file

    from scorelab.metrics.classifier import SHIPPED

    def fail(*args, **kwargs):
        raise AssertionError("trained although a shipped classifier exists")

    monkeypatch.setattr(shapes_metric, "train_classifier", fail)
    for size in (32, 64):
        shipped = load_file(SHIPPED / shapes_metric.cache_path(size).name)
        assert all(torch.equal(get_classifier(size).state_dict()[k], v) for k, v in shipped.items())
    monkeypatch.setenv("SCORELAB_CACHE", str(tmp_path))
    other = {k: v + 1 for k, v in classifier.state_dict().items()}
    save_file(other, str(shapes_metric.cache_path(64)))
    assert all(torch.equal(get_classifier(64).state_dict()[k], v) for k, v in other.items())


@pytest.mark.slow
def test_the_recipe_trains_an_accurate_classifier(monkeypatch, tmp_path, held_out):
    """The shipped weights are what the recipe trains (about 2-3 minutes on one CPU thread): trained
    afresh here, on this machine's rounding, it names held-out noisy shapes as well."""
    from scorelab.metrics import classifier as classifier_module

    monkeypatch.setattr(classifier_module, "SHIPPED", tmp_path / "none")
    monkeypatch.setenv("SCORELAB_CACHE", str(tmp_path))
    trained = get_classifier(64)
    assert _accuracy(trained, held_out.noisy, held_out.shape_index) >= 0.98


def test_first_use_inside_no_grad_still_trains(tmp_path):
    """A metric's classifier is often first asked for while sampling, under torch.no_grad(); its
    training must still have gradients (it once failed there with 'does not require grad')."""
    def train() -> torch.nn.Module:
        model = torch.nn.Linear(2, 1)
        model(torch.ones(4, 2)).square().mean().backward()
        assert model.weight.grad is not None
        return model

    with torch.no_grad():
        cached(lambda: torch.nn.Linear(2, 1), train, tmp_path / "linear.safetensors")
    assert (tmp_path / "linear.safetensors").is_file()


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.zeros(2, 64, 64), "shape"),
        (torch.zeros(2, 1, 64, 64, dtype=torch.uint8), "floating"),
        (torch.full((2, 1, 64, 64), float("nan")), "NaN"),
        (torch.zeros(0, 1, 64, 64), "N >= 1"),
    ],
)
def test_bad_images_are_refused(images, match):
    with pytest.raises(ValueError, match=match):
        classify_shapes(images, ShapesClassifier())


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="size"):
        get_classifier(4)
