"""Measured quality: trained models against fresh exact samples and held-out digits."""

import json

import pytest
import torch

from scorelab.data import toy
from scorelab.demo import GMM3_SIGMAS, run_demo
from scorelab.metrics.modes import mode_statistics
from scorelab.runs import load_denoiser
from scorelab.sample import generate
from scorelab.train import TrainConfig, train

TRUE_WEIGHTS = [0.2, 0.6, 0.2]


def test_exact_gmm3_denoiser_meets_the_bars_with_the_demo_sampler():
    """Separates sampler error from model error: 18 Heun steps on the exact score."""
    dist = toy.load("gmm3", dtype=torch.float64)
    x, nfe = generate(dist.denoiser, (2,), range(10_000), dtype=torch.float64, batch_size=10_000, sigmas=GMM3_SIGMAS)
    stats = mode_statistics(x, dist.params["means"])
    assert nfe == 35
    assert stats["mode_weights"] == pytest.approx(TRUE_WEIGHTS, abs=0.03)
    assert max(stats["cov_eig_max_dev"]) < 0.15


def test_a_briefly_trained_mlp_recovers_the_gmm3_mode_weights(tmp_path):
    config = TrainConfig(data="gmm3", model="mlp", steps=1500, batch_size=512, lr=3e-3, ema_halflife=200,
                         checkpoint_every=1500, model_options={"width": 128}, device="cpu")
    train(config, tmp_path / "r", progress=False)
    denoiser, _ = load_denoiser(tmp_path / "r")
    x, _ = generate(denoiser, (2,), range(10_000), batch_size=10_000, sigmas=GMM3_SIGMAS)
    stats = mode_statistics(x, toy.load("gmm3").params["means"])
    assert stats["mode_weights"] == pytest.approx(TRUE_WEIGHTS, abs=0.03)


def test_demo_quick_writes_a_complete_summary(tmp_path):
    summary = run_demo(tmp_path, quick=True, progress=False)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["gmm3"]["mode_weights"] == summary["gmm3"]["mode_weights"]
    assert len(written["gmm3"]["mode_weights"]) == 3
    assert len(written["digits"]["samples"]["class_histogram"]) == 10
    assert (tmp_path / "gmm3" / "figures" / "samples.png").is_file()
    assert (tmp_path / "digits" / "figures" / "samples.png").is_file()


@pytest.mark.slow
def test_full_demo_meets_the_quality_bars(tmp_path):
    s = run_demo(tmp_path, progress=False)
    g, d = s["gmm3"], s["digits"]
    assert g["mode_weights"] == pytest.approx(TRUE_WEIGHTS, abs=0.03)
    assert max(g["cov_eig_max_dev"]) < 0.15
    assert g["sliced_wasserstein"] < 3 * g["sliced_wasserstein_floor"]
    real = d["held_out_real"]
    assert d["samples"]["confident_fraction"] > 0.8 * real["confident_fraction"]
    assert d["samples"]["class_histogram_tv"] < 0.15
    # not a copy of the training set: typical distance to the nearest training digit stays
    # comparable to that of held-out real digits
    assert d["samples"]["nearest_train_distance"]["median"] > 0.5 * real["nearest_train_distance"]["median"]
