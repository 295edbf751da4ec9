"""Benchmark: explaining Dask arrays larger than memory on a LocalCluster, against one in-memory process.

Two cases:

* linear: ``LogisticRegression`` on a 10^7 x 100 float64 Dask array (8 GB), generated lazily
  by ``dask.array.random`` block by block on the workers (never whole, anywhere);
* rbf-svc: an RBF ``SVC`` (Taylor decomposition at root points, Eqs. (2.75)-(2.76)) on 10^5 x 64.

Each case runs ``LRPTransformer.explain`` on a LocalCluster of 1 and of 2 worker processes
(one thread each) and computes every field of the explanation reduced to sums (so that the
8 GB of relevance is produced but not gathered). The baseline is the in-memory
single-process run of ``explain`` on a subset that fits, timed in the same script: rows/s
of both and their ratio. The Dask figure includes generating the data on the workers, so
the script also times generation alone on the cluster and in-memory generation + explain.

Memory: each worker's peak resident set (``VmHWM`` of ``/proc/self/status``, reset before
every run through ``/proc/self/clear_refs``) is printed beside its resident set before the
run and the chunk size: the growth stays a few chunks, independent of the number of rows.

Worker allocator. distributed starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which
turns off glibc's dynamic mmap threshold: every large temporary of a batch is then a fresh
``mmap`` that page-faults on first touch (measured: 3x the minor page faults and 3x the wall
time of an RBF SVC explanation). The script gives workers ``MALLOC_MMAP_THRESHOLD_=32 MiB``
(``--mmap-threshold``; ``0`` keeps distributed's defaults).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dask.py [--quick] [--workers 1,2] [--mmap-threshold 0]

``--quick`` runs 10^6 x 100 and 10^4 x 64.
"""

import argparse
import logging
import os
import subprocess
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

import sklrp


def _reset_peak():
    """Reset this process's peak resident set (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _cpu_seconds():
    """CPU time (user + system, all threads) this process has used so far."""
    return time.process_time()


def _memory():
    """``(VmRSS, VmHWM)`` of this process in MiB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def _uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _lazy(n, d, chunk_rows, seed):
    import dask.array as da

    return da.random.default_rng(seed).standard_normal((n, d), chunks=(chunk_rows, d))


def _cases(quick):
    rng = np.random.RandomState(0)
    # linear: labels from a linear rule; fitted on 5000 rows (training is not what is measured)
    d = 100
    w = rng.randn(d)
    Xf = rng.randn(5000, d)
    linear = sklrp.LRPTransformer(LogisticRegression(max_iter=200), device="cpu").fit(Xf, (Xf @ w > 0).astype(int))
    # rbf: a radial rule on 8 of 64 features; ~940 support vectors; 10 root candidates per sample
    d = 64
    Xf = rng.randn(1000, d)
    yf = ((Xf[:, :8] ** 2).sum(1) > 8).astype(int)
    svc = sklrp.LRPTransformer(SVC(kernel="rbf", gamma=1.0 / d, C=1.0), device="cpu",
                               n_root_candidates=10).fit(Xf, yf)
    return [
        # name, explainer, rows (Dask), features, rows in memory, rows per chunk
        ("linear", linear, 10**6 if quick else 10**7, 100, 10**5 if quick else 10**6, 10**5),
        ("rbf-svc", svc, 10**4 if quick else 10**5, 64, 1000 if quick else 2000, 10**3 if quick else 10**4),
    ]


def _in_memory(lrp, n, d, repeats):
    """rows/s and rows per CPU second of explain on data in memory, and of generating + explaining."""
    gen = np.random.default_rng(1)
    best = np.full(4, np.inf)  # wall explain, wall both, CPU explain, CPU both
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        X = gen.standard_normal((n, d))
        t1, c1 = time.perf_counter(), time.process_time()
        lrp.explain(X)
        t2, c2 = time.perf_counter(), time.process_time()
        best = np.minimum(best, [t2 - t1, t2 - t0, c2 - c1, c2 - c0])
        del X
    return n / best


def _on_cluster(lrp, n, d, chunk_rows, n_workers, mmap_threshold):
    import dask
    from distributed import Client, LocalCluster

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    if mmap_threshold:
        environ["MALLOC_MMAP_THRESHOLD_"] = mmap_threshold
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               memory_limit="8GiB", silence_logs=logging.ERROR)
    with cluster, Client(cluster) as client:
        # warm: workers import sklrp and torch once (not part of the throughput)
        E = lrp.explain(_lazy(2 * n_workers, d, 2, seed=5))
        dask.compute(E.relevance.sum(), E.output.sum())
        X = _lazy(n, d, chunk_rows, seed=2)

        t0 = time.perf_counter()
        X.sum().compute()
        t_gen = time.perf_counter() - t0

        client.run(_reset_peak)
        before = client.run(_memory)
        cpu0 = client.run(_cpu_seconds)
        t0 = time.perf_counter()
        E = lrp.explain(X)  # reads the first block now (checks X against the model)
        sums = [E.relevance.sum(), E.bias_relevance.sum(), E.output.sum(), E.residual.sum()]
        if E.root_point is not None:
            sums.append(E.root_point.sum())
        dask.compute(*sums)
        t = time.perf_counter() - t0
        cpu1 = client.run(_cpu_seconds)
        after = client.run(_memory)
    rss = [before[w][0] for w in sorted(before)]
    peak = [after[w][1] for w in sorted(after)]
    cpu = sum(cpu1[w] - cpu0[w] for w in cpu0)
    return n / t, n / t_gen, n / cpu, rss, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^6 x 100 and 10^4 x 64")
    parser.add_argument("--workers", default="1,2", help="worker processes per run, comma-separated")
    parser.add_argument("--cases", default="linear,rbf-svc")
    parser.add_argument("--repeats", type=int, default=2, help="in-memory runs (the fastest counts)")
    parser.add_argument("--mmap-threshold", type=int, default=32 * 2**20,
                        help="MALLOC_MMAP_THRESHOLD_ of the workers in bytes; 0 keeps distributed's defaults")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    wanted = set(args.cases.split(","))

    print(f"sklrp {sklrp.__version__}; {os.cpu_count()} CPUs; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"worker MALLOC_MMAP_THRESHOLD_: {args.mmap_threshold or 'unset (distributed defaults)'}")
    print(f"uptime at start: {_uptime()}")
    for name, lrp, n, d, n_mem, chunk_rows in _cases(args.quick):
        if name not in wanted:
            continue
        chunk_mib = chunk_rows * d * 8 / 2**20
        print(f"\n{name}: Dask {n:.0e} x {d} float64 ({n * d * 8 / 2**30:.2f} GiB) in chunks of {chunk_rows} rows "
              f"({chunk_mib:.1f} MiB); in memory {n_mem:.0e} x {d}")
        mem_rate, mem_both, mem_cpu, mem_both_cpu = _in_memory(lrp, n_mem, d, args.repeats)
        print(f"  in memory, 1 process       explain {mem_rate:11,.0f} rows/s ({mem_cpu:11,.0f} per CPU s)   "
              f"generate + explain {mem_both:11,.0f} rows/s ({mem_both_cpu:11,.0f} per CPU s)")
        for w in workers:
            rate, gen_rate, cpu_rate, rss, peak = _on_cluster(lrp, n, d, chunk_rows, w, args.mmap_threshold)
            growth = ", ".join(f"{r:.0f} -> {p:.0f} MiB (+{p - r:.0f} MiB)" for r, p in zip(rss, peak))
            print(f"  Dask, {w} worker process{'es' if w > 1 else '  '} generate + explain {rate:11,.0f} rows/s "
                  f"({cpu_rate:11,.0f} per worker CPU s)   ratio {rate / mem_rate:5.2f}x to explain in memory, "
                  f"{rate / mem_both:5.2f}x to generate + explain ({cpu_rate / mem_both_cpu:4.2f}x per CPU s); "
                  f"generation alone {gen_rate:,.0f} rows/s")
            print(f"      RSS per worker before -> peak during the run: {growth}; chunk {chunk_mib:.1f} MiB")
        print(f"  uptime: {_uptime()}")


if __name__ == "__main__":
    main()
