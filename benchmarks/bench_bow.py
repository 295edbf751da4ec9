"""Benchmark: LRP descriptors -> pixels for a Fisher-vector model vs. the FV encoding itself.

One grey image (default 480 x 480) gives ~50k dense SIFT descriptors (bin 4 px, step 2 px);
they are PCA-projected to 80 dimensions and encoded by a 256-component diagonal GMM
(FV dimension 2 * 256 * 80 = 40,960; Appendix D.1). Timed in the same run, best of
``--repeats``:

* ``encode``: ``FisherVectorEncoder`` forward (posteriors + moments) on the descriptors
  (the baseline);
* ``lrp``: the backward pass FV dimensions -> descriptor dimensions (epsilon rule, Eq. (D.3)
  via the factorised ``R_l = Psi(l) . c``) -> through the PCA -> pixels (flat rule,
  Eqs. (2.84)-(2.85)), for a random relevance vector over the FV dimensions (what an SVM
  head would hand down);
* ``vlfeat``: ``cyvlfeat.fisher.fisher(improved=True)`` on the same projected descriptors and
  GMM, when cyvlfeat is installed (a second reference for the encoding cost).

The ratio ``lrp / encode`` is printed (goal <= 3x), and the peak resident memory above the
state before each phase (sampled every 2 ms). The descriptor x FV-dimension matrix
(50k x 41k, 16 GB in float64) is never formed.

Usage::

    .venv/bin/python benchmarks/bench_bow.py [--size 480] [--components 256] [--pca 80] [--repeats 3]
"""

import argparse
import os
import threading
import time

import numpy as np
import torch

from sklrp.propagators import RuleConfig, propagator_for
from sklrp.bow import DenseSIFT, FisherVectorEncoder, has_vlfeat
from sklrp.rules import Epsilon


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak resident set size above the start, sampled in a thread."""

    def __enter__(self):
        self.base = self.peak = _rss()
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mib(self):
        return (self.peak - self.base) / 2**20


def best_of(fn, repeats):
    times, mem = [], 0.0
    for _ in range(repeats):
        with PeakMemory() as pm:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        mem = max(mem, pm.mib)
    return min(times), mem


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--pca", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.RandomState(0)
    # a textured image: smoothed noise plus a few bright squares
    img = rng.rand(args.size, args.size)
    for _ in range(20):
        r, c = rng.randint(0, args.size - 40, size=2)
        img[r:r + 40, c:c + 40] += 1.0
    X = img[None]
    sift = DenseSIFT(scales=(1.0,), steps=(2,), magnif=4.0, backend="numpy").fit(X)
    D = sift.transform(X)
    # fitting cost is not measured: PCA + GMM on a subsample
    enc = FisherVectorEncoder(args.components, pca_components=args.pca, max_descriptors=6000,
                              random_state=0).fit(D)
    cfg = RuleConfig(Epsilon(1e-2))
    fv_prop, sift_prop = propagator_for(enc), propagator_for(sift)
    x_img = cfg.tensor(X)
    x_desc = cfg.tensor(D)
    R = torch.randn(1, enc._block_dims(), dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def encode():
        return enc._encode(x_desc, cfg)

    def lrp():
        r_desc = fv_prop.backward(x_desc, R, cfg).input
        return sift_prop.backward(x_img, r_desc, cfg).input

    t_enc, m_enc = best_of(encode, args.repeats)
    t_lrp, m_lrp = best_of(lrp, args.repeats)
    pixels = lrp()
    print(f"image {args.size}x{args.size}: {D.shape[1]} descriptors, PCA {D.shape[2] - 5} -> {args.pca}, "
          f"K={args.components}, FV dimension {enc._block_dims()}, torch threads {torch.get_num_threads()}")
    print(f"FV encoding (baseline)     {t_enc:8.3f} s   peak +{m_enc:7.1f} MiB")
    print(f"LRP FV -> pixels           {t_lrp:8.3f} s   peak +{m_lrp:7.1f} MiB   ratio {t_lrp / t_enc:5.2f}x "
          f"(goal <= 3x)")
    if has_vlfeat():
        from cyvlfeat.fisher import fisher

        l = enc.pca_.transform(D[0, :, 5:]).astype(np.float32)
        g = enc.gmm_
        args_v = (l, g.means_.astype(np.float32), g.covariances_.astype(np.float32), g.weights_.astype(np.float32))
        t_v, m_v = best_of(lambda: fisher(*args_v, improved=True), args.repeats)
        print(f"cyvlfeat fisher (float32)  {t_v:8.3f} s   peak +{m_v:7.1f} MiB   LRP / vlfeat {t_lrp / t_v:5.2f}x")
    print(f"pixel map {tuple(pixels.shape)}, finite: {bool(torch.isfinite(pixels).all())}")


if __name__ == "__main__":
    main()
