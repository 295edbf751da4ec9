"""The audit's flagging rule: a scan for a subgroup of a class with its own localized relevance.

SpRAy (thesis Chapter 6) looks for *prediction strategies*: groups of relevance maps of one
class that differ from the rest. The thesis ranks classes by the eigenvalue spectrum of their
maps (Fig. 6.5) and inspects the clusters by eye. Measured on planted shortcuts (see
``benchmarks/bench_audit_recall.py`` and ``doc/audit.rst``), the spectrum alone ranks the wrong
classes first: a tag that a model relies on concentrates relevance on a few pixels of some maps,
while distances between whole maps are dominated by everything else. This module tests the
pattern a Clever-Hans cue leaves instead (going beyond the thesis; the reason is the measured
failure above):

* a *subgroup* ("carriers", at least ``min_fraction`` of the class) puts a large share of its
  positive relevance on one region (a window, a border strip, a frame, or -- for cues spread
  over the image such as a background level -- everywhere outside each map's own most relevant
  tenth of pixels, the ``"spread"`` region),
* the rest of the class does not, and neither do the maps of the other classes, and
* carriers and the rest are *separated*, not the two ends of a continuum.

For a region ``w`` let ``f_i(w)`` be the share of map ``i``'s positive relevance inside ``w``
(for the spread region: outside map ``i``'s own top tenth of cells, once as a share and once as
an amount in units of the model's median map, since a background cue *adds* evidence off the
object, which a share dilutes; this is in the spirit of the context ratio of Eq. (4.11), which
needs object masks that an audit does not have).
Sorting the maps of class ``c`` by ``f(w)`` and calling the top ``k`` the carriers ``A`` and the
rest ``B`` (other classes: ``O``), the **separation index** is::

    s(w, k) = min( (a_10 - b_90) / (a_90 - b_10),  (a_10 - o_90) / (a_90 - o_10) )

with ``x_q`` the q-th percentile of ``f(w)`` in the group: the gap between the weakest tenth of
the carriers and the strongest tenth of the others, as a fraction of the whole range. It is near
1 for a tag (every carrier far above everyone else), near 0 or negative for a continuum. The
class score ``S_c`` is the largest ``s(w, k)`` over regions and ``k`` with at least
``min_share`` of the carriers' relevance in ``w`` (a region holding 1 % of the relevance is not
a strategy).

``S_c`` depends on the model and the explainer (noisy root-point Taylor maps of RBF SVMs score
lower than exact kernel decompositions), so it is compared with the **other classes of the same
model**, as a new draw from their distribution: with ``m`` and ``sd`` the mean and the spread of
the ``n`` other classes' scores, ``sd`` pooled with ``prior_weight`` pseudo-classes at spread
``prior_sd`` (with two or three classes the prior dominates),
``z_c = (S_c - m) / (sd * sqrt(1 + 1/n))`` and ``p_c`` is its upper tail under Student's t with
``prior_weight + n - 1`` degrees of freedom (the predictive distribution of one more class; a
normal tail that ignores how little ``m`` and ``sd`` are known from a few classes flagged twice
as many clean classes as ``alpha`` in the benchmark). A class is *flagged* when ``p_c <= alpha``.
``p_c`` answers "how unusual is this class's best subgroup among this model's classes"; its
calibration (the false-flag rate on clean classes at ``alpha``) is measured by the benchmark and
stated in ``doc/audit.rst``. A cue present in *every* image of a class is no subgroup and is not
found by this scan (use object masks and the context ratio, Eq. (4.11), for that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Region", "ClassFinding", "shortcut_scan", "feature_scan", "candidate_regions", "reliance_probe"]


@dataclass
class Region:
    """A candidate region, on the full-resolution image grid."""

    kind: str  # "window", "strip", "frame", "spread" (the whole image; see _spread)
    rows: tuple  # (first, last) inclusive, full resolution
    cols: tuple
    mask: np.ndarray = field(repr=False)
    text: str = ""
    unit: str = "of their positive relevance"  # what the shares f_i(w) are fractions of


@dataclass
class ClassFinding:
    """The best subgroup of one class and how unusual it is."""

    label: object
    n_maps: int
    score: float  # separation index S_c
    z: float = float("nan")
    p_value: float = float("nan")
    flagged: bool = False
    rank: int = 0
    region: Region | None = None
    carriers: np.ndarray | None = field(default=None, repr=False)  # indices into the class's maps
    carrier_share: tuple = (float("nan"), float("nan"))  # (a_10, a_90)
    rest_share_90: float = float("nan")  # b_90
    others_share_90: float = float("nan")  # o_90
    n_excluded: int = 0  # maps without positive relevance
    threshold: float = float("nan")  # carriers put more than this share on the region

    @property
    def n_carriers(self):
        return 0 if self.carriers is None else int(len(self.carriers))


def _pool_factor(shape, max_grid):
    return max(1, int(math.ceil(max(shape) / float(max_grid))))


def _pool(maps, f):
    """Sum-pool (n, H, W) maps by an integer factor (zero padding at the bottom/right edge)."""
    if f == 1:
        return maps
    n, H, W = maps.shape
    H2, W2 = -(-H // f) * f, -(-W // f) * f
    padded = np.zeros((n, H2, W2))
    padded[:, :H, :W] = maps
    return padded.reshape(n, H2 // f, f, W2 // f, f).sum(axis=(2, 4))


def _place(r0, r1, c0, c1, H, W):
    vert = "top" if r1 < H / 3 else "bottom" if r0 >= 2 * H / 3 else "middle"
    horiz = "left" if c1 < W / 3 else "right" if c0 >= 2 * W / 3 else "centre"
    if vert == "middle" and horiz == "centre":
        return "centre"
    if vert == "middle":
        return f"{horiz} edge" if c0 == 0 or c1 == W - 1 else f"{horiz} middle"
    if horiz == "centre":
        return f"{vert} edge" if r0 == 0 or r1 == H - 1 else f"{vert} middle"
    corner = (r0 == 0 or r1 == H - 1) and (c0 == 0 or c1 == W - 1)
    return f"{vert}-{horiz} corner" if corner else f"{vert}-{horiz}"


def candidate_regions(image_shape, *, max_grid=32, window_sizes=(1, 2, 3, 4)):
    """The regions the scan tries, and the pooling factor of the grid they live on.

    Square windows of ``window_sizes`` cells at every position of a grid of at most
    ``max_grid`` cells per side (the image sum-pooled by an integer factor), border strips one
    and two cells wide (each side, left+right, top+bottom) and frames one and two cells wide.

    Returns
    -------
    regions : list of Region
        Masks at full resolution.
    cells : ndarray of shape (n_regions, h, w), dtype bool
        The same regions on the pooled grid.
    factor : int
        Pooling factor.

    Examples
    --------
    >>> from sklrp.audit.verdict import candidate_regions
    >>> regions, cells, factor = candidate_regions((8, 8), window_sizes=(2,))
    >>> factor, cells.shape, regions[0].text
    (1, (63, 8, 8), 'the 2x2 window at rows 0-1, cols 0-1 (top-left corner)')
    """
    H, W = int(image_shape[0]), int(image_shape[1])
    f = _pool_factor((H, W), max_grid)
    h, w = -(-H // f), -(-W // f)
    regions, cells = [], []

    def add(kind, cell_mask, text):
        rr, cc = np.nonzero(cell_mask)
        full = np.kron(cell_mask, np.ones((f, f), dtype=bool))[:H, :W]
        r0, r1, c0, c1 = int(rr.min()) * f, min(H, (int(rr.max()) + 1) * f) - 1, int(cc.min()) * f, \
            min(W, (int(cc.max()) + 1) * f) - 1
        regions.append(Region(kind, (r0, r1), (c0, c1), full, text.format(r0=r0, r1=r1, c0=c0, c1=c1)))
        cells.append(cell_mask)

    for s in window_sizes:
        if s > min(h, w) // 2 and s > 1:
            continue
        for r in range(h - s + 1):
            for c in range(w - s + 1):
                m = np.zeros((h, w), dtype=bool)
                m[r:r + s, c:c + s] = True
                side = s * f
                r0, r1 = r * f, min(H, (r + s) * f) - 1
                c0, c1 = c * f, min(W, (c + s) * f) - 1
                place = _place(r0, r1, c0, c1, H, W)
                if side == 1:
                    add("window", m, f"the pixel at row {{r0}}, col {{c0}} ({place})")
                else:
                    add("window", m, f"the {side}x{side} window at rows {{r0}}-{{r1}}, cols {{c0}}-{{c1}} ({place})")
    for b in (1, 2):
        if 2 * b >= min(h, w):
            continue
        px = b * f
        sides = {"top": (slice(0, b), slice(None)), "bottom": (slice(h - b, h), slice(None)),
                 "left": (slice(None), slice(0, b)), "right": (slice(None), slice(w - b, w))}
        for name, sl in sides.items():
            m = np.zeros((h, w), dtype=bool)
            m[sl] = True
            add("strip", m, f"the {name} border strip ({px} px wide)")
        m = np.zeros((h, w), dtype=bool)
        m[:, :b] = m[:, w - b:] = True
        add("strip", m, f"the left and right border strips ({px} px wide)")
        m = np.zeros((h, w), dtype=bool)
        m[:b] = m[h - b:] = True
        add("strip", m, f"the top and bottom border strips ({px} px wide)")
        m = np.zeros((h, w), dtype=bool)
        m[:b] = m[h - b:] = True
        m[:, :b] = m[:, w - b:] = True
        add("frame", m, f"a frame along the image border ({px} px wide)")
    return regions, np.array(cells), f


def _region_shares(P, cells):
    """Shares f_i(w) = sum of P_i over region w, for all maps and regions: (n, n_regions)."""
    n = P.shape[0]
    return P.reshape(n, -1) @ cells.reshape(len(cells), -1).T.astype(float)


def _quantile_sorted(S, lo, hi, q):
    """q-th quantile (nearest rank) of rows lo:hi of S, which is sorted in *descending* order."""
    m = hi - lo
    return S[lo + min(m - 1, max(0, int(round((1.0 - q) * (m - 1)))))]


def _separation(a, b, o, q):
    """Separation index of carriers ``a`` from the rest ``b`` and from the other classes ``o`` (1-D shares)."""
    a_lo, a_hi = np.quantile(a, q), np.quantile(a, 1 - q)
    b_lo, b_hi = np.quantile(b, q), np.quantile(b, 1 - q)
    o_lo, o_hi = np.quantile(o, q), np.quantile(o, 1 - q)
    s = min((a_lo - b_hi) / max(a_hi - b_lo, 1e-12), (a_lo - o_hi) / max(a_hi - o_lo, 1e-12))
    return float(s), (float(a_lo), float(a_hi), float(b_hi), float(o_hi))


def _best_subgroup(Fc, Fo, kmin, q, min_share, n_candidates=20):
    """The most separated subgroup: (score, region, carriers, (a_lo, a_hi, b_hi, o_hi), threshold) or None.

    A scan over regions and splits ``k`` in ``[kmin, n - kmin]`` of the maps sorted by their share
    finds candidate regions (nearest-rank quantiles, vectorised over regions); for the best
    ``n_candidates`` of them the carriers are the maps above the midpoint of the gap, and the
    separation index is recomputed for exactly these groups (both at least ``kmin`` maps).
    """
    n = Fc.shape[0]
    S = -np.sort(-Fc, axis=0)
    o_lo, o_hi = np.quantile(Fo, q, axis=0), np.quantile(Fo, 1 - q, axis=0)
    best_s = np.full(Fc.shape[1], -np.inf)
    for k in range(kmin, n - kmin + 1):
        a_lo, a_hi = _quantile_sorted(S, 0, k, q), _quantile_sorted(S, 0, k, 1 - q)
        b_lo, b_hi = _quantile_sorted(S, k, n, q), _quantile_sorted(S, k, n, 1 - q)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_b = (a_lo - b_hi) / np.maximum(a_hi - b_lo, 1e-12)
            s_o = (a_lo - o_hi) / np.maximum(a_hi - o_lo, 1e-12)
        s = np.where(a_lo >= min_share, np.minimum(s_b, s_o), -np.inf)
        best_s = np.maximum(best_s, s)
    best = None
    for r in np.argsort(-best_s, kind="stable")[:n_candidates]:
        if not np.isfinite(best_s[r]):
            break
        f = Fc[:, r]
        top = np.sort(f)[::-1]
        # the split with the widest gap between neighbours among the admissible k
        ks = np.arange(kmin, n - kmin + 1)
        k = int(ks[np.argmax(top[ks - 1] - top[ks])])
        threshold = 0.5 * (top[k - 1] + top[k])
        carriers = np.flatnonzero(f > threshold)
        if not kmin <= carriers.size <= n - kmin:
            continue
        rest = np.setdiff1d(np.arange(n), carriers)
        score, q4 = _separation(f[carriers], f[rest], Fo[:, r], q)
        if q4[0] < min_share:
            continue
        if best is None or score > best[0]:
            best = (score, int(r), carriers, q4, float(threshold))
    return best


def _spread(P, top=0.1):
    """Share of each (normalised) map's relevance outside its ``top`` fraction of most relevant cells."""
    flat = P.reshape(len(P), -1)
    k = max(1, int(math.ceil(top * flat.shape[1])))
    return 1.0 - np.sort(flat, axis=1)[:, flat.shape[1] - k:].sum(axis=1)


def _predictive_t(score, others, prior_sd, prior_weight):
    """Student-t predictive statistic and upper-tail p of ``score`` among the other classes' scores.

    If the ``n`` other scores and this one were draws from one normal distribution,
    ``(score - mean) / (sd * sqrt(1 + 1/n))`` would follow Student's t with the degrees of freedom
    of ``sd``. ``sd`` pools the others' spread with ``prior_weight`` pseudo-classes at spread
    ``prior_sd`` (so two or three classes still give a finite, conservative test).
    """
    from scipy.stats import t as student_t

    n = others.size
    mean = float(np.mean(others))
    df = prior_weight + n - 1.0
    sd = math.sqrt((prior_weight * prior_sd ** 2 + float(np.sum((others - mean) ** 2))) / df)
    stat = (score - mean) / (sd * math.sqrt(1.0 + 1.0 / n))
    return float(stat), float(student_t.sf(stat, df))


def shortcut_scan(relevance, groups, *, min_fraction=0.2, min_maps=5, min_share=0.03, quantile=0.1,
                  max_grid=32, window_sizes=(1, 2, 3, 4), spread=True, prior_sd=0.08, prior_weight=4.0, alpha=0.05):
    """Search every class for a subgroup whose relevance sits on its own region, and rank classes.

    Parameters
    ----------
    relevance : ndarray of shape (n_samples, H, W) or (n_samples, H, W, C)
        Relevance maps (channels last are summed).
    groups : ndarray of shape (n_samples,)
        Class of each map (the explained class).
    min_fraction : float, default=0.2
        Smallest subgroup, as a fraction of the class's maps (and at least ``min_maps`` maps);
        so does the rest of the class.
    min_maps : int, default=5
    min_share : float, default=0.03
        Least share of their positive relevance the carriers must put on the region.
    quantile : float, default=0.1
        The ``q`` of the separation index (10th / 90th percentiles).
    max_grid : int, default=32
        Maps larger than this are sum-pooled by an integer factor first.
    window_sizes : tuple of int, default=(1, 2, 3, 4)
        Window sides (in cells of the pooled grid).
    spread : bool, default=True
        Also try the ``"spread"`` region: each map's positive relevance outside its own most
        relevant tenth of cells (a cue spread over the image, such as a background level), as a
        share of the map's positive relevance and as an amount in units of the median map's
        (``Region.unit`` says which).
    prior_sd, prior_weight : float, default=0.08, 4.0
        Prior spread of clean classes' scores and its weight (in classes); see the module notes
        for the Student-t test they enter.
    alpha : float, default=0.05
        Flag classes with ``p_value <= alpha``.

    Returns
    -------
    findings : list of ClassFinding
        One per class with at least ``2 * max(min_maps, 1)`` maps, most suspicious first
        (``rank`` 1). ``carriers`` index the class's maps in the order they appear in
        ``relevance``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.audit import shortcut_scan
    >>> rng = np.random.default_rng(0)
    >>> R = rng.random((90, 8, 8)); y = np.repeat([0, 1, 2], 30)
    >>> R[:15, 0, 7] += 20.0  # half of class 0 relies on the top-right pixel
    >>> findings = shortcut_scan(R, y)
    >>> f = findings[0]
    >>> f.label, f.flagged, f.n_carriers, f.region.text
    (0, True, 15, 'the pixel at row 0, col 7 (top-right corner)')
    """
    R = np.asarray(relevance, dtype=float)
    if R.ndim == 4:
        R = R.sum(axis=-1)
    if R.ndim != 3:
        raise ValueError(f"relevance must have shape (n, H, W) or (n, H, W, C), got {R.shape}")
    groups = np.asarray(groups)
    if groups.shape != (R.shape[0],):
        raise ValueError(f"groups must have shape ({R.shape[0]},), got {groups.shape}")
    if not np.all(np.isfinite(R)):
        raise ValueError("relevance contains NaN or infinite values")
    regions, cells, f = candidate_regions(R.shape[1:], max_grid=max_grid, window_sizes=window_sizes)
    P = _pool(np.clip(R, 0.0, None), f)
    total = P.reshape(len(P), -1).sum(axis=1)
    usable = total > 0
    P = P / np.where(usable, total, 1.0)[:, None, None]
    F = _region_shares(P, cells)
    if spread:
        # two more "regions": relevance outside each map's own top tenth of cells, as a share of the
        # map's relevance and as an amount in units of the model's median map (a background cue
        # adds evidence there, which a share dilutes)
        outside = _spread(P)
        typical = float(np.median(total[usable])) if usable.any() else 1.0
        F = np.column_stack([F, outside, outside * total / typical])
        H, W = R.shape[1:]
        everywhere = np.ones((H, W), dtype=bool)
        text = "the pixels outside each map's most relevant tenth (relevance spread out)"
        regions = [*regions, Region("spread", (0, H - 1), (0, W - 1), everywhere, text),
                   Region("spread", (0, H - 1), (0, W - 1), everywhere, text,
                          unit="of the positive relevance of the model's median map")]
    labels = [c for c in np.unique(groups) if (usable & (groups == c)).sum() >= 2 * max(min_maps, 1)]
    findings = []
    for c in labels:
        in_c = np.flatnonzero(groups == c)
        keep = usable[in_c]
        Fc, Fo = F[in_c[keep]], F[usable & (groups != c)]
        n = Fc.shape[0]
        kmin = max(int(min_maps), int(math.ceil(min_fraction * n)))
        finding = ClassFinding(label=c.item() if hasattr(c, "item") else c, n_maps=int(len(in_c)), score=-1.0,
                               n_excluded=int((~keep).sum()))
        if Fo.shape[0] and 2 * kmin <= n:
            best = _best_subgroup(Fc, Fo, kmin, quantile, min_share)
            if best is not None:
                score, r, carriers, q4, threshold = best
                finding.score = score
                finding.region = regions[r]
                finding.carriers = np.flatnonzero(keep)[carriers]
                finding.threshold = threshold
                finding.carrier_share = (q4[0], q4[1])
                finding.rest_share_90, finding.others_share_90 = q4[2], q4[3]
        findings.append(finding)
    scores = np.array([fd.score for fd in findings])
    tested = np.array([fd.region is not None for fd in findings])  # -1 marks "nothing to test", no score
    for i, fd in enumerate(findings):
        others = scores[tested & (np.arange(len(findings)) != i)]
        if others.size == 0:
            continue
        fd.z, fd.p_value = _predictive_t(fd.score, others, prior_sd, prior_weight)
        fd.flagged = bool(fd.p_value <= alpha and fd.region is not None)
    findings.sort(key=lambda fd: (-fd.score, str(fd.label)))
    for i, fd in enumerate(findings):
        fd.rank = i + 1
    return findings


def feature_scan(relevance, groups, **kwargs):
    """:func:`shortcut_scan` for tabular relevance: every feature is a region of its own.

    A table has no neighbourhoods, so there are no windows, strips, frames or spread region:
    a subgroup of a class must put its relevance on one feature (e.g. a leaked identifier).
    Measured in ``benchmarks/bench_audit_tabular.py`` (see ``doc/audit.rst``).

    Parameters
    ----------
    relevance : ndarray of shape (n_samples, n_features)
    groups : ndarray of shape (n_samples,)
    **kwargs
        Passed to :func:`shortcut_scan` (``min_fraction``, ``alpha``, ...).

    Returns
    -------
    findings : list of ClassFinding
        As :func:`shortcut_scan`; ``region.cols[0]`` is the feature's column.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.audit import feature_scan
    >>> rng = np.random.default_rng(0)
    >>> R = rng.random((90, 6)); y = np.repeat([0, 1, 2], 30)
    >>> R[:15, 5] += 20.0  # half of class 0 relies on feature 5
    >>> top = feature_scan(R, y)[0]
    >>> top.label, top.region.cols[0], top.n_carriers
    (0, 5, 15)
    """
    R = np.asarray(relevance, dtype=float)
    if R.ndim != 2:
        raise ValueError(f"relevance must have shape (n_samples, n_features), got {R.shape}")
    return shortcut_scan(R.reshape(len(R), 1, -1), groups, max_grid=R.shape[1], window_sizes=(1,), spread=False,
                         **kwargs)


def reliance_probe(predict, images, labels, target, region_mask, patch, *, control_patch=None, mode="paste"):
    """Stamp a class's distinctive region onto other classes' images and count flipped predictions.

    The verification of thesis Section 6.3.1, made automatic: if a model relies on what the
    carriers show in ``region_mask``, pasting it into images of other classes moves their
    predictions to ``target``. ``control_patch`` (e.g. what the rest of the class shows there)
    is pasted the same way as a control: flips it causes are not due to the carriers' cue.

    A cue spread over the image (a background level; the ``"spread"`` region of
    :func:`shortcut_scan`) cannot be pasted without pasting the whole image. ``mode="add"``
    adds the *difference* ``patch - control_patch`` inside ``region_mask`` instead, so the
    other classes' images keep their own content and gain what sets the carriers apart.

    Parameters
    ----------
    predict : callable
        ``images -> predicted labels``.
    images : ndarray of shape (n, H, W)
    labels : ndarray of shape (n,)
        True (or predicted) labels; images of ``target`` are not used.
    target : label
    region_mask : ndarray of shape (H, W), dtype bool
    patch, control_patch : ndarray of shape (H, W)
        Pixel values pasted inside ``region_mask``.
    mode : {"paste", "add"}, default="paste"
        ``"add"`` adds ``patch - control_patch`` (required) inside the mask; there is then no
        separate control, and ``flips = stamped - before``.

    Returns
    -------
    result : dict
        ``n_images``, ``before`` (fraction predicted as ``target`` unchanged), ``stamped``,
        ``control`` (None without ``control_patch``) and ``flips`` = ``stamped - max(before,
        control)``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklrp.audit import reliance_probe
    >>> X = np.zeros((4, 3, 3)); y = np.array([0, 0, 1, 1]); mask = np.zeros((3, 3), bool); mask[0, 0] = True
    >>> predict = lambda Z: (Z[:, 0, 0] > 0.5).astype(int)  # "class 1" if the corner is bright
    >>> reliance_probe(predict, X, y, 1, mask, np.ones((3, 3)))["flips"]
    1.0
    """
    if mode not in ("paste", "add"):
        raise ValueError(f'mode must be "paste" or "add", got {mode!r}')
    if mode == "add" and control_patch is None:
        raise ValueError('mode="add" adds patch - control_patch; pass control_patch')
    images = np.asarray(images, dtype=float)
    labels = np.asarray(labels)
    other = images[labels != target]
    if other.shape[0] == 0:
        return {"n_images": 0, "before": None, "stamped": None, "control": None, "flips": None}

    def rate(Z):
        return float(np.mean(np.asarray(predict(Z)) == target))

    def stamp(p):
        Z = other.copy()
        Z[:, region_mask] = np.asarray(p, dtype=float)[region_mask]
        return Z

    before = rate(other)
    if mode == "add":
        Z = other.copy()
        Z[:, region_mask] += (np.asarray(patch, dtype=float) - np.asarray(control_patch, dtype=float))[region_mask]
        stamped = rate(Z)
        return {"n_images": int(other.shape[0]), "before": before, "stamped": stamped, "control": None,
                "flips": stamped - before}
    stamped = rate(stamp(patch))
    control = None if control_patch is None else rate(stamp(control_patch))
    base = before if control is None else max(before, control)
    return {"n_images": int(other.shape[0]), "before": before, "stamped": stamped, "control": control,
            "flips": stamped - base}
