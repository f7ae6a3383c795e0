"""rayvit: raster mosaics of any size -> Vision Transformer feature maps on Ray."""

__version__ = "0.1.0"

# The pipeline imports torch/timm only where a model is built, so Ray read tasks (which
# import this package to unpickle their functions) stay light.
from .analysis.cluster import cluster  # noqa: E402
from .analysis.reduce import reduce  # noqa: E402
from .encode.pipeline import EncodeOptions, EncodeResult, encode  # noqa: E402
from .errors import RayvitError  # noqa: E402

__all__ = ["encode", "reduce", "cluster", "EncodeOptions", "EncodeResult", "RayvitError", "__version__"]
