"""Benchmark SpRAy: N relevance maps of 64x64 sum-pooled to 20x20 (Section 6.3).

Prints the time of every step of Algorithm 3 and the total, then compares against
(a) CoRelAy's equivalent spectral pipeline (pairwise distances, symmetric kNN affinity,
    L_sym, eigendecomposition of 20 eigenpairs, k-means) when a Python with CoRelAy is given
    (``--corelay-python``; CoRelAy is kept out of sklrp's venv), and
(b) a dense baseline measured in the same run: dense pairwise distances, dense kNN graph,
    dense L_sym and a dense eigendecomposition (scipy.linalg.eigh, smallest 20 only).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_spray.py [--n 5000] [--no-tsne]
        [--corelay-python /tmp/venv-corelay/bin/python]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.linalg
from sklearn.cluster import KMeans

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


def make_maps(n, seed=0):
    """Three planted relevance strategies (Gaussian bumps at three places) plus noise."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:64, 0:64]
    labels = rng.integers(0, 3, n)
    maps = 0.5 * rng.standard_normal((n, 64, 64))
    for i, (cy, cx) in enumerate([(16, 16), (48, 40), (20, 50)]):
        maps[labels == i] += 3.0 * np.exp(-((rr - cy) ** 2 + (cc - cx) ** 2) / 72.0)
    return maps, labels


def timed_spray(maps, tsne):
    """Run SpRAy's steps one by one (the same private steps fit() chains) and time each."""
    est = SpRAy(random_state=0, embedding="tsne" if tsne else None)
    rs = np.random.RandomState(0)
    times = {}
    t = time.perf_counter()
    feats = est._preprocess(maps)
    times["preprocess"] = time.perf_counter() - t
    n = len(feats)
    k = math.ceil(math.log(n))
    n_query = max(k, min(n - 1, int(3.0 * 7 + 1))) if tsne else k
    t = time.perf_counter()
    W, ind = est._affinity(feats, k, n_query)
    times["affinity"] = time.perf_counter() - t
    t = time.perf_counter()
    L = est._laplacian(W)
    times["laplacian"] = time.perf_counter() - t
    t = time.perf_counter()
    est._spectrum(L, W, 20, rs)
    times["spectrum"] = time.perf_counter() - t
    t = time.perf_counter()
    vals, vecs, _, _ = est._spectrum(L, W, 20, rs)
    U = vecs[:, :3] / np.linalg.norm(vecs[:, :3], axis=1, keepdims=True)
    KMeans(n_clusters=3, n_init=10, random_state=0).fit(U)
    times["clustering"] = time.perf_counter() - t - times["spectrum"]
    if tsne:
        t = time.perf_counter()
        est._tsne(W, ind, n, rs)
        times["embedding (t-SNE)"] = time.perf_counter() - t
    t = time.perf_counter()
    est.fit(maps)
    total_fit = time.perf_counter() - t
    t = time.perf_counter()
    SpRAy(random_state=0, embedding=None).fit(maps)
    times["_fit_without_embedding"] = time.perf_counter() - t
    return times, total_fit, est


def dense_baseline(feats, k, m=20):
    """The obvious dense pipeline: N x N distances, kNN, L_sym and a dense eigh."""
    t = time.perf_counter()
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
    t_eig = time.perf_counter() - t
    return t_graph, t_eig, vals


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--no-tsne", action="store_true", help="skip the t-SNE step")
    ap.add_argument("--corelay-python", default=os.environ.get("CORELAY_PYTHON"))
    args = ap.parse_args()

    maps, truth = make_maps(args.n)
    print(f"SpRAy benchmark: N={args.n} maps of 64x64 -> 20x20, threads OMP={os.environ.get('OMP_NUM_THREADS')}")
    times, total, est = timed_spray(maps, tsne=not args.no_tsne)
    t_nofit = times.pop("_fit_without_embedding")
    for step, dt in times.items():
        print(f"  sklrp {step:22s} {dt:8.3f} s")
    print(f"  sklrp total fit             {total:8.3f} s   (n_clusters_={est.n_clusters_})")
    print(f"  sklrp fit, embedding=None   {t_nofit:8.3f} s")
    t_spectral = times["preprocess"] + times["affinity"] + times["laplacian"] + times["spectrum"]

    feats = pool_maps(maps, (20, 20)).reshape(args.n, -1)
    k = math.ceil(math.log(args.n))
    t_graph, t_eig, vals = dense_baseline(feats, k)
    print(f"  dense graph + L_sym         {t_graph:8.3f} s")
    print(f"  dense eigh (20 smallest)    {t_eig:8.3f} s")
    err = np.abs(np.sort(vals) - est.eigenvalues_).max()
    print(f"  max |eigenvalue difference| {err:.2e}")
    print(f"RATIO dense eigendecomposition / sklrp spectrum step: {t_eig / times['spectrum']:.1f}x")
    print(f"RATIO dense graph+eig / sklrp preprocess..spectrum:   {(t_graph + t_eig) / t_spectral:.1f}x")

    if args.corelay_python:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "pooled.npy")
            np.save(path, feats)
            out = subprocess.run(
                [args.corelay_python, "-c", CORELAY_SCRIPT, path, str(k), str(est.n_clusters_)],
                capture_output=True, text=True, check=False,
            )
        if out.returncode == 0:
            t_corelay = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
            print(f"  CoRelAy spectral pipeline   {t_corelay:8.3f} s (pooled input, no t-SNE)")
            print(f"RATIO CoRelAy (pooled input) / sklrp fit with pooling, embedding=None: "
                  f"{t_corelay / t_nofit:.1f}x")
        else:
            print("  CoRelAy run failed:", out.stderr.strip().splitlines()[-1:])
    else:
        print("  CoRelAy: no --corelay-python given; dense baseline only")


if __name__ == "__main__":
    sys.exit(main())
