"""``LRPTransformer``: the scikit-learn face of sklrp.

``fit`` checks that every step of the wrapped model can be explained (before training
anything), fits it unless it is frozen, and builds its :class:`~sklrp.chain.Chain`;
``explain`` validates the input and hands it to the chain, which runs Algorithm 1 batch
by batch. The numerical work runs in torch; inputs and outputs are numpy (pandas with
``set_output(transform="pandas")``).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, MetaEstimatorMixin, OneToOneFeatureMixin, TransformerMixin, clone
from sklearn.svm import LinearSVC
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _blockwise
from .chain import Chain
from .explanation import Explanation
from .propagators import RuleConfig, check_supported, input_adapter_for
from .rules import Epsilon, Rule, make_rule

__all__ = ["LRPTransformer", "Explanation"]

_BIAS_MODES = ("keep", "uniform", "weighted")


def _resolve_device(device):
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available on this machine")
    return dev


def _resolve_dtype(dtype, device):
    if dtype is None:
        return torch.float64 if device.type == "cpu" else torch.float32
    table = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
             torch.float64: torch.float64, np.float32: torch.float32, np.float64: torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
    return table[dtype]


class LRPTransformer(OneToOneFeatureMixin, TransformerMixin, MetaEstimatorMixin, BaseEstimator):
    """Explain a fitted model with Layer-wise Relevance Propagation.

    ``transform(X)`` returns the relevance of every input feature for the target
    output; ``explain(X)`` returns the full :class:`Explanation`. The wrapped
    estimator may be a single model or a ``Pipeline``; relevance is propagated
    backward through every step down to the raw input (Algorithm 1). The final
    model is decomposed exactly where its structure allows (linear models,
    Eqs. (2.14)-(2.15)); intermediate linear steps use ``rule``.

    Parameters
    ----------
    estimator : estimator, default=None
        The model to explain; ``None`` means ``LinearSVC()``. It is cloned and
        fitted in :meth:`fit`, unless it is a ``FrozenEstimator`` (explained as is).
    rule : str or sklrp.rules.Rule, default="epsilon"
        Rule for linear-type layers: ``"z"`` (Eq. (2.13)), ``"epsilon"`` (Eq. (2.22)),
        ``"alphabeta"`` (Eq. (2.26)), ``"zplus"``, ``"flat"`` (Eq. (2.27)),
        ``"wsquare"`` (Eq. (2.28)), ``"zbox"`` (``"zb"``; bounded input, Table 2.1),
        ``"gamma"`` (Montavon et al., 2019), ``"absz"`` (the magnitude rule of Eq. (2.7)),
        or a Rule instance (:mod:`sklrp.rules`).
    epsilon : float, default=1e-2
        Stabiliser of the epsilon rule.
    alpha, beta : float, default=2.0, -1.0
        Alpha-beta parameters in the thesis' convention ``alpha + beta = 1``.
    low, high : float or array-like, default=0.0, 1.0
        Input bounds of the ``"zbox"`` rule: scalars, or shaped like one sample.
    gamma : float, default=0.25
        Weight of the positive parts in the ``"gamma"`` rule, ``z_ij = x_i (w_ij + gamma w+_ij)``.
    conv_rule, input_rule : str or Rule, default=None
        Rules for convolutional layers and for the input layer of torch networks
        (``sklrp.nn``); ``None`` uses ``rule``.
    flat_depth : int, default=None
        Torch networks: use the flat rule for the lowest ``flat_depth`` linear-type
        layers (decomposition depth, Section 5.4.2).
    composite : str or sklrp.nn.Composite, default=None
        Torch networks: a named composite that sets the rules of all layers,
        ``"epsilon_plus"``, ``"epsilon_alpha2_beta1"``, ``"epsilon_plus_flat"``,
        ``"epsilon_alpha2_beta1_flat"`` or ``"epsilon_gamma_box"`` (zennit's composites,
        defined as zennit defines them; zennit's class names such as ``"EpsilonGammaBox"``
        work too), with ``epsilon`` for the dense layers and, for ``"epsilon_gamma_box"``,
        ``gamma`` for the convolutions and ``low`` / ``high`` for the input layer
        (:data:`sklrp.nn.COMPOSITES` and :mod:`sklrp.nn.composites` give the mapping to zennit);
        or an :class:`sklrp.nn.Composite`. ``flat_depth`` may refine a named composite;
        ``rule`` must stay ``"epsilon"`` and ``conv_rule`` / ``input_rule`` unset, as the
        composite sets them. The chain's other linear steps (e.g. a scaler before the net)
        use the composite's dense-layer rule.
    target : {"predicted", "true"}, label or array-like, default="predicted"
        Which output to explain: the predicted class, the true class (needs ``y``),
        a fixed class label / output index, or one label per sample.
    bias : {"keep", "uniform", "weighted"}, default="keep"
        What to do with the relevance of the model's bias: keep it in
        ``bias_relevance`` (Eq. (2.72)), spread it uniformly over the model's input
        dimensions (Eq. (2.73)), or by the squared weights ``w_d^2 / ||w||^2``
        (Eq. (2.74) made conservative; linear projections only).
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        Where the torch computations run; "auto" uses CUDA when available.
    dtype : {None, "float32", "float64"}, default=None
        None means float64 on the CPU and float32 on a GPU for explanations, while perturbation
        analyses (``aopc_score``, ``perturbation_curve``) score a torch network in its own dtype
        (a float64 copy of a float32 convolutional net costs 2-4x on a CPU); an explicit dtype
        applies to both, so that the curves start exactly at ``Explanation.output``.
    batch_size : int, default=1024
        Samples per batch; bounds memory. A lone linear model, whose only temporaries are its scores,
        takes ``batch_size * n_features / (2 n_outputs + 2)`` rows at a time (the same memory).
    n_root_candidates : int, default=50
        Taylor decompositions (RBF/chi2 SVMs): number of opposite-class reference
        samples searched for a root point (Eqs. (2.75)-(2.76)).
    root_tol : float, default=1e-6
        Taylor decompositions: root points satisfy ``|f(x~)| <= root_tol``.
    taylor : {"exact", "first_order"}, default="exact"
        Taylor decompositions: ``"exact"`` integrates the gradient along the segment from the
        expansion point ``x~`` to ``x`` (the integral form of the Taylor remainder), so the
        relevance sums to ``f(x) - f(x~)`` up to ``taylor_tol``; ``"first_order"`` is the thesis'
        ``R_d = (x - x~)_d df/dx_d(x~)`` at a root point (Eq. (2.76)), whose remainder stays in
        the residual.
    taylor_tol : float, default=1e-8
        ``taylor="exact"``: the quadrature refines until ``|f(x) - f(x~) - sum_d R_d|`` is at most
        ``taylor_tol * |f(x)|``; in (0, 1).
    taylor_max_nodes : int, default=256
        ``taylor="exact"``: most Gauss-Legendre nodes per sample (doubling from 8); 1 to 1024.
    taylor_reference : {"auto", "root", "mean"}, default="auto"
        Where Taylor decompositions expand: ``"root"``, a root point ``x~`` on the decision
        boundary near ``x`` (Eqs. (2.75)-(2.76)), so relevance explains why ``x`` lies on its
        side of the boundary; ``"mean"``, the training mean ``x_bar`` (beyond the thesis: the
        integrated gradient from the average sample), so relevance explains ``f(x) - f(x_bar)``
        and ``f(x_bar)`` is the bias part. ``"auto"``: the mean for ``taylor="exact"``, a root
        point for ``taylor="first_order"`` (the thesis' Eq. (2.76)). Both are exactly
        conservative with ``taylor="exact"``; the mean is the exact default because it ranked
        features better than KernelSHAP on 2-3 of 3 data sets in every measured run (a root
        point: 1 of 3) and needs no root search (see the SVM guide for the figures).
    verbose : bool, default=False
        Show a progress bar over batches.

    Attributes
    ----------
    estimator_ : estimator
        The fitted (or frozen) estimator that is explained.
    n_features_in_ : int
        Number of features seen in :meth:`fit`.
    feature_names_in_ : ndarray of str
        Column names of ``X`` in :meth:`fit`, when it had string column names.
    classes_ : ndarray
        The explained classifier's classes, when it has them.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.frozen import FrozenEstimator
    >>> import sklrp
    >>> X, y = load_iris(return_X_y=True)
    >>> model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    >>> lrp = sklrp.LRPTransformer(FrozenEstimator(model), rule="z").fit(X, y)
    >>> R = lrp.transform(X[:5])
    >>> R.shape
    (5, 4)
    >>> E = lrp.explain(X[:5])
    >>> bool(np.allclose(E.relevance.sum(1) + E.bias_relevance + E.residual, E.output))
    True
    """

    def __init__(
        self,
        estimator=None,
        *,
        rule="epsilon",
        epsilon=1e-2,
        alpha=2.0,
        beta=-1.0,
        low=0.0,
        high=1.0,
        gamma=0.25,
        conv_rule=None,
        input_rule=None,
        flat_depth=None,
        composite=None,
        target="predicted",
        bias="keep",
        device="auto",
        dtype=None,
        batch_size=1024,
        n_root_candidates=50,
        root_tol=1e-6,
        taylor="exact",
        taylor_tol=1e-8,
        taylor_max_nodes=256,
        taylor_reference="auto",
        verbose=False,
    ):
        self.estimator = estimator
        self.rule = rule
        self.epsilon = epsilon
        self.alpha = alpha
        self.beta = beta
        self.low = low
        self.high = high
        self.gamma = gamma
        self.conv_rule = conv_rule
        self.input_rule = input_rule
        self.flat_depth = flat_depth
        self.composite = composite
        self.target = target
        self.bias = bias
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.n_root_candidates = n_root_candidates
        self.root_tol = root_tol
        self.taylor = taylor
        self.taylor_tol = taylor_tol
        self.taylor_max_nodes = taylor_max_nodes
        self.taylor_reference = taylor_reference
        self.verbose = verbose

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit"]), None],
        "rule": [str, Rule],  # names are normalised and checked by sklrp.rules.make_rule
        "epsilon": [Interval(Real, 0, None, closed="left")],
        "alpha": [Real],  # alpha + beta = 1, alpha >= 1: checked by the AlphaBeta rule (Eq. (2.26))
        "beta": [Real],
        "low": [Real, "array-like"],
        "high": [Real, "array-like"],
        "gamma": [Interval(Real, 0, None, closed="left")],
        "conv_rule": [str, Rule, None],
        "input_rule": [str, Rule, None],
        "flat_depth": [Interval(Integral, 0, None, closed="left"), None],
        # names are checked by sklrp.nn.make_composite (sklrp.nn is imported only when one is used)
        "composite": [str, HasMethods(["rule_for", "is_flat"]), None],
        "target": "no_validation",  # "predicted", "true", a label or labels: checked per call
        "bias": [StrOptions(set(_BIAS_MODES))],
        "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device, None],
        "dtype": [StrOptions({"float32", "float64"}), torch.dtype, type, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_root_candidates": [Interval(Integral, 1, None, closed="left")],
        "root_tol": [Interval(Real, 0, None, closed="neither")],
        "taylor": [StrOptions({"exact", "first_order"})],
        "taylor_reference": [StrOptions({"auto", "root", "mean"})],
        "taylor_tol": [Interval(Real, 0, 1, closed="neither")],
        "taylor_max_nodes": [Interval(Integral, 1, None, closed="left")],  # upper bound: sklrp.svm
        "verbose": ["verbose"],
    }

    # -- configuration ---------------------------------------------------------
    def _make_rule(self, rule):
        return make_rule(rule, epsilon=self.epsilon, alpha=self.alpha, beta=self.beta,
                         low=self.low, high=self.high, gamma=self.gamma)

    def _composite(self):
        """The torch-network composite chosen by ``composite`` (None when it is not set)."""
        if self.composite is None:
            return None
        from .nn.composites import composite_name, make_composite

        given = [name for name in ("conv_rule", "input_rule") if getattr(self, name) is not None]
        named = isinstance(self.composite, str)
        if not named and self.flat_depth is not None:
            given.append("flat_depth")
        rule = self._make_rule(self.rule)
        if type(rule) is not Epsilon or rule.epsilon != self._make_rule("epsilon").epsilon:
            given.insert(0, "rule")
        if given:
            what = f"composite={self.composite!r}" if named else "a Composite"
            raise ValueError(f"{what} sets the rules of all layers; {', '.join(given)} cannot be given with it. Pass "
                             "either a composite (with epsilon, gamma, low, high as its parameters) or the rules.")
        if not named:
            return self.composite
        if composite_name(self.composite) is None:
            from .nn.composites import COMPOSITES

            raise ValueError(f"unknown composite {self.composite!r}; expected one of {', '.join(COMPOSITES)}, or an "
                             "sklrp.nn.Composite")
        return make_composite(self.composite, flat_depth=self.flat_depth, epsilon=self.epsilon, gamma=self.gamma,
                              low=self.low, high=self.high)

    def _config(self) -> RuleConfig:
        self._validate_params()
        device = _resolve_device(self.device)
        composite = self._composite()
        return RuleConfig(
            self._make_rule(self.rule) if composite is None else composite.rule,
            _resolve_dtype(self.dtype, device), device,
            conv_rule=None if self.conv_rule is None else self._make_rule(self.conv_rule),
            input_rule=None if self.input_rule is None else self._make_rule(self.input_rule),
            flat_depth=self.flat_depth, n_root_candidates=self.n_root_candidates, root_tol=self.root_tol,
            taylor=self.taylor, taylor_tol=self.taylor_tol, taylor_max_nodes=self.taylor_max_nodes,
            taylor_reference=self.taylor_reference,
            batch_size=self.batch_size, bias=self.bias, composite=composite,
        )

    def get_chain(self) -> Chain:
        """The fitted model's :class:`~sklrp.chain.Chain` under the current parameters.

        This is what :meth:`explain` runs; evaluation and the audit use it to score
        (perturbed) inputs exactly as the explanation does. Parameters changed with
        ``set_params`` after fitting take effect here.

        Returns
        -------
        Chain
        """
        check_is_fitted(self, "chain_")
        return self.chain_.with_config(self._config())

    # -- fitting ---------------------------------------------------------------
    def fit(self, X, y=None, **fit_params):
        """Fit the wrapped estimator (unless frozen) and prepare its propagators.

        Every step is checked for a registered propagator first, so an unsupported model
        is refused before it is trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; also the reference set of Taylor decompositions. Raw documents
            (a list of str) for a pipeline that starts with a text vectoriser; a
            DataFrame with non-numeric columns for one that starts with a
            ``ColumnTransformer``.
        y : array-like of shape (n_samples,), default=None
            Targets, passed to the estimator's ``fit``.
        **fit_params : dict
            Passed to the estimator's ``fit``.

        Returns
        -------
        self : LRPTransformer
        """
        config = self._config()
        estimator = LinearSVC() if self.estimator is None else self.estimator
        check_supported(estimator)  # before anything is trained
        adapter = input_adapter_for(estimator)
        raw = adapter is not None
        if raw:
            # documents or mixed-type frames: the input adapter validates them; only record names/counts
            X = adapter.check_raw(X)
            validate_data(self, X, reset=True, skip_check_array=True)
        else:
            X = validate_data(self, X, reset=True, allow_nd=True, dtype=None)
        self.estimator_ = clone(estimator).fit(X, y, **fit_params)
        inner_n = getattr(self.estimator_, "n_features_in_", None)
        if not raw and inner_n is not None and X.ndim == 2 and inner_n != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features, but the explained {type(estimator).__name__} was fitted on {inner_n}; "
                "pass data with the model's features."
            )
        chain = Chain(self.estimator_, config)
        if raw:
            X = chain.adapter.check_input(X)
        elif X.ndim > 2 and not chain.accepts_nd:
            raise ValueError(f"{type(self.estimator_).__name__} expects 2-D input (n_samples, n_features); got X "
                             f"with shape {X.shape}")
        chain.prepare(X if raw else np.asarray(X, dtype=float), y)
        self.chain_ = chain
        if chain.classes is not None:
            self.classes_ = chain.classes
        return self

    # -- explaining ------------------------------------------------------------
    def _validate_X(self, X, chain):
        if chain.adapter is not None:
            validate_data(self, X, reset=False, skip_check_array=True)
            return chain.adapter.check_input(X)
        # Finiteness is checked per batch by the chain, while the batch is in cache: a separate
        # pass over X would cost as much as a linear model's whole decision function. float32 stays
        # float32 (batches are converted one at a time): memory is the output plus one batch.
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=[np.float64, np.float32],
                          ensure_all_finite=False)
        if X.ndim > 2 and not chain.accepts_nd:
            raise ValueError(
                f"{type(self.estimator_).__name__} expects 2-D input (n_samples, n_features); got X with "
                f"shape {X.shape}"
            )
        return X

    def explain(self, X, target=None, y=None):
        """Explain the model's output for each sample of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to explain.
        target : {"predicted", "true"}, label or array-like, default=None
            Overrides the ``target`` parameter for this call.
        y : array-like of shape (n_samples,), default=None
            True labels, needed for ``target="true"``.

        Returns
        -------
        Explanation
            For a pipeline starting with a word vectoriser (raw documents in), ``relevance``
            is a sparse ``(n_documents, n_features)`` matrix over the vectoriser's columns and
            ``extras["tokens"]`` holds the ``(token, position, relevance)`` of each
            document's tokens (see :class:`sklrp.bow.text.TextAdapter`).
            For a Dask array or DataFrame, the fields are lazy Dask arrays computed block by
            block (:func:`sklrp.dask.explain`).
        """
        if _blockwise.is_lazy(X):  # a Dask collection: block by block (sklrp.dask)
            return _blockwise.handler("explain")(self, X, target=target, y=y)
        chain = self.get_chain()
        X = self._validate_X(X, chain)
        target = self.target if target is None else target
        if y is not None:
            y = np.asarray(y)
            n = chain.n_samples(X)
            if y.shape[0] != n:
                raise ValueError(f"y has {y.shape[0]} samples but X has {n}")
        E = chain.explain(X, target, y, verbose=self.verbose)
        if E.feature_names is None and hasattr(self, "feature_names_in_"):
            E.feature_names = np.asarray(self.feature_names_in_, dtype=object)
        return E

    def transform(self, X):
        """Relevance of each input feature, with the shape of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        relevance : ndarray of shape (n_samples, n_features)
            A lazy Dask array for Dask input (:func:`sklrp.dask.explain`).
        """
        return self.explain(X).relevance  # Dask input: explain's block-wise path

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then return the relevance of ``X`` (``y`` is used for ``target="true"``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None
        **fit_params : dict
            Passed to the estimator's ``fit``.

        Returns
        -------
        relevance : ndarray of shape (n_samples, n_features)
        """
        self.fit(X, y, **fit_params)
        uses_y = isinstance(self.target, str) and self.target == "true"
        return self.explain(X, y=y if uses_y else None).relevance

    def get_feature_names_out(self, input_features=None):
        """Names of the relevance columns: the input's feature names (a text vectoriser's vocabulary).

        Parameters
        ----------
        input_features : array-like of str, default=None
            Input feature names; None uses ``feature_names_in_`` or ``x0, x1, ...``.

        Returns
        -------
        ndarray of str
        """
        check_is_fitted(self, "chain_")
        names = self.chain_.feature_names()
        if names is not None and input_features is None:
            return np.asarray(names, dtype=object)
        return super().get_feature_names_out(input_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        estimator = LinearSVC() if self.estimator is None else self.estimator
        try:
            inner = get_tags(estimator)
            tags.target_tags.required = inner.target_tags.required
        except (TypeError, AttributeError):  # estimators predating the tags API
            tags.target_tags.required = True
        tags.input_tags.allow_nan = False
        return tags
