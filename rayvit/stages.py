"""The stage registry: the one list of rayvit's stages.

The ``rayvit`` command (a subcommand each), job specs (a step kind each), the Python API
(``rayvit.<name>``) and the job report read it. A stage is a module with its function (the
Python API: keyword arguments are its options) and ``arguments(parser)`` (its command-line
options); adding one is that module plus one line here. Nothing is imported until a stage is
used: ``rayvit --help`` lists them from here alone.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Entry:
    name: str
    module: str            # defines the function ``name`` and ``arguments(parser)``
    help: str              # one line, for ``rayvit --help``
    raster: bool = True    # writes a raster product with a report section (a job's report shows it)
    main: str = ""         # "module:function" running it from parsed options, when the generic one will not do

    def function(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.name)

    def arguments(self, parser) -> None:
        importlib.import_module(self.module).arguments(parser)

    def run(self, args) -> int:
        if self.main:
            module, name = self.main.split(":")
            return getattr(importlib.import_module(module), name)(args)
        from .options import call
        return call(self.function(), args)


STAGES = {e.name: e for e in (
    Entry("encode", "rayvit.encode.pipeline", "raster(s) -> georeferenced ViT feature raster",
          main="rayvit.encode.pipeline:main"),
    Entry("reduce", "rayvit.analysis.reduce", "raster -> fewer bands (exact PCA, UMAP, any sklearn decomposition)"),
    Entry("cluster", "rayvit.analysis.cluster", "raster -> cluster map (distributed KMeans, HDBSCAN, any sklearn.cluster)"),
    Entry("similarity", "rayvit.analysis.similarity", "raster + reference points/polygons -> cosine similarity map"),
    Entry("classify", "rayvit.analysis.classify", "raster + labelled points/polygons -> class or value map"),
    Entry("table", "rayvit.analysis.table", "feature raster -> GeoParquet embedding table (a row per cell or pixel)",
          raster=False),
    Entry("search", "rayvit.analysis.search", "feature raster + a few examples -> score map and top-k hits"),
    Entry("change", "rayvit.analysis.change", "two feature rasters (two dates) -> change map and hot spots"),
    Entry("stack", "rayvit.analysis.stack", "Zarr feature products of several dates -> one (time, band, y, x) stack",
          raster=False),
    Entry("trajectory", "rayvit.analysis.trajectory", "time stack -> each date's feature distance to the first"),
    Entry("sample", "rayvit.landscape", "generate the synthetic sample landscape, its truth and vectors", raster=False,
          main="rayvit.landscape:main"),
)}
