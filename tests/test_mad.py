"""MAD inference (MAD paper, Algorithm 1) on analytical denoisers, where every answer is known."""

import math

import pytest
import torch

from scorelab.analytic import Gaussian, GaussianMixture, Isotropic
from scorelab.data.toy import load
from scorelab.nets import MLP, EDMPrecond
from scorelab.sample import CountNFE, euler, heun, mad, mad_gamma
from scorelab.schedules import karras

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mixture():
    covs = torch.stack([torch.diag(torch.tensor(v, dtype=F64)) for v in ([0.5, 2.0], [1.0, 0.1])])
    return GaussianMixture(
        torch.tensor([0.4, 0.6], dtype=F64), torch.tensor([[-3.0, 0.0], [3.0, 1.0]], dtype=F64), covs
    )


@pytest.mark.parametrize(("a", "b", "p"), [(1, 1, 1), (1, 1.1, 1.3), (2, 30, 2), (0.002, 15, 8)])
def test_gamma_solves_its_equation(a, b, p):
    t = karras(40, sigma_min=0.002, sigma_max=80.0)[:-1]
    gamma = mad_gamma(t, a, b, p)
    residual = a * gamma ** (2 / p) + b * gamma - t**2
    assert gamma.shape == t.shape and bool((gamma > 0).all())
    torch.testing.assert_close(residual / t**2, torch.zeros_like(t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("derivative", ["forward", "central", "exact"])
def test_a1_b0_recovers_the_euler_sampler(derivative):
    """Sec. 4: a = 1, b = 0 gives the standard score step (3); b = 1e-12 is within 1e-9 of it
    (central differences estimate S(t) itself to O(delta^2): delta = 1e-6)."""
    model = _mixture()
    sigmas = karras(12, sigma_min=0.01, sigma_max=20.0)
    x = 20 * torch.randn(64, 2, generator=_gen(1), dtype=F64)
    out = mad(model, x, sigmas, a=1, b=1e-12, p=1.5, delta=1e-6, derivative=derivative)
    torch.testing.assert_close(out, euler(model, x, sigmas), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("derivative", ["forward", "central", "exact"])
def test_a_dirac_is_approached_like_the_standard_step(derivative):
    """Sec. 4, eqs. 6-7: for S = -(x - mu)/t^2 the correction m makes every step
    x - mu <- (t_next / t)(x - mu), whatever a, b, p."""
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    model = Isotropic(mu)
    sigmas = karras(10, sigma_min=0.05, sigma_max=10.0)
    x = mu + 10 * torch.randn(8, 3, generator=_gen(2), dtype=F64)
    states = []
    mad(
        model,
        x,
        sigmas,
        a=2,
        b=30,
        p=2,
        delta=1e-6,
        derivative=derivative,
        callback=lambda i, t, xi, d: states.append(xi),
    )
    states = torch.stack(states)
    ratio = (states[1:] - mu).norm(dim=-1) / (states[:-1] - mu).norm(dim=-1)
    expected = (sigmas[1:-1] / sigmas[:-2])[:, None].expand_as(ratio)
    tol = {"exact": 1e-10, "central": 1e-6, "forward": 1e-3}[derivative]
    torch.testing.assert_close(ratio, expected, rtol=tol, atol=0)


def test_each_step_is_one_batched_call():
    model = _mixture()
    sigmas = karras(7, sigma_min=0.01, sigma_max=20.0)
    x = 20 * torch.randn(5, 2, generator=_gen(3), dtype=F64)
    for derivative in ("forward", "central"):
        counted = CountNFE(model)
        mad(counted, x, sigmas, a=1, b=1, p=1, derivative=derivative)
        assert counted.calls == 7 and counted.nfe(5) == 14
    calls = []
    mad(model, x, sigmas, a=1, b=1, p=1, callback=lambda i, t, xi, d: calls.append((i, float(t), d.shape)))
    assert [c[0] for c in calls] == list(range(7)) and calls[0][1] == pytest.approx(20.0) and calls[0][2] == (5, 2)


def test_degenerate5_soft_thresholding():
    """MAD paper, Fig. 1 (a = b = p = 1, 40-step Karras grid): components of variance <= 0.5 collapse
    to their means, the variance-4 component keeps a clear spread, and x2 converges to 0; the
    standard sampler keeps the spread sqrt(v) (within 15% on 1000 samples per component)."""
    toy = load("degenerate5", dtype=F64)
    means, variances = toy.params["means"], toy.params["variances"]
    sigmas = karras(40, sigma_min=0.002, sigma_max=80.0)
    x = sigmas[0] * torch.randn(5000, 2, generator=_gen(4), dtype=F64)

    def spreads(out):
        k = (out[:, :1] - means).abs().argmin(1)
        return torch.stack([out[k == j, 0].std() for j in range(5)])

    standard = spreads(heun(toy.denoiser, x, sigmas))
    torch.testing.assert_close(standard, variances.sqrt(), rtol=0.15, atol=0)
    for derivative, delta in (("exact", 1e-3), ("central", 1e-4)):
        out = mad(toy.denoiser, x, sigmas, a=1, b=1, p=1, delta=delta, derivative=derivative)
        sd = spreads(out)
        assert bool((sd[:2] < 1e-6).all()), (derivative, sd)
        assert bool((sd[2:] < standard[2:]).all()) and float(sd[4]) > 0.5, (derivative, sd)
        assert float(out[:, 1].abs().max()) < 1e-4, derivative


def test_exact_derivative_through_a_network_matches_central_differences():
    """Forward-mode AD through EDM preconditioning and the MLP, against a float64 central difference."""
    torch.manual_seed(0)
    net = EDMPrecond(MLP(2, width=32, depth=2), sigma_data=0.5).double()
    sigmas = karras(5, sigma_min=0.05, sigma_max=5.0)
    x = 5 * torch.randn(16, 2, generator=_gen(5), dtype=F64)
    exact = mad(net, x, sigmas, a=1, b=1, p=2, derivative="exact")
    central = mad(net, x, sigmas, a=1, b=1, p=2, delta=1e-5, derivative="central")
    torch.testing.assert_close(exact, central, rtol=1e-6, atol=1e-6)


def test_float32_in_float32_out():
    model = Gaussian(torch.zeros(3), torch.eye(3))
    out = mad(model, 5 * torch.randn(4, 3), karras(5, sigma_max=5.0), a=1, b=1, p=2)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"a": 0.0}, "a must be"),
        ({"b": -1.0}, "b must be"),
        ({"p": math.nan}, "p must be"),
        ({"delta": 0.0}, "delta"),
        ({"derivative": "central", "delta": 1.5}, "delta"),
        ({"derivative": "backward"}, "derivative"),
        ({"sigmas": [1.0, 2.0, 0.0]}, "decreasing"),
        ({"b": 1e308, "sigmas": [1e-3, 0.0]}, "gamma"),
    ],
)
def test_invalid_parameters_raise(kwargs, match):
    args = {"a": 1.0, "b": 1.0, "p": 1.0, "sigmas": [2.0, 1.0, 0.0]} | kwargs
    with pytest.raises(ValueError, match=match):
        mad(Isotropic(torch.zeros(2, dtype=F64)), torch.ones(3, 2, dtype=F64), **args)


def test_anisotropic21_shrinks_the_minor_axis_and_keeps_most_of_the_major():
    """MAD paper, Fig. 2a (p = 1.3, a = 1, b = 1.1): measured on 3000 samples, Heun 1.22 / 0.48
    (major / minor spread), MAD 0.88 / 0.105."""
    from scorelab.metrics.modes import axis_spread

    toy = load("anisotropic21", dtype=F64)
    means, rotations = toy.params["means"], toy.params["rotations"]
    sigmas = karras(40, sigma_min=0.002, sigma_max=80.0)
    x = sigmas[0] * torch.randn(3000, 2, generator=_gen(6), dtype=F64)
    major_h, minor_h = axis_spread(heun(toy.denoiser, x, sigmas), means, rotations).nanmean(0)
    out = mad(toy.denoiser, x, sigmas, a=1, b=1.1, p=1.3, derivative="exact")
    major_m, minor_m = axis_spread(out, means, rotations).nanmean(0)
    assert abs(float(major_h) - 1.7**0.5) < 0.15 and abs(float(minor_h) - 0.2**0.5) < 0.08
    assert float(minor_m) < 0.3 * float(minor_h)
    assert float(major_m) > 0.6 * float(major_h)


@pytest.mark.slow
def test_rings5_trained_mlp_radial_spread_shrinks(tmp_path):
    """MAD paper, Fig. 2b: no closed-form noised score, so an MLP is trained (2000 steps, 1-2 minutes on
    CPU: marked slow); MAD (p = 2, a = 2, b = 30) must cut the radial spread around the rings to under
    half of Heun's and of the data's. The full run (examples/mad_toys.py, 3000 steps) measured 1.82 -> 0.24;
    1200 steps of batch 512 were too few (Heun 3.38, MAD 3.09)."""
    from scorelab.metrics.modes import radial_spread
    from scorelab.runs import load_denoiser
    from scorelab.train import TrainConfig, train

    config = TrainConfig(
        data="rings5",
        model="mlp",
        steps=2000,
        batch_size=1024,
        lr=2e-3,
        ema_halflife=200,
        checkpoint_every=2000,
        device="cpu",
    )
    train(config, tmp_path / "rings5", progress=False)
    denoiser, _ = load_denoiser(tmp_path / "rings5")
    toy = load("rings5")
    centres, radius = toy.params["centres"], toy.params["radius"]
    sigmas = karras(40, sigma_min=0.002, sigma_max=80.0, dtype=torch.float32)
    x = sigmas[0] * torch.randn(2000, 2, generator=_gen(7))
    with torch.no_grad():
        standard = radial_spread(heun(denoiser, x, sigmas), centres, radius)
        extended = radial_spread(mad(denoiser, x, sigmas, a=2, b=30, p=2), centres, radius)
    assert standard > 1.0 and extended < 0.5 * min(standard, 1.56), (standard, extended)


@pytest.mark.parametrize(("name", "a", "b"), [("shapes-noisy", 0.05, 3), ("shapes-noisy-32", 0.01, 1.5)])
def test_mad_cleans_the_shipped_noisy_shapes_model(name, a, b):
    """The shipped UNets saw only noisy shapes: from the same seeds, MAD's samples correlate with the
    clean manifold at least twice as well as Heun's (measured with 256 held-out seeds: 0.58 against
    0.23 at 64x64, 0.59 against 0.26 at 32x32, examples/README.md; here 16 seeds and 10 steps)."""
    from scorelab.metrics.shape_manifold import manifold_scores, summarize
    from scorelab.pretrained import pretrained_path
    from scorelab.runs import load_denoiser
    from scorelab.sample import generate

    denoiser, meta = load_denoiser(pretrained_path(name))
    seeds = list(range(1000, 1016))
    heun_x, _ = generate(denoiser, meta["data_shape"], seeds, sampler="heun", sigmas=karras(10))
    mad_x, _ = generate(denoiser, meta["data_shape"], seeds, sampler="mad", sigmas=karras(10), a=a, b=b, p=8)
    r_heun = summarize(manifold_scores(heun_x.clamp(-1, 1)))["median_correlation"]
    r_mad = summarize(manifold_scores(mad_x.clamp(-1, 1)))["median_correlation"]
    assert r_heun < 0.35 and r_mad > 0.5 and r_mad >= 2 * r_heun, (r_heun, r_mad)
