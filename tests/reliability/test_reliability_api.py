"""The Python API under fuzzed and extreme input (Hypothesis): every sampler, with any settings, grid and
start, either refuses with a ValueError/TypeError or returns finite samples; the analytical models give
finite denoiser outputs from sigma = 1e-30 to 1e30, in float32 and float64; and a table of bad calls to
the entry points, each a clear error."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorelab.analytic import DeltaMixture, Gaussian, GaussianMixture, Isotropic
from scorelab.data import toy
from scorelab.errors import ScorelabError
from scorelab.sample import SAMPLERS
from scorelab.schedules import karras

REFUSED = (ValueError, TypeError, ScorelabError)
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1e-300, 1e300]),
                    st.floats(0.01, 10.0))
SETTINGS = {  # every numeric setting of every sampler, fuzzed
    "heun": ("S_churn", "S_min", "S_max", "S_noise"),
    "euler-ancestral": ("eta", "s_noise"),
    "mad": ("a", "b", "p", "delta"),
    "mad-heun": ("a", "b", "p", "delta"),
    "early-stop": ("sigma_stop",),
    "annealed-langevin": ("eps",),
}
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model(dtype: torch.dtype) -> Gaussian:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64)
    return Gaussian(torch.randn(3, generator=g, dtype=torch.float64), a @ a.T / 3 + 0.1 * torch.eye(3,
                                                                                                 dtype=torch.float64)).to(dtype)


@st.composite
def sampler_calls(draw: st.DrawFn, name: str) -> tuple:
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    batch = draw(st.integers(0, 3))
    if draw(st.booleans()):  # a well-formed Karras grid, its parameters fuzzed within reason
        sigmas = karras(draw(st.integers(1, 5)), draw(st.floats(1e-6, 1.0)), draw(st.floats(1.1, 1e6)),
                        draw(st.floats(0.5, 20.0)))
    else:  # anything at all
        sigmas = torch.tensor(draw(st.lists(NUMBERS, min_size=0, max_size=5)), dtype=torch.float64)
    scale = draw(st.sampled_from([1.0, 80.0, 1e30, float("nan"), float("inf")]))
    x = scale * torch.randn(batch, 3, generator=torch.Generator().manual_seed(draw(st.integers(0, 9))), dtype=dtype)
    params = {key: draw(NUMBERS) for key in SETTINGS.get(name, ()) if draw(st.booleans())}
    if name in ("mad", "mad-heun"):
        params = {"a": 1.0, "b": 1.0, "p": 1.0} | params
    if name == "early-stop":
        params = {"sigma_stop": 0.5} | params
    if name == "annealed-langevin":
        params["steps_per_level"] = draw(st.integers(-1, 3))
    return dtype, x, sigmas, params


def _fuzz_sampler(name: str, call: tuple, ledger) -> None:
    dtype, x, sigmas, params = call
    with ledger.case(f"fuzzed sampler call: {name}"):
        try:
            out = SAMPLERS[name](_model(dtype), x, sigmas, generator=torch.Generator().manual_seed(0), **params)
        except REFUSED as e:
            assert str(e), "an error without a message"
            return
        assert out.shape == x.shape and out.dtype == x.dtype
        assert bool(torch.isfinite(out).all()), (name, params, sigmas)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_fuzzed_sampler_call_refuses_or_returns_finite_samples(name, ledger):
    @FAST
    @given(call=sampler_calls(name))
    def check(call):
        _fuzz_sampler(name, call, ledger)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_fuzzed_sampler_call_refuses_or_returns_finite_samples_at_length(name, ledger):
    @SLOW
    @given(call=sampler_calls(name))
    def check(call):
        _fuzz_sampler(name, call, ledger)

    check()


def _analytic(dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(1)
    points = torch.randn(50, 3, generator=g, dtype=torch.float64)
    return {"Isotropic": Isotropic(points.mean(0)).to(dtype), "Gaussian": Gaussian.fit(points).to(dtype),
            "GaussianMixture": GaussianMixture.fit(points, 3, seed=0).to(dtype),
            "DeltaMixture": DeltaMixture(points).to(dtype), "gmm3 (toy)": toy.load("gmm3", dtype=dtype).denoiser}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_the_analytical_models_are_finite_from_tiny_to_huge_sigma(dtype, ledger):
    """Denoiser outputs at sigma = 1e-30 .. 1e30 and inf (the nearest point's limit at small sigma, the
    mean's at large sigma are both defined); the score where sigma^2 and |x - D| / sigma^2 are representable."""
    x3 = 3 * torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=dtype)
    x2 = x3[:, :2].contiguous()
    for name, model in _analytic(dtype).items():
        x = x2 if name.startswith("gmm3") else x3
        for sigma in [10.0**exponent for exponent in range(-30, 31, 2)] + [math.inf]:
            with ledger.case(f"extreme sigma: {name}"):
                d = model(x, sigma)
                assert bool(torch.isfinite(d).all()), (name, dtype, sigma)
                if 1e-15 <= sigma <= 1e15 and hasattr(model, "score"):
                    assert bool(torch.isfinite(model.score(x, sigma)).all()), (name, dtype, sigma, "score")


BAD_CALLS = [
    ("generate: unknown sampler", lambda: __import__("scorelab.sample", fromlist=["generate"]).generate(
        _model(torch.float32), (3,), [0], sampler="rk45")),
    ("generate: no seeds", lambda: __import__("scorelab.sample", fromlist=["generate"]).generate(
        _model(torch.float32), (3,), [])),
    ("generate: teleport without a Gaussian", lambda: __import__("scorelab.sample", fromlist=["generate"]).generate(
        _model(torch.float32), (3,), [0], n_skip=2)),
    ("karras: n = 0", lambda: karras(0)),
    ("karras: rho = nan", lambda: karras(4, rho=float("nan"))),
    ("parse_levels: garbage", lambda: __import__("scorelab.schedules", fromlist=["x"]).parse_levels("a:b")),
    ("mad_gamma: t = 0", lambda: __import__("scorelab.sample", fromlist=["x"]).mad_gamma([0.0], 1, 1, 1)),
    ("teleport: n_skip beyond the grid", lambda: __import__("scorelab.sample", fromlist=["x"]).teleport(
        _model(torch.float32), torch.zeros(2, 3), karras(4), gaussian=_model(torch.float32), n_skip=9)),
    ("inpaint: mask of 0.5", lambda: __import__("scorelab.sample", fromlist=["x"]).inpaint(
        _model(torch.float32), torch.zeros(2, 3), torch.full((3,), 0.5), karras(3), sampler="heun")),
    ("Gaussian: x of another dtype", lambda: _model(torch.float64)(torch.zeros(2, 3), 1.0)),
    ("Gaussian: x of another size", lambda: _model(torch.float32)(torch.zeros(2, 4), 1.0)),
    ("Gaussian: sigma <= 0", lambda: _model(torch.float32)(torch.zeros(2, 3), 0.0)),
    ("Gaussian: sigma of another batch", lambda: _model(torch.float32)(torch.zeros(2, 3), torch.ones(3))),
    ("DeltaMixture: no points", lambda: DeltaMixture(torch.zeros(0, 3))),
    ("load_dataset: unknown", lambda: __import__("scorelab.data", fromlist=["x"]).load_dataset("nosuch")),
    ("Run.open: missing", lambda: __import__("scorelab.runs", fromlist=["x"]).Run.open("/nonexistent/run")),
    ("TrainConfig: steps = 0", lambda: __import__("scorelab.train", fromlist=["x"]).TrainConfig(steps=0).validate()),
    ("TrainConfig: lr = nan", lambda: __import__("scorelab.train", fromlist=["x"]).TrainConfig(
        lr=float("nan")).validate()),
    ("build_denoiser: unknown option", lambda: __import__("scorelab.nets", fromlist=["x"]).build_denoiser(
        "mlp", (2,), 1.0, {"nosuch": 1})),
    ("sliced_wasserstein: empty", lambda: __import__("scorelab.metrics", fromlist=["x"]).sliced_wasserstein(
        torch.zeros(0, 2), torch.zeros(3, 2))),
]


@pytest.mark.parametrize("case,call", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_a_bad_api_call_is_a_clear_error(case, call, ledger):
    with ledger.case("bad API input"):
        with pytest.raises(REFUSED) as raised:
            call()
        assert len(str(raised.value)) > 10, (case, str(raised.value))
        assert not isinstance(raised.value, (IndexError, KeyError, AssertionError)) or math.isnan(0)
