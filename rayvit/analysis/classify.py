"""``classify``: supervised mapping from labelled points/polygons with any scikit-learn
classifier or regressor, honest cross-validation, and a model refit on all labelled pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..report.quicklook import palette
from . import estimators
from .apply import AnalysisResult, Product, run
from .cluster import label_dtype
from .vectors import check_exists, samples_from, write_samples

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


def classify(input: str, vectors: str, output: str, label: str | None = None,
             method: str = "RandomForestClassifier", params: str | dict | None = None, cv: str = "kfold",
             folds_n: int = 5, group_column: str | None = None, cv_block_size: float | None = None,
             test: str | None = None, proba: bool = False, polygons: str = "all", samples: int = 1000,
             seed: int = 0, vector_crs: str | None = None, bands: Sequence[int] | None = None,
             block_size: int = 512, model: str | None = None, overwrite: bool = False,
             address: str | None = None, progress: bool = True, dry_run: bool = False) -> AnalysisResult:
    """Train ``method`` on the pixels ``vectors`` select (``label`` column), cross-validate,
    refit on all of them and map every pixel of ``input``.

    ``cv``: ``kfold`` (stratified for classifiers), ``group`` (``group_column``), ``spatial``
    (folds of ``cv_block_size`` square blocks in CRS units, default 32 pixels), ``none``;
    ``test``: a separate vector file to evaluate on instead. With ``model``, a saved model
    is applied and nothing is trained (``vectors`` may then be None).
    """
    from sklearn.base import is_classifier, is_regressor

    if cv not in CV_MODES:
        raise InputError(f"--cv must be one of {', '.join(CV_MODES)}, got {cv!r}.")
    if cv == "group" and not group_column:
        raise InputError("--cv group needs --group-column COLUMN (e.g. the polygon id).")
    est = None
    if not model:
        if not vectors or not label:
            raise InputError("give the training vectors and --label COLUMN (or --model to apply a saved model).")
        check_exists(vectors)
        if test:
            check_exists(test)
        est = estimators.build(estimators.resolve("classify", method), params)
        if "random_state" in est.get_params() and "random_state" not in estimators.parse_params(params):
            est.set_params(random_state=seed)
        if not (is_classifier(est) or is_regressor(est)):
            raise InputError(f"--method {method!r} is neither a classifier nor a regressor.")
        if proba and not (is_classifier(est) and hasattr(est, "predict_proba")):
            raise InputError(f"--proba: {method} gives no class probabilities; leave --proba out or pick "
                             "a probabilistic classifier (e.g. RandomForestClassifier).")
    used = {}

    def labelled(path, mosaic, classes=None):
        gdf, s = samples_from(path, mosaic, vector_crs, polygons, samples, seed)
        if label not in gdf.columns:
            raise InputError(f"--label {label!r} is not a column of {path!r}; columns: "
                             f"{', '.join(c for c in gdf.columns if c != 'geometry')}.")
        column = gdf[label]
        if not is_classifier(est):
            import pandas as pd
            if not pd.api.types.is_numeric_dtype(column):
                raise InputError(f"--label {label!r} of {path!r} is not numeric ({column.dtype}), but "
                                 f"{method} is a regressor; give a numeric column or a classifier.")
        values = column.to_numpy()[s.feature]
        keep = ~np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
        return gdf, s, values, keep

    def fit(mosaic, pixels):
        gdf, s, y_raw, keep = labelled(vectors, mosaic)
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
        x0, y0 = mosaic.grid.affine @ (s.cols + 0.5, s.rows + 0.5)
        groups = None
        if cv == "group":
            if group_column not in gdf.columns:
                raise InputError(f"--group-column {group_column!r} is not a column of {vectors!r}; columns: "
                                 f"{', '.join(c for c in gdf.columns if c != 'geometry')}.")
            groups = gdf[group_column].astype(str).to_numpy()[s.feature]
        elif cv == "spatial":
            size = cv_block_size or 32 * mosaic.grid.res[0]
            groups = spatial_blocks(np.asarray(x0), np.asarray(y0), size)
        report = {"samples": s.report}
        fold = np.full(len(y), -1)
        score = (lambda t, p: classification_metrics(t, p, classes)) if classes else regression_metrics
        if test:
            _, ts, ty_raw, tkeep = labelled(test, mosaic)
            ty_raw = ty_raw[tkeep]
            if classes:
                unknown = sorted({str(v) for v in ty_raw.tolist()} - {str(c) for c in classes})
                if unknown:
                    raise InputError(f"--test {test!r} has classes the training data lacks: {', '.join(unknown)}.")
                index = {str(c): i for i, c in enumerate(classes)}
                ty = np.array([index[str(v)] for v in ty_raw.tolist()])
            else:
                ty = ty_raw.astype(np.float64)
            fitted = _clone(est).fit(s.values, y)
            report["test"] = score(ty, fitted.predict(ts.values[tkeep]))
            report["test"]["file"] = test
        elif cv != "none":
            fold = folds(cv, folds_n, y, groups, classes is not None, seed)
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
                report["cv"]["block_size"] = cv_block_size or 32 * mosaic.grid.res[0]
        final = Supervised(_clone(est).fit(s.values, y), classes)
        columns = {"label": np.array([str(v) for v in y_raw]) if classes else y, "fold": fold + 1}
        if classes:
            columns["code"] = y
        if groups is not None:
            columns["cv_group"] = groups
        used.update(samples=s, columns=columns, report=report)
        return final

    def metrics(model, mosaic, pixels, tally):
        out = {"method": type(model.estimator).__name__, "task": "classification" if model.classes else
               "regression", **used.get("report", {})}
        if model.classes:
            out["classes"] = [str(c) for c in model.classes]
            out["mapped_pixels_per_class"] = {str(c): int(tally[i]) if tally is not None and i < len(tally) else 0
                                              for i, c in enumerate(model.classes)}
        return out

    def extra(model, mosaic, outdir):
        if "samples" in used:
            write_samples(f"{outdir}/samples.gpkg", mosaic, used["samples"], used["columns"])

    def products(m):
        if not m.classes:
            return [Product("prediction", 1, "float32", np.nan, [label or "prediction"])]
        names = [str(c) for c in m.classes]
        out = [Product("prediction", 1, *label_dtype(len(names)), ["class"], colormap=palette(len(names)),
                       categories=names)]
        if proba:
            if not hasattr(m.estimator, "predict_proba"):
                raise InputError(f"--proba: the model's {type(m.estimator).__name__} gives no class "
                                 "probabilities; leave --proba out.")
            out.append(Product("probability", len(names), "float32", np.nan, names, method="proba"))
        return out

    config = {"vectors": vectors, "label": label, "method": method, "params": estimators.jsonable(params),
              "cv": cv, "folds": folds_n, "group_column": group_column, "cv_block_size": cv_block_size,
              "test": test, "proba": proba, "polygons": polygons, "samples": samples, "seed": seed,
              "vector_crs": vector_crs}
    return run("classify", input, output, config, fit, model, products, metrics, bands, block_size,
               overwrite, address, progress, statistics_pass=False, extra_files=extra, dry_run=dry_run)


def _clone(estimator):
    from sklearn.base import clone
    return clone(estimator)
