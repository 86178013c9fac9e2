"""2-D toys: exact samplers, fixed parameters, exact denoisers and densities."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from scorelab.data.toy import NAMES, load

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_load_unknown_name_raises_listing_known_names():
    with pytest.raises(ValueError) as info:
        load("swissroll")
    assert all(name in str(info.value) for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_sample_shape_and_dtype(name):
    toy = load(name)
    assert toy.name == name and toy.description
    x = toy.sample(100, _gen())
    assert x.shape == (100, 2) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    assert toy.sample(7, _gen(), dtype=F64).dtype == F64
    assert load(name, dtype=F64).sample(3, _gen()).dtype == F64
    assert toy.sample(0, _gen()).shape == (0, 2)


@pytest.mark.parametrize("name", NAMES)
def test_sample_depends_only_on_the_given_generator(name):
    toy = load(name)
    torch.manual_seed(1)
    a = toy.sample(500, _gen(7))
    torch.manual_seed(2)
    b = toy.sample(500, _gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, toy.sample(500, _gen(8)))


@pytest.mark.parametrize("name", NAMES)
def test_float32_samples_are_rounded_float64_samples(name):
    toy = load(name)
    assert torch.equal(toy.sample(200, _gen(3)), toy.sample(200, _gen(3), dtype=F64).float())


def test_gmm3_samples_match_weights_means_and_covariances():
    toy = load("gmm3", dtype=F64)
    x = toy.sample(100_000, _gen(10))
    label = torch.cdist(x, toy.params["means"]).argmin(1)  # modes are 10 sigma apart
    for k in range(3):
        xk = x[label == k]
        assert abs(len(xk) / len(x) - float(toy.params["weights"][k])) < 0.01
        torch.testing.assert_close(xk.mean(0), toy.params["means"][k], rtol=0, atol=0.04)
        torch.testing.assert_close(xk.T.cov(), toy.params["covs"][k], rtol=0, atol=0.06)


def _posterior_moments(local, log_w):
    """Per-component ``(mean, variance)`` of ``local`` ``(N, K, d)``, weighted by the exact posterior
    ``softmax(log_w)`` ``(N, K)``: since ``w_k(x) p(x) = pi_k p_k(x)`` these estimate the
    component's own moments, with none of the bias of a hard (nearest-mean) assignment."""
    w = np.exp(log_w - np.logaddexp.reduce(log_w, -1, keepdims=True))[..., None]
    mean = (w * local).sum(0) / w.sum(0)
    var = (w * (local - mean) ** 2).sum(0) / w.sum(0)
    return w.mean(0)[..., 0], mean, var


def test_degenerate5_has_x2_zero_and_component_variances_v():
    toy = load("degenerate5", dtype=F64)
    x = toy.sample(100_000, _gen(11)).numpy()
    assert (x[:, 1] == 0).all()
    mu, v = toy.params["means"].numpy(), toy.params["variances"].numpy()
    log_w = np.log(0.2) + stats.norm(mu, np.sqrt(v)).logpdf(x[:, :1])
    weight, mean, var = _posterior_moments((x[:, :1] - mu)[..., None], log_w)
    np.testing.assert_allclose(weight, 0.2, atol=0.01)
    np.testing.assert_allclose(mean[:, 0], 0, atol=0.05)
    np.testing.assert_allclose(var[:, 0], v, rtol=0.05)
    # the posterior is nearly one-hot here, so nearest-mean labels agree on almost every point
    nearest = np.abs(x[:, :1] - mu).argmin(1)
    assert (nearest == log_w.argmax(1)).mean() > 0.99
    assert toy.log_prob is None and toy.denoiser.ranks.tolist() == [1] * 5


def test_anisotropic21_parameters_are_fixed_and_define_the_denoiser():
    toy = load("anisotropic21", dtype=F64)
    p = toy.params
    assert p["means"].shape == (21, 2) and p["rotations"].shape == (21, 2, 2)
    # torch's seeded CPU generator is the same everywhere: these values must never change
    torch.testing.assert_close(p["means"][0], torch.tensor([11.541934953153042, -16.136614230305195], dtype=F64))
    assert math.isclose(float(p["angles"][0]), 0.636697323955043, rel_tol=1e-14)
    assert bool((p["means"].abs() <= 20).all()) and bool(((p["angles"] >= 0) & (p["angles"] < math.pi)).all())
    R = p["rotations"]
    torch.testing.assert_close(R.mT @ R, torch.eye(2, dtype=F64).expand(21, 2, 2), rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(21, dtype=F64), rtol=0, atol=1e-14)
    covs = R @ torch.diag(p["variances"]) @ R.mT
    model = toy.denoiser
    torch.testing.assert_close(model.U @ torch.diag_embed(model.lam) @ model.U.mT, covs, rtol=0, atol=1e-12)


def test_anisotropic21_samples_spread_along_major_axes():
    toy = load("anisotropic21", dtype=F64)
    x = toy.sample(100_000, _gen(12)).numpy()
    means, R, var = (toy.params[k].numpy() for k in ("means", "rotations", "variances"))
    covs = R @ np.diag(var) @ R.transpose(0, 2, 1)
    log_w = np.log(1 / 21) + np.stack([stats.multivariate_normal(m, c).logpdf(x) for m, c in zip(means, covs)], -1)
    local = np.einsum("nkd,kde->nke", x[:, None, :] - means, R)  # coordinates along (major, minor)
    weight, mean, local_var = _posterior_moments(local, log_w)
    np.testing.assert_allclose(weight, 1 / 21, atol=0.005)
    np.testing.assert_allclose(mean, 0, atol=0.1)
    np.testing.assert_allclose(local_var, np.broadcast_to(var, (21, 2)), rtol=0.12)


def test_rings5_centres_do_not_overlap():
    toy = load("rings5")
    c, r, v = toy.params["centres"], toy.params["radius"], toy.params["variance"]
    dist = torch.cdist(c, c) + 1e9 * torch.eye(5, dtype=F64)
    assert float(dist.min()) >= 2 * r + 6 * math.sqrt(v)
    assert bool((c.abs() <= 30).all())


def _radius_density(r, v):
    return lambda rho: rho * np.exp(-((rho - r) ** 2) / (2 * v))


def _ring_radii(toy, n, seed):
    x = toy.sample(n, _gen(seed), dtype=F64)
    return torch.cdist(x, toy.params["centres"]).min(1).values.numpy()


def test_rings5_radius_mean_and_variance_match_quadrature():
    """The radius density is ``∝ rho exp(-(rho - r)^2 / 2v)``: the Jacobian ``rho`` moves the mean
    from ``r`` to about ``r + v / r``, many standard errors away."""
    toy = load("rings5")
    r, v = toy.params["radius"], toy.params["variance"]
    f = _radius_density(r, v)
    moment = [integrate.quad(lambda t, j=j: t**j * f(t), 0, np.inf)[0] for j in range(5)]
    mean = moment[1] / moment[0]
    var = moment[2] / moment[0] - mean**2
    m4 = (moment[4] - 4 * mean * moment[3] + 6 * mean**2 * moment[2] - 3 * mean**4 * moment[0]) / moment[0]
    rho = _ring_radii(toy, 400_000, 13)
    n = len(rho)
    assert abs(rho.mean() - mean) < 3 * math.sqrt(var / n)
    assert abs(rho.var() - var) < 3 * math.sqrt((m4 - var**2) / n)
    assert abs(mean - r) > 30 * math.sqrt(var / n)  # a sampler without the Jacobian fails


def test_rings5_radius_distribution_matches_exact_cdf():
    toy = load("rings5")
    f = _radius_density(toy.params["radius"], toy.params["variance"])
    grid = np.linspace(0, 40, 40_001)
    cdf = integrate.cumulative_trapezoid(f(grid), grid, initial=0)
    cdf /= cdf[-1]
    rho = _ring_radii(toy, 50_000, 14)
    assert stats.kstest(rho, lambda t: np.interp(t, grid, cdf)).pvalue > 1e-3


@pytest.mark.parametrize(("name", "half_width"), [("gmm3", 12), ("anisotropic21", 28), ("rings5", 60)])
def test_log_prob_integrates_to_one(name, half_width):
    toy = load(name, dtype=F64)
    h = 0.1
    t = torch.arange(-half_width, half_width, h, dtype=F64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    mass = sum(float(toy.log_prob(chunk).exp().sum()) for chunk in grid.split(200_000)) * h * h
    assert abs(mass - 1) < 1e-3


def test_rings5_log_prob_matches_the_formula_at_a_ring_point():
    toy = load("rings5", dtype=F64)
    r, v, c = toy.params["radius"], toy.params["variance"], toy.params["centres"]
    z = 2 * math.pi * integrate.quad(_radius_density(r, v), 0, np.inf)[0]
    x = (c[2] + torch.tensor([r + 1.0, 0.0], dtype=F64))[None]
    assert math.isclose(float(toy.log_prob(x)), -1 / (2 * v) - math.log(5 * z), rel_tol=1e-9)


def test_gmm3_denoiser_at_tiny_sigma_returns_the_point():
    toy = load("gmm3")
    x = toy.sample(100, _gen(15))
    torch.testing.assert_close(toy.denoiser(x, 1e-4), x, rtol=0, atol=1e-5)


def test_degenerate5_denoiser_projects_onto_the_line():
    toy = load("degenerate5")
    x0 = toy.sample(100, _gen(16))
    x = x0 + 0.01 * torch.randn(x0.shape, generator=_gen(17))
    denoised = toy.denoiser(x, 0.01)
    assert bool((denoised[:, 1].abs() < 1e-6).all())
    torch.testing.assert_close(denoised[:, 0], x0[:, 0], rtol=0, atol=0.05)


def test_rings5_has_no_closed_form_denoiser():
    assert load("rings5").denoiser is None


def test_toy_denoiser_is_in_the_toy_dtype():
    assert load("gmm3").denoiser.mu.dtype == torch.float32
    assert load("gmm3", dtype=F64).denoiser.mu.dtype == F64
