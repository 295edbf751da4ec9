"""Smallest eigenpairs of SpRAy's graph Laplacian (Section 6.2) and the scale-aware eigengap."""

import warnings

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import LinearOperator, eigsh, lobpcg

# Eigenvalues below this (relative to the spectral scale) count as exact zeros, i.e. as
# connected components; ARPACK and LAPACK both resolve them far below this level.
ZERO_TOL = 1e-8
# Components up to this size are eigendecomposed densely (cheap and exact).
_DENSE_COMPONENT_SIZE = 300
# ARPACK relative tolerance: eigenvalues to ~1e-12, well below ZERO_TOL; on more than
# _LARGE nodes 1e-9 (eigenvalue errors ~1e-9, fewer Lanczos restarts).
_EIGEN_TOL = 1e-12
_EIGEN_TOL_LARGE = 1e-9
_LARGE = 100_000
# LOBPCG residual tolerance (eigenvalue error ~ residual^2 / gap, ~1e-9 measured) and its
# iteration cap
_LOBPCG_TOL = 1e-5
_LOBPCG_MAXITER = 500


def _import_pyamg():
    try:
        import pyamg  # optional dependency (extra "scale")
    except ImportError:
        return None
    return pyamg


def resolve_solver(solver, n_samples):
    """"arpack" or "amg" (LOBPCG with an algebraic multigrid preconditioner).

    "auto" is ARPACK at every size: on SpRAy's kNN graphs of planted strategies (100,000 maps,
    benchmarks/bench_spray.py data) ARPACK on the deflated operator took 4.9 CPU seconds and
    AMG-preconditioned LOBPCG 10.2 (eigenvalues agreeing to 4e-10); on isotropic clusters
    ARPACK was 2-5x faster. kNN graphs of high-dimensional maps are not the mesh-like graphs
    on which algebraic multigrid shines.
    """
    if solver in ("arpack", "auto"):
        return "arpack"
    if _import_pyamg() is None:
        raise ImportError(
            'eigen_solver="amg" needs the optional package pyamg: pip install "sklrp[scale]" '
            '(or pip install pyamg), or pass eigen_solver="arpack".'
        )
    return "amg"


def _null_vectors(deg, comp, n_comp, kind):
    """Unit null vector of each component's Laplacian: sqrt(d) (L_sym) or constant (L)."""
    v = np.sqrt(deg) if kind == "sym" else np.ones_like(deg)
    v = np.where(v > 0, v, 1.0)  # isolated L_sym nodes (deg 0): e_i
    norms = np.sqrt(np.bincount(comp, weights=v**2, minlength=n_comp))
    return v / norms[comp]


def spectrum(L, W, deg, m, *, kind, solver, random_state):
    """Smallest m eigenpairs of the block-diagonal L.

    Every connected component contributes one exact zero with a known eigenvector (sqrt of the
    degrees for ``L_sym``, constant for ``L``; Section 6.2), so zeros are structural, not
    numerical. The non-zero candidates come from a dense solver for components of at most 300
    nodes and from one sparse solve over all larger components, with their null vectors
    projected out: ARPACK's Lanczos method on ``c I - L`` (``solver="arpack"``; sparse
    mat-vecs only) or LOBPCG preconditioned by smoothed-aggregation AMG (``solver="amg"``).

    Returns eigenvalues (ascending), eigenvectors (columns; sign fixed so the largest |entry|
    is positive), the number of components and the spectral scale max(diag L).
    """
    n = L.shape[0]
    n_comp, comp = connected_components(W, directed=False)
    scale = max(float(L.diagonal().max()), 1e-300)
    null = _null_vectors(deg, comp, n_comp, kind)
    n_zero = min(m, n_comp)
    vals = [np.zeros(n_zero)]
    zero_vecs = np.zeros((n, n_zero))
    keep = comp < n_zero
    zero_vecs[np.flatnonzero(keep), comp[keep]] = null[keep]
    vecs = [zero_vecs]
    need = m - n_zero
    if need > 0:
        sizes = np.bincount(comp, minlength=n_comp)
        large = sizes > max(_DENSE_COMPONENT_SIZE, 2 * m + 1)
        for c in np.flatnonzero(~large & (sizes > 1)):
            idx = np.flatnonzero(comp == c)
            lc, vc = np.linalg.eigh(L[idx][:, idx].toarray())
            lc, vc = lc[1 : need + 1], vc[:, 1 : need + 1]  # [0] is the null vector
            full = np.zeros((n, lc.size))
            full[idx] = vc
            vals.append(lc)
            vecs.append(full)
        if large.any():
            idx = np.flatnonzero(large[comp])
            local = np.unique(comp[idx], return_inverse=True)[1]
            lc, vc = _sparse_nonzero(L[idx][:, idx], null[idx], local, need, scale, solver, random_state)
            full = np.zeros((n, lc.size))
            full[idx] = vc
            vals.append(lc)
            vecs.append(full)
    vals = np.concatenate(vals)
    vecs = np.concatenate(vecs, axis=1)
    order = np.argsort(vals, kind="stable")[:m]
    vals = np.clip(vals[order], 0.0, None)  # L is PSD; clip round-off below zero
    vecs = vecs[:, order]
    pick = np.argmax(np.abs(vecs), axis=0)
    signs = np.sign(vecs[pick, np.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return vals, vecs * signs, n_comp, scale


def _sparse_nonzero(Lb, null, comp, k, scale, solver, random_state):
    """Smallest k eigenpairs of Lb orthogonal to the per-component null vectors."""
    n = Lb.shape[0]
    n_comp = int(comp.max()) + 1
    k = min(k, n - n_comp)

    def project(x):  # remove each component's null direction (x is (n,) or (n, j)); a new array
        x2 = np.array(x, dtype=float).reshape(n, -1)
        for j in range(x2.shape[1]):
            a = np.bincount(comp, weights=x2[:, j] * null, minlength=n_comp)
            x2[:, j] -= a[comp] * null
        return x2.reshape(np.shape(x))

    if solver == "amg":
        pyamg = _import_pyamg()
        shifted = (Lb + sp.identity(n, format="csr") * (1e-5 * scale)).tocsr()
        pre = pyamg.smoothed_aggregation_solver(shifted, max_coarse=500).aspreconditioner()
        X0 = project(random_state.standard_normal((n, k)))
        if n_comp <= 32:
            Y = np.zeros((n, n_comp))
            Y[np.arange(n), comp] = null
            M, constraint = pre, dict(Y=Y)
        else:  # many components: project inside the preconditioner instead of a dense Y
            M = LinearOperator((n, n), matvec=lambda x: project(pre.matvec(project(x))), dtype=float)
            constraint = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # non-convergence is checked below
            lc, vc, res = lobpcg(Lb, X0, M=M, tol=_LOBPCG_TOL, largest=False, maxiter=_LOBPCG_MAXITER,
                                 retResidualNormsHistory=True, **constraint)
        if np.max(res[-1]) > 10 * _LOBPCG_TOL:
            warnings.warn("LOBPCG did not converge; computing the spectrum with ARPACK instead.",
                          UserWarning, stacklevel=4)
            return _sparse_nonzero(Lb, null, comp, k, scale, "arpack", random_state)
    else:
        shift = 2.0 * scale

        def matvec(x):
            return project(shift * x - Lb @ x)

        op = LinearOperator((n, n), matvec=matvec, matmat=matvec, dtype=float)
        v0 = project(random_state.uniform(-1, 1, n))
        tol = _EIGEN_TOL if n <= _LARGE else _EIGEN_TOL_LARGE
        lc, vc = eigsh(op, k=k, which="LA", v0=v0, tol=tol)
        lc = shift - lc
    order = np.argsort(lc)
    return lc[order], vc[:, order]


def scale_aware_gaps(eigenvalues, zero_tol):
    """Scale-aware eigengaps g_k for k = 1 .. m-1 (1-based k at index k-1).

    With c the number of (numerically) zero eigenvalues, i.e. of connected components, and
    lambda_{c+1} the smallest non-zero one,

        g_k = (lambda_{k+1} - lambda_k) / (lambda_{k+1} + lambda_{c+1})   for k >= c,
        g_k = 0                                                           for k < c.

    The thesis' eigengap |lambda_{k+1} - lambda_k| (Section 6.2) is divided by lambda_{k+1}, so
    it measures how much lambda_{k+1} stands out over the "near-zero" eigenvalues below it;
    lambda_{c+1} regularises the ratio so that relative fluctuations among tiny eigenvalues do
    not count. On kNN graphs the smallest eigenvalues of a homogeneous point cloud rise slowly
    (lambda_{k+1} / lambda_k <= ~2), and their absolute gaps grow further up the spectrum, which
    makes the plain absolute gap choose a meaningless large k. Here g_c = 1/2 exactly, and a
    k > c wins only if lambda_{k+1} > 2 lambda_k + lambda_{c+1}, i.e. for weakly connected groups.
    """
    lam = np.where(eigenvalues <= zero_tol, 0.0, eigenvalues)
    m = lam.shape[0]
    gaps = np.zeros(max(m - 1, 0))
    c = int(np.count_nonzero(lam == 0.0))
    if c >= m:  # all computed eigenvalues are zero: at least m components
        return gaps, c
    tau = lam[c]
    for k in range(max(c, 1), m):
        gaps[k - 1] = (lam[k] - lam[k - 1]) / (lam[k] + tau)
    return gaps, c
