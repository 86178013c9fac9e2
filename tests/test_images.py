"""Image sources: digits split, arrays, folders, dispatch and their validation errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scorelab.data import load_dataset
from scorelab.data.images import digits, digits_split_indices, load_array, load_digits, load_folder
from scorelab.data.validate import validate_images
from scorelab.errors import DataError


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _from_uint8(a: np.ndarray) -> torch.Tensor:
    """The documented mapping [0, 255] -> [-1, 1], computed in float64, as float32."""
    return (torch.from_numpy(a).double() / 255 * 2 - 1).float()


def _close(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.shape == y.shape and torch.allclose(x, y, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- digits


def test_digits_splits_are_disjoint_and_sized_1437_360():
    index = digits_split_indices()
    train, test = set(index["train"].tolist()), set(index["test"].tolist())
    assert len(train) == 1437 and len(test) == 360
    assert not train & test
    assert train | test == set(range(1797))


def test_digits_images_are_float32_in_unit_range_with_matching_labels():
    for split, n in (("train", 1437), ("test", 360), ("all", 1797)):
        x, y = digits(split)
        assert x.shape == (n, 1, 8, 8) and x.dtype == torch.float32
        assert x.min() == -1.0 and x.max() == 1.0
        assert y.shape == (n,) and set(y.tolist()) == set(range(10))


def test_digits_pixel_mapping_is_x_over_16_times_2_minus_1():
    from sklearn.datasets import load_digits as sk_load_digits

    raw = torch.from_numpy(sk_load_digits().images).float()
    index = digits_split_indices()["test"]
    assert torch.equal(load_digits("test")[:, 0], raw[index] / 16 * 2 - 1)


def test_digits_held_out_indices_are_pinned():
    # A changed split would put held-out digits into training; this fingerprint catches it.
    test = digits_split_indices()["test"]
    assert test[:8].tolist() == [2, 16, 26, 29, 32, 49, 56, 60]
    assert int(test.sum()) == 321303


def test_digits_callers_get_their_own_copy():
    load_digits("train").fill_(0.0)
    assert load_digits("train").min() == -1.0


def test_unknown_digits_split_names_the_choices():
    with pytest.raises(DataError, match="train, test, all"):
        digits("validation")


# ---------------------------------------------------------------- arrays


def test_npy_uint8_maps_0_255_onto_minus1_1(tmp_path):
    a = _rng().integers(0, 256, (5, 3, 16, 12), dtype=np.uint8)
    a[0, 0, 0, :2] = (0, 255)
    np.save(tmp_path / "a.npy", a)
    x = load_array(tmp_path / "a.npy")
    assert x.shape == (5, 3, 16, 12) and x.dtype == torch.float32
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 0, 1] == 1.0
    assert _close(x, _from_uint8(a))


def test_npz_float_round_trip_is_exact(tmp_path):
    a = _rng().uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "a.npz", images=a)
    assert torch.equal(load_array(tmp_path / "a.npz"), torch.from_numpy(a))


def test_npz_with_several_arrays_needs_a_key_and_lists_the_keys(tmp_path):
    a = np.zeros((2, 8, 8), np.float32)
    np.savez(tmp_path / "a.npz", first=a, second=a + 0.5)
    with pytest.raises(DataError, match="first, second"):
        load_array(tmp_path / "a.npz")
    assert load_array(tmp_path / "a.npz", key="second").unique().tolist() == [0.5]
    with pytest.raises(DataError, match="no array named 'third'"):
        load_array(tmp_path / "a.npz", key="third")


def test_nhw_array_gets_one_channel(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 10, 9), np.float32))
    assert load_array(tmp_path / "a.npy").shape == (3, 1, 10, 9)


def test_nhwc_array_is_transposed_to_nchw(tmp_path):
    a = _rng().integers(0, 256, (2, 16, 12, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    x = load_array(tmp_path / "a.npy")
    assert x.shape == (2, 3, 16, 12)
    assert _close(x.permute(0, 2, 3, 1), _from_uint8(a))


def test_ambiguous_layout_asks_for_the_layout(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 10, 10, 10), np.float32))
    with pytest.raises(DataError, match="layout="):
        load_array(tmp_path / "a.npy")
    np.save(tmp_path / "b.npy", np.zeros((2, 10, 12, 3), np.float32))
    assert load_array(tmp_path / "b.npy", layout="NHWC").shape == (2, 3, 10, 12)
    with pytest.raises(DataError, match="10 channels"):
        load_array(tmp_path / "b.npy", layout="NCHW")


def test_value_range_maps_linearly_onto_minus1_1(tmp_path):
    a = np.array([0.0, 0.25, 1.0], np.float64)[:, None, None] * np.ones((3, 8, 8))
    np.save(tmp_path / "a.npy", a)
    x = load_array(tmp_path / "a.npy", value_range=(0.0, 1.0))
    assert x[:, 0, 0, 0].tolist() == [-1.0, -0.5, 1.0]


def test_values_outside_the_range_are_refused_with_count_and_extremes(tmp_path):
    a = np.zeros((2, 8, 8), np.float32)
    a[0, 0, :3] = (1.5, -2.0, 1.25)
    np.save(tmp_path / "a.npy", a)
    with pytest.raises(DataError, match=r"3 values outside \[-1, 1\].*min -2.*max 1.5"):
        load_array(tmp_path / "a.npy")
    with pytest.raises(DataError, match=r"3 values outside \[0, 1\]"):
        load_array(tmp_path / "a.npy", value_range=(0.0, 1.0))


def test_non_finite_values_are_refused_with_their_count(tmp_path):
    a = np.zeros((2, 8, 8), np.float32)
    a[1, 2, :2] = (np.nan, np.inf)
    np.save(tmp_path / "a.npy", a)
    with pytest.raises(DataError, match="2 non-finite"):
        load_array(tmp_path / "a.npy")


def test_wrong_ndim_is_refused_naming_the_dims(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(DataError, match="got 2 dims"):
        load_array(tmp_path / "a.npy")


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_])
def test_unsupported_dtypes_are_refused_naming_the_dtype(tmp_path, dtype):
    np.save(tmp_path / "a.npy", np.zeros((2, 8, 8), dtype))
    with pytest.raises(DataError, match="unsupported dtype"):
        load_array(tmp_path / "a.npy")


@pytest.mark.parametrize("shape", [(2, 7, 8), (2, 8, 257)])
def test_images_outside_8_to_256_pixels_are_refused(tmp_path, shape):
    np.save(tmp_path / "a.npy", np.zeros(shape, np.float32))
    with pytest.raises(DataError, match="outside the supported 8x8 to 256x256"):
        load_array(tmp_path / "a.npy")


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_array(tmp_path / "missing.npy")


# ---------------------------------------------------------------- folders


def _write_png(path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def test_folder_of_grayscale_pngs_loads_sorted_with_one_channel(tmp_path):
    arrays = [np.full((12, 10), v, np.uint8) for v in (255, 0, 128)]
    for name, a in zip(("b.png", "a.png", "c.png"), arrays):
        _write_png(tmp_path / name, a)
    (tmp_path / "notes.txt").write_text("not an image")
    x = load_folder(tmp_path)
    assert x.shape == (3, 1, 12, 10)
    assert _close(x[:, 0, 0, 0], _from_uint8(np.array([0, 255, 128], np.uint8)))  # a, b, c


def test_folder_with_a_color_image_is_loaded_as_rgb(tmp_path):
    rgb = _rng().integers(0, 256, (9, 11, 3), dtype=np.uint8)
    _write_png(tmp_path / "a.png", np.zeros((9, 11), np.uint8))
    _write_png(tmp_path / "b.png", rgb)
    x = load_folder(tmp_path)
    assert x.shape == (2, 3, 9, 11)
    assert _close(x[1].permute(1, 2, 0), _from_uint8(rgb))
    assert load_folder(tmp_path, mode="L").shape == (2, 1, 9, 11)


def test_folder_with_mismatched_sizes_names_the_offending_file(tmp_path):
    _write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    _write_png(tmp_path / "b.png", np.zeros((8, 8), np.uint8))
    _write_png(tmp_path / "c.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(DataError, match=r"c\.png: size 8x9.*differs from 8x8"):
        load_folder(tmp_path)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="no PNG or JPEG"):
        load_folder(tmp_path)


# ---------------------------------------------------------------- dispatch and validation


def test_load_dataset_dispatches_on_the_spec(tmp_path):
    assert torch.equal(load_dataset("digits"), load_digits("train"))
    assert len(load_dataset("digits:test")) == 360
    np.save(tmp_path / "a.npy", np.zeros((2, 8, 8), np.float32))
    assert load_dataset(str(tmp_path / "a.npy")).shape == (2, 1, 8, 8)
    _write_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    assert load_dataset(str(tmp_path)).shape == (1, 1, 8, 8)


def test_load_dataset_with_an_unknown_spec_names_what_was_tried(tmp_path):
    with pytest.raises(DataError, match="not 'digits'.*\\.npy or \\.npz.*directory"):
        load_dataset(str(tmp_path / "images.h5"))
    assert issubclass(DataError, ValueError)


def test_validate_images_refuses_integer_out_of_range_and_wrong_shape():
    with pytest.raises(DataError, match="floating dtype"):
        validate_images(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match="outside"):
        validate_images(torch.full((1, 1, 8, 8), 1.01))
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        validate_images(torch.zeros(8, 8))
    x = torch.zeros(2, 3, 8, 8)
    assert validate_images(x) is x
