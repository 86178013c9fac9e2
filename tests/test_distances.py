"""Sliced Wasserstein-2 and Fréchet distance against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from scorelab.metrics import frechet_distance, frechet_distance_features, sliced_wasserstein


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=_gen(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# ---------------------------------------------------------------- sliced Wasserstein


def test_sw_between_samples_of_one_gaussian_is_small_and_decreases_with_n():
    def mean_sw(n: int) -> float:
        values = []
        for seed in range(3):
            x = torch.randn(n, 3, generator=_gen(2 * seed), dtype=torch.float64)
            y = torch.randn(n, 3, generator=_gen(2 * seed + 1), dtype=torch.float64)
            values.append(sliced_wasserstein(x, y, n_projections=128, generator=_gen(99)))
        return sum(values) / len(values)

    small, large = mean_sw(100), mean_sw(10_000)
    assert small < 0.4
    assert large < 0.4 * small


def test_sw_of_an_exact_shift_is_norm_over_sqrt_d():
    # y = x + m, so every projection is shifted by theta.m and SW2^2 = E[(theta.m)^2] = |m|^2 / D.
    d = 5
    x = torch.randn(500, d, generator=_gen(0), dtype=torch.float64)
    m = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + m, n_projections=10_000, generator=_gen(1))
    assert sw == pytest.approx(float(m.norm()) / math.sqrt(d), rel=0.02)


def test_sw_against_an_independently_shifted_gaussian_matches_the_closed_form():
    d = 4
    m = torch.full((d,), 1.0, dtype=torch.float64)
    x = torch.randn(4_000, d, generator=_gen(0), dtype=torch.float64)
    y = torch.randn(4_000, d, generator=_gen(1), dtype=torch.float64) + m
    sw = sliced_wasserstein(x, y, n_projections=2_000, generator=_gen(2))
    # Tolerance: sampling noise of the means (~1 %) plus Monte Carlo over directions (~1 %).
    assert sw == pytest.approx(float(m.norm()) / math.sqrt(d), rel=0.06)


def test_sw_with_unequal_sizes_is_zero_for_the_same_empirical_distribution():
    x = torch.randn(300, 4, generator=_gen(0), dtype=torch.float64)
    assert sliced_wasserstein(x, torch.cat([x, x, x])) == pytest.approx(0.0, abs=1e-12)
    m = torch.tensor([3.0, 0.0, -4.0, 0.0], dtype=torch.float64)
    shifted = torch.cat([x, x]) + m
    equal_sizes = sliced_wasserstein(x, x + m, n_projections=64, generator=_gen(5))
    assert sliced_wasserstein(x, shifted, n_projections=64, generator=_gen(5)) == pytest.approx(
        equal_sizes, rel=1e-10
    )


def test_sw_with_unequal_sizes_matches_1d_w2_of_step_quantile_functions():
    # 1-D: x = {0, 1}, y = {0, 1, 2}; F^-1 = 0 on [0, 1/2), 1 on [1/2, 1); G^-1 = 0, 1, 2 on thirds.
    # W2^2 = (1/2 - 1/3) * 1 + (1 - 2/3) * 1 = 1/2.
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[2.0], [0.0], [1.0]], dtype=torch.float64)
    assert sliced_wasserstein(x, y, n_projections=4) == pytest.approx(math.sqrt(0.5), rel=1e-12)


def test_sw_is_reproducible_without_a_generator():
    x = torch.randn(100, 6, generator=_gen(0))
    y = torch.randn(80, 6, generator=_gen(1))
    assert sliced_wasserstein(x, y) == sliced_wasserstein(x, y)


def test_sw_refuses_mismatched_dimensions():
    with pytest.raises(ValueError, match="dims"):
        sliced_wasserstein(torch.zeros(3, 2), torch.zeros(3, 4))


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, -1.0, 2.0])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(mu1, a.diag(), mu2, b.diag()) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_in_1d_is_mean_and_std_differences_squared():
    m1, s1, m2, s2 = 0.5, 2.0, -1.0, 0.5
    fd = frechet_distance(torch.tensor([m1]), torch.tensor([[s1**2]]), torch.tensor([m2]), torch.tensor([[s2**2]]))
    assert fd == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12)


def test_frechet_distance_is_symmetric_and_zero_for_identical_inputs():
    mu1 = torch.randn(8, generator=_gen(0), dtype=torch.float64)
    mu2 = torch.randn(8, generator=_gen(1), dtype=torch.float64)
    c1, c2 = _spd(8, 2), _spd(8, 3)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(frechet_distance(mu2, c2, mu1, c1), rel=1e-10)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_matches_the_scipy_sqrtm_formula_on_random_spd_matrices():
    for seed in range(3):
        d = 10
        mu1, mu2 = (torch.randn(d, generator=_gen(10 * seed + k), dtype=torch.float64) for k in (0, 1))
        c1, c2 = _spd(d, 10 * seed + 2), _spd(d, 10 * seed + 3)
        root = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy()).real
        expected = float((mu1 - mu2).square().sum()) + float(np.trace(c1.numpy() + c2.numpy() - 2 * root))
        assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, abs=1e-6)


def test_frechet_distance_handles_singular_covariances():
    # Rank-1 covariances along orthogonal axes: tr(C1 C2) = 0, so FD = tr C1 + tr C2.
    c1 = torch.diag(torch.tensor([4.0, 0.0]))
    c2 = torch.diag(torch.tensor([0.0, 9.0]))
    assert frechet_distance(torch.zeros(2), c1, torch.zeros(2), c2) == pytest.approx(13.0, rel=1e-12)


def test_frechet_distance_refuses_a_matrix_that_is_not_a_covariance():
    c = torch.diag(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(torch.zeros(2), c, torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.zeros(2), torch.eye(2))


def test_frechet_distance_features_recovers_the_gaussian_distance():
    n, d = 200_000, 3
    x = torch.randn(n, d, generator=_gen(0), dtype=torch.float64)
    y = torch.randn(n, d, generator=_gen(1), dtype=torch.float64) * 2 + 1
    # N(0, I) vs N(1, 4 I): |1|^2 * 3 + 3 * (1 - 2)^2 = 6.
    assert frechet_distance_features(x, y) == pytest.approx(6.0, rel=0.02)
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_of_gaussians_with_commuting_covariances_is_the_closed_form():
    # C1 = Q diag(l1) Q^T, C2 = Q diag(l2) Q^T commute: W2^2 = |mu1 - mu2|^2 + sum (sqrt(l1) - sqrt(l2))^2.
    d = 6
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(0), dtype=torch.float64))
    l1 = torch.rand(d, generator=_gen(1), dtype=torch.float64) * 4
    l2 = torch.rand(d, generator=_gen(2), dtype=torch.float64) * 4
    mu1, mu2 = (torch.randn(d, generator=_gen(k), dtype=torch.float64) for k in (3, 4))
    expected = float((mu1 - mu2).square().sum() + (l1.sqrt() - l2.sqrt()).square().sum())
    fd = frechet_distance(mu1, (Q * l1) @ Q.T, mu2, (Q * l2) @ Q.T)
    assert fd == pytest.approx(expected, rel=1e-10)
