"""Draws the documentation's own figure, ``docs/figures/samplers_shapes32.png``: every sampler of the
registry that walks the Karras grid, from the same seeds, on the shipped ``shapes-noisy-32`` model.

    python docs/make_figures.py        # a few minutes on a 2-core CPU

Annealed Langevin walks NCSN levels instead of the Karras grid; its figures are those of the NCSN page."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from scorelab.runs import Run
from scorelab.sample import SAMPLERS, generate
from scorelab.schedules import karras
from scorelab.viz import save_figure

HERE = Path(__file__).parent
SEEDS = range(12)
STEPS = 18
MAD = {"a": 0.01, "b": 1.5, "p": 8.0}  # the setting the model's description recommends
PARAMS = {"mad": MAD, "mad-heun": MAD, "early-stop": {"sigma_stop": 1.0}}  # 1: the data's pixel noise std


def labelled_rows(rows: list[torch.Tensor], labels: list[str], path: Path, title: str) -> Path:
    """One row of gray images (B, 1, H, W) in [-1, 1] per sampler, its label on the left."""
    n, (_, h, w) = len(rows[0]), rows[0].shape[1:]
    grid = np.ones((len(rows) * (h + 2), n * (w + 2)))
    for r, row in enumerate(rows):
        for c, image in enumerate(((row.clamp(-1, 1) + 1) / 2).numpy()):
            grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, c * (w + 2) + 1:c * (w + 2) + 1 + w] = image[0]
    fig = Figure(figsize=(n * 0.75 + 2.2, len(rows) * 0.75 + 0.5))
    ax = fig.add_axes((0.16, 0.0, 0.84, 0.93))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([r * (h + 2) + h / 2 for r in range(len(rows))], labels, fontsize=11)
    ax.set_xticks([c * (w + 2) + w / 2 for c in range(n)], [str(s) for s in SEEDS], fontsize=9)
    ax.tick_params(length=0)
    ax.xaxis.set_ticks_position("top")
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=11, pad=18)
    return save_figure(fig, path)


def main() -> None:
    torch.manual_seed(0)
    model = Run.open("pretrained:shapes-noisy-32", device="cpu")
    sigmas = karras(STEPS, *model.sigma_range)
    rows, labels = [], []
    for name, sampler in SAMPLERS.items():
        required = {k for k, v in inspect.signature(sampler).parameters.items()
                    if v.kind is v.KEYWORD_ONLY and v.default is v.empty}
        if name == "annealed-langevin" or not required <= set(PARAMS.get(name, {})):
            print(f"{name}: left out (it walks other levels or needs settings this figure does not give)")
            continue
        samples, nfe = generate(model.denoiser, model.data_shape, SEEDS, sampler=name, sigmas=sigmas,
                                **PARAMS.get(name, {}))
        rows.append(samples)
        labels.append(f"{name}\n{nfe:g} NFE")
        print(f"{name}: {nfe:g} NFE per sample")
    path = labelled_rows(rows, labels, HERE / "figures" / "samplers_shapes32.png",
                         f"shapes-noisy-32, seeds {SEEDS[0]}-{SEEDS[-1]}, {STEPS} Karras steps")
    Image.open(path).convert("L").save(path, optimize=True)  # gray: a third of the RGBA file
    path.chmod(0o644)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
