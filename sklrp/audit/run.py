"""One audit: explain every sample, evaluate the heatmaps, search for separate strategies, write it all.

:func:`audit` is what ``sklrp audit`` runs; it takes fitted models and arrays and writes
``report.html`` (self-contained), the PNG figures and ``summary.json`` into ``out``.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np

from .errors import AuditError
from .figures import legend_outside
from .inputs import aopc_setup, image_shape_of, is_image
from .quality import PERTURBATIONS, context_section, perturbation_quality
from .strategies import strategies_section
from .workspace import Workspace, parallel

__all__ = ["audit", "make_explainer", "explain_parallel", "model_name"]

_MAX_HEATMAPS = 16
_MAX_FINITE_DIFF_CALLS = 5000


def model_name(model):
    """``Pipeline(A -> B)`` or the estimator's class name."""
    steps = getattr(model, "steps", None)
    if steps:
        return "Pipeline(" + " -> ".join(type(s).__name__ for _, s in steps) + ")"
    return type(model).__name__


def model_input(model, X):
    """X as the model takes it: flat rows for 2-D estimators, else as given."""
    n_in = getattr(model, "n_features_in_", None)
    if n_in is None and getattr(model, "kernel", None) != "precomputed" and hasattr(model, "shape_fit_"):
        n_in = model.shape_fit_[1]  # SVC with a callable kernel sets no n_features_in_
    if n_in is None:
        return X  # image stages (dense SIFT) and torch nets take the array as given
    d = int(np.prod(X.shape[1:]))
    if X.ndim > 2 and n_in == X.shape[1] and d != n_in:
        return X  # an image stage that records the second axis of (n, H, W)
    if d != n_in:
        raise AuditError(f"X has shape {X.shape} ({d} features per sample) but the model expects {n_in} features")
    return X.reshape(len(X), -1)


def make_explainer(model, X, y=None, *, rule="epsilon", epsilon=1e-2, device="auto", taylor_reference="mean"):
    """A fitted ``LRPTransformer`` for the fitted ``model`` (explained as is, in float64).

    The audit states conservation (Eq. (2.12)) to rounding, which float32 would blur.
    Models explained by a Taylor decomposition (RBF and chi2 SVMs) are expanded at the training
    mean (``taylor_reference="mean"``): the audit compares maps across a class, and relevance
    relative to the average sample puts a shortcut's share consistently on the shortcut,
    where root points (each sample's own nearest boundary point) spread it unevenly (on a
    tagged digits class with an RBF SVM, the tenth percentile of the tag's share of positive
    relevance was 0.19-0.20 at the mean against 0.03-0.08 at root points).
    Raises :class:`AuditError` when sklrp cannot explain the model.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklrp.audit import make_explainer
    >>> X = np.random.RandomState(0).rand(40, 3); y = (X[:, 0] > 0.5).astype(int)
    >>> make_explainer(LogisticRegression().fit(X, y), X, y).explain(X[:2]).relevance.shape
    (2, 3)
    """
    from sklearn.frozen import FrozenEstimator

    from ..explain import LRPTransformer

    if not hasattr(model, "predict") and not hasattr(model, "decision_function"):
        raise AuditError(f"{type(model).__name__} is not a fitted estimator (no predict/decision_function)")
    lrp = LRPTransformer(FrozenEstimator(model), rule=rule, epsilon=epsilon, device=device, dtype="float64",
                         taylor_reference=taylor_reference)
    try:
        lrp.fit(X, y)
    except TypeError as exc:  # the registry's "no propagator for ..." message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AuditError(f"sklrp cannot explain {model_name(model)}: {first}") from None
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AuditError(f"cannot explain {model_name(model)} on this data: {first}") from None
    return lrp


def _explain_chunk(lrp, X, target):
    return lrp.explain(X, target=target)


def explain_parallel(lrp, X, target="predicted", *, n_jobs=None, chunk_size=256, verbose=False):
    """Explain many samples in chunks through joblib; one :class:`~sklrp.Explanation` for all.

    Parameters
    ----------
    lrp : fitted LRPTransformer
    X : ndarray of shape (n_samples, ...)
    target : "predicted", label or array-like of shape (n_samples,), default="predicted"
    n_jobs : int, default=None
        joblib workers (None: 1, or the active ``joblib.parallel_config``; the ``"dask"``
        backend runs the chunks on a Dask cluster).
    chunk_size : int, default=256
    verbose : bool, default=False

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklrp.audit import explain_parallel, make_explainer
    >>> X = np.random.RandomState(0).rand(40, 3); y = (X[:, 0] > 0.5).astype(int)
    >>> lrp = make_explainer(LogisticRegression().fit(X, y), X, y)
    >>> E = explain_parallel(lrp, X, chunk_size=16, n_jobs=2)
    >>> E.relevance.shape, bool(np.allclose(E.relevance.sum(1) + E.bias_relevance + E.residual, E.output))
    ((40, 3), True)
    """
    from joblib import delayed

    from ..explanation import Explanation

    n = len(X)
    per_sample = not (isinstance(target, str) and target == "predicted") and np.ndim(target) > 0
    chunks = [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]
    tasks = (delayed(_explain_chunk)(lrp, X[c], target[c] if per_sample else target) for c in chunks)
    parts = parallel(tasks, n_jobs=n_jobs, verbose=verbose, desc="explaining", total=len(chunks))
    cat = lambda key: np.concatenate([getattr(p, key) for p in parts])  # noqa: E731
    return Explanation(relevance=cat("relevance"), bias_relevance=cat("bias_relevance"), output=cat("output"),
                       target=cat("target"), residual=cat("residual"), taylor_remainder=cat("taylor_remainder"))


def _predictor(model):
    """``inputs -> predicted labels`` (skorch nets take float32)."""
    def predict(Z):
        Z = model_input(model, np.asarray(Z, dtype=float))
        return model.predict(Z.astype(np.float32) if hasattr(model, "module_") else Z)
    return predict


def _conservation(E):
    """Conservation (Eq. (2.12)): what the explanation does not account for, split by cause."""
    rel = np.abs(E.residual) / np.maximum(np.abs(E.output), np.finfo(float).tiny)
    return {"max_abs_residual": float(np.abs(E.residual).max()),
            "median_relative_residual": float(np.median(rel)),
            "max_abs_taylor_remainder": float(np.abs(E.taylor_remainder).max()),
            "max_abs_absorbed": float(np.abs(E.absorbed).max())}


def _sensitivity(lrp, X, t, notes):
    from ..evaluation import sensitivity_heatmap

    try:
        return sensitivity_heatmap(lrp, X, target=t, method="autograd")
    except (ValueError, TypeError, RuntimeError):
        n_calls = 2 * X[0].size * len(X)
        if n_calls > _MAX_FINITE_DIFF_CALLS:
            notes.append(f"Sensitivity baseline skipped: the model is not differentiable in torch and finite "
                         f"differences would need {n_calls} model evaluations.")
            return None
        try:
            return sensitivity_heatmap(lrp, X, target=t, method="numerical")
        except (ValueError, TypeError, RuntimeError) as exc:
            notes.append(f"Sensitivity baseline not computed: {str(exc).splitlines()[0]}")
            return None


def _aopc(name, lrp, Xm, R, tgt, shape, save, notes, *, n_jobs, n_steps, region_size, perturbation,
          random_state, verbose, max_samples):
    from .. import plotting

    image = is_image(shape)
    region_size, n_steps, n_regions, warning = aopc_setup(shape, region_size, n_steps)
    if warning:
        notes.append(f"AOPC: {warning}.")
    rng = np.random.RandomState(random_state)
    sub = np.sort(rng.permutation(len(Xm))[:max_samples])
    X, Rs, t = Xm[sub], R[sub], tgt[sub]
    sens = _sensitivity(lrp, X, t, notes)
    res = perturbation_quality(lrp, X, Rs, t, sensitivity=None if sens is None else sens.reshape(Rs.shape),
                               region_size=region_size, n_steps=n_steps, perturbation=perturbation,
                               image_shape=tuple(shape) if image and X.ndim == 2 else None,
                               random_state=random_state, n_jobs=n_jobs, verbose=verbose)
    ax = plotting.plot_perturbation_curves(
        res["curves"], aopc=res["scores"], title=f"{name}: region perturbation",
        xlabel=(f"perturbation steps ({region_size}x{region_size} regions, {perturbation})" if image
                else f"perturbation steps (features, {perturbation})"))
    ax.figure.set_size_inches(7.5, 3.6)
    legend_outside(ax)
    return {"scores": res["scores"], "comparisons": res["comparisons"], "n_samples": int(len(X)),
            "n_steps": n_steps, "region_size": region_size, "n_regions": n_regions, "perturbation": perturbation,
            "warning": warning,
            "setup": (f"{len(X)} samples, L = {n_steps} steps of {n_regions} regions "
                      f"({region_size}x{region_size} pixels)" if image else f"{len(X)} samples, L = {n_steps} "
                      "features") + f", replaced by {PERTURBATIONS[perturbation]}; random order: mean of "
                      f"10 orders per sample.",
            "fig_curves": save(ax.figure, f"{name}_aopc.png")}


def _relevance_figures(name, maps, R, tgt, out, shape, save, feature_names):
    from .. import plotting

    classes = np.unique(tgt)
    if is_image(shape):
        pick = np.concatenate([np.flatnonzero(tgt == c)[: max(1, _MAX_HEATMAPS // len(classes))] for c in classes])
        pick = pick[:_MAX_HEATMAPS]
        fig = plotting.heatmap_grid(maps[pick], ncols=min(8, len(pick)),
                                    titles=[f"{t} (f={o:.2f})" for t, o in zip(tgt[pick], out[pick])])
        fig.suptitle(f"{name}: LRP relevance maps (red: for, blue: against the explained class)")
        figs = {"fig_heatmaps": save(fig, f"{name}_heatmaps.png")}
        fig = plotting.heatmap_grid(np.stack([maps[tgt == c].mean(0) for c in classes]),
                                    titles=[f"class {c}: mean R" for c in classes], normalize="map")
        figs["fig_mean_heatmaps"] = save(fig, f"{name}_mean_heatmaps.png")
        return figs
    from matplotlib.figure import Figure

    flat = R.reshape(len(R), -1)
    fig = Figure(figsize=(4.2 * min(len(classes), 3), 0.25 * min(flat.shape[1], 15) + 1.6))
    for k, c in enumerate(classes[:3]):
        ax = fig.add_subplot(1, min(len(classes), 3), k + 1)
        plotting.plot_feature_importance(flat[tgt == c], feature_names, max_features=15, ax=ax,
                                         title=f"class {c}: mean |R|")
    return {"fig_heatmaps": save(fig, f"{name}_features.png")}


def _audit_model(name, model, X, y, masks, shape, save, *, n_jobs, device, rule, epsilon, n_steps, region_size,
                 perturbation, aopc_samples, max_spray_samples, random_state, verbose, ground_truth, probe, alpha,
                 feature_names):
    from sklearn.base import is_classifier

    t0 = time.perf_counter()
    Xm = model_input(model, X)
    lrp = make_explainer(model, Xm, y, rule=rule, epsilon=epsilon, device=device)
    classifier = is_classifier(model) or getattr(lrp, "classes_", None) is not None
    target = y if classifier and y is not None else "predicted"
    try:
        E = explain_parallel(lrp, Xm, target, n_jobs=n_jobs, verbose=verbose)
    except ValueError as exc:
        raise AuditError(f"cannot explain {name} on this data: {str(exc).splitlines()[0]}") from None
    tgt = E.target if classifier else np.zeros(len(X), dtype=int)
    predict = _predictor(model)
    pred = predict(X) if classifier else None
    R = E.relevance
    maps = R.reshape((len(R),) + tuple(shape))
    images = X.reshape((len(X),) + tuple(shape))
    notes = []
    if maps.ndim == 4:  # colour: channels last
        maps, images = maps.sum(-1), images.mean(-1)
        if probe:
            notes.append("Reliance probe skipped: it pastes grey-value regions and these are colour images.")
            probe = False
    sec = {"name": name, "model": model_name(model), "n_samples": int(len(X)),
           "explained": ("true class (y)" if y is not None else "predicted class") if classifier else "output 0",
           "accuracy": float(np.mean(pred == y)) if classifier and y is not None else None,
           "rule": f"{rule} (epsilon={epsilon})" if rule == "epsilon" else str(rule),
           "conservation": _conservation(E), "mean_output": float(E.output.mean()),
           "mean_bias_relevance": float(E.bias_relevance.mean())}
    sec.update(_relevance_figures(name, maps, R, tgt, E.output, shape, save, feature_names))
    sec["aopc"] = _aopc(name, lrp, Xm, R, tgt, shape, save, notes, n_jobs=n_jobs, n_steps=n_steps,
                        region_size=region_size, perturbation=perturbation, random_state=random_state,
                        verbose=verbose, max_samples=aopc_samples)
    sec["context_ratio"] = None
    if masks is not None:
        if not is_image(shape):
            notes.append("Context ratio not computed: it needs image data (n, H, W).")
        else:
            sec["context_ratio"] = context_section(maps, masks, tgt, notes)
    sec["strategies"] = strategies_section(name, maps, images, tgt, shape, save, notes,
                                           max_samples=max_spray_samples, alpha=alpha,
                                           random_state=random_state, n_jobs=n_jobs, verbose=verbose,
                                           ground_truth=ground_truth, predict=predict if classifier else None,
                                           probe=probe, feature_names=feature_names)
    sec["notes"] = notes
    sec["seconds"] = round(time.perf_counter() - t0, 2)
    return sec


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def audit(models, X, y=None, masks=None, *, out="audit-report", image_shape=None, data_name="X", n_jobs=None,
          device="auto", rule="epsilon", epsilon=1e-2, n_steps=None, region_size=None, perturbation="mean",
          aopc_samples=64, max_spray_samples=150, alpha=0.05, probe=False, random_state=0, verbose=False,
          ground_truth=None, feature_names=None, notes=None):
    """Audit fitted models on data and write ``report.html``, PNGs and ``summary.json`` to ``out``.

    Parameters
    ----------
    models : dict of str -> fitted estimator
    X : ndarray of shape (n_samples, ...)
        Samples; images as (n, H, W) / (n, H, W, C) or flat rows.
    y : ndarray of shape (n_samples,), default=None
        True labels: the explained class and the grouping of the strategy search; None explains
        the predicted class.
    masks : ndarray of bool, default=None
        Object masks (one value per pixel), for the context ratio (Eq. (4.11)).
    out : str, default="audit-report"
        Output folder, written atomically (temporary folder, then renamed).
    image_shape : tuple, default=None
        Shape of one sample for display; inferred from ``X`` (square flat rows).
    data_name : str, default="X"
    n_jobs : int, default=None
        joblib workers for explaining, AOPC and embeddings.
    device : str, default="auto"
    rule, epsilon : LRP rule for intermediate linear steps (see :class:`sklrp.LRPTransformer`).
    n_steps, region_size : int, default=None
        Region perturbation (Eq. (3.6)): steps ``L`` and region side ``m``; None chooses them from
        the image size (about 8 x 8 regions, every region perturbed).
    perturbation : {"mean", "uniform", "blur", "flip"}, default="mean"
        The ``g`` of Eq. (3.6).
    aopc_samples : int, default=64
    max_spray_samples : int, default=150
        At most this many maps per class go into the strategy search.
    alpha : float, default=0.05
        Flag classes whose subgroup p-value is at most ``alpha`` (see :func:`shortcut_scan`).
    probe : bool, default=False
        Paste the distinctive region of flagged classes into other classes' images and report the
        predictions that flip (the reliance test).
    random_state : int, default=0
    verbose : bool, default=False
    ground_truth : ndarray of bool, default=None
        Planted cues per sample (the demo's watermark), counted per group.
    feature_names : list of str, default=None
        Names of tabular features.
    notes : list of str, default=None
        Remarks shown at the top of the report.

    Returns
    -------
    summary : dict
        What ``summary.json`` contains.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklrp.audit import audit
    >>> rng = np.random.RandomState(0); X = rng.rand(60, 4, 4); y = (X[:, 0, 0] > .5).astype(int)
    >>> model = LogisticRegression().fit(X.reshape(60, -1), y)
    >>> s = audit({"logreg": model}, X, y, out=os.path.join(tempfile.mkdtemp(), "rep"))
    >>> s["models"][0]["n_samples"], s["models"][0]["strategies"]["n_classes"]
    (60, 2)
    """
    from .. import __version__
    from .report import render_report

    t0 = time.perf_counter()
    X = np.asarray(X, dtype=float)
    if not np.all(np.isfinite(X)):
        raise AuditError("X contains NaN or infinite values")
    shape = image_shape_of(X, image_shape)
    if perturbation not in PERTURBATIONS:
        raise AuditError(f"perturbation must be one of {sorted(PERTURBATIONS)}, got {perturbation!r}")
    aopc_setup(shape, region_size, n_steps)  # bad region sizes fail before any work
    with Workspace(out) as ws:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo"):
            matplotlib.use("Agg")  # the report is written to files; never open windows
        files = {}

        def save(fig, fname):
            path = ws.file(fname)
            fig.savefig(path, dpi=90, bbox_inches="tight")
            files[fname] = path
            return fname

        sections = []
        from joblib import parallel_config

        # joblib's temporary files (if any) live in the run's own folder, never in /dev/shm
        with warnings.catch_warnings(), parallel_config(temp_folder=ws.path):
            warnings.simplefilter("ignore", FutureWarning)
            for name, model in models.items():
                sections.append(_audit_model(
                    name, model, X, y, masks, shape, save, n_jobs=n_jobs, device=device, rule=rule,
                    epsilon=epsilon, n_steps=n_steps, region_size=region_size, perturbation=perturbation,
                    aopc_samples=aopc_samples, max_spray_samples=max_spray_samples, random_state=random_state,
                    verbose=verbose, ground_truth=ground_truth, probe=probe, alpha=alpha,
                    feature_names=feature_names))
        summary = _jsonable({
            "sklrp_version": __version__,
            "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "data": {"name": data_name, "shape": list(X.shape), "image_shape": list(shape), "has_y": y is not None,
                     "has_masks": masks is not None},
            "notes": list(notes or []),
            "models": sections,
            "seconds": round(time.perf_counter() - t0, 2),
        })
        with open(ws.file("report.html"), "w", encoding="utf-8") as fh:
            fh.write(render_report(summary, files))
        with open(ws.file("summary.json"), "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
        ws.publish()
    return summary
