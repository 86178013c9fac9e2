"""Checkpoints shipped with the package, loaded by name (``scorelab sample --pretrained NAME``).

Each is a weights-only export (:func:`scorelab.runs.export_weights`, float16 EMA weights) whose
safetensors header holds the training config; ``examples/README.md`` has the commands that re-create
them and what they measure."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import CheckpointError

HERE = Path(__file__).parent

PRETRAINED = {
    "shapes-noisy": "UNet (2.4 M parameters) trained on 64x64 noisy shapes only (MAD paper, Sec. 5.3); "
                    "sample it with --sampler mad",
    "shapes-noisy-32": "UNet (2.4 M parameters) trained on 32x32 noisy shapes only, on a 2-core CPU in 90 minutes; "
                       "sample it with --sampler mad --a 0.01 --b 1.5 --p 8",
    "cryoem-sim-32": "UNet (2.4 M parameters) trained on a simulated 32x32 cryo-EM stack at SNR 0.1 only "
                     "(scorelab data cryoem --seed 0), on a 2-core CPU in 85 minutes; sample it with --sampler mad",
}


def pretrained_path(name: str) -> Path:
    """The file of the shipped checkpoint ``name``; a clear error for an unknown or missing one."""
    if name not in PRETRAINED:
        raise CheckpointError(f"no pretrained model {name!r}; shipped: {', '.join(PRETRAINED)}")
    path = HERE / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"pretrained model {name!r} is missing from this installation ({path})")
    return path
