"""rayvit's errors: one base class, each subclass also the built-in it resembles.

Callers can catch :class:`RayvitError` for anything rayvit refuses, or the built-in
(``except ValueError``) as they would for any library. Messages name the offending value
and what to do about it; the CLI prints them as one paragraph and exits non-zero.
"""


class RayvitError(Exception):
    """Base class of everything rayvit raises on purpose."""


class InputError(RayvitError, ValueError):
    """A raster, vector or option value that cannot be used as given."""


class RasterOpenError(InputError, OSError):
    """A raster that is missing, unreachable or unreadable."""


class TilingError(InputError):
    """A tile size / stride / extent that breaks the feature grid."""


class ModelError(RayvitError, ValueError):
    """A model name, weights file or layer that timm cannot provide."""


class OutputError(RayvitError, OSError):
    """An output location that cannot be written, or that holds another run."""


class MissingDependencyError(RayvitError, ImportError):
    """An optional package that a URL scheme or a model needs is not installed."""
