"""``scorelab eval``: FID or KID of a model's samples against a dataset (Inception-v3 features through
torch-fidelity)."""

from __future__ import annotations

import argparse
import json

from . import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="FID or KID of a run's samples against a dataset (Inception-v3 features "
                       "through torch-fidelity; pip install 'scorelab[fid]')")
    options.add_model(p)
    p.add_argument("--metric", default="fid", choices=["fid", "kid"], help="fid (Frechet Inception distance) or kid "
                   "(kernel Inception distance), on Inception-v3's 2048 pool features (default %(default)s)")
    p.add_argument("--ref", required=True, help="reference images, as --data of train (e.g. cifar-10-batches-py); "
                   "their statistics are cached in $SCORELAB_CACHE or ~/.cache/scorelab")
    p.add_argument("--ref-n", type=int, help="use the first N reference images (default all)")
    p.add_argument("--n", "--num-samples", dest="n", type=int, default=50_000,
                   help="number of samples (default 50000, the usual protocol)")
    p.add_argument("--seeds", metavar="A-B", help="inclusive seed range holding --n seeds (default 0 .. n-1)")
    p.add_argument("--inception-weights", metavar="FILE", help="local torch-fidelity Inception-v3 weights "
                   "(weights-inception-2015-12-05-6726825d.pth; default $SCORELAB_INCEPTION_WEIGHTS); never "
                   "downloaded")
    options.add_sampler(p, choices=["heun", "euler"])
    options.add_grid(p)
    p.add_argument("--batch-size", type=int, default=500, help="images per batch, for sampling and for the Inception "
                   "features (default %(default)s)")
    options.add_device(p)
    p.add_argument("--out", help="result JSON (default RUN/eval/METRIC-SAMPLER-STEPS-seedsA-B.json)")
    p.set_defaults(run_command=run)


def seed_span(text: str | None, n: int) -> list[int]:
    """``--seeds A-B`` (inclusive) as a list, which must hold exactly ``n`` seeds; None means 0 .. n-1."""
    if n < 2:
        raise ValueError(f"--n must be at least 2, got {n}")
    if text is None:
        return options.seed_range(0, n)
    first, sep, last = text.partition("-")
    if not (sep and first.strip().isdigit() and last.strip().isdigit()):
        raise ValueError(f"--seeds takes an inclusive range A-B of non-negative integers (e.g. 0-49999), got {text!r}")
    a, b = int(first), int(last)
    if b < a:
        raise ValueError(f"--seeds {text}: the range is empty (B < A)")
    if b - a + 1 != n:
        raise ValueError(f"--seeds {text} holds {b - a + 1} seeds but --n is {n}")
    return options.seed_range(a, n)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..checkpoint import atomic_write_text
    from ..data import load_dataset
    from ..distributed import is_main
    from ..metrics import fid
    from ..sample import generate_sharded

    seeds = seed_span(args.seeds, args.n)
    weights = fid.resolve_inception_weights(args.inception_weights)  # before any slow work
    model = options.open_model(args, options.device(args))
    extractor = fid.inception_extractor(weights, model.device)
    features, _ = generate_sharded(  # under torchrun: seed blocks per rank; only features are kept
        model.denoiser, model.data_shape, seeds, sampler=args.sampler, sigmas=options.grid(args, model),
        batch_size=args.batch_size, device=model.device, progress=not args.no_progress,
        transform=lambda x: extractor(fid.to_uint8(model.decode(x))))
    if not is_main():  # rank 0 measures and writes
        return 0
    reference = load_dataset(args.ref)
    n_ref = len(reference) if args.ref_n is None else min(args.ref_n, len(reference))
    key = fid.reference_key(args.ref, n_ref, fid.INCEPTION_NAME + ":2048", weights)
    stats = fid.cached_reference(key, lambda: fid.image_features(reference, extractor, args.batch_size, n_ref))
    value = fid.metric_from_features(features, stats, args.metric)
    seed_text = f"{seeds[0]}-{seeds[-1]}"
    result = {"metric": args.metric, "value": value, "n": len(seeds), "seeds": seed_text, "reference": args.ref,
              "reference_n": n_ref, "weights": args.weights, "sampler": args.sampler, "steps": args.steps}
    out = Path(args.out) if args.out else model.output_dir(
        "eval", f"{args.metric}-{args.sampler}-{args.steps}-seeds{seed_text}.json")
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"{args.metric.upper()} {value:.6g} ({len(seeds)} samples, seeds {seed_text}, {args.sampler} "
          f"{args.steps} steps; reference {args.ref}, {n_ref} images) -> {out}")
    return 0
