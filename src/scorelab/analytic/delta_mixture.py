"""The exact score of a finite training set (Gaussian-score paper, Sec. 2.2, eqs. 9-10).

``p = sum_i c_i delta_{y_i}``: every training point is a Dirac, so the noised density is a
mixture of ``N(y_i, sigma^2 I)`` and the ideal denoiser is the posterior mean of the points.
Points are visited in chunks with a running log-sum-exp, so a call costs
``O(B * chunk_size)`` extra memory whatever ``N`` is, and never a ``(B, N, D)`` tensor.

Cost. A call needs the ``(B, D) @ (D, N)`` product of the logits and, for the mean, the
``(B, N) @ (N, D)`` product of the weights: everything else is a few passes over each
``(B, chunk)`` block, in place in one preallocated block. Three things keep it near those two
products at every sigma and for any data:

- the weights are ``2^u`` (``torch.exp2``), not ``exp``: on CPU (x86-64, torch 2.13, measured)
  ``torch.exp`` takes a slow path, 10-40x slower, for arguments whose result underflows (below
  ``-87`` in float32, ``-708`` in float64), which is most of them once sigma is small against
  the spread of the distances: the cause of the old code's sigma-dependent cost;
- weights far below the largest are set to exactly zero (no subnormal numbers reach the
  second product) and the reference of the running log-sum-exp moves only when a chunk would
  overflow, so the accumulators are rarely rescaled;
- the pruned mode: where few weights survive (small sigma), the second product is done on
  those alone, as a sparse ``(B, chunk)`` matrix times the chunk's points; each chunk counts its
  survivors first and takes the dense path where they are more than 1/16 of the block, so the
  mode switches itself off where it would not pay.

Exactness. A weight is dropped only when it is below ``2^-T`` of the largest, so the dropped
relative mass is below ``N 2^-T``; ``T = log2(8 N / eps)`` makes that ``eps / 8`` (float32:
``T ~ 42`` at ``N = 60 000``), an error in the posterior mean below ``(eps / 8) max_i |y_i - D|``,
under the rounding of the sum itself. With uniform weights: a point is dropped only if its
squared distance exceeds the nearest one's by more than ``2 sigma^2 T ln 2``. The pruned and the
dense mode keep exactly the same terms (the same logits, the same test), so they differ only by
the order of the sums.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import NamedTuple

import torch
from torch import Tensor, nn

from scorelab.analytic.gaussian import _LOG_2PI, _flat, _floating, _param, _tracks_gradients
from scorelab.denoiser import as_sigma

_LN2 = math.log(2.0)
_LOG2E = 1.0 / _LN2


class _Reduced(NamedTuple):
    log_total: Tensor  # (B,) log sum_i exp(l_i - l_index)
    mean: Tensor | None  # (B, D) sum_i w_i y_i
    argmax: Tensor | None  # (B,) argmax_i l_i


class DeltaMixture(nn.Module):
    """``sum_i c_i delta(y_i)`` over ``points`` ``(N, *shape)``; uniform weights unless given.

    The denoiser is ``D(x, sigma) = sum_i w_i(x, sigma) y_i`` with posterior weights
    ``w_i = softmax_i(log c_i - ||x - y_i||^2 / (2 sigma^2))`` (eq. 10). ``chunk_size``
    points are processed at a time (the memory knob: about ``1.3 B * chunk_size`` extra
    numbers per call). ``prune`` (default True) lets a chunk whose surviving weights are
    few (at most 1/16 of the block) skip the dense second product; False forces the dense
    path (same terms, same result to rounding). Pruning runs on CPU, where its crossover was
    measured; on other devices the dense path runs, with no host synchronisation per chunk.
    Buffers: ``points`` ``(N, D)``, ``log_c``
    ``(N,)``, ``half_sq`` ``(N,)`` = ``||y_i||^2 / 2``.

    Limits. At ``sigma = inf`` the weights are the ``c_i`` (``D = sum_i c_i y_i``, score 0,
    ``log_prob = -inf``). As ``sigma -> 0`` ``D`` is the nearest point, an exact tie split by the
    weights (Lemma 3.3 of the MAD paper); below the sigma where ``1 / sigma^2`` times the
    proximities would come near overflow (float32 ~1e-17, float64 ~1e-152) ``1 / sigma^2`` is held
    there, which is the limit: only differences in ``x.y_i - ||y_i||^2 / 2`` below ``~1e-35``
    (float32; float64 ``~1e-305``) times their scale would count as ties, far under their rounding.
    """

    points: Tensor  # (N, D)
    log_c: Tensor  # (N,)
    half_sq: Tensor  # (N,)

    def __init__(
        self, points: Tensor, weights: Tensor | None = None, *, chunk_size: int = 4096, prune: bool = True
    ) -> None:
        super().__init__()
        points = _floating(points, "points")
        if points.ndim < 2 or len(points) == 0:
            raise ValueError(f"points must have shape (N >= 1, *shape), got {tuple(points.shape)}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
            raise TypeError(f"chunk_size must be an integer, got {type(chunk_size).__name__}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if not isinstance(prune, bool):
            raise TypeError(f"prune must be a bool, got {type(prune).__name__}")
        self.shape: tuple[int, ...] = tuple(points.shape[1:])
        self.chunk_size: int = int(chunk_size)
        self.prune: bool = prune
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
        r = self._reduce(xf, s, want_mean=True, want_index=return_index)
        assert r.mean is not None
        denoised = r.mean.reshape(x.shape)
        if return_index:
            assert r.argmax is not None
            return denoised, r.argmax
        return denoised

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``s = (D(x, sigma) - x) / sigma^2 = -sum_i w_i (x - y_i) / sigma^2`` (eq. 9).

        Divided by sigma twice, not by ``sigma^2``, which underflows first: ``0`` where ``x`` is
        its own nearest point, ``+-inf`` where the true value overflows."""
        xf = _flat(x, self.shape, self.points.dtype)
        s = as_sigma(sigma, xf)
        mean = self._reduce(xf, s, want_mean=True, want_index=False).mean
        assert mean is not None
        st = s[:, None]
        return ((mean - xf) / st / st).reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``log sum_i c_i N(x; y_i, sigma^2 I)`` ``(B,)`` (eq. 1); ``sigma > 0`` (Diracs have no density).

        The leading term uses the exact distance to the most-weighted point; the expanded
        ``||x||^2 - 2 x.y + ||y||^2`` would lose ``eps * ||x||^2 / sigma^2`` to cancellation.
        ``log sigma^2`` is taken as ``2 log sigma`` and the distance divided by sigma twice, so
        that nothing underflows before the result does (``-inf`` at ``sigma = inf``)."""
        xf = _flat(x, self.shape, self.points.dtype)
        s = as_sigma(sigma, xf)
        r = self._reduce(xf, s, want_mean=False, want_index=True)
        assert r.argmax is not None
        top = self.log_c[r.argmax] - 0.5 * ((xf - self.points[r.argmax]).square().sum(-1) / s / s)
        return top + r.log_total - 0.5 * self.dim * (_LOG_2PI + 2 * torch.log(s))

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

    def _drop_exponent(self) -> float:
        """``T``: a weight below ``2^-T`` times the largest is dropped; the ``N`` of them together
        weigh at most ``N 2^-T = eps / 8`` of the total (``eps`` of the points' dtype)."""
        eps = torch.finfo(self.points.dtype).eps
        return min(math.log2(8 * self.n_points / eps), math.log2(torch.finfo(self.points.dtype).max) - 8)

    def _reduce(self, x: Tensor, sigma: Tensor, *, want_mean: bool, want_index: bool) -> _Reduced:
        """One pass over the points in chunks for the base-2 logits ``u_i = v_i + g_i`` with
        ``v_i = a (x.y_i - ||y_i||^2 / 2)``, ``a = log2(e) / sigma^2``, and ``g_i = log2 c_i - max_j log2 c_j``:
        ``log sum_i exp(l_i - l_max)``, ``sum_i w_i y_i`` (unless not ``want_mean``) and
        ``argmax_i u_i`` (when ``want_index``).

        ``v_i`` is the log2-weight up to ``-a ||x||^2 / 2``, the same for every ``i``; dropping
        it keeps the large common term out of the comparison between points. The log-weights are
        added to ``v`` only once a reference near its maximum is subtracted, so that they are not
        lost in the rounding of ``a ||y||^2 / 2`` at small sigma (a tie stays split by the weights).
        A weight is dropped below ``2^-(T + G)`` of the reference, ``G = max g - min g`` (0 for uniform
        weights): the largest weight is at least ``2^-G`` of it, so what is dropped is below ``2^-T``
        of the largest. ``a`` is capped where ``a |x.y - ||y||^2/2|`` would come within a factor 64
        of overflow (the sigma -> 0 limit, see the class)."""
        finfo = torch.finfo(x.dtype)
        h_max = self.half_sq.max()
        scale = x.norm(dim=-1) * (2 * h_max).sqrt() + h_max + 1  # >= |x.y_i - ||y_i||^2 / 2|
        a = torch.minimum((sigma * sigma).reciprocal(), finfo.max / 64 / scale) * _LOG2E
        g = (self.log_c - self.log_c.max()) * _LOG2E
        g_min = float(g.min())
        cut = self._drop_exponent() - g_min  # T + G
        weights = g if g_min < 0 else None  # None: uniform
        if _tracks_gradients(x, sigma, self.points, self.log_c, self.half_sq):
            return self._reduce_autodiff(x, a, weights, cut, want_mean=want_mean, want_index=want_index)
        with torch.no_grad():
            # a chunk may exceed its reference by up to 2^U before the accumulators are rescaled:
            # N 2^U max|y| stays 16x below overflow
            y_max = max(float((2 * h_max).sqrt()), 1.0)
            U = max(1.0, min(64.0, math.log2(finfo.max) - 4 - math.log2(self.n_points * y_max)))
            return self._reduce_fast(x, a, weights, cut, U, want_mean=want_mean, want_index=want_index)

    def _reduce_fast(
        self, x: Tensor, a: Tensor, g: Tensor | None, cut: float, U: float, *, want_mean: bool, want_index: bool
    ) -> _Reduced:
        """``_reduce`` in preallocated blocks, in place, without autograd.

        Per chunk: ``v - R`` relative to a per-row reference ``R`` in one product (the block is
        first filled with ``-a ||y||^2 / 2 - R``, then ``a x @ y^T`` is added to it), its row maxima,
        the log-weights ``g``, then either the dense path (zero below ``-cut``, ``exp2``, row sums
        and the second product) or, when at most ``limit`` weights survive, only those (a sparse
        ``(B, chunk)`` matrix times the chunk's points). ``R`` is the first chunk's row maxima of
        ``v`` and moves only for rows where a chunk exceeds it by more than ``U``."""
        B, D = x.shape
        C = min(self.chunk_size, self.n_points)
        block = x.new_empty(B * C)
        # off the CPU: no per-chunk host synchronisation (no survivor count, the shift test on the
        # device); the pruned mode's crossover was measured on CPU only
        on_cpu = x.device.type == "cpu"
        prune = self.prune and on_cpu
        keep_block = torch.empty(B * C, dtype=torch.bool, device=x.device) if prune else None
        shared = B == 1 or bool((a == a[0]).all())
        xa = x * a[:, None]
        R = x.new_zeros(B)  # reference, log2 units
        top = x.new_full((B,), -math.inf)  # running max of u - R
        total = x.new_zeros(B)  # sum_i 2^(u_i - R)
        acc = x.new_zeros(B, D) if want_mean else None  # sum_i 2^(u_i - R) y_i
        index = torch.zeros(B, dtype=torch.long, device=x.device) if want_index else None
        limit = (B * C) // 16  # sparse costs about as much as dense at 1/10 of the block (CPU, measured)
        next_try = 0
        zero = -4.0 * math.log2(torch.finfo(x.dtype).max)  # exp2 of it is exactly 0
        for k, c in enumerate(self.chunks()):
            y = self.points[c]
            u = block[: B * len(y)].view(B, len(y))
            if shared:
                torch.sub((-a[0] * self.half_sq[c])[None, :], R[:, None], out=u)
            else:
                torch.neg(R[:, None].expand_as(u), out=u)
                u.addr_(a, self.half_sq[c], alpha=-1)
            u.addmm_(xa, y.T)  # v - R
            v_max = u.amax(-1)
            if k == 0 or not on_cpu or bool((v_max > U).any()):
                shift = v_max if k == 0 else torch.where(v_max > U, v_max, 0.0)
                u.sub_(shift[:, None])
                R += shift
                top = top - shift
                v_max = v_max - shift
                if k > 0:
                    factor = torch.exp2(-shift)
                    total.mul_(factor)
                    if acc is not None:
                        acc.mul_(factor[:, None])
            if g is not None:
                u.add_(g[c])  # u - R <= v - R <= U
            if index is not None:
                chunk_max, arg = u.max(-1)
                index = torch.where(chunk_max > top, arg + c.start, index)
            else:
                chunk_max = u.amax(-1) if g is not None else v_max
            top = torch.maximum(top, chunk_max)
            sparse = False
            if keep_block is not None and k >= next_try:
                keep = torch.gt(u, -cut, out=keep_block[: B * len(y)].view(B, len(y)))
                n_keep = int(torch.count_nonzero(keep))
                sparse = n_keep <= limit
                next_try = k + 1 if n_keep <= 4 * limit else k + 8  # dense for a while: don't ask every chunk
            if sparse:
                rows, cols = keep.nonzero().unbind(1)
                w = torch.exp2(u[rows, cols])
                total.index_add_(0, rows, w)
                if acc is not None and len(w):
                    acc.add_(_sparse_rows(rows, cols, w, (B, len(y))) @ y)
            else:
                torch.threshold_(u, -cut, zero)
                u.exp2_()
                total.add_(u.sum(-1))
                if acc is not None:
                    acc.addmm_(u, y)
        mean = acc / total[:, None] if acc is not None else None
        return _Reduced(torch.log(total) - top * _LN2, mean, index)

    def _reduce_autodiff(
        self, x: Tensor, a: Tensor, g: Tensor | None, cut: float, *, want_mean: bool, want_index: bool
    ) -> _Reduced:
        """``_reduce`` out of place and dense, for inputs that carry gradients (reverse or forward
        mode): the same terms, as a plain running log-sum-exp whose reference is the running
        maximum; each chunk's ``v`` is first taken relative to its own maximum, so that the
        log-weights are added to small numbers."""
        xa = x * a[:, None]
        R: Tensor | None = None  # running max of u, detached
        live = x.new_full((len(x),), -math.inf)  # the same, differentiable (log_total's gradient needs it)
        total = x.new_zeros(len(x))
        acc = torch.zeros_like(x) if want_mean else None
        index = torch.zeros(len(x), dtype=torch.long, device=x.device) if want_index else None
        for c in self.chunks():
            y = self.points[c]
            v = xa @ y.T - a[:, None] * self.half_sq[c]
            v_max = v.detach().amax(-1)
            u = v - v_max[:, None]
            if g is not None:
                u = u + g[c]
            u_max, arg = u.detach().max(-1)
            chunk_max = v_max + u_max
            live = torch.maximum(live, v_max + u.amax(-1))
            new_R = chunk_max if R is None else torch.maximum(R, chunk_max)
            if index is not None:
                index = arg + c.start if R is None else torch.where(chunk_max > R, arg + c.start, index)
            e = u - (new_R - v_max)[:, None]
            w = torch.where(e > -cut, torch.exp2(e), 0.0)
            factor = torch.exp2(R - new_R) if R is not None else torch.zeros_like(new_R)
            total = total * factor + w.sum(-1)
            if acc is not None:
                acc = acc * factor[:, None] + w @ y
            R = new_R
        assert R is not None
        mean = acc / total[:, None] if acc is not None else None
        return _Reduced(torch.log(total) + (R - live) * _LN2, mean, index)

    def extra_repr(self) -> str:
        return f"n_points={self.n_points}, shape={self.shape}, chunk_size={self.chunk_size}, prune={self.prune}"


def _sparse_rows(rows: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """The ``shape`` matrix with ``values`` at ``(rows, cols)`` (row-major order, as ``nonzero``
    gives them) in compressed-row form, for a sparse-times-dense product."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.long, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


__all__ = ["DeltaMixture"]
