"""Text BoW pipelines explained per token occurrence (Eq. (2.78) with one-hot word mappings)."""

import numpy as np
import pytest
from sklearn.feature_extraction.text import (
    CountVectorizer,
    TfidfTransformer,
    TfidfVectorizer,
)
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer
from sklearn.svm import SVC, LinearSVC

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
    lambda: make_pipeline(CountVectorizer(), TfidfTransformer(), Normalizer(), _dense(), SVC(kernel=intersection_kernel)),
    lambda: make_pipeline(TfidfVectorizer(), _dense(), SVC(kernel=intersection_kernel)),
], ids=["count-linear", "tfidf-linear", "count-tfidf-norm-hik", "tfidf-hik"])
def test_deciding_word_gets_the_largest_relevance(make):
    docs, y = _corpus()
    pipe = make().fit(docs, y)
    test_docs, yt = _corpus(20, seed=1)
    E = explain_text(FrozenEstimator(pipe), test_docs, rule="z")
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
    E = explain_text(pipe, ["alpha excellent bravo"], rule="z")
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
    with pytest.raises(TypeError, match="CountVectorizer or TfidfVectorizer"):
        explain_text(make_pipeline(Normalizer(), LinearSVC()).fit(np.eye(4), [0, 1, 0, 1]), ["x"])
    good = make_pipeline(CountVectorizer(), LinearSVC()).fit(docs, y)
    with pytest.raises(ValueError, match="iterable of strings"):
        explain_text(good, "a single string")


def test_tfidf_transformer_propagator_is_exact_passthrough():
    import torch

    from sklrp._propagate import RuleConfig, propagator_for
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
