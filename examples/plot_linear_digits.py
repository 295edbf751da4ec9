"""
=========================================
Explaining a linear model on digits
=========================================

A multinomial logistic regression on the 8x8 ``load_digits`` images is explained
with LRP. For a linear model ``f_c(x) = sum_d w_cd x_d + b_c`` the decomposition
is exact (Eqs. (2.14)-(2.15)): ``R_d = w_cd x_d`` and the bias keeps ``b_c``, so
``sum_d R_d + R_b = f_c(x)`` for every sample.

Set ``SKLRP_EXAMPLES_OUT=<dir>`` to save the figures as PNG files and
``SKLRP_EXAMPLES_SMALL=1`` to run on fewer samples.
"""

# %%
# Fit the model inside a pipeline
# -------------------------------
# The scaler is part of the explained pipeline: relevance flows back through it
# to the raw pixels.
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sklrp
from sklrp.plotting import heatmap, heatmap_grid

SMALL = os.environ.get("SKLRP_EXAMPLES_SMALL") == "1"
OUT = os.environ.get("SKLRP_EXAMPLES_OUT")

X, y = load_digits(return_X_y=True)
if SMALL:
    X, y = X[:600], y[:600]
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X_train, y_train)
print(f"test accuracy: {model.score(X_test, y_test):.3f}")

# %%
# Explain the predicted class
# ---------------------------
# ``FrozenEstimator`` tells sklrp to explain the fitted model as it is. The
# scaler is a linear step, propagated with the epsilon rule (Eq. (2.22)).
lrp = sklrp.LRPTransformer(FrozenEstimator(model), rule="epsilon", epsilon=1e-6).fit(X_train, y_train)
E = lrp.explain(X_test[:8])
print("conservation, max |sum R + R_b + residual - f(x)|:",
      float(np.abs(E.relevance.sum(1) + E.bias_relevance + E.residual - E.output).max()))

fig = heatmap_grid(E.relevance, images=X_test[:8], shape=(8, 8), ncols=8,
                   titles=[f"pred {t}" for t in E.target], figsize=(12, 2))
fig.suptitle("LRP relevance for the predicted class (overlay on the digit)")
if OUT:
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "linear_digits_heatmaps.png"), dpi=100)

# %%
# One sample, every class: joint normalisation
# --------------------------------------------
# Explaining all ten outputs for the same digit and normalising the maps with
# one common factor (Eq. (2.62), Fig. 2.7) keeps their relative magnitude:
# classes the model rejects get weak or negative maps.
x0 = X_test[:1]
maps = np.concatenate([lrp.explain(x0, target=c).relevance for c in model.classes_])
fig2, axes = plt.subplots(1, 11, figsize=(13, 1.8))
axes[0].imshow(x0[0].reshape(8, 8), cmap="gray_r")
axes[0].set(xticks=[], yticks=[], title="input")
S = np.abs(maps).max()
for c, ax in zip(model.classes_, axes[1:]):
    heatmap(maps[c], ax=ax, shape=(8, 8), cmap="coldhot", scale=S, title=f"class {c}")
if OUT:
    fig2.savefig(os.path.join(OUT, "linear_digits_all_classes.png"), dpi=100)
