"""Taylor decompositions of a kernel expansion at a root point (Eqs. (2.75)-(2.76)) and its exact path integral.

The explained output of every sample is one kernel expansion
``g(x) = sum_i c_i k(s_i, x) + b`` (:class:`Expansion`; for one-vs-one models the
target's signed combination of the pairwise decisions, for SVDD the outlierness).
:func:`decompose` finds a root point ``x~`` (``|g(x~)| <= root_tol``) on a segment from
``x`` towards a reference sample of the opposite sign (Section 2.3.1) and decomposes

* ``taylor="first_order"``: ``R_d = (x_d - x~_d) dg/dx_d(x~)`` (Eq. (2.76));
* ``taylor="exact"``: ``R_d = (x_d - x~_d) int_0^1 dg/dx_d(x~ + t (x - x~)) dt``, the integral
  form of the Taylor remainder, so that ``sum_d R_d = g(x) - g(x~)`` up to the quadrature
  error; Gauss-Legendre with ``8, 16, 32, ...`` nodes per sample (up to ``taylor_max_nodes``)
  until ``|g(x) - g(x~) - sum_d R_d| <= taylor_tol |g(x)|``. This goes beyond the thesis,
  which stops at the first order.

Both report ``g(x~)`` as the bias part (the score of the expansion point, ``|g(x~)| <= root_tol``
at a root) and ``g(x) - g(x~) - sum_d R_d`` as the head's remainder.
"""

from __future__ import annotations

import functools
import numbers
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..propagators import HeadRelevance

#: Values of ``LRPTransformer(taylor=...)``.
TAYLOR_MODES = ("exact", "first_order")
#: Values of ``LRPTransformer(taylor_reference=...)``: expand at a root point or at the training mean;
#: "auto" is the mean for the exact decomposition and a root point for the first-order one.
TAYLOR_REFERENCES = ("auto", "root", "mean")


def resolve_reference(config):
    """The expansion point of ``config``: ``"auto"`` means ``"mean"`` for ``taylor="exact"`` and
    ``"root"`` for ``taylor="first_order"`` (Eq. (2.76) is defined at a root point).

    The exact default is the mean because it measured better: on breast cancer, wine and digits
    (RBF SVC, four split seeds; ``benchmarks/bench_svm.py --vs-shap``) the exact decomposition
    at the mean ordered features at least as well as KernelSHAP on 2-3 of 3 data sets in every
    run, at a root point on 1 of 3, and took 3.7-11.9x ``decision_function`` instead of 48-172x
    (no root search).
    """
    if config.taylor_reference == "auto":
        return "mean" if config.taylor == "exact" else "root"
    return config.taylor_reference
#: A batch whose median ``|remainder| / |f(x)|`` exceeds this fraction raises a TaylorRemainderWarning.
REMAINDER_WARNING_FRACTION = 0.1
#: Largest accepted ``taylor_max_nodes`` (Gauss-Legendre nodes per sample).
MAX_NODES_LIMIT = 1024
_FIRST_NODES = 8
_FALLBACK_GRID = 32
# Largest (samples x candidates x support vectors) block of one temporary.
_CHUNK = 1 << 22
_MAX_ITER = 200


class RootPointWarning(UserWarning):
    """Some samples got no root point for their Taylor decomposition (Eq. (2.76)).

    Their relevance is taken relative to a fallback baseline whose score stays in
    ``bias_relevance``; ``extras["root_found"]`` is False for them.
    """


class TaylorRemainderWarning(UserWarning):
    """A batch's Taylor decomposition leaves a large share of ``f(x)`` unexplained.

    Raised when the median of ``|remainder| / |f(x)|`` over a batch exceeds
    :data:`REMAINDER_WARNING_FRACTION`; the message names the fix (``taylor="exact"``,
    or a larger ``taylor_max_nodes``).
    """


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def caller_outside_sklrp():
    """``stacklevel`` of the first caller outside the sklrp package, for ``warnings.warn`` called by our caller."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))


def check_settings(config):
    """Validate the Taylor settings of a ``RuleConfig``; ValueError naming the parameter."""
    if not (_is_real(config.root_tol) and config.root_tol > 0):
        raise ValueError(f"root_tol must be a positive finite number, got {config.root_tol!r}")
    if not (_is_int(config.n_root_candidates) and config.n_root_candidates >= 1):
        raise ValueError(f"n_root_candidates must be a positive integer, got {config.n_root_candidates!r}")
    if not isinstance(config.taylor, str) or config.taylor not in TAYLOR_MODES:
        raise ValueError(f"taylor must be one of {TAYLOR_MODES}, got {config.taylor!r}")
    if not isinstance(config.taylor_reference, str) or config.taylor_reference not in TAYLOR_REFERENCES:
        raise ValueError(f"taylor_reference must be one of {TAYLOR_REFERENCES}, got {config.taylor_reference!r}")
    if not (_is_real(config.taylor_tol) and 0 < config.taylor_tol < 1):
        raise ValueError(
            f"taylor_tol must be a finite number in (0, 1) (the completeness error allowed, relative to |f(x)|), "
            f"got {config.taylor_tol!r}"
        )
    if not (_is_int(config.taylor_max_nodes) and 1 <= config.taylor_max_nodes <= MAX_NODES_LIMIT):
        raise ValueError(
            f"taylor_max_nodes must be an integer in [1, {MAX_NODES_LIMIT}] (Gauss-Legendre nodes per sample), "
            f"got {config.taylor_max_nodes!r}"
        )


@dataclass
class Expansion:
    """``g_n(x) = sum_i coef[n, i] k(sv_i, x) + intercept[n]``: the explained output of each sample ``n``."""

    kernel: object
    sv: torch.Tensor  # (S, D)
    coef: torch.Tensor  # (n, S)
    intercept: torch.Tensor  # (n,)

    def __post_init__(self):
        self.sv_sq = (self.sv * self.sv).sum(1)

    def values(self, pts, rows):
        """``g_rows[j](pts[j])``; shape ``(m,)``."""
        out = []
        step = max(1, _CHUNK // max(1, self.sv.shape[0]))
        for lo in range(0, pts.shape[0], step):
            r = rows[lo:lo + step]
            out.append((self.kernel.matrix(pts[lo:lo + step], self.sv) * self.coef[r]).sum(1) + self.intercept[r])
        return torch.cat(out) if out else pts.new_zeros(0)

    def gradient(self, pts, rows):
        """``dg_rows[j]/dx`` at ``pts[j]``; shape ``(m, D)``."""
        out = []
        step = max(1, _CHUNK // max(1, self.sv.shape[0]))
        for lo in range(0, pts.shape[0], step):
            out.append(self.kernel.gradient(pts[lo:lo + step], self.sv, self.coef[rows[lo:lo + step]]))
        return torch.cat(out) if out else pts.new_zeros(pts.shape)


@dataclass
class Reference:
    """Reference samples for root-point candidates and their explained scores for the batch."""

    points: torch.Tensor  # (N, D)
    sq: torch.Tensor  # (N,)
    scores: torch.Tensor  # (n, N): g_n(reference_j)
    sv_products: torch.Tensor | None  # (N, S) <reference, support vector>, for uses_products kernels
    mean: torch.Tensor | None = None  # (D,): the training mean, the expansion point of taylor_reference="mean"


def decompose(expansion, x, g0, reference, config):
    """Relevance of ``g0 = g(x)`` by a Taylor decomposition at a root point (module docstring).

    With ``config.taylor_reference == "mean"`` the expansion point is the training mean
    instead (no root search; :func:`_decompose_at_mean`).

    Returns a :class:`~sklrp.propagators.HeadRelevance` with ``bias = g(x~)``,
    ``remainder = g(x) - g(x~) - sum_d R_d`` and extras ``root_point`` (the expansion point,
    ``(n, D)``), ``root_found`` (``|g(x~)| <= root_tol``) and ``quadrature_nodes`` (nodes
    used per sample, 0 for first order and samples on the boundary).
    """
    if resolve_reference(config) == "mean":
        return _decompose_at_mean(expansion, x, g0, reference.mean, config)
    tol = config.root_tol
    n, d = x.shape
    sign0 = torch.where(g0 >= 0, 1.0, -1.0).to(g0.dtype)
    g_ref = reference.scores
    x_sq = (x * x).sum(1)
    dist2 = x_sq[:, None] + reference.sq[None, :] - 2 * x @ reference.points.T
    _check_finite_distances(dist2, x, "the reference samples", "no root point (Eq. (2.76)) can be searched")
    dist2 = dist2.clamp(min=0)
    opposite = (g_ref * sign0[:, None] < 0) | (g_ref.abs() <= tol)
    dist2 = torch.where(opposite, dist2, torch.full_like(dist2, np.inf))
    k = min(config.n_root_candidates, dist2.shape[1])
    cand_d2, cand = torch.topk(dist2, k, dim=1, largest=False)
    has_cand = torch.isfinite(cand_d2)

    root = x.clone()
    at_boundary = g0.abs() <= tol  # already on the boundary: x~ = x
    found = at_boundary.clone()
    rows_per_chunk = max(1, _CHUNK // max(1, k * max(expansion.sv.shape[0], d)))
    todo = torch.nonzero(~found & has_cand.any(1)).squeeze(1)
    for lo in range(0, todo.numel(), rows_per_chunk):
        rows = todo[lo:lo + rows_per_chunk]
        t_best, ok, d_best = _search_roots(expansion, reference, x, rows, cand[rows], has_cand[rows],
                                           g_ref[rows], g0[rows], tol)
        root[rows] = torch.where(ok[:, None], x[rows] + t_best[:, None] * d_best, x[rows])
        found[rows] = ok
    missing = torch.nonzero(~found).squeeze(1)
    if missing.numel():
        root[missing] = _fallback_baselines(expansion, reference, x, missing, g_ref[missing] * sign0[missing, None])

    every = torch.arange(n, device=x.device)
    g_root = torch.where(at_boundary, g0, expansion.values(root, every))
    nodes = torch.zeros(n, dtype=torch.int64, device=x.device)
    rel = torch.zeros_like(x)
    active = torch.nonzero(~at_boundary).squeeze(1)
    if active.numel():
        if config.taylor == "first_order":
            # Eq. (2.76): R_d = (x - x~)_d dg/dx_d(x~)
            rel[active] = expansion.gradient(root[active], active) * (x[active] - root[active])
        else:
            rel[active], nodes[active] = _integrate(expansion, root[active], x[active], active,
                                                    g0[active] - g_root[active], g0[active].abs(), config)
    remainder = g0 - g_root - rel.sum(1)

    n_missing = int(missing.numel())
    if n_missing:
        no_cand = int((~found & ~has_cand.any(1)).sum())
        warnings.warn(
            f"no root point found for {n_missing} of {n} samples ({no_cand} without any reference sample of the "
            f"opposite prediction, {n_missing - no_cand} where the interval search did not reach "
            f"|f(x~)| <= root_tol={tol:g}); their relevance is taken relative to a baseline instead: the point of "
            "smallest |f| on the segment to the reference sample scored least in favour of the target. "
            "f(baseline) is in bias_relevance, the baseline in root_point, and extras['root_found'] is False. "
            "Fit LRPTransformer on data predicted as both classes, or raise n_root_candidates / root_tol.",
            RootPointWarning,
            stacklevel=caller_outside_sklrp(),
        )
    explained = ~at_boundary
    if bool(explained.any()):
        share = float(torch.quantile(remainder[explained].abs() / g0[explained].abs(), 0.5))  # numpy's median
        if share > REMAINDER_WARNING_FRACTION:
            if config.taylor == "first_order":
                fix = "use taylor='exact' (the path integral of the gradient, whose relevance sums to f(x) - f(x~))"
            else:
                fix = (f"raise taylor_max_nodes (now {config.taylor_max_nodes}) so the quadrature can reach "
                       f"taylor_tol={config.taylor_tol:g}")
            warnings.warn(
                f"the {config.taylor.replace('_', '-')} Taylor decomposition leaves a median {share:.1%} of |f(x)| "
                f"unexplained in this batch of {n} samples (more than {REMAINDER_WARNING_FRACTION:.0%}; see "
                f"Explanation.residual); {fix}.",
                TaylorRemainderWarning,
                stacklevel=caller_outside_sklrp(),
            )
    extras = {"root_point": root, "root_found": found, "quadrature_nodes": nodes}
    return HeadRelevance(rel, g_root, extras, remainder=remainder)


def _check_finite_distances(dist2, x, what, consequence):
    """ValueError naming the scale of X when squared distances to the expansion points overflow float64."""
    if not bool(torch.isfinite(dist2).all()):
        big = float(x.abs().max()) if x.numel() else 0.0
        raise ValueError(
            f"squared distances between X (largest |value| {big:.3g}) and {what} overflow float64, so {consequence}. "
            "Rescale the input, e.g. with StandardScaler in the pipeline (the model must be fitted on data of the "
            "same scale)."
        )


def _decompose_at_mean(expansion, x, g0, mean, config):
    """The decomposition at the training mean ``x_bar``: relevance of ``g(x) - g(x_bar)``, ``g(x_bar)`` as bias.

    Beyond the thesis (which expands at root points): the integrated gradient from the average
    sample. The same quadrature and the same first-order formula as at a root point.
    """
    n = x.shape[0]
    every = torch.arange(n, device=x.device)
    start = mean.to(x).expand_as(x).contiguous()
    _check_finite_distances(((x - start) ** 2).sum(1), x, "the training mean",
                            "the kernel's gradient vanishes in float64 along the path")
    g_start = expansion.values(start, every)
    nodes = torch.zeros(n, dtype=torch.int64, device=x.device)
    if config.taylor == "first_order":
        rel = expansion.gradient(start, every) * (x - start)
    else:
        rel, nodes = _integrate(expansion, start, x, every, g0 - g_start, g0.abs(), config)
    remainder = g0 - g_start - rel.sum(1)
    share = float(torch.quantile(remainder.abs() / g0.abs().clamp(min=torch.finfo(x.dtype).tiny), 0.5))
    if share > REMAINDER_WARNING_FRACTION:
        fix = ("use taylor='exact'" if config.taylor == "first_order"
               else f"raise taylor_max_nodes (now {config.taylor_max_nodes})")
        warnings.warn(f"the Taylor decomposition at the training mean leaves a median {share:.1%} of |f(x)| "
                      f"unexplained in this batch of {n} samples; {fix}.", TaylorRemainderWarning,
                      stacklevel=caller_outside_sklrp())
    extras = {"root_point": start, "root_found": torch.ones(n, dtype=torch.bool, device=x.device),
              "quadrature_nodes": nodes}
    return HeadRelevance(rel, g_start, extras, remainder=remainder)


# -- the exact path integral ------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _gauss_legendre(q):
    """Nodes and weights of the q-point Gauss-Legendre rule on [0, 1]."""
    u, w = np.polynomial.legendre.leggauss(q)
    return 0.5 * (u + 1.0), 0.5 * w


def _integrate(expansion, start, x, rows, target, scale, config):
    """``R_d = (x - x~)_d int_0^1 dg/dx_d(x~ + t (x - x~)) dt`` with adaptive Gauss-Legendre.

    Per sample, the node count doubles (8, 16, ...; capped at ``taylor_max_nodes``) until the
    completeness error ``|target - sum_d R_d|`` is at most ``taylor_tol * scale`` (or at the
    rounding floor of the sum). Returns the relevance and the node count used per sample.
    """
    dx = x - start
    rel = torch.zeros_like(x)
    nodes = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    active = torch.arange(x.shape[0], device=x.device)
    q_max = config.taylor_max_nodes
    q = min(_FIRST_NODES, q_max)
    eps = torch.finfo(x.dtype).eps
    while True:
        r = _path_integral(expansion, start[active], dx[active], rows[active], q)
        rel[active] = r
        nodes[active] = q
        err = (target[active] - r.sum(1)).abs()
        floor = 64 * eps * (target[active].abs() + r.abs().sum(1))
        done = err <= torch.maximum(config.taylor_tol * scale[active], floor)
        active = active[~done]
        if active.numel() == 0 or q >= q_max:
            return rel, nodes
        q = min(2 * q, q_max)


def _path_integral(expansion, start, dx, rows, q):
    t_np, w_np = _gauss_legendre(q)
    t = torch.as_tensor(t_np, dtype=start.dtype, device=start.device)
    w = torch.as_tensor(w_np, dtype=start.dtype, device=start.device)
    kernel, S = expansion.kernel, expansion.sv
    m, d = start.shape
    out = torch.empty_like(start)
    step = max(1, _CHUNK // max(1, q * max(S.shape[0], d)))
    for lo in range(0, m, step):
        sl = slice(lo, lo + step)
        xs, dd, c = start[sl], dx[sl], expansion.coef[rows[sl]]
        if kernel.uses_products:
            # along p(t) = x~ + t dx: <s, p> and ||p||^2 are polynomials in t, and
            # dk/dx = dk/d<s,x> s + 2 dk/d||x||^2 x, so the integral over t is taken on
            # (samples x nodes x support vectors) scalars and contracted with S once
            sxs, sdx = xs @ S.T, dd @ S.T  # (b, S)
            a0, a1, a2 = (xs * xs).sum(1), 2 * (xs * dd).sum(1), (dd * dd).sum(1)
            dot = sxs[:, None, :] + t[None, :, None] * sdx[:, None, :]  # (b, q, S)
            x_sq = (a0[:, None] + t[None, :] * a1[:, None] + (t * t)[None, :] * a2[:, None])[:, :, None]
            d_dot, d_sq = kernel.product_derivatives(dot, x_sq, expansion.sv_sq[None, None, :])
            w_dot = torch.einsum("q,bqs->bs", w, d_dot) * c  # int dk/d<s,x> dt, weighted by c
            cb = (d_sq * c[:, None, :]).sum(2)  # (b, q)
            w_sq, w_sq_t = cb @ w, cb @ (w * t)
            grad = w_dot @ S + 2 * w_sq[:, None] * xs + 2 * w_sq_t[:, None] * dd
        else:
            b = xs.shape[0]
            pts = (xs[:, None, :] + t[None, :, None] * dd[:, None, :]).reshape(b * q, d)
            g = kernel.gradient(pts, S, c.repeat_interleave(q, dim=0)).reshape(b, q, d)
            grad = torch.einsum("q,bqd->bd", w, g)
        out[sl] = dd * grad
    return out


# -- root points (Section 2.3.1) ---------------------------------------------------------------

def _fallback_baselines(expansion, reference, x, rows, support):
    """Baselines for samples without a root: the point of smallest ``|g|`` on the segment from ``x``
    to the reference sample with the least support ``sign(g(x)) g(x_s)`` for the explained output."""
    target = reference.points[support.argmin(1)]  # (m, D)
    t = torch.arange(1, _FALLBACK_GRID + 1, dtype=x.dtype, device=x.device) / _FALLBACK_GRID
    start = x[rows]
    pts = start[:, None, :] + t[None, :, None] * (target - start)[:, None, :]  # (m, G, D)
    m = rows.numel()
    values = expansion.values(pts.reshape(m * _FALLBACK_GRID, -1), rows.repeat_interleave(_FALLBACK_GRID))
    best = values.reshape(m, _FALLBACK_GRID).abs().argmin(1)
    return pts[torch.arange(m, device=x.device), best]


def _search_roots(expansion, reference, x_all, rows, cand, has_cand, g_ref, g0, tol):
    """Nearest root on the segments ``x -> x_s`` over the candidates, for a few samples.

    Returns the segment parameter, a found flag and the direction of the chosen segment.
    """
    x = x_all[rows]
    kernel, S = expansion.kernel, expansion.sv
    c_eff, b_eff = expansion.coef[rows], expansion.intercept[rows]
    n, k = cand.shape
    xs = reference.points[cand]  # (n, k, D)
    direction = xs - x[:, None, :]
    length2 = (direction * direction).sum(2)  # (n, k)
    f_hi = torch.gather(g_ref, 1, cand)
    sample = torch.arange(n, device=x.device)[:, None].expand(n, k).reshape(-1)
    if kernel.uses_products:
        # along x + t d: <s, x + t d> and ||x + t d||^2 are polynomials in t, so one
        # evaluation costs O(n_support) per segment instead of O(n_support * D)
        sx = x @ S.T  # (n, S)
        sd = (reference.sv_products[cand] - sx[:, None, :]).reshape(n * k, -1)
        x_sq = (x * x).sum(1)
        xd = ((x[:, None, :] * xs).sum(2) - x_sq[:, None]).reshape(-1)
        dd = length2.reshape(-1)
        s_sq = expansion.sv_sq[None, :]

        def evaluate(tt, active):
            if active.numel() == n * k:  # all segments active: broadcast instead of gathering copies
                tk = tt.view(n, k)
                dot = sx[:, None, :] + tk[:, :, None] * sd.view(n, k, -1)
                sq = (x_sq[:, None] + 2 * tk * xd.view(n, k) + tk * tk * dd.view(n, k))[:, :, None]
                values = torch.einsum("nks,ns->nk", kernel.from_products(dot, sq, s_sq[None]), c_eff)
                return (values + b_eff[:, None]).reshape(-1)
            i = sample[active]
            dot = sx[i] + tt[:, None] * sd[active]
            sq = (x_sq[i] + 2 * tt * xd[active] + tt * tt * dd[active])[:, None]
            return (kernel.from_products(dot, sq, s_sq) * c_eff[i]).sum(1) + b_eff[i]
    else:
        flat_dir = direction.reshape(n * k, -1)

        def evaluate(tt, active):
            i = sample[active]
            pts = x[i] + tt[:, None] * flat_dir[active]
            return (kernel.matrix(pts, S) * c_eff[i]).sum(1) + b_eff[i]

    f_lo = g0[:, None].expand(n, k).reshape(-1)
    t_root, ok = _bracket(evaluate, f_lo, f_hi.reshape(-1), has_cand.reshape(-1), tol,
                          group=(sample, n, length2.reshape(-1).sqrt()))
    dist = torch.where(ok, t_root * length2.reshape(-1).sqrt(), torch.full_like(t_root, np.inf)).reshape(n, k)
    best = dist.argmin(1)
    idx = torch.arange(n, device=x.device)
    found = torch.isfinite(dist[idx, best])
    return t_root.reshape(n, k)[idx, best], found, direction[idx, best]


def _bracket(evaluate, f_lo, f_hi, valid, tol, group=None):
    """Vectorised bracketed root search on [0, 1] (Illinois regula falsi + bisection).

    ``f_lo`` and ``f_hi`` have opposite signs (or one is within ``tol`` of 0); stops
    when ``|f(t)| <= tol``. Returns ``t`` and a found flag per segment.

    ``group = (sample, n_samples, length)``: segments of one sample compete, only the
    root closest to the sample is wanted. A segment whose bracket ``[lo, hi]`` starts
    farther away (``lo * length``) than another segment's bracket ends (``hi * length``)
    cannot win and is dropped; this does not change the result, only the work.
    """
    m = f_lo.shape[0]
    lo, hi = torch.zeros_like(f_lo), torch.ones_like(f_lo)
    flo, fhi = f_lo.clone(), f_hi.clone()
    t = torch.full_like(f_lo, np.nan)
    found = torch.zeros(m, dtype=torch.bool, device=f_lo.device)
    at_lo = valid & (flo.abs() <= tol)
    at_hi = valid & ~at_lo & (fhi.abs() <= tol)
    t[at_lo], t[at_hi] = 0.0, 1.0
    found |= at_lo | at_hi
    active = valid & ~found
    last = torch.zeros(m, dtype=torch.int8, device=f_lo.device)  # side replaced last: -1 lo, +1 hi
    for it in range(_MAX_ITER):
        rows = torch.nonzero(active).squeeze(1)
        if rows.numel() == 0:
            break
        a, b, fa, fb = lo[rows], hi[rows], flo[rows], fhi[rows]
        mid = 0.5 * (a + b)
        tm = (a * fb - b * fa) / (fb - fa)
        # every sixth step (or when regula falsi leaves the bracket) bisect: guaranteed shrinkage
        bisect = ~torch.isfinite(tm) | (tm <= a) | (tm >= b) | (it % 6 == 5)
        tm = torch.where(bisect, mid, tm)
        fm = evaluate(tm, rows)
        conv = fm.abs() <= tol
        t[rows[conv]] = tm[conv]
        found[rows[conv]] = True
        to_lo = ~conv & ((fm > 0) == (fa > 0))
        to_hi = ~conv & ~to_lo
        prev = last[rows]
        # Illinois: the kept endpoint's value is halved when the same side moves twice
        fhi[rows] = torch.where(to_lo & (prev == -1), 0.5 * fb, fb)
        flo[rows] = torch.where(to_hi & (prev == 1), 0.5 * fa, fa)
        lo[rows] = torch.where(to_lo, tm, a)
        flo[rows] = torch.where(to_lo, fm, flo[rows])
        hi[rows] = torch.where(to_hi, tm, b)
        fhi[rows] = torch.where(to_hi, fm, fhi[rows])
        last[rows] = torch.where(to_lo, -1, torch.where(to_hi, 1, 0)).to(torch.int8)
        collapsed = (hi[rows] - lo[rows]) <= 1e-15
        active[rows] = ~conv & ~collapsed
        if group is not None:
            sample, n_samples, length = group
            inf = torch.full_like(lo, np.inf)
            upper = torch.where(found, t * length, torch.where(active, hi * length, inf))
            best = torch.full((n_samples,), np.inf, dtype=lo.dtype, device=lo.device)
            best = best.scatter_reduce(0, sample, upper, reduce="amin")
            active &= lo * length <= best[sample]
    return torch.where(found, t, torch.zeros_like(t)), found
