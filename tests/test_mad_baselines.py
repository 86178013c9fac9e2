"""MAD's baselines and extensions: the early-stop sampler, the second-order MAD, the closed-form
Gaussian response behind the automatic (a, b), and the measures a blurred image fails."""

from __future__ import annotations

import math

import pytest
import torch

from scorelab.analytic import Gaussian
from scorelab.data import shapes
from scorelab.data.toy import load
from scorelab.metrics.shape_manifold import manifold_scores, summarize
from scorelab.metrics.shapes import clean_distances, gaussian_blur
from scorelab.sample import CountNFE, early_stop, heun, mad, mad_heun
from scorelab.sample.mad_tuning import auto_parameters, faithful, gaussian_response, noise_variance
from scorelab.schedules import karras

F64 = torch.float64


def gaussian_1d(v: float) -> Gaussian:
    return Gaussian(torch.zeros(1, dtype=F64), U=torch.eye(1, dtype=F64), lam=torch.tensor([v], dtype=F64))


def start(n: int, sigma: float, seed: int = 0, dim: int = 1) -> torch.Tensor:
    return sigma * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------- early stop

@pytest.mark.parametrize("from_end", [False, True])
def test_early_stop_gives_the_posterior_mean_at_sigma_stop(from_end):
    """N(0, v), exact denoiser, a fine grid: the PF-ODE reaches x_s ~ N(0, v + s^2) at sigma_stop = s
    (or x_0 ~ N(0, v) at the end), and D(x, s) = v / (v + s^2) x, so the output variance is
    v^2 / (v + s^2) (or v^3 / (v + s^2)^2). Tolerance: 4 standard errors of a variance estimate from
    n samples, sqrt(2 / n) relative, plus the 200-step Heun error (below 1e-4 here)."""
    v, s, n = 2.0, 0.7, 20_000
    x = start(n, 80.0)
    out = early_stop(gaussian_1d(v), x, karras(200, 0.002, 80.0).double(), sigma_stop=s, from_end=from_end)
    expected = v**3 / (v + s**2) ** 2 if from_end else v**2 / (v + s**2)
    assert float(out.var()) == pytest.approx(expected, rel=4 * math.sqrt(2 / n))


def test_early_stop_costs_the_heun_steps_above_sigma_stop_and_one_more():
    grid = karras(18, 0.002, 80.0)
    s = 0.5
    k = int((grid > s).sum())
    counted = CountNFE(gaussian_1d(1.0))
    early_stop(counted, start(8, 80.0), grid.double(), sigma_stop=s)
    assert counted.nfe(8) == 2 * k + 1  # Heun's k steps to sigma_stop > 0, each of 2, then D(x, s)


def test_early_stop_equals_heun_to_sigma_stop_then_the_denoiser():
    toy = load("gmm3", dtype=F64)
    x, grid, s = start(64, 80.0, dim=2), karras(18, 0.002, 80.0).double(), 0.3
    path = torch.cat([grid[grid > s], torch.tensor([s], dtype=F64)])
    ref = heun(toy.denoiser, x, path)
    ref = toy.denoiser(ref, torch.full((64,), s, dtype=F64))
    torch.testing.assert_close(early_stop(toy.denoiser, x, grid, sigma_stop=s), ref, rtol=0, atol=0)


@pytest.mark.parametrize("sigma_stop", [0.0, -1.0, 80.0, 1e3, float("nan"), float("inf")])
def test_early_stop_refuses_a_stop_outside_the_grid(sigma_stop):
    with pytest.raises(ValueError, match="sigma_stop"):
        early_stop(gaussian_1d(1.0), start(4, 80.0), karras(10, 0.002, 80.0).double(), sigma_stop=sigma_stop)


# ---------------------------------------------------------------- second-order MAD

def test_mad_heun_is_second_order_and_mad_first_order():
    """The MAD flow of a 1-D Gaussian is linear, x(t_end) = c x(t_0), and c is a 1-D integral:
    d ln x / dt = t r(t) / (v + t^2) with r = m ((1 + gamma) - b gamma / (v + t^2)). Integrated here
    in float64 by Simpson's rule on 40 001 points (independent of both samplers), on grids ending at
    sigma_min > 0 so both integrate the same ODE. Doubling the steps must divide the error of MAD by
    about 2 and of MAD-Heun by about 4: observed orders above 0.8 and 1.7."""
    import numpy as np
    from scipy.integrate import simpson

    from scorelab.sample import mad_gamma

    v, a, b, p, lo, hi = 0.5, 1.0, 1.0, 1.0, 0.05, 80.0
    t = np.geomspace(lo, hi, 40_001)  # Simpson's rule in ln t: error ~ (step in ln t)^4 ~ 1e-16
    g = mad_gamma(t, a, b, p).numpy()
    m = 1 / (g + a * g ** (2 / p) / t**2)
    rate = t * m * ((1 + g) - b * g / (v + t**2)) / (v + t**2)
    exact = math.exp(-simpson(rate * t, x=np.log(t)))
    x0 = torch.ones(1, 1, dtype=F64)
    errors = {}
    for name, sampler in (("mad", mad), ("mad-heun", mad_heun)):
        errors[name] = [abs(float(sampler(gaussian_1d(v), x0, karras(n, lo, hi).double()[:-1], a=a, b=b, p=p,
                                          derivative="exact")) - exact) / exact for n in (21, 41, 81)]
    order = {k: [math.log2(e[i] / e[i + 1]) for i in range(2)] for k, e in errors.items()}
    assert min(order["mad"]) > 0.8 and max(order["mad"]) < 1.3, order
    assert min(order["mad-heun"]) > 1.7, order
    assert errors["mad-heun"][-1] < errors["mad"][-1] / 10


def test_mad_heun_to_zero_collapses_degenerate5_like_mad():
    """Figure 1 of the MAD paper with the second-order steps: x2 = 0 is a Dirac and collapses, the
    small-variance components shrink and the large ones much less."""
    from scorelab.metrics.modes import axis_spread

    toy = load("degenerate5", dtype=F64)
    x = start(2000, 80.0, dim=2)
    grid = karras(40, 0.002, 80.0).double()
    out = mad_heun(toy.denoiser, x, grid, a=1, b=1, p=1, derivative="exact")
    means = torch.stack([toy.params["means"], torch.zeros(5, dtype=F64)], -1)
    axes = torch.eye(2, dtype=F64)[:, :1].expand(5, 2, 1)
    sd = axis_spread(out, means, axes)[:, 0]
    assert float(out[:, 1].abs().max()) < 1e-6
    assert float(sd[0]) < 0.05 and float(sd[1]) < 0.1  # v = 0.2 and 0.5 collapse
    assert float(sd[4]) > 0.5  # v = 4 keeps most of its spread (sqrt(4) = 2 under standard inference)


def test_mad_heun_costs_two_drifts_per_step_and_one_on_the_last():
    counted = CountNFE(gaussian_1d(1.0))
    mad_heun(counted, start(4, 80.0), karras(10, 0.002, 80.0), a=1, b=1, p=8)
    assert counted.nfe(4) == 2 * (2 * 9 + 1)  # each drift is one doubled batch (central differences)


# ---------------------------------------------------------------- the Gaussian response

@pytest.mark.parametrize("a,b,p", [(1.0, 1.0, 1.0), (0.05, 3.0, 8.0), (2.0, 30.0, 2.0)])
@pytest.mark.parametrize("v", [0.05, 0.5, 4.0])
def test_gaussian_response_is_what_mad_does_to_a_gaussian(a, b, p, v):
    """The closed form against the sampler itself, exact denoiser and derivative, float64."""
    grid = karras(32, 0.002, 80.0).double()
    x = torch.tensor([[80.0]], dtype=F64)
    out = float(mad(gaussian_1d(v), x, grid, a=a, b=b, p=p, derivative="exact"))
    standard = 80.0 * math.sqrt(v / (v + 80.0**2))
    assert out / standard == pytest.approx(float(gaussian_response(v, grid, a, b, p)[0]), rel=1e-9, abs=1e-12)


def test_gaussian_response_with_b_to_0_is_the_euler_sampler():
    """a = 1, b -> 0 is Euler (MAD paper, after eq. 4): the response is then Euler's own error on the
    Gaussian, the same number the Euler sampler gives."""
    from scorelab.sample import euler

    grid = karras(32, 0.002, 80.0).double()
    v = torch.logspace(-3, 3, 7, dtype=F64)
    x = torch.full((1, 1), 80.0, dtype=F64)
    expected = torch.tensor([float(euler(gaussian_1d(float(vi)), x, grid)) / (80.0 * math.sqrt(vi / (vi + 6400)))
                             for vi in v.tolist()], dtype=F64)
    torch.testing.assert_close(gaussian_response(v, grid, 1.0, 1e-12, 1.0), expected, rtol=1e-8, atol=0)


def test_faithful_flags_the_grid_points_that_blow_up():
    """On the shapes benchmark's grid a <= 0.002 with b >= 5 gives saturated noise; a = 0.05, b = 3
    works. The response says why: directions near the pixel noise's variance (0.29 at 32 px) grow."""
    grid = karras(32, 0.002, 80.0).double()
    assert not faithful(0.29, grid, 0.001, 30.0, 8.0)
    assert faithful(0.29, grid, 0.05, 3.0, 8.0)


def test_auto_parameters_cut_the_noise_and_keep_large_variances():
    grid = karras(32, 0.002, 80.0).double()
    for noise_var in (0.05, 0.3):
        a, b = auto_parameters(noise_var, grid, 8.0)
        r = gaussian_response(torch.tensor([noise_var, 1e4 * noise_var], dtype=F64), grid, a, b, 8.0)
        assert float(r[0]) <= 0.1 and float(r[1]) >= 0.9
        assert faithful(noise_var, grid, a, b, 8.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_auto_parameters_refuse_a_bad_noise_variance(bad):
    with pytest.raises(ValueError, match="noise variance"):
        auto_parameters(bad, karras(32, 0.002, 80.0), 8.0)


def test_noise_variance_of_white_noise_on_smooth_images():
    """Constant images plus N(0, s^2): the Haar estimate recovers s^2 within 5 % (the median of
    |N(0, 1)| over 65 536 coefficients has a relative standard error near 0.6 %)."""
    g = torch.Generator().manual_seed(0)
    base = torch.linspace(-1, 1, 64, dtype=F64).expand(64, 64).clone()  # a smooth ramp
    x = base + 0.3 * torch.randn(64, 1, 64, 64, generator=g, dtype=F64)
    assert noise_variance(x) == pytest.approx(0.09, rel=0.05)
    assert noise_variance(base.expand(4, 1, 64, 64)) < 1e-12


# ---------------------------------------------------------------- measures blur cannot win

def test_blur_keeps_the_correlation_but_fails_the_clean_measures():
    """Clean, noisy and blurred clean shapes (32 px, 128 each; the reference a separate clean draw).
    Blur keeps the best correlation high (> 0.9) while every clean measure rates it far from clean:
    at least 5x the clean set's raw RMSE, pixel W1 and Frechet distance."""
    ref = shapes.noisy_shapes(128, size=32, seed=54321).clean
    data = shapes.noisy_shapes(128, size=32, seed=12345)
    rows = {}
    for name, x in (("clean", data.clean), ("noisy", data.noisy), ("blurred", gaussian_blur(data.clean))):
        rows[name] = summarize(manifold_scores(x)) | clean_distances(x, ref)
    assert rows["blurred"]["median_correlation"] > 0.9
    for key in ("median_rmse", "pixel_w1", "frechet_clean"):
        assert rows["blurred"][key] > 5 * rows["clean"][key], key
        assert rows["noisy"][key] > 5 * rows["clean"][key], key


def test_clean_distances_refuse_mismatched_sizes():
    with pytest.raises(ValueError, match="differ"):
        clean_distances(torch.zeros(4, 1, 32, 32), torch.zeros(4, 1, 64, 64))


# ---------------------------------------------------------------- command line

def test_cli_early_stop_needs_its_level_and_auto_needs_both(tmp_path, capsys):
    from scorelab.cli import main

    common = ["--no-progress", "sample", "--pretrained", "shapes-noisy-32", "--steps", "4", "--n", "2"]
    assert main([*common, "--sampler", "early-stop", "--out", str(tmp_path / "e")]) == 2
    assert "--sigma-stop" in capsys.readouterr().err
    assert main([*common, "--sampler", "mad", "--a", "auto", "--b", "1", "--out", str(tmp_path / "m")]) == 2
    assert "--b auto" in capsys.readouterr().err
    assert main([*common, "--sampler", "early-stop", "--sigma-stop", "0.5", "--out", str(tmp_path / "s")]) == 0
    assert main([*common, "--sampler", "mad-heun", "--a", "auto", "--b", "auto", "--p", "8",
                 "--out", str(tmp_path / "a")]) == 0
    assert "MAD auto: noise variance" in capsys.readouterr().err  # the shipped model's data is not shipped
