"""KID against brute force, the reference-statistics cache, features of samples and the eval command.

torch-fidelity (and torchvision) are never imported here: every test uses a fake extractor."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from scorelab.analytic import Gaussian
from scorelab.cli import main
from scorelab.metrics import fid
from scorelab.sample import generate
from scorelab.schedules import karras


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def brute_force_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit sums over pairs in float64."""
    x, y = x.double().tolist(), y.double().tolist()
    m, d = len(x), len(x[0])

    def k(a, b):
        return (sum(ai * bi for ai, bi in zip(a, b)) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return xx + yy - 2 * xy


# ---------------------------------------------------------------- KID


def test_kid_on_whole_sets_equals_brute_force_unbiased_mmd():
    x = torch.randn(12, 5, generator=_gen(0))
    y = torch.randn(12, 5, generator=_gen(1)) * 1.5 + 0.3
    # subset_size >= N: every subset is a permutation of the whole set, which MMD^2 does not see.
    kid = fid.kernel_inception_distance(x, y, subsets=3, subset_size=100, generator=_gen(2))
    assert kid == pytest.approx(brute_force_mmd2(x, y), rel=1e-12)


def test_kid_averages_brute_force_mmd_over_the_documented_random_subsets():
    x = torch.randn(20, 4, generator=_gen(0), dtype=torch.float64)
    y = torch.randn(15, 4, generator=_gen(1), dtype=torch.float64) + 1
    kid = fid.kernel_inception_distance(x, y, subsets=4, subset_size=6, generator=_gen(7))
    g = _gen(7)
    expected = []
    for _ in range(4):
        ix, iy = torch.randperm(20, generator=g)[:6], torch.randperm(15, generator=g)[:6]
        expected.append(brute_force_mmd2(x[ix], y[iy]))
    assert kid == pytest.approx(sum(expected) / 4, rel=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    x, y = torch.randn(400, 8, generator=_gen(0)), torch.randn(400, 8, generator=_gen(1))
    same = fid.kernel_inception_distance(x, y, subsets=10, subset_size=200)
    shifted = fid.kernel_inception_distance(x, y + 1, subsets=10, subset_size=200)
    assert abs(same) < 0.05 and shifted > 20 * abs(same)


# ---------------------------------------------------------------- reference cache


class Counter:
    def __init__(self, features):
        self.features, self.calls = features, 0

    def __call__(self):
        self.calls += 1
        return self.features


def test_reference_cache_reuses_and_recomputes_on_a_changed_key(tmp_path):
    compute = Counter(torch.randn(30, 3, generator=_gen(0)))
    key = fid.reference_key("digits", 30, "fake")
    first = fid.cached_reference(key, compute, tmp_path)
    second = fid.cached_reference(key, compute, tmp_path)
    assert compute.calls == 1
    mu, sigma = fid.reference_statistics(compute.features)
    assert torch.equal(second.mu, mu) and torch.equal(second.sigma, sigma)
    assert torch.equal(second.features, first.features)
    fid.cached_reference(fid.reference_key("digits", 31, "fake"), compute, tmp_path)
    assert compute.calls == 2 and len(list(tmp_path.glob("reference-*.safetensors"))) == 2


def test_reference_key_changes_when_the_weights_file_changes(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"a")
    before = fid.reference_key("digits", 30, "inception", weights)
    weights.write_bytes(b"bb")
    assert fid.reference_key("digits", 30, "inception", weights) != before


@pytest.mark.parametrize("damage", ["garbage", "flipped_byte"])
def test_a_corrupted_reference_cache_is_recomputed_not_trusted(tmp_path, damage):
    compute = Counter(torch.randn(30, 3, generator=_gen(0), dtype=torch.float64))
    key = fid.reference_key("digits", 30, "fake")
    fid.cached_reference(key, compute, tmp_path)
    (path,) = tmp_path.glob("reference-*.safetensors")
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not a safetensors file")
    else:  # the header still parses; one feature value changes
        data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="recomputing"):
        stats = fid.cached_reference(key, compute, tmp_path)
    assert compute.calls == 2 and torch.equal(stats.features, compute.features)
    fid.cached_reference(key, compute, tmp_path)  # rewritten, so trusted again
    assert compute.calls == 2


# ---------------------------------------------------------------- samples -> features -> metric


def test_to_uint8_matches_saving():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0, -1 + 0.5 / 127.5])
    assert fid.to_uint8(x).tolist() == [0, 0, 128, 255, 255, 0]  # round half to even, like np.rint


def pooled_pixels(images: torch.Tensor) -> torch.Tensor:
    """A fake extractor: 2x2 mean-pooled pixel values of uint8 images, as features."""
    assert images.dtype == torch.uint8
    return F.avg_pool2d(images.double(), 2).flatten(1)


@pytest.fixture(scope="module")
def image_model():
    torch.manual_seed(0)
    data = (torch.randn(200, 1, 4, 4, generator=_gen(0)) * 0.3).clamp(-1, 1)
    return Gaussian.fit(data.double()).float()


SETTINGS = {"sigmas": karras(4), "sampler": "heun"}


def sample_features(model, seeds, **settings):
    """The features of the samples of ``seeds``, as ``scorelab eval`` takes them: through generate's
    per-batch transform, so only features are kept."""
    return generate(model, (1, 4, 4), seeds, transform=lambda x: pooled_pixels(fid.to_uint8(x)),
                    **(SETTINGS | settings))[0]


def reference(images):
    features = fid.image_features(images, pooled_pixels)
    return fid.ReferenceStats(*fid.reference_statistics(features), features)


def test_sample_features_are_deterministic_by_seed_and_independent_of_the_batch_size(image_model):
    ref = reference((torch.randn(64, 1, 4, 4, generator=_gen(5)) * 0.3).clamp(-1, 1))
    seeds = list(range(24))
    a = fid.metric_from_features(sample_features(image_model, seeds, batch_size=24), ref)
    b = fid.metric_from_features(sample_features(image_model, seeds, batch_size=5), ref)
    c = fid.metric_from_features(sample_features(image_model, list(range(100, 124))), ref)
    # another batch layout rounds in another order; a pixel may then land on the next uint8 level
    assert a == pytest.approx(b, rel=1e-3) and a != pytest.approx(c, rel=1e-3) and math.isfinite(a)


def test_the_metric_is_zero_when_the_reference_is_the_samples_themselves(image_model):
    seeds = list(range(40))
    samples, _ = generate(image_model, (1, 4, 4), seeds, **SETTINGS)
    features = sample_features(image_model, seeds)
    assert fid.metric_from_features(features, reference(samples)) == pytest.approx(0, abs=1e-8)
    shifted = reference((samples + 0.5).clamp(-1, 1))
    other = fid.metric_from_features(sample_features(image_model, list(range(40, 80))), reference(samples))
    assert 0 < other < fid.metric_from_features(features, shifted)
    kid = fid.metric_from_features(features, reference(samples), "kid", kid_subset_size=20)
    assert abs(kid) < fid.metric_from_features(features, shifted, "kid", kid_subset_size=20)


# ---------------------------------------------------------------- scorelab eval


def run_cli(*args):
    return main(["--no-progress", *map(str, args)])


def test_eval_without_inception_weights_says_they_cannot_be_downloaded(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    assert run_cli("eval", tmp_path / "run", "--ref", "digits", "--n", 10, "--seeds", "0-9") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "cannot be downloaded here" in err
    assert "--inception-weights FILE" in err and fid.WEIGHTS_ENV in err
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    assert run_cli("eval", tmp_path / "run", "--ref", "digits", "--n", 10) == 2
    err = capsys.readouterr().err
    assert "missing.pth not found" in err and "cannot be downloaded here" in err


@pytest.mark.parametrize("seeds, message", [
    ("0-9", "holds 10 seeds but --n is 5"),
    ("5", "inclusive range A-B"),
    ("a-b", "inclusive range A-B"),
    ("1-2-3", "inclusive range A-B"),
    ("9-5", "range is empty"),
])
def test_eval_rejects_bad_seed_ranges(tmp_path, capsys, seeds, message):
    assert run_cli("eval", tmp_path / "run", "--ref", "digits", "--n", 5, "--seeds", seeds) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and message in err


def test_eval_command_on_a_tiny_digits_run_with_a_fake_extractor(tmp_path, capsys, monkeypatch):
    run = tmp_path / "d"
    assert run_cli("train", "--data", "digits", "--model", "unet", "--model-option", "model_channels=8",
                   "--steps", 2, "--batch-size", 16, "--device", "cpu", "--out", run) == 0
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not read by the fake extractor")
    made = []

    def fake_extractor(path, device):
        made.append(path)
        return pooled_pixels

    monkeypatch.setattr(fid, "inception_extractor", fake_extractor)
    monkeypatch.setenv("SCORELAB_CACHE", str(tmp_path / "cache"))
    args = ("eval", run, "--ref", "digits:test", "--ref-n", 50, "--n", 12, "--seeds", "100-111", "--steps", 2,
            "--batch-size", 5, "--inception-weights", weights, "--device", "cpu")
    assert run_cli(*args) == 0
    assert made == [weights] and len(list((tmp_path / "cache").glob("reference-*.safetensors"))) == 1
    result = json.loads((run / "eval" / "fid-heun-2-seeds100-111.json").read_text())
    assert result["n"] == 12 and result["reference_n"] == 50 and math.isfinite(result["value"])
    assert "FID" in capsys.readouterr().out
    assert run_cli(*args, "--metric", "kid", "--out", tmp_path / "kid.json") == 0
    assert json.loads((tmp_path / "kid.json").read_text())["metric"] == "kid"
