"""Estimators by name: look up, validate ``--params``, and apply to pixels fitted elsewhere.

``reduce`` accepts any class of ``sklearn.decomposition`` / ``sklearn.manifold`` and
``UMAP``; ``cluster`` any class of ``sklearn.cluster``; ``classify`` any scikit-learn
classifier or regressor. ``--params`` is checked against the estimator's own signature
(unknown keys list the valid ones) and, where scikit-learn declares them, its parameter
constraints; elsewhere each value must have the type of the parameter's default.
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

FAMILIES = {
    "reduce": ("sklearn.decomposition", "sklearn.manifold"),
    "cluster": ("sklearn.cluster",),
}
EXTRA = {"reduce": {"UMAP": "umap.UMAP"}, "cluster": {}}
# not per-pixel models: they cluster bands or bicluster a matrix, or need a given dictionary
EXCLUDED = {"FeatureAgglomeration", "SpectralBiclustering", "SpectralCoclustering", "SparseCoder"}


def _is_estimator(obj) -> bool:
    return inspect.isclass(obj) and hasattr(obj, "fit") and hasattr(obj, "get_params")


def available(stage: str, extra: dict[str, type] | None = None) -> dict[str, Any]:
    """Estimator names usable by ``stage`` -> class (or ``module.Class`` text for optional ones)."""
    if stage == "classify":
        from sklearn.utils import all_estimators
        found = dict(all_estimators(type_filter=["classifier", "regressor"]))
    else:
        found = {}
        for module in FAMILIES[stage]:
            mod = importlib.import_module(module)
            found.update({n: getattr(mod, n) for n in getattr(mod, "__all__", dir(mod))
                          if _is_estimator(getattr(mod, n, None)) and n not in EXCLUDED})
        found.update(EXTRA[stage])
    found.update(extra or {})
    return dict(sorted(found.items()))


def resolve(stage: str, method: str, extra: dict[str, type] | None = None) -> type:
    """The estimator class called ``method`` for ``stage``; an unknown name lists the valid ones."""
    names = available(stage, extra)
    if method not in names:
        raise InputError(f"unknown --method {method!r} for {stage}; valid: {', '.join(names)}.")
    cls = names[method]
    if isinstance(cls, str):
        module, name = cls.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
    return cls


def parse_params(params: str | dict | None) -> dict:
    if params is None:
        return {}
    if isinstance(params, dict):
        return dict(params)
    try:
        value = json.loads(params)
    except json.JSONDecodeError as exc:
        raise InputError(f"--params is not valid JSON ({exc.msg} at character {exc.pos}): {params!r}; "
                         "write it like '{\"n_neighbors\": 30}'.") from None
    if not isinstance(value, dict):
        raise InputError(f"--params must be a JSON object like '{{\"n_neighbors\": 30}}', got {params!r}.")
    return value


def jsonable(params: str | dict | None) -> dict:
    """``params`` as plain JSON values (arrays as lists), for provenance."""
    return json.loads(json.dumps(parse_params(params), default=lambda v: np.asarray(v).tolist()))


def _type_ok(value, default) -> bool:
    if default is None or isinstance(default, (list, tuple, dict)) or callable(default):
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def build(cls: type, params: str | dict | None, defaults: dict | None = None, **mapped) -> Any:
    """``cls(**params, **mapped)``, validated; ``mapped`` values of ``None`` are left out.

    ``mapped`` holds rayvit's own options (``n_components`` for ``--n-components``...): each
    goes to the estimator's parameter of that name, and is an error if it has none.
    ``defaults`` are rayvit's defaults for parameters neither ``params`` nor ``mapped`` set.
    """
    given = parse_params(params)
    signature = inspect.signature(cls.__init__).parameters
    valid = [n for n, p in signature.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise InputError(f"--params: {', '.join(map(repr, unknown))} not a parameter of {cls.__name__}; "
                         f"valid keys: {', '.join(valid)}.")
    for option, value in mapped.items():
        if value is None:
            continue
        if option not in valid:
            raise InputError(f"--{option.replace('_', '-')} does not apply to {cls.__name__} (it has no "
                             f"{option!r} parameter); leave it out.")
        if option in given and given[option] != value:
            raise InputError(f"--{option.replace('_', '-')} {value} and --params {option}={given[option]!r} "
                             "disagree; give one of them.")
        given[option] = value
    for name, value in (defaults or {}).items():
        if name in valid and name not in given:
            given[name] = value
    for name, value in given.items():
        default = signature[name].default
        if default is not inspect.Parameter.empty and not _type_ok(value, default):
            raise InputError(f"--params: {name}={value!r} has the wrong type for {cls.__name__} "
                             f"(expected {type(default).__name__}, like its default {default!r}).")
    estimator = cls(**given)
    if hasattr(estimator, "_validate_params") and getattr(estimator, "_parameter_constraints", None):
        try:
            estimator._validate_params()
        except ValueError as exc:
            raise InputError(f"--params: {exc}") from None
    return estimator


@dataclass
class Propagation:
    """Outputs for any pixel from its nearest sampled pixel (for estimators that cannot be
    applied to new data: t-SNE, MDS, DBSCAN, HDBSCAN, agglomerative and spectral clustering)."""

    sample: np.ndarray
    values: np.ndarray

    def __post_init__(self):
        from sklearn.neighbors import NearestNeighbors
        self.index_ = NearestNeighbors(n_neighbors=1).fit(self.sample)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.values[self.index_.kneighbors(x, return_distance=False)[:, 0]]


def fitted_function(estimator, x: np.ndarray, output: str):
    """Fit ``estimator`` on ``x`` and return how it maps new pixels, and how it was chosen.

    ``output`` is ``"transform"`` (reduce) or ``"predict"`` (cluster). Estimators without
    that method are fitted with ``fit_transform`` / ``fit_predict`` and extended to new
    pixels by nearest-neighbour propagation from the sample.
    """
    try:
        if hasattr(estimator, output):
            estimator.fit(x)
            return getattr(estimator, output), output
        values = getattr(estimator, f"fit_{output}")(x)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{type(estimator).__name__} failed on the {len(x)} sampled pixels: {exc}; "
                         "check --params and --sample.") from exc
    return Propagation(x, np.asarray(values)), "nearest sampled pixel"
