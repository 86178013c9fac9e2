"""Closed-form Gaussian PF-ODE (Gaussian-score paper, Sec. 3.2-3.3): against numerical integration of the
model's own denoiser, the VP form against the rescaled sigma form, the rotation and perturbation identities."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch.testing import assert_close

from scorelab.analytic import Gaussian, Isotropic
from scorelab.analytic.gaussian_flow import (
    amplification,
    denoised_scale,
    gaussian_flow,
    gaussian_flow_denoised,
    gaussian_flow_endpoint,
    gaussian_flow_vp,
    gaussian_flow_vp_denoised,
    rotation_residual,
    state_scale,
)

F64 = torch.float64
# unsorted, down to 1e-3, and 20 > sigma_T = 5 (the ODE run upward)
SIGMAS = [3.0, 1e-3, 0.5, 20.0, 1e-2, 0.1, 1.5]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _axes(D, r, g):
    """Random orthonormal ``U`` (D, r) and eigenvalues ``lam`` (r,) spread over [0.05, 20] (log-uniform)."""
    U = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64))[0][:, :r]
    log_lam = math.log(0.05) + math.log(400) * torch.rand(r, generator=g, dtype=F64)
    return U, torch.exp(log_lam)


def _full_gaussian():
    g = _gen(1)
    U, lam = _axes(4, 4, g)
    return Gaussian(torch.randn(4, generator=g, dtype=F64), U=U, lam=lam)


def _lowrank_gaussian():
    g = _gen(2)
    U, lam = _axes(6, 2, g)
    return Gaussian(torch.randn(6, generator=g, dtype=F64), U=U, lam=lam)


def _image_gaussian():
    """Data shape (2, 3), rank 3."""
    g = _gen(3)
    U, lam = _axes(6, 3, g)
    return Gaussian(torch.randn(2, 3, generator=g, dtype=F64), U=U, lam=lam)


MODELS = {
    "full": _full_gaussian,
    "lowrank": _lowrank_gaussian,
    "image": _image_gaussian,
}


def _noise(model, B=3, seed=10):
    return torch.randn(B, *model.shape, generator=_gen(seed), dtype=F64)


def _x_T(model, sigma_T, B=3, seed=10):
    return model.mean + sigma_T * _noise(model, B, seed)


def _integrate(model, x_T, sigma_T, sigmas):
    """``x(sigma)`` ``(S, *x_T.shape)`` from DOP853 integrations (rtol = atol = 1e-13) of
    ``dx/dsigma = (x - D(x, sigma)) / sigma`` with the model's own denoiser, from ``sigma_T`` down to the levels
    below it and up to those above it."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    shape = x_T.shape
    out = np.empty((len(sigmas), x_T.numel()))

    def rhs(s, y):
        x = torch.from_numpy(y).reshape(shape)
        return ((x - model(x, float(s))) / s).reshape(-1).numpy()

    for idx in (np.flatnonzero(sigmas < sigma_T), np.flatnonzero(sigmas >= sigma_T)):
        if len(idx) == 0:
            continue
        # t_eval must be monotone away from sigma_T
        idx = idx[np.argsort(np.abs(sigmas[idx] - sigma_T))]
        sol = solve_ivp(
            rhs,
            (sigma_T, sigmas[idx[-1]]),
            x_T.reshape(-1).numpy(),
            method="DOP853",
            t_eval=sigmas[idx],
            rtol=1e-13,
            atol=1e-13,
        )
        assert sol.success, sol.message
        out[idx] = sol.y.T
    return torch.from_numpy(out).reshape(len(sigmas), *shape)


def _rel(a, b):
    """Largest per-sample relative error ``|a - b| / |b|`` over the leading (S, B) axes of ``(S, B, *shape)``."""
    a, b = a.flatten(2), b.flatten(2)
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


@pytest.mark.parametrize("sigma_T", [80.0, 5.0])
@pytest.mark.parametrize("name", MODELS)
def test_flow_matches_numerical_integration(name, sigma_T):
    model = MODELS[name]()
    x_T = _x_T(model, sigma_T)
    ref = _integrate(model, x_T, sigma_T, SIGMAS)
    # measured: ~6e-13 at most (solver tolerance 1e-13); 1e-9 leaves room for other scipy / BLAS builds
    assert _rel(gaussian_flow(model, x_T, sigma_T, SIGMAS), ref) < 1e-9
    # eq. 16 is the model's denoiser on the integrated state (relative error < 1e-9, measured ~3e-13)
    den = torch.stack([model(x, s) for x, s in zip(ref, SIGMAS)])
    assert _rel(gaussian_flow_denoised(model, x_T, sigma_T, SIGMAS), den) < 1e-9


@pytest.mark.parametrize("name", MODELS)
def test_endpoint_matches_integration_to_tiny_sigma(name):
    """``|x(sigma) - x(0)| <= (sigma / sigma_T) |x_T_perp| + O(sigma^2 / lam_min)``, so at sigma = 1e-7 the
    state is within ~1e-7 (relative) of the end point: the ODE to 1e-7 must match eq. 17 to < 1e-5."""
    model = MODELS[name]()
    x_T = _x_T(model, 80.0)
    ref = _integrate(model, x_T, 80.0, [1e-7])
    assert _rel(gaussian_flow_endpoint(model, x_T, 80.0)[None], ref) < 1e-5
    assert _rel(gaussian_flow(model, x_T, 80.0, [0.0]), ref) < 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_endpoint_is_flow_at_sigma_zero(name):
    model = MODELS[name]()
    x_T = _x_T(model, 10.0)
    end = gaussian_flow_endpoint(model, x_T, 10.0)
    assert end.shape == x_T.shape
    at_zero = gaussian_flow(model, x_T, 10.0, [0.0])[0]
    assert_close(end, at_zero, rtol=1e-14, atol=1e-14)
    # eq. 17: the end point lies on the data manifold mu + span(U)
    d = (end - model.mean).reshape(len(x_T), -1)
    assert_close(d, d @ model.U @ model.U.T, rtol=0, atol=1e-12)


def test_flow_starts_at_x_T_and_keeps_shape():
    model = _image_gaussian()
    x_T = _x_T(model, 7.0)
    out = gaussian_flow(model, x_T, 7.0, torch.tensor([7.0, 1.0], dtype=F64))
    assert out.shape == (2, *x_T.shape)
    assert_close(out[0], x_T, rtol=1e-14, atol=1e-13)
    assert_close(gaussian_flow_denoised(model, x_T, 7.0, [7.0])[0], model(x_T, 7.0))


def test_per_sample_sigma_T_equals_separate_calls():
    model = _lowrank_gaussian()
    x_T = _x_T(model, 5.0)
    sigma_T = torch.tensor([80.0, 5.0, 0.3], dtype=F64)
    for f in (gaussian_flow, gaussian_flow_denoised):
        batched = f(model, x_T, sigma_T, SIGMAS)
        for b, s_T in enumerate(sigma_T.tolist()):
            alone = f(model, x_T[b : b + 1], s_T, SIGMAS)
            assert_close(batched[:, b], alone[:, 0])
    ends = gaussian_flow_endpoint(model, x_T, sigma_T)
    assert_close(ends, gaussian_flow(model, x_T, sigma_T, [0.0])[0])


def test_rank_zero_gaussian_flows_straight_to_the_mean():
    """No covariance: ``x(sigma) = mu + (sigma / sigma_T)(x_T - mu)``, ``D = mu`` (Isotropic's denoiser)."""
    mean = torch.randn(5, generator=_gen(4), dtype=F64)
    U, lam = torch.zeros(5, 0, dtype=F64), torch.zeros(0, dtype=F64)
    model = Gaussian(mean, U=U, lam=lam)
    x_T = _x_T(model, 3.0)
    s = torch.tensor(SIGMAS, dtype=F64)
    expect = mean + (s / 3.0)[:, None, None] * (x_T - mean)
    assert_close(gaussian_flow(model, x_T, 3.0, s), expect, rtol=1e-14, atol=1e-14)
    den = gaussian_flow_denoised(model, x_T, 3.0, s)
    assert_close(den[1], Isotropic(mean)(x_T, 1.0))


ALPHAS = [1e-3, 0.3, 0.7, 0.99, 1.0]  # includes alpha = 1 (sigma = 0, the end point)


@pytest.mark.parametrize("alpha_T", [0.02, 0.5])
@pytest.mark.parametrize("name", MODELS)
def test_vp_is_rescaled_sigma_form(name, alpha_T):
    """Eq. 64: ``x_t / alpha_t`` is the sigma-form state at ``sigma_t / alpha_t`` started from ``x_T / alpha_T``
    at ``sigma_T / alpha_T``; the VP denoiser output is the sigma-form one there (relative error < 1e-10)."""
    model = MODELS[name]()
    sigma_T = math.sqrt(1 - alpha_T**2)
    x_T = alpha_T * _x_T(model, 1.0) + sigma_T * _noise(model, seed=5)
    a = torch.tensor(ALPHAS, dtype=F64)
    s = torch.sqrt(1 - a**2)
    ratio = s / a
    scale = a.reshape(-1, 1, *[1] * len(model.shape))
    x_edm, sigma_T_edm = x_T / alpha_T, sigma_T / alpha_T
    vp = gaussian_flow_vp(model, x_T, alpha_T, a)
    assert _rel(vp / scale, gaussian_flow(model, x_edm, sigma_T_edm, ratio)) < 1e-10
    vp_den = gaussian_flow_vp_denoised(model, x_T, alpha_T, a)
    edm_den = gaussian_flow_denoised(model, x_edm, sigma_T_edm, ratio)
    assert _rel(vp_den, edm_den) < 1e-10
    # and it is the model's own denoiser at the rescaled state, wherever sigma_t > 0
    for t in range(len(ALPHAS) - 1):
        den = model(vp[t] / a[t], float(ratio[t]))
        assert_close(vp_den[t], den, rtol=1e-10, atol=1e-12)
    # explicit sigmas equal to the defaults change nothing
    explicit = gaussian_flow_vp(model, x_T, alpha_T, a, sigma_T=sigma_T, sigmas=s)
    assert_close(explicit, vp)


def test_vp_with_alpha_one_is_the_sigma_form():
    """alpha = 1 throughout: eq. 18 reduces to eq. 15 and eq. 20 to eq. 16."""
    model = _lowrank_gaussian()
    x_T = _x_T(model, 4.0)
    ones = torch.ones(len(SIGMAS), dtype=F64)
    pairs = [
        (gaussian_flow_vp, gaussian_flow),
        (gaussian_flow_vp_denoised, gaussian_flow_denoised),
    ]
    for vp, edm in pairs:
        out = vp(model, x_T, 1.0, ones, sigma_T=4.0, sigmas=SIGMAS)
        assert_close(out, edm(model, x_T, 4.0, SIGMAS), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", MODELS)
def test_vp_pure_noise_start_is_rotation_plus_residual(name):
    """App. D.4, eq. 103 at alpha_T = 0 (sigma_T = 1): ``x_t - alpha_t x_0 - sigma_t x_T = sum_k J(alpha_t;
    lam_k) c_k u_k`` exactly (to 1e-10), ``x_0`` the VP end point (eq. 21) and ``c = U^T x_T``."""
    model = MODELS[name]()
    x_T = torch.randn(3, *model.shape, generator=_gen(6), dtype=F64)
    a = torch.tensor([0.0, 0.1, 0.4, 0.7071, 0.9, 0.999, 1.0], dtype=F64)
    xs = gaussian_flow_vp(model, x_T, 0.0, a)
    x_0 = gaussian_flow_vp(model, x_T, 0.0, [1.0])[0]
    # alpha_t = alpha_T = 0 gives back the start, alpha_t = 1 the end point
    assert_close(xs[0], x_T, rtol=0, atol=1e-14)
    assert_close(xs[-1], x_0, rtol=0, atol=1e-14)
    s = torch.sqrt(1 - a**2)
    expand = (-1, 1, *[1] * len(model.shape))
    lhs = xs - a.reshape(expand) * x_0 - s.reshape(expand) * x_T
    c = x_T.reshape(3, -1) @ model.U
    J = rotation_residual(a[:, None, None], model.lam)  # (S, 1, r)
    rhs = ((J * c) @ model.U.T).reshape(xs.shape)
    assert_close(lhs, rhs, rtol=0, atol=1e-10)
    # the residual is on the manifold: its off-manifold part vanishes
    flat = lhs.flatten(2)
    assert_close(flat, flat @ model.U @ model.U.T, rtol=0, atol=1e-10)


def test_rotation_residual_properties():
    alpha = torch.linspace(0, 1, 2001, dtype=F64)[:, None]
    lam = torch.logspace(-4, 6, 41, dtype=F64)
    J = rotation_residual(alpha, lam)
    # sqrt(1 - alpha^2), rounded as the module does
    sigma = torch.sqrt((1 - alpha) * (1 + alpha))
    a = alpha * lam.sqrt()
    # zero at both ends, strictly negative inside (0, 1)
    assert float(J[[0, -1]].abs().max()) == 0.0
    assert bool((J[1:-1] < 0).all())
    # |J| = (a + sigma) - sqrt(a^2 + sigma^2) < min(sigma, alpha sqrt(lam)) <= 1 (so |J| < 1 for every lam) and
    # |J| <= (sqrt2 - 1) sqrt(sigma^2 + lam alpha^2), with equality at alpha sqrt(lam) = sigma (tolerance 1e-15)
    assert bool((J[1:-1].abs() < torch.minimum(sigma, a)[1:-1]).all())
    bound = (math.sqrt(2) - 1) * torch.sqrt(sigma**2 + a**2)
    assert bool((J.abs() <= bound + 1e-15).all())
    # eq. 107 is exact at alpha = 1 / sqrt(lam + 1), sigma = sqrt(lam / (lam + 1)):
    # J = -2 (1 - sqrt2 / 2) sqrt(lam / (lam + 1)) (tolerance 1e-14 with sigma given exactly; 1e-11 with the
    # VP default sigma = sqrt(1 - alpha^2), which inherits alpha's rounding relative to 1 - alpha ~ lam / 2)
    at_alpha, at_sigma = 1 / torch.sqrt(lam + 1), torch.sqrt(lam / (lam + 1))
    eq107 = -2 * (1 - math.sqrt(2) / 2) * torch.sqrt(lam / (lam + 1))
    J_exact = rotation_residual(at_alpha, lam, at_sigma)
    assert_close(J_exact, eq107, rtol=1e-14, atol=0)
    assert_close(rotation_residual(at_alpha, lam), eq107, rtol=1e-11, atol=0)
    # eq. 107's bound 2 (1 - sqrt2 / 2) ~ 0.586 holds for lam <= 1 (there |J| <= sqrt2 - 1 ~ 0.414), but it is
    # not the minimum over alpha for larger lam: e.g. lam = 1e4 reaches |J| ~ 0.957 (J -> -1 as lam -> inf)
    small = lam <= 1
    assert float(J[:, small].abs().max()) <= math.sqrt(2) - 1 + 1e-15
    assert float(J[:, lam == 1e4].min()) < -0.95
    # eq. 104 (naive) agrees with eq. 105 where the naive form is well conditioned (lam in [1e-2, 1e2], 1e-12)
    mid = (lam >= 1e-2) & (lam <= 1e2)
    naive = torch.sqrt(sigma**2 + lam * alpha**2) - a - sigma
    assert_close(J[:, mid], naive[:, mid], rtol=0, atol=1e-12)
    # explicit sigma equals the VP default; float inputs give float64
    assert_close(rotation_residual(alpha, lam, sigma), J, rtol=0, atol=0)
    assert rotation_residual(0.5, 2.0).dtype == F64
    # the cancellation-free form keeps its relative precision where eq. 104 cancels: sigma << alpha sqrt(lam),
    # J = -sigma + sigma^2 / (2 a) + O(sigma^4 / a^3) (tolerance 1e-14; eq. 104 is off by ~3e-10 here)
    tiny = rotation_residual(1.0, 3.0, 1e-9)
    series = -1e-9 + 1e-18 / (2 * math.sqrt(3))
    assert float(tiny) == pytest.approx(series, rel=1e-14, abs=0)


def test_rotation_residual_rejects_alpha_outside_unit_interval():
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="alpha"):
            rotation_residual(bad, 1.0)
    # with an explicit sigma, alpha is not restricted
    rotation_residual(1.1, 1.0, sigma=0.5)


@pytest.mark.parametrize("sigma_p", [0.05, 1.0, 30.0])
def test_perturbation_amplification(sigma_p):
    """Eq. 23: a kick ``delta u_k`` to the state at sigma' moves the end point by ``amplification(lam_k, sigma')
    delta u_k``; an off-manifold kick moves it by 0 (to 1e-12)."""
    model = _lowrank_gaussian()
    x_T = _x_T(model, 80.0)
    x_p = gaussian_flow(model, x_T, 80.0, [sigma_p])[0]
    end = gaussian_flow_endpoint(model, x_p, sigma_p)
    delta = 0.37
    for k in range(model.rank):
        u = model.U[:, k]
        moved = gaussian_flow_endpoint(model, x_p + delta * u, sigma_p) - end
        expect = amplification(model.lam[k], sigma_p) * delta * u
        assert_close(moved, expect.expand_as(moved), rtol=0, atol=1e-12)
    v = torch.randn(6, generator=_gen(7), dtype=F64)
    v = v - model.U @ (model.U.T @ v)
    moved = gaussian_flow_endpoint(model, x_p + v, sigma_p) - end
    assert_close(moved, torch.zeros_like(moved), rtol=0, atol=1e-12)


@pytest.mark.parametrize("alpha_p", [0.1, 0.6, 0.95])
def test_perturbation_amplification_vp(alpha_p):
    """Eq. 23 with data scale: the VP end point (alpha = 1) moves by ``sqrt(lam / (sigma'^2 + lam alpha'^2))``
    per unit kick along ``u_k`` at ``(alpha', sigma')`` (to 1e-12); off-manifold kicks vanish."""
    model = _image_gaussian()
    sigma_p = math.sqrt(1 - alpha_p**2)
    x_p = gaussian_flow_vp(model, _noise(model, 2, seed=8), 0.0, [alpha_p])[0]
    end = gaussian_flow_vp(model, x_p, alpha_p, [1.0])[0]
    for k in range(model.rank):
        u = model.U[:, k].reshape(2, 3)
        moved = gaussian_flow_vp(model, x_p + u, alpha_p, [1.0])[0] - end
        expect = amplification(model.lam[k], sigma_p, alpha_p) * u
        assert_close(moved, expect.expand_as(moved), rtol=0, atol=1e-12)
    v = torch.randn(6, generator=_gen(9), dtype=F64)
    v = (v - model.U @ (model.U.T @ v)).reshape(2, 3)
    moved = gaussian_flow_vp(model, x_p + v, alpha_p, [1.0])[0] - end
    assert_close(moved, torch.zeros_like(moved), rtol=0, atol=1e-12)


def test_state_scale_denoised_scale_amplification_identities():
    sigma = torch.logspace(-3, 2, 11, dtype=F64)[:, None]
    lam = torch.logspace(-2, 2, 5, dtype=F64)
    sigma_T, alpha, alpha_T = 80.0, torch.linspace(0.1, 1, 11, dtype=F64)[:, None], 0.3
    # state_scale (the paper's psi) is 1 at sigma_T (also with data scale)
    one = torch.ones_like(lam)
    assert_close(state_scale(sigma_T, lam, sigma_T), one, rtol=1e-15, atol=0)
    assert_close(state_scale(0.4, lam, 0.4, alpha_T, alpha_T), one, rtol=1e-15, atol=0)
    # denoised_scale (xi) = lam / (lam + sigma^2) state_scale (psi): the denoiser's shrinkage of the state's
    # coefficient (eqs. 13, 15, 16); with data scale xi = alpha lam / (sigma^2 + lam alpha^2) psi (eqs. 18, 20)
    shrink = lam / (lam + sigma**2)
    assert_close(denoised_scale(sigma, lam, sigma_T), shrink * state_scale(sigma, lam, sigma_T))
    shrink = alpha * lam / (sigma**2 + lam * alpha**2)
    scaled = state_scale(sigma, lam, 0.9, alpha, alpha_T)
    assert_close(denoised_scale(sigma, lam, 0.9, alpha, alpha_T), shrink * scaled)
    # scaling rule of App. D.2: psi_bar = (alpha / alpha_T) psi(sigma / alpha, sigma_T / alpha_T)
    assert_close(scaled, alpha / alpha_T * state_scale(sigma / alpha, lam, 0.9 / alpha_T))
    # eq. 23: amplification = psi_bar(0) / psi_bar(t')
    ratio = state_scale(0.0, lam, 0.9, 1.0, alpha_T) / scaled
    assert_close(amplification(lam, sigma, alpha), ratio)
    # floats give float64; float32 tensors stay float32
    assert state_scale(1.0, 2.0, 3.0).dtype == F64
    assert denoised_scale(torch.tensor(1.0), torch.tensor([2.0]), 3.0).dtype == torch.float32


F = gaussian_flow
VP = gaussian_flow_vp
# (exception, message pattern, call on the low-rank model m and a float64 start x)
BAD_CALLS = {
    "sigma_T=0": (ValueError, "sigma_T", lambda m, x: F(m, x, 0.0, [1.0])),
    "sigma_T<0": (ValueError, "sigma_T", lambda m, x: F(m, x, -1.0, [1.0])),
    "a sigma_T=0": (
        ValueError,
        "sigma_T",
        lambda m, x: gaussian_flow_endpoint(m, x, torch.tensor([1.0, 0.0, 1.0])),
    ),
    "sigma_T shape": (ValueError, "sigma_T", lambda m, x: F(m, x, [1.0, 1.0], [1.0])),
    "sigma<0": (ValueError, "sigmas", lambda m, x: F(m, x, 1.0, [0.5, -1e-3])),
    "sigmas 2-D": (
        ValueError,
        "sigmas",
        lambda m, x: gaussian_flow_denoised(m, x, 1.0, [[0.5]]),
    ),
    "sigmas 0-D": (ValueError, "sigmas", lambda m, x: F(m, x, 1.0, 0.5)),
    "sigma nan": (ValueError, "sigmas", lambda m, x: F(m, x, 1.0, [float("nan")])),
    "x dtype": (TypeError, "dtype", lambda m, x: F(m, x.float(), 1.0, [0.5])),
    "x dtype, end": (
        TypeError,
        "dtype",
        lambda m, x: gaussian_flow_endpoint(m, x.float(), 1.0),
    ),
    "x dtype, vp": (TypeError, "dtype", lambda m, x: VP(m, x.float(), 0.0, [0.5])),
    "x shape": (ValueError, "shape", lambda m, x: F(m, x[:, :-1], 1.0, [0.5])),
    "Isotropic": (TypeError, "Gaussian", lambda m, x: F(Isotropic(m.mean), x, 1, [1])),
    "callable": (
        TypeError,
        "Gaussian",
        lambda m, x: gaussian_flow_vp_denoised(lambda y, s: y, x, 0.0, [0.5]),
    ),
    "alpha_T=1, sigma_T=0": (ValueError, "alpha_T", lambda m, x: VP(m, x, 1.0, [0.5])),
    "alpha_T>1": (ValueError, "alpha_T", lambda m, x: VP(m, x, 1.2, [0.5])),
    "alpha_T<0": (ValueError, "alpha_T", lambda m, x: VP(m, x, -0.1, [0.5], sigma_T=1)),
    "vp sigma_T=0": (ValueError, "sigma_T", lambda m, x: VP(m, x, 0.5, [1], sigma_T=0)),
    "alpha>1": (ValueError, "alphas", lambda m, x: VP(m, x, 0.0, [0.5, 1.01])),
    "alpha<0": (ValueError, "alphas", lambda m, x: VP(m, x, 0.0, [-0.1])),
    "vp sigma<0": (ValueError, "sigmas", lambda m, x: VP(m, x, 0, [0.5], sigmas=[-1])),
    "vp lengths": (
        ValueError,
        "one shape",
        lambda m, x: VP(m, x, 0.0, [0.5, 0.6], sigmas=[0.2]),
    ),
    "alpha=sigma=0": (
        ValueError,
        "both be 0",
        lambda m, x: gaussian_flow_vp_denoised(m, x, 0.0, [0.0], sigmas=[0.0]),
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_invalid_arguments_raise(case):
    exc, pattern, call = BAD_CALLS[case]
    model = _lowrank_gaussian()
    with pytest.raises(exc, match=pattern):
        call(model, _x_T(model, 1.0))
