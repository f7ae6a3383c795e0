"""The HTML report: one self-contained page per product (``report.html`` next to it) and one
per job, every image embedded as a data URL.

A product's section is built from what the run left on disk (its sidecar, ``metrics.json``,
its raster and its quicklook), so it shows what was written, not what was meant to be.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import charts
from .quicklook import COMPONENT_BANDS, imagery_of, imagery_view, quicklook, read_small, save_view

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #4477aa;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top;font-size:.9em}th{background:#f0f3f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.figures{display:flex;flex-wrap:wrap;gap:1em}.figures figure{margin:0;flex:0 1 560px}
figcaption{font-size:.85em;color:#555;max-width:520px}
img.map{image-rendering:pixelated;width:100%;border:1px solid #ccc}img.chart{max-width:100%}
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #555;vertical-align:middle}
nav li{margin:.2em 0}.note{color:#555;font-size:.9em}
"""
TIMING_LABELS = {  # wall-clock phases, in order, for encode and for the analysis stages
    "encode": {"planning_s": "planning", "ray_start_s": "Ray start", "actor_start_s": "actor start",
               "encoding_s": "encoding (read, model and write overlapped)",
               "writing_s": "writing (write-task seconds, within encoding)", "commit_s": "commit",
               "total_s": "total"},
    "analysis": {"ray_start_s": "Ray start", "statistics_s": "statistics pass", "fit_s": "fit and metrics",
                 "writing_s": "writing (apply the model, write the blocks)", "commit_s": "commit",
                 "total_s": "total"}}
HIDDEN = {"rayvit_version", "run_id", "metrics", "timings", "output", "transform", "input_grid",
          "categories", "crs"}


@dataclass
class Section:
    anchor: str
    title: str
    body: str


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image(data: bytes, mime: str, alt: str, caption: str, css: str = "map") -> str:
    return (f'<figure><img class="{css}" alt="{html.escape(alt)}" src="{data_url(data, mime)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def svg(text: str, alt: str, caption: str = "") -> str:
    return image(text.encode(), "image/svg+xml", alt, caption, css="chart")


def cell(value) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        if len(value) > 8 and all(isinstance(v, int) for v in value) and list(value) == list(
                range(value[0], value[0] + len(value))):
            return f"<td>{value[0]} to {value[-1]} ({len(value)} values)</td>"
        return "<td>" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value) + "</td>"
    if isinstance(value, dict):
        return f"<td>{table(value)}</td>"
    if value and isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return f"<td>{rows_table(value)}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def table(rows: dict, header: Sequence[str] = ()) -> str:
    """A key/value table; nested mappings become nested tables."""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th>{cell(v)}</tr>" for k, v in rows.items())
    return f"<table>{head}{body}</table>"


def rows_table(rows: list[dict]) -> str:
    """A table with a row per mapping (e.g. per fold); nested mappings are left out."""
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict)]
    head = "<tr>" + "".join(f"<th>{html.escape(str(k))}</th>" for k in keys) + "</tr>"
    return f"<table>{head}" + "".join("<tr>" + "".join(cell(r.get(k)) for k in keys) + "</tr>"
                                      for r in rows) + "</table>"


def timing_table(timings: dict, work: str, stage: str) -> str:
    total = timings.get("total_s") or 1e-9
    labels = TIMING_LABELS["encode" if stage == "encode" else "analysis"]
    rows = "".join(f'<tr><th>{label}</th><td class="num">{timings[key]:.2f} s</td>'
                   f'<td class="num">{100 * timings[key] / total:.0f} %</td></tr>'
                   for key, label in labels.items() if isinstance(timings.get(key), (int, float)))
    return (f"<table><tr><th>phase</th><th>wall time</th><th>of total</th></tr>{rows}</table>"
            f'<p class="note">{work}</p>')


def legend(colormap: dict, names: Sequence[str], counts: Sequence[int] | None) -> str:
    rows = []
    for k, name in enumerate(names):
        r, g, b = colormap.get(k, (0, 0, 0, 0))[:3]
        count = f'<td class="num">{counts[k]}</td>' if counts is not None and k < len(counts) else "<td></td>"
        rows.append(f'<tr><td><span class="swatch" style="background:rgb({r},{g},{b})"></span> {k}</td>'
                    f"<td>{html.escape(str(name))}</td>{count}</tr>")
    return ("<table><tr><th>value</th><th>class</th><th>pixels</th></tr>" + "".join(rows) + "</table>")


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _figures(outdir: str, sidecar: dict, raster: str, categorical: bool, imagery=None, features=None) -> str:
    figures, notes = [], []
    encode = imagery_of(sidecar)
    with tempfile.TemporaryDirectory() as tmp:
        if imagery is not None:         # sampled by the encode's read stage: nothing is read again
            save_view(*imagery, os.path.join(tmp, "input.jpg"))
            shown, why = True, ""
        else:
            shown, why = imagery_view(encode, os.path.join(tmp, "input.jpg")) if encode else (False, "")
        if shown:
            figures.append(image(_read(os.path.join(tmp, "input.jpg")), "image/jpeg", "input imagery",
                                 "Input imagery (true colour where the file says which bands are red, "
                                 "green and blue; else its first three bands), 2-98 % stretch"))
        elif why:
            notes.append(f'<p class="note">{html.escape(why)}</p>')
        look = os.path.join(outdir, "quicklook.png")
        if not os.path.exists(look):      # an encode: principal components of the features
            look = os.path.join(tmp, "quicklook.png")
            quicklook(raster, look, components=True, data=features)
        caption = ("Map (one pixel per output pixel, enlarged with nearest neighbour)" if categorical else
                   f"First three principal components of the features (of {COMPONENT_BANDS} evenly spaced "
                   "features when there are more), 2-98 % stretch" if "inputs" in sidecar
                   else "First three bands, 2-98 % stretch")
        figures.append(image(_read(look), "image/png", "quicklook", caption))
    return '<div class="figures">' + "".join(figures) + "</div>" + "".join(notes)


def _charts(stage: str, metrics: dict, raster: str, colormap: dict, names: list) -> str:
    out = []
    ratio = metrics.get("explained_variance_ratio")
    if ratio:
        out.append(svg(charts.bars(ratio, [f"PC{i + 1}" for i in range(len(ratio))], "Explained variance",
                                   "share of variance", line=metrics.get("cumulative_explained_variance_ratio")),
                       "explained variance", "Explained variance ratio per component (bars) and cumulative (line)"))
    sizes = metrics.get("cluster_sizes")
    if sizes:
        colours = [f"rgb{tuple(colormap.get(k, (68, 119, 170, 255))[:3])}" for k in range(len(sizes))]
        out.append(svg(charts.bars(sizes, [str(n) for n in names[:len(sizes)]], "Cluster sizes", "pixels",
                                   colours), "cluster sizes", "Pixels per cluster, in the map's colours"))
    for where in ("cv", "test"):
        block = metrics.get(where, {})
        confusion = (block.get("pooled") or block).get("confusion_matrix") if isinstance(block, dict) else None
        if confusion:
            title = "cross-validation (pooled over folds)" if where == "cv" else "test set"
            out.append(svg(charts.matrix(confusion["rows_true_columns_predicted"], confusion["classes"],
                                         f"Confusion matrix, {title}"), f"confusion matrix {where}",
                           "Rows: true class, columns: predicted; shade: share of the row (recall)"))
    if stage == "similarity":
        data = read_small(raster)
        for b in range(min(data.shape[0], 4)):
            band = np.ma.getdata(data[b])[~np.ma.getmaskarray(data[b])]
            label = names[b] if b < len(names) else f"band {b + 1}"
            out.append(svg(charts.histogram(band, f"Cosine similarity: {label}", "cosine similarity",
                                            value_range=(-1, 1)), f"similarity histogram {label}",
                           f"Distribution of the similarity to '{label}' over the map"))
    return '<div class="figures">' + "".join(out) + "</div>" if out else ""


def section(outdir: str, product: str, anchor: str | None = None, title: str | None = None,
            raster: str | None = None, imagery=None, features=None, sidecar: dict | None = None) -> Section:
    """The report section of the product ``product`` in ``outdir`` (local). Its raster is read
    from ``raster`` when given (an object-store output's VRT, whose blocks are in the bucket);
    ``raster=""``: not readable here (:meth:`ProductWriter.readable`), so no maps are drawn.
    ``imagery``: the input imagery view ``(bands (3, h, w), valid (h, w))`` an encode sampled
    as it read (:class:`rayvit.encode.stages.read.Preview`); else it is read from the inputs.
    ``features``: the features' view (:func:`.quicklook.read_small`'s) its write tasks
    sampled; else the raster is read. ``sidecar``: the product's sidecar, before it is written (it is written last); else read."""
    from ..io import chunked, sources, storage
    from ..io.writer import VRT_SOURCES
    from ..io.mosaic import crs_name, open_raster

    if sidecar is None:         # a finished product's (a job's report)
        with open(os.path.join(outdir, f"{product}.json")) as fh:
            sidecar = json.load(fh)
    metrics = sidecar.get("metrics") or {}
    stage = sidecar.get("stage", "encode")
    maps = raster != ""
    raster = raster or os.path.join(outdir, sidecar["output"])
    if maps and chunked.is_zarr(raster):
        z = chunked.ZarrRaster.open(raster)
        colormap = {int(k): tuple(v) for k, v in z.attributes().get("colormap", {}).items()}
        size, crs = (z.grid.width, z.grid.height, z.count, z.stored, z.grid.res[0]), crs_name(z.grid.crs)
    elif maps:
        with open_raster(raster, storage.storage_options(raster)) as ds:
            try:
                colormap = ds.colormap(1)
            except ValueError:
                colormap = {}
            size = (ds.width, ds.height, ds.count, ds.dtypes[0], ds.res[0])
            crs = crs_name(ds.crs) if ds.crs else "none"
    else:       # a block product in an object store, above the VRT limit: its local index says it
        entries, grid = sources.read_index(raster)
        first = next(iter(entries.values()))[0]
        size, crs, colormap = (grid.width, grid.height, first.count, first.dtype, grid.res[0]), crs_name(grid.crs), {}
    shape = "{} x {} px, {} band(s) {}, {:g} m pixels".format(*size)
    categorical = bool(colormap)
    names = sidecar.get("categories") or (
        [f"cluster {k}" for k in range(metrics.get("n_clusters", 0))] if stage == "cluster" else
        metrics.get("bands") or [])
    timings = sidecar.get("timings", {})
    if stage == "encode":
        rate = timings.get("tiles_per_s")
        work = (f"{timings.get('tiles_encoded', sidecar['tiles'])} tiles encoded"
                + (f": {rate:.1f} tiles/s over the whole command" if rate else ""))
    else:
        n = sidecar.get("n_valid_pixels", 0)
        work = f"{n} valid pixels" + (f": {n / timings['total_s']:.0f} pixels/s" if timings.get("total_s") else "")
    plan = {k: v for k, v in sidecar.items() if k not in HIDDEN and v is not None}
    plan["output"] = f"{sidecar['output']}: {shape}, {crs}"
    parts = [f"<h2 id=\"{anchor or product}\">{html.escape(title or f'{stage}: {product}')}</h2>",
             "<h3>Inputs and plan</h3>", table(plan),
             "<h3>Time</h3>", timing_table(timings, work, stage) if timings else "<p>not timed</p>",
             "<h3>Maps</h3>", _figures(outdir, sidecar, raster, categorical, imagery, features) if maps else
             f'<p class="note">Not drawn: GDAL cannot read a tile index in an object store through '
             f"rayvit's reader (only a VRT, written up to {VRT_SOURCES:,} blocks x bands). The product is "
             "complete: open it with GDAL's /vsis3/, /vsigs/ or /vsiaz/, or with rayvit's analysis stages.</p>"]
    if categorical:
        counts = metrics.get("cluster_sizes") or list((metrics.get("mapped_pixels_per_class") or {}).values()) or None
        parts += ["<h3>Legend</h3>", legend(colormap, names, counts)]
    plots = _charts(stage, metrics, raster, colormap, names) if maps else ""
    if plots:
        parts += ["<h3>Plots</h3>", plots]
    if metrics:
        parts += ["<h3>Metrics</h3>", table({k: v for k, v in metrics.items() if k != "confusion_matrix"})]
    return Section(anchor or product, title or f"{stage}: {product}", "\n".join(parts))


def page(title: str, sections: Sequence[Section], intro: str = "") -> str:
    toc = ""
    if len(sections) > 1:
        toc = "<nav><h2>Steps</h2><ol>" + "".join(
            f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections) + "</ol></nav>"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{intro}{toc}"
            + "\n".join(s.body for s in sections) + "</body></html>\n")


def save(path: str, text: str) -> str:
    from ..io.storage import atomic_write

    return atomic_write(path, text)
