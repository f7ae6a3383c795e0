"""A product in an output directory: run identity, manifest, commit and publish (the driver).

Blocks are written by workers (:class:`rayvit.io.cog.BlockWriter`, the write stage), which
return small records; the driver appends them to the manifest and, once every block is
there, commits the product.

Layout of an output directory::

    run.json                 what this directory is computing (fingerprint); written first
    blocks/block_RRRRR_CCCCC.tif   one COG per finished output block (atomic rename)
    blocks/manifest.jsonl    one record per finished block (file, has data, sha256): what resume reads
    features.vrt | features.tif    the product, committed after every block
    features.zarr            or (``--format zarr``) a Zarr store, built in blocks/ and renamed
    features.json            provenance sidecar, committed last: its presence = complete

Nothing named ``features.*`` exists until the whole product does, so an interrupted run
never leaves output that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from html import escape
from xml.sax.saxutils import escape as xml_escape
from typing import Iterable, Sequence

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.windows
from affine import Affine

from ..errors import OutputError
from ..grid import Block
from ..io.mosaic import GDAL_TYPES, Grid, Source, open_raster
from . import quantize, sources, storage
from .cog import BlockWriter, block_file, cog_profile, storage_dtype

DTYPES = ("float32", "float16", "int8", "uint8")   # int8/uint8: quantised at commit (io.quantize)
RUN_FILE = "run.json"
BLOCK_DIR = "blocks"
MANIFEST = "manifest.jsonl"
OUR_FILES = (RUN_FILE, BLOCK_DIR, "features.tif", "features.vrt", "features.gti.gpkg", "features.zarr",
             "features.json")
# bytes (uncompressed): a product up to this size is one COG, a larger one blocks + their tile
# index (encode and analysis alike). The driver re-reads and recompresses a single COG at
# commit (measured ~4 CPU-ms per tile at D = 768 on one process): fine for small outputs, a
# bottleneck for large ones whatever the GPUs.
SINGLE_FILE_MAX = 64 << 20
# A block product's entry point is its tile index (<product>.gti.gpkg, GDAL's GTI driver); a
# VRT listing every block x band is written beside it while it stays small: at 768 bands a
# block costs ~194 KB of VRT XML and ~10 ms of every open, so 16,384 sources are ~4 MB and
# ~0.2 s, and a continental product (10^4-10^5 blocks) would be gigabytes.
VRT_SOURCES = 2**14


@dataclass
class ProductWriter:
    """The product layer: one raster product (features, or an analysis stage's map) on
    ``grid`` in an output directory, local or staged for an object store. It owns the run's
    identity (``run.json``), the manifest of the blocks the workers write, assembling the
    product (one COG, or the blocks' tile index and a small VRT), every other file of the run
    (:meth:`write_file`), the sidecar written last (:meth:`seal`), and publishing to object
    stores with the sidecars last. Encode and every analysis stage write through it."""

    outdir: str
    grid: Grid
    count: int
    descriptions: Sequence[str]
    dtype: str = "float32"
    compress: str = "zstd"
    product: str = "features"
    nodata: float = np.nan
    colormap: dict | None = None
    # int8/uint8 *features*: workers write float32 blocks and their band ranges; the commit
    # quantises them with one scale/offset per band into blocks/.../q (io.quantize). Not for
    # products whose integers are the values (cluster labels, classes).
    quantized: bool = False
    categories: Sequence[str] | None = None    # names of band 1's values (classes), for GDAL and QGIS
    format: str = "gtiff"       # or "zarr": one Zarr store of shards (io.chunked)
    block_size: int = 0         # a Zarr product's shard side (its blocks')
    attributes: dict | None = None    # a Zarr product's array attributes (provenance)

    def __post_init__(self) -> None:
        # Object-store outputs are staged in a local directory (blocks, resume state) and
        # published by ``publish``: data first, product sidecars last.
        self.remote = None if storage.is_local(self.outdir) else str(self.outdir).rstrip("/")
        self.outdir = staging_dir(self.remote) if self.remote else storage.local_path(self.outdir)
        # analysis stages may write several products into one directory: one block folder each
        self.block_dir = os.path.join(self.outdir, BLOCK_DIR, *([] if self.product == "features" else [self.product]))
        if self.quantized and not quantize.is_quantized(self.dtype):
            raise ValueError(f"quantised products are int8 or uint8, not {self.dtype}")
        if self.quantized and np.isnan(self.nodata):
            self.nodata = quantize.nodata(self.dtype)
        if self.format == "zarr" and self.quantized and self.dtype != "int8":
            raise OutputError(f"--format zarr quantises to int8 with a scale per pixel, not to {self.dtype}; use "
                              "--dtype int8, or --format gtiff for uint8.")
        self.scales: tuple = ()
        self.offsets: tuple = ()
        self.uploaded: set[str] = set()     # files (relative to outdir) already in the bucket (readable)

    # ------------------------------------------------------------------ run identity
    def path(self, name: str) -> str:
        return os.path.join(self.outdir, name)

    def existing_run(self) -> dict | None:
        try:
            with open(self.path(RUN_FILE)) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def url(self, name: str) -> str:
        """Where ``name`` ends up: in the output directory, or its object-store URL."""
        return f"{self.remote}/{name}" if self.remote else self.path(name)

    def check(self, fingerprint: str, overwrite: bool) -> str:
        """``'new'``, ``'resume'`` or ``'complete'``; refuse a directory of another run."""
        if self.remote:
            remote_run = remote_state(self.remote, RUN_FILE)
            if remote_run is not None:
                if overwrite:
                    return "overwrite"
                if remote_run.get("fingerprint") != fingerprint:
                    raise OutputError(f"output {self.remote!r} holds a different run (other inputs or "
                                      "options); use --overwrite to replace it, or choose another -o.")
                if remote_state(self.remote, f"{self.product}.json") is not None:
                    return "complete"
            local = self.existing_run()
            if local is not None and local.get("fingerprint") != fingerprint:
                shutil.rmtree(self.outdir)          # staging of another run: ours to discard
        run = self.existing_run()
        ours = [n for n in OUR_FILES if os.path.exists(self.path(n))]
        if run is None and not ours:
            return "new"
        if overwrite:
            return "overwrite"
        if run is not None and run.get("fingerprint") == fingerprint:
            return "complete" if os.path.exists(self.path(f"{self.product}.json")) else "resume"
        raise OutputError(
            f"output directory {self.outdir!r} holds a different run ({', '.join(ours)}: other "
            "inputs or options); use --overwrite to replace it, or choose another -o.")

    def check_writable(self) -> None:
        """Refuse, before any work and writing nothing, an output directory that cannot be
        made or written (a file in its path, a read-only parent). An object-store output's
        bucket and credentials are checked by :meth:`check`."""
        if self.remote:
            return
        path = os.path.abspath(self.outdir)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        if not os.path.isdir(path):
            raise OutputError(f"cannot create output directory {self.outdir!r}: {path!r} is a file; "
                              "choose another -o.")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot create output directory {self.outdir!r}: {path!r} is not writable; "
                              "choose another -o or fix its permissions.")

    def start(self, fingerprint: str, config: dict, overwrite: bool) -> None:
        if overwrite and self.remote:
            fs = storage.fs_for(self.remote)
            if fs.exists(self.remote):
                fs.rm(self.remote, recursive=True)
        if overwrite:
            for name in OUR_FILES:
                p = self.path(name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
        try:
            os.makedirs(self.outdir, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output directory {self.outdir!r}: {exc}") from exc
        if self.existing_run() is None:     # first: what is beside it then belongs to this run
            storage.atomic_write(self.path(RUN_FILE), json.dumps(
                {"fingerprint": fingerprint, "config": config}, indent=1, sort_keys=True))
        os.makedirs(self.block_dir, exist_ok=True)
        if self.format == "zarr" and not os.path.exists(os.path.join(self.zarr_store, "zarr.json")):
            from . import chunked

            g = self.grid
            chunked.create(self.zarr_store, g.crs, g.transform, g.width, g.height, self.descriptions, self.dtype,
                           self.block_size, self.attributes, array=self.array, fill=self.nodata,
                           per_pixel=self.quantized)

    @property
    def array(self) -> str:
        """A Zarr product's variable: ``features``, or the analysis product's name."""
        from .chunked import ARRAY

        return ARRAY if self.product == "features" else self.product

    @property
    def zarr_store(self) -> str:
        """Where a Zarr product is built (renamed to ``<product>.zarr`` at commit)."""
        return os.path.join(self.block_dir, f"{self.product}.zarr")

    # ------------------------------------------------------------------ blocks
    @property
    def block_dest(self) -> str:
        """Where workers put the blocks: the local block directory, or the bucket directly
        (a worker on another node cannot reach this machine's staging directory)."""
        if not self.remote:
            return self.block_dir
        return storage.join(self.remote, os.path.relpath(self.block_dir, self.outdir).replace(os.sep, "/"))

    def block_writer(self) -> BlockWriter:
        """The picklable writer the write-stage tasks use."""
        if self.format == "zarr":
            from .chunked import ZarrBlockWriter, inner_side

            # an object store's shards go straight to their final place: the store cannot be
            # opened before its root metadata, which publish uploads last but the sidecars
            store = storage.join(self.remote, f"{self.product}.zarr") if self.remote else self.zarr_store
            options = storage.freeze(storage.storage_options(self.remote)) if self.remote else ()
            # int8: the tasks hand float blocks (NaN no data) that the writer quantises per pixel
            dtype, nodata = ("float32", np.nan) if self.quantized else (self.dtype, self.nodata)
            return ZarrBlockWriter(store, os.path.basename(self.zarr_store), dtype, self.block_size,
                                   inner_side(self.block_size), options, self.array, nodata, self.quantized)
        options = storage.freeze(storage.storage_options(self.remote)) if self.remote else ()
        writer = BlockWriter(self.block_dest, self.grid.crs, tuple(self.grid.affine)[:6], self.count,
                             tuple(self.descriptions), self.dtype, self.compress, self.nodata,
                             self.colormap, options)
        if self.quantized:
            return replace(writer, dtype="float32", nodata=np.nan, ranges=True)
        return writer

    def _records(self) -> dict[tuple[int, int], dict]:
        """The manifest's record of each block whose file exists (the last one listed).
        Blocks in an object store are uploaded before their record is returned, so their
        records are trusted as they are."""
        done: dict[tuple[int, int], dict] = {}
        try:
            with open(os.path.join(self.block_dir, MANIFEST)) as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:  # a line cut by an interruption
                        continue
                    if not rec["data"] or self.remote or os.path.exists(os.path.join(self.block_dir, rec["file"])):
                        done[(rec["by"], rec["bx"])] = rec
        except FileNotFoundError:
            pass
        return done

    def finished_blocks(self) -> dict[tuple[int, int], bool]:
        """Blocks the manifest lists (and whose file exists): ``{(by, bx): has_data}``."""
        return {key: rec["data"] for key, rec in self._records().items()}

    def record(self, records: Iterable[dict]) -> None:
        """Append write-stage records to the manifest (durably: resume reads it)."""
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        if not lines:
            return
        with open(os.path.join(self.block_dir, MANIFEST), "a") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def check_reachable(self) -> None:
        """A local output directory must be the same directory on every Ray node, since
        workers write the blocks: refuse a multi-node cluster that does not see it."""
        if self.remote:
            return
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
        if len(nodes) < 2:
            return
        probe = ray.remote(num_cpus=0)(os.path.exists)
        run_file = self.path(RUN_FILE)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(run_file) for n in nodes]

        def seen(ref) -> bool:
            try:
                return ray.get(ref)
            except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError):
                return True     # a node that has left the cluster (still listed alive) writes nothing

        missing = [n["NodeManagerAddress"] for n, ref in zip(nodes, refs) if not seen(ref)]
        if missing:
            raise OutputError(
                f"output directory {self.outdir!r} is not visible from Ray node(s) "
                f"{', '.join(missing)}: workers write the blocks, so on a cluster the output must be "
                "an object store (-o s3://bucket/prefix) or a directory every node shares (NFS, ...).")

    # ------------------------------------------------------------------ product
    def _band_xml(self, band: int) -> str:
        """What a VRT's or a tile index's ``band`` element says besides its sources: name,
        nodata, scale/offset (int8 features), colour table (categories)."""
        nodata = "nan" if np.isnan(self.nodata) else repr(self.nodata)
        parts = [f"<Description>{escape(self.descriptions[band - 1])}</Description>",
                 f"<NoDataValue>{nodata}</NoDataValue>"]
        if self.scales:
            parts.append(f"<Offset>{self.offsets[band - 1]!r}</Offset><Scale>{self.scales[band - 1]!r}</Scale>")
        if band == 1 and self.colormap:
            parts.append("<ColorTable>" + "".join(
                f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
                for _, (r, g, b, a) in sorted(self.colormap.items())) + "</ColorTable>")
        return "".join(parts)

    @property
    def gdal_dtype(self) -> str:
        return GDAL_TYPES.get(self.dtype, "Float32")      # float16 is stored as Float32 (io.cog)

    def _block_path(self, block: Block) -> str:
        """A block's file relative to the output directory (as the VRT and the index name it)."""
        return os.path.relpath(os.path.join(self.product_blocks, block_file(block)), self.outdir)

    def vrt_xml(self, blocks: Iterable[Block]) -> str:
        g = self.grid
        a = g.affine
        srcs = [(b, self._block_path(b)) for b in blocks]
        lines = [f'<VRTDataset rasterXSize="{g.width}" rasterYSize="{g.height}">',
                 f"  <SRS>{escape(g.crs)}</SRS>",
                 f"  <GeoTransform>{a.c!r}, {a.a!r}, 0.0, {a.f!r}, 0.0, {a.e!r}</GeoTransform>"]
        for band in range(1, self.count + 1):
            lines.append(f'  <VRTRasterBand dataType="{self.gdal_dtype}" band="{band}">')
            lines.append(f"    {self._band_xml(band)}")
            for b, rel in srcs:
                lines.append(
                    f'    <SimpleSource><SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>'
                    f"<SourceBand>{band}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{b.cols}" ySize="{b.rows}"/>'
                    f'<DstRect xOff="{b.col}" yOff="{b.row}" xSize="{b.cols}" ySize="{b.rows}"/>'
                    "</SimpleSource>")
            lines.append("  </VRTRasterBand>")
        lines.append("</VRTDataset>")
        return "\n".join(lines) + "\n"

    def write_index(self, blocks: Sequence[Block], path: str) -> None:
        """The product's tile index (GDAL GTI, a GeoPackage): one row per block with data,
        named relative to the index, with the product's size, geotransform and bands declared,
        so that GDAL, rasterio and QGIS open it as one raster, and rayvit's analysis stages
        find each block through it (:func:`rayvit.io.sources.read_index`)."""
        # every block's header is the product's (what describe() would read from one)
        first = Source("", self.grid.crs, (), 0, 0, self.count, storage_dtype(self.dtype), self.nodata,
                       tuple(self.descriptions), self.scales or (1.0,) * self.count,
                       self.offsets or (0.0,) * self.count, plain=True)
        a = self.grid.affine
        rows = []
        for b in blocks:
            rel = self._block_path(b)
            stamp = (-1, -1) if self.remote else sources.stamp(os.path.join(self.outdir, rel))
            rows.append((replace(first, url=rel.replace(os.sep, "/"), width=b.cols, height=b.rows,
                                 transform=tuple(a @ Affine.translation(b.col, b.row))[:6]), stamp))
        bands = "".join(f'<Band band="{band}" dataType="{self.gdal_dtype}">{self._band_xml(band)}</Band>'
                        for band in range(1, self.count + 1))
        sources.write_index(path, rows, grid=self.grid, bands_xml=bands)

    @property
    def product_blocks(self) -> str:
        """The local directory of the blocks the product is made of (the quantised ones of an
        int8/uint8 product)."""
        return os.path.join(self.block_dir, "q") if self.quantized else self.block_dir

    def _open_block(self, block: Block):
        if self.remote:
            dest = storage.join(self.block_dest, "q") if self.quantized else self.block_dest
            return open_raster(storage.join(dest, block_file(block)), storage.storage_options(self.remote))
        return rasterio.open(os.path.join(self.product_blocks, block_file(block)))

    def _quantize(self, blocks: Sequence[Block]) -> None:
        """Quantise the float blocks with one scale/offset per band, from the band ranges of
        all blocks (so every block and every run maps a value to the same code), in Ray
        tasks that write ``q/`` beside them; then drop the float blocks."""
        import ray

        records = self._records()
        lows = [records[(b.by, b.bx)]["min"] for b in blocks]
        highs = [records[(b.by, b.bx)]["max"] for b in blocks]
        scale, offset = quantize.params(np.min(lows, axis=0), np.max(highs, axis=0), self.dtype)
        self.scales, self.offsets = tuple(scale.tolist()), tuple(offset.tolist())
        source = self.block_writer()
        target = replace(source, dest=storage.join(source.dest, "q"), dtype=self.dtype, nodata=self.nodata,
                         ranges=False, scales=self.scales, offsets=self.offsets)
        if not self.remote:
            os.makedirs(target.dest, exist_ok=True)
        task = ray.remote(num_cpus=1)(_quantize_blocks)
        chunks = [blocks[i:i + 4] for i in range(0, len(blocks), 4)]
        ray.get([task.remote(source, target, chunk) for chunk in chunks])
        if self.remote:
            fs = storage.fs_for(self.remote)
            fs.rm([storage.join(source.dest, block_file(b)) for b in blocks])
        else:
            for b in blocks:
                os.remove(os.path.join(self.block_dir, block_file(b)))

    def _assemble(self, blocks: Sequence[Block], dest: str) -> None:
        """One COG from the blocks: each block is read once, all bands at a time.

        (Translating the VRT instead makes GDAL read band by band, reopening every block
        file for every band once there are more blocks than its dataset pool holds.)
        Memory: one block. Deterministic: same blocks, same bytes.
        """
        g = self.grid
        staging = os.path.join(self.block_dir, f"{self.product}.staging.tif")
        profile = cog_profile(self.dtype, self.compress, self.nodata, self.count)
        with rasterio.open(staging, "w", driver="GTiff", width=g.width, height=g.height,
                           count=self.count, dtype=profile["dtype"], crs=g.crs, transform=g.affine,
                           nodata=self.nodata, tiled=True, blockxsize=256, blockysize=256,
                           bigtiff="if_safer") as dst:   # plain: float16 values are exact in float32
            dst.descriptions = tuple(self.descriptions)
            if self.colormap:
                dst.write_colormap(1, self.colormap)
            if self.scales:
                dst.scales, dst.offsets = self.scales, self.offsets
            for b in blocks:
                with self._open_block(b) as src:
                    dst.write(src.read(), window=rasterio.windows.Window(b.col, b.row, b.cols, b.rows))
        for key in ("driver", "dtype", "nodata"):
            profile.pop(key)
        # the driver compresses the product once: with every core of this node
        rasterio.shutil.copy(staging, dest, driver="COG", num_threads="ALL_CPUS", **profile)

    def assemble(self, blocks_with_data: Sequence[Block], single_file: bool) -> str:
        """Make the product of its blocks: one COG, or the blocks' tile index (and a VRT while
        small). Its category names (``categories``) go in a PAM sidecar beside it. Returns
        its path. Nothing says it is complete until :meth:`seal`."""
        if self.quantized and self.format != "zarr":       # a Zarr product's blocks quantised themselves
            self._quantize(blocks_with_data)
        if self.format == "zarr":
            from . import chunked

            chunked.consolidate(self.zarr_store)
            final = self.path(f"{self.product}.zarr")
            if os.path.exists(final):       # committed by a run cut before its sidecar: ours
                shutil.rmtree(final)
            os.rename(self.zarr_store, final)
            shutil.rmtree(self.block_dir)
            self._drop_block_root()
        elif single_file:
            final = self.path(f"{self.product}.tif")
            storage.atomic_write(final, lambda tmp: self._assemble(blocks_with_data, tmp))
            shutil.rmtree(self.block_dir)
            if self.remote:   # the workers uploaded them; the product is the one file now
                fs = storage.fs_for(self.remote)
                if fs.exists(self.block_dest):
                    fs.rm(self.block_dest, recursive=True)
            self._drop_block_root()
        else:
            final = self.path(f"{self.product}{sources.SUFFIX}")
            self.write_index(blocks_with_data, final)
            if len(blocks_with_data) * self.count <= VRT_SOURCES:
                storage.atomic_write(self.path(f"{self.product}.vrt"), self.vrt_xml(blocks_with_data))
        if self.categories and self.format != "zarr":    # a Zarr product's are its attributes
            cats = "".join(f"<Category>{xml_escape(str(n))}</Category>" for n in self.categories)
            storage.atomic_write(final + ".aux.xml", f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{cats}'
                                                     "</CategoryNames></PAMRasterBand></PAMDataset>\n")
        return final

    def _drop_block_root(self) -> None:
        """Remove ``blocks/`` once an analysis product's own folder in it is gone."""
        if self.product != "features":
            try:
                os.rmdir(os.path.join(self.outdir, BLOCK_DIR))
            except OSError:  # another product's blocks are still there
                pass

    def sidecar(self, final: str, record: dict) -> dict:
        """The product's sidecar: ``record`` with the product's file and its quantisation."""
        out = dict(record, output=os.path.basename(final))
        if self.quantized:
            out["quantization"] = (quantize.per_pixel_object() if self.format == "zarr" else
                                   quantize.stac_object(self.dtype, self.scales, self.offsets))
        return out

    def seal(self, final: str, record: dict) -> None:
        """Write the product's sidecar (:meth:`sidecar`): the last thing written, whose
        presence says that the product and everything beside it is complete."""
        storage.atomic_write(self.path(f"{self.product}.json"), json.dumps(self.sidecar(final, record), indent=1))

    def write_file(self, name: str, data) -> str:
        """Write ``data`` as ``name`` in the output directory, atomically: a dict as JSON, a
        model bundle (``.joblib``), a GeoDataFrame as GeoParquet (``.parquet``) or a GeoPackage
        layer named after the file (``.gpkg``), an Arrow table as Parquet."""
        path = self.path(name)
        if name.endswith(".json"):
            return storage.atomic_write(path, json.dumps(data, indent=1, default=str))
        if name.endswith(".joblib"):
            import joblib
            return storage.atomic_write(path, lambda tmp: joblib.dump(data, tmp))
        if name.endswith(".gpkg"):
            return storage.atomic_write(path, lambda tmp: data.to_file(tmp, driver="GPKG", layer=name[:-5]))
        if hasattr(data, "to_parquet"):
            return storage.atomic_write(path, lambda tmp: data.to_parquet(tmp, schema_version="1.1.0",
                                                                          write_covering_bbox=True))
        import pyarrow.parquet as pq
        return storage.atomic_write(path, lambda tmp: pq.write_table(data, tmp))

    def readable(self, final: str) -> str:
        """Where the driver can read the product it just committed (report, quicklook): the
        local file; for a block product in an object store, its VRT uploaded beside the blocks
        the workers put there (the local one points at blocks that are not here; GDAL opening
        a GeoPackage through rasterio's Python file opener crashes, so not the tile index), or
        ``""`` when it has none (above :data:`VRT_SOURCES`). Publish order still holds: the
        sidecars go last."""
        if self.remote and final.endswith(".zarr"):
            return self._publish_store(final)
        if not self.remote or not final.endswith(sources.SUFFIX):
            return final
        vrt = self.path(f"{self.product}.vrt")
        if not os.path.exists(vrt):
            return ""
        url = self.url(f"{self.product}.vrt")
        storage.fs_for(self.remote).put_file(vrt, url)
        return url

    def _publish_store(self, final: str) -> str:
        """An object-store Zarr product made readable: its metadata uploaded beside the shards
        the workers put there (the local store holds only metadata), root ``zarr.json`` last;
        its URL. The sidecars still go last (:meth:`publish`)."""
        url = self.url(os.path.basename(final))
        names = sorted((os.path.relpath(os.path.join(d, n), final) for d, _, files in os.walk(final) for n in files),
                       key=lambda rel: (rel == "zarr.json", rel))
        fs = storage.fs_for(self.remote)
        for rel in names:
            fs.put_file(os.path.join(final, rel), f"{url}/{rel.replace(os.sep, '/')}")
        self.uploaded.update(os.path.relpath(os.path.join(final, rel), self.outdir) for rel in names)
        return url

    def publish(self, sidecars: Sequence[str] = ()) -> None:
        """Upload a staged object-store output: blocks, then other files, then VRTs, then the
        product sidecars (``<product>.json`` and ``sidecars``) last, so that a reader who sees
        a sidecar sees a complete product. Then the staging directory is removed."""
        if not self.remote:
            return
        last = {f"{self.product}.json", *sidecars}
        files = []
        for root, _, names in os.walk(self.outdir):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), self.outdir)
                if ".tmp" not in name and not name.endswith(".staging.tif") and rel not in self.uploaded:
                    files.append(rel)

        def rank(rel):       # a Zarr store's root metadata (what makes it openable) just before the sidecars
            return (rel in last, rel.endswith(".zarr" + os.sep + "zarr.json"), rel.endswith((".vrt", sources.SUFFIX)),
                    not rel.startswith(BLOCK_DIR + os.sep), rel)

        fs = storage.fs_for(self.remote)
        for rel in sorted(files, key=rank):
            try:
                fs.put_file(os.path.join(self.outdir, rel), f"{self.remote}/{rel.replace(os.sep, '/')}")
            except (PermissionError, FileNotFoundError, OSError) as exc:
                raise OutputError(f"uploading {rel} to {self.remote!r} failed ({type(exc).__name__}); "
                                  "the output there is incomplete (no sidecar): fix access and re-run "
                                  "the same command.") from None
        shutil.rmtree(self.outdir, ignore_errors=True)


def _quantize_blocks(source: BlockWriter, target: BlockWriter, blocks: Sequence[Block]) -> None:
    """Ray task: read float blocks written by ``source``, write them quantised by ``target``."""
    for b in blocks:
        with open_raster(storage.join(source.dest, block_file(b)), storage.unfreeze(source.options) or None) as ds:
            data = ds.read(masked=True)
        valid = ~np.ma.getmaskarray(data).any(axis=0)
        codes = quantize.quantize(np.ma.getdata(data), valid, np.array(target.scales),
                                  np.array(target.offsets), target.dtype)
        target.write(b, codes, valid)


def fingerprint(config: dict) -> str:
    """A run's identity: a digest of everything that decides its outputs (``run.json``)."""
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def staging_dir(remote: str) -> str:
    """The local staging directory of an object-store output (stable, so runs resume)."""
    import hashlib
    root = os.environ.get("RAYVIT_STAGING") or os.path.join(os.path.expanduser("~"), ".cache", "rayvit", "staging")
    return os.path.join(root, hashlib.sha256(remote.encode()).hexdigest()[:16])


def remote_state(remote: str, name: str) -> dict | None:
    """JSON file ``name`` of an object-store output, None when absent; clear errors for a
    missing bucket or refused credentials."""
    fs = storage.fs_for(remote)
    bucket = remote.split("://", 1)[1].split("/", 1)[0]
    try:
        try:
            fs.ls(f"{storage.scheme(remote)}://{bucket}", detail=False)
        except FileNotFoundError:
            raise OutputError(f"output {remote!r}: bucket {bucket!r} does not exist; create it or "
                              "choose another -o.") from None
        with fs.open(f"{remote}/{name}") as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        return None
    except PermissionError:
        raise OutputError(f"output {remote!r}: access was denied; check the credentials "
                          f"({storage.credentials_hint(remote)}).") from None
    except ValueError:
        return {}
