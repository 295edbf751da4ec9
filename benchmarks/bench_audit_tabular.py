"""Benchmark: the audit's verdict on tables -- does it find a leaked feature, and how often does it flag clean classes?

A table has no image regions: the audit's rule (:func:`sklrp.audit.feature_scan`) looks for a
subgroup of a class that puts its relevance on one feature. This benchmark adds one column to
four tables shipped with scikit-learn (``load_breast_cancer``: 2 classes, ``load_wine``: 3,
``make_classification``: 4, ``load_digits`` as 64 features: 10) and makes it a shortcut in a
fraction of one class:

* ``flag``: an indicator that is 1 on the carriers and 0 elsewhere (a leaked identifier, the
  tabular analogue of a copyright tag);
* ``shift``: a standard-normal column shifted by 4 on the carriers (a leaked measurement that
  overlaps a little with the rest).

Clean controls get the same column as pure noise. Two model families (a standardised logistic
regression and a standardised RBF SVM) over seeds 0-9; the explained split is the test split.

Printed per data set and model: ``reliance`` (median fraction of other classes' test rows
predicted as the planted class once their column is set to the carriers' median value, minus
the same for the clean control), ``recall`` (planted class flagged or ranked first, over models
with reliance >= 0.2), ``flagged``, ``on column`` (found, and the region is the added column),
``recall(all)`` (over every planted model, relying or not) and ``FFR clean`` (false flags per
class of the clean controls).

Usage::

    python benchmarks/bench_audit_tabular.py            # about a minute on 2 cores
"""

import argparse
import time
import warnings

import numpy as np

DATA = ("cancer", "wine", "synthetic", "digits")
MODELS = ("linear", "rbf")
CUES = ({"kind": "flag", "fraction": 0.5}, {"kind": "shift", "fraction": 0.5})
RELIES = 0.2


def load(name, seed):
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine, make_classification

    if name == "cancer":
        return load_breast_cancer(return_X_y=True)
    if name == "wine":
        return load_wine(return_X_y=True)
    if name == "digits":
        return load_digits(return_X_y=True)
    return make_classification(600, 20, n_informative=8, n_classes=4, n_clusters_per_class=2, random_state=seed)


def make_model(kind):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if kind == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    return make_pipeline(StandardScaler(), SVC())


def add_column(X, y, cue, target, rng):
    """The table with one more column; ``cue=None`` gives the clean control's noise column."""
    noise = rng.normal(0.0, 1.0, len(y))
    if cue is None:
        return np.column_stack([X, noise]), np.zeros(len(y), bool)
    idx = np.flatnonzero(y == target)
    on = np.zeros(len(y), bool)
    on[rng.choice(idx, int(round(cue["fraction"] * len(idx))), replace=False)] = True
    col = on.astype(float) if cue["kind"] == "flag" else noise + 4.0 * on
    return np.column_stack([X, col]), on


def run_setting(data, kind, cue, seed):
    from sklearn.model_selection import train_test_split

    from sklrp.audit import feature_scan, make_explainer

    warnings.simplefilter("ignore")
    X0, y = load(data, seed)
    target = int(np.random.RandomState(seed).randint(int(y.max()) + 1))
    tr, te = train_test_split(np.arange(len(y)), train_size=0.6, random_state=seed, stratify=y)
    X, planted = add_column(X0, y, cue, target, np.random.RandomState(1000 + seed))
    model = make_model(kind).fit(X[tr], y[tr])
    reliance = None
    if cue is not None:
        clean, _ = add_column(X0, y, None, target, np.random.RandomState(1000 + seed))
        control = make_model(kind).fit(clean[tr], y[tr])
        other = te[y[te] != target]
        value = float(np.median(X[planted, -1]))

        def moved(m, Z):
            stamped = Z[other].copy()
            stamped[:, -1] = value
            return np.mean(m.predict(stamped) == target) - np.mean(m.predict(Z[other]) == target)

        reliance = float(moved(model, X) - moved(control, clean))
    lrp = make_explainer(model, X[tr], y[tr])
    R = lrp.explain(X[te], target=y[te]).relevance
    rows = []
    for f in feature_scan(R, y[te]):
        rows.append(dict(data=data, model=kind, seed=seed, cue=None if cue is None else cue["kind"],
                         planted=cue is not None and f.label == target, reliance=reliance, flagged=f.flagged,
                         top=f.rank == 1, on_column=f.region is not None and f.region.cols[0] == X.shape[1] - 1))
    return rows


def summarise(rows):
    def rate(xs):
        return (f"{np.mean(xs):.3f}" if len(xs) else "   - ") + f" ({len(xs)})"

    head = (f"{'data':<11}{'model':<8}{'cue':<7}{'reliance':>9}  {'recall':>11}  {'flagged':>11}  "
            f"{'on column':>11}  {'recall(all)':>11}  {'FFR clean':>12}")
    print(head)
    print("-" * len(head))
    totals = {}
    for data in DATA:
        for kind in MODELS:
            rs = [r for r in rows if r["data"] == data and r["model"] == kind]
            if not rs:
                continue
            clean = [r["flagged"] for r in rs if r["cue"] is None]
            for cue in CUES:
                planted = [r for r in rs if r["cue"] == cue["kind"] and r["planted"]]
                relying = [r for r in planted if r["reliance"] >= RELIES]
                cols = dict(recall=[r["flagged"] or r["top"] for r in relying], flagged=[r["flagged"] for r in relying],
                            on_column=[(r["flagged"] or r["top"]) and r["on_column"] for r in relying],
                            recall_all=[r["flagged"] or r["top"] for r in planted])
                for k, v in cols.items():
                    totals.setdefault(k, []).extend(v)
                rel = np.median([r["reliance"] for r in planted]) if planted else float("nan")
                print(f"{data:<11}{kind:<8}{cue['kind']:<7}{rel:>9.2f}  " + "  ".join(
                    f"{rate(v):>11}" for v in cols.values()) + f"  {rate(clean):>12}")
            totals.setdefault("ffr", []).extend(clean)
    print(f"{'all':<26}{'':>9}  " + "  ".join(f"{rate(totals[k]):>11}"
                                               for k in ("recall", "flagged", "on_column", "recall_all"))
          + f"  {rate(totals['ffr']):>12}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    from joblib import Parallel, delayed

    todo = [(d, k, c, s) for d in DATA for k in MODELS for s in range(args.seeds) for c in (None, *CUES)]
    t0 = time.perf_counter()
    results = Parallel(n_jobs=args.n_jobs)(delayed(run_setting)(*t) for t in todo)
    rows = [r for rs in results for r in rs]
    print(f"{len(todo)} trained models, {len(rows)} class verdicts in {time.perf_counter() - t0:.0f} s "
          f"(n_jobs={args.n_jobs}); recall over models with reliance >= {RELIES}; counts in brackets")
    summarise(rows)


if __name__ == "__main__":
    main()
