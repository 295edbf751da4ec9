"""
==================================================
Explaining a Fisher-vector pipeline down to pixels
==================================================

Fisher vectors (Section 4.2) encode local descriptors by the gradient of a
Gaussian mixture's log-likelihood (Eqs. (4.1)-(4.4)), followed by power and l2
normalisation (Eqs. (4.5)-(4.7)). sklrp explains the linear SVM on top exactly,
then propagates the relevance through the normalisation (Eq. (4.8)), the Fisher
encoding (Eqs. (4.9)-(4.10)) and the descriptors to the pixels.

Set ``SKLRP_EXAMPLES_OUT=<dir>`` to save the figure and ``SKLRP_EXAMPLES_SMALL=1``
for a quick run.
"""

# %%
# The pipeline: dense SIFT -> Fisher vector -> power normalisation -> SVM
# -----------------------------------------------------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

import sklrp
from sklrp.bow import DenseSIFT, FisherVectorEncoder, PowerNormalizer
from sklrp.datasets import make_shapes
from sklrp.plotting import heatmap

SMALL = os.environ.get("SKLRP_EXAMPLES_SMALL") == "1"
OUT = os.environ.get("SKLRP_EXAMPLES_OUT")

n, size = (60, 48) if SMALL else (160, 64)
X, y, masks = make_shapes(n + 4, image_size=size, radius=(6.0, 10.0), random_state=1)
X_train, y_train, X_test, masks_test = X[:n], y[:n], X[n:], masks[n:]
pipe = make_pipeline(DenseSIFT(backend="numpy"),
                     FisherVectorEncoder(n_components=4, pca_components=16, random_state=0),
                     PowerNormalizer(power=0.5), LinearSVC(C=1.0))
pipe.fit(X_train, y_train)
print(f"training accuracy: {pipe.score(X_train, y_train):.2f}")

# %%
# Relevance for the "polygon inside" class
# ----------------------------------------
# The SVM step is exact (sum R + bias = f(x)); the steps below use the epsilon
# rule, whose stabiliser absorbs a little relevance (the residual).
lrp = sklrp.LRPTransformer(FrozenEstimator(pipe), target=1, epsilon=1e-2).fit(X_train, y_train)
E = lrp.explain(X_test)
print("f(x):", np.round(E.output, 3))
print("sum R + bias + residual - f(x):", np.abs(E.relevance.sum((1, 2)) + E.bias_relevance + E.residual
                                                  - E.output).max())

fig, axes = plt.subplots(2, len(X_test), figsize=(2.4 * len(X_test), 5))
for i in range(len(X_test)):
    axes[0, i].imshow(X_test[i], cmap="gray")
    axes[0, i].contour(masks_test[i] == 1, levels=[0.5], colors="yellow", linewidths=0.8)
    axes[0, i].set(xticks=[], yticks=[], title=f"f(x) = {E.output[i]:.2f}")
    heatmap(E.relevance[i], X_test[i], ax=axes[1, i], cmap="coldhot")
fig.suptitle("Fisher-vector SVM: input (polygon outlined) and LRP relevance over the input")
if OUT:
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "fisher_vector.png"), dpi=80)
