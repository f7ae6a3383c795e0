"""``rayvit bench``: benchmarks. They import the product; the product never imports them."""

from .analysis import bench_analysis
from .compare import bench_compare
from .embeddings import bench_embeddings
from .encode import bench_encode
from .monitor import ProcessMonitor
from .pipeline import bench_pipeline
from .scale import bench_scale

__all__ = ["bench_analysis", "bench_compare", "bench_embeddings", "bench_encode", "bench_pipeline", "bench_scale", "ProcessMonitor"]
