"""``rayvit bench``: the benchmarks' command, plugged into ``rayvit`` through an entry point."""

from __future__ import annotations


def command(sub) -> None:
    """Add ``rayvit bench`` to the ``rayvit`` command (an entry point of group
    ``rayvit.commands``: the product does not import its benchmark)."""
    from ..options import add_ray_options

    p = sub.add_parser("bench", help="measure encode throughput against the bare model forward, or analysis "
                                     "time and memory against pixel count",
                       description="encode (default): generates a raster with at least --tiles tiles, then "
                                   "measures in one run: bare model forward tiles/s on random tensors, "
                                   "end-to-end `encode` tiles/s and their ratio, and peak memory at 1x and 4x "
                                   "area. pipeline: the pipeline's own CPU-ms per tile, by stage, around "
                                   "null encoders. analysis: generates float16 feature rasters of --pixels x "
                                   "--bands at 1/4 and full size and times PCA (3 components) and KMeans "
                                   "(--k, --kmeans-iter Lloyd steps) on each, and scikit-learn on an "
                                   "in-memory subset, with peak memory.")
    p.add_argument("what", nargs="?", choices=("encode", "pipeline", "analysis", "storage", "nodes", "embeddings",
                                               "scale"),
                   default="encode",
                   help="encode (default); pipeline: CPU-ms per tile of each stage around a null encoder "
                        "(D = 384, 768; float16, float32); analysis; storage: encode from --s3-url vs local "
                        "disk; nodes: encode on the cluster at --address vs embedded single node; "
                        "embeddings: table rows/s, search and change pixels/s on generated --pixels x "
                        "--bands float16 rasters vs a numpy loop, and the search scorers' ROC AUC; scale: the "
                        "same area as 1 and --files input files, whole `rayvit encode` commands, a dry run "
                        "over a sources index of --index-rows files, and opening + reading block products "
                        "of --product-blocks blocks x 768 bands")
    p.add_argument("--s3-url", help="storage, scale: where to upload the rasters (s3://bucket/prefix)")
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--tiles", type=int, default=1024, help="tiles at 1x area (default: 1024)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bands", type=int, help="raster bands (default: encode 3, analysis 384)")
    p.add_argument("--batch-size", type=int, help="encode: tiles per model call (default: encode's, 64 GPU, 16 CPU)")
    p.add_argument("--pixels", type=int, default=10_000_000, help="analysis: pixels at full size")
    p.add_argument("--k", type=int, default=16, help="analysis: KMeans clusters")
    p.add_argument("--kmeans-iter", type=int, default=10, help="analysis: Lloyd iterations (fixed, tol 0)")
    p.add_argument("--sklearn-pixels", type=int, default=500_000, help="analysis: in-memory subset for sklearn")
    p.add_argument("--scale-area", type=int, default=4, help="second run's area multiple (0: skip)")
    p.add_argument("--workdir", help="where to generate rasters (default: a temp dir, removed)")
    p.add_argument("--files", default="1024,4096", help="scale: input file counts besides 1 (square numbers)")
    p.add_argument("--side", type=int, default=8192, help="scale: the area's side in px (default: 8192)")
    p.add_argument("--index-rows", type=int, default=100_000, help="scale: files in the dry run's index")
    p.add_argument("--s3-files", default="1,1024",
                   help="scale, with --s3-url: input file counts read from the object store (default: 1,1024)")
    p.add_argument("--describe-files", type=int, default=10_000,
                   help="scale, with --s3-url: small objects whose headers are read concurrently (default: 10000)")
    p.add_argument("--product-blocks", default="25,10000",
                   help="scale: block counts of the products opened and read (square numbers; default: 25,10000)")
    add_ray_options(p)
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    from ..errors import InputError
    from . import bench_analysis, bench_encode, bench_pipeline

    if args.what == "pipeline":
        bench_pipeline(work=args.workdir, address=args.address)
    elif args.what in ("storage", "nodes"):
        from . import bench_compare
        bench_compare(args.what, args.tiles, args.size, args.model, args.s3_url, args.address, args.workdir)
    elif args.what == "scale":
        from . import bench_scale
        def counts(option: str, text: str, example: str) -> list[int]:
            try:
                return sorted({int(n) for n in text.split(",") if n.strip()})
            except ValueError:
                raise InputError(f"{option} {text!r}: give counts separated by commas, e.g. {example}.") from None

        files = sorted({1, *counts("--files", args.files, "1024,4096")})
        bench_scale(files, args.side, args.index_rows, args.workdir,
                    counts("--product-blocks", args.product_blocks, "25,10000"), args.s3_url,
                    counts("--s3-files", args.s3_files, "1,1024"), args.describe_files)
    elif args.what == "embeddings":
        from . import bench_embeddings
        bench_embeddings(args.pixels, args.bands or 384, args.workdir, args.address)
    elif args.what == "analysis":
        bench_analysis(args.pixels, args.bands or 384, (0.25, 1.0), args.k, args.kmeans_iter, args.sklearn_pixels,
                       args.workdir, args.address)
    else:
        bench_encode(args.model, args.tiles, args.size, args.bands or 3, args.batch_size, args.scale_area,
                     args.workdir, args.address)
    return 0
