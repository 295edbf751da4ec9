"""
==============================================================
Heatmap quality: AOPC of LRP vs sensitivity, and rule search
==============================================================

Region perturbation (Section 3.4) measures how well a heatmap ranks the input
regions: perturb them most-relevant-first (MoRF, Eq. (3.6)) and record how fast
the explained score drops; the area over this curve is AOPC (Eq. (3.7)). Here a
PCA + logistic-regression pipeline on digits is explained, LRP is compared
with sensitivity analysis (Eq. (3.1)) and a random order, and ``GridSearchCV``
picks the LRP rule for the PCA step by AOPC with :func:`sklrp.make_aopc_scorer`.

Set ``SKLRP_EXAMPLES_OUT=<dir>`` to save the figure and ``SKLRP_EXAMPLES_SMALL=1``
for a quick run.
"""

# %%
# A pipeline with an intermediate linear step
# -------------------------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

import sklrp
from sklrp.evaluation import perturbation_curve, sensitivity_heatmap
from sklrp.plotting import plot_perturbation_curves

SMALL = os.environ.get("SKLRP_EXAMPLES_SMALL") == "1"
OUT = os.environ.get("SKLRP_EXAMPLES_OUT")

X, y = load_digits(return_X_y=True)
n_val = 60 if SMALL else 200
X_train, y_train, X_val, y_val = X[n_val:], y[n_val:], X[:n_val], y[:n_val]
model = make_pipeline(PCA(24, random_state=0), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
print(f"validation accuracy: {model.score(X_val, y_val):.2f}")

# %%
# Choose the rule by AOPC
# -----------------------
# The scorer perturbs 2x2 regions of the 8x8 digits with the data-set mean and
# scores each candidate's heatmaps on the validation split.
scorer = sklrp.make_aopc_scorer(region_size=2, n_steps=8, perturbation="mean", image_shape=(8, 8))
grid = [{"rule": ["epsilon"], "epsilon": [0.01, 1.0, 100.0]}, {"rule": ["z", "zplus", "flat", "wsquare"]}]
train_idx, val_idx = np.arange(n_val, len(X)), np.arange(n_val)
search = GridSearchCV(sklrp.LRPTransformer(FrozenEstimator(model)), grid, scoring=scorer,
                      cv=[(train_idx, val_idx)]).fit(X, y)
for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
    print(f"{str(params):45s} AOPC = {score:.3f}")
print("best:", search.best_params_)

# %%
# LRP vs sensitivity vs random order
# ----------------------------------
lrp = search.best_estimator_
R = lrp.transform(X_val)
S = sensitivity_heatmap(lrp, X_val)
kw = dict(region_size=2, n_steps=16, perturbation="mean", image_shape=(8, 8), random_state=0)
curves = {
    "LRP": perturbation_curve(lrp, X_val, R, **kw),
    "sensitivity": perturbation_curve(lrp, X_val, S, **kw),
    "random": perturbation_curve(lrp, X_val, R, order="random", **kw),
    "LRP (LeRF)": perturbation_curve(lrp, X_val, R, order="lerf", **kw),
}
fig, ax = plt.subplots(figsize=(6, 4))
plot_perturbation_curves(curves, ax=ax, title="digits, PCA + logistic regression")
if OUT:
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "aopc_rules.png"), dpi=90, bbox_inches="tight")
