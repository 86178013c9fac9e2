"""Checkpoints shipped with the package, loaded by name (``scorelab sample --pretrained NAME``).

Each is a weights-only export (:func:`scorelab.runs.export_weights`); its ``.json`` sidecar holds
the training config and the command that re-creates it (``examples/README.md`` has the numbers)."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import CheckpointError

HERE = Path(__file__).parent

PRETRAINED = {
    "shapes-noisy": "UNet (2.4 M parameters) trained on 64x64 noisy shapes only (MAD paper, Sec. 5.3); "
                    "sample it with --sampler mad",
}


def pretrained_path(name: str) -> Path:
    """The file of the shipped checkpoint ``name``; a clear error for an unknown or missing one."""
    if name not in PRETRAINED:
        raise CheckpointError(f"no pretrained model {name!r}; shipped: {', '.join(PRETRAINED)}")
    path = HERE / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"pretrained model {name!r} is missing from this installation ({path})")
    return path
