"""The ``rayvit`` command: parse, call the Python API, print a summary. Nothing else."""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from typing import Sequence

from . import __version__
from .errors import InputError, RayvitError


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _bands(text: str):
    """``--bands``: a sensor name (``sentinel-2``), or comma-separated indices and/or names."""
    text = text.replace(" ", "")
    if not text or "," not in text and not text.isdigit() and text.lower() in _sensors():
        return text.lower()
    return tuple(int(v) if v.isdigit() else v for v in text.split(","))


def _sensors():
    from .encode.presets import SENSORS
    return SENSORS


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    names = tuple(v for v in text.replace(" ", "").split(",") if v)
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _size(text: str):
    v = _ints(text.replace("x", ","))
    if len(v) not in (1, 2) or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected N or ROWS,COLS (positive pixels), got {text!r}")
    return v[0] if len(v) == 1 else v


def _extent(text: str):
    v = _floats(text)
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


def add_encode(sub) -> None:
    from .encode.merge import MERGERS
    from .encode.plan import DEFAULT_MODEL, NORMALIZE_MODES
    from .io.writer import DTYPES

    p = sub.add_parser(
        "encode", help="raster(s) -> georeferenced ViT feature raster",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Encode one raster or a mosaic of many into a feature raster on the model's patch grid.
            Each output pixel covers one model patch (e.g. 16x16 input pixels) and holds the
            patch's feature vector (one band per feature).

            examples:
              rayvit encode scene.tif -o out/
              rayvit encode 'tiles/*.tif' s3://bucket/extra.tif -o out/ \\
                  --model vit_small_patch14_reg4_dinov2.lvd142m --bands 4,3,2 --size 448 --stride 224
              rayvit encode --stac s3://bucket/catalog.json --assets red,green,blue,nir -o out/ \\
                  --datetime 2025-06-01/2025-08-31 --query 'eo:cloud_cover<20' --composite least-cloudy
              rayvit encode --stac https://stac.example/v1 --collection sentinel-2-l2a \\
                  --bbox 5.0,43.5,5.2,43.6 --assets B02,B03,B04,B08 --by-date -o dates/
            """))
    p.add_argument("inputs", nargs="*", help="raster paths, globs or URLs (s3://, gs://, az:// or abfs://, "
                                             "http(s)://); several form one mosaic (first listed wins on "
                                             "overlaps). Or none, with --stac")
    p.add_argument("-o", "--output", required=True, help="output directory")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL, help="a remote-sensing preset (`rayvit models` lists "
                   "them), any timm model name, or hf-hub:ORG/NAME "
                   f"(default: {DEFAULT_MODEL}); rayvit_patchmean_pN is a deterministic patch-mean baseline")
    g.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="load pretrained weights from the hub (default: yes; --no-pretrained: random)")
    g.add_argument("--weights", help="local weights file (.safetensors, or .pth loaded without "
                                     "executing pickled code); implies pretrained. For a preset, its "
                                     "published checkpoint layout is converted")
    g.add_argument("--wavelengths", type=_floats,
                   help="centre wavelength of each selected band, micrometres (wavelength-conditioned "
                        "presets such as dofa-vit-b16; default: from the band names)")
    g.add_argument("--band-fill", choices=("zero", "mean"),
                   help="let a preset run without some of its bands: feed them as 0 reflectance (zero) "
                        "or as the band's mean (mean); the sidecar lists them. Default: missing bands are an error")
    g.add_argument("--layer", type=int, default=-1, help="feature layer/block index (default: -1 = last)")
    g.add_argument("--device", default="auto", help="auto (GPU when visible), cpu, cuda, cuda:N")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="inference precision (default: bf16 on GPU, fp32 on CPU)")
    g = p.add_argument_group("inputs")
    g.add_argument("--bands", type=_bands,
                   help="bands to read, in order: 1-based indices and/or names (the raster's band "
                        "descriptions, e.g. B02,B03,B04,B08), or a sensor (sentinel-2, sentinel-2-l2a, "
                        "landsat-oli, landsat-oli-sr, naip, rgb) naming all of them. Default: all, or "
                        "a preset's bands found by name")
    g.add_argument("--extent", type=_extent, help="minx,miny,maxx,maxy to encode (default: all inputs)")
    g.add_argument("--extent-crs", help="CRS of --extent (default: the target CRS)")
    g.add_argument("--crs", help="target CRS (default: the first input's); others are warped onto it")
    g.add_argument("--skip-bad-inputs", action="store_true",
                   help="leave out input files that cannot be opened (missing, unreachable, corrupt) instead "
                        "of failing; they are listed in features.json and their area stays nodata")
    g.add_argument("--res", type=float, help="target pixel size in CRS units (default: the first input's; "
                                             "with --stac the finest asset's)")
    g = p.add_argument_group("STAC input (instead of input files)")
    g.add_argument("--stac", metavar="SOURCE",
                   help="a STAC ItemCollection, Item or static Catalog/Collection (JSON, local or in object "
                        "storage), a stac-geoparquet file, or a STAC API URL (searched with the filters below)")
    g.add_argument("--assets", type=_names, help="assets to read as bands, in order: asset keys or band "
                   "(common) names, e.g. red,green,blue,nir or B02,B03,B04,B08")
    g.add_argument("--bbox", type=_extent, help="lon/lat minx,miny,maxx,maxy the items must intersect")
    g.add_argument("--datetime", help="a date, a date-time, or START/END (.. for open), RFC 3339")
    g.add_argument("--collection", type=_names, help="collection id(s), comma-separated")
    g.add_argument("--query", action="append", default=[], metavar="PROP<OP>VALUE",
                   help="item property filter, e.g. 'eo:cloud_cover<20' (repeatable)")
    g.add_argument("--composite", choices=("first", "last", "least-cloudy"),
                   help="several items over a pixel: the oldest (first), newest (last) or least cloudy "
                        "(eo:cloud_cover) valid one wins (default: least-cloudy)")
    g.add_argument("--by-date", action="store_true",
                   help="one product per date in OUTPUT/YYYY-MM-DD/, all on one grid (for rayvit change)")
    g.add_argument("--normalize", choices=NORMALIZE_MODES,
                   help="preset: the preset's input scaling and mean/std (default for presets that "
                        "have them); stats: per-band mean/std from a seeded sample of windows (default "
                        "otherwise); model: the model's mean/std after dividing by --scale; none")
    g.add_argument("--mean", type=_floats, help="per-band means (overrides --normalize; with --std)")
    g.add_argument("--std", type=_floats, help="per-band standard deviations (with --mean)")
    g.add_argument("--scale", type=float, help="with --normalize model or preset: pixel value of 1.0 "
                                               "(default: the preset's, e.g. 10000 for Sentinel-2; "
                                               "dtype max for integers, 1 for floats)")
    g = p.add_argument_group("tiling")
    g.add_argument("--size", type=_size, default=224, help="tile size in input pixels, N or ROWS,COLS "
                                                           "(default: 224)")
    g.add_argument("--stride", type=_size, help="tile stride in input pixels (default: = size, no overlap)")
    g.add_argument("--resize", choices=("none", "model"), default="none",
                   help="none: encode tiles at native size (default); model: resize each tile to the "
                        "model's input size (IAMAP)")
    g.add_argument("--merge", choices=tuple(MERGERS), help="how overlapping tiles combine (default: "
                   "center when tiles overlap: each keeps its central stride x stride part)")
    g = p.add_argument_group("output")
    g.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="feature type (default: float32). float16 halves the size; int8/uint8 quarter it, "
                        "with a scale and offset per band (GDAL metadata) that every reader applies: "
                        "the error is at most half a step, 1/254 of the band's range")
    g.add_argument("--compress", default="zstd", help="COG compression (default: zstd)")
    g.add_argument("--blocks", action="store_true",
                   help="always write GeoTIFF blocks + their tile index features.gti.gpkg "
                        "(default: above 64 MiB uncompressed only)")
    g.add_argument("--block-size", type=int,
                   help="output block size in feature pixels: the unit of work (one read, one device "
                        "call, one written file). Default: the multiple of the stride nearest 128, so "
                        "that without overlap no tile straddles two blocks")
    g.add_argument("--overwrite", action="store_true", help="replace an output directory of another run")
    g.add_argument("--dry-run", action="store_true", help="print the plan and exit; writes nothing")
    g = p.add_argument_group("performance")
    g.add_argument("--actors", type=int,
                   help="device actors (default: one per GPU of the cluster; on CPU total CPUs / --threads; "
                        "never more than there are blocks)")
    g.add_argument("--threads", type=int,
                   help="torch threads per CPU actor (default: largest node CPUs / 4, between 1 and 4)")
    g.add_argument("--batch-size", type=int, help="tiles per model call (default: 64 GPU, 16 CPU)")
    add_ray_options(p)
    p.set_defaults(func=run_encode)


def run_encode(args) -> int:
    from .encode.pipeline import EncodeOptions, encode

    fields = EncodeOptions.__dataclass_fields__
    opts = {k: v for k, v in vars(args).items() if k in fields}
    opts["progress"] = not args.quiet
    if not args.inputs and not args.stac:
        raise InputError("give input rasters, or a STAC source with --stac.")
    if args.by_date:
        from .encode.pipeline import encode_dates

        for date, result in encode_dates(args.output, EncodeOptions(**opts)).items():
            print(f"{date}:")
            print(result.plan.describe() + "\n" + result.estimate if args.dry_run else result.summary())
        if args.dry_run:
            print("dry run: nothing written.")
        return 0
    result = encode(args.inputs, args.output, EncodeOptions(**opts))
    if args.dry_run:
        print(result.plan.describe())
        print(result.estimate)
        print("dry run: nothing written.")
    else:
        print(result.summary())
    return 0


def _analysis_common(p: argparse.ArgumentParser, block_flag: str = "--block-size", vectors: str = "",
                     standardize: bool = True) -> None:
    p.add_argument("input", help="any multi-band raster, VRT or tile index "
                                 "(e.g. out/features.tif or features.gti.gpkg)")
    if vectors:
        p.add_argument("vectors", nargs="?" if vectors == "optional" else None,
                       help="points/polygons: GeoPackage, Shapefile, GeoJSON, GeoParquet, zipped shapefile"
                            " (reprojected to the raster's CRS)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--bands", type=_ints, help="1-based bands to use (default: all)")
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
    p.add_argument(block_flag, dest="block_size", type=int, default=512,
                   help="pixels per processing block (default 512)")
    p.add_argument("--overwrite", action="store_true", help="replace an output directory of another run")
    p.add_argument("--dry-run", action="store_true", help="check the input, print the work and the outputs; "
                                                          "writes nothing")
    add_ray_options(p)


def _estimator_options(p: argparse.ArgumentParser, stage: str, default: str, exact: str) -> None:
    g = p.add_argument_group("estimator")
    g.add_argument("--method", default=default,
                   help=f"{default} (default: {exact}) or any other {stage} estimator by class name, "
                        "fitted on --sample pixels (`rayvit methods` lists them)")
    g.add_argument("--params", help="estimator parameters as a JSON object, checked against its signature, "
                                    "e.g. '{\"n_neighbors\": 30}'")
    g.add_argument("--sample", dest="sample_size", type=int, default=100_000,
                   help="valid pixels drawn uniformly (seeded) across the raster to fit on (default: 100000)")
    g.add_argument("--seed", type=int, default=0, help="seed of the sample and the estimator (default: 0)")


def add_reduce(sub) -> None:
    p = sub.add_parser("reduce", help="raster -> fewer bands (exact PCA, UMAP, any sklearn decomposition)",
                       description="Reduce every pixel of a multi-band raster to --n-components bands. "
                                   "PCA is exact: every valid pixel enters the covariance, summed over "
                                   "blocks in Ray tasks. Other methods (sklearn.decomposition, "
                                   "sklearn.manifold, UMAP) are fitted on a seeded sample and applied to "
                                   "every block with transform, or by the nearest sampled pixel when they "
                                   "have none (TSNE, MDS). Writes reduced.tif, model.joblib, metrics.json "
                                   "and quicklook.png.")
    _analysis_common(p)
    _estimator_options(p, "reduce", "PCA", "exact PCA over all valid pixels")
    p.add_argument("--n-components", type=int, help="output bands (default: 3); sets the estimator's "
                                                    "n_components")
    p.add_argument("--dtype", choices=("float32", "float16", "int8", "uint8"), default="float32",
                   help="type of reduced.tif (default: float32); int8/uint8 carry a scale and offset per band")
    p.set_defaults(func=run_reduce)


def _run_analysis(fn, args) -> int:
    """Call an analysis stage with the parsed options that match its keyword parameters."""
    import inspect
    names = inspect.signature(fn).parameters
    result = fn(progress=not args.quiet, **{k: v for k, v in vars(args).items() if k in names})
    if getattr(args, "dry_run", False):
        print(result.extra["plan"] if hasattr(result, "extra") else result.sidecar["plan"])
        print("dry run: nothing written.")
    else:
        print(result.summary())
    return 0


def run_reduce(args) -> int:
    from .analysis.reduce import reduce
    return _run_analysis(reduce, args)


def add_cluster(sub) -> None:
    p = sub.add_parser("cluster", help="raster -> cluster map (distributed KMeans, HDBSCAN, any sklearn.cluster)",
                       description="Cluster every pixel of a multi-band raster. KMeans: k-means++ on a "
                                   "seeded uniform sample, then Lloyd iterations over all valid pixels "
                                   "(summed over blocks in Ray tasks; --params max_iter, tol, init). Other "
                                   "sklearn.cluster classes are fitted on the sample and applied with "
                                   "predict, or by the nearest sampled pixel's label (HDBSCAN, DBSCAN, ...). "
                                   "Writes clusters.tif (smallest unsigned type; nodata = its maximum, "
                                   "noise = maximum - 1; GDAL colour table), model.joblib, metrics.json "
                                   "and quicklook.png.")
    _analysis_common(p)
    _estimator_options(p, "cluster", "KMeans", "distributed KMeans over all valid pixels")
    p.add_argument("--n-clusters", type=int, help="sets the estimator's n_clusters (KMeans default: 8)")
    p.set_defaults(func=run_cluster)


def run_cluster(args) -> int:
    from .analysis.cluster import cluster
    return _run_analysis(cluster, args)


def add_similarity(sub) -> None:
    p = sub.add_parser("similarity", help="raster + reference points/polygons -> cosine similarity map",
                       description="Cosine similarity of every pixel with the mean vector of the pixels "
                                   "the reference geometries select (IAMAP), or with --by COLUMN one band "
                                   "per class, named after it. Computed block by block in Ray tasks. Writes "
                                   "similarity.tif (float32 in [-1, 1], nodata NaN), samples.gpkg (the "
                                   "reference pixels with their values), metrics.json, quicklook.png.",
                       epilog="example: rayvit similarity out/features.gti.gpkg refs.gpkg -o sim/ --by Type")
    _analysis_common(p, vectors="required", standardize=False)
    p.add_argument("--by", help="one band per value of this column (default: one band, all references)")
    p.add_argument("--reduce", choices=("mean", "max"), default="mean",
                   help="mean: cosine with the mean reference vector (default, IAMAP); max: the largest "
                        "cosine with any single reference")
    p.add_argument("--seed", type=int, default=0, help="seed of --polygons sample")
    p.set_defaults(func=run_similarity)


def run_similarity(args) -> int:
    from .analysis.similarity import similarity
    return _run_analysis(similarity, args)


def add_classify(sub) -> None:
    p = sub.add_parser("classify", help="raster + labelled points/polygons -> class or value map",
                       description="Train any scikit-learn classifier or regressor on the pixels labelled "
                                   "geometries select, cross-validate it, refit it on all labelled pixels "
                                   "and map every pixel block by block in Ray tasks. Writes prediction.tif "
                                   "(class codes in the smallest unsigned type with a colour table and "
                                   "category names, nodata = its maximum; regression: float32), optional "
                                   "probability.tif, metrics.json (per fold and pooled), model.joblib, "
                                   "samples.gpkg (pixels used, labels, folds, values) and quicklook.png.",
                       epilog="example: rayvit classify out/features.gti.gpkg train.gpkg -o cls/ --label Type "
                              "--cv spatial --block-size 2000")
    _analysis_common(p, block_flag="--window-size", vectors="optional", standardize=False)
    p.add_argument("--label", help="column holding the class (text or numbers) or the regression target")
    g = p.add_argument_group("estimator")
    g.add_argument("--method", default="RandomForestClassifier",
                   help="any scikit-learn classifier or regressor by class name (default: "
                        "RandomForestClassifier; e.g. HistGradientBoostingClassifier, RandomForestRegressor)")
    g.add_argument("--params", help="estimator parameters as a JSON object, checked against its signature")
    g.add_argument("--seed", type=int, default=0, help="seed of folds, --polygons sample and the estimator")
    g.add_argument("--proba", action="store_true", help="also write probability.tif, one band per class")
    g = p.add_argument_group("validation")
    g.add_argument("--cv", choices=("kfold", "group", "spatial", "none"), default="kfold",
                   help="kfold: (stratified) k-fold over pixels (default); group: by --group-column; "
                        "spatial: by --block-size square blocks, so neighbouring pixels never sit in both "
                        "training and test; none")
    g.add_argument("--folds", dest="folds_n", type=int, default=5, help="number of folds (default 5)")
    g.add_argument("--group-column", help="with --cv group: the column whose values form the groups")
    g.add_argument("--block-size", dest="cv_block_size", type=float,
                   help="with --cv spatial: block side in CRS units (default: 32 pixels)")
    g.add_argument("--test", help="a separate labelled vector file to evaluate on (instead of --cv)")
    p.set_defaults(func=run_classify)


def run_classify(args) -> int:
    from .analysis.classify import classify
    return _run_analysis(classify, args)


def add_search(sub) -> None:
    p = sub.add_parser("search", help="feature raster + a few examples -> score map and top-k hits",
                       description="Few-shot search: score every pixel against positive (and negative) "
                                   "examples, block by block in Ray tasks. Examples are points/polygons "
                                   "(the pixels they select) or rows of a `rayvit table` GeoParquet (their "
                                   "embeddings, from any date or area). --scorer cosine (default): mean "
                                   "cosine to the positives minus mean cosine to the negatives; linear: "
                                   "logistic regression on the examples (needs negatives), its log-odds. "
                                   "Writes score.tif, hits.parquet (the exact top-k pixels over the whole "
                                   "mosaic: rank, score, row, col, footprint), samples.gpkg, metrics.json, "
                                   "quicklook.png.",
                       epilog="example: rayvit search out/features.gti.gpkg pos.gpkg -o hits/ --negatives neg.gpkg "
                              "--top-k 200 --exclude-radius 3")
    _analysis_common(p, vectors="required", standardize=False)
    p.add_argument("--negatives", help="negative examples (points/polygons or table rows)")
    p.add_argument("--label", help="a column of the examples file: 1/true marks positives, 0/false negatives")
    p.add_argument("--scorer", choices=("cosine", "linear"), default="cosine",
                   help="cosine: mean cosine to positives - mean cosine to negatives (default); linear: "
                        "logistic regression on the examples")
    p.add_argument("--top-k", dest="top_k_hits", type=int, default=100, help="hits to list (default 100)")
    p.add_argument("--exclude-radius", type=int, default=0,
                   help="no two hits closer than this many pixels (default 0: any pixel may be a hit)")
    p.add_argument("--seed", type=int, default=0, help="seed of --polygons sample and the linear scorer")
    p.set_defaults(func=run_search)


def run_search(args) -> int:
    from .analysis.search import search
    args.positives = args.vectors
    code = _run_analysis(search, args)
    return code


def add_change(sub) -> None:
    p = sub.add_parser("change", help="two feature rasters (two dates) -> change map and hot spots",
                       description="Per-pixel cosine distance (1 - cos) between the embeddings of two feature "
                                   "rasters, block by block in Ray tasks; B is read onto A's grid (nearest "
                                   "neighbour), cropped to their common extent. Writes change.tif (band 1: "
                                   "distance; with --zscore band 2: its z-score over the scene), "
                                   "hotspots.parquet (4-connected areas with distance >= --threshold, "
                                   "default mean + 3 std: area, mean and max change), metrics.json, "
                                   "quicklook.png. Rasters encoded with another model, layer or "
                                   "normalisation (their sidecars) are refused unless --force.",
                       epilog="example: rayvit change y2023/features.gti.gpkg y2025/features.gti.gpkg -o chg/ --zscore")
    p.add_argument("a", help="feature raster of the first date")
    p.add_argument("b", help="feature raster of the second date (same bands)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--zscore", action="store_true", help="add band 2: (distance - mean) / std over the scene")
    p.add_argument("--threshold", type=float, help="hot-spot distance threshold (default: mean + 3 std)")
    p.add_argument("--force", action="store_true", help="compare rasters whose sidecars name another model, "
                                                        "layer or normalisation")
    p.add_argument("--bands", type=_ints, help="1-based bands to use in both (default: all)")
    p.add_argument("--block-size", type=int, default=512, help="pixels per processing block (default 512)")
    p.add_argument("--overwrite", action="store_true", help="replace an output directory of another run")
    p.add_argument("--dry-run", action="store_true", help="check the inputs, print the work; writes nothing")
    add_ray_options(p)
    p.set_defaults(func=run_change)


def run_change(args) -> int:
    from .analysis.change import change
    return _run_analysis(change, args)


def add_table(sub) -> None:
    p = sub.add_parser("table", help="feature raster -> GeoParquet embedding table (a row per cell or pixel)",
                       description="Write a feature raster as a GeoParquet 1.1 table, one part file per Ray "
                                   "task: one row per --tile x --tile cell of feature pixels with the mean "
                                   "embedding of its valid pixels (--pool tile), or one row per valid "
                                   "feature pixel (--pool none). Columns: row, col, valid_fraction, "
                                   "embedding (fixed-size list), bbox (covering) and geometry (footprint). "
                                   "File metadata: geo, emb (STAC embeddings extension fields) and rayvit "
                                   "(the source's sidecar: model, weights checksum, layer, normalisation, "
                                   "grid). Read with geopandas.read_parquet(DIR), pyarrow or DuckDB "
                                   "read_parquet('DIR/*.parquet').",
                       epilog="example: rayvit table out/features.gti.gpkg -o emb/ --pool tile --tile 16")
    p.add_argument("input", help="feature raster (features.tif/.gti.gpkg, or any raster; "
                                 "int8 with scales is dequantised)")
    p.add_argument("-o", "--output", required=True, help="output directory (local or s3://...)")
    p.add_argument("--pool", choices=("tile", "none"), default="tile",
                   help="tile: a row per cell, mean over its valid pixels (default); none: a row per pixel")
    p.add_argument("--tile", type=int, default=16, help="with --pool tile: cell side in feature pixels (default 16)")
    p.add_argument("--dtype", choices=("float32", "float16", "int8"), default="float32",
                   help="embedding type (default float32); int8: codes with a scale/offset per dimension "
                        "in the emb:quantization metadata")
    p.add_argument("--bands", type=_ints, help="1-based bands to use (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace a table already in the output directory")
    p.add_argument("--dry-run", action="store_true", help="print the rows and part files it would write; writes nothing")
    add_ray_options(p)
    p.set_defaults(func=run_table)


def run_table(args) -> int:
    from .analysis.table import table
    return _run_analysis(table, args)


def add_run(sub) -> None:
    p = sub.add_parser("run", help="run a multi-step job spec (YAML): encode -> reduce/cluster -> ...",
                       description="Run the steps of a job spec in order, each reading earlier steps' "
                                   "outputs by reference (${ID.output}, ${ID.model}, ${ID.dir}). The whole "
                                   "spec is validated first; errors name the step and field. Submit to a "
                                   "cluster with: ray job submit --working-dir . -- rayvit run jobs/X.yaml",
                       epilog="examples: jobs/quickstart.yaml, jobs/s3-mosaic.yaml, jobs/unsupervised-map.yaml")
    p.add_argument("spec", help="job spec YAML file")
    p.add_argument("--dry-run", action="store_true", help="validate and print the steps; run nothing")
    add_ray_options(p)
    p.set_defaults(func=run_job)


def run_job(args) -> int:
    from .job import run
    run(args.spec, dry_run=args.dry_run, address=args.address, progress=not args.quiet)
    return 0


def add_methods(sub) -> None:
    p = sub.add_parser("methods", help="list the estimators reduce/cluster accept for --method",
                       description="List the estimator names each analysis stage accepts for --method.")
    p.add_argument("stage", nargs="?", choices=("reduce", "cluster", "classify"), help="only this stage")
    p.set_defaults(func=run_methods)


def run_methods(args) -> int:
    from .analysis import cluster, estimators, reduce
    exact = {"reduce": reduce.EXACT, "cluster": cluster.EXACT, "classify": {}}
    for stage in [args.stage] if args.stage else list(exact):
        names = sorted(set(estimators.available(stage)) | set(exact[stage]))
        print(f"{stage}: " + ", ".join(f"{n} (exact, all pixels)" if n in exact[stage] else n for n in names))
    return 0


def add_models(sub) -> None:
    p = sub.add_parser("models", help="list the remote-sensing encoder presets (sensor, bands, patch, width, weights)",
                       description="List the encoder presets --model accepts besides any timm name: the "
                                   "sensor and bands each was trained on, its patch size and feature width, "
                                   "input scaling and where its weights come from.")
    p.add_argument("name", nargs="?", help="show one preset in full")
    p.add_argument("--json", action="store_true", help="print the registry as JSON")
    p.set_defaults(func=run_models)


def run_models(args) -> int:
    import json
    from dataclasses import asdict

    from .encode import presets

    chosen = list(presets.PRESETS.values())
    if args.name:
        if args.name not in presets.PRESETS:
            raise InputError(f"unknown preset {args.name!r}; close: "
                             f"{', '.join(presets.close_names(args.name)) or 'none'} (`rayvit models` lists all).")
        chosen = [presets.PRESETS[args.name]]
    if args.json:
        print(json.dumps([{k: v for k, v in asdict(p).items() if k != "options"} for p in chosen], indent=2))
        return 0
    rows = [("preset", "sensor", "bands", "patch", "width", "architecture", "extra")]
    for p in chosen:
        bands = (f"{p.in_chans}: " + ",".join(b.name for b in p.bands)) if p.bands else "any (wavelengths)"
        rows.append((p.name, p.sensor, bands, str(p.patch), str(p.width), p.architecture, p.extra or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if args.name:
        p = chosen[0]
        print(f"\nweights:  {p.source}\n          {p.url or 'timm / Hugging Face hub'}")
        scale = "none" if p.mean is None else f"(DN / {list(p.scale)} - {list(p.mean)}) / {list(p.std)}"
        print(f"inputs:   {scale}\nnotes:    {p.notes}")
    return 0


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate the synthetic sample landscape, its truth and vectors",
                       description="Writes a GENERATED, seeded sample (not real imagery): sample.tif (4-band "
                                   "uint16 landscape of water, forest, fields and built-up patches with "
                                   "distinct spectra and textures), truth.tif (the class of every pixel), "
                                   "refs.gpkg (reference points) and train.gpkg (labelled polygons). The "
                                   "quickstart job (jobs/quickstart.yaml) starts with this step.")
    p.add_argument("-o", "--output", default="quickstart-out/sample", help="output directory "
                                                                          "(default: quickstart-out/sample)")
    p.add_argument("--size", type=int, default=1120, help="side in pixels (default: 1120, 10 m pixels)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.set_defaults(func=run_sample)


def run_sample(args) -> int:
    from .sample import sample

    print(sample(args.output, args.size, args.seed).summary())
    return 0


def add_bench(sub) -> None:
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
    from .bench import bench_analysis, bench_encode, bench_pipeline

    if args.what == "pipeline":
        bench_pipeline(work=args.workdir, address=args.address)
    elif args.what in ("storage", "nodes"):
        from .bench import bench_compare
        bench_compare(args.what, args.tiles, args.size, args.model, args.s3_url, args.address, args.workdir)
    elif args.what == "scale":
        from .bench import bench_scale
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
        from .bench import bench_embeddings
        bench_embeddings(args.pixels, args.bands or 384, args.workdir, args.address)
    elif args.what == "analysis":
        bench_analysis(args.pixels, args.bands or 384, (0.25, 1.0), args.k, args.kmeans_iter, args.sklearn_pixels,
                       args.workdir, args.address)
    else:
        bench_encode(args.model, args.tiles, args.size, args.bands or 3, args.batch_size, args.scale_area,
                     args.workdir, args.address)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rayvit", description="Raster mosaics -> ViT feature maps on Ray, "
                                                           "and feature maps -> maps.")
    p.add_argument("--version", action="version", version=f"rayvit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    add_encode(sub)
    add_reduce(sub)
    add_cluster(sub)
    add_similarity(sub)
    add_classify(sub)
    add_table(sub)
    add_search(sub)
    add_change(sub)
    add_run(sub)
    add_methods(sub)
    add_models(sub)
    add_sample(sub)
    add_bench(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``rayvit`` command in this process and return its exit code (the console
    script exits with it). Callable again and again in one process: it joins the Ray this
    process is already connected to instead of starting its own, and leaves behind no state
    that changes the next call (see :func:`_call_state`)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:           # --help, --version, or a usage error argparse printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    from .console import native_stderr_filter

    quiet_native = not getattr(args, "verbose", False) and sys.stderr is sys.__stderr__   # not when captured
    try:
        with _call_state(args), native_stderr_filter() if quiet_native else contextlib.nullcontext():
            return args.func(args)
    except RayvitError as exc:
        print(f"rayvit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rayvit {args.command}: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _call_state(args):
    """What one command sets for itself, and undoes when it ends:

    - ``--s3-endpoint`` as ``AWS_ENDPOINT_URL`` (every stage, and Ray workers started by
      this command, see it), restored afterwards;
    - ``--verbose`` (Ray's and GDAL's logs) for this command only;
    - each command starts with no cached filesystem (credentials are read from the
      environment when one is made) and no "warned once" memory, and ends with its cached
      raster handles closed (a file rewritten between two commands is read afresh).
    """
    import os

    from .console import reset_warnings, set_verbose, verbose
    from .io import mosaic, storage

    saved, was_verbose = os.environ.get("AWS_ENDPOINT_URL"), verbose()
    if getattr(args, "s3_endpoint", None):
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
    storage.clear_filesystems()
    reset_warnings()
    set_verbose(getattr(args, "verbose", False))
    try:
        yield
    finally:
        mosaic.close_cached()
        set_verbose(was_verbose)
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved


if __name__ == "__main__":
    sys.exit(main())
