"""Dataset file formats: MNIST's IDX files, CIFAR-10's python batches, MRC particle stacks, and
uint8 ``.npy`` arrays read through a memory map for sets larger than memory.

Every loader returns float32 ``(N, C, H, W)`` images in ``[-1, 1]`` (the conventions of
:mod:`scorelab.data.validate`) and raises :class:`DataError` saying what is wrong with a malformed
file. Nothing is downloaded.
"""

from __future__ import annotations

import copy
import gzip
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scorelab.data.validate import CHANNELS, check_size, infer_layout, to_unit_range, validate_images
from scorelab.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
IDX_DTYPES: dict[int, np.dtype[Any]] = {  # IDX type codes (the MNIST page, "FILE FORMATS"); multi-byte values are big-endian
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_PREFIX = {"train": "train", "test": "t10k"}  # train-images-idx3-ubyte, t10k-labels-idx1-ubyte, ...
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10_SIDE, CIFAR10_CLASSES = 32, 10
MRC_NORMALIZE = ("dataset", "per-image", "standardize", "none")
STD_ROWS = 10_000  # rows MappedImages.std reads at most


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file, plain or gzip-compressed, in native byte order.

    Layout (the MNIST database page, "FILE FORMATS"): two zero bytes, a type code (0x08 uint8,
    0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, one
    big-endian int32 size per dimension, then the values, big-endian, in row-major order.
    """
    path = Path(path)
    raw, compressed = _read_maybe_gzip(path)
    dtype, shape, offset = _idx_header(raw, path)
    count = int(np.prod(shape, dtype=np.int64))
    expected = offset + count * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path}: {what}: a header of shape {shape} and type {dtype.name} needs {expected} bytes, "
                        f"the file has {len(raw)}{' after decompression' if compressed else ''}")
    array = np.frombuffer(raw, dtype, count=count, offset=offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def _read_maybe_gzip(path: Path) -> tuple[bytes, bool]:
    """The bytes of ``path``, decompressed when it starts with the gzip magic bytes ``1f 8b``, and
    whether it was compressed."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        if path.suffix == ".gz":
            raise DataError(f"{path}: named .gz but not gzip-compressed (no 1f 8b magic bytes)")
        return raw, False
    try:
        return gzip.decompress(raw), True
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot decompress gzip data ({e})") from e


def _idx_header(raw: bytes, path: Path) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """Value type, shape and data offset from an IDX header; see :func:`read_idx`."""
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{path}: bad magic number 0x{magic:08X}; an IDX file starts with two zero bytes, "
                        f"a type code ({codes}) and the number of dimensions")
    ndim = raw[3]
    if ndim == 0:
        raise DataError(f"{path}: the IDX header declares 0 dimensions")
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DataError(f"{path}: truncated header: {ndim} dimensions need {offset} header bytes, "
                        f"the file has {len(raw)}")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    return IDX_DTYPES[raw[2]], shape, offset


def _idx_file(path: Path, kind: str, split: str | None) -> Path:
    """``path`` itself, or in a folder the standard MNIST file of ``kind`` ("images" or "labels")
    for ``split`` (default "train"), plain or ``.gz``."""
    if not path.is_dir():
        if split is not None:
            raise DataError(f"{path}: a split ({split!r}) can only be chosen for a folder of MNIST files")
        return path
    split = split or "train"
    if split not in IDX_PREFIX:
        raise DataError(f"{path}: unknown split {split!r}; expected one of {', '.join(IDX_PREFIX)}")
    name = f"{IDX_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for candidate in (path / name, path / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{path}: no {name} or {name}.gz in the folder")


def load_idx(path: str | Path, split: str | None = None,
             value_range: tuple[float, float] | None = None) -> Tensor:
    """Images from an IDX file (``train-images-idx3-ubyte[.gz]``), or from the folder holding the
    MNIST files when ``split`` ("train", the default, or "test") names which, as float32
    ``(N, 1, H, W)`` in [-1, 1]. uint8 maps [0, 255] linearly onto [-1, 1]; floating values must
    lie in [-1, 1] unless ``value_range=(lo, hi)`` is given
    (:func:`~scorelab.data.validate.to_unit_range`)."""
    file = _idx_file(Path(path), "images", split)
    array = read_idx(file)
    if array.ndim != 3:
        raise DataError(f"{file}: an IDX images file has 3 dimensions (N, H, W), this one has "
                        f"{array.ndim}: {array.shape}")
    x = torch.from_numpy(array).unsqueeze(1)
    check_size(x, str(file))
    return validate_images(to_unit_range(x, value_range, str(file)), str(file))


def load_idx_labels(path: str | Path, split: str | None = None) -> Tensor:
    """Labels from an IDX file (``train-labels-idx1-ubyte[.gz]``) or a folder of MNIST files, as a
    1-D int64 tensor."""
    file = _idx_file(Path(path), "labels", split)
    array = read_idx(file)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"{file}: an IDX labels file holds one dimension of integers, this one has "
                        f"{array.ndim} of {array.dtype.name}: {array.shape}")
    return torch.from_numpy(array.astype(np.int64))


# ---------------------------------------------------------------- CIFAR-10


def cifar10(path: str | Path, split: str = "train") -> tuple[Tensor, Tensor]:
    """CIFAR-10 from its ``cifar-10-batches-py`` folder: images ``(N, 3, 32, 32)`` float32 in [-1, 1]
    (uint8 [0, 255] mapped linearly) and int64 labels in 0..9.

    ``split`` "train" reads ``data_batch_1`` .. ``data_batch_5``, "test" reads ``test_batch``. Each
    batch (Krizhevsky 2009; the CIFAR page, "Dataset layout") is a pickled dict whose ``data`` is a
    uint8 array ``(n, 3072)``, a row holding the 1024 red, then green, then blue values of a 32x32
    image in row-major order, and whose ``labels`` are ``n`` integers; ``n`` is 10000 in the real
    files but any count is read.

    Pickles can run code when loaded. The batches are read by an unpickler that refuses every global
    but NumPy's array reconstruction (and ``_codecs.encode``, which Python 3 uses to pickle bytes at
    protocol 2), so a crafted file fails with :class:`DataError` instead of running. Still read only
    files from a source you trust.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory (expected the cifar-10-batches-py folder)")
    if split not in CIFAR10_BATCHES:
        raise DataError(f"{folder}: unknown CIFAR-10 split {split!r}; expected one of {', '.join(CIFAR10_BATCHES)}")
    names = CIFAR10_BATCHES[split]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: missing CIFAR-10 batch files for split {split!r}: {', '.join(missing)}")
    batches = [_cifar10_batch(folder / name) for name in names]
    pixels = np.concatenate([data for data, _ in batches]).reshape(-1, 3, CIFAR10_SIDE, CIFAR10_SIDE)
    labels = torch.from_numpy(np.concatenate([labels for _, labels in batches]))
    images = to_unit_range(torch.from_numpy(pixels), None, str(folder))
    return validate_images(images, str(folder)), labels


def load_cifar10(path: str | Path, split: str = "train") -> Tensor:
    """CIFAR-10 images only; see :func:`cifar10`."""
    return cifar10(path, split)[0]


def _cifar10_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``data`` (n, 3072) uint8 and ``labels`` (n,) int64 arrays of one CIFAR-10 batch file."""
    batch = _unpickle(file)
    if not isinstance(batch, dict):
        raise DataError(f"{file}: not a CIFAR-10 batch: the pickle holds a {type(batch).__name__}, not a dict")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{file}: not a CIFAR-10 batch: no 'data' and 'labels' entries (keys: {sorted(map(str, batch))})")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3 * CIFAR10_SIDE ** 2,):
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{file}: 'data' must be a uint8 array (n, 3072), got {described}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DataError(f"{file}: 'labels' must be {len(data)} integers, one per image, got {labels.dtype} "
                        f"{labels.shape}")
    if len(labels) and not (0 <= labels.min() and labels.max() < CIFAR10_CLASSES):
        raise DataError(f"{file}: labels outside 0..{CIFAR10_CLASSES - 1} (min {labels.min()}, max {labels.max()})")
    return data, labels.astype(np.int64)


def _safe_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 batch may name: NumPy's array and scalar reconstruction, under
    the module names of NumPy 1 (``numpy.core``) and 2 (``numpy._core``)."""
    import codecs

    reconstruct, scalar = np.zeros(0).__reduce__()[0], np.int64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[module, "_reconstruct"], allowed[module, "scalar"] = reconstruct, scalar
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and NumPy arrays, and nothing else."""

    allowed = _safe_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"refusing the global {module}.{name}: a data batch holds only dicts, "
                                         "lists, bytes, numbers and NumPy arrays")
        return self.allowed[module, name]


def _unpickle(file: Path) -> Any:
    """The object in a pickle written by Python 2 or 3, through :class:`_ArrayUnpickler`."""
    try:
        with file.open("rb") as f:
            return _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a damaged or foreign pickle can fail in almost any way
        raise DataError(f"{file}: cannot read as a CIFAR-10 batch pickle ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------- MRC (cryo-EM particle stacks)


def load_mrc(path: str | Path, normalize: str = "dataset", *, clip_std: float = 3.0) -> Tensor:
    """Particle images from an MRC / MRCS file (MRC2014 format, Cheng et al. 2015) as float32
    ``(N, 1, H, W)`` in [-1, 1]: a stack ``(N, H, W)``, or one 2-D image (N = 1).

    Raw cryo-EM intensities have no fixed range, so ``normalize`` maps a window ``[lo, hi]`` of
    values linearly onto [-1, 1] (the range the networks and samplers assume):

    - ``"dataset"``: lo, hi = min, max over the whole stack (relative contrast between particles kept);
    - ``"per-image"``: lo, hi = min, max of each particle;
    - ``"standardize"``: lo, hi = mean -/+ ``clip_std`` standard deviations over the stack; values
      outside are clipped (the only option that clips), so a few hot pixels do not squeeze all
      other values towards 0 as they do under min-max;
    - ``"none"``: values are kept, and must already lie in [-1, 1].

    Needs the ``mrcfile`` package (``pip install scorelab[cryoem]``). The file is read through a
    memory map with ``permissive=False``, so an invalid header is an error, not a warning.
    """
    path = Path(path)
    if normalize not in MRC_NORMALIZE:
        raise DataError(f"{path}: unknown normalize {normalize!r}; expected one of {', '.join(MRC_NORMALIZE)}")
    if not clip_std > 0:
        raise DataError(f"{path}: clip_std must be > 0, got {clip_std}")
    mrcfile = _import_mrcfile()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        mrc = mrcfile.mmap(path, mode="r", permissive=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot read as an MRC file ({e})") from e
    with mrc:
        stack = _mrc_stack(mrc.data, str(path))
        images = _normalize_stack(stack, normalize, clip_std, str(path))
    x = torch.from_numpy(images).unsqueeze(1)
    check_size(x, str(path))
    return validate_images(x, str(path))


def _import_mrcfile() -> Any:
    try:
        import mrcfile
    except ImportError as e:
        raise DataError("reading MRC files needs the mrcfile package: pip install scorelab[cryoem] "
                        "(or pip install mrcfile)") from e
    return mrcfile


def _mrc_stack(data: np.ndarray | None, name: str) -> np.ndarray:
    """The MRC data as a real ``(N, H, W)`` array with finite values."""
    if data is None or data.size == 0:
        raise DataError(f"{name}: the MRC file holds no data")
    if data.dtype.kind == "c":
        raise DataError(f"{name}: complex MRC data ({data.dtype}) is not an image")
    if data.ndim not in (2, 3):
        raise DataError(f"{name}: expected a 2-D image or a 3-D stack (N, H, W), got {data.ndim} dims {data.shape}")
    stack = data if data.ndim == 3 else data[None]
    if stack.dtype.kind == "f" and not np.isfinite(stack).all():
        bad = int((~np.isfinite(stack)).sum())
        raise DataError(f"{name}: {bad} non-finite values (NaN or inf) out of {stack.size}")
    return stack


def _normalize_stack(stack: np.ndarray, normalize: str, clip_std: float, name: str) -> np.ndarray:
    """``stack`` as float32 in [-1, 1] by ``normalize``; see :func:`load_mrc`."""
    if normalize == "none":
        smallest, largest = float(stack.min()), float(stack.max())
        if smallest < -1 or largest > 1:
            raise DataError(f"{name}: values in [{smallest:g}, {largest:g}] lie outside [-1, 1]; choose another normalize "
                            f"({', '.join(MRC_NORMALIZE[:-1])})")
        return stack.astype(np.float32)
    lo, hi = _window(stack, normalize, clip_std, name)
    return _map_window(stack, lo, hi)


def _window(stack: np.ndarray, normalize: str, clip_std: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``[lo, hi]`` window mapped onto [-1, 1], as float64 arrays broadcastable to ``(N, 1, 1)``."""
    if normalize == "per-image":
        lo = stack.min(axis=(1, 2), keepdims=True).astype(np.float64)
        hi = stack.max(axis=(1, 2), keepdims=True).astype(np.float64)
    elif normalize == "dataset":
        lo, hi = np.array(stack.min(), np.float64), np.array(stack.max(), np.float64)
    else:
        mean, std = _mean_std(stack)
        lo, hi = np.array(mean - clip_std * std), np.array(mean + clip_std * std)
    constant = np.flatnonzero(np.broadcast_to(hi <= lo, (len(stack), 1, 1)))
    if len(constant):
        which = "the stack is" if normalize != "per-image" else f"{len(constant)} images (first: {constant[0]}) are"
        raise DataError(f"{name}: {which} constant, so normalize={normalize!r} cannot map it onto [-1, 1]")
    return lo, hi


def _mean_std(stack: np.ndarray, chunk: int = 256) -> tuple[float, float]:
    """Mean and (population) standard deviation of all values, in float64, a chunk of images at a time."""
    chunks = [slice(i, i + chunk) for i in range(0, len(stack), chunk)]
    mean = sum(stack[rows].sum(dtype=np.float64) for rows in chunks) / stack.size
    var = sum(np.square(stack[rows].astype(np.float64) - mean).sum() for rows in chunks) / stack.size
    return float(mean), float(np.sqrt(var))


def _map_window(stack: np.ndarray, lo: np.ndarray, hi: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``(x - lo) / (hi - lo) * 2 - 1`` in float64, clipped to [-1, 1], stored as float32, a chunk of
    images at a time so a memory-mapped stack is never held in float64 whole."""
    n = len(stack)
    lo, hi = np.broadcast_to(lo, (n, 1, 1)), np.broadcast_to(hi, (n, 1, 1))
    out = np.empty(stack.shape, np.float32)
    for i in range(0, n, chunk):
        rows = slice(i, i + chunk)
        x = (stack[rows].astype(np.float64) - lo[rows]) / (hi[rows] - lo[rows]) * 2 - 1
        out[rows] = np.clip(x, -1.0, 1.0)  # changes values only for "standardize"; min-max maps into [-1, 1] exactly
    return out


# ---------------------------------------------------------------- memory-mapped arrays


class MappedImages:
    """uint8 images in a ``.npy`` file, read a batch at a time through a memory map
    (``np.load(mmap_mode="r")``), for training sets larger than memory.

    Stands in for the image tensor in training: ``len``, ``shape``, ``device`` and ``to(device)``
    behave as a tensor's (``to`` shares the map, only where batches are delivered changes), and
    indexing with an int, a slice or a 1-D index tensor reads only those rows and returns them as
    float32 in [-1, 1] on ``device``, equal to the same rows of
    :func:`~scorelab.data.images.load_array`. The array is ``(N, H, W)`` or ``(N, C, H, W)`` /
    ``(N, H, W, C)`` with C in {1, 3, 4} (``layout`` as for :func:`~scorelab.data.validate.to_nchw`);
    only uint8 is accepted, so every value is valid without reading the file.
    """

    dtype = torch.float32
    ndim = 4

    def __init__(self, path: str | Path, *, layout: str | None = None, device: str | torch.device = "cpu"):
        self.path = Path(path)
        self._array = _open_mapped(self.path)
        self._layout = self._storage_layout(layout)
        n, *rest = self._array.shape
        if self._layout == "NHW":
            c, h, w = 1, *rest
        elif self._layout == "NCHW":
            c, h, w = rest
        else:
            h, w, c = rest
        self.shape = torch.Size((n, c, h, w))
        self.device = torch.device(device)
        if c not in CHANNELS:
            raise DataError(f"{self.path}: {c} channels; expected one of {CHANNELS}")
        check_size(torch.empty(0, 0, h, w), str(self.path))

    def _storage_layout(self, layout: str | None) -> str:
        """``"NHW"``, ``"NCHW"`` or ``"NHWC"``: how the rows are stored in the file."""
        if self._array.ndim == 3:
            return "NHW"
        layout = layout or infer_layout(self._array.shape, str(self.path))
        if layout not in ("NCHW", "NHWC"):
            raise DataError(f"{self.path}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        return layout

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"MappedImages({str(self.path)!r}, shape={tuple(self.shape)}, device={str(self.device)!r})"

    def __getitem__(self, index: int | slice | Tensor | np.ndarray) -> Tensor:
        if isinstance(index, Tensor):
            index = index.cpu().numpy()
        rows = torch.from_numpy(np.array(self._array[index]))  # a copy of just these rows
        if self._layout == "NHW":
            rows = rows.unsqueeze(-3)
        elif self._layout == "NHWC":
            rows = rows.movedim(-1, -3).contiguous()
        return to_unit_range(rows, None, str(self.path)).to(self.device)

    def to(self, device: str | torch.device) -> MappedImages:
        """The same images, delivered on ``device`` (the memory map is shared, nothing is read)."""
        if torch.device(device) == self.device:
            return self
        moved = copy.copy(self)
        moved.device = torch.device(device)
        return moved

    def std(self, max_rows: int = STD_ROWS, seed: int = 0) -> float:
        """Standard deviation (unbiased, float64) of the pixel values in [-1, 1]: over every image
        when there are at most ``max_rows``, else over ``max_rows`` images drawn without replacement
        by a generator seeded with ``seed``, so the value is the same every time (a resumed run
        resolves the same ``sigma_data``). Exact on the rows read: it counts the 256 uint8 levels."""
        n = len(self)
        rows = np.arange(n) if n <= max_rows else np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        counts = np.zeros(256, np.int64)
        for i in range(0, len(rows), 1024):
            counts += np.bincount(np.asarray(self._array[rows[i:i + 1024]]).ravel(), minlength=256)
        levels = to_unit_range(torch.arange(256, dtype=torch.uint8), None, "levels").double().numpy()
        total = counts.sum()
        mean = (counts * levels).sum() / total
        return float(np.sqrt((counts * (levels - mean) ** 2).sum() / (total - 1)))


def _open_mapped(path: Path) -> np.ndarray:
    """A read-only memory map of the uint8 array in the ``.npy`` file ``path``, 3-D or 4-D, not empty."""
    if path.suffix != ".npy":
        raise DataError(f"{path}: memory mapping needs a .npy file (a .npz is compressed or zipped; "
                        "np.save its array to a .npy)")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot memory-map as a NumPy array file ({e})") from e
    if array.dtype != np.uint8:
        raise DataError(f"{path}: memory-mapped images must be uint8 (0..255), got {array.dtype}; "
                        "load float arrays without mmap:")
    if array.ndim not in (3, 4) or array.shape[0] == 0:
        raise DataError(f"{path}: expected a non-empty (N, H, W) or (N, C, H, W) / (N, H, W, C) array, "
                        f"got {array.ndim} dims {array.shape}")
    return array
