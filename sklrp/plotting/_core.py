"""Plots of relevance maps, perturbation curves and SpRAy spectra.

Every function returns matplotlib objects (``Axes``, ``Figure``) or, for text,
an HTML string; nothing here calls ``plt.show()``. Figures are created through
``matplotlib.figure.Figure`` when no ``ax`` is given, so the functions work under
any backend (including Agg) without touching pyplot's global state.

Relevance maps are mapped to colours after the normalisation of Eq. (2.62),
``R_i <- R_i / max_i' |R_i'|``, either per map or jointly over several maps
(Fig. 2.7), so that ``R_i = 0`` always lands on the centre of a diverging colour
map and the sign of the relevance is never flipped.
"""

from __future__ import annotations

import html
import numbers

import numpy as np
from matplotlib.colors import Colormap, LinearSegmentedColormap
from matplotlib.figure import Figure

from ..evaluation.aopc import aopc_from_curves

__all__ = [
    "COLDHOT",
    "normalize_relevance",
    "render_heatmap",
    "heatmap",
    "heatmap_grid",
    "plot_perturbation_curves",
    "plot_spectrum",
    "plot_embedding",
    "plot_class_spectra",
    "highlight_text",
]

# High-contrast diverging map: black at zero, red->yellow for positive and
# blue->cyan for negative relevance, so faint relevance stays dark on print and
# strong relevance of either sign stands out.
COLDHOT = LinearSegmentedColormap.from_list(
    "sklrp_coldhot",
    [(0.0, (0.0, 1.0, 1.0)), (0.25, (0.0, 0.0, 1.0)), (0.5, (0.0, 0.0, 0.0)),
     (0.75, (1.0, 0.0, 0.0)), (1.0, (1.0, 1.0, 0.0))],
)

_CMAPS = {"coldhot": COLDHOT}


def _cmap(cmap) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    if isinstance(cmap, str):
        if cmap in _CMAPS:
            return _CMAPS[cmap]
        import matplotlib

        try:
            return matplotlib.colormaps[cmap]
        except KeyError:
            raise ValueError(f"unknown colour map {cmap!r}; use 'seismic', 'coldhot' or a matplotlib "
                             "colour map name") from None
    raise TypeError(f"cmap must be a colour map name or a matplotlib Colormap, got {type(cmap).__name__}")


def _finite(a, name):
    if hasattr(a, "toarray") and hasattr(a, "nnz"):  # scipy.sparse
        a = a.toarray()
    try:
        a = np.asarray(a, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape}): there is nothing to draw")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _new_ax(ax, figsize=(4, 4)):
    if ax is not None:
        return ax
    fig = Figure(figsize=figsize)
    return fig.add_subplot()


def _to_map(relevance, shape=None, channel_axis=-1, name="relevance"):
    """A 2-D map: reshape flat vectors, sum colour channels (thesis Section 2.3.2)."""
    r = _finite(relevance, name)
    if shape is not None:
        try:
            r = r.reshape(shape)
        except ValueError:
            raise ValueError(f"{name} with {r.size} values cannot be reshaped to {tuple(shape)}") from None
    if r.ndim == 3:
        r = r.sum(axis=channel_axis)
    if r.ndim == 1:
        side = int(round(np.sqrt(r.size)))
        if side * side != r.size:
            raise ValueError(f"{name} is 1-D with {r.size} values, which is not a square image; pass shape=")
        r = r.reshape(side, side)
    if r.ndim != 2:
        raise ValueError(f"{name} must be a 2-D map, a (H, W, C) image or a flat square vector; got shape "
                         f"{np.shape(relevance)}")
    return r


def normalize_relevance(relevance, joint=False):
    """Scale relevance maps into ``[-1, 1]`` by Eq. (2.62), ``R_i / max_i' |R_i'|``.

    Parameters
    ----------
    relevance : array-like of shape (n_maps, ...)
        A stack of relevance maps (the first axis indexes maps).
    joint : bool, default=False
        If True, use one factor ``S`` over all maps (Fig. 2.7: compares the
        magnitude of the evidence across samples or classes); else one ``S`` per map.

    Returns
    -------
    normalized : ndarray, same shape as ``relevance``
        Maps with ``max |R| = 1`` (per map or overall); all-zero maps stay zero (0/0 := 0).

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import normalize_relevance
    >>> normalize_relevance(np.array([[2.0, -1.0], [0.5, 0.25]]))
    array([[ 1. , -0.5],
           [ 1. ,  0.5]])
    >>> normalize_relevance(np.array([[2.0, -1.0], [0.5, 0.25]]), joint=True)
    array([[ 1.   , -0.5  ],
           [ 0.25 ,  0.125]])
    """
    r = _finite(relevance, "relevance")
    if r.ndim < 1:
        raise ValueError("relevance must have at least one axis (maps along axis 0)")
    if joint:
        s = np.abs(r).max() if r.size else 0.0
        return r / s if s > 0 else np.zeros_like(r)
    s = np.abs(r.reshape(len(r), -1)).max(axis=1) if r.size else np.zeros(len(r))
    s = s.reshape((-1,) + (1,) * (r.ndim - 1))
    return np.divide(r, s, out=np.zeros_like(r), where=s > 0)


def render_heatmap(relevance, *, cmap="seismic", scale=None, shape=None, channel_axis=-1):
    """Colour a relevance map as an RGB image, centred at zero.

    Parameters
    ----------
    relevance : array-like
        One map: (H, W), (H, W, C) (channels are summed) or a flat square vector.
    cmap : str or Colormap, default="seismic"
        Diverging colour map; ``"coldhot"`` is the high-contrast :data:`COLDHOT`.
    scale : float, default=None
        The normalisation factor ``S`` of Eq. (2.62); None uses the map's own
        ``max |R|``. Pass a common value to colour several maps jointly.
    shape : tuple, default=None
        Reshape the relevance to this shape first (e.g. ``(8, 8)`` for digits).
    channel_axis : int, default=-1
        Axis of colour channels in a 3-D map.

    Returns
    -------
    rgb : ndarray of shape (H, W, 3), values in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import render_heatmap
    >>> render_heatmap(np.array([[1.0, 0.0], [0.0, -1.0]])).shape
    (2, 2, 3)
    """
    r = _to_map(relevance, shape, channel_axis)
    s = np.abs(r).max() if scale is None else float(scale)
    if not np.isfinite(s) or s < 0:
        raise ValueError(f"scale must be a finite non-negative number, got {scale!r}")
    rn = np.clip(r / s, -1.0, 1.0) if s > 0 else np.zeros_like(r)
    return _cmap(cmap)((rn + 1.0) / 2.0)[..., :3]


def heatmap(relevance, image=None, *, ax=None, cmap="seismic", scale=None, shape=None, channel_axis=-1,
            overlay_alpha=0.7, title=None, colorbar=False):
    """Draw one relevance map, optionally over its input image.

    The map is normalised by Eq. (2.62) and drawn with a diverging colour map
    centred at 0 (red: evidence for the explained output, blue: against it).
    Colour channels of (H, W, C) relevance are summed into one value per pixel.

    Parameters
    ----------
    relevance : array-like
        (H, W), (H, W, C) or a flat vector (with ``shape=`` or square).
    image : array-like, default=None
        The input, drawn in grey underneath; relevance is then overlaid with an
        opacity proportional to ``|R_i| / S`` so irrelevant pixels show the input.
    ax : matplotlib Axes, default=None
        Where to draw; a new Figure is made when None.
    cmap : str or Colormap, default="seismic"
        ``"seismic"``, ``"coldhot"`` (high contrast) or any diverging map.
    scale : float, default=None
        Common factor ``S`` for joint normalisation (see :func:`heatmap_grid`).
    shape : tuple, default=None
        Reshape flat relevance (and image) to this 2-D shape.
    channel_axis : int, default=-1
        Channel axis of 3-D relevance / images.
    overlay_alpha : float, default=0.7
        Maximal opacity of the overlay.
    title : str, default=None
        Axes title.
    colorbar : bool, default=False
        Add a colour bar showing the normalised range [-1, 1].

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import heatmap
    >>> ax = heatmap(np.random.RandomState(0).randn(8, 8), cmap="coldhot", title="R")
    >>> ax.get_title()
    'R'
    """
    r = _to_map(relevance, shape, channel_axis)
    s = np.abs(r).max() if scale is None else float(scale)
    if not np.isfinite(s) or s < 0:
        raise ValueError(f"scale must be a finite non-negative number, got {scale!r}")
    rn = np.clip(r / s, -1.0, 1.0) if s > 0 else np.zeros_like(r)
    ax = _new_ax(ax)
    cm = _cmap(cmap)
    if image is None:
        im = ax.imshow(rn, cmap=cm, vmin=-1.0, vmax=1.0, interpolation="nearest")
    else:
        img = _finite(image, "image")
        if shape is not None:
            img = img.reshape(shape if img.size == int(np.prod(shape)) else tuple(shape) + (-1,))
        if img.ndim == 1:
            img = img.reshape(r.shape)
        if img.ndim == 3:
            img = img.mean(axis=channel_axis)
        if img.shape != r.shape:
            raise ValueError(f"image has shape {img.shape} but the relevance map has shape {r.shape}")
        ax.imshow(img, cmap="gray", interpolation="nearest")
        im = ax.imshow(rn, cmap=cm, vmin=-1.0, vmax=1.0, interpolation="nearest",
                       alpha=np.clip(np.abs(rn), 0.0, 1.0) * overlay_alpha)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def heatmap_grid(relevances, images=None, *, normalize="map", ncols=None, titles=None, cmap="seismic",
                 shape=None, channel_axis=-1, figsize=None):
    """Draw several relevance maps, normalised per map or jointly (Fig. 2.7).

    Parameters
    ----------
    relevances : array-like of shape (n_maps, ...)
        Stack of maps.
    images : array-like of shape (n_maps, ...), default=None
        Inputs to overlay.
    normalize : {"map", "joint"}, default="map"
        Eq. (2.62) with one ``S`` per map, or one ``S`` over all maps (keeps the
        relative magnitude of the evidence, e.g. across target classes).
    ncols : int, default=None
        Columns of the grid (default: up to 8).
    titles : list of str, default=None
        One title per map.
    cmap : str or Colormap, default="seismic"
    shape : tuple, default=None
        Shape of each map when the maps are flat vectors.
    channel_axis : int, default=-1
        Channel axis of each map (3-D maps are summed over channels).
    figsize : tuple, default=None

    Returns
    -------
    fig : matplotlib Figure

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import heatmap_grid
    >>> fig = heatmap_grid(np.random.RandomState(0).randn(3, 8, 8), normalize="joint")
    >>> len(fig.axes)
    3
    """
    if normalize not in ("map", "joint"):
        raise ValueError(f"normalize must be 'map' or 'joint', got {normalize!r}")
    maps = [_to_map(r, shape, channel_axis) for r in _finite(relevances, "relevances")]
    if not maps:
        raise ValueError("relevances is empty")
    if images is not None and len(images) != len(maps):
        raise ValueError(f"got {len(images)} images for {len(maps)} relevance maps")
    if titles is not None and len(titles) != len(maps):
        raise ValueError(f"got {len(titles)} titles for {len(maps)} relevance maps")
    joint = max(float(np.abs(m).max()) for m in maps) if normalize == "joint" else None
    ncols = min(len(maps), 8) if ncols is None else int(ncols)
    nrows = -(-len(maps) // ncols)
    fig = Figure(figsize=figsize or (1.8 * ncols, 1.9 * nrows))
    for i, m in enumerate(maps):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        heatmap(m, None if images is None else images[i], ax=ax, cmap=cmap, scale=joint, shape=shape,
                channel_axis=channel_axis, title=None if titles is None else titles[i])
    return fig


def plot_perturbation_curves(curves, *, aopc=None, ax=None, xlabel="perturbation steps",
                             ylabel="f(x) after perturbation", title=None, relative=False):
    """Plot perturbation curves (MoRF, LeRF, random) with their AOPC in the legend.

    Parameters
    ----------
    curves : dict of str -> array-like
        Name (e.g. ``"LRP (MoRF)"``) to a curve of model outputs ``f(x^(k))``,
        k = 0..L (Eq. (3.6)), either already averaged (shape (L+1,)) or per
        sample (shape (n_samples, L+1); averaged here).
    aopc : dict of str -> float, default=None
        AOPC per curve to show in the legend; computed by Eq. (3.7) from the mean
        curve when missing.
    ax : matplotlib Axes, default=None
    xlabel, ylabel, title : str
    relative : bool, default=False
        Plot ``f(x^(0)) - f(x^(k))`` (the quantity averaged by AOPC) instead of ``f``.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import plot_perturbation_curves
    >>> ax = plot_perturbation_curves({"LRP": [1.0, 0.2, 0.0], "random": [1.0, 0.9, 0.8]})
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['LRP (AOPC 0.600)', 'random (AOPC 0.100)']
    """
    if not isinstance(curves, dict) or not curves:
        raise ValueError("curves must be a non-empty dict of name -> curve")
    aopc = {} if aopc is None else dict(aopc)
    ax = _new_ax(ax, figsize=(5, 3.5))
    for name, curve in curves.items():
        c = _finite(curve, f"curve {name!r}")
        if c.ndim == 2:
            c = c.mean(axis=0)
        if c.ndim != 1 or c.size < 1:
            raise ValueError(f"curve {name!r} must have shape (L+1,) or (n_samples, L+1), got {np.shape(curve)}")
        score = aopc.get(name, aopc_from_curves(c))
        y = c[0] - c if relative else c
        ax.plot(np.arange(c.size), y, marker="o" if c.size <= 30 else None, ms=3,
                label=f"{name} (AOPC {float(score):.3f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("f(x⁽⁰⁾) - f(x⁽ᵏ⁾)" if relative and ylabel == "f(x) after perturbation" else ylabel)
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def _eigengap_k(eigenvalues, max_k):
    """Number of clusters by the largest relative eigengap (lambda_{k+1}-lambda_k)/lambda_{k+1}."""
    ev = np.asarray(eigenvalues, dtype=float)[: max_k + 1]
    if ev.size < 2:
        return 1
    gaps = np.diff(ev) / np.maximum(ev[1:], np.finfo(float).tiny)
    return int(np.argmax(gaps)) + 1


def _spectrum_input(eigenvalues, n_clusters):
    """Accept an eigenvalue array or a fitted SpRAy (``eigenvalues_``, ``n_clusters_``)."""
    if hasattr(eigenvalues, "eigenvalues_"):
        if n_clusters is None:
            n_clusters = getattr(eigenvalues, "n_clusters_", None)
        eigenvalues = eigenvalues.eigenvalues_
    ev = _finite(eigenvalues, "eigenvalues")
    if ev.ndim != 1 or ev.size < 1:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array, got shape {ev.shape}")
    return np.sort(ev), n_clusters


def plot_spectrum(eigenvalues, *, n_clusters=None, n_eigenvalues=20, ax=None, title=None):
    """Plot the smallest eigenvalues of a graph Laplacian with the eigengap marked (Fig. 6.3).

    Parameters
    ----------
    eigenvalues : array-like of shape (n,) or fitted SpRAy
        Laplacian eigenvalues (sorted here); a fitted :class:`sklrp.SpRAy` is
        read through its ``eigenvalues_`` and ``n_clusters_``.
    n_clusters : int, default=None
        The number of clusters ``k``: the gap between ``lambda_k`` and
        ``lambda_{k+1}`` is marked. None chooses the largest relative gap.
    n_eigenvalues : int, default=20
        How many eigenvalues to show.
    ax : matplotlib Axes, default=None
    title : str, default=None

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import plot_spectrum
    >>> ax = plot_spectrum(np.r_[0, 0, 0, np.linspace(0.5, 0.9, 10)])
    >>> ax.get_legend().get_texts()[1].get_text()
    'eigengap: k = 3'
    """
    ev, k = _spectrum_input(eigenvalues, n_clusters)
    ev = ev[: int(n_eigenvalues)]
    if k is None:
        k = _eigengap_k(ev, min(len(ev) - 1, 10))
    ax = _new_ax(ax, figsize=(5, 3.2))
    idx = np.arange(1, ev.size + 1)
    ax.plot(idx, ev, "o", color="tab:blue", label="λ_i of L_sym")
    if 1 <= k < ev.size:
        ax.axvspan(k + 0.1, k + 0.9, color="tab:red", alpha=0.25, label=f"eigengap: k = {k}")
        ax.annotate("", xy=(k + 0.5, ev[k]), xytext=(k + 0.5, ev[k - 1]),
                    arrowprops=dict(arrowstyle="<->", color="tab:red"))
    ax.set_xlabel("i")
    ax.set_ylabel("eigenvalue λ_i")
    ax.set_xticks(idx[:: max(1, ev.size // 10)])
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(alpha=0.3)
    return ax


def plot_embedding(X, labels=None, *, thumbnails=None, n_thumbnails=12, method="tsne", ax=None,
                   title=None, cmap="seismic", thumbnail_zoom=None, random_state=0):
    """Scatter a 2-D embedding coloured by cluster, with relevance-map thumbnails (Fig. 6.4).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_dims)
        Points to embed (e.g. the flattened relevance maps or SpRAy's
        ``embedding_``); used directly when ``n_dims == 2``.
    labels : array-like of shape (n_samples,), default=None
        Cluster labels (e.g. ``SpRAy.labels_``) used for colours.
    thumbnails : array-like of shape (n_samples, H, W[, C]), default=None
        Relevance maps drawn as small images at a spread-out subset of the points,
        with a border in the cluster's colour.
    n_thumbnails : int, default=12
        How many thumbnails to draw.
    method : {"tsne", "pca"}, default="tsne"
        2-D embedding for ``n_dims > 2``: t-SNE (as in the thesis) or PCA.
    ax : matplotlib Axes, default=None
    title : str, default=None
    cmap : str or Colormap, default="seismic"
        Colour map of the thumbnails.
    thumbnail_zoom : float, default=None
        Zoom of the thumbnails (default: about 28 pixels on screen).
    random_state : int, default=0
        Seed of t-SNE and of the thumbnail choice.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import plot_embedding
    >>> X = np.random.RandomState(0).randn(30, 5)
    >>> ax = plot_embedding(X, labels=(X[:, 0] > 0).astype(int), method="pca")
    >>> len(ax.collections)
    2
    """
    X = _finite(X, "X")
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"X must have shape (n_samples >= 2, n_dims), got {X.shape}")
    n = X.shape[0]
    labels = np.zeros(n, dtype=int) if labels is None else np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if X.shape[1] == 2:
        Y = X
    elif method == "tsne":
        from sklearn.manifold import TSNE

        Y = TSNE(n_components=2, perplexity=min(30.0, max(2.0, (n - 1) / 3.0)), init="pca",
                 random_state=random_state).fit_transform(X)
    elif method == "pca":
        from sklearn.decomposition import PCA

        Y = PCA(n_components=2, random_state=random_state).fit_transform(X)
    else:
        raise ValueError(f"method must be 'tsne' or 'pca', got {method!r}")
    ax = _new_ax(ax, figsize=(5.5, 5))
    import matplotlib

    colors = matplotlib.colormaps["tab10"]
    uniq = list(np.unique(labels))
    for i, lab in enumerate(uniq):
        sel = labels == lab
        ax.scatter(Y[sel, 0], Y[sel, 1], s=14, color=colors(i % 10), label=f"cluster {lab} (n={sel.sum()})")
    if thumbnails is not None:
        thumbs = _finite(thumbnails, "thumbnails")
        if len(thumbs) != n:
            raise ValueError(f"got {len(thumbs)} thumbnails for {n} points")
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage

        rng = np.random.RandomState(random_state)
        # spread thumbnails over clusters: take points round-robin from each cluster
        order = [list(rng.permutation(np.flatnonzero(labels == lab))) for lab in uniq]
        picks = []
        while len(picks) < n_thumbnails and any(order):
            for o in order:
                if o and len(picks) < n_thumbnails:
                    picks.append(o.pop(0))
        for j in picks:
            rgb = render_heatmap(thumbs[j], cmap=cmap)
            zoom = thumbnail_zoom or 28.0 / max(rgb.shape[:2])
            box = AnnotationBbox(OffsetImage(rgb, zoom=zoom), Y[j], frameon=True, pad=0.1,
                                 bboxprops=dict(edgecolor=colors(uniq.index(labels[j]) % 10), lw=2))
            ax.add_artist(box)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize="small", loc="best")
    return ax


def plot_class_spectra(spectra, *, n_eigenvalues=5, fig=None, title=None, highlight=None):
    """Bar charts of the smallest eigenvalues per class, ordered by ``lambda_2`` (Fig. 6.5).

    Classes whose relevance maps form several well-separated clusters have small
    ``lambda_2, lambda_3, ...``; they come first and are the candidates for a
    Clever-Hans strategy.

    Parameters
    ----------
    spectra : dict of label -> array-like
        Sorted Laplacian eigenvalues per class (e.g. from ``sklrp.spray_spectra``
        or ``SpRAy(...).fit(R_k).eigenvalues_``).
    n_eigenvalues : int, default=5
        Number of eigenvalues per class.
    fig : matplotlib Figure, default=None
    title : str, default=None
    highlight : iterable of labels, default=None
        Classes to mark (e.g. flagged by the audit); their tick labels are red.

    Returns
    -------
    fig : matplotlib Figure

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.plotting import plot_class_spectra
    >>> fig = plot_class_spectra({"a": [0, .5, .6, .7, .8], "b": [0, 0, .6, .7, .8]})
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['b', 'a']
    """
    if not isinstance(spectra, dict) or not spectra:
        raise ValueError("spectra must be a non-empty dict of class label -> eigenvalues")
    k = int(n_eigenvalues)
    table = {}
    for label, ev in spectra.items():
        ev = np.sort(_finite(ev, f"eigenvalues of class {label!r}").ravel())[:k]
        table[label] = np.pad(ev, (0, k - ev.size), constant_values=np.nan)
    order = sorted(table, key=lambda c: (np.nan_to_num(table[c][1], nan=np.inf) if k > 1 else 0, str(c)))
    fig = fig or Figure(figsize=(max(4.0, 0.6 * len(order) + 1.5), 3.2))
    ax = fig.add_subplot()
    width = 0.8 / k
    x = np.arange(len(order))
    import matplotlib

    cm = matplotlib.colormaps["viridis"]
    for i in range(k):
        ax.bar(x + (i - (k - 1) / 2) * width, [table[c][i] for c in order], width, color=cm(i / max(1, k - 1)),
               label=f"λ{i + 1}")
    ax.set_xticks(x)
    ax.set_xticklabels([str(c) for c in order])
    marked = set() if highlight is None else {str(h) for h in highlight}
    for tick in ax.get_xticklabels():
        if tick.get_text() in marked:
            tick.set_color("tab:red")
            tick.set_fontweight("bold")
    ax.set_xlabel("class (ordered by λ2)")
    ax.set_ylabel("eigenvalue")
    ax.legend(fontsize="x-small", ncol=min(k, 5))
    if title is not None:
        ax.set_title(title)
    return fig


def highlight_text(tokens, relevance, *, cmap="seismic", scale=None, title=None):
    """Render tokens as HTML with their relevance as background colour.

    Parameters
    ----------
    tokens : sequence of str
        The tokens (words) of one document, in order.
    relevance : array-like of shape (n_tokens,)
        Relevance per token (e.g. the relevance of each token's Bag-of-Words
        dimension gathered per occurrence).
    cmap : str or Colormap, default="seismic"
    scale : float, default=None
        Eq. (2.62) factor ``S``; None uses ``max |R|`` of this document.
    title : str, default=None
        Optional heading.

    Returns
    -------
    html : str
        A ``<div>`` with one ``<span>`` per token; each span carries its relevance
        in a ``title`` tooltip. Tokens are HTML-escaped.

    Examples
    --------
    >>> from sklrp.plotting import highlight_text
    >>> s = highlight_text(["good", "<b>"], [1.0, -0.5])
    >>> "&lt;b&gt;" in s and s.count("<span") == 2
    True
    """
    tokens = [str(t) for t in tokens]
    r = _finite(relevance, "relevance").ravel()
    if r.size != len(tokens):
        raise ValueError(f"got {r.size} relevance values for {len(tokens)} tokens")
    if scale is None:
        s = float(np.abs(r).max()) if r.size else 0.0
    elif isinstance(scale, numbers.Real):
        s = float(scale)
    else:
        s = -1.0
    if not np.isfinite(s) or s < 0:
        raise ValueError(f"scale must be a finite non-negative number, got {scale!r}")
    rn = np.clip(r / s, -1, 1) if s > 0 else np.zeros_like(r)
    cm = _cmap(cmap)
    spans = []
    for tok, v, raw in zip(tokens, rn, r):
        rgb = cm((v + 1) / 2)[:3]
        color = "#%02x%02x%02x" % tuple(int(round(255 * c)) for c in rgb)
        # dark backgrounds (COLDHOT near 0, saturated seismic ends) need white text
        lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        fg = "#000" if lum > 0.5 else "#fff"
        spans.append(f'<span style="background:{color};color:{fg};padding:1px 2px;border-radius:2px" '
                     f'title="R = {raw:.4g}">{html.escape(tok)}</span>')
    head = f"<h4>{html.escape(title)}</h4>" if title else ""
    return f'<div class="sklrp-text" style="line-height:1.9">{head}{" ".join(spans)}</div>'
