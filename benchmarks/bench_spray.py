"""Benchmark SpRAy: per-step time and peak memory, exact vs approximate agreement (Chapter 6).

The maps are planted prediction strategies: each map is one of ``--strategies`` relevance
patterns (a Gaussian bump at its own place of a 64x64 map, sum-pooled to 20x20 as in
Section 6.3), shifted by up to 3 pixels and scaled by a log-normal factor per map, plus
Gaussian noise (std 0.5 per 64x64 pixel, i.e. 1.6 per pooled cell). They are generated
directly on the 20x20 grid, in float32, so that a million maps fit in memory (1.6 GB).

Modes (any combination):

* ``--n N``: one SpRAy fit on N maps (``--approx``: knn="approximate", else knn="auto");
  prints the wall time, CPU time (all threads) and peak resident memory (RSS, sampled every
  10 ms) of every step, the process' VmHWM, and ``uptime``. ``--recall`` adds the share of
  the exact neighbours the search found, on 1000 random maps (their exact neighbours by brute
  force over all N).
* ``--agreement 5000,50000``: for each size, the exact path (knn="exact", ARPACK, k-means)
  and the approximate path (knn="approximate") on the same maps: ARI between their labels,
  ARI of each with the planted strategies, the share of exact neighbours found, the largest
  eigenvalue difference, the time ratio; on two data seeds (0: the one the defaults were
  chosen on, 1: not looked at before).
* ``--spectrum-only FILE --eigen-solver arpack|amg``: after ``--n N --save-graph FILE``, time
  only the spectrum step on that affinity graph (to compare eigensolvers on one graph).
* ``--dense`` (N <= 10000): a dense baseline (N x N distances, dense L_sym, dense eigh) and
  the eigenvalue difference to SpRAy's sparse path; ``--corelay-python`` times CoRelAy's
  spectral pipeline on the same pooled maps.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_spray.py --n 1000000 --approx --no-tsne --jobs 2 --recall
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_spray.py --n 100000 --approx --jobs 2
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_spray.py --agreement 5000,50000 --jobs 2
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import scipy.linalg
import scipy.sparse
from sklearn.metrics import adjusted_rand_score

from sklrp import SpRAy
from sklrp.spray import pool_maps

CORELAY_SCRIPT = r"""
import sys, time, json, numpy as np
from corelay.pipeline.spectral import SpectralClustering
from corelay.processor.affinity import SparseKNN
from corelay.processor.embedding import EigenDecomposition
from corelay.processor.clustering import KMeans
from corelay.processor.laplacian import SymmetricNormalLaplacian
data = np.load(sys.argv[1]); k = int(sys.argv[2]); n_clusters = int(sys.argv[3])
pipe = SpectralClustering(
    affinity=SparseKNN(n_neighbors=k, symmetric=True),
    laplacian=SymmetricNormalLaplacian(),
    embedding=EigenDecomposition(n_eigval=20),
    clustering=KMeans(n_clusters=n_clusters),
)
t = time.perf_counter(); out = pipe(data); dt = time.perf_counter() - t
print(json.dumps({"seconds": dt}))
"""

CENTRES = [(16, 16), (48, 40), (20, 50), (46, 12), (32, 30), (10, 34), (56, 56), (36, 54)]


def make_maps(n, n_strategies=4, seed=0, noise=1.6, chunk=100_000):
    """Planted strategies on the pooled 20x20 grid, float32; returns (maps (n, 400), strategy)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:64, 0:64]
    shifts = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)]
    templates = np.stack([
        pool_maps(3.0 * np.exp(-((rr - cy - dy) ** 2 + (cc - cx - dx) ** 2) / 72.0)[None], (20, 20))[0].ravel()
        for cy, cx in CENTRES[:n_strategies] for dy, dx in shifts
    ]).astype(np.float32).reshape(n_strategies, len(shifts), 400)
    labels = rng.integers(0, n_strategies, n)
    out = np.empty((n, 400), dtype=np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        lab = labels[s:e]
        shift = rng.integers(0, len(shifts), e - s)
        amp = rng.lognormal(0.0, 0.25, e - s).astype(np.float32)
        out[s:e] = templates[lab, shift] * amp[:, None]
        out[s:e] += noise * rng.standard_normal((e - s, 400), dtype=np.float32)
    return out, labels


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


class RssSampler(threading.Thread):
    """Samples VmRSS and the process' CPU time every 10 ms (timestamps on time.perf_counter)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.samples.append((time.perf_counter(), _status_kb("VmRSS"), time.process_time()))
            time.sleep(0.01)

    def stop(self):
        self._halt.set()
        self.join()


def profiled_fit(est, X):
    """Fit est on X; per-step (seconds, CPU seconds, peak RSS GB) from timings_ and the samples.

    CPU seconds (all threads) tell how much of the wall time the process really ran: on a
    shared machine the wall time of a step can be several times its CPU time.
    """
    _reset_peak()
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    est.fit(X)
    total = time.perf_counter() - t0
    sampler.stop()
    hwm = _status_kb("VmHWM") / 2**20
    rows, start = [], t0
    samples = np.array(sampler.samples) if sampler.samples else np.zeros((0, 3))

    def cpu_at(t):
        return np.interp(t, samples[:, 0], samples[:, 2]) if len(samples) else float("nan")

    for step, dt in est.timings_.items():
        inside = samples[(samples[:, 0] >= start) & (samples[:, 0] <= start + dt + 0.01)] if len(samples) else []
        peak = inside[:, 1].max() / 2**20 if len(inside) else float("nan")
        rows.append((step, dt, cpu_at(start + dt) - cpu_at(start), peak))
        start += dt
    cpu_total = cpu_at(t0 + total) - cpu_at(t0)
    return rows, total, cpu_total, hwm


def graph_recall(X, W, k, n_sample=1000, seed=123):
    """Share of the exact k nearest neighbours of n_sample random maps that are edges of W."""
    import faiss

    rows = np.random.default_rng(seed).choice(X.shape[0], min(n_sample, X.shape[0]), replace=False)
    _, exact = faiss.knn(np.ascontiguousarray(X[rows], dtype=np.float32),
                         np.ascontiguousarray(X, dtype=np.float32), k + 1)
    found = [np.isin(e[e != r][:k], W.indices[W.indptr[r]:W.indptr[r + 1]]).mean() for r, e in zip(rows, exact)]
    return float(np.mean(found))


def probes(args):
    """SpRAy keyword for --knn-probes (SpRAy's default when not given)."""
    return {} if args.knn_probes is None else {"knn_probes": args.knn_probes}


def run_one(args):
    X, truth = make_maps(args.n, args.strategies, seed=args.seed)
    print(f"data: {args.n} planted maps (20x20, {args.strategies} strategies), {X.nbytes / 2**30:.2f} GB float32")
    print("load before:", uptime())
    est = SpRAy(pool_shape=None, knn="approximate" if args.approx else "auto", eigen_solver=args.eigen_solver,
                embedding=None if args.no_tsne else "tsne", n_jobs=args.jobs, random_state=0, verbose=args.verbose,
                **probes(args))
    rows, total, cpu_total, hwm = profiled_fit(est, X)
    print(f"SpRAy fit: N={args.n} knn={est.knn_method_} knn_probes={est.knn_probes} eigen_solver={est.eigen_solver_} "
          f"embedding={est.embedding_method_} n_jobs={args.jobs} threads OMP={os.environ.get('OMP_NUM_THREADS')}")
    for step, dt, cpu, peak in rows:
        print(f"  {step:12s} {dt:9.2f} s wall {cpu:9.2f} s CPU   peak RSS {peak:6.2f} GB")
    print(f"  {'total':12s} {total:9.2f} s wall {cpu_total:9.2f} s CPU   VmHWM {hwm:6.2f} GB (input maps included)")
    ari = adjusted_rand_score(truth, est.labels_)
    print(f"  n_clusters_={est.n_clusters_}  ARI with the planted strategies {ari:.4f}"
          f"  eigenvalues[:6]={np.round(est.eigenvalues_[:6], 4).tolist()}")
    print("load after:", uptime())
    if args.save_graph:
        scipy.sparse.save_npz(args.save_graph, est.affinity_matrix_)
    if args.recall:
        t = time.perf_counter()
        rec = graph_recall(X, est.affinity_matrix_, est.n_neighbors_)
        print(f"  share of the exact {est.n_neighbors_} nearest neighbours of 1000 random maps that are graph edges: "
              f"{rec:.4f} ({time.perf_counter() - t:.0f} s to check)", flush=True)
    return X, est


def spectrum_only(args):
    """Time the spectrum step alone on a saved affinity graph (one eigensolver per process)."""
    import resource

    from threadpoolctl import threadpool_limits

    from sklrp.spray import _graph, _spectrum

    W = scipy.sparse.load_npz(args.spectrum_only).tocsr()
    threads = args.jobs or 1
    with threadpool_limits(threads):
        L, deg = _graph.laplacian(W, "sym")
        solver = _spectrum.resolve_solver(args.eigen_solver, W.shape[0])
        t, c = time.perf_counter(), time.process_time()
        vals, _, n_comp, _ = _spectrum.spectrum(L, W, deg, 20, kind="sym", solver=solver,
                                                random_state=np.random.RandomState(0))
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"spectrum of a {W.shape[0]}-map graph ({W.nnz} edges, {n_comp} components), {solver}, {threads} threads: "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.2f} GB; eigenvalues {np.round(vals, 6).tolist()}"
          f"   [{uptime()}]")


def agreement(sizes, args):
    print("Agreement of the approximate path with the exact path (same maps, random_state=0)")
    for seed in (0, 1):
        for n in sizes:
            X, truth = make_maps(n, args.strategies, seed=seed)
            common = dict(pool_shape=None, embedding=None, n_jobs=args.jobs, random_state=0)
            t = time.perf_counter()
            ex = SpRAy(knn="exact", eigen_solver="arpack", clustering="kmeans", **common).fit(X)
            t_ex = time.perf_counter() - t
            t = time.perf_counter()
            ap = SpRAy(knn="approximate", eigen_solver=args.eigen_solver, **probes(args), **common).fit(X)
            t_ap = time.perf_counter() - t
            dl = np.abs(ex.eigenvalues_ - ap.eigenvalues_)
            both = ex.affinity_matrix_.multiply(ap.affinity_matrix_).nnz / ex.affinity_matrix_.nnz
            nz = ex.eigenvalues_ > 1e-8
            rel = (dl[nz] / ex.eigenvalues_[nz]).max() if nz.any() else 0.0
            print(f"  seed {seed} N={n:7d}: ARI(approx, exact)={adjusted_rand_score(ex.labels_, ap.labels_):.4f}  "
                  f"ARI vs planted: exact {adjusted_rand_score(truth, ex.labels_):.4f}, "
                  f"approx {adjusted_rand_score(truth, ap.labels_):.4f}  n_clusters {ex.n_clusters_}/{ap.n_clusters_}  "
                  f"edges in both graphs {both:.4f}  max|dlambda| {dl.max():.2e}, relative {rel:.2e}\n"
                  f"      (lambda_2: {ex.eigenvalues_[1]:.4f} vs {ap.eigenvalues_[1]:.4f}, "
                  f"lambda_{args.strategies + 1}: {ex.eigenvalues_[args.strategies]:.4f} vs "
                  f"{ap.eigenvalues_[args.strategies]:.4f})")
            print(f"      time exact {t_ex:.1f} s (neighbours {ex.timings_['neighbors']:.1f} s), approximate "
                  f"{t_ap:.1f} s (neighbours {ap.timings_['neighbors']:.1f} s): RATIO exact/approximate "
                  f"{t_ex / t_ap:.1f}x   [{uptime()}]", flush=True)


def dense_baseline(feats, k, m=20):
    """The obvious dense pipeline: N x N distances, kNN, L_sym and a dense eigh."""
    t = time.perf_counter()
    feats = feats.astype(float)
    sq = (feats**2).sum(1)
    D = sq[:, None] + sq[None, :] - 2 * feats @ feats.T
    np.fill_diagonal(D, np.inf)
    nbr = np.argpartition(D, k, axis=1)[:, :k]
    W = np.zeros_like(D)
    W[np.repeat(np.arange(len(D)), k), nbr.ravel()] = 1.0
    W = np.maximum(W, W.T)
    dm = 1.0 / np.sqrt(W.sum(1))
    L = np.eye(len(W)) - dm[:, None] * W * dm[None, :]
    t_graph = time.perf_counter() - t
    t = time.perf_counter()
    vals = scipy.linalg.eigh(L, subset_by_index=[0, m - 1], eigvals_only=True)
    return t_graph, time.perf_counter() - t, vals


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="one profiled fit on this many maps")
    ap.add_argument("--approx", action="store_true", help='knn="approximate" (default knn="auto")')
    ap.add_argument("--no-tsne", action="store_true", help="skip the t-SNE step")
    ap.add_argument("--eigen-solver", default="auto", choices=["auto", "arpack", "amg"])
    ap.add_argument("--knn-probes", type=int, default=None, help="SpRAy(knn_probes=...); default: SpRAy's")
    ap.add_argument("--recall", action="store_true", help="share of exact neighbours found (1000 maps)")
    ap.add_argument("--save-graph", default=None, help="save the affinity graph (.npz) of the --n fit")
    ap.add_argument("--spectrum-only", default=None, help="time the spectrum step on a saved graph (.npz)")
    ap.add_argument("--agreement", default=None, help="comma-separated sizes, e.g. 5000,50000")
    ap.add_argument("--strategies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=None, help="SpRAy(n_jobs=...)")
    ap.add_argument("--dense", action="store_true", help="dense baseline (N <= 10000)")
    ap.add_argument("--verbose", action="store_true", help="SpRAy progress bars")
    ap.add_argument("--corelay-python", default=os.environ.get("CORELAY_PYTHON"))
    args = ap.parse_args()
    if args.spectrum_only:
        spectrum_only(args)
        return
    if args.n is None and not args.agreement:
        args.n = 5000
    print("load:", uptime(), "| the machine may be shared: compare figures only within one run")
    if args.n is not None:
        X, est = run_one(args)
        if args.dense and args.n <= 10_000:
            k = math.ceil(math.log(args.n))
            t_graph, t_eig, vals = dense_baseline(X, k)
            sparse = sum(est.timings_[s] for s in ("neighbors", "affinity", "laplacian", "spectrum"))
            print(f"  dense graph + L_sym {t_graph:.2f} s, dense eigh (20 smallest) {t_eig:.2f} s; "
                  f"max |eigenvalue difference| to SpRAy {np.abs(np.sort(vals) - est.eigenvalues_).max():.2e}")
            print(f"RATIO dense graph+eig / sklrp neighbours..spectrum: {(t_graph + t_eig) / sparse:.1f}x")
        if args.corelay_python:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "pooled.npy")
                np.save(path, X)
                out = subprocess.run([args.corelay_python, "-c", CORELAY_SCRIPT, path, str(est.n_neighbors_),
                                      str(est.n_clusters_)], capture_output=True, text=True, check=False)
            if out.returncode == 0:
                t_corelay = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
                print(f"  CoRelAy spectral pipeline {t_corelay:.2f} s (no t-SNE); sklrp fit "
                      f"{sum(est.timings_.values()):.2f} s")
            else:
                print("  CoRelAy run failed:", out.stderr.strip().splitlines()[-1:])
        del X, est
    if args.agreement:
        agreement([int(s) for s in args.agreement.split(",")], args)


if __name__ == "__main__":
    sys.exit(main())
