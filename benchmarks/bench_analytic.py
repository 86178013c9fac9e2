"""Speed and memory of the analytical denoisers at scale, as ratios to bare matrix products.

    python benchmarks/bench_analytic.py [--device cpu|cuda] [--repeats 3] [--dtypes float32,float64]
                                        [--data near,far] [--sigmas 1e-3,0.01,...] [--no-memory]

- ``DeltaMixture`` over N = 60 000 standard-normal points of D = 784 (MNIST-sized), batch 256,
  at each sigma: seconds per call of the default (pruned) mode and of the dense mode
  (``prune=False``), each beside one bare ``(B, D) @ (D, N)`` product measured in the same
  process, and the ratio. The call needs two products of that size (logits, then weights
  times points), so the dense floor is about 2x; the pruned mode skips the second where few
  weights survive. ``near`` queries are draws of the noised data ``y_j + sigma z`` (what a
  sampler sees), ``far`` ones ``sqrt(1 + sigma^2) z``, independent of the points. Beside them the
  seed paper's ``softmax(-cdist(x, y)^2 / 2 sigma^2) @ y`` (a ``(B, N)`` matrix per call).
- ``GaussianMixture`` with K = 100 components of rank 64 in D = 784, batch 256, at each sigma:
  ``forward`` and ``score`` beside the two bare ``(B, D) @ (D, K r)`` and ``(B, K r) @ (K r, D)``
  products they need; then, as before, against a full-covariance mixture (Cholesky per call).

Timing: for each sigma and repeat the bare product runs right before and after each model call,
and a call's ratio is its time over the mean of those two; the tables give the median over the
repeats and the range (min-max) of the ratios, which shows how much the load of other processes
moved them. Memory: each row in a fresh process; peak extra memory is the peak during the calls
minus the memory held once the inputs exist (CPU: ``VmHWM`` reset through ``/proc/self/clear_refs``,
so Linux only; GPU: ``max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import statistics
import time
from collections.abc import Callable

import torch

from scorelab.analytic import DeltaMixture, GaussianMixture

B, D, N = 256, 784, 60_000
K, RANK = 100, 64
SIGMAS = (1e-3, 1e-2, 0.1, 0.3, 1.0, 2.0, 5.0, 10.0, 100.0, 1e3)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _interleaved(
    bare: Callable[[], object], models: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> tuple[float, dict[str, tuple[float, float, float, float]]]:
    """Median seconds of ``bare`` and, per model, (median seconds, median ratio, min ratio, max ratio),
    each call's ratio taken against the mean of the bare products right before and after it."""
    for fn in (bare, *models.values()):  # warm-up
        fn()
    bare_times: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in models}
    ratios: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        before = _seconds(bare, device)
        bare_times.append(before)
        for name, fn in models.items():
            t = _seconds(fn, device)
            after = _seconds(bare, device)
            bare_times.append(after)
            times[name].append(t)
            ratios[name].append(t / (0.5 * (before + after)))
            before = after
    out = {
        name: (statistics.median(times[name]), statistics.median(r), min(r), max(r)) for name, r in ratios.items()
    }
    return statistics.median(bare_times), out


def _fmt(stats: tuple[float, float, float, float]) -> str:
    seconds, ratio, lo, hi = stats
    return f"{seconds:.3f} | **{ratio:.2f}x** ({lo:.2f}-{hi:.2f})"


def _points(n: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=dtype).to(device)


def _queries(y: torch.Tensor, sigma: float, kind: str, seed: int) -> torch.Tensor:
    """``near``: ``y_j + sigma z`` for random ``j``; ``far``: ``sqrt(1 + sigma^2) z``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, D, generator=g, dtype=y.dtype).to(y.device)
    if kind == "near":
        j = torch.randint(len(y), (B,), generator=g).to(y.device)
        return y[j] + sigma * z
    return (1 + sigma**2) ** 0.5 * z


def _seed_code(y: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The seed paper's exact denoiser: ``cdist``, ``softmax``, ``matmul`` with a ``(B, N)`` matrix."""
    return torch.softmax(-torch.cdist(x, y).square() / (2 * sigma**2), -1) @ y


def delta_speed(dtype: torch.dtype, kind: str, sigmas: list[float], device: torch.device, repeats: int) -> None:
    y = _points(N, dtype, device)
    pruned, dense = DeltaMixture(y), DeltaMixture(y, prune=False)
    xb = _queries(y, 1.0, "far", seed=99)
    seed_col = kind == "near"
    print(f"\n## DeltaMixture, N = {N}, D = {D}, batch {B}, {str(dtype)[6:]}, {kind} queries")
    print("s / call | ratio to one bare (B, D) @ (D, N) product: median (min-max) over the repeats\n")
    head = "| sigma | bare product s | pruned s | pruned ratio | dense s | dense ratio |"
    head += " seed code s | seed ratio |" if seed_col else ""
    print(head + " max abs(pruned - dense) |")
    print("|---" * (head.count("|") - 1) + "|---|")
    for i, sigma in enumerate(sigmas):
        x = _queries(y, sigma, kind, seed=i + 1)
        models: dict[str, Callable[[], object]] = {
            "pruned": lambda x=x, sigma=sigma: pruned(x, sigma),
            "dense": lambda x=x, sigma=sigma: dense(x, sigma),
        }
        if seed_col:
            models["seed"] = lambda x=x, sigma=sigma: _seed_code(y, x, sigma)
        bare_s, stats = _interleaved(lambda: xb @ pruned.points.T, models, device, repeats)
        diff = float((pruned(x, sigma) - dense(x, sigma)).abs().max())
        row = f"| {sigma:g} | {bare_s:.3f} | {_fmt(stats['pruned'])} | {_fmt(stats['dense'])} |"
        row += f" {_fmt(stats['seed'])} |" if seed_col else ""
        print(row + f" {diff:.1e} |", flush=True)


def _gmm(dtype: torch.dtype, device: torch.device) -> GaussianMixture:
    g = torch.Generator().manual_seed(1)
    U = torch.linalg.qr(torch.randn(K, D, RANK, generator=g, dtype=torch.float64))[0]
    lam = torch.rand(K, RANK, generator=g, dtype=torch.float64).sort(-1, descending=True)[0] * 4 + 0.1
    means = torch.rand(K, D, generator=g, dtype=torch.float64) * 2 - 1
    weights = torch.full((K,), 1 / K, dtype=torch.float64)
    return GaussianMixture(weights, means, U=U, lam=lam).to(device=device, dtype=dtype)


def _gmm_queries(model: GaussianMixture, sigma: float, seed: int) -> torch.Tensor:
    """Draws of the noised mixture: ``mu_k + U_k sqrt(lam_k) z + sigma z'`` for k = 0, 1, ..."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(B) % K
    z = torch.randn(B, RANK, generator=g, dtype=model.mu.dtype).to(model.mu.device)
    noise = torch.randn(B, D, generator=g, dtype=model.mu.dtype).to(model.mu.device)
    return model.mu[k] + torch.einsum("bdr,br->bd", model.U[k], z * model.lam[k].sqrt()) + sigma * noise


def gmm_speed(dtype: torch.dtype, sigmas: list[float], device: torch.device, repeats: int) -> None:
    model = _gmm(dtype, device)
    U_flat = model.U.permute(1, 0, 2).reshape(D, K * RANK)  # the model's own storage (a view), as it reads it
    g = torch.Generator().manual_seed(3)
    xb = torch.randn(B, D, generator=g, dtype=dtype).to(device)
    cb = torch.randn(B, K * RANK, generator=g, dtype=dtype).to(device)

    def floor() -> object:
        return xb @ U_flat, cb @ U_flat.T

    print(f"\n## GaussianMixture, K = {K}, rank {RANK}, D = {D}, batch {B}, {str(dtype)[6:]}")
    print("s / call | ratio to the two bare products (B, D) @ (D, K r) and (B, K r) @ (K r, D)\n")
    print("| sigma | two bare products s | forward s | forward ratio | score s | score ratio |")
    print("|---|---|---|---|---|---|")
    for i, sigma in enumerate(sigmas):
        x = _gmm_queries(model, sigma, seed=10 + i)
        models: dict[str, Callable[[], object]] = {
            "forward": lambda x=x, sigma=sigma: model(x, sigma),
            "score": lambda x=x, sigma=sigma: model.score(x, sigma),
        }
        bare_s, stats = _interleaved(floor, models, device, repeats)
        print(f"| {sigma:g} | {bare_s:.4f} | {_fmt(stats['forward'])} | {_fmt(stats['score'])} |", flush=True)


# ----------------------------------------------------------------------------------- memory


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, Linux only."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS
        f.write("5")


def _measure(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """(seconds per call, peak extra memory in MB) of ``fn()`` after one warm-up call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak()
        base = _status_mb("VmRSS")
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _status_mb("VmHWM") - base
    return (time.perf_counter() - t0) / repeats, peak


def _broadcast_delta(y: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    d2 = (x[:, None, :] - y[None]).square().sum(-1)  # (B, N, D) materialised
    return torch.softmax(-d2 / (2 * sigma**2), -1) @ y


def delta_job(kind: str, n: int, chunk_size: int, sigma: float, device_name: str, repeats: int) -> dict:
    device = torch.device(device_name)
    torch.manual_seed(0)
    y = _points(n, torch.float32, device)
    x = _queries(y, sigma, "near", seed=1)
    if kind == "broadcast":
        fn: Callable[[], object] = lambda: _broadcast_delta(y, x, sigma)
    else:
        model = DeltaMixture(y, chunk_size=chunk_size, prune=kind == "pruned").to(device)
        fn = lambda: model(x, sigma)
    seconds, peak = _measure(fn, device, repeats)
    return {"seconds": seconds, "peak_mb": peak}


def _full_cov_gmm(model: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The same mixture with explicit ``(K, D, D)`` covariances: Cholesky of each ``Sigma_k + sigma^2 I``."""
    cov = torch.einsum("kdr,kr,ker->kde", model.U, model.lam, model.U)
    L = torch.linalg.cholesky(cov + sigma**2 * torch.eye(D, dtype=x.dtype, device=x.device))
    d = x[None] - model.mu[:, None]  # (K, B, D)
    z = torch.linalg.solve_triangular(L, d.transpose(1, 2), upper=False)  # (K, D, B)
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    log_n = -0.5 * (z.square().sum(1) + logdet[:, None])  # (K, B), constants cancel in the softmax
    w = torch.softmax(model.weights.log()[:, None] + log_n, 0)
    inv_d = torch.cholesky_solve(d.transpose(1, 2), L).transpose(1, 2)  # (Sigma_k + s^2)^-1 d
    return x - sigma**2 * torch.einsum("kb,kbd->bd", w, inv_d)


def gmm_job(kind: str, device_name: str, repeats: int) -> dict:
    device = torch.device(device_name)
    model = _gmm(torch.float32, device)
    x = _gmm_queries(model, 1.0, seed=2)
    fn = (lambda: model(x, 1.0)) if kind == "lowrank" else (lambda: _full_cov_gmm(model, x, 1.0))
    seconds, peak = _measure(fn, device, repeats)
    return {"seconds": seconds, "peak_mb": peak, "out": fn().cpu()}


def _run(fn: Callable[..., dict], *args: object) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def memory_tables(device: str, repeats: int) -> None:
    print(f"\n## DeltaMixture memory, D = {D}, batch {B}, float32, near queries (each row a fresh process)")
    print("| N | implementation | sigma | s / call | peak extra MB |")
    print("|---|---|---|---|---|")
    for chunk, kind, sigma in ((1024, "dense", 1.0), (4096, "dense", 1.0), (4096, "pruned", 1.0), (4096, "pruned", 0.01)):
        r = _run(delta_job, kind, N, chunk, sigma, device, repeats)
        print(f"| {N} | {kind}, chunk_size {chunk} | {sigma:g} | {r['seconds']:.3f} | {r['peak_mb']:.0f} |", flush=True)
    small = _run(delta_job, "dense", 6_000, 4096, 1.0, device, repeats)
    base = _run(delta_job, "broadcast", 6_000, 0, 1.0, device, 1)
    print(f"| 6000 | dense, chunk_size 4096 | 1 | {small['seconds']:.4f} | {small['peak_mb']:.0f} |")
    print(f"| 6000 | (B, N, D) broadcast | 1 | {base['seconds']:.3f} | {base['peak_mb']:.0f} |")
    print(f"speed-up at N = 6000: {base['seconds'] / small['seconds']:.0f}x")

    print(f"\n## GaussianMixture, K = {K}, rank {RANK}, D = {D}, batch {B}, float32, sigma = 1 (fresh processes)")
    low = _run(gmm_job, "lowrank", device, repeats)
    full = _run(gmm_job, "full", device, 1)
    diff = float((low["out"] - full["out"]).abs().max())
    print("| implementation | s / call | peak extra MB |")
    print("|---|---|---|")
    print(f"| low rank (Woodbury) | {low['seconds']:.3f} | {low['peak_mb']:.0f} |")
    print(f"| full covariance (Cholesky per call) | {full['seconds']:.3f} | {full['peak_mb']:.0f} |")
    print(f"speed-up: {full['seconds'] / low['seconds']:.1f}x; max |difference| of the outputs {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--data", default="near,far", help="DeltaMixture query kinds: near, far")
    parser.add_argument("--sigmas", default=",".join(f"{s:g}" for s in SIGMAS))
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory tables")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    dtypes = [DTYPES[name] for name in args.dtypes.split(",")]
    kinds = args.data.split(",")
    if not set(kinds) <= {"near", "far"}:
        parser.error("--data takes near and/or far")
    sigmas = [float(s) for s in args.sigmas.split(",")]
    device = torch.device(args.device)
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}")
    if device.type == "cuda":
        print(f"# {torch.cuda.get_device_name()}")
    for dtype in dtypes:
        for kind in kinds:
            delta_speed(dtype, kind, sigmas, device, args.repeats)
    for dtype in dtypes:
        gmm_speed(dtype, sigmas, device, args.repeats)
    if not args.no_memory:
        memory_tables(args.device, args.repeats)


if __name__ == "__main__":
    main()
