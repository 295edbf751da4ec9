"""``sklrp audit``: an end-to-end audit report of a fitted model.

Given a fitted model (a joblib file of any estimator or pipeline sklrp can explain)
and data (an ``.npz`` file with ``X``, optional ``y`` and optional ``masks``), or
``--demo``, the audit

1. explains every sample with LRP (the true class when ``y`` is given, else the
   predicted class),
2. measures heatmap quality by region perturbation (AOPC, Eqs. (3.6)-(3.7)) for
   LRP, sensitivity (squared gradient) and a random ordering,
3. computes the context ratio (Eq. (4.11)) when object masks are given,
4. runs SpRAy per class (Algorithm 3, Fig. 6.5) and flags classes whose relevance
   maps split into several clusters -- candidates for a Clever-Hans strategy,

and writes ``report.html`` (self-contained, images embedded), the PNG figures and
``summary.json``. Everything is written to a temporary directory first and moved to
``--out`` at the end, so a failed audit leaves nothing half-written.

Long loops (explaining, AOPC, per-class SpRAy) run through joblib with ``n_jobs``;
on a Dask cluster, wrap the call in ``joblib.parallel_config(backend="dask")``.

Exit codes: 0 success, 2 bad input (missing file, unsupported model, data of the
wrong shape) with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

__all__ = ["main", "audit", "explain_parallel", "AuditError"]

_MAX_HEATMAPS = 16
_MAX_FINITE_DIFF_CALLS = 5000
_PERTURBATIONS = {
    "mean": "the data-set mean (removes information without adding energy)",
    "uniform": "uniform noise in the data range (Section 3.4.1)",
    "blur": "a blurred copy",
    "flip": "flipped values low + high - x (Fig. 3.4)",
}


class AuditError(Exception):
    """Bad input to the audit; the CLI prints it as one line and exits with code 2."""


# --------------------------------------------------------------------------- inputs
def load_model(path):
    """Load a fitted estimator from a joblib file, with a clear error when it fails."""
    import joblib

    if not os.path.isfile(path):
        raise AuditError(f"model file not found: {path}")
    try:
        return joblib.load(path)
    except Exception as exc:  # any unpickling problem is a bad input file
        raise AuditError(f"cannot load model from {path}: {type(exc).__name__}: {exc}") from None


def load_data(path):
    """Read ``X`` (required), ``y``, ``masks`` and ``image_shape`` from an ``.npz`` file."""
    if not os.path.isfile(path):
        raise AuditError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise AuditError(f"cannot read {path} as .npz: {type(exc).__name__}: {exc}") from None
    if "X" not in data:
        raise AuditError(f"{path} has no array 'X' (found: {sorted(data) or 'nothing'})")
    X = np.asarray(data["X"])
    if X.ndim < 2 or X.shape[0] < 1:
        raise AuditError(f"X must have shape (n_samples, ...) with n_samples >= 1, got {X.shape}")
    if X.dtype.kind not in "biuf":
        raise AuditError(f"X must be numeric, got dtype {X.dtype}")
    X = X.astype(float)
    if not np.all(np.isfinite(X)):
        raise AuditError("X contains NaN or infinite values")
    y = data.get("y")
    if y is not None and (y.ndim != 1 or y.shape[0] != X.shape[0]):
        raise AuditError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
    masks = data.get("masks")
    if masks is not None:
        masks = np.asarray(masks).astype(bool)
        if masks.shape[0] != X.shape[0]:
            raise AuditError(f"masks has {masks.shape[0]} entries but X has {X.shape[0]} samples")
    image_shape = data.get("image_shape")
    if image_shape is not None:
        image_shape = tuple(int(v) for v in np.ravel(image_shape))
        if int(np.prod(image_shape)) != int(np.prod(X.shape[1:])):
            raise AuditError(f"image_shape {image_shape} does not match X with shape {X.shape}")
    return X, y, masks, image_shape


def _model_input(model, X):
    """Reshape X to what the model takes: flat rows for 2-D estimators, else as given."""
    n_in = getattr(model, "n_features_in_", None)
    if n_in is None and getattr(model, "kernel", None) != "precomputed" and hasattr(model, "shape_fit_"):
        n_in = model.shape_fit_[1]  # SVC with a callable kernel sets no n_features_in_
    if n_in is None:
        # image stages (dense SIFT) and torch nets (skorch) take the array as given
        return X
    d = int(np.prod(X.shape[1:]))
    if X.ndim > 2 and n_in == X.shape[1] and d != n_in:
        return X  # an image stage (e.g. dense SIFT) that records the second axis of (n, H, W)
    if d != n_in:
        raise AuditError(f"X has shape {X.shape} ({d} features per sample) but the model expects "
                         f"{n_in} features")
    return X.reshape(len(X), -1)


def _image_shape(X, image_shape):
    if image_shape is not None:
        return image_shape
    if X.ndim >= 3:
        return X.shape[1:]
    side = int(round(np.sqrt(X.shape[1])))
    return (side, side) if side * side == X.shape[1] else (1, X.shape[1])


# --------------------------------------------------------------------------- explaining
def make_explainer(model, X, y=None, *, rule="epsilon", epsilon=1e-2, device="auto"):
    """An ``LRPTransformer`` for the fitted ``model``, prepared on ``X``.

    The audit computes in float64 on every device: its report states conservation
    (Eq. (2.12)) to rounding, which float32, the GPU default, would blur to ~1e-5.
    Raises :class:`AuditError` when sklrp cannot explain the model.
    """
    from sklearn.frozen import FrozenEstimator

    from .explain import LRPTransformer

    if not hasattr(model, "predict") and not hasattr(model, "decision_function"):
        raise AuditError(f"{type(model).__name__} is not a fitted estimator (no predict/decision_function)")
    lrp = LRPTransformer(FrozenEstimator(model), rule=rule, epsilon=epsilon, device=device, dtype="float64")
    try:
        lrp.fit(X, y)
    except TypeError as exc:  # the registry's "no propagator for ..." message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AuditError(f"sklrp cannot explain {_model_name(model)}: {first}") from None
    except ValueError as exc:
        raise AuditError(f"cannot explain {_model_name(model)} on this data: {exc}") from None
    return lrp


def _model_name(model):
    steps = getattr(model, "steps", None)
    if steps:
        return "Pipeline(" + " -> ".join(type(s).__name__ for _, s in steps) + ")"
    return type(model).__name__


def _explain_chunk(lrp, X, target):
    E = lrp.explain(X, target=target)
    return E.relevance, E.bias_relevance, E.output, E.target, E.residual


def explain_parallel(lrp, X, target="predicted", *, n_jobs=None, chunk_size=256, verbose=False):
    """Explain many samples in chunks through joblib.

    Parameters
    ----------
    lrp : fitted LRPTransformer
    X : ndarray of shape (n_samples, ...)
    target : "predicted", label or array-like of shape (n_samples,), default="predicted"
        As in :meth:`sklrp.LRPTransformer.explain`.
    n_jobs : int, default=None
        joblib workers (None: 1, or the active ``joblib.parallel_config``; use the
        ``"dask"`` backend there to run on a Dask cluster).
    chunk_size : int, default=256
        Samples per task.
    verbose : bool, default=False
        tqdm progress bar over chunks.

    Returns
    -------
    relevance, bias_relevance, output, target, residual : ndarrays
        As in :class:`sklrp.Explanation`, concatenated over chunks.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklrp.cli import explain_parallel, make_explainer
    >>> X = np.random.RandomState(0).rand(40, 3); y = (X[:, 0] > 0.5).astype(int)
    >>> lrp = make_explainer(LogisticRegression().fit(X, y), X, y)
    >>> R, Rb, out, t, res = explain_parallel(lrp, X, chunk_size=16, n_jobs=2)
    >>> R.shape, bool(np.allclose(R.sum(1) + Rb + res, out))
    ((40, 3), True)
    """
    from joblib import Parallel, delayed

    n = len(X)
    per_sample = not (isinstance(target, str) and target == "predicted") and np.ndim(target) > 0
    chunks = [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]
    tasks = (delayed(_explain_chunk)(lrp, X[c], target[c] if per_sample else target) for c in chunks)
    results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
    if verbose:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(chunks), desc="explaining", unit="chunk")
    parts = list(results)
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(5))


# --------------------------------------------------------------------------- evaluation
def _evaluation():
    """The evaluation module, or None while it is not part of this installation."""
    try:
        from . import evaluation
    except ImportError:
        return None
    return evaluation


def _spray_template(image_shape, random_state):
    from .spray import SpRAy

    spatial = len(image_shape) >= 2 and image_shape[0] > 1
    pool = (20, 20) if spatial and image_shape[0] * image_shape[1] > 400 else None
    # no t-SNE here: it is computed only for the classes the report shows (see _spray_section)
    return SpRAy(pool_shape=pool, map_shape=tuple(image_shape) if spatial else None, embedding=None, normalize="l2",
                 random_state=random_state)


def _fit_spray(template, maps):
    from sklearn.base import clone

    return clone(template).fit(maps)


def spray_per_class(relevance, groups, image_shape, *, n_jobs=None, min_samples=10, random_state=0,
                    verbose=False):
    """SpRAy on the relevance maps of every class (Fig. 6.5), one joblib task per class.

    Classes with fewer than ``min_samples`` maps are skipped. A class is *flagged*
    when the eigengap selects more than one cluster: its maps follow several
    distinct strategies, one of which may be a Clever Hans.

    Returns
    -------
    rows : list of dict
        Per class, ranked by ascending ``lambda_2`` (most suspicious first):
        ``class``, ``n_samples``, ``n_clusters``, ``lambda2``, ``eigengap``,
        ``flagged``, ``cluster_sizes``, ``eigenvalues``, and the fitted ``spray``.
    skipped : list
        Classes with too few maps.
    """
    from joblib import Parallel, delayed

    groups = np.asarray(groups)
    template = _spray_template(image_shape, random_state)
    flat = relevance.reshape(len(relevance), -1)
    classes = [c for c in np.unique(groups) if (groups == c).sum() >= min_samples]
    skipped = [c for c in np.unique(groups) if (groups == c).sum() < min_samples]
    tasks = (delayed(_fit_spray)(template, flat[groups == c]) for c in classes)
    results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
    if verbose:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(classes), desc="SpRAy per class", unit="class")
    rows = []
    for sp, c in zip(results, classes):  # results first: tqdm sees the end
        ev = np.asarray(sp.eigenvalues_, dtype=float)
        rows.append({
            "class": c.item() if hasattr(c, "item") else c,
            "n_samples": int((groups == c).sum()),
            "n_clusters": int(sp.n_clusters_),
            "lambda2": float(ev[1]) if ev.size > 1 else float("nan"),
            "eigengap": float(getattr(sp, "eigengap_", float("nan"))),
            "flagged": bool(sp.n_clusters_ > 1),
            "cluster_sizes": np.bincount(sp.labels_).tolist(),
            "eigenvalues": ev.tolist(),
            "spray": sp,
        })
    rows.sort(key=lambda r: (r["lambda2"], -r["eigengap"]))
    return rows, [c.item() if hasattr(c, "item") else c for c in skipped]


# --------------------------------------------------------------------------- one model
def _savefig(fig, tmp, name, files):
    path = os.path.join(tmp, name)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    files[name] = path
    return name


def _audit_model(name, model, X, y, masks, image_shape, tmp, *, n_jobs, device, rule, epsilon,
                 n_steps, region_size, perturbation, aopc_samples, max_spray_samples, random_state, verbose,
                 ground_truth=None):
    """Explain, evaluate and SpRAy one model; returns its summary dict and its figures."""
    from matplotlib.figure import Figure

    from . import plotting

    t0 = time.perf_counter()
    Xm = _model_input(model, X)
    lrp = make_explainer(model, Xm, y, rule=rule, epsilon=epsilon, device=device)
    from sklearn.base import is_classifier

    classifier = is_classifier(model) or getattr(lrp, "classes_", None) is not None
    # classifiers: explain the true class when labels are given; regressors: their (first) output
    target = y if classifier and y is not None else "predicted"
    try:
        R, Rb, out, tgt, res = explain_parallel(lrp, Xm, target, n_jobs=n_jobs, verbose=verbose)
    except ValueError as exc:
        raise AuditError(f"cannot explain {name} on this data: {exc}") from None
    if not classifier:
        tgt = np.zeros(len(X), dtype=int)  # one group: SpRAy over all maps
    # skorch nets are float32 and do not cast numpy input themselves
    pred = model.predict(Xm.astype(np.float32) if hasattr(model, "module_") else Xm)
    maps = R.reshape((len(R),) + tuple(image_shape))
    images = X.reshape((len(X),) + tuple(image_shape))
    files, notes = {}, []
    sec = {
        "name": name,
        "model": _model_name(model),
        "n_samples": int(len(X)),
        "explained": ("true class (y)" if y is not None else "predicted class") if classifier else "output 0",
        "accuracy": float(np.mean(pred == y)) if classifier and y is not None else None,
        "rule": f"{rule} (epsilon={epsilon})" if rule == "epsilon" else str(rule),
        "conservation_max_abs_residual": float(np.abs(res).max()),
        "mean_output": float(out.mean()),
        "mean_bias_relevance": float(Rb.mean()),
    }

    # heatmaps of the first samples of every class (joint colour scale per sample)
    classes = np.unique(tgt)
    pick = np.concatenate([np.flatnonzero(tgt == c)[: max(1, _MAX_HEATMAPS // len(classes))] for c in classes])
    pick = pick[:_MAX_HEATMAPS]
    if len(image_shape) >= 2 and image_shape[0] > 1:
        fig = plotting.heatmap_grid(maps[pick], images=None, ncols=min(8, len(pick)),
                                    titles=[f"{t} (f={o:.2f})" for t, o in zip(tgt[pick], out[pick])])
        fig.suptitle(f"{name}: LRP relevance maps (red: for, blue: against the explained class)")
        sec["fig_heatmaps"] = _savefig(fig, tmp, f"{name}_heatmaps.png", files)
        mean_fig = plotting.heatmap_grid(np.stack([maps[tgt == c].mean(0) for c in classes]),
                                         titles=[f"class {c}: mean R" for c in classes], normalize="map")
        sec["fig_mean_heatmaps"] = _savefig(mean_fig, tmp, f"{name}_mean_heatmaps.png", files)
    else:  # tabular data: mean relevance of the most relevant features per class
        flat = R.reshape(len(R), -1)
        top = np.argsort(np.abs(flat).mean(0))[::-1][:20]
        fig = Figure(figsize=(6, 0.25 * len(top) + 1.2))
        ax = fig.add_subplot()
        for k, c in enumerate(classes):
            ax.barh(np.arange(len(top)) + 0.8 * k / len(classes), flat[tgt == c][:, top].mean(0),
                    height=0.8 / len(classes), label=f"class {c}")
        ax.set_yticks(np.arange(len(top)) + 0.4 - 0.4 / len(classes), [f"x{j}" for j in top])
        ax.invert_yaxis()
        ax.set_xlabel("mean relevance")
        ax.legend(fontsize="small")
        ax.set_title(f"{name}: most relevant features")
        sec["fig_heatmaps"] = _savefig(fig, tmp, f"{name}_features.png", files)

    # heatmap quality: region perturbation, LRP vs sensitivity vs random
    sec["aopc"] = _aopc_section(name, model, lrp, Xm, R, tgt, image_shape, tmp, files, notes,
                                n_jobs=n_jobs, n_steps=n_steps, region_size=region_size,
                                perturbation=perturbation, random_state=random_state, verbose=verbose,
                                max_samples=aopc_samples)

    # context ratio (Eq. (4.11)) where object masks exist
    sec["context_ratio"] = _context_section(maps, masks, image_shape, tgt, notes)

    # SpRAy per class
    sec["spray"] = _spray_section(name, maps, images, tgt, image_shape, tmp, files, notes, n_jobs=n_jobs,
                                  max_samples=max_spray_samples, random_state=random_state, verbose=verbose,
                                  ground_truth=ground_truth)
    sec["notes"] = notes
    sec["seconds"] = round(time.perf_counter() - t0, 2)
    return sec, files


def _aopc_section(name, model, lrp, Xm, R, tgt, image_shape, tmp, files, notes, **kw):
    ev = _evaluation()
    if ev is None:
        notes.append("AOPC not computed: sklrp.evaluation is not part of this installation yet.")
        return None
    return _aopc_compute(ev, name, model, lrp, Xm, R, tgt, image_shape, tmp, files, notes, **kw)


def _aopc_task(ev, f, X, relevance, target, order, seed, kw):
    return ev.perturbation_curve(f, X, relevance, target=target, order=order, random_state=seed, **kw)


def _aopc_compute(ev, name, model, lrp, Xm, R, tgt, image_shape, tmp, files, notes, *, n_jobs, n_steps,
                  region_size, perturbation, random_state, verbose, max_samples):
    """Perturbation curves for LRP (MoRF, LeRF), sensitivity (MoRF) and random order; AOPC by Eq. (3.7)."""
    from joblib import Parallel, delayed

    from . import plotting

    rng = np.random.RandomState(random_state)
    sub = np.sort(rng.permutation(len(Xm))[:max_samples])
    X, Rs, t = Xm[sub], R[sub], tgt[sub]
    spatial = len(image_shape) >= 2 and image_shape[0] > 1
    kw = dict(region_size=region_size if spatial else 1, n_steps=n_steps, perturbation=perturbation,
              image_shape=tuple(image_shape) if spatial and X.ndim == 2 else None)
    sens = None
    try:
        sens = ev.sensitivity_heatmap(lrp, X, target=t, method="autograd")
    except (ValueError, TypeError, RuntimeError):
        # not differentiable in torch: finite differences cost 2 * n_features model calls per sample
        n_calls = 2 * X[0].size * len(X)
        if n_calls <= _MAX_FINITE_DIFF_CALLS:
            try:
                sens = ev.sensitivity_heatmap(lrp, X, target=t, method="numerical")
            except (ValueError, TypeError, RuntimeError) as exc:
                notes.append(f"Sensitivity baseline not computed: {exc}")
        else:
            notes.append(f"Sensitivity baseline skipped: the model is not differentiable in torch and finite "
                         f"differences would need {n_calls} model evaluations.")
    n_regions = int(np.prod([-(-s // kw["region_size"]) for s in image_shape[:2]])) if spatial else X[0].size
    kw["n_steps"] = min(n_steps, n_regions)
    methods = [("LRP", "morf", Rs), ("LRP (LeRF)", "lerf", Rs), ("random", "random", Rs)]
    if sens is not None:
        methods.insert(1, ("sensitivity", "morf", sens.reshape(Rs.shape)))
    # statistics of g come from all evaluated samples, and the chunking does not depend on
    # n_jobs, so the curves are the same for any number of workers
    kw["value_range"] = (float(X.min()), float(X.max()))
    if perturbation == "mean":
        kw["perturbation"] = ev.MeanPerturbation(mean=X.mean(axis=0))
    chunks = np.array_split(np.arange(len(X)), -(-len(X) // 16))
    tasks = [(m, c) for m in methods for c in chunks if len(c)]
    jobs = (delayed(_aopc_task)(ev, lrp, X[c], rel[c], t[c], order, random_state + i, kw)
            for i, ((_, order, rel), c) in enumerate(tasks))
    results = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    if verbose:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(tasks), desc="AOPC", unit="task")
    curves = {}
    for c, ((label, _, _), _) in zip(results, tasks):  # results first: tqdm sees the end
        curves.setdefault(label, []).append(c)
    curves = {k: np.concatenate(v) for k, v in curves.items()}
    # Eq. (3.7): mean over samples and steps of f(x^(0)) - f(x^(k))
    scores = {k: float((v[:, :1] - v).mean()) for k, v in curves.items()}
    ax = plotting.plot_perturbation_curves(curves, aopc=scores, title=f"{name}: region perturbation",
                                           xlabel=f"perturbation steps ({kw['region_size']}x{kw['region_size']} "
                                                  f"regions, {perturbation})" if spatial else "perturbation steps")
    morf = {k: v for k, v in scores.items() if k != "LRP (LeRF)"}
    best = max(morf, key=morf.get)
    verdict = (f"Best MoRF AOPC: {best}." + (" LRP orders the regions better than the baselines."
                                            if best == "LRP" else " LRP does not beat this baseline here."))
    return {"scores": scores, "n_samples": int(len(X)), "n_steps": int(kw["n_steps"]),
            "region_size": int(kw["region_size"]), "lrp_best": best == "LRP", "verdict": verdict,
            "perturbation": perturbation,
            "setup": f"{len(X)} samples, L = {kw['n_steps']} steps, regions of {kw['region_size']}x"
                     f"{kw['region_size']} pixels replaced by: {_PERTURBATIONS[perturbation]}.",
            "fig_curves": _savefig(ax.figure, tmp, f"{name}_aopc.png", files)}


def _context_section(maps, masks, image_shape, tgt, notes):
    if masks is None:
        return None
    ev = _evaluation()
    if ev is None or not hasattr(ev, "context_ratio"):
        notes.append("Context ratio not computed: sklrp.evaluation.context_ratio is not available.")
        return None
    if masks.size != maps.size:
        raise AuditError(f"masks with shape {masks.shape} do not match the relevance maps {maps.shape}")
    m = masks.reshape(maps.shape[:3]) if maps.ndim >= 3 else None
    if m is None:
        notes.append("Context ratio not computed: it needs image data (n, H, W).")
        return None
    # Eq. (4.11) needs pixels inside and outside the object; images without an object are skipped
    flat = m.reshape(len(m), -1)
    valid = flat.any(axis=1) & ~flat.all(axis=1)
    if not valid.any():
        notes.append("Context ratio not computed: no mask has pixels both inside and outside the object.")
        return None
    if not valid.all():
        notes.append(f"Context ratio: {int((~valid).sum())} images without an object (or all object) skipped.")
    try:
        mu = np.asarray(ev.context_ratio(maps[valid], m[valid]), dtype=float)
    except ValueError as exc:
        raise AuditError(f"masks do not fit the data: {exc}") from None
    mu[~np.isfinite(mu)] = np.nan
    t = tgt[valid]
    per_class = {str(c): float(np.nanmean(mu[t == c])) if np.isfinite(mu[t == c]).any() else None
                 for c in np.unique(t)}
    return {"mean": float(np.nanmean(mu)) if np.isfinite(mu).any() else None, "per_class": per_class,
            "n_images": int(valid.sum())}


def _spray_section(name, maps, images, tgt, image_shape, tmp, files, notes, *, n_jobs, max_samples,
                   random_state, verbose, ground_truth):
    from sklearn.base import clone

    from . import plotting

    try:
        from . import spray  # noqa: F401
    except ImportError:
        notes.append("SpRAy not run: sklrp.spray is not part of this installation yet.")
        return None
    # cap the maps per class so the audit stays fast on large data sets
    rng = np.random.RandomState(random_state)
    keep = np.concatenate([rng.permutation(np.flatnonzero(tgt == c))[:max_samples] for c in np.unique(tgt)])
    keep.sort()
    rows, skipped = spray_per_class(maps[keep], tgt[keep], image_shape, n_jobs=n_jobs,
                                    random_state=random_state, verbose=verbose)
    if skipped:
        notes.append(f"SpRAy skipped classes with fewer than 10 samples: {skipped}")
    if not rows:
        notes.append("SpRAy not run: no class has 10 or more samples.")
        return None
    flagged = [r["class"] for r in rows if r["flagged"]]
    spectra = {r["class"]: r["eigenvalues"] for r in rows}
    fig = plotting.plot_class_spectra(spectra, highlight=flagged,
                                      title=f"{name}: smallest eigenvalues of L_sym per class")
    out = {"flagged": flagged, "classes": [], "fig_class_spectra": _savefig(fig, tmp, f"{name}_class_spectra.png",
                                                                          files)}
    for r in rows:
        sp = r.pop("spray")
        c = r["class"]
        if r["flagged"] or r is rows[0]:
            idx = keep[tgt[keep] == c]
            fig = plotting.plot_spectrum(sp, title=f"{name}, class {c}: eigenvalue spectrum").figure
            r["fig_spectrum"] = _savefig(fig, tmp, f"{name}_spectrum_class{c}.png", files)
            # t-SNE on SpRAy's affinity graph (Algorithm 3, lines 12-13); same seed, same clusters
            sp = sp.set_params(embedding="tsne").fit(maps[idx].reshape(len(idx), -1))
            if sp.embedding_ is not None:
                fig = plotting.plot_embedding(sp.embedding_, sp.labels_, thumbnails=maps[idx],
                                              title=f"{name}, class {c}: t-SNE of relevance maps").figure
                r["fig_embedding"] = _savefig(fig, tmp, f"{name}_embedding_class{c}.png", files)
            # a few maps per cluster, so a reader sees what each strategy looks like
            per = [np.flatnonzero(sp.labels_ == k)[:4] for k in range(sp.n_clusters_)]
            sel = np.concatenate(per)
            fig = plotting.heatmap_grid(maps[idx][sel], ncols=min(8, len(sel)),
                                        titles=[f"cluster {sp.labels_[i]}" for i in sel])
            r["fig_clusters"] = _savefig(fig, tmp, f"{name}_clusters_class{c}.png", files)
            if r["flagged"]:
                # the same analysis on the inputs: a split that is not there is the model's doing
                raw = clone(sp).set_params(embedding=None).fit(images[idx].reshape(len(idx), -1))
                r["n_clusters_inputs"] = int(raw.n_clusters_)
            if ground_truth is not None:
                gt = ground_truth[idx]
                r["planted_per_cluster"] = [
                    {"cluster": k, "size": int((sp.labels_ == k).sum()),
                     "planted": int(gt[sp.labels_ == k].sum())} for k in range(sp.n_clusters_)]
        out["classes"].append(r)
    return out


# --------------------------------------------------------------------------- report
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;background:#fff}h1{border-bottom:3px solid #b40426}h2{margin-top:2em;
border-bottom:1px solid #ccc}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:.4em 0}.flag{color:#b40426;font-weight:bold}.note{color:#666;font-style:italic}
.ok{color:#2a7d2a}
"""


def _img(files, name, alt):
    if not name:
        return ""
    with open(files[name], "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v, digits=4):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _table(header, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(summary, files):
    """The self-contained HTML report (figures embedded as base64 PNG)."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sklrp audit report</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>sklrp audit report</h1>",
             f"<p>Data: {e(summary['data']['name'])}, X of shape {tuple(summary['data']['shape'])}"
             f"{', with labels' if summary['data']['has_y'] else ''}"
             f"{', with object masks' if summary['data']['has_masks'] else ''}"
             f" &middot; sklrp {e(summary['sklrp_version'])} &middot; "
             f"{e(summary['created'])} &middot; {summary['seconds']:.1f} s</p>"]
    overview = [[e(s["name"]), e(s["model"]), s["n_samples"], _fmt(s["accuracy"]),
                 _fmt(s["conservation_max_abs_residual"], 3),
                 _fmt(s["aopc"]["scores"].get("LRP")) if s.get("aopc") else "–",
                 ", ".join(map(str, s["spray"]["flagged"])) if s.get("spray") else "–"]
                for s in summary["models"]]
    parts.append("<p>How to read this report: relevance maps show which pixels or features speak for (red) or "
                 "against (blue) the explained class (Layer-wise Relevance Propagation). AOPC checks that these maps "
                 "point at what the model really uses. SpRAy groups the maps of each class; a class whose maps "
                 "split into several groups is flagged, since one of its strategies may be a spurious cue "
                 "(a Clever Hans).</p>")
    parts += ["<h2 id='overview'>Overview</h2>",
              _table(["model", "estimator", "samples", "accuracy", "max |residual|", "AOPC (LRP)",
                      "flagged classes (SpRAy)"], overview)]
    for s in summary["models"]:
        n = e(s["name"])
        parts.append(f"<h2 id='model-{n}'>Model: {n}</h2>")
        parts.append(f"<p>{e(s['model'])}; explained: {e(s['explained'])}; LRP rule {e(s['rule'])}. "
                     f"Conservation (Eq. (2.5)): max |f(x) - &Sigma;R - R<sub>bias</sub>| = "
                     f"{_fmt(s['conservation_max_abs_residual'], 3)} (absorbed by stabilisers).</p>")
        parts.append(f"<h3 id='relevance-{n}'>Relevance maps</h3>")
        parts.append(_img(files, s.get("fig_heatmaps"), f"{s['name']} relevance maps"))
        parts.append(_img(files, s.get("fig_mean_heatmaps"), f"{s['name']} mean relevance per class"))
        parts.append(f"<h3 id='aopc-{n}'>Heatmap quality: region perturbation (AOPC)</h3>")
        a = s.get("aopc")
        if a:
            parts.append("<p>Regions are removed most-relevant-first (MoRF, Eq. (3.6)); a faster drop of "
                         "f(x), i.e. a larger AOPC (Eq. (3.7)), means the heatmap ranks the regions the model "
                         f"really uses first. {e(a['setup'])}</p>")
            parts.append(_table(["heatmap", "AOPC"], [[e(k), _fmt(v)] for k, v in a["scores"].items()]))
            verdict = a.get("verdict")
            if verdict:
                parts.append(f"<p class='{'ok' if a.get('lrp_best') else 'flag'}'>{e(verdict)}</p>")
            parts.append(_img(files, a.get("fig_curves"), f"{s['name']} perturbation curves"))
        c = s.get("context_ratio")
        if c:
            parts.append(f"<h3 id='context-{n}'>Context ratio (Eq. (4.11))</h3>")
            parts.append("<p>Mean relevance outside the object mask over the mean relevance inside; "
                         "values near or above 1 mean the model relies on context.</p>")
            parts.append(_table(["class", "context ratio"],
                                [[e(k), _fmt(v)] for k, v in c["per_class"].items()] + [["all", _fmt(c["mean"])]]))
        parts.append(f"<h3 id='spray-{n}'>SpRAy: prediction strategies per class</h3>")
        sp = s.get("spray")
        if sp:
            if sp["flagged"]:
                parts.append("<p class='flag'>Flagged: class(es) " + e(", ".join(map(str, sp["flagged"])))
                             + " &mdash; their relevance maps split into several clusters (eigengap), i.e. the "
                             "model uses more than one strategy. Inspect the clusters below for a Clever Hans "
                             "(e.g. a watermark or background cue).</p>")
            else:
                parts.append("<p class='ok'>No class flagged: every class has one connected group of "
                             "relevance maps.</p>")
            rows = [[e(str(r["class"])) + (" <span class='flag'>&#9873;</span>" if r["flagged"] else ""),
                     r["n_samples"], _fmt(r["lambda2"]), _fmt(r["eigengap"]), r["n_clusters"],
                     e(str(r["cluster_sizes"]))] for r in sp["classes"]]
            parts.append(_table(["class", "maps", "λ2", "eigengap", "clusters", "cluster sizes"], rows))
            parts.append(_img(files, sp.get("fig_class_spectra"), "eigenvalue spectra per class"))
            for r in sp["classes"]:
                if "fig_spectrum" not in r:
                    continue
                parts.append(f"<h4>Class {e(str(r['class']))}{' (flagged)' if r['flagged'] else ''}</h4>")
                if "n_clusters_inputs" in r:
                    k_in = r["n_clusters_inputs"]
                    parts.append(f"<p>SpRAy on the <em>input images</em> of this class finds {k_in} cluster(s)"
                                 + (" &mdash; the split exists only in the relevance maps, i.e. in how the model "
                                    "decides, not in what the images obviously show." if k_in == 1 else ".")
                                 + "</p>")
                if r.get("planted_per_cluster"):
                    parts.append(_table(["cluster", "size", "with planted watermark"],
                                        [[p["cluster"], p["size"], p["planted"]] for p in r["planted_per_cluster"]]))
                for key in ("fig_spectrum", "fig_embedding", "fig_clusters"):
                    parts.append(_img(files, r.get(key), f"class {r['class']} {key[4:]}"))
        for note in s.get("notes", []):
            parts.append(f"<p class='note'>{e(note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _check_out(out):
    """``out`` as an absolute path; refuse to replace anything that is not an sklrp report."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise AuditError(f"--out {out} exists and is not a directory")
        if os.listdir(out) and not os.path.isfile(os.path.join(out, "summary.json")):
            raise AuditError(f"--out {out} exists and is not an sklrp report; choose another directory")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise AuditError(f"parent directory of --out does not exist: {parent}")
    return out


def _prepare_out(out):
    """A fresh temp dir next to ``out`` (same file system, so the final move is a rename)."""
    out = _check_out(out)
    return out, tempfile.mkdtemp(prefix=".sklrp-audit-", dir=os.path.dirname(out))


def _publish(tmp, out):
    """Move the finished report into place (replacing an older report)."""
    old = None
    if os.path.exists(out):
        old = out + f".old-{os.getpid()}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def audit(models, X, y=None, masks=None, *, out="audit-report", image_shape=None, data_name="X",
          n_jobs=None, device="auto", rule="epsilon", epsilon=1e-2, n_steps=20, region_size=4,
          perturbation="mean", aopc_samples=64, max_spray_samples=150, random_state=0, verbose=False,
          ground_truth=None):
    """Audit fitted models on data and write ``report.html``, PNGs and ``summary.json`` to ``out``.

    Parameters
    ----------
    models : dict of str -> fitted estimator
        The models to audit (each is explained on ``X``).
    X : ndarray of shape (n_samples, ...)
        Samples; images as (n, H, W) / (n, H, W, C) or flat rows.
    y : ndarray of shape (n_samples,), default=None
        True labels: explained class and SpRAy grouping; predicted labels when None.
    masks : ndarray of bool, default=None
        Object masks with the image shape per sample, for the context ratio (Eq. (4.11)).
    out : str, default="audit-report"
        Output directory; written atomically (temp dir, then moved).
    image_shape : tuple, default=None
        Shape of one sample for display; inferred from ``X`` (square flat rows).
    data_name : str, default="X"
        Shown in the report.
    n_jobs : int, default=None
        joblib workers for explaining, AOPC and per-class SpRAy.
    device : str, default="auto"
        Torch device of the LRP computation (always in float64).
    rule, epsilon : LRP rule for intermediate linear steps (see :class:`sklrp.LRPTransformer`).
    n_steps, region_size : int
        Region perturbation: steps ``L`` and region size ``m`` (Eq. (3.6)).
    perturbation : {"mean", "uniform", "blur", "flip"}, default="mean"
        The ``g`` of Eq. (3.6). The thesis uses uniform noise; on images with a dark
        (zero) background, noise *adds* signal, so the default replaces a region by
        the data-set mean instead.
    aopc_samples : int, default=64
        Samples (drawn at random) whose perturbation curves are computed.
    max_spray_samples : int, default=150
        At most this many maps per class go into SpRAy.
    random_state : int, default=0
    verbose : bool, default=False
        Progress bars.
    ground_truth : ndarray of bool, default=None
        Planted artefacts per sample (the demo's watermark), reported per SpRAy cluster.

    Returns
    -------
    summary : dict
        What ``summary.json`` contains.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklrp.cli import audit
    >>> rng = np.random.RandomState(0); X = rng.rand(60, 4, 4); y = (X[:, 0, 0] > .5).astype(int)
    >>> model = LogisticRegression().fit(X.reshape(60, -1), y)
    >>> d = tempfile.mkdtemp()
    >>> s = audit({"logreg": model}, X, y, out=os.path.join(d, "rep"))
    >>> s["models"][0]["n_samples"], sorted(os.listdir(os.path.join(d, "rep")))[-2:]
    (60, ['report.html', 'summary.json'])
    """
    from . import __version__

    t0 = time.perf_counter()
    X = np.asarray(X, dtype=float)
    if not np.all(np.isfinite(X)):
        raise AuditError("X contains NaN or infinite values")
    image_shape = tuple(_image_shape(X, image_shape))
    out, tmp = _prepare_out(out)
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo"):
            matplotlib.use("Agg")  # the report is written to files; never open windows
        files, sections = {}, []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            for name, model in models.items():
                sec, f = _audit_model(name, model, X, y, masks, image_shape, tmp, n_jobs=n_jobs, device=device,
                                      rule=rule, epsilon=epsilon, n_steps=n_steps, region_size=region_size,
                                      perturbation=perturbation, aopc_samples=aopc_samples,
                                      max_spray_samples=max_spray_samples, random_state=random_state,
                                      verbose=verbose, ground_truth=ground_truth)
                sections.append(sec)
                files.update(f)
        summary = {
            "sklrp_version": __version__,
            "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "data": {"name": data_name, "shape": list(X.shape), "has_y": y is not None,
                     "has_masks": masks is not None},
            "models": sections,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        summary = _jsonable(summary)
        with open(os.path.join(tmp, "report.html"), "w", encoding="utf-8") as fh:
            fh.write(render_report(summary, files))
        with open(os.path.join(tmp, "summary.json"), "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


# --------------------------------------------------------------------------- demo
def demo_data(n_samples=600, random_state=0):
    """Clever-Hans images (class 0 partly watermarked), object masks and a train/test split."""
    from .datasets import make_clever_hans

    X, y, wm = make_clever_hans(n_samples=n_samples, random_state=random_state)
    X = np.clip(X, 0.0, None)  # non-negative pixels: the intersection kernel needs them
    H, W = X.shape[1:]
    rr, cc = np.mgrid[0:H, 0:W]
    # the shapes lie within ~0.28*min(H, W) + jitter of the centre: the object mask
    disc = (rr - (H - 1) / 2) ** 2 + (cc - (W - 1) / 2) ** 2 <= (0.28 * min(H, W) + 4) ** 2
    masks = np.broadcast_to(disc, X.shape).copy()
    half = n_samples // 2
    return (X[:half], y[:half]), (X[half:], y[half:], wm[half:], masks[half:])


def demo_models(X_train, y_train, *, device="auto", random_state=0):
    """Train the demo's models: an SVM (HIK when sklrp explains it) and, when ``sklrp.nn`` is there, a CNN."""
    from sklearn.base import clone
    from sklearn.svm import LinearSVC, SVC

    from .explain import LRPTransformer

    Xf = X_train.reshape(len(X_train), -1)
    models, notes = {}, []
    candidates = []
    try:
        from .kernels import intersection_kernel

        candidates.append(("svm-hik", SVC(kernel=intersection_kernel, C=1.0)))
    except ImportError:
        notes.append("sklrp.kernels is missing: no intersection-kernel SVM.")
    candidates.append(("linear-svm", LinearSVC(C=0.1, random_state=random_state)))
    for name, est in candidates:
        try:
            LRPTransformer(clone(est)).fit(Xf[:20], y_train[:20])
        except TypeError as exc:
            notes.append(f"{name} skipped: {str(exc).splitlines()[0]}")
            continue
        models[name] = est.fit(Xf, y_train)
        break
    cnn = _demo_cnn(X_train, y_train, device=device, random_state=random_state, notes=notes)
    if cnn is not None:
        models["cnn"] = cnn
    return models, notes


def _demo_cnn(X_train, y_train, *, device, random_state, notes):
    try:
        import sklrp.nn  # noqa: F401
    except ImportError:
        notes.append("CNN skipped: sklrp.nn (torch / skorch explainers) is not part of this installation yet.")
        return None
    try:
        from skorch import NeuralNetClassifier
    except ImportError:
        notes.append("CNN skipped: skorch is not installed (pip install skorch).")
        return None
    import torch
    from torch import nn

    torch.manual_seed(random_state)
    H, W = X_train.shape[1:]
    module = nn.Sequential(
        nn.Unflatten(1, (1, H)),  # (n, H, W) -> (n, 1, H, W): the net takes the images as they are
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * (H // 4) * (W // 4), int(np.max(y_train)) + 1),
    )
    net = NeuralNetClassifier(module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=3e-3,
                              max_epochs=15, batch_size=32, train_split=None, verbose=0,
                              device="cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    return net.fit(X_train.astype(np.float32), y_train.astype(np.int64))


def _parser():
    p = argparse.ArgumentParser(prog="sklrp", description="Layer-wise Relevance Propagation for scikit-learn.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    a = sub.add_parser("audit", help="explain a fitted model on data and write an HTML audit report",
                       description="Explain a fitted model with LRP, evaluate the heatmaps (AOPC), run SpRAy per "
                                   "class and write report.html, PNG figures and summary.json.")
    a.add_argument("model", nargs="?", help="fitted estimator or pipeline saved with joblib.dump")
    a.add_argument("data", nargs="?", help=".npz file with X, optional y, masks and image_shape")
    a.add_argument("--demo", action="store_true",
                   help="generate Clever-Hans data, train an SVM (and a CNN) and audit them")
    a.add_argument("--out", default="audit-report", help="output directory (default: audit-report)")
    a.add_argument("--n-jobs", type=int, default=None, help="joblib workers (default: 1)")
    a.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda (default: auto)")
    a.add_argument("--rule", default="epsilon", help="LRP rule for intermediate layers (default: epsilon)")
    a.add_argument("--epsilon", type=float, default=1e-2, help="epsilon of the epsilon rule (default: 0.01)")
    a.add_argument("--n-steps", type=int, default=20, help="perturbation steps L for AOPC (default: 20)")
    a.add_argument("--region-size", type=int, default=4, help="perturbed region size m (default: 4)")
    a.add_argument("--perturbation", default="mean", choices=sorted(_PERTURBATIONS),
                   help="region perturbation g of Eq. (3.6) (default: mean)")
    a.add_argument("--aopc-samples", type=int, default=64,
                   help="samples whose perturbation curves are computed (default: 64)")
    a.add_argument("--max-samples", type=int, default=None, help="audit at most this many samples")
    a.add_argument("--demo-samples", type=int, default=800,
                   help="size of the generated demo data, half for training (default: 800)")
    a.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def _run_audit(args):
    verbose = not args.quiet
    _check_out(args.out)  # before any expensive work
    try:
        from .rules import make_rule

        make_rule(args.rule, epsilon=args.epsilon)
    except (ValueError, TypeError) as exc:
        raise AuditError(f"--rule/--epsilon: {exc}") from None
    if args.n_jobs == 0:
        raise AuditError("--n-jobs must be a positive number of workers or negative (-1: all cores), not 0")
    if args.device not in ("auto", "cpu"):
        import torch

        try:
            dev = torch.device(args.device)
        except (RuntimeError, TypeError):
            raise AuditError(f"--device must be auto, cpu or cuda[:N], got {args.device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise AuditError(f"--device {args.device} was requested but CUDA is not available on this machine")
    for flag, value in (("--n-steps", args.n_steps), ("--region-size", args.region_size),
                        ("--demo-samples", args.demo_samples), ("--aopc-samples", args.aopc_samples)):
        if value < 1:
            raise AuditError(f"{flag} must be >= 1, got {value}")
    if args.demo:
        if args.model or args.data:
            raise AuditError("--demo takes no MODEL or DATA arguments")
        (Xtr, ytr), (X, y, wm, masks) = demo_data(args.demo_samples, args.seed)
        if verbose:
            print(f"demo: training models on {len(Xtr)} Clever-Hans images ...", file=sys.stderr)
        models, notes = demo_models(Xtr, ytr, device=args.device, random_state=args.seed)
        kw = dict(masks=masks, ground_truth=wm, data_name="make_clever_hans (demo, class 0 watermarked)",
                  image_shape=X.shape[1:])
    else:
        if not args.model or not args.data:
            raise AuditError("give MODEL and DATA files, or --demo")
        model = load_model(args.model)
        X, y, masks, image_shape = load_data(args.data)
        models, notes = {os.path.splitext(os.path.basename(args.model))[0]: model}, []
        kw = dict(masks=masks, data_name=os.path.basename(args.data), image_shape=image_shape)
        if masks is not None and masks[0].size != X[0].size:
            raise AuditError(f"masks must have one value per feature of a sample: {masks.shape} vs X {X.shape}")
    if args.max_samples is not None:
        sl = slice(0, max(1, args.max_samples))
        X, y = X[sl], None if y is None else y[sl]
        kw["masks"] = None if kw["masks"] is None else kw["masks"][sl]
        if kw.get("ground_truth") is not None:
            kw["ground_truth"] = kw["ground_truth"][sl]
    summary = audit(models, X, y, out=args.out, n_jobs=args.n_jobs, device=args.device, rule=args.rule,
                    epsilon=args.epsilon, n_steps=args.n_steps, region_size=args.region_size,
                    perturbation=args.perturbation, aopc_samples=args.aopc_samples, random_state=args.seed,
                    verbose=verbose, **kw)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for s in summary["models"]:
        flagged = s["spray"]["flagged"] if s.get("spray") else "n/a"
        aopc = s["aopc"]["scores"] if s.get("aopc") else "n/a"
        print(f"{s['name']}: accuracy={s['accuracy']}, AOPC={aopc}, SpRAy flagged classes={flagged}")
    print(f"report written to {os.path.join(os.path.abspath(args.out), 'report.html')}")
    return summary


def main(argv=None):
    """Entry point of the ``sklrp`` console script and ``python -m sklrp``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        _run_audit(args)
    except AuditError as exc:
        print(f"sklrp audit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
