"""What the ``rayvit`` command's stages share on the command line: argument types, option
groups, and calling a stage's function with the options that are its parameters. Cheap to
import (argparse only): every stage module's ``arguments`` uses it."""

from __future__ import annotations

import argparse


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def names(text: str) -> tuple[str, ...]:
    names = tuple(v for v in text.replace(" ", "").split(",") if v)
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def size(text: str):
    v = ints(text.replace("x", ","))
    if len(v) not in (1, 2) or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected N or ROWS,COLS (positive pixels), got {text!r}")
    return v[0] if len(v) == 1 else v


def extent(text: str):
    v = floats(text)
    if len(v) != 4:
        raise argparse.ArgumentTypeError(f"expected minx,miny,maxx,maxy, got {text!r}")
    return v


def add_ray_options(p: argparse.ArgumentParser, s3: bool = True) -> None:
    g = p.add_argument_group("output on the terminal")
    g.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    g.add_argument("--verbose", action="store_true",
                   help="also show Ray's and GDAL's own logs")
    g = p.add_argument_group("Ray and storage")
    g.add_argument("--address", help="Ray cluster address, or auto for the `ray start` cluster on this "
                                     "machine (default: $RAY_ADDRESS, else start Ray embedded in this "
                                     "process)")
    if s3:
        g.add_argument("--s3-endpoint", help="S3 endpoint URL for s3:// inputs and outputs, e.g. MinIO, "
                                             "Ceph, SeaweedFS (default: $AWS_ENDPOINT_URL); credentials "
                                             "come from the standard AWS places")


FORMATS = ("gtiff", "zarr")    # the products' formats (rayvit.io.writer writes them)


def add_format_option(p: argparse.ArgumentParser) -> None:
    """``--format`` of an analysis stage's raster products (:data:`FORMATS`)."""
    p.add_argument("--format", choices=FORMATS, default="gtiff",
                   help="gtiff: GeoTIFF products (one COG each, or blocks + tile index; default); zarr: a Zarr "
                        "v3 store per product (NAME.zarr), one shard per block, for xarray/dask")


def analysis_common(p: argparse.ArgumentParser, vectors: str = "", standardize: bool = True,
                    vectors_dest: str = "vectors") -> None:
    """The options of a stage over one raster (``vectors``: "", "optional" or "required")."""
    p.add_argument("input", help="any multi-band raster, VRT or tile index "
                                 "(e.g. out/features.tif or features.gti.gpkg)")
    if vectors:
        p.add_argument(vectors_dest, nargs="?" if vectors == "optional" else None,
                       help="points/polygons: GeoPackage, Shapefile, GeoJSON, GeoParquet, zipped shapefile"
                            " (reprojected to the raster's CRS)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--bands", type=ints, help="1-based bands to use (default: all)")
    if standardize:
        p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                       help="scale each band to unit variance first (default: yes; statistics from all "
                            "valid pixels, saved with the model)")
    if vectors:
        g = p.add_argument_group("vectors")
        g.add_argument("--polygons", choices=("all", "sample"), default="all",
                       help="all: every pixel whose centre a polygon contains (default); sample: an "
                            "area-proportional random sample of --samples pixels, >= 1 per polygon (IAMAP)")
        g.add_argument("--samples", type=int, default=1000, help="with --polygons sample: pixels in all")
        g.add_argument("--vector-crs", help="CRS of the vector file when it has none, or overrides a wrong one")
    if vectors != "required":
        p.add_argument("--model", help="re-apply a model.joblib written by an earlier run (same band count)")
    p.add_argument("--block-size", type=int, default=512,
                   help="pixels per processing block (default 512)")
    add_format_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace an output directory of another run")
    p.add_argument("--dry-run", action="store_true", help="check the input, print the work and the outputs; "
                                                          "writes nothing")
    add_ray_options(p)


def estimator_options(p: argparse.ArgumentParser, stage: str, default: str, exact: str) -> None:
    g = p.add_argument_group("estimator")
    g.add_argument("--method", default=default,
                   help=f"{default} (default: {exact}) or any other {stage} estimator by class name, "
                        "fitted on --sample pixels (`rayvit methods` lists them)")
    g.add_argument("--params", help="estimator parameters as a JSON object, checked against its signature, "
                                    "e.g. '{\"n_neighbors\": 30}'")
    g.add_argument("--sample", dest="sample_size", type=int, default=100_000,
                   help="valid pixels drawn uniformly (seeded) across the raster to fit on (default: 100000)")
    g.add_argument("--seed", type=int, default=0, help="seed of the sample and the estimator (default: 0)")


def call(fn, args) -> int:
    """Call a stage's function with the parsed options that match its keyword parameters;
    print its plan (a dry run) or its summary."""
    import inspect
    names = inspect.signature(fn).parameters
    result = fn(progress=not args.quiet, **{k: v for k, v in vars(args).items() if k in names})
    if getattr(args, "dry_run", False):
        print(result.extra["plan"] if hasattr(result, "extra") else result.sidecar["plan"])
        print("dry run: nothing written.")
    else:
        print(result.summary())
    return 0


