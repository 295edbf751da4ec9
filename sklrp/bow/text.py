"""Bag-of-Words text pipelines explained per token occurrence (Section 2.4.2 with one-hot word mappings).

A word-count vectoriser is a Bag-of-Words mapping whose local features are token
occurrences and whose mapping is one-hot: ``m_d(l) = 1`` if occurrence ``l`` is the
term ``d``. Eq. (2.78) then gives every occurrence of term ``d`` the share
``R_d / count_d`` of the term's relevance; an n-gram occurrence spreads its share evenly
over its ``n`` tokens (the flat rule, as for pixels in Eq. (2.85)).

Text is not numeric, so the vectoriser is handled here rather than as a step of
:class:`sklrp.LRPTransformer`: :func:`explain_text` explains the rest of the pipeline
(``TfidfTransformer``, ``Normalizer``, a linear or kernel SVM, ...) on the count
vectors with ``LRPTransformer`` and maps term relevance to token occurrences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import (
    CountVectorizer,
    TfidfTransformer,
    TfidfVectorizer,
)
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from .._propagate import Propagator, register
from ..rules import LayerRelevance

__all__ = ["explain_text", "TextExplanation", "TfidfTransformerPropagator", "tokenize_with_positions"]


@register(TfidfTransformer)
class TfidfTransformerPropagator(Propagator):
    """``TfidfTransformer``: ``z_d = tf(x_d) idf_d / ||.||`` is component-wise per term.

    Each output depends on its own term only and is zero exactly when the count is
    zero, so relevance passes unchanged (the normalisation is part of the kernel's
    feature map, as in Eqs. (4.6), (4.8)); exactly conservative.
    """

    def forward(self, x, config):
        out = self.step.transform(x.detach().cpu().numpy())
        return config.tensor(out.toarray() if hasattr(out, "toarray") else out)

    def backward(self, x, relevance, config):
        return LayerRelevance(relevance, x.new_zeros(x.shape[0]))


@dataclass
class TextExplanation:
    """Relevance of the tokens of each document.

    Attributes
    ----------
    tokens : list of list of (str, int, float)
        Per document the ``(token, position, relevance)`` of every token (position =
        index in the vectoriser's token sequence; stop words and out-of-vocabulary
        tokens get 0).
    term_relevance : ndarray of shape (n_documents, n_terms)
        Relevance ``R_d`` of each vocabulary term (columns follow
        ``vectorizer.get_feature_names_out()``).
    bias_relevance, output, target, residual : ndarray of shape (n_documents,)
        As in :class:`sklrp.Explanation`.
    """

    tokens: list
    term_relevance: np.ndarray
    bias_relevance: np.ndarray
    output: np.ndarray
    target: np.ndarray
    residual: np.ndarray


def tokenize_with_positions(vectorizer, doc):
    """Token sequence of ``doc`` and the n-gram occurrences a fitted word vectoriser counts.

    Returns
    -------
    tokens : list of str
        Tokens after preprocessing and tokenisation (stop words included, so positions
        refer to the document's own token sequence).
    occurrences : list of (str, list of int)
        Each counted n-gram with the positions of its tokens.
    """
    if vectorizer.analyzer != "word" or callable(vectorizer.analyzer):
        raise ValueError(f"explain_text supports analyzer='word' only, got analyzer={vectorizer.analyzer!r}")
    doc = vectorizer.decode(doc)
    tokens = vectorizer.build_tokenizer()(vectorizer.build_preprocessor()(doc))
    stop = vectorizer.get_stop_words() or frozenset()
    kept = [i for i, t in enumerate(tokens) if t not in stop]
    lo, hi = vectorizer.ngram_range
    occ = []
    for n in range(lo, hi + 1):
        for s in range(len(kept) - n + 1):
            pos = kept[s:s + n]
            occ.append((" ".join(tokens[p] for p in pos), pos))
    return tokens, occ


def _split(pipeline):
    est = pipeline.estimator if isinstance(pipeline, FrozenEstimator) else pipeline
    if not isinstance(est, Pipeline) or len(est.steps) < 2:
        raise TypeError("explain_text needs a fitted Pipeline whose first step is a CountVectorizer or "
                        f"TfidfVectorizer, got {type(est).__name__}")
    vec = est.steps[0][1]
    if not isinstance(vec, (CountVectorizer, TfidfVectorizer)):
        raise TypeError(f"the first pipeline step must be a CountVectorizer or TfidfVectorizer, got {type(vec).__name__}")
    check_is_fitted(vec, "vocabulary_")
    tail = [s for _, s in est.steps[1:]]
    if isinstance(vec, TfidfVectorizer):  # TfidfVectorizer = CountVectorizer + TfidfTransformer
        tfidf = TfidfTransformer(norm=vec.norm, use_idf=vec.use_idf, smooth_idf=vec.smooth_idf,
                                 sublinear_tf=vec.sublinear_tf)
        if vec.use_idf:
            tfidf.idf_ = vec.idf_  # public setter: no private attributes
        tfidf.n_features_in_ = len(vec.vocabulary_)
        tail = [tfidf] + tail
    return vec, Pipeline([(f"s{i}", s) for i, s in enumerate(tail)])


def explain_text(pipeline, documents, *, target="predicted", y=None, reference_documents=None, **lrp_params):
    """Explain a fitted text pipeline per token occurrence.

    Parameters
    ----------
    pipeline : Pipeline or FrozenEstimator of one
        Fitted; first step ``CountVectorizer`` or ``TfidfVectorizer`` (``analyzer="word"``),
        then any steps :class:`sklrp.LRPTransformer` can explain (``TfidfTransformer``,
        ``Normalizer``, ``LinearSVC``, ``SVC(kernel=sklrp.kernels.intersection_kernel)``, ...).
    documents : iterable of str
    target : {"predicted", "true"}, label or array-like, default="predicted"
    y : array-like, default=None
        True labels, for ``target="true"``.
    reference_documents : iterable of str, default=None
        Training documents, needed by Taylor decompositions (RBF / chi2 SVMs) to search
        root points; ``None`` uses ``documents``.
    **lrp_params
        Passed to :class:`sklrp.LRPTransformer` (``rule``, ``epsilon``, ``bias``, ...).

    Returns
    -------
    TextExplanation

    Notes
    -----
    Terms absent from a document carry no relevance with linear and sum-decomposable
    kernels (``R_d`` vanishes with ``x_d``). A Taylor decomposition (RBF / chi2 kernels)
    may give them some: it stays in ``term_relevance`` (the model using the *absence* of
    a word, cf. Eq. (2.79)), as no token of the document can carry it.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.feature_extraction.text import CountVectorizer
    >>> from sklearn.svm import LinearSVC
    >>> from sklrp.bow import explain_text
    >>> docs = ["good film", "bad film", "good plot", "bad plot"]
    >>> pipe = make_pipeline(CountVectorizer(), LinearSVC()).fit(docs, [1, 0, 1, 0])
    >>> E = explain_text(pipe, ["a good good film"], rule="z")
    >>> [(tok, pos) for tok, pos, _ in E.tokens[0]]
    [('good', 0), ('good', 1), ('film', 2)]
    """
    from ..explain import LRPTransformer

    if isinstance(documents, str):
        raise ValueError("documents must be an iterable of strings, not a single string")
    documents = list(documents)
    vec, tail = _split(pipeline)
    counts = CountVectorizer.transform(vec, documents)  # raw term counts, also for a TfidfVectorizer
    X = np.asarray(counts.toarray(), dtype=float)
    ref = X if reference_documents is None else np.asarray(
        CountVectorizer.transform(vec, list(reference_documents)).toarray(), dtype=float)
    lrp = LRPTransformer(FrozenEstimator(tail), target=target, **lrp_params).fit(ref)
    E = lrp.explain(X, y=y)
    vocab = vec.vocabulary_
    out = []
    for i, doc in enumerate(documents):
        tokens, occ = tokenize_with_positions(vec, doc)
        rel = np.zeros(len(tokens))
        for term, pos in occ:
            d = vocab.get(term)
            if d is None or X[i, d] == 0:
                continue
            share = E.relevance[i, d] / X[i, d]  # Eq. (2.78), one-hot mapping: R_d / count_d
            rel[pos] += share / len(pos)  # n-gram: flat over its tokens
        out.append([(t, p, float(rel[p])) for p, t in enumerate(tokens)])
    return TextExplanation(out, E.relevance, E.bias_relevance, E.output, E.target, E.residual)
