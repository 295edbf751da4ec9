"""Benchmark: LRP for kernel SVMs vs. the SVM's own ``decision_function``, and vs. KernelSHAP.

Default mode, baselines timed in the same run on the same samples:

* HIK (exact, Eq. (A.3)): ``SVC(kernel=sklrp.kernels.intersection_kernel).decision_function``.
  scikit-learn evaluates a callable kernel against the whole training set, so the
  run also times the plain kernel expansion over the support vectors only,
  ``intersection_kernel(X, SV) @ alpha + b``, as a second, stricter baseline.
  Goal: <= 2x.
* RBF (root point search over ``n_root_candidates`` opposite-class reference samples, then
  the first-order Taylor decomposition, Eqs. (2.76), (A.5), or its exact path integral):
  ``SVC(kernel="rbf").decision_function`` (libsvm). Goal: <= 30x.
* SVDD: ``sklrp.svm.SVDD`` fit time at 1000 and 3000 samples, against libsvm's
  ``OneClassSVM`` on the same data (the same dual for the RBF kernel).

``--vs-shap``: on ``load_breast_cancer``, ``load_wine`` and ``load_digits`` (standardised on
the training split, ``SVC(kernel="rbf")``, at most ``--rows`` held-out rows per data set, one
run per ``--seeds`` split seed) every held-out row is explained by sklrp first-order
(Eq. (2.76)), sklrp exact (path integral), both with the default 50 root candidates, sklrp exact
with ``n_root_candidates=10`` (``k=10``: cheaper root search), sklrp exact expanded at the training
mean (``taylor_reference="mean"``), KernelSHAP (``shap.KernelExplainer`` with a
10-centre ``shap.kmeans`` background of the training split, ``nsamples="auto"``) and a random
order. The explained score is the one sklrp explains for the predicted class: ``f(x)`` or
``-f(x)`` for binary models, ``g_k(x) = sum_j s_kj f_kj(x)`` (the signed sum of the pairwise
decisions involving the predicted class k) for one-vs-one models; KernelSHAP explains the
same function (one column per class) and its phi of that class is used. Printed per method:

* AOPC (Eq. (3.7), most relevant first, all features) under mean replacement (the training
  mean of each feature) and under narrow uniform noise (each feature drawn uniformly from its
  own training inter-quartile range, 5 repeats): ``sklrp.aopc_score`` with explicit
  perturbations;
* the median relative residual ``|f(x) - f(x0) - sum_d R_d| / |f(x)|`` (``x0`` = the root point
  for sklrp, whose ``f(x0)`` is in ``bias_relevance``; the background expectation for SHAP);
* time per sample, its ratio to KernelSHAP, and sklrp's ``explain`` over ``decision_function``
  on the same rows.

Goals: exact median relative residual <= 1e-4; exact AOPC >= KernelSHAP's on at least 2 of the
3 data sets under both perturbations; >= 100x faster per sample than KernelSHAP; explain <= 30x
decision_function.

Usage::

    .venv/bin/python benchmarks/bench_svm.py [--n 1000] [--sv 2000] [--d 512] [--repeats 3]
    .venv/bin/python benchmarks/bench_svm.py --vs-shap [--rows 100] [--seeds 0,1,2,3]

``--vs-shap`` needs the ``shap`` extra (``pip install sklrp[shap]``).
"""

import argparse
import copy
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, OneClassSVM

import sklrp
from sklrp.evaluation import FunctionPerturbation, MeanPerturbation
from sklrp.kernels import intersection_kernel
from sklrp.svm import SVDD
from timing import best_of


def svc_with_support_vectors(kernel, n_sv, d, rng, sv_fraction=1.0, **params):
    """An SVC with about ``n_sv`` support vectors: noisy labels make most samples support vectors
    (``sv_fraction`` of them, measured once for each kernel)."""
    X = rng.rand(int(n_sv / sv_fraction), d)
    y = (X[:, : d // 2].sum(1) + rng.randn(X.shape[0]) * 2.0 > d / 4).astype(int)
    return SVC(kernel=kernel, C=0.5, **params).fit(X, y), X


def timing(args):
    rng = np.random.RandomState(0)

    # -- HIK: exact decomposition ------------------------------------------------------------
    svc, X_train = svc_with_support_vectors(intersection_kernel, args.sv, args.d, rng, sv_fraction=0.58)
    X = rng.rand(args.n, args.d)
    lrp = sklrp.LRPTransformer(FrozenEstimator(svc), device=args.device).fit(X_train)
    sv = X_train[svc.support_]
    t_df = best_of(lambda: svc.decision_function(X), args.repeats)
    t_expansion = best_of(lambda: intersection_kernel(X, sv) @ svc.dual_coef_[0] + svc.intercept_, args.repeats)
    t_lrp = best_of(lambda: lrp.explain(X), args.repeats)
    E = lrp.explain(X)
    err = np.abs(E.relevance.sum(1) + E.bias_relevance - E.output).max()
    print(f"HIK  n={args.n} support vectors={len(svc.support_)} d={args.d} (training set {X_train.shape[0]})")
    print(f"  decision_function          {t_df:8.3f} s")
    print(f"  kernel expansion over SVs  {t_expansion:8.3f} s")
    print(f"  LRPTransformer.explain     {t_lrp:8.3f} s   (max |sum R + R_b - f| = {err:.1e})")
    print(f"  ratio explain / decision_function = {t_lrp / t_df:.2f}x   (goal <= 2x)")
    print(f"  ratio explain / SV kernel expansion = {t_lrp / t_expansion:.2f}x")

    # -- RBF: Taylor decomposition with root search ----------------------------------------
    svc, X_train = svc_with_support_vectors("rbf", args.sv, args.d, rng, sv_fraction=0.99, gamma=1.0 / args.d)
    t_df = best_of(lambda: svc.decision_function(X), args.repeats)
    print(f"RBF  n={args.n} support vectors={len(svc.support_)} d={args.d} candidates={args.candidates} "
          f"(reference set {min(X_train.shape[0], sklrp.svm.MAX_REFERENCE)})")
    print(f"  decision_function          {t_df:8.3f} s")
    for mode, reference in (("first_order", "root"), ("exact", "root"), ("exact", "mean")):
        lrp = sklrp.LRPTransformer(FrozenEstimator(svc), n_root_candidates=args.candidates, taylor=mode,
                                   taylor_reference=reference, device=args.device).fit(X_train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sklrp.svm.TaylorRemainderWarning)
            t_lrp = best_of(lambda: lrp.explain(X), args.repeats)
            E = lrp.explain(X)
        found = E.extras["root_found"]
        worst = np.abs(svc.decision_function(E.root_point[found])).max() if found.any() else np.nan
        point = (f"roots found {found.mean():.0%}, max |f(root)| = {worst:.1e}" if reference == "root"
                 else "at the training mean")
        print(f"  explain, taylor={mode:12s}{reference:5s}{t_lrp:8.3f} s   ({point}, median |residual|/|f| = "
              f"{np.median(np.abs(E.residual) / np.abs(E.output)):.1e})")
        print(f"  ratio explain / decision_function = {t_lrp / t_df:.2f}x   (goal <= 30x)")

    # -- SVDD: SMO fit time against libsvm's one-class SVM (the same dual for the RBF kernel) -------
    for n in (1000, 3000):
        X = rng.randn(n, 10)
        t_svdd = best_of(lambda: SVDD(kernel="rbf", nu=0.1).fit(X), args.repeats)
        t_oc = best_of(lambda: OneClassSVM(kernel="rbf", nu=0.1).fit(X), args.repeats)
        t_hik = best_of(lambda: SVDD(kernel="intersection", nu=0.1).fit(np.abs(X)), args.repeats)
        print(f"SVDD n={n} d=10: fit rbf {t_svdd:.3f} s (OneClassSVM {t_oc:.3f} s), intersection {t_hik:.3f} s")


# -- sklrp vs KernelSHAP ---------------------------------------------------------------------------

DATASETS = {"breast_cancer": load_breast_cancer, "wine": load_wine, "digits": load_digits}


def class_scores(svc):
    """``X -> (n, n_classes)``: the score sklrp explains for each class (module docstring)."""
    n_classes = len(svc.classes_)
    if n_classes == 2:
        return lambda Z: np.column_stack([-svc.decision_function(Z), svc.decision_function(Z)])
    ovo = copy.deepcopy(svc).set_params(decision_function_shape="ovo")  # a prediction-time setting only
    pairs = [(a, b) for a in range(n_classes) for b in range(a + 1, n_classes)]

    def scores(Z):
        F = ovo.decision_function(Z)
        G = np.zeros((F.shape[0], n_classes))
        for p, (a, b) in enumerate(pairs):  # positive = evidence for a
            G[:, a] += F[:, p]
            G[:, b] -= F[:, p]
        return G

    return scores


def perturbations(X_train):
    lo, hi = np.percentile(X_train, [25, 75], axis=0)

    def narrow_noise(x, mask, rng):
        return np.where(mask, rng.uniform(lo, hi, size=x.shape), x)

    return {"mean": (MeanPerturbation(mean=X_train.mean(0)), 1), "noise": (FunctionPerturbation(narrow_noise), 5)}


def compare(name, seed, rows, device):
    import shap

    X, y = DATASETS[name](return_X_y=True)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)[:rows]
    svc = SVC(kernel="rbf").fit(X_train, y_train)
    g = class_scores(svc)
    t_df = best_of(lambda: svc.decision_function(X_test), 3)
    results, target = {}, None
    variants = {"sklrp first-order": ("first_order", 50, "root"), "sklrp exact": ("exact", 50, "root"),
                "sklrp exact, k=10": ("exact", 10, "root"), "sklrp exact, mean": ("exact", 50, "mean")}
    for label, (mode, candidates, reference) in variants.items():
        lrp = sklrp.LRPTransformer(FrozenEstimator(svc), taylor=mode, n_root_candidates=candidates,
                                   taylor_reference=reference, device=device).fit(X_train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sklrp.svm.TaylorRemainderWarning)
            t = best_of(lambda: lrp.explain(X_test), 3)
            E = lrp.explain(X_test)
        target = np.searchsorted(svc.classes_, E.target)
        np.testing.assert_allclose(E.output, g(X_test)[np.arange(len(target)), target], atol=1e-8)
        results[label] = dict(
            relevance=E.relevance, residual=np.median(np.abs(E.residual) / np.abs(E.output)),
            time=t / len(X_test), ratio_df=t / t_df)
    explainer = shap.KernelExplainer(g, shap.kmeans(X_train, 10))
    t0 = time.perf_counter()
    phi = np.asarray(explainer.shap_values(X_test, nsamples="auto", silent=True))
    t_shap = time.perf_counter() - t0
    rows_idx = np.arange(len(target))
    phi = phi[rows_idx, :, target]  # (n, d): phi of the explained class
    expected = np.asarray(explainer.expected_value).reshape(-1)[target]
    out = g(X_test)[rows_idx, target]
    results["KernelSHAP"] = dict(relevance=phi, time=t_shap / len(X_test), ratio_df=np.nan,
                                 residual=np.median(np.abs(out - expected - phi.sum(1)) / np.abs(out)))
    results["random"] = dict(relevance=None, time=np.nan, ratio_df=np.nan, residual=np.nan)
    for pname, (perturbation, repeats) in perturbations(X_train).items():
        for method, r in results.items():
            kwargs = dict(target=target, perturbation=perturbation, n_repeats=repeats, random_state=0)
            if r["relevance"] is None:
                r[pname] = sklrp.aopc_score(g, X_test, np.zeros_like(X_test), order="random",
                                            **{**kwargs, "n_repeats": 10 * repeats})
            else:
                r[pname] = sklrp.aopc_score(g, X_test, r["relevance"], order="morf", **kwargs)
    return results, len(X_test), svc


def vs_shap(args):
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"sklrp vs KernelSHAP (nsamples='auto', 10-centre k-means background); AOPC most relevant first, all "
          f"features; noise = per-feature training inter-quartile range; split seeds {seeds}")
    wins = {}
    for seed in seeds:
        for name in DATASETS:
            res, n, svc = compare(name, seed, args.rows, args.device)
            print(f"\n{name} (seed {seed}): {n} held-out rows, {len(svc.classes_)} classes, "
                  f"{len(svc.support_)} support vectors, {svc.n_features_in_} features")
            print(f"  {'method':18s} {'AOPC mean':>10s} {'AOPC noise':>11s} {'med |res|/|f|':>14s} "
                  f"{'ms/sample':>10s} {'SHAP time /':>12s} {'explain / df':>13s}")
            shap_time = res["KernelSHAP"]["time"]
            for method, r in res.items():
                ratio = shap_time / r["time"] if np.isfinite(r["time"]) else np.nan
                print(f"  {method:18s} {r['mean']:10.4f} {r['noise']:11.4f} {r['residual']:14.1e} "
                      f"{1e3 * r['time']:10.3f} {ratio:11.0f}x {r['ratio_df']:12.1f}x")
            exact, peer = res["sklrp exact"], res["KernelSHAP"]
            for pname in ("mean", "noise"):
                for variant in ("sklrp exact", "sklrp exact, mean"):
                    wins.setdefault((variant, seed, pname), []).append(res[variant][pname] >= peer[pname])
            print(f"  goals: exact residual {exact['residual']:.1e} <= 1e-4 "
                  f"{'met' if exact['residual'] <= 1e-4 else 'NOT met'}; "
                  f"{peer['time'] / exact['time']:.0f}x faster than KernelSHAP (>= 100x: "
                  f"{'met' if peer['time'] / exact['time'] >= 100 else 'NOT met'}); explain / decision_function "
                  f"{exact['ratio_df']:.1f}x (<= 30x: {'met' if exact['ratio_df'] <= 30 else 'NOT met'})")
    print()
    for (variant, seed, pname), w in sorted(wins.items()):
        print(f"{variant:18s} seed {seed}, {pname:5s}: AOPC >= KernelSHAP on {sum(w)} of {len(w)} data sets "
              f"(goal >= 2: {'met' if sum(w) >= 2 else 'NOT met'})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples explained")
    parser.add_argument("--sv", type=int, default=2000, help="approximate number of support vectors")
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vs-shap", action="store_true", help="compare with KernelSHAP on three data sets")
    parser.add_argument("--rows", type=int, default=100, help="--vs-shap: held-out rows per data set")
    parser.add_argument("--seeds", default="0", help="--vs-shap: comma-separated split seeds")
    args = parser.parse_args()
    if args.vs_shap:
        vs_shap(args)
    else:
        timing(args)


if __name__ == "__main__":
    main()
