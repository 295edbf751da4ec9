"""
========================================================
A CNN in skorch: rule composites and decomposition depth
========================================================

For deep networks the choice of rule per layer matters (Section 5.4): the
epsilon rule everywhere gives noisy maps, alpha-beta (alpha=2, beta=-1) on
convolutions and epsilon on dense layers gives crisper ones, and applying the
flat rule to the lowest layers (the *decomposition depth*, Fig. 5.2) trades
input-level detail for robustness: the relevance of a higher layer is spread
uniformly over its receptive field (Eq. (2.27)).

Set ``SKLRP_EXAMPLES_OUT=<dir>`` to save the figure and ``SKLRP_EXAMPLES_SMALL=1``
for a quick run.
"""

# %%
# Train a small CNN on digits with skorch
# ---------------------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from skorch import NeuralNetClassifier
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from torch import nn

import sklrp
from sklrp.plotting import heatmap

SMALL = os.environ.get("SKLRP_EXAMPLES_SMALL") == "1"
OUT = os.environ.get("SKLRP_EXAMPLES_OUT")

torch.manual_seed(0)
X, y = load_digits(return_X_y=True)
X = (X / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
if SMALL:
    X, y = X[:500], y[:500]
module = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
)
net = NeuralNetClassifier(module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=2e-3,
                          max_epochs=5 if SMALL else 12, batch_size=64, train_split=None, verbose=0)
net.fit(X[100:], y[100:].astype(np.int64))
print(f"held-out accuracy: {(net.predict(X[:100]) == y[:100]).mean():.2f}")

# %%
# Explain the same digits with four composites
# --------------------------------------------
# ``conv_rule`` applies to convolutions, ``rule`` to dense layers, and
# ``flat_depth=k`` replaces the rule of the lowest ``k`` layers by the flat rule.
composites = {
    "epsilon": dict(rule="epsilon", epsilon=0.01),
    "a2b1 conv + eps": dict(rule="epsilon", epsilon=0.01, conv_rule="alphabeta", alpha=2.0, beta=-1.0),
    "... + flat depth 1": dict(rule="epsilon", epsilon=0.01, conv_rule="alphabeta", flat_depth=1),
    "... + flat depth 2": dict(rule="epsilon", epsilon=0.01, conv_rule="alphabeta", flat_depth=2),
}
samples = X[:6]
fig, axes = plt.subplots(len(samples), 1 + len(composites), figsize=(2 * (1 + len(composites)), 2 * len(samples)))
for i, x in enumerate(samples):
    axes[i, 0].imshow(x[0], cmap="gray_r")
    axes[i, 0].set(xticks=[], yticks=[], title="input" if i == 0 else None)
for j, (name, params) in enumerate(composites.items(), start=1):
    lrp = sklrp.LRPTransformer(FrozenEstimator(net), **params).fit(X[:10])
    E = lrp.explain(samples)
    kept = (E.relevance.reshape(len(samples), -1).sum(1) + E.bias_relevance) / E.output
    print(f"{name:>20}: share of f(x) conserved {np.round(kept, 2)}")
    for i in range(len(samples)):
        heatmap(E.relevance[i, 0], ax=axes[i, j], title=name if i == 0 else None)
fig.tight_layout()
if OUT:
    os.makedirs(OUT, exist_ok=True)
    fig.savefig(os.path.join(OUT, "cnn_composites.png"), dpi=80)
