"""Dataset formats: IDX (MNIST), CIFAR-10 batches, MRC stacks, memory-mapped arrays, their dispatch
and their errors, all on small files written here."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import sys
from typing import ClassVar

import numpy as np
import pytest
import torch

from scorelab.data import MappedImages, load_dataset
from scorelab.data.formats import cifar10, load_cifar10, load_idx, load_idx_labels, load_mrc, read_idx
from scorelab.data.images import load_array
from scorelab.errors import DataError
from scorelab.train import TrainConfig, TrainingError, train

mrcfile = pytest.importorskip("mrcfile")


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _from_uint8(a: np.ndarray) -> torch.Tensor:
    """The documented mapping [0, 255] -> [-1, 1], computed in float64, as float32."""
    return (torch.from_numpy(a).double() / 255 * 2 - 1).float()


# ---------------------------------------------------------------- IDX

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
             np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def _idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file by the MNIST page's layout: 0, 0, type code, ndim, big-endian sizes, big-endian values."""
    header = bytes([0, 0, IDX_CODES[a.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def _write_idx(path, a: np.ndarray, gz: bool = False):
    data = _idx_bytes(a)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _mnist_folder(folder, n_train=5, n_test=3, gz=True):
    """A folder with the four standard MNIST file names holding small random sets."""
    folder.mkdir()
    rng = _rng(1)
    sets = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        sets[prefix] = images, labels
    return sets


def test_idx_uint8_images_map_0_255_onto_minus1_1_with_one_channel(tmp_path):
    a = _rng().integers(1, 255, (3, 10, 12), dtype=np.uint8)
    a[0, 0, 0], a[1, 2, 3] = 0, 255
    x = load_idx(_write_idx(tmp_path / "train-images-idx3-ubyte", a))
    assert x.shape == (3, 1, 10, 12) and x.dtype == torch.float32
    assert x[0, 0, 0, 0] == -1.0 and x[1, 0, 2, 3] == 1.0
    assert torch.allclose(x[:, 0], _from_uint8(a), rtol=0, atol=1e-6)


def test_gzipped_idx_is_detected_by_its_magic_bytes_and_equals_the_plain_file(tmp_path):
    a = _rng().integers(0, 256, (4, 8, 8), dtype=np.uint8)
    plain = load_idx(_write_idx(tmp_path / "plain-idx3-ubyte", a))
    assert torch.equal(load_idx(_write_idx(tmp_path / "x-idx3-ubyte.gz", a, gz=True)), plain)
    assert torch.equal(load_idx(_write_idx(tmp_path / "no-suffix-idx3-ubyte", a, gz=True)), plain)


def test_idx_big_endian_float32_and_int16_values_round_trip_exactly(tmp_path):
    f = _rng().uniform(-1, 1, (2, 9, 9)).astype(np.float32)
    assert torch.equal(load_idx(_write_idx(tmp_path / "f-idx3-ubyte", f))[:, 0], torch.from_numpy(f))
    i = np.array([[300, -2], [-32768, 32767]], np.int16)
    read = read_idx(_write_idx(tmp_path / "i.idx", i))
    assert read.dtype == np.int16 and read.dtype.isnative and np.array_equal(read, i)
    d = np.array([1.5, -1e300], np.float64)
    assert np.array_equal(read_idx(_write_idx(tmp_path / "d.idx", d)), d)


def test_idx_labels_are_int64(tmp_path):
    labels = np.array([7, 0, 9, 3], np.uint8)
    y = load_idx_labels(_write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, gz=True))
    assert y.dtype == torch.int64 and y.tolist() == [7, 0, 9, 3]


def test_mnist_folder_gives_the_train_and_test_files_by_split(tmp_path):
    sets = _mnist_folder(tmp_path / "mnist")
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = sets[prefix]
        assert torch.allclose(load_idx(tmp_path / "mnist", split)[:, 0], _from_uint8(images), rtol=0, atol=1e-6)
        assert load_idx_labels(tmp_path / "mnist", split).tolist() == labels.tolist()
    assert torch.equal(load_idx(tmp_path / "mnist"), load_idx(tmp_path / "mnist", "train"))


def test_truncated_idx_names_expected_and_actual_bytes(tmp_path):
    data = _idx_bytes(np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "a-idx3-ubyte").write_bytes(data[:-5])
    with pytest.raises(DataError, match=r"truncated.*needs 144 bytes, the file has 139"):
        load_idx(tmp_path / "a-idx3-ubyte")
    (tmp_path / "b-idx3-ubyte.gz").write_bytes(gzip.compress(data + b"xx"))
    with pytest.raises(DataError, match=r"longer than its header says.*146 after decompression"):
        load_idx(tmp_path / "b-idx3-ubyte.gz")
    (tmp_path / "c-idx3-ubyte").write_bytes(data[:10])
    with pytest.raises(DataError, match="truncated header: 3 dimensions need 16 header bytes"):
        load_idx(tmp_path / "c-idx3-ubyte")


@pytest.mark.parametrize("start", [b"\x00\x01\x08\x03", b"\x00\x00\x07\x03", b"\x89PNG", b"\x00"])
def test_idx_with_a_bad_magic_number_is_refused(tmp_path, start):
    (tmp_path / "a-idx3-ubyte").write_bytes(start + bytes(12 + 64))
    with pytest.raises(DataError, match="bad magic number|too short"):
        load_idx(tmp_path / "a-idx3-ubyte")


def test_idx_with_the_wrong_number_of_dimensions_is_refused(tmp_path):
    labels = _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"3 dimensions \(N, H, W\), this one has 1"):
        load_idx(labels)
    images = _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="one dimension of integers, this one has 3"):
        load_idx_labels(images)


def test_broken_gzip_missing_files_and_misplaced_splits_are_data_errors(tmp_path):
    (tmp_path / "fake-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not gzip-compressed"):
        load_idx(tmp_path / "fake-idx3-ubyte.gz")
    (tmp_path / "cut-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(100))[:15])
    with pytest.raises(DataError, match="cannot decompress"):
        load_idx(tmp_path / "cut-idx3-ubyte.gz")
    with pytest.raises(DataError, match="no such file"):
        load_idx(tmp_path / "nothing-idx3-ubyte")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no t10k-images-idx3-ubyte or t10k-images-idx3-ubyte.gz"):
        load_idx(tmp_path / "empty", "test")
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load_idx(tmp_path / "empty", "valid")
    with pytest.raises(DataError, match="only be chosen for a folder"):
        load_idx(_write_idx(tmp_path / "x-idx3-ubyte", np.zeros((1, 8, 8), np.uint8)), "test")


# ---------------------------------------------------------------- CIFAR-10


class Py2Pickler(pickle._Pickler):
    """Writes every str and bytes as a Python 2 byte string, as the cPickle that wrote CIFAR-10 did."""

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch: ClassVar[dict] = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_str}


def _py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")  # NumPy 1's name


def _cifar_folder(folder, sizes=(2, 3, 1, 2, 2), n_test=3):
    """A cifar-10-batches-py folder with tiny batches of random images; returns the rows and labels written."""
    folder.mkdir()
    rng = _rng(2)
    written = {}
    for name, n in [(f"data_batch_{i + 1}", n) for i, n in enumerate(sizes)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": [f"img{i}.png" for i in range(n)]}
        (folder / name).write_bytes(_py2_pickle(batch))
        written[name] = data, labels
    return written


def test_cifar10_reads_r_g_b_planes_in_row_major_order(tmp_path):
    written = _cifar_folder(tmp_path / "cifar-10-batches-py")
    data, _ = written["data_batch_2"]
    data[1] = 128
    data[1, 0 * 1024 + 5 * 32 + 7] = 255  # red, row 5, column 7
    data[1, 1 * 1024 + 0 * 32 + 31] = 0   # green, row 0, column 31
    data[1, 2 * 1024 + 31 * 32 + 0] = 255  # blue, row 31, column 0
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(_py2_pickle({"data": data, "labels": [1, 2, 3]}))
    x, y = cifar10(tmp_path / "cifar-10-batches-py")
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
    image = x[2 + 1]  # the second row of the second batch
    assert image[0, 5, 7] == 1.0 and image[1, 0, 31] == -1.0 and image[2, 31, 0] == 1.0
    assert int((image != image[0, 0, 0]).sum()) == 3
    assert y.dtype == torch.int64 and y[2:5].tolist() == [1, 2, 3]


def test_cifar10_rows_and_labels_follow_the_batch_order(tmp_path):
    written = _cifar_folder(tmp_path / "c")
    train = [f"data_batch_{i}" for i in range(1, 6)]
    images = np.concatenate([written[name][0] for name in train]).reshape(-1, 3, 32, 32)
    x, y = cifar10(tmp_path / "c", "train")
    assert torch.allclose(x, _from_uint8(images), rtol=0, atol=1e-6)
    assert y.tolist() == [label for name in train for label in written[name][1]]
    test_x, test_y = cifar10(tmp_path / "c", "test")
    assert len(test_x) == 3 and test_y.tolist() == written["test_batch"][1]
    assert torch.equal(load_cifar10(tmp_path / "c", "test"), test_x)


def test_cifar10_batches_pickled_by_python3_with_str_keys_load(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    data = _rng().integers(0, 256, (2, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": [4, 5]}))
    x, y = cifar10(folder, "test")
    assert torch.allclose(x, _from_uint8(data.reshape(2, 3, 32, 32)), rtol=0, atol=1e-6) and y.tolist() == [4, 5]


def test_cifar10_missing_batches_are_named(tmp_path):
    _cifar_folder(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    (tmp_path / "c" / "data_batch_5").unlink()
    with pytest.raises(DataError, match="missing CIFAR-10 batch files for split 'train': data_batch_3, data_batch_5"):
        cifar10(tmp_path / "c")
    with pytest.raises(DataError, match="unknown CIFAR-10 split 'all'"):
        cifar10(tmp_path / "c", "all")


class _OpensAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_cifar10_pickles_naming_other_globals_are_refused_without_running(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _OpensAFile(marker), b"labels": []}))
    with pytest.raises(DataError, match=r"refusing the global (io|builtins)\.open"):
        cifar10(folder, "test")
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"garbage, not a pickle", "cannot read as a CIFAR-10 batch pickle"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-20], "cannot read as a CIFAR-10 batch pickle"),
    (pickle.dumps([1, 2]), "holds a list, not a dict"),
    (pickle.dumps({b"pixels": 1}), "no 'data' and 'labels' entries"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"uint8 array \(n, 3072\), got uint8"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "got float32"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "must be 2 integers"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), r"labels outside 0\.\.9"),
])
def test_malformed_cifar10_batches_say_what_is_wrong(tmp_path, content, message):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(DataError, match=message):
        cifar10(folder, "test")


# ---------------------------------------------------------------- MRC


def _write_mrc(path, data: np.ndarray):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
    return path


def test_mrc_stack_dataset_normalisation_maps_min_max_onto_minus1_1(tmp_path):
    stack = _rng().normal(5.0, 2.0, (4, 12, 10)).astype(np.float32)
    x = load_mrc(_write_mrc(tmp_path / "p.mrcs", stack))
    lo, hi = float(stack.min()), float(stack.max())
    assert x.shape == (4, 1, 12, 10) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    expected = (stack.astype(np.float64) - lo) / (hi - lo) * 2 - 1
    assert np.allclose(x[:, 0].numpy(), expected, rtol=0, atol=1e-6)
    assert x[2, 0, 7, 3] == np.float32(expected[2, 7, 3])


def test_mrc_per_image_normalisation_spans_minus1_1_in_every_image(tmp_path):
    stack = _rng().normal(0, 1, (3, 8, 8)).astype(np.float32) * np.array([1, 10, 100], np.float32)[:, None, None]
    x = load_mrc(_write_mrc(tmp_path / "p.mrcs", stack), "per-image")
    assert x.amin(dim=(1, 2, 3)).tolist() == [-1.0] * 3 and x.amax(dim=(1, 2, 3)).tolist() == [1.0] * 3


def test_mrc_standardize_maps_mean_plus_minus_k_std_and_clips_an_outlier(tmp_path):
    stack = _rng().normal(3.0, 0.5, (2, 32, 32)).astype(np.float32)
    stack[0, 0, 0] = 20.0  # a hot pixel that squeezes the min-max mapping
    path = _write_mrc(tmp_path / "p.mrc", stack)
    x = load_mrc(path, "standardize", clip_std=2.0)
    mean, std = stack.astype(np.float64).mean(), stack.astype(np.float64).std()
    expected = np.clip((stack - mean) / (2.0 * std), -1, 1)
    assert np.allclose(x[:, 0].numpy(), expected, rtol=0, atol=1e-6)
    assert x[0, 0, 0, 0] == 1.0
    assert float(x[1].std()) > 5 * float(load_mrc(path, "dataset")[1].std())


def test_mrc_none_keeps_values_and_refuses_values_outside_minus1_1(tmp_path):
    stack = _rng().uniform(-1, 1, (2, 8, 8)).astype(np.float32)
    assert torch.equal(load_mrc(_write_mrc(tmp_path / "a.mrcs", stack), "none")[:, 0], torch.from_numpy(stack))
    with pytest.raises(DataError, match=r"values in \[.*\] lie outside \[-1, 1\]"):
        load_mrc(_write_mrc(tmp_path / "b.mrcs", stack * 3), "none")


def test_single_int16_mrc_image_is_one_particle(tmp_path):
    image = np.arange(64, dtype=np.int16).reshape(8, 8) - 10
    x = load_mrc(_write_mrc(tmp_path / "one.mrc", image))
    assert x.shape == (1, 1, 8, 8) and x[0, 0, 0, 0] == -1.0 and x[0, 0, 7, 7] == 1.0


def test_invalid_mrc_files_are_data_errors(tmp_path):
    (tmp_path / "text.mrc").write_text("this is not an MRC file " * 100)
    with pytest.raises(DataError, match="cannot read as an MRC file"):
        load_mrc(tmp_path / "text.mrc")
    raw = _write_mrc(tmp_path / "full.mrcs", np.zeros((2, 8, 8), np.float32)).read_bytes()
    (tmp_path / "cut.mrcs").write_bytes(raw[:-40])
    with pytest.raises(DataError, match="cannot read as an MRC file"):
        load_mrc(tmp_path / "cut.mrcs")
    with pytest.raises(DataError, match="no such file"):
        load_mrc(tmp_path / "missing.mrcs")
    with pytest.raises(DataError, match="the stack is constant"):
        load_mrc(tmp_path / "full.mrcs")
    with pytest.raises(DataError, match="unknown normalize 'zscore'"):
        load_mrc(tmp_path / "full.mrcs", "zscore")


def test_mrc_per_image_names_constant_images(tmp_path):
    stack = _rng().normal(0, 1, (3, 8, 8)).astype(np.float32)
    stack[1] = 2.0
    with pytest.raises(DataError, match=r"1 images \(first: 1\) are constant"):
        load_mrc(_write_mrc(tmp_path / "p.mrcs", stack), "per-image")


def test_mrc_without_mrcfile_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mrcfile", None)  # makes `import mrcfile` fail
    with pytest.raises(DataError, match=r"pip install scorelab\[cryoem\]"):
        load_mrc(tmp_path / "p.mrcs")


# ---------------------------------------------------------------- memory-mapped arrays


@pytest.mark.parametrize("shape", [(6, 3, 8, 10), (6, 8, 10), (6, 8, 10, 3)])
def test_mapped_batches_equal_the_eager_loaders_rows(tmp_path, shape):
    np.save(tmp_path / "a.npy", _rng().integers(0, 256, shape, dtype=np.uint8))
    eager, mapped = load_array(tmp_path / "a.npy"), MappedImages(tmp_path / "a.npy")
    assert len(mapped) == 6 and mapped.shape == eager.shape and mapped.device == torch.device("cpu")
    index = torch.tensor([4, 0, 4, 2])
    assert torch.equal(mapped[index], eager[index])
    assert torch.equal(mapped[3], eager[3]) and torch.equal(mapped[1:4], eager[1:4])
    assert mapped[index].dtype == torch.float32


def test_mapped_std_is_the_data_std_and_a_fixed_subsample_beyond_max_rows(tmp_path):
    np.save(tmp_path / "a.npy", _rng().integers(0, 256, (50, 1, 8, 8), dtype=np.uint8))
    mapped = MappedImages(tmp_path / "a.npy")
    assert mapped.std() == pytest.approx(float(load_array(tmp_path / "a.npy").double().std()), rel=1e-12)
    sub = mapped.std(max_rows=10)
    assert sub == mapped.std(max_rows=10) and sub != mapped.std()
    assert sub == pytest.approx(mapped.std(), rel=0.1)


def test_mapped_to_shares_the_map_and_refuses_what_it_cannot_map(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 8, 8), np.uint8))
    mapped = MappedImages(tmp_path / "a.npy")
    assert mapped.to("cpu") is mapped and mapped.to(torch.device("cpu")) is mapped
    moved = mapped.to("meta")  # a device every machine has: batches are delivered there, the map is shared
    assert moved[torch.tensor([1])].device.type == "meta" and moved.shape == mapped.shape and mapped.device.type == "cpu"
    np.save(tmp_path / "f.npy", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DataError, match="must be uint8"):
        MappedImages(tmp_path / "f.npy")
    np.savez(tmp_path / "z.npz", images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="needs a .npy file"):
        MappedImages(tmp_path / "z.npz")
    np.save(tmp_path / "v.npy", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=r"got 1 dims \(5,\)"):
        MappedImages(tmp_path / "v.npy")
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="cannot tell the layout"):
        MappedImages(tmp_path / "c.npy")
    np.save(tmp_path / "big.npy", np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(DataError, match="image size 4x4"):
        MappedImages(tmp_path / "big.npy")


def _tiny_unet(data, out, **kw):
    config = TrainConfig(data=data, model="unet", steps=3, batch_size=4, warmup=1, log_every=1, device="cpu",
                         model_options={"model_channels": 8, "channel_mult": [1], "num_res_blocks": 1}, **kw)
    return train(config, out, progress=False)


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_from_a_mapped_file_sees_the_same_batches_as_from_memory(tmp_path):
    np.save(tmp_path / "a.npy", _rng().integers(0, 256, (20, 1, 8, 8), dtype=np.uint8))
    _tiny_unet(str(tmp_path / "a.npy"), tmp_path / "eager", sigma_data=0.5)
    result = _tiny_unet(f"mmap:{tmp_path / 'a.npy'}", tmp_path / "mapped", sigma_data=0.5)
    assert result.step == 3 and _losses(tmp_path / "mapped") == _losses(tmp_path / "eager")


def test_training_from_a_mapped_file_resolves_sigma_data_from_the_map_and_resumes(tmp_path):
    np.save(tmp_path / "a.npy", _rng().integers(0, 256, (20, 8, 8), dtype=np.uint8))
    spec = f"mmap:{tmp_path / 'a.npy'}"
    _tiny_unet(spec, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["sigma_data"] == MappedImages(tmp_path / "a.npy").std()
    config = TrainConfig.from_dict({**config, "steps": 5})
    assert train(config, tmp_path / "run", resume=True, progress=False).step == 5
    with pytest.raises(TrainingError, match="memory-mapped images cannot fit the Gaussian"):
        train(TrainConfig(data=spec, model="unet-gaussian", steps=1, device="cpu"), tmp_path / "r2", progress=False)


# ---------------------------------------------------------------- dispatch


def test_load_dataset_dispatches_on_the_new_formats(tmp_path):
    sets = _mnist_folder(tmp_path / "mnist", gz=False)
    mnist_test = load_idx(tmp_path / "mnist", "test")
    assert torch.equal(load_dataset(f"{tmp_path / 'mnist'}:test"), mnist_test)
    assert len(load_dataset(str(tmp_path / "mnist"))) == len(sets["train"][0])
    assert torch.equal(load_dataset(str(tmp_path / "mnist" / "t10k-images-idx3-ubyte")), mnist_test)
    _cifar_folder(tmp_path / "cifar-10-batches-py")
    assert len(load_dataset(str(tmp_path / "cifar-10-batches-py"))) == 10
    assert len(load_dataset(f"{tmp_path / 'cifar-10-batches-py'}:test")) == 3
    stack = _rng().normal(0, 1, (3, 8, 8)).astype(np.float32)
    _write_mrc(tmp_path / "p.mrcs", stack)
    assert torch.equal(load_dataset(str(tmp_path / "p.mrcs")), load_mrc(tmp_path / "p.mrcs"))
    assert torch.equal(load_dataset(f"{tmp_path / 'p.mrcs'}:per-image"), load_mrc(tmp_path / "p.mrcs", "per-image"))
    np.save(tmp_path / "a.npy", np.zeros((2, 8, 8), np.uint8))
    assert isinstance(load_dataset(f"mmap:{tmp_path / 'a.npy'}"), MappedImages)
    assert torch.equal(load_dataset(f"mmap:{tmp_path / 'a.npy'}")[:], load_array(tmp_path / "a.npy"))


def test_dispatch_refuses_options_that_do_not_apply(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="takes no ':test' suffix"):
        load_dataset(f"{tmp_path / 'a.npy'}:test")
    _mnist_folder(tmp_path / "mnist")
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load_dataset(f"{tmp_path / 'mnist'}:valid")
    with pytest.raises(DataError, match=r"\.mrc or \.mrcs.*idx3-ubyte.*CIFAR-10"):
        load_dataset(str(tmp_path / "nothing.h5"))
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(str(tmp_path / "nothing:test"))
