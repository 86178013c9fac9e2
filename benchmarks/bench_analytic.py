"""Speed and memory of the analytical denoisers at scale, against straightforward implementations.

    python benchmarks/bench_analytic.py [--device cpu|cuda] [--repeats 3]

- ``DeltaMixture`` over N = 60 000 points of D = 784 (MNIST-sized; random points, since the
  cost does not depend on the values), batch 256: time per call and peak extra memory for
  two chunk sizes. At N = 6 000, the ratio against the (B, N, D) broadcast a first attempt
  would write, ``softmax(-||x - y||^2 / 2 sigma^2) @ y``.
- ``GaussianMixture`` with K = 100 components of rank 64 in D = 784, batch 256: time per call
  against a full-covariance mixture (Cholesky of every ``Sigma_k + sigma^2 I`` per call), and
  the largest difference between the two outputs.

Each measurement runs in a fresh process. Peak extra memory is the peak during the calls
minus the memory held once the inputs exist (CPU: ``VmHWM`` reset through
``/proc/self/clear_refs``, so Linux only; GPU: ``max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import time

import torch

from scorelab.analytic import DeltaMixture, GaussianMixture

B, D, SIGMA = 256, 784, 1.0


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, Linux only."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS
        f.write("5")


def _measure(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """(seconds per call, peak extra memory in MB) of ``fn()`` after one warm-up call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak()
        base = _status_mb("VmRSS")
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _status_mb("VmHWM") - base
    return (time.perf_counter() - t0) / repeats, peak


def _points(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.rand(n, D, generator=g) * 2 - 1
    x = y[:B] + SIGMA * torch.randn(B, D, generator=g)
    return y.to(device), x.to(device)


def _broadcast_delta(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    d2 = (x[:, None, :] - y[None]).square().sum(-1)  # (B, N, D) materialised
    return torch.softmax(-d2 / (2 * SIGMA**2), -1) @ y


def delta_job(kind: str, n: int, chunk_size: int, device: str, repeats: int) -> dict:
    device = torch.device(device)
    torch.manual_seed(0)
    y, x = _points(n, device)
    if kind == "chunked":
        model = DeltaMixture(y, chunk_size=chunk_size).to(device)
        out = model(x, SIGMA)
        fn = lambda: model(x, SIGMA)
    else:
        out = None
        fn = lambda: _broadcast_delta(y, x)
    seconds, peak = _measure(fn, device, repeats)
    return {
        "seconds": seconds,
        "peak_mb": peak,
        "out": out.cpu() if out is not None else None,
    }


def _gmm(device: torch.device, K: int = 100, r: int = 64) -> GaussianMixture:
    g = torch.Generator().manual_seed(1)
    U = torch.linalg.qr(torch.randn(K, D, r, generator=g))[0]
    lam = torch.rand(K, r, generator=g).sort(-1, descending=True)[0] * 4 + 0.1
    means = torch.rand(K, D, generator=g) * 2 - 1
    return GaussianMixture(torch.full((K,), 1 / K), means, U=U, lam=lam).to(device)


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


def gmm_job(kind: str, device: str, repeats: int) -> dict:
    device = torch.device(device)
    model = _gmm(device)
    g = torch.Generator().manual_seed(2)
    x = (model.mu[torch.arange(B) % 100].cpu() + torch.randn(B, D, generator=g)).to(device)
    fn = (lambda: model(x, SIGMA)) if kind == "lowrank" else (lambda: _full_cov_gmm(model, x, SIGMA))
    seconds, peak = _measure(fn, device, repeats)
    return {"seconds": seconds, "peak_mb": peak, "out": fn().cpu()}


def _run(fn, *args) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}")
    if args.device.startswith("cuda"):
        print(f"# {torch.cuda.get_device_name()}")

    print("\n## DeltaMixture, D = 784, batch 256, float32, sigma = 1")
    print("| N | implementation | s / call | peak extra MB |")
    print("|---|---|---|---|")
    for n, chunk in ((60_000, 1024), (60_000, 4096)):
        r = _run(delta_job, "chunked", n, chunk, args.device, args.repeats)
        print(f"| {n} | chunked, chunk_size {chunk} | {r['seconds']:.3f} | {r['peak_mb']:.0f} |")
    small = _run(delta_job, "chunked", 6_000, 4096, args.device, args.repeats)
    base = _run(delta_job, "broadcast", 6_000, 0, args.device, 1)
    print(f"| 6000 | chunked, chunk_size 4096 | {small['seconds']:.4f} | {small['peak_mb']:.0f} |")
    print(f"| 6000 | (B, N, D) broadcast | {base['seconds']:.3f} | {base['peak_mb']:.0f} |")
    print(f"speed-up at N = 6000: {base['seconds'] / small['seconds']:.1f}x")

    print("\n## GaussianMixture, K = 100, rank 64, D = 784, batch 256, float32, sigma = 1")
    low = _run(gmm_job, "lowrank", args.device, args.repeats)
    full = _run(gmm_job, "full", args.device, 1)
    diff = float((low["out"] - full["out"]).abs().max())
    print("| implementation | s / call | peak extra MB |")
    print("|---|---|---|")
    print(f"| low rank (Woodbury) | {low['seconds']:.3f} | {low['peak_mb']:.0f} |")
    print(f"| full covariance (Cholesky per call) | {full['seconds']:.3f} | {full['peak_mb']:.0f} |")
    print(f"speed-up: {full['seconds'] / low['seconds']:.1f}x; max |difference| of the outputs {diff:.2e}")


if __name__ == "__main__":
    main()
