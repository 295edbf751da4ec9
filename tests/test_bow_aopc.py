"""AOPC with descriptor replacement (Appendix C.2): epsilon-LRP beats a random order (Fig. 4.3 in miniature)."""

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

import sklrp
from sklrp.bow import (
    BoWEncoder,
    DenseSIFT,
    DescriptorReplacement,
    FisherVectorEncoder,
    PowerNormalizer,
)
from sklrp.datasets import make_shapes
from sklrp.evaluation import aopc_score, perturbation_curve


@pytest.fixture(scope="module")
def fv_model():
    X, y, _ = make_shapes(120, image_size=64, radius=(7, 12), border_polygons=0.0, random_state=0)
    sift = DenseSIFT(scales=(1.5,), steps=(4,), backend="numpy").fit(X)
    D = sift.transform(X)
    model = make_pipeline(FisherVectorEncoder(8, pca_components=32, random_state=0), PowerNormalizer(),
                          LinearSVC(C=1.0)).fit(D, y)
    return D, y, model


def test_lrp_order_beats_random_order_on_fv(fv_model):
    D, y, model = fv_model
    Dt = D[:20]
    E = sklrp.LRPTransformer(FrozenEstimator(model), rule="epsilon", epsilon=1e-2).fit(D, y).explain(Dt)
    r_lrp = E.relevance[..., 5:].sum(-1)
    r_rand = np.random.RandomState(0).rand(*r_lrp.shape)
    kw = dict(perturbation=DescriptorReplacement(model[0], n_per_step=10), n_steps=8, n_repeats=2,
              random_state=0)
    a_lrp = aopc_score(model, Dt, r_lrp, **kw)
    a_rand = aopc_score(model, Dt, r_rand, **kw)
    print("AOPC lrp", a_lrp, "random", a_rand)
    assert a_lrp > a_rand
    assert a_lrp > 0
    # relative to the engine's random order of the same groups: still positive
    curves = perturbation_curve(model, Dt, r_lrp, order="morf", **kw)
    assert curves.shape == (20, 9)
    assert (curves[:, 0] - curves[:, -1]).mean() > 0


def test_replacement_replaces_exactly_the_chosen_descriptors(fv_model):
    D, _, model = fv_model
    g = DescriptorReplacement(model[0], n_per_step=7)
    from sklrp.evaluation import RegionGrid

    g.bind(D[:2].reshape(2, -1), RegionGrid(D.shape[1:]), (0.0, 1.0))
    rel = np.arange(D.shape[1], dtype=float)[None].repeat(2, 0)
    scores = g.region_scores(rel)
    assert scores.shape == (2, -(-D.shape[1] // 7))
    assert np.all(np.diff(scores, axis=1) < 0)
    descriptors, groups = g.start(np.array([0, 1]), np.random.RandomState(0))
    new = g.model_input(g.step((descriptors.copy(), groups), np.array([0, 1]), np.array([0, 0]),
                               np.random.RandomState(0)))
    changed = np.any(new != D[:2], axis=2)
    top = np.argsort(-rel[0])[:7]
    assert set(np.nonzero(changed[0])[0]) == set(top)
    np.testing.assert_array_equal(new[..., :5], D[:2, :, :5])  # geometry kept


def test_random_order_is_a_random_descriptor_order(fv_model):
    # the baseline of Fig. 4.3 replaces descriptors in a random order, not shuffled relevance-sorted groups
    D, _, model = fv_model
    g = DescriptorReplacement(model[0], n_per_step=7)
    from sklrp.evaluation import RegionGrid

    g.bind(D[:1].reshape(1, -1), RegionGrid(D.shape[1:]), (0.0, 1.0))
    rel = np.arange(D.shape[1], dtype=float)[None]
    g.region_scores(rel)
    sorted_groups = {frozenset(grp[grp >= 0].tolist()) for grp in g.groups_[0]}
    g.set_order("random")
    rng = np.random.RandomState(0)
    firsts = []
    for _ in range(20):
        _, groups = g.start(np.array([0]), rng)
        members = groups[0][groups[0] >= 0]
        assert sorted(members.tolist()) == list(range(D.shape[1]))  # every descriptor once
        firsts.append(frozenset(groups[0, 0][groups[0, 0] >= 0].tolist()))
    assert not set(firsts) & sorted_groups and len(set(firsts)) == 20
    g.set_order("morf")
    _, groups = g.start(np.array([0]), rng)
    np.testing.assert_array_equal(groups, g.groups_[:1])


def test_replacement_with_bow_codebook_and_bad_input(fv_model):
    D, y, _ = fv_model
    bow = make_pipeline(BoWEncoder(16, random_state=0), LinearSVC()).fit(D, y)
    a = aopc_score(bow, D[:5], np.random.RandomState(1).rand(5, D.shape[1]),
                   perturbation=DescriptorReplacement(bow[0], n_per_step=20), n_steps=3, random_state=0)
    assert np.isfinite(a)
    with pytest.raises(TypeError, match="FisherVectorEncoder or BoWEncoder"):
        aopc_score(bow, D[:2], np.zeros((2, D.shape[1])), perturbation=DescriptorReplacement(LinearSVC()))
    with pytest.raises(ValueError, match="n_descriptors"):
        aopc_score(bow, D[:2], np.zeros((2, 3)), perturbation=DescriptorReplacement(bow[0]))
