"""Benchmark: LRP for kernel SVMs vs. the SVM's own ``decision_function``.

Baselines, timed in the same run on the same samples:

* HIK (exact, Eq. (A.3)): ``SVC(kernel=sklrp.kernels.intersection_kernel).decision_function``.
  scikit-learn evaluates a callable kernel against the whole training set, so the
  run also times the plain kernel expansion over the support vectors only,
  ``intersection_kernel(X, SV) @ alpha + b``, as a second, stricter baseline.
  Goal: <= 2x.
* RBF (Taylor at a root point, Eqs. (2.76), (A.5)) with the root search over
  ``n_root_candidates`` opposite-class reference samples:
  ``SVC(kernel="rbf").decision_function`` (libsvm). Goal: <= 30x.

Usage::

    .venv/bin/python benchmarks/bench_svm.py [--n 1000] [--sv 2000] [--d 512] [--repeats 3]
"""

import argparse

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.svm import SVC

import sklrp
from sklrp.kernels import intersection_kernel
from timing import best_of


def svc_with_support_vectors(kernel, n_sv, d, rng, sv_fraction=1.0, **params):
    """An SVC with about ``n_sv`` support vectors: noisy labels make most samples support vectors
    (``sv_fraction`` of them, measured once for each kernel)."""
    X = rng.rand(int(n_sv / sv_fraction), d)
    y = (X[:, : d // 2].sum(1) + rng.randn(X.shape[0]) * 2.0 > d / 4).astype(int)
    return SVC(kernel=kernel, C=0.5, **params).fit(X, y), X


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples explained")
    parser.add_argument("--sv", type=int, default=2000, help="approximate number of support vectors")
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.RandomState(0)

    # -- HIK: exact decomposition ------------------------------------------------------------
    svc, X_train = svc_with_support_vectors(intersection_kernel, args.sv, args.d, rng, sv_fraction=0.58)
    X = rng.rand(args.n, args.d)
    lrp = sklrp.LRPTransformer(FrozenEstimator(svc)).fit(X_train)
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
    lrp = sklrp.LRPTransformer(FrozenEstimator(svc), n_root_candidates=args.candidates).fit(X_train)
    t_df = best_of(lambda: svc.decision_function(X), args.repeats)
    t_lrp = best_of(lambda: lrp.explain(X), args.repeats)
    E = lrp.explain(X)
    found = E.extras["root_found"]
    worst = np.abs(svc.decision_function(E.root_point[found])).max() if found.any() else np.nan
    print(f"RBF  n={args.n} support vectors={len(svc.support_)} d={args.d} candidates={args.candidates} "
          f"(reference set {min(X_train.shape[0], sklrp.svm.MAX_REFERENCE)})")
    print(f"  decision_function          {t_df:8.3f} s")
    print(f"  LRPTransformer.explain     {t_lrp:8.3f} s   (roots found {found.mean():.0%}, "
          f"max |f(root)| = {worst:.1e}, median |residual|/|f| = "
          f"{np.median(np.abs(E.residual) / np.abs(E.output)):.3f})")
    print(f"  ratio explain / decision_function = {t_lrp / t_df:.2f}x   (goal <= 30x)")


if __name__ == "__main__":
    main()
