"""Bag-of-Words text pipelines explained per token occurrence (Section 2.4.2 with one-hot word mappings).

A word-count vectoriser is a Bag-of-Words mapping whose local features are token
occurrences and whose mapping is one-hot: ``m_d(l) = 1`` if occurrence ``l`` is the
term ``d``. Eq. (2.78) then gives every occurrence of term ``d`` the share
``R_d / count_d`` of the term's relevance (with a signed ``HashingVectorizer``:
``sign_l / sum(signs) * R_d``); an n-gram occurrence spreads its share evenly over its
``n`` tokens (the flat rule, as for pixels in Eq. (2.85)).

Text is not numeric, so the vectoriser is not a propagator step: when a pipeline starts
with ``CountVectorizer``, ``TfidfVectorizer`` or ``HashingVectorizer``,
:class:`sklrp.LRPTransformer` hands raw documents to :func:`fit_text_explainer` and
:func:`explain_documents`, which explain the rest of the pipeline (``TfidfTransformer``,
``Normalizer``, a linear or kernel SVM, ...) on the raw term counts with an inner
``LRPTransformer`` and map term relevance to token occurrences. :func:`explain_text` is
the same for an already fitted pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.base import clone
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import (
    CountVectorizer,
    HashingVectorizer,
    TfidfTransformer,
    TfidfVectorizer,
)
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer
from sklearn.utils.validation import check_is_fitted

from ..propagators import Propagator, register
from ..rules import LayerRelevance

__all__ = ["TextExplanation", "TfidfTransformerPropagator", "explain_documents", "explain_text",
           "fit_text_explainer", "is_text_pipeline", "tokenize_with_positions"]


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
_MAX_DENSE = 2**24  # dense count entries per batch (128 MiB in float64)


def _unfreeze(estimator):
    return estimator.estimator if isinstance(estimator, FrozenEstimator) else estimator


def is_text_pipeline(estimator):
    """Whether ``estimator`` is a Pipeline (possibly frozen) whose first step is a word vectoriser.

    Such pipelines take raw documents; :class:`sklrp.LRPTransformer` explains them through
    :func:`fit_text_explainer` and :func:`explain_documents`.
    """
    est = _unfreeze(estimator)
    return isinstance(est, Pipeline) and len(est.steps) >= 2 and isinstance(est.steps[0][1], _VECTORIZERS)


class _Vectorizer:
    """The count layer of a fitted vectoriser: raw term counts and the column/sign of each term.

    ``TfidfVectorizer`` is ``CountVectorizer`` + ``TfidfTransformer``; ``HashingVectorizer`` with
    ``norm`` is the same vectoriser with ``norm=None`` + ``Normalizer(norm)``; the returned ``tail``
    holds those extra stages followed by the rest of the pipeline.
    """

    def __init__(self, pipeline):
        est = _unfreeze(pipeline)
        if not isinstance(est, Pipeline) or len(est.steps) < 2:
            raise TypeError("explain_text needs a fitted Pipeline whose first step is a CountVectorizer, "
                            f"TfidfVectorizer or HashingVectorizer, got {type(est).__name__}")
        vec = est.steps[0][1]
        if not isinstance(vec, _VECTORIZERS):
            raise TypeError("the first pipeline step must be a CountVectorizer, TfidfVectorizer or "
                            f"HashingVectorizer, got {type(vec).__name__}")
        if vec.analyzer != "word" or callable(vec.analyzer):
            raise ValueError(f"text explanations support analyzer='word' only, got analyzer={vec.analyzer!r}")
        tail = [s for _, s in est.steps[1:]]
        self.vectorizer = vec
        if isinstance(vec, HashingVectorizer):
            self._counter = clone(vec).set_params(norm=None)  # stateless: transform needs no fit
            if vec.norm is not None:
                tail = [Normalizer(norm=vec.norm).fit(np.zeros((1, vec.n_features)))] + tail
            self.n_features = vec.n_features
        else:
            check_is_fitted(vec, "vocabulary_")
            self._counter = None
            if isinstance(vec, TfidfVectorizer):
                tfidf = TfidfTransformer(norm=vec.norm, use_idf=vec.use_idf, smooth_idf=vec.smooth_idf,
                                         sublinear_tf=vec.sublinear_tf)
                if vec.use_idf:
                    tfidf.idf_ = vec.idf_  # public setter: no private attributes
                tfidf.n_features_in_ = len(vec.vocabulary_)
                tail = [tfidf] + tail
            self.n_features = len(vec.vocabulary_)
        self.tail = Pipeline([(f"s{i}", s) for i, s in enumerate(tail)])

    def counts(self, documents):
        """Sparse raw counts (signed for a ``HashingVectorizer`` with ``alternate_sign``)."""
        if self._counter is not None:
            return self._counter.transform(documents)
        return CountVectorizer.transform(self.vectorizer, documents)  # also for a TfidfVectorizer

    def columns(self, terms):
        """Column and sign (+1, or -1 for alternately signed hashes) of each term; column -1: unknown."""
        if self._counter is None:
            vocab = self.vectorizer.vocabulary_
            return np.array([vocab.get(t, -1) for t in terms], dtype=int), np.ones(len(terms))
        if not terms:
            return np.zeros(0, dtype=int), np.zeros(0)
        vec = self.vectorizer
        hashed = FeatureHasher(vec.n_features, input_type="string", alternate_sign=vec.alternate_sign)
        rows = hashed.transform([[t] for t in terms]).tocsr()  # one +-1 entry per term, as the vectoriser
        rows.sort_indices()
        return rows.indices.astype(int), np.sign(rows.data)


def _token_relevance(vec, doc, row):
    """Eq. (2.78) with one-hot word mappings: each occurrence of column d gets ``w_l / sum w * R_d``.

    ``w_l`` is the occurrence's contribution to the count (1, or the hash sign); if the
    contributions cancel (signed hash collisions) the occurrences share ``R_d`` evenly. An
    n-gram's share is spread evenly over its tokens (the flat rule).
    """
    tokens, occ = tokenize_with_positions(vec.vectorizer, doc)
    rel = np.zeros(len(tokens))
    if occ:
        cols, signs = vec.columns([term for term, _ in occ])
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
    if isinstance(documents, str):
        raise ValueError("documents must be an iterable of strings, not a single string")
    return list(documents)


def fit_text_explainer(lrp, documents, y=None, **fit_params):
    """``LRPTransformer.fit`` for a pipeline that starts with a word vectoriser.

    Fits (unless frozen) the pipeline on the raw ``documents``, then an inner
    ``LRPTransformer`` with ``lrp``'s parameters on the rest of the pipeline, taking the
    documents' raw term counts (also the reference set of Taylor decompositions).
    Sets ``lrp.estimator_``, ``lrp.text_explainer_`` and, for classifiers, ``lrp.classes_``.
    """
    from ..propagators import build_chain
    from ..explain import LRPTransformer

    documents = _check_documents(documents)
    lrp.estimator_ = clone(lrp.estimator).fit(documents, y, **fit_params)
    vec = _Vectorizer(lrp.estimator_)
    params = {k: v for k, v in lrp.get_params(deep=False).items() if k != "estimator"}
    tail = FrozenEstimator(vec.tail)
    # only Taylor decompositions (RBF / chi2 SVMs) need the reference counts: keep the dense
    # (n_documents, n_features) matrix out of memory otherwise (hashing has 2**20 columns)
    needs_reference = hasattr(build_chain(tail)[1], "prepare")
    ref_docs = documents if needs_reference else documents[:1]
    ref = np.asarray(vec.counts(ref_docs).toarray(), dtype=float)
    inner = LRPTransformer(tail, **params).fit(ref, y if needs_reference else None)
    lrp.text_explainer_ = (vec, inner)
    if hasattr(inner, "classes_"):
        lrp.classes_ = inner.classes_
    return lrp


def explain_documents(lrp, documents, target=None, y=None):
    """``LRPTransformer.explain`` for a pipeline fitted by :func:`fit_text_explainer`.

    Returns an :class:`sklrp.Explanation` whose ``relevance`` is a ``scipy.sparse`` CSR
    matrix of shape ``(n_documents, n_features)`` over the vectoriser's columns (vocabulary
    terms in ``get_feature_names_out()`` order; hash buckets for a ``HashingVectorizer``),
    like the vectoriser's own output, and whose ``extras["tokens"]`` lists per document the
    ``(token, position, relevance)`` of every token occurrence. Documents are processed in
    batches of at most ``lrp.batch_size`` documents and ``2**24`` dense count entries.
    """
    from ..explain import Explanation

    vec, inner = lrp.text_explainer_
    documents = _check_documents(documents)
    n = len(documents)
    target = lrp.target if target is None else target
    if y is not None:
        y = np.asarray(y)
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} samples but X has {n}")
    per_sample_target = not isinstance(target, str) and np.ndim(target) == 1
    if per_sample_target and len(target) != n:
        raise ValueError(f"target array must have shape (n_samples,) = ({n},), got {np.shape(target)}")
    blocks, parts, tokens, extras = [], {k: [] for k in ("bias", "output", "target", "residual")}, [], {}
    batch = max(1, min(lrp.batch_size, _MAX_DENSE // vec.n_features))
    for lo in range(0, n, batch):
        sl = slice(lo, min(lo + batch, n))
        X = np.asarray(vec.counts(documents[sl]).toarray(), dtype=float)
        E = inner.explain(X, target=np.asarray(target)[sl] if per_sample_target else target,
                          y=None if y is None else y[sl])
        blocks.append(sparse.csr_matrix(E.relevance))
        for key, value in (("bias", E.bias_relevance), ("output", E.output), ("target", E.target),
                           ("residual", E.residual)):
            parts[key].append(value)
        if E.root_point is not None:
            extras.setdefault("root_point", []).append(E.root_point)
        for key, value in E.extras.items():
            extras.setdefault(key, []).append(value)
        tokens.extend(_token_relevance(vec, doc, E.relevance[i]) for i, doc in enumerate(documents[sl]))
    cat = {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}
    extras = {k: np.concatenate(v) for k, v in extras.items()}
    root_point = extras.pop("root_point", None)
    extras["tokens"] = tokens
    relevance = sparse.vstack(blocks, format="csr") if blocks else sparse.csr_matrix((0, vec.n_features))
    return Explanation(relevance=relevance, bias_relevance=cat["bias"], output=cat["output"], target=cat["target"],
                       residual=cat["residual"], root_point=root_point, extras=extras)


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
    _Vectorizer(pipeline)  # type and analyzer errors before fitting
    ref = documents if reference_documents is None else _check_documents(reference_documents)
    lrp = LRPTransformer(FrozenEstimator(_unfreeze(pipeline)), target=target, **lrp_params).fit(ref)
    E = lrp.explain(documents, y=y)
    return TextExplanation(E.extras["tokens"], E.relevance.toarray(), E.bias_relevance, E.output, E.target,
                           E.residual)
