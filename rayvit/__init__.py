"""rayvit: raster mosaics of any size -> Vision Transformer feature maps on Ray."""

from .version import __version__  # noqa: F401

# Public names resolve on first use (PEP 562): importing the package -- which every Ray
# worker does to unpickle its function -- then costs nothing, and an encoder actor does
# not import scikit-learn nor a read task torch.
_EXPORTS = {
    "EncodeOptions": "rayvit.encode.pipeline", "EncodeResult": "rayvit.encode.pipeline",
    "encode_dates": "rayvit.encode.pipeline", "RayvitError": "rayvit.errors", "open": "rayvit.io.arrays:open_array",
}
# and every stage of the registry (rayvit.stages) is ``rayvit.<name>``
from .stages import STAGES  # noqa: E402

__all__ = [*STAGES, *_EXPORTS, "__version__"]

# The function ``rayvit.encode`` shares its name with the subpackage ``rayvit.encode``.
# Python binds a subpackage as an attribute of its parent when it is first imported, which
# would hide the function from then on; loading the (empty) subpackage now and dropping
# that binding leaves the name to ``__getattr__``.
from . import encode  # noqa: E402

del encode


def __getattr__(name: str):
    import importlib

    module = STAGES[name].module if name in STAGES else _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rayvit' has no attribute {name!r}")
    module, _, attribute = module.partition(":")      # "module:function" where the names differ
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *STAGES, *_EXPORTS])
