import math

import pytest
import torch

from scorelab import schedules


def test_karras_has_n_plus_one_values_from_sigma_max_to_sigma_min_then_zero():
    s = schedules.karras(18, 0.002, 80.0, 7.0)
    assert s.shape == (19,)
    assert s[0].item() == pytest.approx(80.0, rel=1e-12)
    assert s[-2].item() == pytest.approx(0.002, rel=1e-12)
    assert s[-1].item() == 0.0
    assert bool((s[1:] < s[:-1]).all())


def test_karras_is_uniform_in_sigma_to_one_over_rho():
    s = schedules.karras(10, 0.01, 10.0, rho=3.0)[:-1] ** (1 / 3)
    steps = s[1:] - s[:-1]
    assert torch.allclose(steps, steps[0].expand_as(steps), rtol=1e-10)


def test_geometric_levels_have_constant_ratio():
    s = schedules.geometric(10, 1.0, 0.01)
    assert s[0].item() == pytest.approx(1.0) and s[-1].item() == pytest.approx(0.01)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-10)


def test_linear_and_sqrt_follow_their_formulas():
    L, s1, sL = 10, 1.0, 0.1
    lin, sq = schedules.linear(L, s1, sL), schedules.sqrt(L, s1, sL)
    for i in range(1, L + 1):
        assert lin[i - 1].item() == pytest.approx(s1 + (sL - s1) * (i - 1) / (L - 1), rel=1e-12)
        assert sq[i - 1].item() == pytest.approx(s1 + (sL - s1) * math.sqrt((i - 1) / (L - 1)), rel=1e-12)


@pytest.mark.parametrize("fn", [schedules.geometric, schedules.linear, schedules.sqrt])
def test_level_schedules_reject_bad_ranges(fn):
    with pytest.raises(ValueError):
        fn(10, 0.1, 1.0)  # sigma_max < sigma_min
    with pytest.raises(ValueError):
        fn(1, 1.0, 0.1)
    with pytest.raises(ValueError):
        fn(10, 1.0, 0.0)


def test_parse_levels_reads_kind_range_and_count():
    s = schedules.parse_levels("geometric:1:0.01:10")
    assert torch.allclose(s, schedules.geometric(10, 1.0, 0.01))
    with pytest.raises(ValueError, match="KIND"):
        schedules.parse_levels("cosine:1:0.1:10")


def test_lognormal_draws_have_the_requested_log_moments():
    g = torch.Generator().manual_seed(0)
    log_sigma = schedules.LogNormal(-1.2, 1.2).sample(200_000, g).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.01)


def test_loguniform_and_discrete_stay_in_their_support():
    g = torch.Generator().manual_seed(0)
    s = schedules.LogUniform(0.01, 1.0).sample(10_000, g)
    assert s.min() >= 0.01 and s.max() <= 1.0
    assert s.log().mean().item() == pytest.approx((math.log(0.01) + math.log(1.0)) / 2, abs=0.03)
    levels = (1.0, 0.5, 0.25)
    d = schedules.DiscreteLevels(levels).sample(1000, g)
    assert set(d.tolist()) == set(levels)
