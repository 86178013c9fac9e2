"""Models trained elsewhere as denoisers: the VP wrappers against the exact Gaussian (float64), and a
random-weight diffusers UNet written with save_pretrained and loaded through diffusers:PATH."""

import math

import pytest
import torch

from scorelab.analytic import Gaussian
from scorelab.external import ContinuousVP, DiscreteVP
from scorelab.sample import generate, heun
from scorelab.schedules import karras

F64 = torch.float64


def _gaussian(d: int = 5) -> Gaussian:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(d, d, generator=g, dtype=F64)
    return Gaussian(torch.randn(d, generator=g, dtype=F64), A @ A.T / d + 0.1 * torch.eye(d, dtype=F64))


def _ddpm_alphas_cumprod(T: int = 1000) -> torch.Tensor:
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=F64), 0)  # DDPM's linear betas (Ho et al. 2020)


def oracle(gauss: Gaussian, sigma_of_t, prediction: str):
    """The exact VP network of a Gaussian: at time t (noise level sigma(t)) and state x_t = alpha x, the
    epsilon, v (alpha eps - alpha sigma x0) or x0 that the Gaussian's posterior mean implies."""
    def network(x_t, t):
        sigma = sigma_of_t(t).reshape(-1, 1)
        alpha = (1 + sigma**2).rsqrt()
        x = x_t / alpha
        x0 = gauss(x, sigma.flatten())
        eps = (x - x0) / sigma
        return {"epsilon": eps, "v_prediction": alpha * eps - alpha * sigma * x0, "sample": x0}[prediction]
    return network


def _wrapped(gauss, prediction, interpolate=True):
    holder = {}
    wrapped = DiscreteVP(oracle(gauss, lambda t: holder["w"].sigma_at(t), prediction), _ddpm_alphas_cumprod(),
                         prediction, interpolate=interpolate)
    holder["w"] = wrapped
    return wrapped


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_a_discrete_vp_oracle_is_the_gaussian_denoiser_at_and_between_the_levels(prediction):
    gauss, wrapped = _gaussian(), None
    wrapped = _wrapped(gauss, prediction)
    x = 3 * torch.randn(32, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    levels = wrapped.levels
    at_levels = levels[torch.randint(len(levels), (32,), generator=torch.Generator().manual_seed(2))]
    between = torch.exp(torch.empty(32, dtype=F64).uniform_(math.log(wrapped.sigma_min), math.log(wrapped.sigma_max),
                                                            generator=torch.Generator().manual_seed(3)))
    for sigma in (at_levels, between):
        torch.testing.assert_close(wrapped(x, sigma), gauss(x, sigma), rtol=1e-10, atol=1e-10)
    sigmas = karras(12, wrapped.sigma_min, wrapped.sigma_max, dtype=F64)
    x_T = wrapped.sigma_max * torch.randn(16, 5, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(heun(wrapped, x_T, sigmas), heun(gauss, x_T, sigmas), rtol=1e-10, atol=1e-10)


def test_the_time_of_a_sigma_interpolates_in_log_sigma_or_takes_the_nearest_level():
    wrapped = _wrapped(_gaussian(), "epsilon")
    nearest = _wrapped(_gaussian(), "epsilon", interpolate=False)
    log_levels = wrapped.levels.log()
    k, w = 417, 0.3
    sigma = torch.exp((1 - w) * log_levels[k] + w * log_levels[k + 1]).reshape(1)
    assert float(wrapped.timestep(sigma)) == pytest.approx(k + w, abs=1e-9)
    assert float(nearest.timestep(sigma)) == k
    assert float(wrapped.timestep(wrapped.levels[[0, 999]]).sub(torch.tensor([0.0, 999.0], dtype=F64)).abs().max()) < 1e-9
    torch.testing.assert_close(wrapped.sigma_at(wrapped.timestep(sigma)), sigma, rtol=1e-12, atol=0)
    # at a level the nearest-level model is exact too; between levels it is evaluated at the nearest one
    gauss = _gaussian()
    x = torch.randn(4, 5, dtype=F64, generator=torch.Generator().manual_seed(5))
    at = nearest.levels[[3, 300, 600, 900]]
    exact = _wrapped(gauss, "epsilon", interpolate=False)
    torch.testing.assert_close(exact(x, at), gauss(x, at), rtol=1e-10, atol=1e-10)
    # DDIM's timesteps: n of the model's own levels uniform in t, then 0
    grid = wrapped.uniform_levels(10)
    assert len(grid) == 11 and float(grid[-1]) == 0 and float(grid[0]) == pytest.approx(wrapped.sigma_max)
    assert float(grid[-2]) == pytest.approx(wrapped.sigma_min)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_a_continuous_vp_oracle_is_the_gaussian_denoiser(prediction):
    """score_sde's linear VP SDE: t(sigma) is the inverse of sigma(t) in closed form, and the exact
    network of a Gaussian wrapped by it is the Gaussian's denoiser."""
    gauss = _gaussian()
    holder = {}
    wrapped = ContinuousVP(oracle(gauss, lambda t: holder["w"].sigma(t / holder["w"].time_scale), prediction),
                           prediction)
    holder["w"] = wrapped
    t = torch.linspace(1e-5, 1, 101, dtype=F64)
    torch.testing.assert_close(wrapped.t(wrapped.sigma(t)), t, rtol=1e-10, atol=1e-12)
    assert wrapped.sigma_max == pytest.approx(math.sqrt(math.expm1(0.1 + 0.5 * 19.9)))
    x = torch.randn(8, 5, dtype=F64, generator=torch.Generator().manual_seed(6))
    sigma = torch.logspace(-2, 2, 8, dtype=F64)
    torch.testing.assert_close(wrapped(x, sigma), gauss(x, sigma), rtol=1e-10, atol=1e-10)


def test_a_grid_that_leaves_the_models_range_is_refused():
    wrapped = _wrapped(_gaussian(), "epsilon")
    with pytest.raises(ValueError, match="knows only 0.01 .. 157.4"):
        generate(wrapped, (5,), [0], sigmas=karras(5, 0.002, 80.0), dtype=F64)
    inside, _ = generate(wrapped, (5,), [0, 1], sigmas=karras(5, wrapped.sigma_min, wrapped.sigma_max), dtype=F64)
    assert bool(torch.isfinite(inside).all())


# ---------------------------------------------------------------- diffusers folders


diffusers = pytest.importorskip("diffusers")


def _tiny_unet(**extra):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, **extra)


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    """A random-weight DDPM pipeline folder in save_pretrained's layout (unet/ and scheduler/)."""
    folder = tmp_path_factory.mktemp("ddpm") / "tiny-ddpm"
    diffusers.DDPMPipeline(unet=_tiny_unet(), scheduler=diffusers.DDPMScheduler(num_train_timesteps=1000)
                           ).save_pretrained(folder)
    return folder


def test_a_diffusers_folder_loads_as_the_wrapped_unet(pipeline_folder):
    from scorelab.runs import Run

    run = Run.open(f"diffusers:{pipeline_folder}")
    assert run.data_shape == (1, 8, 8) and run.name == "tiny-ddpm" and run.home is None
    lo, hi = run.sigma_range
    assert lo == pytest.approx(0.01, rel=1e-3) and hi == pytest.approx(157.4, rel=1e-3)
    unet = diffusers.UNet2DModel.from_pretrained(pipeline_folder, subfolder="unet").eval()
    scheduler = diffusers.DDPMScheduler.from_pretrained(pipeline_folder, subfolder="scheduler")
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = 250
    alphabar = float(scheduler.alphas_cumprod[t])
    sigma = math.sqrt((1 - alphabar) / alphabar)
    with torch.no_grad():
        expected = x - sigma * unet(x * alphabar**0.5, torch.full((3,), float(t))).sample  # x / sqrt(1 + sigma^2)
        torch.testing.assert_close(run.denoiser(x, sigma), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no record of its training data"):
        run.training_data()
    assert Run.open(f"diffusers:{pipeline_folder}", data="digits").training_data().shape == (1437, 1, 8, 8)


def test_model_folders_class_conditioning_and_bad_sources(tmp_path):
    from scorelab.errors import CheckpointError
    from scorelab.runs import Run

    model = tmp_path / "model"
    _tiny_unet(num_class_embeds=3).save_pretrained(model)
    with pytest.raises(CheckpointError, match="no scheduler config"):
        Run.open(f"diffusers:{model}")
    diffusers.DDIMScheduler(prediction_type="v_prediction").save_pretrained(model)  # scheduler_config.json beside
    with pytest.raises(ValueError, match="class-conditional .3 classes.: choose one with --class"):
        Run.open(f"diffusers:{model}")
    run = Run.open(f"diffusers:{model}", class_label=2)
    assert run.denoiser.prediction_type == "v_prediction" and run.config["class_label"] == 2
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert not torch.equal(run.denoiser(x, 1.0), Run.open(f"diffusers:{model}", class_label=0).denoiser(x, 1.0))
    with pytest.raises(ValueError, match="classes 0 .. 2"):
        Run.open(f"diffusers:{model}", class_label=3)
    for bad, message in [(tmp_path / "nosuch", "no such folder"), (tmp_path, "not a diffusers folder")]:
        with pytest.raises(CheckpointError, match=message):
            Run.open(f"diffusers:{bad}")


def test_every_command_runs_on_a_diffusers_folder(pipeline_folder, tmp_path, capsys, monkeypatch):
    """diffusers:PATH wherever a run is accepted: every sampler of the registry (the grid defaults to
    the model's own range), teleportation and the Gaussian analyses with --data, inpainting, eval."""
    import numpy as np

    from scorelab.cli import main
    from scorelab.metrics import fid
    from scorelab.sample import SAMPLERS

    def run(*args):
        return main(["--no-progress", *map(str, args)])

    model = f"diffusers:{pipeline_folder}"
    common = ("--n", 3, "--steps", 4, "--device", "cpu")
    for sampler in SAMPLERS:
        extra = {"annealed-langevin": ("--levels", "geometric:1:0.05:3", "--steps-per-level", 2),
                 "early-stop": ("--sigma-stop", 0.5)}.get(sampler, ())
        assert run("sample", model, "--sampler", sampler, *common, *extra, "--out", tmp_path / sampler) == 0, sampler
        assert np.isfinite(np.load(tmp_path / sampler / "samples.npz")["samples"]).all()
    assert run("sample", model, "--sampler", "ddim", "--schedule", "model", *common, "--out", tmp_path / "own") == 0
    assert run("sample", model, "--teleport", 2, "--data", "digits", *common, "--out", tmp_path / "tp") == 0
    assert float(np.load(tmp_path / "tp" / "samples.npz")["nfe"]) == 2 * (4 - 2) - 1
    capsys.readouterr()
    assert run("sample", model, "--teleport", 2, *common) == 2
    assert "--data" in capsys.readouterr().err
    assert run("sample", model, "--sigma-min", 0.002, *common) == 2
    assert "knows only" in capsys.readouterr().err
    assert run("inpaint", model, "--images", "digits:test", "--mask", "left", "--sampler", "heun", *common,
               "--out", tmp_path / "inp") == 0
    monkeypatch.chdir(tmp_path)
    for analysis, options in [("gaussianity", ("--n", 4, "--components", 2)), ("trajectories", ("--n", 3, "--steps", 4)),
                              ("field", ("--anchors", "0,1,2", "--sigma", 1, "--grid", 3, "--models", "gaussian"))]:
        assert run("analyze", analysis, model, "--data", "digits", *options, "--device", "cpu") == 0, analysis
    out = capsys.readouterr().out
    assert "network ddim path against gaussian" in out and "VP coordinates" in out
    assert (tmp_path / "analysis" / "tiny-ddpm" / "gaussianity" / "unexplained.csv").is_file()
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not read")
    monkeypatch.setattr(fid, "inception_extractor", lambda path, device: lambda x: x.double().flatten(1)[:, :8])
    monkeypatch.setenv("SCORELAB_CACHE", str(tmp_path / "cache"))
    assert run("eval", model, "--ref", "digits:test", "--ref-n", 20, "--n", 6, "--steps", 2,
               "--inception-weights", weights, "--device", "cpu") == 0
    assert (tmp_path / "eval" / "tiny-ddpm" / "fid-heun-2-seeds0-5.json").is_file()
