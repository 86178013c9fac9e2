"""The simulated cryo-EM stack (scorelab.data.cryoem) and the measure against its clean manifold
(scorelab.metrics.cryoem)."""

import math

import numpy as np
import pytest
import torch

from scorelab.cli import main
from scorelab.data import load_dataset
from scorelab.data.cryoem import (
    Settings,
    apply_ctf,
    electron_wavelength,
    project,
    random_rotations,
    read_side,
    render,
    save_stack,
    simulate,
    weak_phase_ctf,
)
from scorelab.data.formats import load_mrc
from scorelab.errors import DataError
from scorelab.metrics.cryoem import (
    CleanManifold,
    bank_defoci,
    bank_orientations,
    evaluate,
    manifold_scores,
    orientation_concentration,
    pixel_distance,
)

mrcfile = pytest.importorskip("mrcfile")

SMALL = Settings(size=16, n_atoms=60)
BANK = {"n_orientations": 512, "n_defocus": 2}  # a bank small enough for a fast test


def _ks_uniform(u: torch.Tensor, lo: float, hi: float) -> float:
    """Kolmogorov-Smirnov distance between the sample ``u`` and the uniform distribution on [lo, hi]."""
    u = ((u.double().sort().values - lo) / (hi - lo)).numpy()
    n = len(u)
    return float(max((np.arange(1, n + 1) / n - u).max(), (u - np.arange(n) / n).max()))


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(N, S, S)`` images, ``sigma`` in pixels (Fourier-space, periodic)."""
    k = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64)
    h = torch.exp(-2 * math.pi**2 * sigma**2 * (k[:, None] ** 2 + k[None, :] ** 2))
    return torch.fft.ifft2(torch.fft.fft2(x.double()) * h).real.float()


# ---------------------------------------------------------------- the simulator


def test_projection_of_one_atom_is_the_integral_over_z_of_its_3d_gaussian():
    sigma, pixel, size = 4.0, 3.0, 16
    atom = torch.tensor([[5.3, -2.1, 7.0]], dtype=torch.float64)
    rotation = random_rotations(1, torch.Generator().manual_seed(3))
    image = project(atom, rotation, size, pixel, sigma)[0]
    c = (rotation[0] @ atom[0]).tolist()  # the rotated centre
    grid = (torch.arange(size, dtype=torch.float64) - size // 2) * pixel
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    z = torch.linspace(c[2] - 12 * sigma, c[2] + 12 * sigma, 4001, dtype=torch.float64)
    r2 = (x[..., None] - c[0]) ** 2 + (y[..., None] - c[1]) ** 2 + (z - c[2]) ** 2
    density = torch.exp(-r2 / (2 * sigma**2)) / (2 * math.pi * sigma**2) ** 1.5
    integral = torch.trapezoid(density, z, dim=-1)
    torch.testing.assert_close(image, integral, rtol=1e-9, atol=1e-12)
    assert int(image.argmax()) != int(project(atom, torch.eye(3)[None], size, pixel, sigma)[0].argmax())


def test_electron_wavelength_is_relativistic():
    assert electron_wavelength(300) == pytest.approx(0.019687, abs=2e-6)  # tabulated: 0.01969 Å at 300 kV
    assert electron_wavelength(200) == pytest.approx(0.025079, abs=2e-6)
    assert electron_wavelength(300) < 12.2643 / math.sqrt(300e3)  # the non-relativistic value is longer


def test_ctf_is_minus_the_amplitude_contrast_at_k_0_and_vanishes_at_its_zero_crossings():
    a, voltage, cs, dz = 0.1, 300.0, 2.7, 1.7
    assert float(weak_phase_ctf(torch.zeros(1), dz, amplitude_contrast=a)) == pytest.approx(-a, abs=1e-15)
    lam = electron_wavelength(voltage)
    c4, c2 = math.pi / 2 * cs * 1e7 * lam**3, math.pi * lam * dz * 1e4  # chi = c2 k^2 - c4 k^4
    for m in (1, 2, 3):  # zeros where chi = m pi - asin(A): sqrt(1 - A^2) sin(chi) = -A cos(chi)
        chi = m * math.pi - math.asin(a)
        k2 = (c2 - math.sqrt(c2 * c2 - 4 * c4 * chi)) / (2 * c4)
        assert abs(float(weak_phase_ctf(torch.tensor([math.sqrt(k2)], dtype=torch.float64), dz, cs=cs, amplitude_contrast=a))) < 1e-9
    k = torch.linspace(0, 0.125, 50, dtype=torch.float64)
    chi = c2 * k**2 - c4 * k**4
    expected = -(math.sqrt(1 - a * a) * torch.sin(chi) + a * torch.cos(chi))
    torch.testing.assert_close(weak_phase_ctf(k, dz, cs=cs, amplitude_contrast=a), expected, rtol=0, atol=1e-12)


def test_apply_ctf_multiplies_each_spatial_frequency_by_the_ctf():
    settings = Settings(size=16, pixel_size=3.0)
    side, m = 2 * settings.size, 5  # a cosine with m periods over the padded grid is one Fourier mode
    x = torch.arange(side, dtype=torch.float64) - side // 2
    wave = torch.cos(2 * math.pi * m * x / side).expand(1, side, side)
    k = torch.tensor([m / (side * settings.pixel_size)], dtype=torch.float64)
    gain = float(weak_phase_ctf(k, 2.0))
    out = apply_ctf(wave, torch.tensor([2.0]), settings)
    start = side // 2 - settings.size // 2
    torch.testing.assert_close(out, gain * wave[:, start : start + 16, start : start + 16], rtol=0, atol=1e-12)


def test_noise_has_the_requested_snr_in_every_image():
    snr, n = 0.05, 64
    stack = simulate(n, Settings(snr=snr, n_atoms=60))
    raw = (stack.images.double() + 1) / 2 * (stack.hi - stack.lo)[:, None, None] + stack.lo[:, None, None]
    noise = (raw - stack.clean.double()).flatten(1)
    p = noise.shape[1]
    ratio = noise.var(1) / (stack.clean.double().flatten(1).var(1, correction=0) / snr)  # 1 + N(0, 2 / (p - 1))
    spread = math.sqrt(2 / (p - 1))  # standard deviation of a Gaussian sample variance over its mean
    assert float((ratio - 1).abs().max()) < 5 * spread
    assert abs(float(ratio.mean()) - 1) < 4 * spread / math.sqrt(n)
    assert float(noise.mean(1).abs().max()) < 5 * float(noise.std(1).max()) / math.sqrt(p)


def test_rotations_are_uniform_on_so3():
    n = 20_000
    r = random_rotations(n, torch.Generator().manual_seed(0))
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(n, 3, 3), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(n, dtype=torch.float64))
    assert float(r.mean(0).abs().max()) < 4 * math.sqrt(1 / (3 * n))  # Haar: each entry has mean 0, variance 1/3
    axis = r[:, :, 2]  # where the molecule's z-axis points: uniform on the sphere
    ks = 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov 1 % critical value
    assert _ks_uniform(axis[:, 2], -1, 1) < ks  # Archimedes: the height is uniform
    assert _ks_uniform(torch.atan2(axis[:, 1], axis[:, 0]), -math.pi, math.pi) < ks


def test_the_seed_fixes_the_stack_and_the_structure_seed_the_molecule():
    a, b = simulate(8, SMALL), simulate(8, SMALL)
    for name in ("images", "clean", "projections", "rotations", "defocus", "atoms"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    other = simulate(8, Settings(size=16, n_atoms=60, seed=1))
    assert not torch.equal(a.atoms, other.atoms) and not torch.equal(a.rotations, other.rotations)
    same_molecule = simulate(8, Settings(size=16, n_atoms=60, seed=1, structure_seed=0))
    assert torch.equal(a.atoms, same_molecule.atoms) and not torch.equal(a.images, same_molecule.images)


def test_stack_fills_its_normalisation_window_and_the_ctf_inverts_the_contrast():
    stack = simulate(16, SMALL)
    assert stack.images.dtype == torch.float32
    assert torch.equal(stack.images.amin(dim=(1, 2)), -torch.ones(16))
    assert torch.equal(stack.images.amax(dim=(1, 2)), torch.ones(16))
    assert bool(((stack.defocus >= 1.0) & (stack.defocus <= 2.5)).all())
    centre = stack.clean[:, 6:10, 6:10].mean(dim=(1, 2)) - stack.clean.mean(dim=(1, 2))
    assert bool((centre < 0).all())  # CTF(0) = -A: the particle is darker than its surroundings
    flat = simulate(4, Settings(size=16, n_atoms=60, ctf=False))
    assert torch.equal(flat.clean, flat.projections) and bool(flat.defocus.isnan().all())


def test_mrc_round_trip_through_the_loaders(tmp_path):
    stack = simulate(12, SMALL)
    path, side = save_stack(stack, tmp_path / "p.mrcs")
    assert side == tmp_path / "p.npz" and sorted(f.name for f in tmp_path.iterdir()) == ["p.mrcs", "p.npz"]
    torch.testing.assert_close(load_mrc(path, "per-image")[:, 0], stack.images, atol=1e-6, rtol=0)
    torch.testing.assert_close(load_dataset(str(path))[:, 0], stack.images, atol=1e-6, rtol=0)
    with mrcfile.open(path) as mrc:
        assert mrc.data.dtype == np.float32 and mrc.is_image_stack()
        assert float(mrc.voxel_size.x) == pytest.approx(SMALL.pixel_size)
    back = read_side(path)
    assert back.settings == SMALL
    torch.testing.assert_close(back.clean, stack.clean.double())
    torch.testing.assert_close(back.rotations, stack.rotations)
    # the clean manifold regenerates from the atoms and settings alone
    _, clean = render(back.atoms, back.rotations, back.defocus, back.settings)
    torch.testing.assert_close(clean, back.clean, atol=1e-6 * float(back.clean.abs().max()), rtol=0)


def test_side_file_errors_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such side file"):
        read_side(tmp_path / "missing.mrcs")
    np.savez(tmp_path / "other.npz", images=np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match="not a cryo-EM side file"):
        read_side(tmp_path / "other.mrcs")
    with pytest.raises(ValueError, match=".mrcs or .mrc"):
        save_stack(simulate(2, SMALL), tmp_path / "p.npz")


# ---------------------------------------------------------------- the measure


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A 32 px stack with its side file, the clean manifold, 24 of the stack's clean images in its
    units and their scores."""
    stack = simulate(48, Settings(n_atoms=120))
    path, _ = save_stack(stack, tmp_path_factory.mktemp("cryoem") / "p.mrcs")
    manifold = CleanManifold.from_side(path)
    clean = stack.clean_in_stack_units()[:24]
    return manifold, clean, manifold_scores(clean, manifold, **BANK)


def test_images_rendered_at_bank_poses_score_1(measured):
    manifold, _, _ = measured
    rotations = bank_orientations(BANK["n_orientations"])[:6]
    defocus = bank_defoci(manifold.settings, BANK["n_defocus"])[torch.arange(6) % 2]
    clean = render(manifold.atoms, rotations, defocus, manifold.settings)[1]
    centred = clean - clean.mean(dim=(1, 2), keepdim=True)
    images = manifold.contrast * centred / centred.square().mean(dim=(1, 2), keepdim=True).sqrt() + 0.3
    scores = manifold_scores(images.float(), manifold, **BANK, refine=0)
    assert float(scores["correlation"].min()) > 0.9999
    assert float(scores["rmse"].max()) < 1e-3
    torch.testing.assert_close(scores["defocus"], defocus)


def test_clean_particles_score_near_1_once_refined_off_the_bank(measured):
    manifold, clean, fine = measured
    coarse = manifold_scores(clean, manifold, **BANK, refine=0)
    assert float(fine["correlation"].median()) > 0.999 > float(coarse["correlation"].median())
    assert bool((fine["correlation"] >= coarse["correlation"] - 1e-6).all())  # refinement only climbs
    assert float((fine["correlation"] > 0.99).float().mean()) > 0.75  # the rest: a near-mirror view's basin
    assert float(fine["rmse"].median()) < 0.15  # the floor: clean contrast in the stack varies ~10 % per image
    assert pixel_distance(clean, manifold) < 0.05
    # the 24 particles' orientations are uniform, so their matched poses are too (up to the few
    # near-mirror views): chi^2_9 / 9 stays below 3.10 with probability 0.999
    assert orientation_concentration(fine["rotation"]) < 3.10


def test_orientation_concentration_is_chi2_9_over_9_for_uniform_rotations_and_n_for_one_view():
    """200 sets of 128 uniform rotations: the mean of chi^2_9 / 9 is 1 with a standard deviation of
    sqrt(2 / 9) per set, so 4 standard errors of the mean over 200 sets is 0.13; its 95 % range
    [0.30, 2.11] holds 0.95 of the sets (binomial, 4 standard errors: 0.06)."""
    r = random_rotations(200 * 128, torch.Generator().manual_seed(3)).reshape(200, 128, 3, 3)
    values = torch.tensor([orientation_concentration(block) for block in r])
    assert abs(float(values.mean()) - 1) < 4 * math.sqrt(2 / 9) / math.sqrt(200)
    inside = float(((values > 0.30) & (values < 2.11)).float().mean())
    assert abs(inside - 0.95) < 4 * math.sqrt(0.95 * 0.05 / 200)
    assert orientation_concentration(r[0, :1].expand(90, 3, 3)) == pytest.approx(90)
    with pytest.raises(DataError, match=r"expected \(n, 3, 3\)"):
        orientation_concentration(torch.zeros(0, 3, 3))


def test_noise_correlates_near_0_and_fails_every_measure(measured):
    manifold, _, _ = measured
    noise = torch.randn(24, 32, 32, generator=torch.Generator().manual_seed(5)) * 0.3
    summary = evaluate(noise, manifold, **BANK)
    # Pearson correlations of a noise image with K templates are ~N(0, 1/P); their maximum stays below
    # sqrt(2 ln(2K) / P) with probability >= 1/2 (union bound), so the median image does too
    k, p = BANK["n_orientations"] * BANK["n_defocus"], 32 * 32
    assert summary["median_correlation"] < math.sqrt(2 * math.log(2 * k) / p) + 0.02  # + the refined poses' fit
    assert summary["median_rmse"] > 1 and summary["pixel_w2"] > 1


def test_blur_keeps_the_correlation_but_fails_the_blur_sensitive_measures(measured):
    manifold, clean, sharp = measured
    blurred = evaluate(_blur(clean, 1.0), manifold, **BANK)
    assert blurred["median_correlation"] > 0.95
    assert blurred["median_rmse"] > float(sharp["rmse"].median()) + 0.15
    assert blurred["pixel_w2"] > pixel_distance(clean, manifold) + 0.15
    grey = evaluate(torch.zeros(4, 32, 32), manifold, **BANK, starts=1, refine=0)
    assert grey["median_correlation"] == 0 and grey["median_rmse"] == pytest.approx(1)
    assert grey["pixel_w2"] == pytest.approx(1)


def test_measure_refuses_images_of_another_size(measured):
    manifold, _, _ = measured
    with pytest.raises(DataError, match="like the stack"):
        manifold_scores(torch.zeros(2, 1, 16, 16), manifold)
    with pytest.raises(DataError, match="NaN"):
        manifold_scores(torch.full((2, 32, 32), math.nan), manifold)


# ---------------------------------------------------------------- the command line


def test_cli_writes_the_stack_and_its_side_file(tmp_path, capsys):
    out = tmp_path / "p.mrcs"
    assert main(["data", "cryoem", "--n", "6", "--size", "16", "--snr", "0.05", "--ctf", "none", "--out", str(out)]) == 0
    assert load_dataset(str(out)).shape == (6, 1, 16, 16)
    side = read_side(out)
    assert side.settings.snr == 0.05 and not side.settings.ctf and side.clean.shape == (6, 16, 16)
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "p.npz" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--n", "0"], "n must be an integer >= 1"),
    (["--size", "4"], "size must be an integer >= 8"),
    (["--snr", "0"], "snr must be a finite number > 0"),
    (["--defocus-min", "3", "--defocus-max", "2"], "larger than defocus_max"),
    (["--out-suffix", ".npz"], "--out must end in .mrcs or .mrc"),
])
def test_cli_refuses_bad_input_with_one_error_line(tmp_path, capsys, args, message):
    out = tmp_path / ("p" + (args[1] if args[0] == "--out-suffix" else ".mrcs"))
    args = [] if args[0] == "--out-suffix" else args
    assert main(["data", "cryoem", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and message in err[0]
    assert not any(tmp_path.iterdir())


def test_mad_cleans_the_shipped_cryoem_model(tmp_path):
    """The shipped UNet saw only the noisy stack (SNR 0.1, `scorelab data cryoem --seed 0`): from the
    same seeds, MAD's samples correlate with the clean manifold at least twice as well as Heun's
    (measured on 128 held-out seeds at 32 steps: 0.966 against 0.283, examples/README.md; here 12
    seeds and a small bank. At 10 steps the same (a, b) gave 0.18: tuned (a, b) hold for their
    grid). The reference is a fresh stack of the training molecule."""
    from scorelab.pretrained import pretrained_path
    from scorelab.runs import load_denoiser
    from scorelab.sample import generate
    from scorelab.schedules import karras

    denoiser, meta = load_denoiser(pretrained_path("cryoem-sim-32"))
    path, _ = save_stack(simulate(8, Settings(size=32, snr=0.1, seed=9, structure_seed=0)), tmp_path / "ref.mrcs")
    manifold = CleanManifold.from_side(path)
    seeds, sigmas = list(range(1000, 1012)), karras(32)
    heun_x, _ = generate(denoiser, meta["data_shape"], seeds, sampler="heun", sigmas=sigmas)
    mad_x, _ = generate(denoiser, meta["data_shape"], seeds, sampler="mad", sigmas=sigmas, a=0.01, b=2, p=8)
    bank = {"n_orientations": 512, "n_defocus": 4}
    r_heun = evaluate(heun_x, manifold, **bank)["median_correlation"]
    r_mad = evaluate(mad_x, manifold, **bank)["median_correlation"]
    assert r_heun < 0.4 and r_mad > 0.8 and r_mad >= 2 * r_heun, (r_heun, r_mad)
