"""
=====================================================================
Kernel SVMs on Bag-of-Words: intersection vs chi2 vs RBF (Fig. 2.13)
=====================================================================

A Bag-of-Words pipeline (dense SIFT -> visual words -> SVM) is trained on the
toy *shapes* task of Section 2.4.3: is the centre of a regular polygon inside the
image? Three kernels are compared. The histogram intersection kernel (HIK) is
sum-decomposable, so LRP splits its decision value exactly over the BoW
dimensions (Eqs. (2.72)-(2.74)); the RBF and exponential chi2 kernels are
explained by a first-order Taylor expansion at a root point on the decision
boundary (Eqs. (2.75)-(2.76)), whose remainder is reported as the residual.
Relevance then flows down through the word mapping and the SIFT descriptors to
the pixels (Eqs. (2.78)-(2.85)).

Set ``SKLRP_EXAMPLES_OUT=<dir>`` to save the figure and ``SKLRP_EXAMPLES_SMALL=1``
for a quick run.
"""

# %%
# Data and the three pipelines
# ----------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

import sklrp
from sklrp.bow import BoWEncoder, DenseSIFT
from sklrp.datasets import make_shapes
from sklrp.kernels import Chi2Kernel, intersection_kernel
from sklrp.plotting import heatmap

SMALL = os.environ.get("SKLRP_EXAMPLES_SMALL") == "1"
OUT = os.environ.get("SKLRP_EXAMPLES_OUT")

n, size = (60, 48) if SMALL else (160, 64)
X, y, masks = make_shapes(n + 4, image_size=size, radius=(6.0, 10.0), random_state=0)
X_train, y_train, X_test = X[:n], y[:n], X[n:]

kernels = {"HIK": intersection_kernel, "chi2": Chi2Kernel(gamma=1.0), "RBF": "rbf"}
models = {}
for name, kernel in kernels.items():
    pipe = make_pipeline(DenseSIFT(backend="numpy"), BoWEncoder(n_words=32, random_state=0),
                         SVC(kernel=kernel, C=10.0))
    models[name] = pipe.fit(X_train, y_train)
    print(f"{name}: training accuracy {pipe.score(X_train, y_train):.2f}")

# %%
# Explain the positive-class score down to the pixels
# ---------------------------------------------------
# ``target=1`` explains the "polygon inside" output for every image. The
# ``residual`` collects what the epsilon-rule steps below the SVM absorb and,
# for chi2 and RBF, the Taylor remainder of the root-point expansion.
fig, axes = plt.subplots(len(X_test), 1 + len(models), figsize=(2.2 * (1 + len(models)), 2.2 * len(X_test)))
for i, x in enumerate(X_test):
    axes[i, 0].imshow(x, cmap="gray")
    axes[i, 0].set(xticks=[], yticks=[], title="input" if i == 0 else None)
for j, (name, pipe) in enumerate(models.items(), start=1):
    lrp = sklrp.LRPTransformer(FrozenEstimator(pipe), target=1, n_root_candidates=10).fit(X_train, y_train)
    E = lrp.explain(X_test)
    print(f"{name}: f(x) = {np.round(E.output, 2)}, |residual| <= {np.abs(E.residual).max():.2g}")
    for i in range(len(X_test)):
        heatmap(E.relevance[i], ax=axes[i, j], title=f"{name}, f={E.output[i]:.2f}")
fig.tight_layout()
if OUT:
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "svm_kernels_shapes.png"), dpi=80)
