"""``scorelab analyze``: a trained network against analytical models (Gaussian-score paper, Sec. 4-5)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..denoiser import check_range
from ..external import VPDenoiser
from ..runs import Run
from . import options

DETERMINISTIC = ("heun", "euler", "ddim", "dpmpp-2m")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="compare a trained network with analytical models (Gaussian-score paper)")
    analyses = p.add_subparsers(dest="analysis", required=True)
    q = analyses.add_parser("gaussianity", help="unexplained variance of the score by isotropic, Gaussian, GMM and "
                            "delta-mixture models across noise levels (Figures 6, 9)")
    q.add_argument("--sigmas", help="comma-separated noise levels (default 0.01 ... 80, 16 levels; those inside a "
                   "wrapped model's own range)")
    q.add_argument("--n", type=int, default=256, help="query points per level and kind (default 256)")
    q.add_argument("--components", type=int, default=10, help="GMM components (default 10)")
    q.add_argument("--ranks", default="full", help="GMM component ranks, e.g. full,4,16 (default full)")
    q.set_defaults(run_command=gaussianity)
    q = analyses.add_parser("trajectories", help="distance between the network's sampling path and an analytical "
                            "model's from the same noise (Figures 7, 8, 15; a VP model's DDIM path in its own "
                            "coordinates, Figure 16)")
    q.add_argument("--reference", default="gaussian", help="the analytical model whose path is compared: gaussian "
                   "(closed form), gmmK, gmmK-rR, delta or isotropic, fitted to the training data (default "
                   "%(default)s)")
    q.add_argument("--sampler", choices=list(DETERMINISTIC), help="the path's sampler (default: ddim for a VP model, "
                   "compared in its coordinates x_t = alpha_t x with the closed form with data scale; heun otherwise)")
    q.add_argument("--n", type=int, default=64, help="number of paths (seeds seed .. seed+n-1; default 64)")
    q.add_argument("--seed", type=int, default=0, help="seed of the first path's noise (default %(default)s)")
    options.add_grid(q)
    q.set_defaults(run_command=trajectories)
    q = analyses.add_parser("field", help="the score on the plane through three training images (Figure 11)")
    q.add_argument("--anchors", required=True, help="three training-image indices, e.g. 0,1,2")
    q.add_argument("--sigma", type=float, required=True, help="the noise level at which the score is drawn, > 0 "
                   "(inside a wrapped model's own range)")
    q.add_argument("--grid", type=int, default=25, help="points per side of the plane (default 25)")
    q.add_argument("--models", default="gaussian,gmm10,delta", help="analytical models beside the network, "
                   "comma-separated: isotropic, gaussian, gmmK, gmmK-rR, delta (default %(default)s)")
    q.set_defaults(run_command=field)
    q = analyses.add_parser("dynamics", help="plot the unexplained variance recorded during training (--track)")
    q.add_argument("run", help="run directory")
    q.add_argument("--out", type=Path, help="output directory (default RUN/analysis/dynamics)")
    q.set_defaults(run_command=dynamics)
    for name in ("gaussianity", "trajectories", "field"):
        q = analyses.choices[name]
        options.add_model(q)
        options.add_device(q)
        options.add_out(q, f"RUN/analysis/{name}")


def _out(args: argparse.Namespace, model: Run, name: str) -> Path:
    out: Path = args.out or model.output_dir("analysis", name)
    out.mkdir(parents=True, exist_ok=True)
    return out


def gaussianity(args: argparse.Namespace) -> int:
    from ..analysis import DEFAULT_SIGMAS, plot_unexplained, standard_candidates, unexplained_variance

    model = options.open_model(args, options.device(args))
    data = model.training_data()  # codes for a latent run: the analyses work in the model's space
    try:
        ranks = [None if r == "full" else int(r) for r in args.ranks.split(",")]
    except ValueError:
        raise ValueError(f"--ranks takes 'full' or integers, comma-separated, got {args.ranks!r}") from None
    candidates = {k: v.to(model.device) for k, v in
                  standard_candidates(data, n_components=args.components, ranks=ranks).items()}
    lo, hi = model.sigma_range
    sigmas = options.floats(args.sigmas, "--sigmas") if args.sigmas else [s for s in DEFAULT_SIGMAS if lo <= s <= hi]
    check_range(model.denoiser, torch.tensor(sigmas))
    result = unexplained_variance(model.denoiser, candidates, data, sigmas, n=args.n, device=model.device)
    out = _out(args, model, "gaussianity")
    result.to_csv(out / "unexplained.csv")
    plot_unexplained(result, out / "unexplained_score.png", title=f"{args.run}: score")
    plot_unexplained(result, out / "unexplained_denoiser.png", measure="denoiser", title=f"{args.run}: denoiser")
    top = result.eigenvalues[:5].sqrt().tolist() if result.eigenvalues is not None else []
    print(f"fraction of the network's score left unexplained (mean of {args.n} points); sqrt top eigenvalues: "
          + ", ".join(f"{v:.3g}" for v in top))
    for query in result.score:
        print(f"\n{query} queries\n{'sigma':>8} " + " ".join(f"{n:>10}" for n in result.names))
        for i, sigma in enumerate(result.sigmas.tolist()):
            print(f"{sigma:8g} " + " ".join(f"{float(result.mean(n, query)[i]):10.3g}" for n in result.names))
    print(f"-> {out} (unexplained.csv, unexplained_score.png, unexplained_denoiser.png)")
    return 0


def trajectories(args: argparse.Namespace) -> int:
    import torch

    from .. import viz
    from ..analysis import plot_trajectory_deviation, trajectory_deviation
    from ..analysis.dynamics import tracked_candidates
    from ..checkpoint import save_npz
    from ..sample import noise_for_seeds

    model = options.open_model(args, options.device(args))
    reference = tracked_candidates(model.training_data(), [args.reference])[args.reference].to(model.device)
    sigmas = options.grid(args, model).to(model.device)
    noise, _ = noise_for_seeds(options.seed_range(args.seed, args.n), model.data_shape, device=model.device)
    vp = isinstance(model.denoiser, VPDenoiser)
    sampler = args.sampler or ("ddim" if vp else "heun")
    result = trajectory_deviation(model.denoiser, reference, noise * sigmas[0], sigmas, sampler=sampler, vp=vp)
    out = _out(args, model, f"trajectories-{args.reference}")
    save_npz(out / "trajectories.npz", sigmas=result.sigmas.numpy(), state_distance=result.state_distance.numpy(),
             denoised_distance=result.denoised_distance.numpy())
    print(f"network {sampler} path against {args.reference} from the same noise ({args.n} seeds"
          + (", VP coordinates" if vp else "") + "): mean distance per step")
    print(f"{'sigma':>9} {'state':>10} {'denoised':>10}")
    for i, sigma in enumerate(result.sigmas.tolist()):
        print(f"{sigma:9.4g} {float(result.state_distance[i].mean()):10.4g} "
              f"{float(result.denoised_distance[i].mean()):10.4g}")
    plot_trajectory_deviation(result, out / "deviation.png", args.reference)
    if len(model.data_shape) == 3:  # images: the final samples of both, seed by seed
        k = min(args.n, 12)
        viz.image_grid(torch.cat([result.states[-1][:k], result.reference_states[-1][:k]]),
                       out / "final_samples.png", nrow=k, title=f"network (top) and {args.reference} (bottom)")
    print(f"-> {out}")
    return 0


def field(args: argparse.Namespace) -> int:
    from ..analysis.dynamics import tracked_candidates
    from ..analysis.field import plot_score_field, score_field_plane

    model = options.open_model(args, options.device(args))
    data = model.training_data()
    try:
        idx = [int(i) for i in args.anchors.split(",")]
    except ValueError:
        raise ValueError(f"--anchors takes three training-image indices, e.g. 0,1,2; got {args.anchors!r}") from None
    if len(idx) != 3 or not all(0 <= i < len(data) for i in idx):
        raise ValueError(f"--anchors takes three indices in [0, {len(data) - 1}], got {args.anchors!r}")
    models = {"network": model.denoiser} | {k: v.to(model.device) for k, v in
                                            tracked_candidates(data, args.models.split(",")).items()}
    check_range(model.denoiser, torch.tensor([args.sigma]))
    plane = score_field_plane(models, data[idx].to(model.device), args.sigma, grid=args.grid)
    out = _out(args, model, "field")
    path = plot_score_field(plane, out / f"field_{args.anchors.replace(',', '-')}_sigma{args.sigma:g}.png")
    print(f"score on the plane through training images {args.anchors} at sigma {args.sigma:g} -> {path}")
    return 0


def dynamics(args: argparse.Namespace) -> int:
    from ..analysis.dynamics import plot_dynamics, read_dynamics

    out = args.out or Path(args.run) / "analysis" / "dynamics"
    out.mkdir(parents=True, exist_ok=True)
    for (query, name, sigma), (steps, values) in sorted(read_dynamics(args.run).items()):
        shown = sorted({0, len(steps) // 8, len(steps) // 4, len(steps) // 2, len(steps) - 1})
        print(f"{query:>5} {name:>10} sigma={sigma:<6g} " + " ".join(f"{steps[i]}:{values[i]:.3g}" for i in shown))
    print(f"-> {plot_dynamics(args.run, out / 'dynamics.png', title=str(args.run))}")
    return 0
