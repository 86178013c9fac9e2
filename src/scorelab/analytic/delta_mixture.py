"""The exact score of a finite training set (Gaussian-score paper, Sec. 2.2, eqs. 9-10).

``p = sum_i c_i delta_{y_i}``: every training point is a Dirac, so the noised density is a
mixture of ``N(y_i, sigma^2 I)`` and the ideal denoiser is the posterior mean of the points.
Points are visited in chunks with a running log-sum-exp, so a call costs
``O(B * chunk_size)`` extra memory whatever ``N`` is, and never a ``(B, N, D)`` tensor.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import torch
from torch import Tensor, nn

from scorelab.analytic.gaussian import _LOG_2PI, _flat, _floating, _param
from scorelab.denoiser import as_sigma


class DeltaMixture(nn.Module):
    """``sum_i c_i delta(y_i)`` over ``points`` ``(N, *shape)``; uniform weights unless given.

    The denoiser is ``D(x, sigma) = sum_i w_i(x, sigma) y_i`` with posterior weights
    ``w_i = softmax_i(log c_i - ||x - y_i||^2 / (2 sigma^2))`` (eq. 10). ``chunk_size``
    points are processed at a time (the memory knob: about ``B * chunk_size`` extra
    numbers per call). Buffers: ``points`` ``(N, D)``, ``log_c`` ``(N,)``, ``half_sq``
    ``(N,)`` = ``||y_i||^2 / 2``.
    """

    points: Tensor  # (N, D)
    log_c: Tensor  # (N,)
    half_sq: Tensor  # (N,)

    def __init__(self, points: Tensor, weights: Tensor | None = None, *, chunk_size: int = 4096) -> None:
        super().__init__()
        points = _floating(points, "points")
        if points.ndim < 2 or len(points) == 0:
            raise ValueError(f"points must have shape (N >= 1, *shape), got {tuple(points.shape)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.shape = tuple(points.shape[1:])
        self.chunk_size = int(chunk_size)
        y = points.reshape(len(points), -1)
        if weights is None:
            log_c = torch.full((len(y),), -math.log(len(y)), dtype=y.dtype, device=y.device)
        else:
            weights = _param(weights, y.dtype, "weights")
            if weights.shape != (len(y),):
                raise ValueError(f"weights must have shape ({len(y)},), got {tuple(weights.shape)}")
            if not bool((weights > 0).all()) or abs(float(weights.double().sum()) - 1) > 1e-6:
                raise ValueError("weights must be > 0 and sum to 1")
            log_c = weights.log()
        self.register_buffer("points", y.clone())
        self.register_buffer("log_c", log_c)
        self.register_buffer("half_sq", 0.5 * y.square().sum(-1))

    @property
    def n_points(self) -> int:
        return self.points.shape[0]

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    def forward(
        self, x: Tensor, sigma: Tensor | float, *, return_index: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``D(x, sigma) = sum_i w_i y_i`` (eq. 10); with ``return_index`` also the index of the
        most-weighted point ``argmax_i w_i`` ``(B,)`` (the nearest one for uniform weights)."""
        xf = _flat(x, self.shape, self.points.dtype)
        s = as_sigma(sigma, xf)
        _, _, denoised, index = self._reduce(xf, s, want_mean=True)
        denoised = denoised.reshape(x.shape)
        return (denoised, index) if return_index else denoised

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``s = (D(x, sigma) - x) / sigma^2 = -sum_i w_i (x - y_i) / sigma^2`` (eq. 9)."""
        xf = _flat(x, self.shape, self.points.dtype)
        s = as_sigma(sigma, xf)
        _, _, denoised, _ = self._reduce(xf, s, want_mean=True)
        return ((denoised - xf) / s[:, None] ** 2).reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``log sum_i c_i N(x; y_i, sigma^2 I)`` ``(B,)`` (eq. 1); ``sigma > 0`` (Diracs have no density).

        The leading term uses the exact distance to the most-weighted point; the expanded
        ``||x||^2 - 2 x.y + ||y||^2`` would lose ``eps * ||x||^2 / sigma^2`` to cancellation."""
        xf = _flat(x, self.shape, self.points.dtype)
        s = as_sigma(sigma, xf)
        s2 = s.square()
        _, total, _, index = self._reduce(xf, s, want_mean=False)
        top = self.log_c[index] - (xf - self.points[index]).square().sum(-1) / (2 * s2)
        return top + torch.log(total) - 0.5 * self.dim * (_LOG_2PI + torch.log(s2))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` training points drawn with probabilities ``c_i``, ``(n, *shape)``."""
        if n == 0:
            return self.points.new_zeros(0, *self.shape)
        i = torch.multinomial(self.log_c.exp(), n, replacement=True, generator=generator)
        return self.points[i].reshape(n, *self.shape)

    def chunks(self) -> list[slice]:
        """The slices of points visited together (``chunk_size`` each, the last one shorter)."""
        return [slice(i, i + self.chunk_size) for i in range(0, self.n_points, self.chunk_size)]

    def proximity(self, x: Tensor, chunk: slice) -> Tensor:
        """``q_i = x.y_i - ||y_i||^2 / 2`` for the points of ``chunk``, ``(B, len)``: ``-||x - y_i||^2 / 2``
        up to a term common to every point, so ``argmax_i q_i`` is the nearest point."""
        return x @ self.points[chunk].T - self.half_sq[chunk]

    @overload
    def _reduce(self, x: Tensor, sigma: Tensor, *, want_mean: Literal[True]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ...

    @overload
    def _reduce(self, x: Tensor, sigma: Tensor, *, want_mean: Literal[False]) -> tuple[Tensor, Tensor, None, Tensor]:
        ...

    def _reduce(self, x: Tensor, sigma: Tensor, *, want_mean: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """One pass over the points in chunks for the logits ``l_i = log c_i + (x.y_i - ||y_i||^2/2) / sigma^2``:
        ``m = max_i l_i``, ``sum_i exp(l_i - m)``, ``sum_i w_i y_i`` (None unless ``want_mean``) and
        ``argmax_i l_i``.

        ``l_i`` is the log-weight up to ``-||x||^2 / (2 sigma^2)``, the same for every ``i``;
        dropping it keeps the large common term out of the comparison between points."""
        inv_s2 = sigma.square().reciprocal()[:, None]
        m = x.new_full((len(x),), -torch.inf)  # running max of the logits
        total = x.new_zeros(len(x))  # sum_i exp(l_i - m)
        acc = x.new_zeros(x.shape) if want_mean else None  # sum_i exp(l_i - m) y_i
        index = torch.zeros(len(x), dtype=torch.long, device=x.device)
        for c in self.chunks():
            logits = self.proximity(x, c) * inv_s2 + self.log_c[c]
            chunk_max, arg = logits.max(-1)
            index = torch.where(chunk_max > m, arg + c.start, index)
            m_new = torch.maximum(m, chunk_max)
            rescale = torch.exp(m - m_new)  # exp(-inf) = 0 on the first chunk
            w = torch.exp(logits - m_new[:, None])
            total = total * rescale + w.sum(-1)
            if acc is not None:
                acc = acc * rescale[:, None] + w @ self.points[c]
            m = m_new
        mean = acc / total[:, None] if acc is not None else None
        return m, total, mean, index

    def extra_repr(self) -> str:
        return f"n_points={self.n_points}, shape={self.shape}, chunk_size={self.chunk_size}"


__all__ = ["DeltaMixture"]
