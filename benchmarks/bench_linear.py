"""Benchmark: LRP relevance of a linear model vs. its own ``decision_function``.

Baseline: ``LogisticRegression.decision_function`` on the same data, timed in the
same run: a finiteness check and a matrix-vector product, two reads of X. The
relevance ``R_d = w_d x_d`` must also write an array as large as X into fresh
memory; the script times that floor alone (``np.multiply`` into a new array) so the
ratio can be read against it. The issue's goal is <= 2x. Last, the same for a
``StandardScaler`` + ``LogisticRegression`` pipeline (the scaler decomposed by the
epsilon rule) against the pipeline's ``decision_function``.

Usage::

    .venv/bin/python benchmarks/bench_linear.py [--n 100000] [--d 1000] [--classes 2] [--repeats 3]
"""

import argparse

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sklrp
from timing import best_of


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=1_000)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024, help="LRPTransformer's batch_size")
    args = parser.parse_args()

    rng = np.random.RandomState(0)
    X = rng.randn(args.n, args.d)
    y = rng.randint(args.classes, size=args.n)
    # fit on a subset: training cost is not what is measured
    model = LogisticRegression(max_iter=50).fit(X[:5000], y[:5000])
    lrp = sklrp.LRPTransformer(FrozenEstimator(model), batch_size=args.batch_size).fit(X[:10], y[:10])

    w = model.coef_[0]
    t_df = best_of(lambda: model.decision_function(X), args.repeats)
    t_floor = best_of(lambda: np.multiply(X, w), args.repeats)
    t_lrp = best_of(lambda: lrp.transform(X), args.repeats)
    t_explain = best_of(lambda: lrp.explain(X), args.repeats)

    # the common pipeline: a scaler (relevance through the epsilon rule, Eqs. (2.21)-(2.23)) before the model
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=50)).fit(X[:5000], y[:5000])
    lrp_pipe = sklrp.LRPTransformer(FrozenEstimator(pipe), batch_size=args.batch_size).fit(X[:10], y[:10])
    t_pipe_df = best_of(lambda: pipe.decision_function(X), args.repeats)
    t_pipe = best_of(lambda: lrp_pipe.transform(X), args.repeats)

    E = lrp.explain(X[:1000])
    err = np.abs(E.relevance.sum(1) + E.bias_relevance - E.output).max()
    print(f"data: {args.n} x {args.d}, {args.classes} classes, float64, batch_size={args.batch_size}")
    print(f"decision_function        {t_df:8.3f} s   (baseline)")
    print(f"floor: X * w, fresh out  {t_floor:8.3f} s   ratio {t_floor / t_df:5.2f}x   (writing R alone)")
    print(f"LRPTransformer.transform {t_lrp:8.3f} s   ratio {t_lrp / t_df:5.2f}x   (goal <= 2x)")
    print(f"LRPTransformer.explain   {t_explain:8.3f} s   ratio {t_explain / t_df:5.2f}x")
    print(f"max conservation error   {err:.2e}")
    print(f"StandardScaler + LogisticRegression pipeline: decision_function {t_pipe_df:.3f} s, "
          f"LRPTransformer.transform {t_pipe:.3f} s, ratio {t_pipe / t_pipe_df:5.2f}x")


if __name__ == "__main__":
    main()
