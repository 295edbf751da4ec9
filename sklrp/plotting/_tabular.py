"""Plots of tabular relevance: global importance, relevance-vs-value summary, per-sample waterfall.

Inputs are a relevance array ``(n_samples, n_features)`` or an explanation object read
through its public attributes ``relevance``, ``bias_relevance``, ``output``, ``residual``
and, when present, ``feature_names`` (e.g. :class:`sklrp.Explanation`). Feature names
default to ``x0, x1, ...``.
"""

from __future__ import annotations

import numbers

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from scipy import sparse

from ._core import _cmap, _finite, _new_ax

__all__ = ["plot_feature_importance", "plot_relevance_summary", "plot_waterfall"]

_POSITIVE, _NEGATIVE, _NEUTRAL = "tab:red", "tab:blue", "0.6"


def _is_explanation(obj):
    return hasattr(obj, "relevance") and hasattr(obj, "bias_relevance")


def _tabular(relevance, feature_names):
    """``(R (n, d), names, explanation or None)`` from an array or an explanation."""
    explanation = None
    if _is_explanation(relevance):
        explanation = relevance
        if feature_names is None:
            feature_names = getattr(explanation, "feature_names", None)
        relevance = explanation.relevance
    if sparse.issparse(relevance):
        relevance = relevance.toarray()
    R = _finite(relevance, "relevance")
    if R.ndim == 1:
        R = R[None, :]
    if R.ndim != 2 or R.shape[1] == 0:
        raise ValueError(f"tabular plots need relevance of shape (n_samples, n_features); got shape {R.shape}. "
                         "For images use sklrp.plotting.heatmap.")
    if feature_names is None:
        names = [f"x{i}" for i in range(R.shape[1])]
    else:
        names = [str(v) for v in np.asarray(feature_names, dtype=object).ravel()]
        if len(names) != R.shape[1]:
            raise ValueError(f"feature_names has {len(names)} names but relevance has {R.shape[1]} features")
    return R, names, explanation


def _check_max(max_features):
    if isinstance(max_features, bool) or not isinstance(max_features, numbers.Integral) or max_features < 1:
        raise ValueError(f"max_features must be a positive integer, got {max_features!r}")
    return int(max_features)


def _ranked(R, max_features):
    """Feature indices by decreasing mean |R| (ties: lower index first), the first ``max_features``."""
    importance = np.abs(R).mean(axis=0)
    order = np.argsort(-importance, kind="stable")
    return order[:_check_max(max_features)], order[max_features:], importance


def plot_feature_importance(relevance, feature_names=None, *, max_features=20, ax=None, color="tab:blue",
                            title=None):
    """Global feature importance: mean absolute relevance per feature, as horizontal bars.

    Parameters
    ----------
    relevance : array-like of shape (n_samples, n_features) or Explanation
        Relevance of many samples (an explanation's ``relevance`` and ``feature_names``
        are used).
    feature_names : array-like of str, default=None
        Names of the features; default: the explanation's, else ``x0, x1, ...``.
    max_features : int, default=20
        Bars for the most important features; the rest are summed into one bar
        ``"N other features"``.
    ax : matplotlib Axes, default=None
    color : colour, default="tab:blue"
    title : str, default=None

    Returns
    -------
    ax : matplotlib Axes
        The most important feature's bar is at the top; bar widths are the mean
        ``|R|`` over samples.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import plot_feature_importance
    >>> ax = plot_feature_importance(np.array([[1.0, -3.0], [-1.0, 1.0]]), ["a", "b"])
    >>> [(t.get_text(), float(p.get_width())) for t, p in zip(ax.get_yticklabels(), ax.patches)]
    [('b', 2.0), ('a', 1.0)]
    """
    R, names, _ = _tabular(relevance, feature_names)
    shown, rest, importance = _ranked(R, max_features)
    labels = [names[i] for i in shown]
    widths = list(importance[shown])
    if rest.size:
        labels.append(f"{rest.size} other features")
        widths.append(float(importance[rest].sum()))
    ax = _new_ax(ax, figsize=(5, 0.8 + 0.3 * len(labels)))
    y = np.arange(len(labels))[::-1]  # the most important bar on top
    ax.barh(y, widths, color=[color] * len(shown) + [_NEUTRAL] * (len(labels) - len(shown)))
    ax.set_yticks(y, labels)
    ax.set_xlabel("mean |relevance|")
    if title is not None:
        ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return ax


def _swarm_offsets(values, n_bins=100):
    """Beeswarm offsets in [-1, 1]: points in the same bin of ``values`` are stacked alternately up and down."""
    n = values.size
    offsets = np.zeros(n)
    if n == 0:
        return offsets
    span = values.max() - values.min()
    bins = np.zeros(n, dtype=int) if span == 0 else np.floor((values - values.min()) / span * (n_bins - 1)).astype(int)
    order = np.argsort(bins, kind="stable")
    layer, last = 0, None
    for i in order:
        if bins[i] != last:
            layer, last = 0, bins[i]
        offsets[i] = np.ceil(layer / 2) * (1 if layer % 2 else -1)
        layer += 1
    top = np.abs(offsets).max()
    return offsets / top if top > 0 else offsets


def _column_values(X, j, n):
    """Numeric values of column ``j`` of X (NaN where missing or not a number)."""
    col = X.iloc[:, j] if hasattr(X, "iloc") else np.asarray(X, dtype=object)[:, j]
    try:
        values = np.asarray(col, dtype=float)
    except (TypeError, ValueError):
        values = np.full(n, np.nan)
    return values


def plot_relevance_summary(relevance, X=None, feature_names=None, *, max_features=20, ax=None, cmap="coolwarm",
                           row_height=0.4, title=None):
    """Relevance against feature value for many samples (a beeswarm per feature).

    One row per feature, most important (mean ``|R|``) on top. Each sample is a dot at
    ``x = R_{n,d}``, spread vertically within its row where dots pile up; its colour is
    the feature's value in ``X`` (low to high within the 5th-95th percentile of that
    feature; grey where missing or not numeric).

    Parameters
    ----------
    relevance : array-like of shape (n_samples, n_features) or Explanation
    X : array-like or DataFrame of shape (n_samples, n_features), default=None
        The explained samples, for the colours; None draws all dots in one colour.
    feature_names : array-like of str, default=None
        Default: the explanation's names, else the DataFrame's columns, else ``x0, ...``.
    max_features : int, default=20
        Rows for the most important features.
    ax : matplotlib Axes, default=None
    cmap : str or Colormap, default="coolwarm"
    row_height : float, default=0.4
        Dots of a row lie within ``+-row_height`` of its centre.
    title : str, default=None

    Returns
    -------
    ax : matplotlib Axes
        ``ax.collections[k]`` holds the dots of the k-th row from the top.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import plot_relevance_summary
    >>> R = np.array([[0.5, -2.0], [-0.5, 1.0], [0.25, 3.0]])
    >>> ax = plot_relevance_summary(R, X=np.array([[1, 10], [2, 20], [3, 30]]))
    >>> ax.collections[0].get_offsets()[:, 0].tolist()  # the top row: x1, the most important feature
    [-2.0, 1.0, 3.0]
    """
    if feature_names is None and X is not None and hasattr(X, "columns") and not _is_explanation(relevance):
        feature_names = list(X.columns)
    R, names, _ = _tabular(relevance, feature_names)
    n = R.shape[0]
    if X is not None and (np.shape(X)[0] != n or np.shape(X)[1] != R.shape[1]):
        raise ValueError(f"X has shape {np.shape(X)} but relevance has shape {R.shape}")
    shown, _, _ = _ranked(R, max_features)
    cmap = _cmap(cmap)
    ax = _new_ax(ax, figsize=(6, 0.8 + 0.4 * len(shown)))
    for rank, j in enumerate(shown):
        y = len(shown) - 1 - rank
        offsets = y + row_height * _swarm_offsets(R[:, j])
        if X is None:
            colors = np.tile(np.array(cmap(0.5)), (n, 1))
        else:
            values = _column_values(X, j, n)
            colors = np.tile(np.array([0.6, 0.6, 0.6, 1.0]), (n, 1))
            ok = np.isfinite(values)
            if ok.any():
                lo, hi = np.percentile(values[ok], [5, 95])
                if hi <= lo:
                    lo, hi = values[ok].min(), values[ok].max()
                scaled = np.clip((values[ok] - lo) / (hi - lo), 0, 1) if hi > lo else np.full(ok.sum(), 0.5)
                colors[ok] = cmap(scaled)
        ax.scatter(R[:, j], offsets, c=colors, s=12, linewidths=0)
    ax.axvline(0.0, color="0.3", lw=0.8)
    ax.set_yticks(np.arange(len(shown))[::-1], [names[j] for j in shown])
    ax.set_ylim(-0.5 - row_height, len(shown) - 0.5 + row_height)
    ax.set_xlabel("relevance")
    if X is not None:
        bar = ax.figure.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=ax, ticks=[0, 1], aspect=30)
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value")
    if title is not None:
        ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return ax


def _scalar(value, sample, name):
    if value is None:
        return None
    arr = np.asarray(value, dtype=float)
    v = arr.ravel()[sample] if arr.ndim else arr.item()
    if not np.isfinite(v):
        raise ValueError(f"{name} of sample {sample} is not finite")
    return float(v)


def plot_waterfall(relevance, sample=0, *, feature_names=None, X=None, bias=None, output=None, residual=None,
                   max_features=10, ax=None, title=None):
    """One sample's decomposition as a waterfall: from the bias part, feature by feature, to ``f(x)``.

    The first bar is the bias relevance ``R_b`` (from 0); each feature's bar starts
    where the previous one ended and has width ``R_d`` (features by decreasing
    ``|R_d|``; beyond ``max_features`` they are summed into one bar); the residual
    (what stabilisers absorbed, or a Taylor remainder) is its own bar; the last bar,
    from 0, is the explained output ``f(x) = R_b + sum_d R_d + residual`` (the
    conservation of Eq. (2.16) read as a sum).

    Parameters
    ----------
    relevance : Explanation, or array-like of shape (n_features,) or (n_samples, n_features)
        An explanation supplies ``bias_relevance``, ``output``, ``residual`` and
        ``feature_names``; with an array pass them as ``bias`` / ``output`` / ``residual``
        (each a scalar or a per-sample array; missing ones are 0, and ``output`` is
        then ``bias + sum(R) + residual``).
    sample : int, default=0
        The row to plot.
    feature_names : array-like of str, default=None
    X : array-like or DataFrame, default=None
        The explained samples: the feature values are shown in the labels.
    bias, output, residual : float or array-like, default=None
    max_features : int, default=10
    ax : matplotlib Axes, default=None
    title : str, default=None

    Returns
    -------
    ax : matplotlib Axes
        ``ax.patches`` are the bars from the top: bias, features, (others), residual, f(x).

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import plot_waterfall
    >>> ax = plot_waterfall(np.array([2.0, -0.5]), bias=1.0, output=2.25)
    >>> [(float(p.get_x()), float(p.get_width())) for p in ax.patches]
    [(0.0, 1.0), (1.0, 2.0), (3.0, -0.5), (2.5, -0.25), (0.0, 2.25)]
    """
    if isinstance(sample, bool) or not isinstance(sample, numbers.Integral):
        raise ValueError(f"sample must be an integer row index, got {sample!r}")
    R, names, explanation = _tabular(relevance, feature_names)
    if not -R.shape[0] <= sample < R.shape[0]:
        raise ValueError(f"sample {sample} is out of range for {R.shape[0]} samples")
    if explanation is not None:
        bias = explanation.bias_relevance if bias is None else bias
        output = getattr(explanation, "output", None) if output is None else output
        residual = getattr(explanation, "residual", None) if residual is None else residual
    r = R[sample]
    b = _scalar(bias, sample, "bias") or 0.0
    out = _scalar(output, sample, "output")
    res = _scalar(residual, sample, "residual")
    if res is None:
        res = 0.0 if out is None else out - b - float(r.sum())
    if out is None:
        out = b + float(r.sum()) + res
    order = np.argsort(-np.abs(r), kind="stable")
    shown, rest = order[:_check_max(max_features)], order[max_features:]
    row = None
    if X is not None:
        row = X.iloc[sample] if hasattr(X, "iloc") else np.asarray(X, dtype=object)[sample]
        row = list(row)
    labels = ["bias"] + [names[i] if row is None else f"{names[i]} = {_fmt(row[i])}" for i in shown]
    values = [b] + [float(r[i]) for i in shown]
    if rest.size:
        labels.append(f"{rest.size} other features")
        values.append(float(r[rest].sum()))
    labels.append("residual")
    values.append(res)
    starts = np.concatenate([[0.0], np.cumsum(values)[:-1]])
    m = len(values) + 1
    y = np.arange(m)[::-1]
    ax = _new_ax(ax, figsize=(6, 0.8 + 0.35 * m))
    colors = [_NEUTRAL] + [_POSITIVE if v >= 0 else _NEGATIVE for v in values[1:-1]] + ["0.8"]
    ax.barh(y[:-1], values, left=starts, color=colors, edgecolor="0.3", linewidth=0.5)
    ax.barh(y[-1:], [out], left=[0.0], color="0.2")
    for yy, s, v in zip(y, list(starts) + [0.0], values + [out]):
        # the value right of the bar's right end: never over the tick labels
        ax.annotate(f"{v:+.3g}" if yy != y[-1] else f"{v:.3g}", (max(s, s + v), yy), xytext=(3, 0),
                    textcoords="offset points", va="center", ha="left", fontsize="small")
    ax.margins(x=0.12)
    ax.axvline(out, color="0.2", ls="--", lw=0.8)
    ax.axvline(0.0, color="0.5", lw=0.5)
    ax.set_yticks(y, labels + ["f(x)"])
    ax.set_xlabel("relevance (cumulative)")
    if title is not None:
        ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return ax


def _fmt(value):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)
