"""Rotated shapes (MAD paper, Sec. 5.3): rendering, boundary sampling, corruption, manifold scores."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from scorelab.data.shapes import (
    _GEOMETRY,
    SHAPES,
    boundary_points,
    clean,
    corrupt,
    noisy_shapes,
    render,
    signed_distance,
)
from scorelab.metrics.shape_manifold import manifold_scores, reference_bank, summarize

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grid_angles(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=F64) * (2 * math.pi / n)


# ---------------------------------------------------------------- render


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("size", [32, 64])
def test_render_range_shape_dtype_and_background(name, size):
    x = render(name, 0.7, size)
    assert x.shape == (size, size) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert all(float(x[i, j]) == -1.0 for i in (0, -1) for j in (0, -1))  # corners are background
    assert bool(((x > -1) & (x < 1)).any())  # anti-aliased edge pixels
    inside = float((x > 0).float().mean())
    assert 0.1 < inside < 0.4  # a solid shape of sensible size, not a speck or the whole frame
    hard = render(name, 0.7, size, antialias=False)
    assert set(hard.unique().tolist()) == {-1.0, 1.0}
    assert float((hard - x).abs().mean()) < 0.1


@pytest.mark.parametrize("name", SHAPES)
def test_rendered_ink_matches_the_shape_area(name):
    # the anti-aliased ramp is unbiased: mean coverage = shape area / frame area (4), to ~0.5 % at 64 px
    outline = _GEOMETRY[name].outline()
    nxt = torch.roll(outline, -1, 0)
    area = float((outline[:, 0] * nxt[:, 1] - nxt[:, 0] * outline[:, 1]).sum()) / 2
    perimeter = float((nxt - outline).norm(dim=1).sum())
    for angle in (0.0, 1.1, 4.0):
        coverage = float((render(name, angle, 64).double() + 1).mean()) / 2
        assert coverage == pytest.approx(area / 4, rel=0.005)
        hard = float((render(name, angle, 64, antialias=False).double() + 1).mean()) / 2
        assert hard == pytest.approx(area / 4, abs=perimeter / 64 / 4)  # each edge off by at most half a pixel
    farthest = float(outline.norm(dim=1).max())
    assert farthest == pytest.approx(0.75, abs=1e-6)  # centred on the centroid, reaching 0.75 of the half-frame


@pytest.mark.parametrize("name", SHAPES)
def test_render_vectorised_equals_per_angle_and_is_2pi_periodic(name):
    angles = torch.tensor([0.0, 0.3, 1.0, 2.5, 4.0, 6.0, 2 * math.pi], dtype=F64)
    batch = render(name, angles, 32)
    assert batch.shape == (7, 32, 32)
    single = torch.stack([render(name, float(a), 32) for a in angles])
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-6)
    assert torch.equal(render(name, 0.0, 32), render(name, 2 * math.pi, 32))
    torch.testing.assert_close(render(name, 1.0 + 2 * math.pi, 32), render(name, 1.0, 32), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", SHAPES)
def test_positive_angle_turns_counter_clockwise_as_displayed(name):
    # a quarter turn maps the (symmetric) pixel grid onto itself, so it must equal rot90 (counter-clockwise)
    upright = render(name, 0.0, 32)
    torch.testing.assert_close(render(name, math.pi / 2, 32), torch.rot90(upright, 1, (0, 1)), rtol=0, atol=1e-5)
    assert not torch.allclose(render(name, math.pi / 2, 32), torch.rot90(upright, -1, (0, 1)), atol=0.1)


@pytest.mark.parametrize("name", SHAPES)
def test_no_rotational_symmetry(name):
    # Measured min RMSE over 360 angles at 32 px: >= 0.53 for every shape and delta.
    angles = _grid_angles(120)
    x = render(name, angles, 32)
    for delta in (math.pi / 2, math.pi, 2 * math.pi / 3):
        rmse = (x - render(name, angles + delta, 32)).pow(2).mean((1, 2)).sqrt()
        assert float(rmse.min()) > 0.3, (name, delta)


def test_shapes_are_distinct_under_rotation():
    # Measured best cross-shape correlations at 32 px, 360 angles: <= 0.81 (L vs crescent); self: 1.
    bank, shape, _ = reference_bank(32, 180)
    b = bank.double() - bank.double().mean(1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    corr = b @ b.T
    for i in range(4):
        for j in range(4):
            best = float(corr[shape == i][:, shape == j].max())
            if i == j:
                assert best == pytest.approx(1.0, abs=1e-9)
            else:
                assert best < 0.9, (SHAPES[i], SHAPES[j], best)
    assert len(set(SHAPES)) == 4


# ---------------------------------------------------------------- clean


def test_clean_is_deterministic_and_uses_only_the_generator():
    torch.manual_seed(1)
    a = clean(50, 16, _gen(3))
    torch.manual_seed(2)
    b = clean(50, 16, _gen(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[2], clean(50, 16, _gen(4))[2])


def test_clean_frequencies_angles_and_images():
    images, shape, angles = clean(4000, 8, _gen(0))
    assert images.shape == (4000, 1, 8, 8) and images.dtype == torch.float32
    assert shape.dtype == torch.int64 and angles.dtype == F64
    freq = torch.bincount(shape, minlength=4).double() / 4000
    assert bool(((freq - 0.25).abs() < 0.03).all()), freq
    assert float(angles.min()) >= 0 and float(angles.max()) < 2 * math.pi
    assert stats.kstest(angles.numpy() / (2 * math.pi), "uniform").pvalue > 1e-3
    for i in range(0, 4000, 397):
        assert torch.equal(images[i, 0], render(SHAPES[int(shape[i])], float(angles[i]), 8))


# ---------------------------------------------------------------- corruption


def test_boundary_points_lie_on_the_boundary_of_the_turned_shape():
    shape = torch.tensor([0, 1, 2, 3] * 5)
    angles = torch.linspace(0, 6.2, 20, dtype=F64)
    points = boundary_points(shape, angles, 300, _gen(0))
    assert points.shape == (20, 300, 2) and points.dtype == F64
    images = torch.stack([render(SHAPES[int(k)], float(a), 64) for k, a in zip(shape, angles)])
    for i in range(20):
        d = signed_distance(SHAPES[int(shape[i])], points[i], float(angles[i]))
        assert float(d.abs().max()) < 1e-9
        # and the renderer agrees: the clean image is ~0 (half coverage) there; grid_sample's y points down
        grid = torch.stack([points[i, :, 0], -points[i, :, 1]], -1).float()[None, None]
        values = torch.nn.functional.grid_sample(images[i][None, None], grid, align_corners=False).flatten()
        assert float(values.abs().median()) < 0.15


def test_boundary_points_are_uniform_by_arc_length():
    # on the L polygon, the share of points on each edge matches the edge's share of the perimeter
    vertices = _GEOMETRY["L"].vertices
    edges = torch.roll(vertices, -1, 0) - vertices
    length = edges.norm(dim=1)
    points = boundary_points(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=F64), 20_000, _gen(1))[0]
    rel = points[:, None, :] - vertices[None]  # (P, E, 2)
    t = (rel * edges).sum(-1) / length**2
    dist = (rel - t[..., None] * edges).norm(dim=-1) + 1e9 * ((t < 0) | (t > 1))
    counts = torch.bincount(dist.argmin(1), minlength=len(vertices)).double()
    assert stats.chisquare(counts.numpy(), (length / length.sum() * 20_000).numpy()).pvalue > 1e-3


def test_corrupt_output_is_quantised_clipped_and_deterministic():
    images, shape, angles = clean(20, 32, _gen(0))
    x = corrupt(images, shape, angles, _gen(5))
    assert x.shape == images.shape and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    levels = (x.double() + 1) * 127.5
    assert float((levels - levels.round()).abs().max()) < 1e-4
    assert len(levels.round().unique()) > 100
    assert torch.equal(x, corrupt(images, shape, angles, _gen(5)))
    assert not torch.equal(x, corrupt(images, shape, angles, _gen(6)))
    assert torch.equal(images, clean(20, 32, _gen(0))[0])  # the input is left alone
    raw = corrupt(images, shape, angles, _gen(5), quantize=False)
    assert len(((raw.double() + 1) * 127.5).unique()) > 1000


def test_corrupt_without_bumps_or_noise_is_the_identity():
    images, shape, angles = clean(10, 32, _gen(0))
    same = corrupt(images, shape, angles, _gen(1), n_bumps=0, noise_std=0.0, quantize=False)
    assert torch.equal(same, images)


@pytest.mark.parametrize("size", [16, 48])
def test_blots_are_gaussians_centred_on_the_boundary_points(size):
    # on all-white images the blots show alone: 1 - depth * sum_k exp(-|p - c_k|^2 / (2 sigma^2)), clipped,
    # sigma = bump_width * size pixels = 2 * bump_width in normalised units, c_k the points boundary_points draws
    shape, angles = torch.tensor([0, 2, 3]), torch.tensor([0.4, 2.0, 5.0], dtype=F64)
    out = corrupt(
        torch.ones(3, 1, size, size),
        shape,
        angles,
        _gen(9),
        n_bumps=4,
        bump_width=0.05,
        bump_depth=0.7,
        noise_std=0.0,
        quantize=False,
    )
    centres = boundary_points(shape, angles, 4, _gen(9))
    c = (torch.arange(size, dtype=F64) + 0.5) * (2 / size) - 1
    x, y = c[None, :, None], -c[:, None, None]  # column j -> x, row i -> y (pointing up)
    expected = torch.stack(
        [
            (1 - 0.7 * torch.exp(-((x - p[:, 0]) ** 2 + (y - p[:, 1]) ** 2) / (2 * 0.1**2)).sum(-1)).clamp(-1, 1)
            for p in centres
        ]
    )
    torch.testing.assert_close(out[:, 0], expected.float(), rtol=0, atol=1e-5)


def test_blots_only_darken_the_shape_near_its_boundary():
    images, shape, angles = clean(40, 32, _gen(0))
    blotted = corrupt(images, shape, angles, _gen(1), noise_std=0.0, quantize=False)
    assert bool((blotted <= images + 1e-6).all())
    inside = images > 0
    erased = ((blotted < 0) & inside).sum() / inside.sum()
    assert 0.4 < float(erased) < 0.85  # "blot out large parts of the shape": measured 0.63 at 32 px
    # pixels 6 bump widths (6 * 0.03 * 2 normalised units) from the boundary are untouched
    c = (torch.arange(32, dtype=F64) + 0.5) / 16 - 1
    pix = torch.stack(torch.meshgrid(-c, c, indexing="ij")[::-1], -1).reshape(-1, 2)
    for i in range(0, 40, 7):
        far = signed_distance(SHAPES[int(shape[i])], pix, float(angles[i])).abs().reshape(32, 32) > 6 * 0.06
        assert torch.equal(blotted[i, 0][far], images[i, 0][far])


@pytest.mark.parametrize("size", [32, 64])
def test_corruption_moves_images_far_from_the_clean_manifold(size):
    # Measured medians (n = 1000, seed 0, defaults): clean 0.9998 (32 px), 0.9997 (64 px); noisy 0.260, 0.256.
    data = noisy_shapes(120, size=size, seed=0)
    assert summarize(manifold_scores(data.clean))["median_correlation"] > 0.99
    noisy = summarize(manifold_scores(data.noisy))["median_correlation"]
    assert noisy < 0.5


def test_noisy_shapes_is_a_function_of_its_arguments():
    a = noisy_shapes(30, size=16, seed=7, noise_std=0.5)
    b = noisy_shapes(30, size=16, seed=7, noise_std=0.5)
    assert torch.equal(a.noisy, b.noisy) and torch.equal(a.clean, b.clean) and torch.equal(a.angles, b.angles)
    assert a.params["noise_std"] == 0.5 and a.params["n_bumps"] == 50
    assert not torch.equal(a.noisy, noisy_shapes(30, size=16, seed=8, noise_std=0.5).noisy)
    images, shape, angles = clean(30, 16, _gen(7))
    assert torch.equal(a.clean, images) and torch.equal(a.shape_index, shape)
    g = _gen(7)
    clean(30, 16, g)
    assert torch.equal(a.noisy, corrupt(images, shape, angles, g, noise_std=0.5))


# ---------------------------------------------------------------- manifold scores


@pytest.mark.parametrize("name", SHAPES)
def test_rendering_on_the_angle_grid_scores_one(name):
    j = torch.tensor([0, 37, 181, 359])
    angles = _grid_angles(360)[j]
    scores = manifold_scores(render(name, angles, 32)[:, None])
    assert bool((scores["correlation"] > 1 - 1e-5).all())
    assert bool((scores["shape"] == SHAPES.index(name)).all())
    torch.testing.assert_close(scores["angle"], angles)
    assert float(scores["rmse"].max()) < 1e-6


@pytest.mark.parametrize("name", SHAPES)
def test_off_grid_angle_scores_high_with_the_right_shape(name):
    # Measured minimum over 360 half-step angles: 0.9991 at 32 px, 0.9984 at 64 px.
    angles = (torch.arange(0, 360, 23, dtype=F64) + 0.5) * (2 * math.pi / 360)
    scores = manifold_scores(render(name, angles, 32))
    assert bool((scores["correlation"] > 0.97).all())
    assert bool((scores["shape"] == SHAPES.index(name)).all())
    gap = (scores["angle"] - angles).remainder(2 * math.pi)
    assert float(torch.minimum(gap, 2 * math.pi - gap).max()) < 2 * math.pi / 360


def test_correlation_ignores_offset_and_positive_scale_but_rmse_does_not():
    x = render("arrow", _grid_angles(360)[[10, 200]], 32)
    faint = manifold_scores(0.1 * x - 0.5)
    exact = manifold_scores(x)
    assert bool((faint["correlation"] > 1 - 1e-5).all())
    assert torch.equal(faint["shape"], exact["shape"]) and torch.equal(faint["angle"], exact["angle"])
    assert float(exact["rmse"].max()) < 1e-6 and float(faint["rmse"].min()) > 0.3
    assert float(manifold_scores(-x)["correlation"].max()) < 0.9  # a negative is not the shape


def test_noise_and_constant_images_score_low():
    noise = torch.randn(200, 1, 32, 32, generator=_gen(0)).clamp(-1, 1)
    corr = manifold_scores(noise)["correlation"]
    assert float(corr.max()) < 0.3
    assert float(manifold_scores(torch.full((2, 1, 32, 32), 0.3))["correlation"].abs().max()) == 0.0


def test_manifold_scores_layouts_and_chunks_agree():
    data = noisy_shapes(23, size=16, seed=2)
    full = manifold_scores(data.noisy)
    for other in (manifold_scores(data.noisy[:, 0], chunk=5), manifold_scores(data.noisy.flatten(1), size=16)):
        for key in full:
            torch.testing.assert_close(other[key], full[key], rtol=0, atol=1e-6)
    assert set(full) == {"correlation", "rmse", "shape", "angle"}
    assert full["shape"].dtype == torch.int64 and full["angle"].dtype == F64
    with pytest.raises(ValueError, match="size"):
        manifold_scores(data.noisy, size=32)


def test_summarize_and_shape_proportions():
    data = noisy_shapes(200, size=16, seed=0)
    scores = manifold_scores(data.clean)
    summary = summarize(scores)
    fractions = torch.bincount(scores["shape"], minlength=4).double() / 200
    truth = torch.bincount(data.shape_index, minlength=4).double() / 200
    assert [round(float(f), 6) for f in fractions] == [round(float(t), 6) for t in truth]
    assert set(summary) == {"n", "median_correlation", "mean_correlation", "median_rmse"}
    assert summary["n"] == 200 and summary["median_rmse"] < 0.2
    assert summary["mean_correlation"] <= 1 and summary["median_correlation"] > 0.99


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_clear_value_errors():
    with pytest.raises(ValueError, match="unknown shape 'square'.*L, T, arrow, crescent"):
        render("square", 0.0)
    with pytest.raises(ValueError, match="size must be an integer >= 8"):
        render("L", 0.0, size=7)
    with pytest.raises(ValueError, match="size must be an integer >= 8"):
        clean(3, size=4)
    images, shape, angles = clean(3, 16, _gen(0))
    with pytest.raises(ValueError, match="n_bumps must be >= 0"):
        corrupt(images, shape, angles, _gen(0), n_bumps=-1)
    with pytest.raises(ValueError, match="noise_std must be finite and >= 0"):
        corrupt(images, shape, angles, _gen(0), noise_std=-0.1)
    with pytest.raises(ValueError, match="bump_width must be > 0"):
        corrupt(images, shape, angles, _gen(0), bump_width=0.0)
    with pytest.raises(ValueError, match="expected 3 labels"):
        corrupt(images, shape[:2], angles[:2], _gen(0))
    with pytest.raises(ValueError, match=r"shape_index values must lie in \[0, 3\]"):
        corrupt(images, shape + 4, angles, _gen(0))
    with pytest.raises(ValueError, match="unknown corruption parameter"):
        noisy_shapes(3, size=16, noise=0.1)
    with pytest.raises(ValueError, match="n_angles must be an integer >= 1"):
        reference_bank(16, 0)
    with pytest.raises(ValueError, match="expected"):
        manifold_scores(torch.zeros(2, 3, 16, 16))
