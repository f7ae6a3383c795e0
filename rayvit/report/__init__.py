"""Reports of what a run made: quicklooks (:mod:`.quicklook`), SVG charts (:mod:`.charts`)
and the self-contained HTML page (:mod:`.html`) of each product and of each job."""

from __future__ import annotations

import html as _html
import os
from typing import Sequence

from .html import page, save, section


def write(outdir: str, product: str, raster: str | None = None, imagery=None, features=None,
          sidecar: dict | None = None) -> str:
    """Write ``report.html`` for the product ``product`` in the local directory ``outdir``
    (its raster read from ``raster`` when given, its input imagery view given as ``imagery``,
    its features' view as ``features``, its sidecar as ``sidecar``, which is written after
    the report: see :func:`.html.section`)."""
    s = section(outdir, product, raster=raster, imagery=imagery, features=features, sidecar=sidecar)
    return save(os.path.join(outdir, "report.html"), page(f"rayvit {s.title}", [s]))


def write_job(path: str, name: str, steps: Sequence[tuple[str, str, str, str]]) -> str:
    """Write one page for a job at ``path``: a section per ``(step id, stage, local output
    directory, product)``, linked from a list of the steps at the top."""
    sections = [section(outdir, product, anchor=f"step-{sid}", title=f"step {sid}: {stage} -> {outdir}")
                for sid, stage, outdir, product in steps]
    intro = (f"<p>Job <b>{_html.escape(name)}</b>: {len(steps)} steps. Each product also has its own "
             "<code>report.html</code> in its directory.</p>")
    return save(path, page(f"rayvit job {name}", sections, intro))
