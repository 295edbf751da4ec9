"""Entry point x bad input -> the error a user sees: its type and a fragment naming the problem and the fix.

No internal exception (a torch RuntimeError, an AttributeError, a numpy reduction error) may reach a
user from a public entry point: every case below names the argument, what was expected and what was
given.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import sklrp
from sklrp.bow import DenseSIFT
from sklrp.nn import Composite, lrp
from sklrp.rules import Epsilon

RNG = np.random.RandomState(0)
X = RNG.randn(40, 4)
Y = (X[:, 0] > 0).astype(int)
MODEL = LogisticRegression().fit(X, Y)


class _NoLRP(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        raise AssertionError("never fitted: refused before")


def _lrp(**kw):
    return sklrp.LRPTransformer(LogisticRegression(), device="cpu", **kw).fit(X, Y)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).double()


CASES = {
    # LRPTransformer: parameters, data, targets
    "bias name": (lambda: _lrp(bias="spread"), ValueError, "'bias' parameter of LRPTransformer"),
    "batch size 0": (lambda: _lrp(batch_size=0), ValueError, "'batch_size' parameter"),
    "root tol <= 0": (lambda: _lrp(root_tol=0.0), ValueError, "'root_tol' parameter"),
    "unknown rule": (lambda: _lrp(rule="lrp"), ValueError, "unknown rule 'lrp'"),
    "alpha beta convention": (lambda: _lrp(rule="alphabeta", alpha=2, beta=1), ValueError,
                              "zennit's alpha=2, beta=1 is AlphaBeta"),
    "estimator without fit": (lambda: sklrp.LRPTransformer(object()).fit(X, Y), ValueError,
                              "'estimator' parameter"),
    "transformer as model": (lambda: sklrp.LRPTransformer(FrozenEstimator(StandardScaler().fit(X))).fit(X),
                             TypeError, "the last step of the explained model must be a predictor"),
    "unsupported model": (lambda: sklrp.LRPTransformer(make_pipeline(StandardScaler(), _NoLRP())).fit(X, Y),
                          TypeError, r"cannot explain a _NoLRP step: .* Supported: "),
    "unfitted frozen": (lambda: sklrp.LRPTransformer(FrozenEstimator(LogisticRegression())).fit(X, Y),
                        NotFittedError, "LogisticRegression instance is not fitted"),
    "frozen, other width": (lambda: sklrp.LRPTransformer(FrozenEstimator(MODEL)).fit(np.hstack([X, X])),
                            ValueError, "X has 8 features, but the explained FrozenEstimator was fitted on 4"),
    "explain before fit": (lambda: sklrp.LRPTransformer(LogisticRegression()).explain(X), NotFittedError,
                           "not fitted yet"),
    "explain NaN": (lambda: _lrp().explain(X * np.nan), ValueError, "Input X contains NaN"),
    "explain other width": (lambda: _lrp().explain(X[:, :3]), ValueError, "X has 3 features"),
    "explain sparse": (lambda: _lrp().explain(sp.csr_matrix(X)), TypeError, r"Use '.toarray\(\)'"),
    "explain 1-D": (lambda: _lrp().explain(X[0]), ValueError, "Expected 2D array"),
    "explain strings": (lambda: _lrp().explain(np.full((2, 4), "a")), ValueError, "could not convert string"),
    "output overflows": (lambda: sklrp.LRPTransformer(LinearRegression(), device="cpu").fit(X, 10 * X[:, 0])
                         .explain(np.full((1, 4), 1e308)), ValueError, r"output is not finite .* overflowed"),
    "target string": (lambda: _lrp().explain(X, target="cat"), ValueError,
                      r"unknown target label 'cat'; the model's classes are \[0, 1\]"),
    "target misspelt": (lambda: _lrp().explain(X, target="Predicted"), ValueError, "unknown target label"),
    "target true without y": (lambda: _lrp(target="true").explain(X), ValueError, "target='true' needs y"),
    "target array length": (lambda: _lrp().explain(X, target=np.zeros(3)), ValueError,
                            r"target array must have shape \(n_samples,\) = \(40,\)"),
    "target NaN": (lambda: _lrp().explain(X, target=float("nan")), ValueError, "target must be 'predicted'"),
    "y length": (lambda: _lrp().explain(X, y=Y[:3]), ValueError, "y has 3 samples but X has 40"),
    # evaluation
    "aopc relevance width": (lambda: sklrp.aopc_score(MODEL, X, X[:, :3]), ValueError,
                             "relevance has 3 values per sample"),
    "aopc relevance rows": (lambda: sklrp.aopc_score(MODEL, X, X[:3]), ValueError, "relevance has 3 samples"),
    "aopc zero features": (lambda: sklrp.aopc_score(MODEL, np.zeros((3, 0)), np.zeros((3, 0))), ValueError,
                           "X has no features"),
    "aopc region 2.5": (lambda: sklrp.aopc_score(MODEL, X, X, region_size=2.5), ValueError,
                        "region_size must be a positive integer"),
    "aopc region on tabular": (lambda: sklrp.aopc_score(MODEL, X, X, region_size=2), ValueError,
                               "region_size=2 needs image input"),
    "aopc too many steps": (lambda: sklrp.aopc_score(MODEL, X, X, n_steps=9), ValueError,
                            "n_steps=9 exceeds the number of regions"),
    "aopc value range": (lambda: sklrp.aopc_score(MODEL, X, X, perturbation="uniform", value_range=(1, 0)),
                         ValueError, "value_range must be a finite pair"),
    "aopc unfitted model": (lambda: sklrp.aopc_score(LogisticRegression(), X, X), NotFittedError, "not fitted"),
    "aopc NaN relevance": (lambda: sklrp.aopc_score(MODEL, X, X * np.nan), ValueError,
                           "relevance contains NaN or infinity"),
    "aopc no score function": (lambda: sklrp.aopc_score(StandardScaler().fit(X), X, X), TypeError,
                               "has no score function"),
    "sensitivity sparse ok, norm": (lambda: sklrp.sensitivity_heatmap(MODEL, sp.csr_matrix(X), norm=3), ValueError,
                                    "norm must be 1, 2 or numpy.inf"),
    "deconvolution on sklearn": (lambda: sklrp.deconvolution_heatmap(MODEL, X), ValueError,
                                 "needs a torch network"),
    "context ratio shapes": (lambda: sklrp.context_ratio(np.ones((2, 4, 4)), np.ones((3, 3), bool)), ValueError,
                             r"mask must have shape \(H, W\)"),
    "context ratio both": (lambda: sklrp.context_ratio(np.ones((2, 4, 4))), ValueError,
                           "give exactly one of mask and boxes"),
    # explanations
    "to_frame of images": (lambda: sklrp.Explanation(np.zeros((1, 2, 2)), *[np.zeros(1)] * 4).to_frame(),
                           ValueError, "reshape it first"),
    # torch functional interface
    "lrp numpy input": (lambda: lrp(_net(), X, Composite(Epsilon())), TypeError, "x must be a torch.Tensor"),
    "lrp rule as composite": (lambda: lrp(_net(), torch.as_tensor(X), Epsilon()), TypeError,
                              r"wrap the rule: Composite\(Epsilon"),
    "lrp negative target": (lambda: lrp(_net(), torch.as_tensor(X), Composite(Epsilon()), target=-1), ValueError,
                            r"target index must lie in \[0, 2\)"),
    "lrp wrong width": (lambda: lrp(_net(), torch.ones(2, 5, dtype=torch.float64), Composite(Epsilon())),
                        ValueError, r"network failed on x of shape \(2, 5\)"),
    # images and plots
    "sift empty images": (lambda: DenseSIFT(backend="numpy").fit(np.zeros((2, 0, 32))), ValueError,
                          r"images of shape \(0, 32\) have no pixels"),
    "sift NaN": (lambda: DenseSIFT(backend="numpy").fit(np.full((1, 32, 32), np.nan)), ValueError,
                 "contain NaN or infinity"),
    "heatmap empty": (lambda: sklrp.plotting.heatmap(np.zeros((4, 0))), ValueError, "relevance is empty"),
    "heatmap NaN": (lambda: sklrp.plotting.heatmap(np.full((4, 4), np.nan)), ValueError,
                    "contains NaN or infinite values"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case):
    call, error, fragment = CASES[case]
    with pytest.raises(error, match=fragment):
        call()


def test_extreme_but_finite_inputs_are_handled():
    # positive rescaling leaves SIFT descriptors unchanged: huge intensities no longer overflow to zero
    imgs = RNG.rand(2, 32, 32)
    sift = DenseSIFT(backend="numpy").fit(imgs)
    np.testing.assert_allclose(sift.transform(imgs * 1e160), sift.transform(imgs), atol=1e-12)
    # sparse heatmaps are drawn like dense ones
    ax = sklrp.plotting.heatmap(sp.csr_matrix(np.eye(4)))
    np.testing.assert_array_equal(ax.images[0].get_array().shape[:2], (4, 4))
