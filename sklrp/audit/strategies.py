"""The audit's search for separate prediction strategies (SpRAy, thesis Chapter 6) and its evidence.

The verdict comes from :func:`sklrp.audit.shortcut_scan` (a subgroup of a class with relevance on
its own region, compared with the model's other classes); SpRAy's eigenvalue spectra per class
(Fig. 6.5) are shown beside it for inspection. For each flagged class (and the top-ranked one)
the report shows the mean maps of the subgroup ("carriers") and of the rest of the class, a few
members of each with their inputs, an embedding of the class's maps, and -- when asked for --
the reliance probe: the carriers' region pasted into other classes' images.
"""

from __future__ import annotations

import math

import numpy as np

from .figures import legend_outside
from .inputs import is_image
from .verdict import feature_scan, reliance_probe, shortcut_scan
from .workspace import parallel

__all__ = ["strategies_section", "describe"]

_MEMBERS = 4


def _fmt_label(c):
    return str(c)


def _region_text(region, tabular, feature_names):
    """Where the subgroup's relevance sits: the region's own words, or the feature's name for a table."""
    if not tabular:
        return region.text
    j = region.cols[0]
    return f"feature {feature_names[j] if feature_names is not None else 'x%d' % j}"


def describe(finding, *, alpha, n_classes, tabular=False, feature_names=None, probed=False):
    """The finding in words (what was found, how unusual, what it may mean)."""
    c = _fmt_label(finding.label)
    if finding.region is None:
        return f"Class {c}: no subgroup of at least the minimum size could be tested."
    where = _region_text(finding.region, tabular, feature_names)
    a_lo, a_hi = finding.carrier_share
    share = f"{100 * a_lo:.0f} %" if round(100 * a_lo) == round(100 * a_hi) else f"{100 * a_lo:.0f}-{100 * a_hi:.0f} %"
    carriers = f"{finding.n_carriers} of {finding.n_maps} maps ({100 * finding.n_carriers / finding.n_maps:.0f} %)"
    base = (f"Class {c}: {carriers} put {share} {finding.region.unit} on {where}, where 90 % of the "
            f"class's other maps put less than {100 * finding.rest_share_90:.1f} % and 90 % of other classes' "
            f"maps less than {100 * finding.others_share_90:.1f} %. Separation index {finding.score:.2f}")
    if not math.isfinite(finding.p_value):
        return base + " (no other class to compare with, so no verdict)."
    unusual = f"; among the model's {n_classes} classes z = {finding.z:.1f}, p = {finding.p_value:.2g}"
    if finding.flagged:
        return (base + unusual + f" (p <= {alpha}): a separate strategy that the other classes do not show. "
                "It may be a shortcut (a tag, a border, a background cue): look at the carriers below"
                + (" and at the reliance probe." if probed else " and test the model's reliance on it (--probe)."))
    return base + unusual + (f" (not below {alpha}): this subgroup is no more distinct than what the "
                             "model's other classes show.")


def _spray_spectra(maps_by_class, image_shape, random_state):
    from ..spray import SpRAy, spray_spectra

    pool = (20, 20) if is_image(image_shape) and image_shape[0] * image_shape[1] > 400 else None
    template = SpRAy(pool_shape=pool, embedding=None, normalize="l2", random_state=random_state)
    usable = {c: m for c, m in maps_by_class.items() if len(m) >= 10}
    if not usable:
        return {}
    try:
        res = spray_spectra(usable, spray=template)
    except ValueError:
        return {}
    return {c: [float(v) for v in res.eigenvalues[i] if np.isfinite(v)] for i, c in enumerate(res.classes)}


def _tsne_task(maps, labels, random_state):
    from ..spray import SpRAy

    try:
        sp = SpRAy(n_clusters=1, pool_shape=None, embedding="tsne", normalize="l2",
                   random_state=random_state).fit(maps.reshape(len(maps), -1))
    except ValueError:
        return None
    return sp.embedding_


def _outline(ax, region, color="lime"):
    from matplotlib.patches import Rectangle

    (r0, r1), (c0, c1) = region.rows, region.cols
    if region.kind == "spread":  # the whole image: nothing to outline
        return
    if region.kind == "window":
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, ec=color, lw=1.5))
    else:
        ax.contour(region.mask.astype(float), levels=[0.5], colors=[color], linewidths=1.0)


def _evidence_figures(name, finding, maps, images, other_maps, save):
    """Mean maps of carriers / rest / other classes, and members of both groups with their inputs."""
    from matplotlib.figure import Figure

    from .. import plotting

    c = _fmt_label(finding.label)
    carriers = np.zeros(len(maps), dtype=bool)
    carriers[finding.carriers] = True
    means = [maps[carriers].mean(0), maps[~carriers].mean(0)]
    titles = [f"carriers ({carriers.sum()})", f"rest of class ({(~carriers).sum()})"]
    if len(other_maps):
        means.append(other_maps.mean(0))
        titles.append("other classes")
    fig = plotting.heatmap_grid(np.stack(means), titles=titles, normalize="map", figsize=(2.6 * len(means), 2.9))
    for ax in fig.axes:
        _outline(ax, finding.region)
    fig.suptitle(f"class {c}: mean relevance of the two groups (box: the distinctive region)")
    figs = {"fig_groups": save(fig, f"{name}_class{c}_groups.png")}
    rng = np.random.RandomState(0)
    pick_a = np.sort(rng.permutation(np.flatnonzero(carriers))[:_MEMBERS])
    pick_b = np.sort(rng.permutation(np.flatnonzero(~carriers))[:_MEMBERS])
    cols = max(len(pick_a), len(pick_b))
    fig = Figure(figsize=(1.9 * cols, 7.6))
    for row, (pick, label) in enumerate(((pick_a, "carrier"), (pick_b, "rest"))):
        for j, i in enumerate(pick):
            ax = fig.add_subplot(4, cols, 2 * row * cols + j + 1)
            ax.imshow(images[i], cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}: input", fontsize=8)
            ax = fig.add_subplot(4, cols, (2 * row + 1) * cols + j + 1)
            plotting.heatmap(maps[i], ax=ax, title=f"{label}: relevance")
            ax.title.set_fontsize(8)
            _outline(ax, finding.region)
    fig.suptitle(f"class {c}: members of each group (inputs above their relevance maps)")
    figs["fig_members"] = save(fig, f"{name}_class{c}_members.png")
    return figs, carriers


def strategies_section(name, maps, images, groups, image_shape, save, notes, *, max_samples=150, alpha=0.05,
                       random_state=0, n_jobs=None, verbose=False, ground_truth=None, predict=None,
                       probe=False, feature_names=None):
    """Scan every class, rank them, and draw the evidence; returns the summary dict (JSON-able)."""
    from .. import plotting

    tabular = not is_image(image_shape)
    rng = np.random.RandomState(random_state)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(groups == c))[:max_samples]
                                   for c in np.unique(groups)]))
    M, G = maps[keep], groups[keep]
    findings = (feature_scan(M.reshape(len(M), -1), G, alpha=alpha) if tabular
                else shortcut_scan(M, G, alpha=alpha))
    if not findings:
        notes.append("Strategy search not run: no class has 10 or more relevance maps with positive relevance.")
        return None
    classes_present = np.unique(G)
    spectra = {} if tabular else _spray_spectra({c: M[G == c] for c in classes_present}, image_shape, random_state)
    flagged = [f.label for f in findings if f.flagged]
    out = {"alpha": alpha, "n_classes": len(findings), "flagged": flagged, "classes": []}
    if spectra:
        fig = plotting.plot_class_spectra({str(k): v for k, v in spectra.items()},
                                          highlight=[str(f) for f in flagged],
                                          title=f"{name}: smallest eigenvalues of L_sym per class (SpRAy)")
        for ax in fig.axes:
            legend_outside(ax)  # beside the bars, not over them
        out["fig_class_spectra"] = save(fig, f"{name}_class_spectra.png")
    show = [f for f in findings if (f.flagged or f.rank == 1) and f.region is not None]
    embeddings = {}
    if show and not tabular:
        from joblib import delayed

        tasks = [delayed(_tsne_task)(M[G == f.label], None, random_state) for f in show]
        for f, emb in zip(show, parallel(tasks, n_jobs=n_jobs, verbose=verbose, desc="embeddings", total=len(show))):
            embeddings[f.label] = emb
    for f in findings:
        ev = spectra.get(f.label)
        row = {"class": f.label, "rank": f.rank, "n_maps": f.n_maps, "score": f.score,
               "z": f.z if math.isfinite(f.z) else None,
               "p_value": f.p_value if math.isfinite(f.p_value) else None, "flagged": f.flagged,
               "lambda2": ev[1] if ev and len(ev) > 1 else None,
               "n_carriers": f.n_carriers, "text": describe(f, alpha=alpha, n_classes=len(findings), tabular=tabular,
                                                              feature_names=feature_names,
                                                              probed=probe and predict is not None)}
        if f.region is not None:
            row["region"] = {"kind": f.region.kind, "rows": list(f.region.rows), "cols": list(f.region.cols),
                             "text": _region_text(f.region, tabular, feature_names), "unit": f.region.unit}
            row["carrier_share"] = list(f.carrier_share)
            row["rest_share_90"] = f.rest_share_90
            row["others_share_90"] = f.others_share_90
        if f in show:
            in_c = np.flatnonzero(G == f.label)
            if tabular:
                carriers = np.zeros(len(in_c), dtype=bool)
                carriers[f.carriers] = True
            else:
                figs, carriers = _evidence_figures(name, f, M[in_c], images[keep][in_c], M[G != f.label], save)
                row.update(figs)
                emb = embeddings.get(f.label)
                if emb is not None:
                    ax = plotting.plot_embedding(emb, np.where(carriers, 1, 0), thumbnails=M[in_c],
                                                 title=f"{name}, class {f.label}: t-SNE of the relevance maps "
                                                       "(1 = carriers)")
                    row["fig_embedding"] = save(ax.figure, f"{name}_class{f.label}_embedding.png")
            if ground_truth is not None:
                gt = ground_truth[keep][in_c]
                row["planted"] = {"carriers": int(gt[carriers].sum()), "n_carriers": int(carriers.sum()),
                                  "rest": int(gt[~carriers].sum()), "n_rest": int((~carriers).sum())}
            if probe and predict is not None and not tabular:
                imgs = images[keep]
                patch = imgs[in_c][carriers].mean(0)
                control = imgs[in_c][~carriers].mean(0)
                try:
                    # a spread cue cannot be pasted without the whole image: add the difference instead
                    row["probe"] = reliance_probe(predict, images, groups, f.label, f.region.mask, patch,
                                                  control_patch=control,
                                                  mode="add" if f.region.kind == "spread" else "paste")
                except (ValueError, TypeError) as exc:
                    notes.append(f"Reliance probe for class {f.label} failed: {exc}")
        out["classes"].append(row)
    return out
