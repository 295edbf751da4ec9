"""Benchmark: LRP relevance of a linear model vs. its own ``decision_function``.

Baseline: ``LogisticRegression.decision_function`` on the same data, timed in the
same run. The relevance ``R_d = w_d x_d`` reads X and writes an array of the same
size, so a ratio near 2 is the memory-bound floor; the issue's goal is <= 2x.

Usage::

    .venv/bin/python benchmarks/bench_linear.py [--n 100000] [--d 1000] [--repeats 3] [--thp]
"""

import argparse
import os
import sys
import time

# Opt-in: torch's CPU allocator can use transparent huge pages for large buffers; must be
# set before torch is imported. The (n, d) relevance output is fresh memory on every call
# and first-touch page faults dominate its cost on some machines.
if "--thp" in sys.argv:
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"

import numpy as np  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import sklrp  # noqa: E402


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=1_000)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--thp", action="store_true", help="let torch use transparent huge pages")
    args = parser.parse_args()

    rng = np.random.RandomState(0)
    X = rng.randn(args.n, args.d)
    y = rng.randint(args.classes, size=args.n)
    # fit on a subset: training cost is not what is measured
    model = LogisticRegression(max_iter=50).fit(X[:5000], y[:5000])
    lrp = sklrp.LRPTransformer(FrozenEstimator(model), batch_size=args.batch_size).fit(X[:10], y[:10])

    t_df = best_of(lambda: model.decision_function(X), args.repeats)
    t_lrp = best_of(lambda: lrp.transform(X), args.repeats)
    t_explain = best_of(lambda: lrp.explain(X), args.repeats)

    E = lrp.explain(X[:1000])
    err = np.abs(E.relevance.sum(1) + E.bias_relevance - E.output).max()
    print(f"data: {args.n} x {args.d}, {args.classes} classes, float64, batch_size={args.batch_size}, "
          f"thp={args.thp}")
    print(f"decision_function        {t_df:8.3f} s   (baseline)")
    print(f"LRPTransformer.transform {t_lrp:8.3f} s   ratio {t_lrp / t_df:5.2f}x   (goal <= 2x)")
    print(f"LRPTransformer.explain   {t_explain:8.3f} s   ratio {t_explain / t_df:5.2f}x")
    print(f"max conservation error   {err:.2e}")


if __name__ == "__main__":
    main()
