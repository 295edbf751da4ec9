"""``Explanation``: the relevance of a batch of samples and what is needed to audit it.

It is what :meth:`sklrp.LRPTransformer.explain` and :meth:`sklrp.chain.Chain.explain`
return. Besides the relevance it says how well the relevance adds up to the explained
output and *why* it does not where it does not: relevance absorbed by rule stabilisers
(Eq. (2.23)) is reported apart from the remainder of a Taylor expansion (Eq. (2.75)).
It saves to one ``.npz`` file without pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

__all__ = ["Explanation"]

_FORMAT = "sklrp.Explanation/1"


@dataclass
class Explanation:
    """Relevance of a batch of samples and the quantities needed to audit it.

    Attributes
    ----------
    relevance : ndarray, same shape as X (scipy.sparse CSR matrix for text pipelines)
        Input relevance ``R_d`` (Eq. (2.12) at the input layer).
    bias_relevance : ndarray of shape (n_samples,)
        All relevance absorbed by bias terms along the whole chain (Eq. (2.16)),
        after the ``bias`` redistribution mode (Eqs. (2.73)-(2.74)).
    output : ndarray of shape (n_samples,)
        The explained score ``f(x)`` (the target's decision value, sign-flipped for
        the negative class of a binary model).
    target : ndarray of shape (n_samples,)
        The class label (classifiers) or output index (regressors) explained.
    residual : ndarray of shape (n_samples,)
        ``output - relevance.sum() - bias_relevance``: everything the relevance does not
        account for, ``absorbed + taylor_remainder``. Zero (to rounding) for exact
        decompositions.
    taylor_remainder : ndarray of shape (n_samples,)
        The part of ``residual`` that a Taylor decomposition of the explained model leaves
        out by construction: the higher-order terms of Eq. (2.75) for the first-order
        expansion, the quadrature error of the exact path integral; zero for exact
        decompositions. (The model's value at the root point, ``f(x~)``, is reported in
        ``bias_relevance``.)
    root_point : ndarray or None
        For Taylor decompositions (Eqs. (2.75)-(2.76)): the root point ``x~`` in the
        input space of the explained model step, else None.
    feature_names : ndarray of str or None
        Name of each relevance column, when known (the input's column names, a text
        vectoriser's vocabulary).
    extras : dict
        Further per-sample results a propagator reports (e.g. ``root_found``, ``tokens``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> import sklrp
    >>> X = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 1.0]]); y = X @ [2.0, -1.0] + 0.5
    >>> E = sklrp.LRPTransformer(LinearRegression()).fit(X, y).explain(X[:1])
    >>> E.relevance.round(6), E.bias_relevance.round(6), E.output.round(6)
    (array([[ 2., -2.]]), array([0.5]), array([0.5]))
    >>> float(E.relative_residual[0]) < 1e-12
    True
    """

    relevance: np.ndarray
    bias_relevance: np.ndarray
    output: np.ndarray
    target: np.ndarray
    residual: np.ndarray
    root_point: np.ndarray | None = None
    extras: dict = field(default_factory=dict)
    taylor_remainder: np.ndarray | None = None
    feature_names: np.ndarray | None = None

    def __post_init__(self):
        if self.taylor_remainder is None:
            self.taylor_remainder = np.zeros_like(np.asarray(self.residual, dtype=float))

    @property
    def absorbed(self) -> np.ndarray:
        """Relevance absorbed by the rules' stabilisers and empty parts (Eq. (2.23)), per sample.

        ``residual - taylor_remainder``: what epsilon and alpha-beta steps took out of the
        relevance on its way down, as opposed to what a Taylor expansion never put in.
        """
        return self.residual - self.taylor_remainder

    @property
    def relative_residual(self) -> np.ndarray:
        """``|residual| / |output|`` per sample: the share of the output left unexplained.

        ``inf`` where the output is exactly 0 but the residual is not, 0 where both are 0.
        """
        num, den = np.abs(self.residual), np.abs(self.output)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))

    # -- frames ----------------------------------------------------------------
    def to_frame(self, *, summary=False):
        """The relevance as a pandas DataFrame, one column per feature.

        Parameters
        ----------
        summary : bool, default=False
            Append the columns ``output``, ``bias_relevance``, ``residual`` and ``target``.

        Returns
        -------
        pandas.DataFrame
            Columns named by ``feature_names`` (``x0, x1, ...`` when unknown); sparse
            relevance gives a sparse frame.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.linear_model import LinearRegression
        >>> import sklrp
        >>> X = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 1.0]]); y = X @ [2.0, -1.0]
        >>> sklrp.LRPTransformer(LinearRegression()).fit(X, y).explain(X[:2]).to_frame().columns.tolist()
        ['x0', 'x1']
        """
        import pandas as pd

        R = self.relevance
        if not sparse.issparse(R) and np.ndim(R) != 2:
            raise ValueError(
                f"to_frame needs one relevance column per feature, but the relevance has shape {np.shape(R)}; "
                "reshape it first, e.g. E.relevance.reshape(len(E.relevance), -1)"
            )
        names = self.feature_names
        if names is None:
            names = [f"x{i}" for i in range(R.shape[1])]
        names = [str(c) for c in names]
        frame = pd.DataFrame.sparse.from_spmatrix(R, columns=names) if sparse.issparse(R) else pd.DataFrame(
            np.asarray(R), columns=names)
        if summary:
            for key in ("output", "bias_relevance", "residual", "target"):
                if key in frame.columns:
                    raise ValueError(f"a feature is named {key!r}; use summary=False")
                frame[key] = getattr(self, key)
        return frame

    # -- persistence -----------------------------------------------------------
    def save(self, path):
        """Write the explanation to one ``.npz`` file (no pickle); read it with :meth:`load`.

        Arrays round-trip exactly (sparse text relevance and per-token relevance included).
        Target labels and feature names must be numbers or strings.

        Parameters
        ----------
        path : str or path-like
            Destination; numpy appends ``.npz`` when the name lacks it.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from sklearn.linear_model import LinearRegression
        >>> import sklrp
        >>> X = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 1.0]]); y = X @ [2.0, -1.0]
        >>> E = sklrp.LRPTransformer(LinearRegression()).fit(X, y).explain(X)
        >>> path = os.path.join(tempfile.mkdtemp(), "expl.npz")
        >>> E.save(path)
        >>> np.array_equal(sklrp.Explanation.load(path).relevance, E.relevance)
        True
        """
        arrays, meta = {}, {"format": _FORMAT, "extras": [], "sparse": sparse.issparse(self.relevance)}
        if meta["sparse"]:
            csr = sparse.csr_matrix(self.relevance)
            arrays.update({"relevance.data": csr.data, "relevance.indices": csr.indices,
                           "relevance.indptr": csr.indptr, "relevance.shape": np.asarray(csr.shape)})
        else:
            arrays["relevance"] = np.asarray(self.relevance)
        for key in ("bias_relevance", "output", "residual", "taylor_remainder"):
            arrays[key] = np.asarray(getattr(self, key))
        arrays["target"] = _plain(self.target, "target")
        if self.root_point is not None:
            arrays["root_point"] = np.asarray(self.root_point)
        if self.feature_names is not None:
            arrays["feature_names"] = _plain(self.feature_names, "feature_names")
        for key, value in self.extras.items():
            if key == "tokens":
                doc, tok, pos, rel = [], [], [], []
                for i, toks in enumerate(value):
                    for t, p, r in toks:
                        doc.append(i), tok.append(t), pos.append(p), rel.append(r)
                arrays.update({"tokens.doc": np.asarray(doc, dtype=np.int64),
                               "tokens.token": np.asarray(tok, dtype=str),
                               "tokens.position": np.asarray(pos, dtype=np.int64),
                               "tokens.relevance": np.asarray(rel, dtype=float),
                               "tokens.n": np.asarray(len(value))})
            else:
                arrays[f"extras.{key}"] = _plain(value, f"extras[{key!r}]")
            meta["extras"].append(key)
        arrays["meta"] = np.asarray(json.dumps(meta))
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> Explanation:
        """Read an explanation written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        Explanation
        """
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                raise ValueError(f"{path} is not an sklrp Explanation file (no 'meta' entry)")
            meta = json.loads(str(f["meta"]))
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path}: unknown Explanation format {meta.get('format')!r}, expected {_FORMAT!r}")
            if meta["sparse"]:
                relevance = sparse.csr_matrix((f["relevance.data"], f["relevance.indices"], f["relevance.indptr"]),
                                              shape=tuple(f["relevance.shape"]))
            else:
                relevance = f["relevance"]
            extras = {}
            for key in meta["extras"]:
                if key == "tokens":
                    tokens = [[] for _ in range(int(f["tokens.n"]))]
                    for d, t, p, r in zip(f["tokens.doc"], f["tokens.token"], f["tokens.position"],
                                          f["tokens.relevance"]):
                        tokens[int(d)].append((str(t), int(p), float(r)))
                    extras[key] = tokens
                else:
                    extras[key] = f[f"extras.{key}"]
            return cls(
                relevance=relevance, bias_relevance=f["bias_relevance"], output=f["output"], target=f["target"],
                residual=f["residual"], taylor_remainder=f["taylor_remainder"],
                root_point=f["root_point"] if "root_point" in f.files else None,
                feature_names=f["feature_names"] if "feature_names" in f.files else None, extras=extras,
            )


def _plain(values, name):
    """``values`` as an array numpy can store without pickle (numbers, booleans or strings)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        items = arr.ravel().tolist()
        if all(isinstance(v, str) for v in items):
            arr = arr.astype(str)
        else:
            try:
                arr = np.asarray(items).reshape(arr.shape)
            except (TypeError, ValueError):
                pass  # mixed types stay object and are refused below
    if arr.dtype.kind not in "biufcUS":
        raise ValueError(
            f"Explanation.save stores numbers and strings only; {name} has values of type "
            f"{sorted({type(v).__name__ for v in np.asarray(values, dtype=object).ravel().tolist()})}"
        )
    return arr
