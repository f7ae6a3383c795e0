"""``classify``: supervised mapping from labelled points/polygons with any scikit-learn
classifier or regressor, honest cross-validation, and a model refit on all labelled pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..report.quicklook import palette
from . import estimators
from .cluster import label_dtype
from .source import BlockSource
from .stage import AnalysisResult, Product, Stage, run
from .vectors import check_exists, samples_frame, samples_from

CV_MODES = ("kfold", "group", "spatial", "none")


@dataclass
class Supervised:
    """A fitted estimator; classification predicts codes 0..K-1 of ``classes``."""

    estimator: Any
    classes: list | None          # None: regression
    n_outputs: int = 1

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(x))[:, None]

    def proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(x))


def classification_metrics(y: np.ndarray, pred: np.ndarray, classes: list) -> dict:
    """Scores of predictions ``pred`` of true codes ``y``. Balanced accuracy and Cohen's kappa
    need two true classes: with fewer (a spatial fold may hold one) they are None, not a
    warning and a NaN."""
    from sklearn import metrics as m
    labels = list(range(len(classes)))
    several = len(np.unique(y)) > 1
    return {"n": int(len(y)), "classes_present": int(len(np.unique(y))),
            "accuracy": float(m.accuracy_score(y, pred)),
            "balanced_accuracy": float(m.balanced_accuracy_score(y, pred)) if several else None,
            "f1_macro": float(m.f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
            "f1_weighted": float(m.f1_score(y, pred, average="weighted", labels=labels, zero_division=0)),
            "cohen_kappa": float(m.cohen_kappa_score(y, pred, labels=labels)) if several else None,
            "confusion_matrix": {"classes": [str(c) for c in classes], "rows_true_columns_predicted":
                                 m.confusion_matrix(y, pred, labels=labels).tolist()}}


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    from sklearn import metrics as m
    return {"n": int(len(y)), "mae": float(m.mean_absolute_error(y, pred)),
            "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
            "r2": float(m.r2_score(y, pred)) if len(y) > 1 else None}


def spatial_blocks(x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    """A group id per point: the ``size`` x ``size`` block (CRS units) that contains it."""
    bx, by = np.floor(x / size).astype(np.int64), np.floor(y / size).astype(np.int64)
    return np.unique(np.stack([bx, by], axis=1), axis=0, return_inverse=True)[1].ravel()


def folds(cv: str, n_folds: int, y: np.ndarray, groups: np.ndarray | None, classify: bool,
          seed: int) -> np.ndarray:
    """Fold index (0..n_folds-1) of every sample; the test fold of sample i is folds[i]."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    if n_folds < 2:
        raise InputError(f"--folds must be >= 2, got {n_folds}.")
    if len(y) < n_folds:
        raise InputError(f"{len(y)} labelled pixels are fewer than --folds {n_folds}; label more, or "
                         "use fewer folds.")
    if cv == "kfold":
        splitter = (StratifiedKFold if classify else KFold)(n_folds, shuffle=True, random_state=seed)
    else:
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            what = "--group-column values" if cv == "group" else "spatial blocks (--block-size)"
            raise InputError(f"--cv {cv}: only {n_groups} {what} for {n_folds} folds; use fewer "
                             f"--folds{' or a smaller --block-size' if cv == 'spatial' else ''}.")
        splitter = GroupKFold(n_folds)
    out = np.full(len(y), -1)
    try:
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            out[test] = k
    except ValueError as exc:
        raise InputError(f"--cv {cv} with {n_folds} folds: {exc}") from None
    return out


class Classify(Stage):
    """Labelled pixels -> a class (or value) for every pixel: ``prediction`` (and with
    ``proba`` the class probabilities, ``probability``); the training pixels, their labels
    and folds as ``samples.gpkg``."""

    name, product, saves_model = "classify", "prediction", True

    def __init__(self, vectors: str | None = None, label: str | None = None, method: str = "RandomForestClassifier",
                 params=None, cv: str = "kfold", folds_n: int = 5, group_column: str | None = None,
                 cv_block: float | None = None, test: str | None = None, proba: bool = False, polygons: str = "all",
                 samples: int = 1000, seed: int = 0, vector_crs: str | None = None, fitted: bool = False):
        from sklearn.base import is_classifier, is_regressor

        if cv not in CV_MODES:
            raise InputError(f"--cv must be one of {', '.join(CV_MODES)}, got {cv!r}.")
        if cv == "group" and not group_column:
            raise InputError("--cv group needs --group-column COLUMN (e.g. the polygon id).")
        self.vectors, self.label, self.method, self.params, self.cv = vectors, label, method, params, cv
        self.folds_n, self.group_column, self.cv_block, self.test, self.proba = folds_n, group_column, cv_block, test, proba
        self.polygons, self.samples, self.seed, self.vector_crs = polygons, samples, seed, vector_crs
        self.estimator = None
        if fitted:
            return
        if not vectors or not label:
            raise InputError("give the training vectors and --label COLUMN (or --model to apply a saved model).")
        check_exists(vectors)
        if test:
            check_exists(test)
        est = self.estimator = estimators.build(estimators.resolve("classify", method), params)
        if "random_state" in est.get_params() and "random_state" not in estimators.parse_params(params):
            est.set_params(random_state=seed)
        if not (is_classifier(est) or is_regressor(est)):
            raise InputError(f"--method {method!r} is neither a classifier nor a regressor.")
        if proba and not (is_classifier(est) and hasattr(est, "predict_proba")):
            raise InputError(f"--proba: {method} gives no class probabilities; leave --proba out or pick "
                             "a probabilistic classifier (e.g. RandomForestClassifier).")

    def config(self) -> dict:
        return {"vectors": self.vectors, "label": self.label, "method": self.method,
                "params": estimators.jsonable(self.params), "cv": self.cv, "folds": self.folds_n,
                "group_column": self.group_column, "cv_block": self.cv_block, "test": self.test,
                "proba": self.proba, "polygons": self.polygons, "samples": self.samples, "seed": self.seed,
                "vector_crs": self.vector_crs}

    def _labelled(self, path, source):
        from sklearn.base import is_classifier

        gdf, s = samples_from(path, source, self.vector_crs, self.polygons, self.samples, self.seed)
        label = self.label
        if label not in gdf.columns:
            raise InputError(f"--label {label!r} is not a column of {path!r}; columns: "
                             f"{', '.join(c for c in gdf.columns if c != 'geometry')}.")
        column = gdf[label]
        if not is_classifier(self.estimator):
            import pandas as pd
            if not pd.api.types.is_numeric_dtype(column):
                raise InputError(f"--label {label!r} of {path!r} is not numeric ({column.dtype}), but "
                                 f"{self.method} is a regressor; give a numeric column or a classifier.")
        values = column.to_numpy()[s.feature]
        keep = ~np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
        return gdf, s, values, keep

    def fit(self, source, pixels) -> "Classify":
        from sklearn.base import is_classifier

        est, label, cv, folds_n = self.estimator, self.label, self.cv, self.folds_n
        gdf, s, y_raw, keep = self._labelled(self.vectors, source)
        s.values, s.rows, s.cols, s.feature, y_raw = (s.values[keep], s.rows[keep], s.cols[keep],
                                                     s.feature[keep], y_raw[keep])
        s.report["pixels_without_label"] = int((~keep).sum())
        if is_classifier(est):
            classes = sorted(set(y_raw.tolist()), key=lambda v: (str(type(v)), v))
            if len(classes) < 2:
                raise InputError(f"--label {label!r}: only one class ({classes[0]!r}) among the "
                                 f"{len(y_raw)} labelled pixels; a classifier needs at least two.")
            index = {c: i for i, c in enumerate(classes)}
            y = np.array([index[v] for v in y_raw.tolist()])
        else:
            classes, y = None, y_raw.astype(np.float64)
        x0, y0 = source.grid.affine @ (s.cols + 0.5, s.rows + 0.5)
        groups = None
        if cv == "group":
            if self.group_column not in gdf.columns:
                raise InputError(f"--group-column {self.group_column!r} is not a column of {self.vectors!r}; "
                                 f"columns: {', '.join(c for c in gdf.columns if c != 'geometry')}.")
            groups = gdf[self.group_column].astype(str).to_numpy()[s.feature]
        elif cv == "spatial":
            groups = spatial_blocks(np.asarray(x0), np.asarray(y0), self.cv_block or 32 * source.grid.res[0])
        report = {"samples": s.report}
        fold = np.full(len(y), -1)
        score = (lambda t, p: classification_metrics(t, p, classes)) if classes else regression_metrics
        if self.test:
            _, ts, ty_raw, tkeep = self._labelled(self.test, source)
            ty_raw = ty_raw[tkeep]
            if classes:
                unknown = sorted({str(v) for v in ty_raw.tolist()} - {str(c) for c in classes})
                if unknown:
                    raise InputError(f"--test {self.test!r} has classes the training data lacks: "
                                     f"{', '.join(unknown)}.")
                index = {str(c): i for i, c in enumerate(classes)}
                ty = np.array([index[str(v)] for v in ty_raw.tolist()])
            else:
                ty = ty_raw.astype(np.float64)
            fitted = _clone(est).fit(s.values, y)
            report["test"] = score(ty, fitted.predict(ts.values[tkeep]))
            report["test"]["file"] = self.test
        elif cv != "none":
            fold = folds(cv, folds_n, y, groups, classes is not None, self.seed)
            pooled = np.zeros(len(y), dtype=np.float64 if classes is None else np.int64)
            per_fold = []
            for k in range(folds_n):
                train, held = fold != k, fold == k
                if classes is not None and len(np.unique(y[train])) < 2:
                    raise InputError(f"--cv {cv}: fold {k + 1} leaves a single class to train on; use "
                                     "fewer --folds or another --cv.")
                pred = _clone(est).fit(s.values[train], y[train]).predict(s.values[held])
                pooled[held] = pred
                per_fold.append({"fold": k + 1, **score(y[held], pred)})
            report["cv"] = {"mode": cv, "folds": per_fold, "pooled": score(y, pooled),
                            "mean": {key: float(np.mean(values)) for key in per_fold[0]
                                     if (values := [f[key] for f in per_fold if isinstance(f[key], float)])}}
            if cv == "spatial":
                report["cv"]["cv_block"] = self.cv_block or 32 * source.grid.res[0]
        self.model_ = Supervised(_clone(est).fit(s.values, y), classes)
        columns = {"label": np.array([str(v) for v in y_raw]) if classes else y, "fold": fold + 1}
        if classes:
            columns["code"] = y
        if groups is not None:
            columns["cv_group"] = groups
        self.samples_, self.columns_, self.report_ = s, columns, report
        return self

    def products(self) -> list[Product]:
        m = self.model_
        if not m.classes:
            return [Product("prediction", 1, "float32", np.nan, [self.label or "prediction"])]
        names = [str(c) for c in m.classes]
        out = [Product("prediction", 1, *label_dtype(len(names)), ["class"], colormap=palette(len(names)),
                       categories=names)]
        if self.proba:
            if not hasattr(m.estimator, "predict_proba"):
                raise InputError(f"--proba: the model's {type(m.estimator).__name__} gives no class "
                                 "probabilities; leave --proba out.")
            out.append(Product("probability", len(names), "float32", np.nan, names, method="proba"))
        return out

    def extras(self, source, windows) -> dict:
        if getattr(self, "samples_", None) is None:      # a saved model applied: nothing trained
            return {}
        return {"samples.gpkg": samples_frame(source.grid, source.bands, self.samples_, self.columns_)}

    def metrics(self, source, pixels, tally) -> dict:
        m = self.model_
        out = {"method": type(m.estimator).__name__, "task": "classification" if m.classes else "regression",
               **getattr(self, "report_", {})}
        if m.classes:
            out["classes"] = [str(c) for c in m.classes]
            out["mapped_pixels_per_class"] = {str(c): int(tally[i]) if tally is not None and i < len(tally) else 0
                                              for i, c in enumerate(m.classes)}
        return out


def classify(input: str, vectors: str, output: str, label: str | None = None,
             method: str = "RandomForestClassifier", params: str | dict | None = None, cv: str = "kfold",
             folds_n: int = 5, group_column: str | None = None, cv_block: float | None = None,
             test: str | None = None, proba: bool = False, polygons: str = "all", samples: int = 1000,
             seed: int = 0, vector_crs: str | None = None, bands: Sequence[int] | None = None,
             block_size: int = 512, model: str | None = None, overwrite: bool = False,
             address: str | None = None, progress: bool = True, dry_run: bool = False,
             format: str = "gtiff") -> AnalysisResult:
    """Train ``method`` on the pixels ``vectors`` select (``label`` column), cross-validate,
    refit on all of them and map every pixel of ``input``.

    ``cv``: ``kfold`` (stratified for classifiers), ``group`` (``group_column``), ``spatial``
    (folds of ``cv_block`` square blocks in CRS units, default 32 pixels), ``none``;
    ``test``: a separate vector file to evaluate on instead. With ``model``, a saved model
    is applied and nothing is trained (``vectors`` may then be None).
    """
    stage = Classify(vectors, label, method, params, cv, folds_n, group_column, cv_block, test, proba, polygons,
                     samples, seed, vector_crs, fitted=bool(model))
    return run(stage, BlockSource.open(input, bands), output, model, block_size, overwrite, address, progress,
               dry_run, format)


def _clone(estimator):
    from sklearn.base import clone
    return clone(estimator)


def arguments(p) -> None:
    """``rayvit classify``'s options (:mod:`rayvit.stages`)."""
    from ..options import analysis_common

    p.description = ("Train any scikit-learn classifier or regressor on the pixels labelled "
                     "geometries select, cross-validate it, refit it on all labelled pixels "
                     "and map every pixel block by block in Ray tasks. Writes prediction.tif "
                     "(class codes in the smallest unsigned type with a colour table and "
                     "category names, nodata = its maximum; regression: float32), optional "
                     "probability.tif, metrics.json (per fold and pooled), model.joblib, "
                     "samples.gpkg (pixels used, labels, folds, values) and quicklook.png.")
    p.epilog = ("example: rayvit classify out/features.gti.gpkg train.gpkg -o cls/ --label Type "
                "--cv spatial --cv-block 2000")
    analysis_common(p, vectors="optional", standardize=False)
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
                        "spatial: by --cv-block square blocks, so neighbouring pixels never sit in both "
                        "training and test; none")
    g.add_argument("--folds", dest="folds_n", type=int, default=5, help="number of folds (default 5)")
    g.add_argument("--group-column", help="with --cv group: the column whose values form the groups")
    g.add_argument("--cv-block", type=float,
                   help="with --cv spatial: block side in CRS units (default: 32 pixels)")
    g.add_argument("--test", help="a separate labelled vector file to evaluate on (instead of --cv)")
