"""The digits experiments of examples/ncsn_digits.py (experiments 3-5), checked where the answer
is known: with the digits' own Gaussian as the denoiser, and (slow) with a briefly trained NCSN."""

import importlib.util
from pathlib import Path

import pytest
import torch

from scorelab.analytic import Gaussian
from scorelab.data.images import digits
from scorelab.sample import annealed_langevin, inpaint, side_mask, unknown_rmse
from scorelab.schedules import parse_levels

LEVELS = parse_levels("geometric:1:0.1:10")


def _example():
    path = Path(__file__).parents[1] / "examples" / "ncsn_digits.py"
    spec = importlib.util.spec_from_file_location("ncsn_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gaussian():
    return Gaussian.fit(digits("train")[0].double())


def _covariance_error(x: torch.Tensor, model: Gaussian, sigma: float) -> float:
    """Relative Frobenius error of the samples' covariance against the sigma-noised Gaussian's."""
    x = x.flatten(1)
    target = model.U @ torch.diag(model.lam) @ model.U.T + sigma**2 * torch.eye(x.shape[1], dtype=x.dtype)
    return float(torch.linalg.matrix_norm(torch.cov(x.T) - target) / torch.linalg.matrix_norm(target))


def test_step_size_decides_whether_annealed_langevin_reaches_the_noised_digits_law(gaussian):
    """Experiment 4's mechanism with an exact score: the digits' Gaussian, whose sigma_L-noised law is
    known. At eps = 2e-3 (alpha_i / sigma_i^2 = 0.2, NCSN's ratio) 100 steps per level reach it: the
    covariance error of 1000 samples is 0.141, against 0.126 for 1000 exact draws. At eps = 2e-5 the
    chain does not get there (0.785)."""
    errors = {}
    for eps in (2e-3, 2e-5):
        g = torch.Generator().manual_seed(0)
        x0 = LEVELS[0] * torch.randn(1000, 1, 8, 8, generator=g, dtype=torch.float64)
        x = annealed_langevin(gaussian, x0, LEVELS, eps=eps, steps_per_level=100, generator=g)
        errors[eps] = _covariance_error(x, gaussian, float(LEVELS[-1]))
    assert errors[2e-3] < 0.2 and errors[2e-5] > 0.5, errors


def test_inpainting_digits_with_their_gaussian_beats_the_blank_half(gaussian):
    """Experiment 5's measures on a denoiser with no training: the Gaussian conditional fills the hidden
    bottom half of the 360 held-out digits closer to the truth (RMSE) and more recognisably (classifier
    agreement with the label) than leaving it blank; the known half is kept exactly."""
    ex = _example()
    images, labels = (t.double() if t.is_floating_point() else t for t in digits("test"))
    mask = side_mask((1, 8, 8), "bottom").double()
    levels = torch.cat([LEVELS, LEVELS.new_zeros(1)])  # ending with the denoising step
    filled = inpaint(gaussian, images, mask, levels, eps=2e-3, steps_per_level=50,
                     generator=torch.Generator().manual_seed(0))
    blank = mask * images - (1 - mask)
    assert torch.equal(filled[..., :4, :], images[..., :4, :])
    assert unknown_rmse(filled, images, mask) < 0.8 * unknown_rmse(blank, images, mask)
    assert ex.accuracy(filled.float(), labels) > ex.accuracy(blank.float(), labels) + 0.1


def test_inpainting_measures_on_known_cases():
    ex = _example()
    images, _ = digits("test")
    mask = side_mask((1, 8, 8), "left")
    assert unknown_rmse(images, images, mask) == 0
    shifted = images + mask * 0.3 - (1 - mask) * 0.5  # only the hidden half's error counts
    assert unknown_rmse(shifted, images, mask) == pytest.approx(0.5, rel=1e-6)
    train = digits("train")[0]
    torch.testing.assert_close(ex.nearest_completion(train[:20], mask, train), train[:20])


@pytest.mark.slow
def test_a_briefly_trained_ncsn_samples_recognisable_digits(tmp_path, monkeypatch):
    """Experiment 3 at small scale: 800 training steps of the geometric-schedule NCSN, 200 annealed
    Langevin samples; most are classified with confidence (the full run: examples/README.md)."""
    ex = _example()
    monkeypatch.setattr(ex, "RUNS", tmp_path)
    denoiser, _ = ex.train_ncsn(ex.SCHEDULES["geometric"], 800)
    q = ex.quality(ex.sample(denoiser, ex.SCHEDULES["geometric"], 200)["denoised"])
    assert q["confident"] > 0.5, q
