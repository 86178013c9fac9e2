"""The digits classifier as a quality measure: accuracy on held-out digits, cache, metrics."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from scorelab.data.images import digits, load_digits
from scorelab.metrics import digits as digits_metric
from scorelab.metrics.classifier import init_weights
from scorelab.metrics.digits import DigitsClassifier, digits_quality, get_classifier


@pytest.fixture(scope="module", autouse=True)
def cache(module_cache):
    """Every test of this module uses one temporary cache (``conftest.module_cache``)."""
    return module_cache


@pytest.fixture(scope="module")
def classifier(cache) -> DigitsClassifier:
    return get_classifier()


def _noise(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_classifier_is_over_97_percent_accurate_on_held_out_digits(classifier):
    x, y = digits("test")
    with torch.no_grad():
        accuracy = (classifier(x).argmax(1) == y).double().mean()
    assert accuracy > 0.97


def test_classifier_is_in_eval_mode_with_128_features(classifier):
    assert not classifier.training
    assert classifier.features(load_digits("test")[:5]).shape == (5, 128)


def test_held_out_digits_are_confidently_classified_and_noise_is_not(classifier):
    real = digits_quality(load_digits("test"))
    noise = digits_quality(_noise(360, 0))
    assert real["confident_fraction"] > 0.85
    assert noise["confident_fraction"] < 0.3 * real["confident_fraction"]
    assert noise["mean_confidence"] < real["mean_confidence"]


def test_class_histogram_of_held_out_digits_covers_all_ten_classes(classifier):
    histogram = digits_quality(load_digits("test"))["class_histogram"]
    assert len(histogram) == 10 and sum(histogram) == pytest.approx(1.0)
    assert min(histogram) > 0.05


def test_quality_results_are_plain_json_values(classifier):
    train = load_digits("train")
    result = digits_quality(load_digits("test"), reference=train, train=train)
    assert json.loads(json.dumps(result)) == result


def test_nearest_train_distance_is_zero_for_training_images_and_positive_for_held_out(classifier):
    train = load_digits("train")
    copied = digits_quality(train[:300], train=train)["nearest_train_distance"]
    assert copied == {"median": 0.0, "mean": 0.0}
    held_out = digits_quality(load_digits("test"), train=train)["nearest_train_distance"]
    assert held_out["median"] > 1.0 and held_out["mean"] > 1.0


def test_feature_frechet_distance_separates_digits_from_noise(classifier):
    train, test = load_digits("train"), load_digits("test")
    real = digits_quality(test, reference=train)
    noise = digits_quality(_noise(360, 1), reference=train)
    assert real["frechet_distance"] < 0.2 * noise["frechet_distance"]
    assert real["class_histogram_tv"] < 0.1 < noise["class_histogram_tv"]


def test_quality_refuses_images_that_are_not_8x8_digits(classifier):
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        digits_quality(torch.zeros(4, 1, 16, 16))
    x = torch.zeros(2, 1, 8, 8)
    x[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite"):
        digits_quality(x)


def test_cached_classifier_is_reused_without_retraining(classifier, monkeypatch):
    path = digits_metric.cache_path()
    assert path.is_file() and "-v1-" in path.name
    mtime = path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("retrained although the cache was valid")

    monkeypatch.setattr(digits_metric, "train_classifier", fail)
    again = get_classifier()
    assert path.stat().st_mtime_ns == mtime
    for name, value in classifier.state_dict().items():
        assert torch.equal(again.state_dict()[name], value)


def test_corrupted_cache_file_is_retrained_and_replaced(monkeypatch, tmp_path):
    monkeypatch.setenv("SCORELAB_CACHE", str(tmp_path))
    path = digits_metric.cache_path()
    path.write_bytes(b"not a safetensors file")
    calls = []

    def fake_train(*args, **kwargs):  # a quick stand-in: the cache logic is under test here
        calls.append(1)
        model = DigitsClassifier()
        init_weights(model, torch.Generator().manual_seed(0))
        return model.eval()

    monkeypatch.setattr(digits_metric, "train_classifier", fake_train)
    model = get_classifier()
    assert calls == [1]
    stored = load_file(path)
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    get_classifier()
    assert calls == [1]


def test_training_is_deterministic_for_a_seed():
    a = digits_metric.train_classifier(seed=3, epochs=1).state_dict()
    b = digits_metric.train_classifier(seed=3, epochs=1).state_dict()
    c = digits_metric.train_classifier(seed=4, epochs=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])
