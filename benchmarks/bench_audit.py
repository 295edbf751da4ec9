"""Benchmark: the audit's parallel explanation path and report rendering vs. their baselines.

Measured in one run, on an intersection-kernel SVM over 32x32 Clever-Hans images:

* ``explain_parallel(n_jobs=1)`` (chunks through joblib) vs. one ``LRPTransformer.explain``
  call on all samples: the overhead of chunking (goal: ratio near 1);
* ``explain_parallel(n_jobs=2)`` vs. ``n_jobs=1``: the scale-out speed-up (loky processes;
  bounded by the cores that are free);
* rendering the relevance-map figure with :func:`sklrp.plotting.heatmap_grid` vs. a plain
  matplotlib ``imshow`` grid of the same maps (the cost of Eq. (2.62) normalisation/overlay);
* the flagging rule :func:`sklrp.audit.shortcut_scan` on all maps vs. SpRAy's per-class spectra
  (:func:`sklrp.spray_spectra`), the analysis it replaces as the verdict;
* a bad ``sklrp audit`` call (missing file): seconds until the one-line error, and whether torch
  was imported (it is not: argument and file checks come first).

Usage::

    .venv/bin/python benchmarks/bench_audit.py [--n 400] [--repeats 2]
"""

import argparse
import io

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from sklrp.audit import explain_parallel, make_explainer  # noqa: E402
from sklrp.audit.demo import demo_data  # noqa: E402
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

    from sklrp import SpRAy, spray_spectra
    from sklrp.audit import shortcut_scan

    R = lrp.explain(X, target=y).relevance.reshape(len(X), 32, 32)
    t_scan = best_of(lambda: shortcut_scan(R, y), args.repeats)
    t_spray = best_of(lambda: spray_spectra(R, y, spray=SpRAy(pool_shape=(20, 20), embedding=None, normalize="l2",
                                                              random_state=0)), args.repeats)
    import subprocess
    import sys

    code = ("import sys, time; t = time.perf_counter(); from sklrp.cli import main; "
            "r = main(['audit', 'missing.joblib', 'missing.npz']); "
            "print(r, round(time.perf_counter() - t, 3), 'torch' in sys.modules)")
    t_err = best_of(lambda: subprocess.run([sys.executable, "-c", code], capture_output=True), args.repeats)
    err_out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()

    print(f"HIK SVM, {args.n} samples of 32x32, {len(svm.support_)} support vectors")
    print(f"explain (one call)            {t_plain:8.3f} s")
    print(f"explain_parallel n_jobs=1     {t_chunk1:8.3f} s   ratio vs one call   {t_chunk1 / t_plain:5.2f}x")
    print(f"explain_parallel n_jobs=2     {t_chunk2:8.3f} s   speed-up vs n_jobs=1 {t_chunk1 / t_chunk2:5.2f}x")
    print(f"plain imshow grid (16 maps)   {t_imshow:8.3f} s")
    print(f"heatmap_grid (16 maps)        {t_grid:8.3f} s   ratio vs imshow     {t_grid / t_imshow:5.2f}x")
    print(f"spray_spectra (all classes)   {t_spray:8.3f} s")
    print(f"shortcut_scan (all classes)   {t_scan:8.3f} s   ratio vs spectra    {t_scan / t_spray:5.2f}x")
    print(f"bad CLI call (new process)    {t_err:8.3f} s   exit {err_out[0]}, in-process {err_out[1]} s, "
          f"torch imported: {err_out[2]}")


if __name__ == "__main__":
    main()
