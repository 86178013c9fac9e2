"""Analytical score models: Woodbury formulas against brute force, scores against autograd."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

from scorelab.analytic import DeltaMixture, Gaussian, GaussianMixture, Isotropic
from scorelab.data.toy import load

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _axes(D, r, g):
    """Random orthonormal ``U`` (D, r) and eigenvalues ``lam`` (r,) in [0.2, 3]."""
    U = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64))[0][:, :r]
    lam = 0.2 + 2.8 * torch.rand(r, generator=g, dtype=F64)
    return U, lam


def _cov(U, lam):
    return U @ torch.diag(lam) @ U.T


def _isotropic():
    return Isotropic(torch.randn(5, generator=_gen(1), dtype=F64))


def _full_gaussian():
    g = _gen(2)
    return Gaussian(torch.randn(4, generator=g, dtype=F64), _cov(*_axes(4, 4, g)))


def _lowrank_gaussian():
    g = _gen(3)
    return Gaussian(torch.randn(6, generator=g, dtype=F64), _cov(*_axes(6, 2, g)))


def _mixed_rank_mixture():
    """K = 3 components in D = 6 of ranks 6, 2 and 0, built from covariances."""
    g = _gen(4)
    covs = torch.stack([_cov(*_axes(6, r, g)) for r in (6, 2, 0)])
    means = 1.5 * torch.randn(3, 6, generator=g, dtype=F64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=F64), means, covs)


def _delta_mixture():
    """N = 40 weighted points in D = 5, visited in chunks of 7 (the last one partial)."""
    g = _gen(5)
    weights = torch.rand(40, generator=g, dtype=F64) + 0.1
    return DeltaMixture(
        torch.randn(40, 5, generator=g, dtype=F64),
        weights / weights.sum(),
        chunk_size=7,
    )


MODELS = {
    "isotropic": _isotropic,
    "full_gaussian": _full_gaussian,
    "lowrank_gaussian": _lowrank_gaussian,
    "mixed_rank_mixture": _mixed_rank_mixture,
    "delta_mixture": _delta_mixture,
}
SIGMAS = [0.3, 1.0, 4.0, "per_sample"]


def _sigma(spec, B, g):
    return 0.2 + 3 * torch.rand(B, generator=g, dtype=F64) if spec == "per_sample" else spec


def _x_near(model, B, g):
    if isinstance(model, DeltaMixture):
        mean = model.points[0].reshape(model.shape)
    else:
        mean = model.mean if hasattr(model, "mean") else model.means[0]
    return mean + 1.5 * torch.randn(B, *mean.shape, generator=g, dtype=F64)


@pytest.mark.parametrize("sigma_spec", SIGMAS)
@pytest.mark.parametrize("name", MODELS)
def test_score_is_gradient_of_log_prob(name, sigma_spec):
    model = MODELS[name]()
    g = _gen(10)
    x = _x_near(model, 16, g).requires_grad_()
    sigma = _sigma(sigma_spec, 16, g)
    (grad,) = torch.autograd.grad(model.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(model.score(x, sigma), grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("sigma_spec", SIGMAS)
@pytest.mark.parametrize("name", MODELS)
def test_score_is_tweedie_of_denoiser(name, sigma_spec):
    model = MODELS[name]()
    g = _gen(11)
    x = _x_near(model, 16, g)
    sigma = _sigma(sigma_spec, 16, g)
    s2 = torch.as_tensor(sigma, dtype=F64).reshape(-1, 1) ** 2
    torch.testing.assert_close(model.score(x, sigma), (model(x, sigma) - x) / s2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["full_gaussian", "lowrank_gaussian"])
def test_woodbury_denoiser_equals_explicit_inverse(name):
    model = MODELS[name]()
    g = _gen(12)
    x = _x_near(model, 8, g)
    cov = _cov(model.U, model.lam)
    eye = torch.eye(model.dim, dtype=F64)
    for sigma in (0.05, 0.7, 3.0):
        brute = model.mu + (x - model.mu) @ torch.linalg.inv(cov + sigma**2 * eye) @ cov
        torch.testing.assert_close(model(x, sigma), brute, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["full_gaussian", "lowrank_gaussian"])
def test_gaussian_log_prob_matches_scipy(name):
    model = MODELS[name]()
    x = _x_near(model, 8, _gen(13))
    cov = _cov(model.U, model.lam).numpy()
    for sigma in (0.5, 2.0):
        ref = multivariate_normal(model.mu.numpy(), cov + sigma**2 * np.eye(model.dim)).logpdf(x.numpy())
        np.testing.assert_allclose(model.log_prob(x, sigma).numpy(), ref, rtol=1e-10)


def test_full_rank_gaussian_has_clean_density_at_sigma_zero():
    model = _full_gaussian()
    x = _x_near(model, 8, _gen(14))
    ref = multivariate_normal(model.mu.numpy(), _cov(model.U, model.lam).numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(model.log_prob(x, 0.0).numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("name", ["isotropic", "lowrank_gaussian", "mixed_rank_mixture"])
def test_log_prob_at_sigma_zero_raises_without_density(name):
    model = MODELS[name]()
    x = _x_near(model, 4, _gen(15))
    with pytest.raises(ValueError, match="sigma"):
        model.log_prob(x, 0.0)


def test_degenerate_cov_becomes_low_rank():
    model = _lowrank_gaussian()
    assert model.rank == 2 and model.dim == 6
    assert model.U.shape == (6, 2) and bool((model.lam[:-1] >= model.lam[1:]).all())


def test_isotropic_fit_is_the_data_mean():
    data = torch.randn(50, 2, 3, generator=_gen(29), dtype=F64)
    torch.testing.assert_close(Isotropic.fit(data).mean, data.mean(0), rtol=0, atol=1e-15)


def test_isotropic_equals_rank_zero_gaussian():
    iso = _isotropic()
    gauss = Gaussian(iso.mean, U=torch.zeros(5, 0, dtype=F64), lam=torch.zeros(0, dtype=F64))
    g = _gen(16)
    x, sigma = _x_near(iso, 8, g), _sigma("per_sample", 8, g)
    torch.testing.assert_close(gauss(x, sigma), iso(x, sigma), rtol=0, atol=1e-14)
    torch.testing.assert_close(gauss.score(x, sigma), iso.score(x, sigma), rtol=1e-12, atol=0)
    torch.testing.assert_close(gauss.log_prob(x, sigma), iso.log_prob(x, sigma), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["full_gaussian", "lowrank_gaussian"])
def test_gaussian_equals_one_component_mixture(name):
    gauss = MODELS[name]()
    mix = GaussianMixture([1.0], gauss.mean[None], U=gauss.U[None], lam=gauss.lam[None])
    g = _gen(17)
    x, sigma = _x_near(gauss, 8, g), _sigma("per_sample", 8, g)
    torch.testing.assert_close(mix(x, sigma), gauss(x, sigma), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mix.score(x, sigma), gauss.score(x, sigma), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mix.log_prob(x, sigma), gauss.log_prob(x, sigma), rtol=1e-12, atol=0)


def test_mixture_denoiser_equals_bruteforce_posterior_mean():
    model = _mixed_rank_mixture()
    g = _gen(18)
    x = 1.5 * torch.randn(6, 6, generator=g, dtype=F64)
    covs = [_cov(model.U[k], model.lam[k]).numpy() for k in range(3)]
    mus, pis, eye = model.mu.numpy(), model.weights.numpy(), np.eye(6)
    for sigma in (0.4, 1.5, 4.0):
        log_n = np.stack(
            [multivariate_normal(mus[k], covs[k] + sigma**2 * eye).logpdf(x.numpy()) for k in range(3)],
            -1,
        )
        w = np.exp(log_n + np.log(pis) - np.logaddexp.reduce(log_n + np.log(pis), -1, keepdims=True))
        means_k = np.stack(
            [mus[k] + (x.numpy() - mus[k]) @ np.linalg.inv(covs[k] + sigma**2 * eye) @ covs[k] for k in range(3)],
            1,
        )
        assert 0.05 < w.max(-1).min()  # not all one-hot: the weighting is exercised
        np.testing.assert_allclose(model.responsibilities(x, sigma).numpy(), w, rtol=0, atol=1e-10)
        np.testing.assert_allclose(model(x, sigma).numpy(), (w[..., None] * means_k).sum(1), rtol=0, atol=1e-10)
        np.testing.assert_allclose(
            model.log_prob(x, sigma).numpy(),
            np.logaddexp.reduce(log_n + np.log(pis), -1),
            rtol=1e-10,
        )


def test_mixture_pads_lower_ranks_with_zero_columns():
    model = _mixed_rank_mixture()
    assert model.ranks.tolist() == [6, 2, 0]
    assert model.U.shape == (3, 6, 6) and model.lam.shape == (3, 6)
    assert bool((model.U[1, :, 2:] == 0).all()) and bool((model.lam[2] == 0).all())


def test_mixture_from_axes_equals_mixture_from_covs():
    model = _mixed_rank_mixture()
    again = GaussianMixture(model.weights, model.means, U=model.U, lam=model.lam)
    x = _x_near(model, 8, _gen(19))
    torch.testing.assert_close(again(x, 0.8), model(x, 0.8), rtol=0, atol=1e-14)


def test_mixture_responsibilities_stay_finite_far_from_all_modes():
    model = _mixed_rank_mixture()
    x = torch.full((2, 6), 1e3, dtype=F64)
    w = model.responsibilities(x, 0.01)
    assert bool(torch.isfinite(w).all()) and torch.allclose(w.sum(-1), torch.ones(2, dtype=F64))
    assert bool(torch.isfinite(model(x, 0.01)).all())


@pytest.mark.parametrize("weights", [[0.5, 0.6, -0.1], [0.5, 0.3, 0.3], [0.5, 0.5, 0.0]])
def test_mixture_rejects_invalid_weights(weights):
    model = _mixed_rank_mixture()
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.tensor(weights, dtype=F64), model.means, U=model.U, lam=model.lam)


def test_gaussian_rejects_non_orthonormal_axes():
    with pytest.raises(ValueError, match="orthonormal"):
        Gaussian(
            torch.zeros(3, dtype=F64),
            U=torch.ones(3, 1, dtype=F64),
            lam=torch.ones(1, dtype=F64),
        )


def test_gaussian_fit_recovers_mean_and_cov():
    g = _gen(20)
    truth = Gaussian(torch.tensor([1.0, -2.0, 0.5], dtype=F64), _cov(*_axes(3, 3, g)))
    data = truth.sample(200_000, g)
    fit = Gaussian.fit(data)
    torch.testing.assert_close(fit.mean, truth.mean, rtol=0, atol=0.02)
    torch.testing.assert_close(_cov(fit.U, fit.lam), _cov(truth.U, truth.lam), rtol=0, atol=0.03)


def test_gaussian_fit_rank_keeps_top_eigenvalues():
    data = torch.randn(500, 2, 4, generator=_gen(21), dtype=F64) * torch.arange(1, 9, dtype=F64).reshape(2, 4)
    full, top = Gaussian.fit(data), Gaussian.fit(data, rank=3)
    assert full.rank == 8 and top.rank == 3 and top.mean.shape == (2, 4)
    torch.testing.assert_close(top.lam, full.lam[:3], rtol=1e-12, atol=0)
    torch.testing.assert_close(
        (top.U * full.U[:, :3]).sum(0).abs(),
        torch.ones(3, dtype=F64),
        rtol=0,
        atol=1e-10,
    )


def test_gaussian_fit_keeps_input_dtype():
    data = torch.randn(100, 3, generator=_gen(22))
    fit = Gaussian.fit(data)
    assert fit.mu.dtype == fit.U.dtype == fit.lam.dtype == torch.float32


def test_mixture_fit_recovers_gmm3():
    toy = load("gmm3", dtype=F64)
    data = toy.sample(20_000, _gen(23))
    fit = GaussianMixture.fit(data, 3, seed=0)
    order = torch.cdist(toy.params["means"], fit.means).argmin(1)
    assert sorted(order.tolist()) == [0, 1, 2]
    torch.testing.assert_close(fit.weights[order], toy.params["weights"], rtol=0, atol=0.02)
    torch.testing.assert_close(fit.means[order], toy.params["means"], rtol=0, atol=0.1)


def test_mixture_fit_rank_keeps_each_components_top_direction():
    data = load("anisotropic21", dtype=F64).sample(3000, _gen(24))
    full, top = GaussianMixture.fit(data, 4), GaussianMixture.fit(data, 4, rank=1)
    assert full.ranks.tolist() == [2] * 4 and top.ranks.tolist() == [1] * 4 and top.U.shape == (4, 2, 1)
    torch.testing.assert_close(top.means, full.means, rtol=0, atol=0)  # same clustering (same seed)
    torch.testing.assert_close(top.lam[:, 0], full.lam[:, 0], rtol=1e-12, atol=0)
    torch.testing.assert_close((top.U[..., 0] * full.U[..., 0]).sum(-1).abs(), torch.ones(4, dtype=F64))


def test_float32_model_computes_in_float32_and_matches_float64():
    model64 = _mixed_rank_mixture()
    model32 = _mixed_rank_mixture().float()
    g = _gen(25)
    x, sigma = _x_near(model64, 16, g), _sigma("per_sample", 16, g)
    for method in ("forward", "score", "log_prob"):
        out32 = getattr(model32, method)(x.float(), sigma.float())
        assert out32.dtype == torch.float32
        torch.testing.assert_close(out32.double(), getattr(model64, method)(x, sigma), rtol=1e-4, atol=1e-4)
    assert model32.sample(4, g).dtype == torch.float32


def test_float32_full_rank_score_stays_accurate_at_small_sigma():
    """At full rank ``d - U U^T d`` is pure rounding error; divided by sigma^2 it would swamp the score."""
    model64 = _full_gaussian()
    model32 = _full_gaussian().float()
    x = _x_near(model64, 16, _gen(30))
    for sigma in (1e-2, 1e-3, 1e-4):
        torch.testing.assert_close(
            model32.score(x.float(), sigma).double(),
            model64.score(x, sigma),
            rtol=1e-4,
            atol=0,
        )
        mix32 = GaussianMixture([1.0], model32.mean[None], U=model32.U[None], lam=model32.lam[None])
        torch.testing.assert_close(
            mix32.score(x.float(), sigma).double(),
            model64.score(x, sigma),
            rtol=1e-4,
            atol=0,
        )


@pytest.mark.parametrize("name", MODELS)
def test_dtype_mismatch_raises(name):
    model = MODELS[name]()
    x = _x_near(model, 4, _gen(26)).float()
    with pytest.raises(TypeError, match="dtype"):
        model(x, 1.0)


def test_wrong_data_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        _lowrank_gaussian()(torch.zeros(4, 5, dtype=F64), 1.0)


def test_buffers_follow_state_dict_and_double():
    model = _lowrank_gaussian().float()
    assert set(model.state_dict()) == {"mu", "U", "lam"} and model.U.dtype == torch.float32
    clone = Gaussian(torch.zeros(6), U=torch.eye(6)[:, :2], lam=torch.ones(2))
    clone.load_state_dict(model.state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(clone(x, 0.5), model(x, 0.5))
    assert model.double().lam.dtype == F64


def test_samples_have_model_statistics():
    g = _gen(27)
    model = _mixed_rank_mixture()
    x = model.sample(100_000, g)
    assert x.shape == (100_000, 6)
    mean = (model.weights[:, None] * model.mu).sum(0)
    second = sum(model.weights[k] * (_cov(model.U[k], model.lam[k]) + model.mu[k].outer(model.mu[k])) for k in range(3))
    torch.testing.assert_close(x.mean(0), mean, rtol=0, atol=0.03)
    torch.testing.assert_close(x.T.cov(), second - mean.outer(mean), rtol=0, atol=0.06)
    torch.testing.assert_close(model.sample(10, _gen(5)), model.sample(10, _gen(5)), rtol=0, atol=0)


def test_image_shaped_gaussian_keeps_shape():
    g = _gen(28)
    data = torch.randn(300, 1, 3, 3, generator=g, dtype=F64)
    model = Gaussian.fit(data, rank=4)
    x = torch.randn(5, 1, 3, 3, generator=g, dtype=F64)
    assert model(x, 0.5).shape == (5, 1, 3, 3) and model.sample(2, g).shape == (
        2,
        1,
        3,
        3,
    )
    assert model.log_prob(x, 0.5).shape == (5,)


# --- GaussianMixture at the limits of sigma, its rounding, and its cached terms ----------------


def _axis_mixture(dtype):
    """K = 3 in D = 6 with axis-aligned supports: e0, e1 (rank 2), e2, e3, e4 (rank 3) and a point (rank 0)."""
    g = _gen(40)
    eye = torch.eye(6, dtype=F64)
    U = torch.zeros(3, 6, 3, dtype=F64)
    U[0, :, :2], U[1, :, :3] = eye[:, :2], eye[:, 2:5]
    lam = torch.tensor([[1.0, 0.5, 0.0], [2.0, 1.0, 0.3], [0.0, 0.0, 0.0]], dtype=F64)
    means = 2 * torch.randn(3, 6, generator=g, dtype=F64)
    return GaussianMixture(torch.tensor([0.3, 0.5, 0.2], dtype=F64), means, U=U, lam=lam).to(dtype)


def _full_rank_mixture():
    g = _gen(41)
    covs = torch.stack([_cov(*_axes(4, 4, g)) for _ in range(3)])
    return GaussianMixture(torch.tensor([0.2, 0.3, 0.5], dtype=F64), torch.randn(3, 4, generator=g, dtype=F64), covs)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", ["mixed_rank", "full_rank", "axis"])
def test_mixture_at_infinite_sigma_is_the_prior(name, dtype):
    """sigma = inf: the likelihoods no longer differ, w = pi, D = sum_k pi_k mu_k, score 0,
    log_prob -inf (the old code returned NaN); a one-component mixture equals Gaussian there."""
    model = {"mixed_rank": _mixed_rank_mixture, "full_rank": _full_rank_mixture, "axis": lambda: _axis_mixture(F64)}[
        name
    ]().to(dtype)
    x = torch.randn(5, model.dim, generator=_gen(42), dtype=F64).to(dtype)
    inf = float("inf")
    eps = torch.finfo(dtype).eps
    w = model.responsibilities(x, inf)
    torch.testing.assert_close(w, model.weights.expand(5, -1), rtol=4 * eps, atol=0)  # softmax(log pi)
    prior_mean = (model.weights @ model.mu).expand(5, -1)
    torch.testing.assert_close(model(x, inf), prior_mean, rtol=0, atol=4 * eps * float(model.mu.abs().max()))
    assert bool((model.score(x, inf) == 0).all())
    assert bool((model.log_prob(x, inf) == -math.inf).all())
    one = GaussianMixture([1.0], model.means[:1], U=model.U[:1], lam=model.lam[:1]) if dtype == F64 else None
    if one is not None and int(model.ranks[0]) > 0:
        k = int(model.ranks[0])
        gauss = Gaussian(model.means[0], U=model.U[0][:, :k], lam=model.lam[0][:k])
        torch.testing.assert_close(one(x, inf), gauss(x, inf), rtol=0, atol=0)
        torch.testing.assert_close(one.score(x, inf), gauss.score(x, inf), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_mixture_stays_defined_at_tiny_sigma(dtype):
    """Where sigma^2 underflows (or 1 / sigma^2 overflows) nothing is NaN: a point on a component's
    support gets that component, one off every support the component of least residual (the limit of
    the responsibilities); scores and densities are finite or infinite, never NaN."""
    model = _axis_mixture(dtype)
    g = _gen(43)
    on = model.mu[1].clone()
    on[2:5] += torch.randn(3, generator=g, dtype=F64).to(dtype)  # exactly on the support of component 1
    off = torch.randn(3, 6, generator=g, dtype=F64).to(dtype) * 3
    x = torch.cat([on[None], off])
    d = x.double()[:, None, :] - model.mu.double()
    resid = (d - torch.einsum("bkr,kdr->bkd", torch.einsum("bkd,kdr->bkr", d, model.U.double()), model.U.double()))
    nearest = resid.square().sum(-1).argmin(-1)  # float64, the direct residual
    assert int(nearest[0]) == 1
    sigmas = (1e-20, 1e-30, 1e-40) if dtype == torch.float32 else (1e-100, 1e-160, 1e-300)
    for sigma in sigmas:
        w = model.responsibilities(x, sigma)
        torch.testing.assert_close(w, nn.functional.one_hot(nearest, 3).to(dtype), rtol=0, atol=0)
        for out in (model(x, sigma), model.score(x, sigma), model.log_prob(x, sigma)):
            assert not bool(out.isnan().any())
        torch.testing.assert_close(model(x[:1], sigma), x[:1], rtol=0, atol=4 * torch.finfo(dtype).eps * 4)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 0.1, 1.0])
def test_mixture_log_prob_within_its_stated_rounding(dtype, sigma):
    """log_prob against the direct formula in float64 (explicit (B, K, D) residuals d - U U^T d, as
    the old code computed them), for the model's own parameters. The residual is taken as
    |x - mu|^2 - |c|^2 from expanded sums of D terms each: worst-case rounding D eps times the sum
    of |terms|, at most 4 (|x - m|^2 + |mu_k - m|^2) (m the prior mean), over 2 sigma^2; the other
    terms of log_prob are sums of D terms too (D eps relative). Allowed: twice both. Every component
    is rank-deficient (ranks 2, 3, 1), so the residual is in every term that counts."""
    g = _gen(44)
    covs = torch.stack([_cov(*_axes(6, r, g)) for r in (2, 3, 1)])
    means = 1.5 * torch.randn(3, 6, generator=g, dtype=F64)
    model64 = GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=F64), means, covs)
    model = model64.to(dtype)
    x = (means[torch.arange(16) % 3] + 0.5 * torch.randn(16, 6, generator=g, dtype=F64)).to(dtype)
    p = {k: getattr(model, k).double() for k in ("weights", "mu", "U", "lam")}
    xd = x.double()
    d = xd[:, None, :] - p["mu"]
    c = torch.einsum("bkd,kdr->bkr", d, p["U"])
    resid = (d - torch.einsum("bkr,kdr->bkd", c, p["U"])).square().sum(-1)
    active = p["lam"] > 0
    lam_s = torch.where(active, p["lam"] + sigma**2, 1.0)
    D = model.dim
    ranks = active.sum(-1).double()  # (an integer tensor times a float would be float32)
    log_n = -0.5 * (
        D * math.log(2 * math.pi)
        + torch.log(lam_s).sum(-1)
        + (D - ranks) * math.log(sigma**2)
        + (c.square() / lam_s).sum(-1)
        + resid / sigma**2
    )
    truth = torch.logsumexp(p["weights"].log() + log_n, -1)
    m = p["weights"] @ p["mu"]
    scale = (xd - m).square().sum(-1) + (p["mu"] - m).square().sum(-1).max()
    eps = torch.finfo(dtype).eps
    tol = 2 * D * eps * (4 * scale / (2 * sigma**2) + truth.abs())
    err = (model.log_prob(x, sigma).double() - truth).abs()
    assert bool((err <= tol).all()), (err / tol).max()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_mixture_per_sample_sigma_equals_each_row_on_its_own(dtype):
    """A (B,) sigma (the (B, K, r) path) gives each row what its own sigma gives (the (1, K, r) path),
    tiny and infinite sigma included. Products of other batch sizes round differently: 8 D eps."""
    model = _mixed_rank_mixture().to(dtype)
    tiny = 1e-30 if dtype == torch.float32 else 1e-200
    sigma = torch.tensor([tiny, 1e-3, 0.3, 1.0, 4.0, 1e4, math.inf], dtype=dtype)
    x = _x_near(_mixed_rank_mixture(), 7, _gen(45)).to(dtype)
    tol = 8 * model.dim * torch.finfo(dtype).eps
    outs = {m: getattr(model, m)(x, sigma) for m in ("forward", "score", "log_prob", "responsibilities")}
    for b in range(7):
        for m, out in outs.items():
            row = getattr(model, m)(x[b : b + 1], float(sigma[b]))[0]
            torch.testing.assert_close(out[b], row, rtol=tol, atol=tol * float(x.abs().max()), equal_nan=False)


def test_mixture_cached_terms_follow_the_buffers():
    """The per-model terms are cached; changing a buffer in place, loading a state dict, replacing U
    by a (K, D, r)-contiguous copy or converting the dtype gives what a freshly built model gives."""
    model = _mixed_rank_mixture()
    x = _x_near(model, 8, _gen(46))
    before = model(x, 0.7)
    model.mu.add_(0.5)
    fresh = GaussianMixture(model.weights, model.means, U=model.U, lam=model.lam)
    after = model(x, 0.7)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, fresh(x, 0.7), rtol=0, atol=1e-14)
    other = GaussianMixture(model.weights, model.means + 1, U=model.U, lam=model.lam)
    model.load_state_dict(other.state_dict())
    torch.testing.assert_close(model(x, 0.7), other(x, 0.7), rtol=0, atol=1e-14)
    model.U = model.U.contiguous()  # another layout: the flat matrix becomes a copy
    torch.testing.assert_close(model(x, 0.7), other(x, 0.7), rtol=0, atol=1e-14)
    torch.testing.assert_close(model.float()(x.float(), 0.7).double(), other(x, 0.7), rtol=1e-5, atol=1e-5)
