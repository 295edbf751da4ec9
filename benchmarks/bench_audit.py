"""Benchmark: the audit's parallel explanation path and report rendering vs. their baselines.

Measured in one run, on an intersection-kernel SVM over 32x32 Clever-Hans images:

* ``explain_parallel(n_jobs=1)`` (chunks through joblib) vs. one ``LRPTransformer.explain``
  call on all samples: the overhead of chunking (goal: ratio near 1);
* ``explain_parallel(n_jobs=2)`` vs. ``n_jobs=1``: the scale-out speed-up (loky processes;
  bounded by the cores that are free);
* rendering the relevance-map figure with :func:`sklrp.plotting.heatmap_grid` vs. a plain
  matplotlib ``imshow`` grid of the same maps (the cost of Eq. (2.62) normalisation/overlay).

Usage::

    .venv/bin/python benchmarks/bench_audit.py [--n 400] [--repeats 2]
"""

import argparse
import io

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from sklrp.cli import demo_data, explain_parallel, make_explainer  # noqa: E402
from sklrp.kernels import intersection_kernel  # noqa: E402
from sklrp.plotting import heatmap_grid  # noqa: E402
from timing import best_of  # noqa: E402


def plain_grid(maps):
    fig = Figure(figsize=(14.4, 3.8))
    for i, m in enumerate(maps):
        ax = fig.add_subplot(2, 8, i + 1)
        ax.imshow(m, cmap="seismic")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(io.BytesIO(), format="png", dpi=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="samples to explain")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    (Xtr, ytr), (X, y, _, _) = demo_data(2 * args.n, 0)
    Xtr, X = Xtr.reshape(len(Xtr), -1), X.reshape(len(X), -1)
    svm = SVC(kernel=intersection_kernel).fit(Xtr, ytr)
    lrp = make_explainer(svm, X, y)
    chunk = max(1, args.n // 4)

    t_plain = best_of(lambda: lrp.explain(X, target=y), args.repeats)
    t_chunk1 = best_of(lambda: explain_parallel(lrp, X, y, n_jobs=1, chunk_size=chunk), args.repeats)
    explain_parallel(lrp, X, y, n_jobs=2, chunk_size=chunk)  # start the loky workers once
    t_chunk2 = best_of(lambda: explain_parallel(lrp, X, y, n_jobs=2, chunk_size=chunk), args.repeats)

    maps = lrp.explain(X[:16], target=y[:16]).relevance.reshape(16, 32, 32)
    t_imshow = best_of(lambda: plain_grid(maps), args.repeats)
    t_grid = best_of(lambda: heatmap_grid(maps).savefig(io.BytesIO(), format="png", dpi=90), args.repeats)

    print(f"HIK SVM, {args.n} samples of 32x32, {len(svm.support_)} support vectors")
    print(f"explain (one call)            {t_plain:8.3f} s")
    print(f"explain_parallel n_jobs=1     {t_chunk1:8.3f} s   ratio vs one call   {t_chunk1 / t_plain:5.2f}x")
    print(f"explain_parallel n_jobs=2     {t_chunk2:8.3f} s   speed-up vs n_jobs=1 {t_chunk1 / t_chunk2:5.2f}x")
    print(f"plain imshow grid (16 maps)   {t_imshow:8.3f} s")
    print(f"heatmap_grid (16 maps)        {t_grid:8.3f} s   ratio vs imshow     {t_grid / t_imshow:5.2f}x")


if __name__ == "__main__":
    main()
