"""
=============================================
SpRAy: finding a Clever Hans in an SVM
=============================================

A quarter of the images of class 0 carry a small "copyright" tag in the
bottom-left corner, like the horse images of Pascal VOC (Section 6.2). An
intersection-kernel SVM learns to use it. Looking at single heatmaps one might
miss it; Spectral Relevance Analysis (Algorithm 3) clusters all relevance maps
of a class (kNN graph, Eq. (6.1); Laplacian spectrum, Eq. (6.2)) and the
eigengap reveals that class 0 is predicted by two strategies -- one of them the
tag. SpRAy on the raw images does not separate the tagged images.

Set ``SKLRP_EXAMPLES_OUT=<dir>`` to save the figures and ``SKLRP_EXAMPLES_SMALL=1``
for a quick run.
"""

# %%
# Clever-Hans data and an intersection-kernel SVM
# -----------------------------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import adjusted_rand_score
from sklearn.svm import SVC

import sklrp
from sklrp import SpRAy, spray_spectra
from sklrp.datasets import make_clever_hans
from sklrp.kernels import intersection_kernel
from sklrp.plotting import plot_class_spectra, plot_embedding, plot_spectrum

SMALL = os.environ.get("SKLRP_EXAMPLES_SMALL") == "1"
OUT = os.environ.get("SKLRP_EXAMPLES_OUT")

# SpRAy needs ~100 maps per class, so this example runs at full size even with SMALL
X, y, tagged = make_clever_hans(n_samples=800, random_state=0)
X = np.clip(X, 0.0, None).reshape(len(X), -1)  # the intersection kernel needs non-negative input
half = len(X) // 2
svm = SVC(kernel=intersection_kernel).fit(X[:half], y[:half])
X_test, y_test, tag_test = X[half:], y[half:], tagged[half:]
print(f"test accuracy {svm.score(X_test, y_test):.2f}; "
      f"on tagged images {svm.score(X_test[tag_test], 0 * y_test[tag_test]):.2f}")

# %%
# Relevance maps of every class, and the spectrum per class (Fig. 6.5)
# --------------------------------------------------------------------
# Maps are explained for their true class, sum-pooled to 20x20 and l2-normalised
# per map, so that SpRAy compares *where* the evidence is, not how strong it is.
lrp = sklrp.LRPTransformer(svm).fit(X[:half], y[:half])
R = lrp.explain(X_test, target=y_test).relevance.reshape(-1, 32, 32)
template = SpRAy(pool_shape=(20, 20), normalize="l2", random_state=0)
res = spray_spectra(R, y_test, spray=template)
print("classes ranked by lambda_2:", res.classes.tolist(), "clusters:", res.n_clusters.tolist())
fig = plot_class_spectra(dict(zip(res.classes.tolist(), res.eigenvalues)), highlight=[0],
                         title="smallest eigenvalues of L_sym per class")

# %%
# Class 0: eigengap, clusters and the planted tag
# -----------------------------------------------
spray = res.estimators[0]
sel = y_test == 0
print(f"class 0: {spray.n_clusters_} clusters, sizes {np.bincount(spray.labels_).tolist()}, "
      f"ARI with the planted tag {adjusted_rand_score(tag_test[sel], spray.labels_):.2f}")
raw = SpRAy(pool_shape=(20, 20), normalize="l2", embedding=None, random_state=0).fit(X_test[sel].reshape(-1, 32, 32))
print(f"SpRAy on the raw images: {raw.n_clusters_} cluster(s), "
      f"ARI {adjusted_rand_score(tag_test[sel], raw.labels_):.2f}")
fig2, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
plot_spectrum(spray, ax=ax1, title="class 0: eigenvalues of L_sym")
plot_embedding(spray.embedding_, spray.labels_, thumbnails=R[sel], ax=ax2, n_thumbnails=14,
               title="class 0: t-SNE of relevance maps, coloured by SpRAy cluster")
if OUT:
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "spray_class_spectra.png"), dpi=80, bbox_inches="tight")
    fig2.savefig(os.path.join(OUT, "spray_class0.png"), dpi=80, bbox_inches="tight")
