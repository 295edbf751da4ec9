"""Heatmap quality for the audit: AOPC with a measured margin (Eqs. (3.6)-(3.7)) and the context ratio.

AOPC comes from :func:`sklrp.perturbation_curve` and :func:`sklrp.evaluation.aopc_from_curves`
(the library's one implementation of Eq. (3.7)), per sample, so that the claim "LRP orders the
regions better than X" can carry a bootstrap confidence interval of the paired difference;
without one, the report says the two are not distinguishable.
"""

from __future__ import annotations

import numpy as np

from .workspace import parallel

__all__ = ["PERTURBATIONS", "perturbation_quality", "paired_difference", "context_section"]

PERTURBATIONS = {
    "mean": "the data-set mean (removes information without adding energy)",
    "uniform": "uniform noise in the data range (Section 3.4.1)",
    "blur": "a blurred copy",
    "flip": "flipped values low + high - x (Fig. 3.4)",
}
_RANDOM_REPEATS = 10
_CHUNK = 16


def _curve_task(f, X, relevance, target, order, n_repeats, seed, kw):
    from ..evaluation import perturbation_curve

    return perturbation_curve(f, X, relevance, target=target, order=order, n_repeats=n_repeats,
                              random_state=seed, **kw)


def paired_difference(a, b, *, n_boot=2000, level=0.95, random_state=0):
    """Mean of ``a - b`` (paired per sample) and a percentile bootstrap confidence interval.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.audit.quality import paired_difference
    >>> d, (lo, hi) = paired_difference(np.arange(10.0) + 1, np.arange(10.0))
    >>> d, lo, hi
    (1.0, 1.0, 1.0)
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.RandomState(random_state)
    means = d[rng.randint(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return float(d.mean()), (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def perturbation_quality(f, X, relevance, target, *, sensitivity=None, region_size, n_steps, perturbation,
                         image_shape=None, random_state=0, n_jobs=None, verbose=False):
    """Perturbation curves and per-sample AOPC for LRP (MoRF, LeRF), sensitivity and random orders.

    Returns
    -------
    result : dict
        ``curves`` (label -> (n, L+1)), ``per_sample`` (label -> (n,)), ``scores`` (label ->
        AOPC of Eq. (3.7)), ``comparisons`` (LRP vs random / sensitivity: difference, 95 %
        bootstrap interval, verdict text).
    """
    from ..evaluation import MeanPerturbation, aopc_from_curves

    kw = dict(region_size=region_size, n_steps=n_steps, image_shape=image_shape,
              value_range=(float(X.min()), float(X.max())),
              perturbation=MeanPerturbation(mean=X.mean(axis=0)) if perturbation == "mean" else perturbation)
    methods = [("LRP", "morf", relevance, 1), ("random", "random", relevance, _RANDOM_REPEATS),
               ("LRP (LeRF)", "lerf", relevance, 1)]
    if sensitivity is not None:
        methods.insert(1, ("sensitivity", "morf", sensitivity, 1))
    chunks = [c for c in np.array_split(np.arange(len(X)), max(1, -(-len(X) // _CHUNK))) if len(c)]
    tasks = [(m, c) for m in methods for c in chunks]
    from joblib import delayed

    jobs = (delayed(_curve_task)(f, X[c], rel[c], target[c], order, reps, random_state + i, kw)
            for i, ((_, order, rel, reps), c) in enumerate(tasks))
    results = parallel(jobs, n_jobs=n_jobs, verbose=verbose, desc="AOPC", total=len(tasks))
    curves = {}
    for res, ((label, _, _, _), _) in zip(results, tasks):
        curves.setdefault(label, []).append(res)
    curves = {k: np.concatenate(v) for k, v in curves.items()}
    per_sample = {k: np.array([aopc_from_curves(row) for row in v]) for k, v in curves.items()}
    scores = {k: aopc_from_curves(v) for k, v in curves.items()}
    comparisons = []
    for other in ("random", "sensitivity"):
        if other not in per_sample:
            continue
        diff, (lo, hi) = paired_difference(per_sample["LRP"], per_sample[other], random_state=random_state)
        if lo > 0:
            text = (f"LRP orders the regions better than {other} order: AOPC {diff:+.3g} "
                    f"(95 % interval {lo:+.3g} to {hi:+.3g}, {len(X)} samples).")
        elif hi < 0:
            text = (f"LRP orders the regions worse than {other} order: AOPC {diff:+.3g} "
                    f"(95 % interval {lo:+.3g} to {hi:+.3g}, {len(X)} samples).")
        else:
            text = (f"LRP and {other} order are not distinguishable here: AOPC difference {diff:+.3g}, "
                    f"95 % interval {lo:+.3g} to {hi:+.3g} contains 0 ({len(X)} samples).")
        comparisons.append({"baseline": other, "difference": diff, "interval": [lo, hi],
                            "better": bool(lo > 0), "worse": bool(hi < 0), "text": text})
    return {"curves": curves, "per_sample": per_sample, "scores": scores, "comparisons": comparisons}


def context_section(maps, masks, groups, notes):
    """Context ratio (Eq. (4.11)) per class on positive relevance, with what it means.

    ``maps`` are (n, H, W); ``masks`` boolean with one value per pixel. Images whose mask is
    empty or covers everything are skipped (Eq. (4.11) needs both sides).
    """
    from ..evaluation import context_ratio

    m = masks.reshape(maps.shape[:3])
    flat = m.reshape(len(m), -1)
    valid = flat.any(axis=1) & ~flat.all(axis=1)
    if not valid.any():
        notes.append("Context ratio not computed: no mask has pixels both inside and outside the object.")
        return None
    if not valid.all():
        notes.append(f"Context ratio: {int((~valid).sum())} images without an object (or all object) skipped.")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.asarray(context_ratio(maps[valid], m[valid], positive_only=True), dtype=float)
    pos = np.clip(maps[valid], 0.0, None).reshape(int(valid.sum()), -1)
    out_share = np.divide((pos * ~flat[valid]).sum(1), pos.sum(1), out=np.full(len(pos), np.nan),
                          where=pos.sum(1) > 0)
    t = groups[valid]
    rows = []
    for c in np.unique(t):
        sel = t == c
        finite = np.isfinite(mu[sel])
        rows.append({"class": c.item() if hasattr(c, "item") else c, "n_images": int(sel.sum()),
                     "ratio": float(np.median(mu[sel][finite])) if finite.any() else None,
                     "outside_share": float(np.nanmean(out_share[sel])) if np.isfinite(out_share[sel]).any()
                     else None,
                     "undefined": int((~finite).sum())})
    fin = np.isfinite(mu)
    return {"classes": rows, "median": float(np.median(mu[fin])) if fin.any() else None,
            "n_images": int(valid.sum()),
            "outside_area": float((~flat[valid]).mean())}
