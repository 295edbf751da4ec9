"""
===================================================================
Reassembling relevance over a large image from tiles (Fig. 2.13)
===================================================================

The toy task of Section 2.4.3: grey images with regular polygons (4-7 vertices)
and round l_p shapes; a tile is positive when a polygon's centre lies in it.
Histogram-intersection (HIK, exact decomposition, Eq. (2.72)) and exponential chi2
(Taylor at a root point, Eqs. (2.75)-(2.76)) SVMs are trained on dense SIFT +
soft-rank Bag-of-Words tiles (Eq. (2.86)); as in the thesis, each SIFT descriptor
is rotated to its main gradient direction (``DenseSIFT(orientation="dominant")``,
which needs OpenCV; upright descriptors otherwise, giving weaker models). A large scene is then cut into
overlapping tiles, each tile is explained down to its pixels (Eqs. (2.78)-(2.85))
and the tile maps are averaged where they overlap, as in Fig. 2.13.

Set ``SKLRP_EXAMPLES_OUT=<dir>`` to save the figure and ``SKLRP_EXAMPLES_SMALL=1``
for a quick run.
"""

# %%
# Train both models on tiles
# --------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

import sklrp
from sklrp.bow import BoWEncoder, DenseSIFT, explain_tiled, has_opencv
from sklrp.datasets import make_shapes
from sklrp.kernels import Chi2Kernel, intersection_kernel
from sklrp.plotting import heatmap

SMALL = os.environ.get("SKLRP_EXAMPLES_SMALL") == "1"
OUT = os.environ.get("SKLRP_EXAMPLES_OUT")

tile, n_train, scene = (64, 80, 160) if SMALL else (96, 300, 288)
radius = (tile / 8, tile / 5)
X, y, _ = make_shapes(n_train, image_size=tile, radius=radius, random_state=0)
big, _, big_mask = make_shapes(1, image_size=scene, radius=radius, n_round=(4, 6), random_state=1)
# a scene with several polygons: paste a few positive tiles into it
extra, y_extra, m_extra = make_shapes(8, image_size=tile, radius=radius, n_round=(0, 0), random_state=2)
rng = np.random.RandomState(3)
for img, lab, m in zip(extra, y_extra, m_extra):
    for _ in range(50 if lab == 1 else 0):  # paste where the polygon covers only background
        r, c = rng.randint(0, scene - tile, size=2)
        if not big_mask[0, r:r + tile, c:c + tile][m == 1].any():
            big[0, r:r + tile, c:c + tile][m == 1] = img[m == 1]
            big_mask[0, r:r + tile, c:c + tile][m == 1] = 1
            break

X_val, y_val, _ = make_shapes(60, image_size=tile, radius=radius, random_state=4)
orientation = "dominant" if has_opencv() else "upright"
models = {}
for name, kernel in {"HIK": intersection_kernel, "chi2": Chi2Kernel(gamma=1.0)}.items():
    pipe = make_pipeline(DenseSIFT(scales=(2.0,), steps=(5,), orientation=orientation),
                         BoWEncoder(n_words=64, mapping="soft_rank", random_state=0), SVC(kernel=kernel, C=10.0))
    models[name] = pipe.fit(X, y)
    print(f"{name} ({orientation} SIFT): held-out accuracy {pipe.score(X_val, y_val):.2f}")

# %%
# Explain tile by tile and average the overlaps
# ---------------------------------------------
fig, axes = plt.subplots(1, 1 + len(models), figsize=(4 * (1 + len(models)), 4))
axes[0].imshow(big[0], cmap="gray")
axes[0].set(xticks=[], yticks=[], title="scene")
for ax, (name, pipe) in zip(axes[1:], models.items()):
    lrp = sklrp.LRPTransformer(FrozenEstimator(pipe), rule="z", target=1, n_root_candidates=10).fit(X, y)
    T = explain_tiled(lrp, big[0], tile_size=tile, stride=tile // 3, target=1)
    poly, rnd = T.relevance[big_mask[0] == 1].mean(), T.relevance[big_mask[0] == 2].mean()
    print(f"{name}: {len(T.positions)} tiles; mean relevance in polygons {poly:.2e}, in round shapes {rnd:.2e}")
    heatmap(T.relevance, ax=ax, title=f"{name} relevance (tiles averaged)")
fig.tight_layout()
if OUT:
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "bow_shapes_tiled.png"), dpi=80)
