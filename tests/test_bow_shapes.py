"""Fig. 2.13 in miniature: HIK and chi2 SVMs on dense SIFT + soft-rank BoW explained to pixels."""

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

import sklrp
from sklrp.bow import BoWEncoder, DenseSIFT
from sklrp.datasets import make_shapes
from sklrp.kernels import Chi2Kernel, intersection_kernel

SIZE, RADIUS = 96, (12, 20)


@pytest.fixture(scope="module")
def shapes():
    # seeds fixed: the chi2 ordering below held on 3 of 4 seeds tried (one tie), HIK on all 4
    train = make_shapes(200, image_size=SIZE, radius=RADIUS, border_polygons=0.0, random_state=3)
    test = make_shapes(60, image_size=SIZE, radius=RADIUS, border_polygons=0.0, random_state=103)
    return train, test


def _pipeline(kernel):
    return make_pipeline(DenseSIFT(scales=(2.0,), steps=(5,), backend="numpy"),
                         BoWEncoder(n_words=64, mapping="soft_rank", random_state=0), SVC(kernel=kernel, C=10))


@pytest.mark.parametrize("kernel", [intersection_kernel, Chi2Kernel(gamma=5.0)], ids=["hik", "chi2"])
def test_polygons_get_more_relevance_than_round_shapes(shapes, kernel):
    (X, y, _), (Xt, yt, mt) = shapes
    pipe = _pipeline(kernel).fit(X, y)
    assert pipe.score(Xt, yt) > 0.65
    lrp = sklrp.LRPTransformer(FrozenEstimator(pipe), rule="z", target=1, n_root_candidates=20).fit(X, y)
    pos = yt == 1
    E = lrp.explain(Xt[pos])
    R, masks = E.relevance, mt[pos]
    poly, rnd = R[masks == 1].mean(), R[masks == 2].mean()
    assert poly > 0
    assert poly > rnd
    if kernel is intersection_kernel:  # sum-decomposable: exact (Eq. (2.72))
        np.testing.assert_allclose(R.sum((1, 2)) + E.bias_relevance, E.output, atol=1e-10)


def test_make_shapes_labels_and_masks():
    X, y, masks = make_shapes(30, image_size=64, radius=(8, 12), random_state=0)
    assert X.shape == (30, 64, 64) and X.min() >= 0 and X.max() <= 1
    assert set(np.unique(y)) == {-1, 1}
    # positive images contain a whole polygon; negatives at most a polygon cut by the border
    for xi, yi, mi in zip(X, y, masks):
        if yi == 1:
            assert (mi == 1).any()
    X2, y2, _ = make_shapes(30, image_size=64, radius=(8, 12), random_state=0)
    np.testing.assert_array_equal(X, X2)
    with pytest.raises(ValueError, match="radius"):
        make_shapes(3, image_size=20, radius=(5, 15))
    with pytest.raises(ValueError, match="n_samples"):
        make_shapes(0)
