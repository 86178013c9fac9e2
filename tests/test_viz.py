"""Image grids: row labels and per-image contrast (the layout of cryo-EM particle figures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from scorelab import viz


def test_per_image_contrast_stretches_each_image_to_the_full_gray_range(tmp_path):
    """Two faint images in different ranges: in [-1, 1] they draw as mid-grays; per image, each
    spans black to white. A constant image draws without NaN (mid-gray left as is)."""
    ramp = torch.linspace(0, 1, 16).repeat(16, 1)
    images = torch.stack([0.1 * ramp, -0.5 + 0.05 * ramp, torch.zeros(16, 16)])[:, None]
    plain = imread(viz.image_grid(images, tmp_path / "plain.png", nrow=3))[..., :3].mean(-1)
    stretched = imread(viz.image_grid(images, tmp_path / "stretched.png", nrow=3, per_image=True))[..., :3].mean(-1)
    assert np.ptp(plain[plain < 0.99]) < 0.5  # faint: every drawn pixel near mid-gray (white is the background)
    assert stretched.min() < 0.05 and np.isfinite(stretched).all()


def test_row_labels_need_one_label_per_row(tmp_path):
    images = torch.zeros(6, 1, 8, 8)
    assert viz.image_grid(images, tmp_path / "ok.png", nrow=3, row_labels=["a", "b"]).is_file()
    with pytest.raises(ValueError, match="2 rows need 2 labels, got 3"):
        viz.image_grid(images, tmp_path / "bad.png", nrow=3, row_labels=["a", "b", "c"])
