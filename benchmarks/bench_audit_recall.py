"""Benchmark: does the audit find planted shortcuts, and how often does it flag clean classes?

Plants Clever-Hans cues (corner tags of several sizes and places, a border frame, a class-specific
background level; :func:`sklrp.datasets.plant_shortcut`) into a fraction of one class of
``load_digits`` (8x8), :func:`sklrp.datasets.make_clever_hans` (24x24, three shapes) and
:func:`sklrp.datasets.make_shapes`-style tiles (24x24, polygon or not), trains four model families
(logistic regression on standardised pixels, an intersection-kernel SVM, a standardised RBF SVM and
a small skorch CNN), explains the held-out test split with LRP and runs the audit's flagging rule
(:func:`sklrp.audit.shortcut_scan`) on the relevance maps of every class. Clean controls: the same
models trained without a cue.

Printed per split, data set and model:

* ``reliance``: how much the model relies on the cue -- the fraction of other classes' test images
  predicted as the planted class once the cue is stamped on them, minus the same for the model
  trained without the cue (Section 6.3.1's verification, automated). A model "relies" when this
  is at least 0.2.
* ``recall``: the planted class is flagged (p <= 0.05) or ranked first, among relying models;
  ``flagged``: flagged only; ``located``: found (flagged or first) *and* at least half of the
  subgroup the report shows carries the cue (the evidence points at the right images);
  ``recall(all)``: found, over all planted models whether they rely on the cue or not.
* ``FFR clean``: false-flag rate per class of the clean controls (models trained without a cue;
  what a user auditing a clean model sees); ``FFR other``: the same for the other classes of
  planted models.
* the same for the rule the audit used before: SpRAy's eigengap choosing more than one cluster
  (flag), and lambda_2 ranking the class first (Fig. 6.5).

Guard against tuning: every split has its own cues (shapes, places, fractions, levels) and
seeds, and each was written down before the revision of the rule it was first used to measure:
the rule was developed on "development" (seeds 0-4); "held-out" (100-104) measured its first
version, "fresh" (200-204) its second (the spread region), "confirm" (300-304) its third (the
spread amount) and "final" (400-404) its fourth (the Student-t p-value). Once a split has been
looked at it is development data for later revisions.

Usage::

    python benchmarks/bench_audit_recall.py --quick        # smoke test, about a minute
    python benchmarks/bench_audit_recall.py --n-jobs 2     # the full table (1,500 models, about 20 min on 2 cores)
"""

import argparse
import time
import warnings

import numpy as np

DEV = {
    "digits": [dict(kind="tag", size=2, position="top-right"), dict(kind="tag", size=1, position="bottom-left"),
               dict(kind="frame", size=1), dict(kind="background")],
    "hans": [dict(kind="tag", size=3, position="top-right"), dict(kind="tag", size=2, position="bottom-left"),
             dict(kind="frame", size=1), dict(kind="background")],
}
DEV["shapes"] = DEV["hans"]
HELD_OUT = {
    "digits": [dict(kind="tag", size=2, position="bottom-right", fraction=0.35),
               dict(kind="tag", size=1, position="top", fraction=0.6),
               dict(kind="tag", size=3, position="left", fraction=0.5),
               dict(kind="background", value=0.15, fraction=0.6)],
    "hans": [dict(kind="tag", size=4, position="top-left", fraction=0.35),
             dict(kind="tag", size=2, position="right", fraction=0.6),
             dict(kind="frame", size=2, fraction=0.5),
             dict(kind="background", value=0.15, fraction=0.6)],
}
HELD_OUT["shapes"] = HELD_OUT["hans"]
# A third split, defined before the rule's second revision and never looked at while making it:
# cues off the corners (row, col), dimmer tags and frames (``value_rel``: a fraction of the data
# range), thinner frames, other fractions and background levels, seeds 200-204.
FRESH = {
    "digits": [dict(kind="tag", size=2, position=(3, 6), fraction=0.45),
               dict(kind="tag", size=1, position="bottom-right", fraction=0.5, value_rel=0.75),
               dict(kind="frame", size=1, fraction=0.4),
               dict(kind="background", value=0.2, fraction=0.45)],
    "hans": [dict(kind="tag", size=3, position=(10, 21), fraction=0.45),
             dict(kind="tag", size=5, position="bottom-right", fraction=0.3, value_rel=0.8),
             dict(kind="frame", size=1, fraction=0.4, value_rel=0.7),
             dict(kind="background", value=0.1, fraction=0.5)],
}
FRESH["shapes"] = FRESH["hans"]
# A fourth split, defined before the rule's third revision (revisions two and three were made
# looking at the first three splits): other positions, sizes, levels and fractions, seeds 300-304.
CONFIRM = {
    "digits": [dict(kind="tag", size=2, position=(0, 3), fraction=0.4),
               dict(kind="tag", size=3, position="bottom-left", fraction=0.55, value_rel=0.85),
               dict(kind="frame", size=1, fraction=0.55, value_rel=0.8),
               dict(kind="background", value=0.3, fraction=0.35)],
    "hans": [dict(kind="tag", size=4, position=(19, 9), fraction=0.4),
             dict(kind="tag", size=2, position="top-left", fraction=0.5, value_rel=0.9),
             dict(kind="frame", size=3, fraction=0.35),
             dict(kind="background", value=0.2, fraction=0.4)],
}
CONFIRM["shapes"] = CONFIRM["hans"]
# A fifth split, defined before the p-value of the rule was changed (after all four splits above
# had been looked at): seeds 400-404.
FINAL = {
    "digits": [dict(kind="tag", size=2, position=(6, 2), fraction=0.5, value_rel=0.9),
               dict(kind="tag", size=1, position="top-left", fraction=0.45),
               dict(kind="frame", size=1, fraction=0.3),
               dict(kind="background", value=0.35, fraction=0.5)],
    "hans": [dict(kind="tag", size=3, position="bottom", fraction=0.5),
             dict(kind="tag", size=6, position=(2, 8), fraction=0.3, value_rel=0.75),
             dict(kind="frame", size=2, fraction=0.45, value_rel=0.85),
             dict(kind="background", value=0.25, fraction=0.35)],
}
FINAL["shapes"] = FINAL["hans"]
SPLITS = {"development": (DEV, range(5)), "held-out": (HELD_OUT, range(100, 105)), "fresh": (FRESH, range(200, 205)),
          "confirm": (CONFIRM, range(300, 305)), "final": (FINAL, range(400, 405))}
MODELS = ("linear", "hik", "rbf", "cnn")
RELIES = 0.2


def load(name, seed):
    from sklearn.datasets import load_digits

    from sklrp.datasets import make_clever_hans, make_shapes

    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return X.reshape(-1, 8, 8) / 16.0, y
    if name == "hans":
        X, y, _ = make_clever_hans(900, watermark_fraction=0.0, image_shape=(24, 24), random_state=seed)
        return np.clip(X, 0.0, None), y
    X, y, _ = make_shapes(600, image_size=24, radius=(3.0, 6.0), random_state=seed)
    return X, (y > 0).astype(int)


def make_model(kind, shape, seed, n_classes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from sklrp.kernels import intersection_kernel

    if kind == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    if kind == "hik":
        return SVC(kernel=intersection_kernel)
    if kind == "rbf":
        return make_pipeline(StandardScaler(), SVC(kernel="rbf"))
    import torch
    from skorch import NeuralNetClassifier
    from torch import nn

    torch.manual_seed(seed)
    H, W = shape
    module = nn.Sequential(nn.Unflatten(1, (1, H, W)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(16 * (H // 4) * (W // 4), n_classes))
    return NeuralNetClassifier(module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=3e-3,
                               max_epochs=20, batch_size=32, train_split=None, verbose=0, device="cpu")


def fit(kind, X, y, seed, n_classes):
    m = make_model(kind, X.shape[1:], seed, n_classes)
    flat = X.reshape(len(X), -1)
    if kind == "cnn":
        m.fit(flat.astype(np.float32), y.astype(np.int64))
        return m, lambda Z: m.predict(Z.reshape(len(Z), -1).astype(np.float32))
    m.fit(flat, y)
    return m, lambda Z: m.predict(Z.reshape(len(Z), -1))


def spray_rule(R, y):
    """The previous verdict: SpRAy's eigengap picks > 1 cluster (flag); lambda_2 ranks classes (Fig. 6.5)."""
    from sklrp import SpRAy, spray_spectra

    groups = {c: R[y == c] for c in np.unique(y) if (y == c).sum() >= 10}
    res = spray_spectra(groups, spray=SpRAy(pool_shape=None, embedding=None, normalize="l2", random_state=0))
    flagged = {c for c, k in zip(res.classes.tolist(), res.n_clusters.tolist()) if k > 1}
    return flagged, res.classes.tolist()[0]


def _cue_name(shortcut):
    if shortcut is None:
        return None
    return "{kind}{size}".format(size=shortcut.get("size", ""), kind=shortcut["kind"])


def _cache_file(cache, data, kind, shortcut, seed):
    import hashlib
    import json
    import os

    key = json.dumps([data, kind, shortcut, seed], sort_keys=True)
    return os.path.join(cache, f"{data}-{kind}-{seed}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz")


def make_maps(data, kind, shortcut, seed):
    """Train one model (with or without a planted cue), measure its reliance, explain its test split."""
    import torch
    from sklearn.model_selection import train_test_split

    from sklrp.audit import make_explainer
    from sklrp.datasets import plant_shortcut

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    X0, y = load(data, seed)
    n_classes = int(y.max()) + 1
    target = int(np.random.RandomState(seed).randint(n_classes))
    tr, te = train_test_split(np.arange(len(y)), train_size=0.7 if data == "digits" else 0.6,
                              random_state=seed, stratify=y)
    X, planted, reliance = X0, np.zeros(len(y), bool), np.nan
    lo, hi = float(X0.min()), float(X0.max())
    if shortcut is not None:
        sc = dict(shortcut)
        sc.setdefault("fraction", 0.5)
        rel = sc.pop("value_rel", None)  # a dimmer cue: this fraction of the data range above the minimum
        sc.setdefault("value", lo + rel * (hi - lo) if rel is not None
                      else hi if sc["kind"] != "background" else 0.25 * (hi - lo))
        # planting and splitting draw from different seeds (the same stream would correlate them)
        X, planted = plant_shortcut(X0, y, target_class=target, random_state=1000 + seed, **sc)
    model, predict = fit(kind, X[tr], y[tr], seed, n_classes)
    acc = float(np.mean(predict(X[te]) == y[te]))
    if shortcut is not None:
        other = te[y[te] != target]
        stamp = {k: v for k, v in sc.items() if k != "fraction"}
        Xs, _ = plant_shortcut(X0[other], **stamp)
        _, predict0 = fit(kind, X0[tr], y[tr], seed, n_classes)  # the same model without the cue
        flips = np.mean(predict(Xs) == target) - np.mean(predict(X0[other]) == target)
        flips0 = np.mean(predict0(Xs) == target) - np.mean(predict0(X0[other]) == target)
        reliance = float(flips - flips0)
    lrp = make_explainer(model, X[tr].reshape(len(tr), -1).astype(np.float64), y[tr])
    R = lrp.explain(X[te].reshape(len(te), -1), target=y[te]).relevance.reshape(X[te].shape)
    return dict(R=R, X=X[te], y=y[te], planted=planted[te], target=target, reliance=reliance, acc=acc,
                seconds=time.perf_counter() - t0)


def run_setting(data, kind, shortcut, seed, split, cache=None):
    """One model on one data set, with or without a planted cue: rows for every class.

    With ``cache`` (a folder) the maps are stored there and reused, so that changing only the
    verdict does not retrain and re-explain 480 models.
    """
    import os

    from sklrp.audit import shortcut_scan

    warnings.simplefilter("ignore")
    path = None if cache is None else _cache_file(cache, data, kind, shortcut, seed)
    if path is not None and os.path.exists(path):
        with np.load(path) as z:
            rec = {k: z[k] for k in z.files}
    else:
        rec = make_maps(data, kind, shortcut, seed)
        if path is not None:
            os.makedirs(cache, exist_ok=True)
            np.savez_compressed(path + ".tmp.npz", **rec)
            os.replace(path + ".tmp.npz", path)
    R, y_te, planted = np.asarray(rec["R"], float), rec["y"], rec["planted"].astype(bool)
    target, reliance = int(rec["target"]), float(rec["reliance"])
    t0 = time.perf_counter()
    findings = shortcut_scan(R, y_te)
    old_flags, old_top = spray_rule(R, y_te)
    rows = []
    for f in findings:
        # the subgroup found is the planted one: most carriers carry the cue
        in_c = planted[y_te == f.label]
        located = f.carriers is not None and f.n_carriers > 0 and in_c[f.carriers].mean() >= 0.5
        rows.append(dict(split=split, data=data, model=kind, seed=seed, cue=_cue_name(shortcut),
                         cls=f.label, planted=shortcut is not None and f.label == target,
                         reliance=None if shortcut is None else reliance,
                         flagged=f.flagged, top=f.rank == 1, p=f.p_value, score=f.score, located=bool(located),
                         old_flag=f.label in old_flags, old_top=f.label == old_top, acc=float(rec["acc"]),
                         seconds=float(rec["seconds"]) + time.perf_counter() - t0))
    return rows


def settings(splits, datas, models, quick):
    out = []
    for split in splits:
        cues, seeds = SPLITS[split]
        for data in datas:
            for kind in models:
                for seed in seeds[:1] if quick else seeds:
                    chosen = cues[data][:2] if quick else cues[data]
                    for sc in [None, *chosen]:
                        out.append((data, kind, sc, seed, split))
    return out


def summarise(rows):
    def rate(xs):
        return (f"{np.mean(xs):.3f}" if len(xs) else "   - ") + f" ({len(xs)})"

    groups = {}
    for r in rows:
        groups.setdefault((r["split"], r["data"], r["model"]), []).append(r)
    head = (f"{'split':<12}{'data':<8}{'model':<8}{'reliance':>9}  {'recall':>11}  {'flagged':>11}  "
            f"{'located':>11}  {'recall(all)':>11}  {'FFR clean':>12}  {'FFR other':>12}  {'old recall':>11}  "
            f"{'old FFR clean':>13}")
    print(head)
    print("-" * len(head))
    totals = {}
    for key in sorted(groups, key=lambda k: (list(SPLITS).index(k[0]), k[1], MODELS.index(k[2]))):
        rs = groups[key]
        planted = [r for r in rs if r["planted"]]
        relying = [r for r in planted if r["reliance"] >= RELIES]
        clean = [r for r in rs if r["cue"] is None]  # classes of models trained without a cue
        other = [r for r in rs if r["cue"] is not None and not r["planted"]]  # other classes of planted models
        rel = np.median([r["reliance"] for r in planted]) if planted else float("nan")
        cols = dict(recall=[r["flagged"] or r["top"] for r in relying], flagged=[r["flagged"] for r in relying],
                    located=[(r["flagged"] or r["top"]) and r["located"] for r in relying],
                    recall_all=[r["flagged"] or r["top"] for r in planted], ffr=[r["flagged"] for r in clean],
                    ffr_other=[r["flagged"] for r in other],
                    old_recall=[r["old_flag"] or r["old_top"] for r in relying], old_ffr=[r["old_flag"] for r in clean])
        for k, v in cols.items():
            totals.setdefault(key[0], {}).setdefault(k, []).extend(v)
        print(f"{key[0]:<12}{key[1]:<8}{key[2]:<8}{rel:>9.2f}  " + _cells(cols, rate))
    for split, cols in totals.items():
        print(f"{split:<12}{'all':<8}{'':<8}{'':>9}  " + _cells(cols, rate))


def _cells(cols, rate):
    widths = dict(recall=11, flagged=11, located=11, recall_all=11, ffr=12, ffr_other=12, old_recall=11, old_ffr=13)
    return "  ".join(f"{rate(cols[k]):>{w}}" for k, w in widths.items())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, two model families, one seed per split")
    parser.add_argument("--n-jobs", type=int, default=2, help="settings run in parallel (default: 2)")
    parser.add_argument("--split", default=",".join(SPLITS),
                        help="comma-separated splits (default: " + ",".join(SPLITS) + ")")
    parser.add_argument("--data", default="digits,hans,shapes")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--cache", default=None, help="folder to keep the relevance maps in and reuse them from")
    parser.add_argument("--rows", default=None, help="write every class verdict to this JSON file")
    parser.add_argument("--progress", action="store_true", help="joblib progress messages on stderr")
    args = parser.parse_args()
    from joblib import Parallel, delayed

    splits = args.split.split(",")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        parser.error(f"unknown split(s) {unknown}; choose from {list(SPLITS)}")
    datas, models = args.data.split(","), args.models.split(",")
    if args.quick:
        datas, models = ["digits"], ["linear", "hik"]
    todo = settings(splits, datas, models, args.quick)
    t0 = time.perf_counter()
    results = Parallel(n_jobs=args.n_jobs, verbose=5 if args.progress else 0)(
        delayed(run_setting)(*s, cache=args.cache) for s in todo)
    rows = [r for rs in results for r in rs]
    if args.rows:
        import json

        with open(args.rows, "w") as fh:
            json.dump(rows, fh, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    print(f"{len(todo)} trained models, {len(rows)} class verdicts in {time.perf_counter() - t0:.0f} s "
          f"(n_jobs={args.n_jobs})")
    print(f"reliance: median over planted models (flips to the planted class minus the clean model's); "
          f"recall/flagged over models with reliance >= {RELIES}; counts in brackets")
    summarise(rows)


if __name__ == "__main__":
    main()
