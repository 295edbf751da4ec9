"""Bag-of-Words text pipelines explained per token occurrence (Section 2.4.2 with one-hot word mappings).

A word-count vectoriser is a Bag-of-Words mapping whose local features are token
occurrences and whose mapping is one-hot: ``m_d(l) = 1`` if occurrence ``l`` is the
term ``d``. Eq. (2.78) then gives every occurrence of term ``d`` the share
``R_d / count_d`` of the term's relevance (with a signed ``HashingVectorizer``:
``sign_l / sum(signs) * R_d``); an n-gram occurrence spreads its share evenly over its
``n`` tokens (the flat rule, as for pixels in Eq. (2.85)).

Documents are not numbers, so the vectoriser is an *input adapter*
(:class:`sklrp.propagators.InputAdapter`), registered like every other step: when a
pipeline starts with ``CountVectorizer``, ``TfidfVectorizer`` or ``HashingVectorizer``,
:class:`TextAdapter` turns a batch of raw documents into the vectoriser's output and
maps the relevance of each output column back to its term and to the term's token
occurrences. Each output column depends on its own term's count only (tf-idf weights
and the row normalisation are part of the kernel's feature map, as in Eqs. (4.6), (4.8)),
so term relevance equals column relevance, exactly conservative. :func:`explain_text` is
the same for an already fitted pipeline, returned per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import (
    CountVectorizer,
    HashingVectorizer,
    TfidfTransformer,
    TfidfVectorizer,
)
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ..propagators import InputAdapter, Propagator, register
from ..rules import LayerRelevance

__all__ = ["TextAdapter", "TextExplanation", "TfidfTransformerPropagator", "explain_text", "tokenize_with_positions"]


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
        raise ValueError(f"text explanations support analyzer='word' only, got analyzer={vectorizer.analyzer!r}")
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


_VECTORIZERS = (CountVectorizer, TfidfVectorizer, HashingVectorizer)
_MAX_DENSE = 2**24  # dense vectoriser entries per batch (128 MiB in float64)


def _unfreeze(estimator):
    return estimator.estimator if isinstance(estimator, FrozenEstimator) else estimator


class _Terms:
    """Column and sign of the terms a fitted word vectoriser counts."""

    def __init__(self, vectorizer):
        if vectorizer.analyzer != "word" or callable(vectorizer.analyzer):
            raise ValueError(f"text explanations support analyzer='word' only, got analyzer={vectorizer.analyzer!r}")
        self.vectorizer = vectorizer
        self.hashing = isinstance(vectorizer, HashingVectorizer)
        if self.hashing:
            self.n_features = vectorizer.n_features
        else:
            check_is_fitted(vectorizer, "vocabulary_")
            self.n_features = len(vectorizer.vocabulary_)

    def columns(self, terms):
        """Column and sign (+1, or -1 for alternately signed hashes) of each term; column -1: unknown."""
        if not self.hashing:
            vocab = self.vectorizer.vocabulary_
            return np.array([vocab.get(t, -1) for t in terms], dtype=int), np.ones(len(terms))
        if not terms:
            return np.zeros(0, dtype=int), np.zeros(0)
        vec = self.vectorizer
        hashed = FeatureHasher(vec.n_features, input_type="string", alternate_sign=vec.alternate_sign)
        rows = hashed.transform([[t] for t in terms]).tocsr()  # one +-1 entry per term, as the vectoriser
        rows.sort_indices()
        return rows.indices.astype(int), np.sign(rows.data)


def _token_relevance(terms, doc, row):
    """Eq. (2.78) with one-hot word mappings: each occurrence of column d gets ``w_l / sum w * R_d``.

    ``w_l`` is the occurrence's contribution to the count (1, or the hash sign); if the
    contributions cancel (signed hash collisions) the occurrences share ``R_d`` evenly. An
    n-gram's share is spread evenly over its tokens (the flat rule).
    """
    tokens, occ = tokenize_with_positions(terms.vectorizer, doc)
    rel = np.zeros(len(tokens))
    if occ:
        cols, signs = terms.columns([term for term, _ in occ])
        keep = cols >= 0
        per_col, n_occ = {}, {}
        for c, w in zip(cols[keep], signs[keep]):
            per_col[c] = per_col.get(c, 0.0) + w
            n_occ[c] = n_occ.get(c, 0) + 1
        for (term, pos), c, w in zip(occ, cols, signs):
            if c < 0:
                continue
            z = per_col[c]
            share = row[c] * (w / z if z != 0 else 1.0 / n_occ[c])
            rel[pos] += share / len(pos)
    return [(t, p, float(rel[p])) for p, t in enumerate(tokens)]


def _check_documents(documents):
    if isinstance(documents, (str, bytes)):
        raise ValueError("documents must be an iterable of strings, not a single string")
    if hasattr(documents, "ndim") and documents.ndim != 1:
        raise ValueError(f"documents must be a 1-D sequence of strings, got an array of shape {documents.shape}")
    documents = list(documents)
    bad = next((d for d in documents if not isinstance(d, (str, bytes))), None)
    if bad is not None:
        raise ValueError(f"documents must be strings; got a {type(bad).__name__} ({bad!r:.40}). A pipeline that "
                         "starts with a text vectoriser explains raw documents.")
    return documents


@register(_VECTORIZERS, name="CountVectorizer, TfidfVectorizer, HashingVectorizer (raw documents)")
class TextAdapter(InputAdapter):
    """Raw documents -> the vectoriser's columns, and column relevance -> terms and tokens (Eq. (2.78)).

    The relevance of the explanation is a sparse ``(n_documents, n_features)`` CSR matrix
    over the vectoriser's columns (vocabulary terms in ``get_feature_names_out()`` order;
    hash buckets for a ``HashingVectorizer``), like the vectoriser's own output, and
    ``extras["tokens"]`` lists per document the ``(token, position, relevance)`` of every
    token occurrence. Batches hold at most ``2**24`` dense vectoriser entries.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.feature_extraction.text import CountVectorizer
    >>> from sklearn.svm import LinearSVC
    >>> import sklrp
    >>> docs = ["good film", "bad film", "good plot", "bad plot"]
    >>> lrp = sklrp.LRPTransformer(make_pipeline(CountVectorizer(), LinearSVC()), rule="z").fit(docs, [1, 0, 1, 0])
    >>> E = lrp.explain(["a good film"])
    >>> E.relevance.shape, [tok for tok, _, _ in E.extras["tokens"][0]]
    ((1, 4), ['good', 'film'])
    """

    sparse_relevance = True

    def __init__(self, step):
        super().__init__(step)
        self.terms = _Terms(step)

    @classmethod
    def check_raw(cls, X):
        return _check_documents(X)

    def rows(self, X, batch):
        return X[batch]

    def n_columns(self):
        return self.terms.n_features

    def feature_names(self):
        return None if self.terms.hashing else np.asarray(self.step.get_feature_names_out(), dtype=object)

    def rows_per_batch(self, batch_size):
        return max(1, min(batch_size, _MAX_DENSE // max(1, self.terms.n_features)))

    def forward(self, x, config):
        out = self.step.transform(x)
        return config.tensor(out.toarray() if sparse.issparse(out) else np.asarray(out))

    def backward(self, x, relevance, config):
        # column d of the output depends on the count of term d alone: its relevance is the term's
        return LayerRelevance(relevance, relevance.new_zeros(relevance.shape[0]))

    def extras(self, x, relevance):
        return {"tokens": [_token_relevance(self.terms, doc, relevance[i]) for i, doc in enumerate(x)]}


def explain_text(pipeline, documents, *, target="predicted", y=None, reference_documents=None, **lrp_params):
    """Explain a fitted text pipeline per token occurrence.

    The same as ``sklrp.LRPTransformer(FrozenEstimator(pipeline), target=target,
    **lrp_params).fit(reference_documents).explain(documents, y=y)``, returned as a
    :class:`TextExplanation` (dense ``term_relevance``).

    Parameters
    ----------
    pipeline : Pipeline or FrozenEstimator of one
        Fitted; first step ``CountVectorizer``, ``TfidfVectorizer`` or ``HashingVectorizer``
        (``analyzer="word"``), then any steps :class:`sklrp.LRPTransformer` can explain
        (``TfidfTransformer``, ``Normalizer``, ``LinearSVC``,
        ``SVC(kernel=sklrp.kernels.intersection_kernel)``, ...).
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

    documents = _check_documents(documents)
    est = _unfreeze(pipeline)
    if not (isinstance(est, Pipeline) and len(est.steps) >= 2 and isinstance(est.steps[0][1], _VECTORIZERS)):
        raise TypeError("explain_text needs a fitted Pipeline whose first step is a CountVectorizer, "
                        f"TfidfVectorizer or HashingVectorizer, got {type(est).__name__}")
    _Terms(est.steps[0][1])  # analyzer errors before anything else
    ref = documents if reference_documents is None else _check_documents(reference_documents)
    lrp = LRPTransformer(FrozenEstimator(_unfreeze(pipeline)), target=target, **lrp_params).fit(ref)
    E = lrp.explain(documents, y=y)
    return TextExplanation(E.extras["tokens"], E.relevance.toarray(), E.bias_relevance, E.output, E.target,
                           E.residual)
