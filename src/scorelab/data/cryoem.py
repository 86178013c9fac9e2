"""A simulated cryo-EM particle stack with a known clean manifold (a stand-in for the MAD paper's Sec. 5.4 data).

    stack = simulate(10_000, Settings(size=32, snr=0.1, seed=0))    # stack.images: (N, 32, 32) in [-1, 1]
    mrcs, side = save_stack(stack, "particles.mrcs")               # + particles.npz, for measurement only

The molecule is a chain of Gaussian "atoms" with no symmetry (:func:`atom_chain`). A particle is
its projection along z after a rotation uniform on SO(3) (:func:`random_rotations`,
:func:`project`), filtered by the weak-phase contrast transfer function at a random defocus
(:func:`weak_phase_ctf`, :func:`apply_ctf`), plus white Gaussian noise at a per-image SNR,
normalised per image as :func:`~scorelab.data.formats.load_mrc` does (``"per-image"``). Every
image is therefore a point of a 3-dimensional manifold (orientation) of clean images, times a
1-dimensional family of CTFs; :mod:`scorelab.metrics.cryoem` regenerates it from the side file.

Units: lengths in Å, defocus in µm (positive = underfocus), spherical aberration in mm, voltage in
kV, spatial frequency in 1/Å. Image pixel ``[i, j]`` samples the plane at ``x = (j - S // 2) p``,
``y = (i - S // 2) p`` (``p`` the pixel size): the origin sits at pixel ``S // 2``, as in FFT-based
cryo-EM software. Clean values are projected density in atoms per Å².
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scorelab.data.formats import _map_window, _window
from scorelab.errors import DataError

_F64 = torch.float64
MIN_SIZE = 8
RADIUS_FRACTION = 0.7  # the farthest atom centre sits at this fraction of the half box: room for rotation and CTF fringes
PAD = 2  # the CTF is applied on a grid PAD times the box, so its point-spread function does not wrap around
_MAX_ELEMENTS = 1 << 23  # images x atoms x grid points per rendering chunk (~64 MB per float64 buffer)
# Independent random streams from one seed: the molecule, the particles, and a reference bank never share draws.
STREAM_STRUCTURE, STREAM_PARTICLES, STREAM_BANK = 1, 2, 3
SIDE_KEYS = ("clean", "projections", "rotations", "defocus", "atoms", "lo", "hi", "params")

# Physical constants (CODATA 2018, exact SI values where defined).
PLANCK = 6.62607015e-34  # J s
ELECTRON_MASS = 9.1093837015e-31  # kg
ELEMENTARY_CHARGE = 1.602176634e-19  # C
LIGHT_SPEED = 299_792_458.0  # m / s


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Everything that defines a stack; the defaults are a small-box setting a cryo-EM user recognises.

    ``size`` px at ``pixel_size`` Å/px (32 x 4 Å = a 128 Å box around a particle about 100 Å
    across: the molecule is scaled to the box, :func:`atom_chain`); ``n_atoms`` Gaussian atoms of standard deviation ``atom_sigma`` Å; a 300 kV
    microscope with ``cs`` = 2.7 mm and amplitude contrast 0.1; defocus uniform in
    [``defocus_min``, ``defocus_max``] µm; ``snr`` = var(clean) / var(noise) per image.
    ``structure_seed`` draws the molecule (default: ``seed``), ``seed`` the particles, so stacks of
    one molecule with other particles differ in ``seed`` only.
    """

    size: int = 32
    pixel_size: float = 4.0
    n_atoms: int = 300
    atom_sigma: float = 4.0
    ctf: bool = True
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    defocus_min: float = 1.0
    defocus_max: float = 2.5
    snr: float = 0.1
    seed: int = 0
    structure_seed: int | None = field(default=None)

    def __post_init__(self) -> None:
        _check_int("size", self.size, MIN_SIZE)
        _check_int("n_atoms", self.n_atoms, 1)
        _check_int("seed", self.seed, 0)
        if self.structure_seed is not None:
            _check_int("structure_seed", self.structure_seed, 0)
        for name in ("pixel_size", "atom_sigma", "voltage", "snr"):
            _check_positive(name, getattr(self, name))
        if isinstance(self.cs, bool) or not isinstance(self.cs, (int, float, np.number)) or not 0 <= self.cs < math.inf:
            raise ValueError(f"cs must be a finite number of mm >= 0, got {self.cs!r}")
        if not 0 <= self.amplitude_contrast < 1:
            raise ValueError(f"amplitude_contrast must lie in [0, 1), got {self.amplitude_contrast!r}")
        for name in ("defocus_min", "defocus_max"):
            _check_positive(name, getattr(self, name))
        if self.defocus_min > self.defocus_max:
            raise ValueError(f"defocus_min ({self.defocus_min} µm) is larger than defocus_max ({self.defocus_max} µm)")

    @property
    def molecule_seed(self) -> int:
        return self.seed if self.structure_seed is None else self.structure_seed


def _check_int(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (0 < value < math.inf):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def stream(seed: int, which: int) -> torch.Generator:
    """A generator for the random stream ``which`` of ``seed``: the streams of one seed (and of
    different seeds) are independent (NumPy's SeedSequence mixing), so e.g. a reference bank drawn
    with the stack's own seed does not repeat its orientations."""
    state = np.random.SeedSequence([int(seed), int(which)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ---------------------------------------------------------------- molecule and orientations


def atom_chain(n_atoms: int, box: float, generator: torch.Generator) -> Tensor:
    """Atom centres ``(n_atoms, 3)`` in Å: a random walk of unit steps in directions uniform on the
    sphere, centred on its mean and scaled so the farthest atom sits ``RADIUS_FRACTION * box / 2``
    from the centre. A random chain has no symmetry, so no two orientations give one image."""
    _check_int("n_atoms", n_atoms, 1)
    steps = torch.randn(n_atoms, 3, generator=generator, dtype=_F64)
    steps = steps / steps.norm(dim=1, keepdim=True)
    chain = torch.cat([torch.zeros(1, 3, dtype=_F64), steps[1:].cumsum(0)])
    chain = chain - chain.mean(0)
    radius = float(chain.norm(dim=1).max())
    return chain * (RADIUS_FRACTION * box / 2 / radius) if radius > 0 else chain


def random_rotations(n: int, generator: torch.Generator) -> Tensor:
    """``n`` rotation matrices ``(n, 3, 3)`` uniform on SO(3) (Haar measure): from unit quaternions
    uniform on the 3-sphere (normalised Gaussian 4-vectors); q and -q give the same rotation."""
    w, x, y, z = torch.nn.functional.normalize(torch.randn(n, 4, generator=generator, dtype=_F64), dim=1).unbind(1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


# ---------------------------------------------------------------- projection and CTF


def project(atoms: Tensor, rotations: Tensor, size: int, pixel_size: float, atom_sigma: float) -> Tensor:
    """Projections ``(B, size, size)`` along z of the density ``sum_a N(r; R r_a, atom_sigma^2 I)``
    for each rotation ``R`` of ``rotations`` ``(B, 3, 3)``, sampled at the pixel centres.

    The line integral over z of an isotropic 3-D Gaussian is the 2-D Gaussian of the same sigma,
    ``exp(-((x - x_a)^2 + (y - y_a)^2) / (2 sigma^2)) / (2 pi sigma^2)``, so the image is exact:
    it factors into an x and a y profile per atom, one batched matrix product over the atoms."""
    grid = (torch.arange(size, dtype=_F64) - size // 2) * pixel_size
    centres = atoms.to(_F64) @ rotations.to(_F64).transpose(1, 2)  # (B, A, 3): R r_a
    per_chunk = max(1, _MAX_ELEMENTS // (len(atoms) * size))
    out = torch.empty(len(rotations), size, size, dtype=_F64)
    for lo in range(0, len(rotations), per_chunk):
        c = centres[lo : lo + per_chunk]
        gx, gy = (_profile(grid, c[..., axis].contiguous(), atom_sigma) for axis in (0, 1))  # (b, A, size)
        torch.bmm(gy.transpose(1, 2), gx, out=out[lo : lo + per_chunk])
    return out.div_(2 * math.pi * atom_sigma**2)


def _profile(grid: Tensor, centre: Tensor, sigma: float) -> Tensor:
    """``exp(-(grid - centre)^2 / (2 sigma^2))`` ``(b, A, len(grid))``, in place (temporaries cost more than exp)."""
    return (grid - centre[..., None]).square_().mul_(-0.5 / sigma**2).exp_()


def electron_wavelength(voltage: float) -> float:
    """Relativistic electron wavelength in Å at an accelerating ``voltage`` in kV:
    ``lambda = h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2)))`` (0.01969 Å at 300 kV)."""
    v = voltage * 1e3
    momentum = math.sqrt(2 * ELECTRON_MASS * ELEMENTARY_CHARGE * v
                         * (1 + ELEMENTARY_CHARGE * v / (2 * ELECTRON_MASS * LIGHT_SPEED**2)))
    return PLANCK / momentum * 1e10


def weak_phase_ctf(k: Tensor, defocus: Tensor | float, *, voltage: float = 300.0, cs: float = 2.7,
                   amplitude_contrast: float = 0.1) -> Tensor:
    """The weak-phase CTF ``-(sqrt(1 - A^2) sin(chi) + A cos(chi))`` at spatial frequency ``k``
    (1/Å), with ``chi(k) = pi lambda dz k^2 - pi / 2 Cs lambda^3 k^4``.

    Sign convention: ``dz`` > 0 is underfocus; CTF(0) = -A, so the low frequencies of a
    projection come out inverted and a particle appears dark on a grey background, as in raw
    micrographs (no phase plate, no astigmatism, no envelope). ``defocus`` in µm broadcasts
    against ``k``; ``cs`` in mm, ``voltage`` in kV."""
    lam = electron_wavelength(voltage)
    dz = torch.as_tensor(defocus, dtype=_F64) * 1e4  # µm -> Å
    k2 = k.to(_F64) ** 2
    chi = math.pi * lam * dz * k2 - math.pi / 2 * (cs * 1e7) * lam**3 * k2**2
    a = amplitude_contrast
    return -(math.sqrt(1 - a * a) * torch.sin(chi) + a * torch.cos(chi))


def apply_ctf(padded: Tensor, defocus: Tensor | float, settings: Settings) -> Tensor:
    """Projections on the padded grid ``(..., PAD S, PAD S)`` filtered by :func:`weak_phase_ctf`
    (multiplication in Fourier space) and cropped to ``(..., S, S)``. ``defocus`` (µm) broadcasts
    against the leading dims: one per image ``(B,)``, one for all, or ``(D,)`` against
    ``(B, 1, P, P)`` for every image at every defocus."""
    side = padded.shape[-1]
    dz = torch.as_tensor(defocus, dtype=_F64)
    transfer = weak_phase_ctf(_frequencies(side, settings.pixel_size), dz[..., None, None], voltage=settings.voltage,
                              cs=settings.cs, amplitude_contrast=settings.amplitude_contrast)
    filtered = torch.fft.irfft2(torch.fft.rfft2(padded.to(_F64)) * transfer, s=(side, side))
    return crop(filtered, settings.size)


@lru_cache(maxsize=8)
def _frequencies(side: int, pixel_size: float) -> Tensor:
    """``|k|`` (1/Å) on the ``rfft2`` grid of a ``side x side`` image (cached; callers must not modify it)."""
    ky = torch.fft.fftfreq(side, d=pixel_size, dtype=_F64)
    kx = torch.fft.rfftfreq(side, d=pixel_size, dtype=_F64)
    return (ky[:, None] ** 2 + kx[None, :] ** 2).sqrt()


def crop(images: Tensor, size: int) -> Tensor:
    """The central ``size x size`` of ``(B, P, P)`` images, keeping the origin at pixel ``P // 2 -> size // 2``."""
    start = images.shape[-1] // 2 - size // 2
    return images[..., start : start + size, start : start + size]


def render(atoms: Tensor, rotations: Tensor, defocus: Tensor | None, settings: Settings) -> tuple[Tensor, Tensor]:
    """Clean particles: ``projections`` ``(B, S, S)`` before the CTF and ``clean`` after it (the
    same tensor without a CTF, ``defocus`` None). The projection is rendered on the padded grid so
    the CTF sees the density's tails beyond the box."""
    s = settings.size
    if defocus is None or not settings.ctf:
        projections = project(atoms, rotations, s, settings.pixel_size, settings.atom_sigma)
        return projections, projections
    padded = project(atoms, rotations, PAD * s, settings.pixel_size, settings.atom_sigma)
    return crop(padded, s), apply_ctf(padded, defocus, settings)


# ---------------------------------------------------------------- the stack


@dataclass(frozen=True)
class ParticleStack:
    """A simulated stack. ``images`` ``(N, S, S)`` float32: noisy, each mapped from its own
    ``[lo, hi]`` (its min, max) onto [-1, 1]; ``clean`` float32: the noise-free images the noise was
    added to (CTF applied), in the raw units before normalisation; ``projections`` float32: before
    the CTF; ``rotations`` ``(N, 3, 3)``; ``defocus`` ``(N,)`` µm (NaN without CTF); ``lo``, ``hi``
    ``(N,)`` the normalisation windows; ``atoms`` ``(A, 3)`` Å; ``settings``."""

    images: Tensor
    clean: Tensor
    projections: Tensor
    rotations: Tensor
    defocus: Tensor
    lo: Tensor
    hi: Tensor
    atoms: Tensor
    settings: Settings

    def clean_in_stack_units(self) -> Tensor:
        """The clean images ``(N, S, S)`` float32 mapped by each image's window ``[lo, hi]`` as its
        noisy image was (unclipped): what a perfect denoiser of the stack would return."""
        lo, hi = self.lo[:, None, None], self.hi[:, None, None]
        return ((self.clean.double() - lo) / (hi - lo) * 2 - 1).float()


def simulate(n: int, settings: Settings | None = None) -> ParticleStack:
    """``n`` particles of the molecule drawn from ``settings.structure_seed``, in orientations,
    defoci and noise drawn from ``settings.seed`` (reproducible: same settings, same stack).

    Noise: white Gaussian with variance ``var(clean_i) / snr`` per image (var = mean squared
    deviation from the image's mean over its S x S pixels), then per-image min-max normalisation
    (:func:`~scorelab.data.formats.load_mrc`'s ``"per-image"``)."""
    settings = settings or Settings()
    _check_int("n", n, 1)
    s = settings.size
    atoms = atom_chain(settings.n_atoms, s * settings.pixel_size, stream(settings.molecule_seed, STREAM_STRUCTURE))
    generator = stream(settings.seed, STREAM_PARTICLES)
    rotations = random_rotations(n, generator)
    if settings.ctf:
        u = torch.rand(n, generator=generator, dtype=_F64)
        defocus = settings.defocus_min + (settings.defocus_max - settings.defocus_min) * u
    else:
        defocus = torch.full((n,), math.nan, dtype=_F64)
    projections, clean = torch.empty(n, s, s), torch.empty(n, s, s)
    noisy = np.empty((n, s, s), np.float64)
    per_chunk = 256
    for lo in range(0, n, per_chunk):
        rows = slice(lo, lo + per_chunk)
        p, c = render(atoms, rotations[rows], defocus[rows] if settings.ctf else None, settings)
        noise_std = (c.var(dim=(1, 2), correction=0) / settings.snr).sqrt()
        noise = torch.randn(c.shape, generator=generator, dtype=_F64) * noise_std[:, None, None]
        projections[rows], clean[rows] = p.float(), c.float()
        noisy[rows] = (c + noise).numpy()
    window_lo, window_hi = _window(noisy, "per-image", 3.0, "simulated stack")
    images = torch.from_numpy(_map_window(noisy, window_lo, window_hi))
    return ParticleStack(images, clean, projections, rotations, defocus, torch.from_numpy(window_lo.reshape(n)),
                         torch.from_numpy(window_hi.reshape(n)), atoms, settings)


# ---------------------------------------------------------------- files


def side_path(path: str | Path) -> Path:
    """The side file of a stack: ``FILE.npz`` beside ``FILE.mrcs``."""
    return Path(path).with_suffix(".npz")


def save_stack(stack: ParticleStack, path: str | Path) -> tuple[Path, Path]:
    """Write ``stack.images`` as an MRC stack (float32, voxel size = pixel size, ``.mrcs`` or ``.mrc``)
    and the measurement side file ``FILE.npz`` (keys :data:`SIDE_KEYS`; ``params`` the settings as
    JSON), each atomically (a temporary, then ``os.replace``), the side file first."""
    from scorelab.checkpoint import atomic_write, save_npz
    from scorelab.data.formats import _import_mrcfile

    path = Path(path)
    if path.suffix.lower() not in (".mrcs", ".mrc"):
        raise ValueError(f"a particle stack is written as .mrcs or .mrc, got {path}")
    mrcfile = _import_mrcfile()
    side = side_path(path)
    save_npz(side, clean=stack.clean.numpy(), projections=stack.projections.numpy(),
             rotations=stack.rotations.numpy(), defocus=stack.defocus.numpy(), atoms=stack.atoms.numpy(),
             lo=stack.lo.numpy(), hi=stack.hi.numpy(), params=json.dumps(asdict(stack.settings)))

    def write(tmp: str) -> None:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(stack.images.numpy().astype(np.float32))
            mrc.set_image_stack()
            mrc.voxel_size = stack.settings.pixel_size

    atomic_write(path, write)
    return path, side


@dataclass(frozen=True)
class SideFile:
    """The measurement side file of a stack (:func:`save_stack`), as float64 tensors."""

    clean: Tensor
    projections: Tensor
    rotations: Tensor
    defocus: Tensor
    atoms: Tensor
    lo: Tensor
    hi: Tensor
    settings: Settings


def read_side(path: str | Path) -> SideFile:
    """The side file of a stack, given the stack (``FILE.mrcs``) or the side file (``FILE.npz``)."""
    file = side_path(path)
    if not file.is_file():
        raise DataError(f"{file}: no such side file (written beside the stack by `scorelab data cryoem`)")
    try:
        with np.load(file, allow_pickle=False) as data:
            missing = [k for k in SIDE_KEYS if k not in data]
            if missing:
                raise DataError(f"{file}: not a cryo-EM side file: no {', '.join(missing)}")
            arrays = {k: torch.from_numpy(np.asarray(data[k], np.float64)) for k in SIDE_KEYS if k != "params"}
            params = json.loads(str(data["params"]))
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{file}: cannot read as a cryo-EM side file ({e})") from e
    try:
        settings = Settings(**params)
    except (TypeError, ValueError) as e:
        raise DataError(f"{file}: its simulator settings are not valid ({e})") from e
    n, s = len(arrays["clean"]), settings.size
    if arrays["clean"].shape != (n, s, s) or arrays["rotations"].shape != (n, 3, 3) or arrays["atoms"].ndim != 2:
        raise DataError(f"{file}: inconsistent shapes: clean {tuple(arrays['clean'].shape)}, rotations "
                        f"{tuple(arrays['rotations'].shape)} for size {s}")
    return SideFile(**arrays, settings=settings)
