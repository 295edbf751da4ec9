"""Text BoW pipelines explained per token occurrence (Eq. (2.78) with one-hot word mappings)."""

import numpy as np
import pytest
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import (
    CountVectorizer,
    HashingVectorizer,
    TfidfTransformer,
    TfidfVectorizer,
)
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer
from sklearn.svm import SVC, LinearSVC

import sklrp
from sklrp.bow import explain_text, tokenize_with_positions
from sklrp.kernels import intersection_kernel
from sklrp.linear import elementwise


@elementwise
def densify(X):
    # sklrp.kernels.intersection_kernel does not take sparse matrices; densifying is element-wise identity
    return X.toarray() if hasattr(X, "toarray") else X


def _dense():
    return FunctionTransformer(densify, accept_sparse=True)

FILLER = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
          "lima", "mike", "november", "oscar", "papa"]


def _corpus(n=120, seed=0):
    """Random filler sentences; label 1 iff the document contains the word 'excellent'."""
    rng = np.random.RandomState(seed)
    docs, y = [], []
    for i in range(n):
        words = list(rng.choice(FILLER, size=rng.randint(6, 12)))
        label = i % 2
        if label:
            for _ in range(rng.randint(1, 3)):
                words.insert(rng.randint(len(words) + 1), "excellent")
        docs.append(" ".join(words))
        y.append(label)
    return docs, np.array(y)


@pytest.mark.parametrize("make", [
    lambda: make_pipeline(CountVectorizer(), LinearSVC()),
    lambda: make_pipeline(TfidfVectorizer(), LinearSVC()),
    lambda: make_pipeline(CountVectorizer(), TfidfTransformer(), Normalizer(), _dense(),
                          SVC(kernel=intersection_kernel)),
    lambda: make_pipeline(TfidfVectorizer(), _dense(), SVC(kernel=intersection_kernel)),
], ids=["count-linear", "tfidf-linear", "count-tfidf-norm-hik", "tfidf-hik"])
def test_deciding_word_gets_the_largest_relevance(make):
    docs, y = _corpus()
    pipe = make().fit(docs, y)
    test_docs, yt = _corpus(20, seed=1)
    E = explain_text(FrozenEstimator(pipe), test_docs, rule="z", dtype="float64")
    for doc_tokens, label in zip(E.tokens, yt):
        if label == 1:
            best = max(doc_tokens, key=lambda t: t[2])
            assert best[0] == "excellent"
            occ = [r for tok, _, r in doc_tokens if tok == "excellent"]
            assert len(set(np.round(occ, 12))) == 1  # equal shares R_d / count_d
    # conservation: token relevance sums to the term relevance, and + bias = output (z-rule, exact kernels)
    for i, doc_tokens in enumerate(E.tokens):
        np.testing.assert_allclose(sum(r for _, _, r in doc_tokens), E.term_relevance[i].sum(), atol=1e-10)
    np.testing.assert_allclose(E.term_relevance.sum(1) + E.bias_relevance, E.output, atol=1e-10)


def test_ngrams_spread_over_their_tokens():
    docs, y = _corpus(60)
    pipe = make_pipeline(CountVectorizer(ngram_range=(1, 2)), LinearSVC()).fit(docs, y)
    E = explain_text(pipe, ["alpha excellent bravo"], rule="z", dtype="float64")
    vec = pipe[0]
    R = E.term_relevance[0]
    voc = vec.vocabulary_
    expected = np.zeros(3)
    for term, pos in [("alpha", [0]), ("excellent", [1]), ("bravo", [2]), ("alpha excellent", [0, 1]),
                      ("excellent bravo", [1, 2])]:
        if term in voc:
            expected[pos] += R[voc[term]] / len(pos)
    np.testing.assert_allclose([r for _, _, r in E.tokens[0]], expected, atol=1e-12)
    tokens, occ = tokenize_with_positions(vec, "Alpha excellent")
    assert tokens == ["alpha", "excellent"] and ("alpha excellent", [0, 1]) in occ


def test_text_bad_input():
    docs, y = _corpus(20)
    pipe = make_pipeline(CountVectorizer(analyzer="char"), LinearSVC()).fit(docs, y)
    with pytest.raises(ValueError, match="analyzer='word'"):
        explain_text(pipe, docs[:2])
    with pytest.raises(TypeError, match="CountVectorizer, TfidfVectorizer or HashingVectorizer"):
        explain_text(make_pipeline(Normalizer(), LinearSVC()).fit(np.eye(4), [0, 1, 0, 1]), ["x"])
    good = make_pipeline(CountVectorizer(), LinearSVC()).fit(docs, y)
    with pytest.raises(ValueError, match="iterable of strings"):
        explain_text(good, "a single string")


def test_tfidf_transformer_propagator_is_exact_passthrough():
    import torch

    from sklrp.propagators import RuleConfig, propagator_for
    from sklrp.rules import Z

    docs, _ = _corpus(30)
    counts = CountVectorizer().fit_transform(docs).toarray().astype(float)
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
    prop = propagator_for(tfidf)
    cfg = RuleConfig(Z())
    x = cfg.tensor(counts[:4])
    np.testing.assert_allclose(prop.forward(x, cfg).numpy(), tfidf.transform(counts[:4]).toarray(), atol=1e-12)
    R = torch.randn(4, counts.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = prop.backward(x, R, cfg)
    assert torch.equal(out.input, R) and float(out.bias.abs().sum()) == 0.0


# -- LRPTransformer on raw documents ------------------------------------------------------------
def _row_sums(R):
    return np.asarray(R.sum(axis=1)).ravel()


@pytest.mark.parametrize("make", [
    lambda: make_pipeline(TfidfVectorizer(), LinearSVC()),
    lambda: make_pipeline(CountVectorizer(ngram_range=(1, 2), binary=True), LinearSVC()),
    lambda: make_pipeline(HashingVectorizer(n_features=2**12), LinearSVC()),
    lambda: make_pipeline(TfidfVectorizer(), _dense(), SVC(kernel=intersection_kernel)),
], ids=["tfidf-linear", "binary-bigram-linear", "hashing-linear", "tfidf-hik"])
def test_lrp_transformer_explains_raw_documents(make):
    from scipy import sparse

    docs, y = _corpus()
    test_docs, yt = _corpus(20, seed=1)
    # clones and fits the pipeline on raw text
    lrp = sklrp.LRPTransformer(make(), rule="z", dtype="float64").fit(docs, y)
    E = lrp.explain(test_docs)
    n_cols = lrp.estimator_[0].n_features if isinstance(lrp.estimator_[0], HashingVectorizer) else \
        len(lrp.estimator_[0].vocabulary_)
    assert sparse.issparse(E.relevance) and E.relevance.shape == (20, n_cols)
    # transform returns the same sparse relevance; conservation as for numeric input (z-rule, exact model)
    R = lrp.transform(test_docs)
    np.testing.assert_allclose(R.toarray(), E.relevance.toarray())
    np.testing.assert_allclose(_row_sums(E.relevance) + E.bias_relevance, E.output, atol=1e-10)
    np.testing.assert_allclose(E.residual, 0, atol=1e-10)
    np.testing.assert_allclose(np.abs(lrp.estimator_.decision_function(test_docs)), E.output, atol=1e-10)
    # per token occurrence: shares sum to the document's relevance; the deciding word wins
    tokens = E.extras["tokens"]
    assert len(tokens) == 20
    for doc_tokens, row, label in zip(tokens, _row_sums(E.relevance), yt):
        np.testing.assert_allclose(sum(r for _, _, r in doc_tokens), row, atol=1e-10)
        if label == 1:
            assert max(doc_tokens, key=lambda t: t[2])[0] == "excellent"
    assert lrp.classes_.tolist() == [0, 1]


def test_lrp_transformer_text_matches_explain_text_and_batches():
    docs, y = _corpus()
    test_docs, yt = _corpus(9, seed=2)
    pipe = make_pipeline(TfidfVectorizer(), LinearSVC()).fit(docs, y)
    ref = explain_text(pipe, test_docs, rule="epsilon", epsilon=0.1, dtype="float64", target="true", y=yt)
    lrp = sklrp.LRPTransformer(FrozenEstimator(pipe), rule="epsilon", epsilon=0.1, dtype="float64", target="true",
                               batch_size=4)
    E = lrp.fit(docs, y).explain(test_docs, y=yt)  # three batches of documents
    np.testing.assert_allclose(E.relevance.toarray(), ref.term_relevance, atol=1e-12)
    np.testing.assert_allclose(E.output, ref.output, atol=1e-12)
    assert E.extras["tokens"] == ref.tokens
    np.testing.assert_array_equal(E.target, yt)
    # fit_transform with target="true" uses y; an array target picks the class per document
    R = sklrp.LRPTransformer(FrozenEstimator(pipe), rule="z", dtype="float64",
                             target="true").fit_transform(test_docs, yt)
    assert R.shape == (9, len(pipe[0].vocabulary_))
    Et = lrp.explain(test_docs, target=np.ones(9, dtype=int))
    np.testing.assert_array_equal(Et.target, 1)
    np.testing.assert_allclose(Et.output, pipe.decision_function(test_docs), atol=1e-12)


def test_hashing_shares_follow_signed_counts():
    # tiny hash space: collisions and alternate signs; each occurrence of column d gets
    # sign_l / sum(signs) * R_d (even split where the signs cancel)
    docs, y = _corpus()
    vec = HashingVectorizer(n_features=8, norm=None)
    lrp = sklrp.LRPTransformer(make_pipeline(vec, LinearSVC()), rule="z", dtype="float64").fit(docs, y)
    test_docs = _corpus(5, seed=3)[0]
    E = lrp.explain(test_docs)
    hasher = FeatureHasher(8, input_type="string")
    for doc, doc_tokens, row in zip(test_docs, E.extras["tokens"], E.relevance.toarray()):
        words = doc.split()
        h = hasher.transform([[w] for w in words]).tocsr()
        cols, signs = h.indices, h.data
        expected = []
        for c, s in zip(cols, signs):
            same = cols == c
            z = signs[same].sum()
            expected.append(row[c] * (s / z if z != 0 else 1 / same.sum()))
        np.testing.assert_allclose([r for _, _, r in doc_tokens], expected, atol=1e-12)
        np.testing.assert_allclose(sum(expected), row.sum(), atol=1e-10)


def test_lrp_transformer_text_conventions():
    import pickle

    from sklearn.base import clone

    docs, y = _corpus(40)
    lrp = sklrp.LRPTransformer(make_pipeline(CountVectorizer(), LinearSVC()), rule="z", dtype="float64")
    assert clone(lrp).get_params()["rule"] == "z"
    with pytest.raises(ValueError, match="iterable of strings"):
        lrp.fit("one string", y)
    lrp.fit(docs, y)
    again = pickle.loads(pickle.dumps(lrp))
    np.testing.assert_allclose(again.transform(docs[:3]).toarray(), lrp.transform(docs[:3]).toarray())
    with pytest.raises(ValueError, match="iterable of strings"):
        lrp.transform("one string")
    # refitting on numeric data leaves the text path
    lrp.set_params(estimator=LinearSVC()).fit(np.eye(4), [0, 1, 0, 1])
    assert lrp.transform(np.eye(4)).shape == (4, 4)


def test_lrp_transformer_text_taylor_kernel():
    # RBF SVM: Taylor decomposition at a root point searched among the training documents' counts
    docs, y = _corpus()
    test_docs = _corpus(6, seed=1)[0]
    lrp = sklrp.LRPTransformer(make_pipeline(TfidfVectorizer(), _dense(), SVC(kernel="rbf", gamma=1.0)), rule="z",
                               dtype="float64")
    E = lrp.fit(docs, y).explain(test_docs)
    np.testing.assert_allclose(_row_sums(E.relevance) + E.bias_relevance + E.residual, E.output, atol=1e-10)
    assert E.root_point.shape == (6, len(lrp.estimator_[0].vocabulary_)) and "root_found" in E.extras
    assert len(E.extras["tokens"]) == 6
