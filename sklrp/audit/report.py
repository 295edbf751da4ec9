"""Rendering ``summary.json`` as the self-contained ``report.html`` (templates in ``templates/``).

The page layout lives in small :class:`string.Template` files shipped with the package; this
module fills them with tables, words and the figures (embedded as base64 PNG).
"""

from __future__ import annotations

import base64
import html
import re
from importlib import resources
from string import Template

from .inputs import is_image

__all__ = ["render_report"]

# Measured on benchmarks/bench_audit_recall.py and bench_audit_tabular.py (see doc/audit.rst);
# restated in the report.
MEASURED = ("On the planted-shortcut benchmark (cues and seeds not looked at while designing the rule, four "
            "model families) this rule flagged {ffr} of the classes of clean models and found {recall} of planted "
            "cues that the model relied on (flagged: {flagged}; the rest ranked first); see the documentation for "
            "the table.")
MEASURED_FIGURES = {"ffr": "4.7 %", "recall": "96 %", "flagged": "64 %"}  # bench_audit_recall.py, final split
MEASURED_TABULAR = ("For a table every feature is a region of its own. On the leaked-column benchmark (four tables, "
                    "two model families) this rule flagged {ffr} of the classes of clean models and found {recall} "
                    "of leaked columns that the model relied on (flagged: {flagged}; a leaked identifier is flagged "
                    "far more often than a shifted measurement); see the documentation for the table.")
MEASURED_TABULAR_FIGURES = {"ffr": "3.9 %", "recall": "91 %", "flagged": "64 %"}  # bench_audit_tabular.py


def _template(name):
    return Template(resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8"))


def _e(v):
    return html.escape(str(v))


def _img(files, name, alt):
    if not name or name not in files:
        return ""
    with open(files[name], "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v, digits=3):
    if v is None:
        return "&ndash;"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return _e(v)


def _p(v):
    if v is None:
        return "&ndash;"
    return "&lt; 1e-4" if v < 1e-4 else f"{v:.2g}"


def _table(header, rows, text_cols=()):
    head = "".join(f"<th{' class=text' if i in text_cols else ''}>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{' class=text' if i in text_cols else ''}>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _anchor(name):
    return re.sub(r"[^A-Za-z0-9_-]", "-", str(name))


def _flag_cell(s):
    st = s.get("strategies")
    if not st:
        return "n/a (no class with 10 maps)"
    if st["n_classes"] < 2:
        return "n/a (one group: nothing to compare)"
    if st["flagged"]:
        return "<span class='flag'>" + _e(", ".join(map(str, st["flagged"]))) + "</span>"
    return f"none (p &gt; {st['alpha']})"


def _aopc_cell(s):
    a = s.get("aopc")
    if not a:
        return "&ndash;"
    cmp = next((c for c in a["comparisons"] if c["baseline"] == "random"), None)
    verdict = "" if cmp is None else (" (better than random)" if cmp["better"] else
                                      " (worse than random)" if cmp["worse"] else " (not distinguishable from random)")
    return _fmt(a["scores"].get("LRP")) + verdict


def _verdict(name, st):
    if not st:
        return "<p class='neutral'>The strategy search did not run (see the notes below).</p>"
    if st["n_classes"] < 2:
        return ("<p class='neutral'>Only one group of relevance maps: the search needs other classes to compare "
                "with, so no verdict. The best subgroup is described below.</p>")
    if st["flagged"]:
        cls = ", ".join(map(str, st["flagged"]))
        return (f"<p class='alert'><b>Flagged: class(es) {_e(cls)}.</b> A subgroup of these classes puts its "
                "relevance on a region of its own, more distinctly than the model's other classes do "
                f"(p &le; {st['alpha']}). This is how a shortcut (a tag, a border, a background cue) shows up; the "
                "evidence for each is below.</p>")
    top = st["classes"][0]
    return (f"<p class='neutral'><b>No separate strategy found</b> in {st['n_classes']} classes: no class has a "
            f"subgroup that stands apart more than the model's other classes do (all p &gt; {st['alpha']}). "
            f"Most distinct: class {_e(top['class'])} (separation {_fmt(top['score'], 2)}, p = {_p(top['p_value'])}). "
            "This is not an all-clear: a cue shown by every image of a class forms no subgroup, and the scan "
            "misses some planted cues (its measured recall and false-flag rate are in the documentation's "
            "audit page).</p>")


def _class_table(st):
    if not st:
        return ""
    rows = []
    for r in st["classes"]:
        label = _e(r["class"]) + (" <span class='flag'>&#9873;</span>" if r["flagged"] else "")
        region = _e(r["region"]["text"]) if r.get("region") else "&ndash;"
        share = (f"{100 * r['carrier_share'][0]:.0f}&ndash;{100 * r['carrier_share'][1]:.0f} % vs "
                 f"&lt;{100 * max(r['rest_share_90'], r['others_share_90']):.1f} %") if r.get("region") else "&ndash;"
        if r.get("region") and r["region"].get("unit", "").endswith("median map"):
            share += " (of the median map's)"
        rows.append([r["rank"], label, r["n_maps"], r["n_carriers"] or "&ndash;", region, share,
                     _fmt(r["score"], 2), _fmt(r["z"], 2), _p(r["p_value"]), _fmt(r["lambda2"], 3)])
    return _table(["rank", "class", "maps", "subgroup", "distinctive region", "share of relevance there",
                   "separation", "z", "p", "λ2 (SpRAy)"], rows, text_cols=(4, 5))


def _finding(name, r, files):
    flagged = r["flagged"]
    planted = ""
    if r.get("planted"):
        p = r["planted"]
        planted = _table(["group", "maps", "with the planted cue"],
                         [["subgroup (carriers)", p["n_carriers"], p["carriers"]], ["rest of class", p["n_rest"],
                                                                                     p["rest"]]])
    probe = ""
    if r.get("probe") and r["probe"].get("n_images"):
        pr = r["probe"]
        if pr.get("control") is None:  # a spread cue: the difference was added, not pasted
            how = ("the difference between the carriers' and the rest's mean images added to "
                   f"{pr['n_images']} images of other classes makes")
            control = ""
        else:
            how = f"the carriers' mean pixels in the region pasted into {pr['n_images']} images of other classes make"
            control = f"; pasting the rest of the class's pixels there instead: {100 * pr['control']:.0f} %"
        probe = (f"<p><b>Reliance probe:</b> {how} the model predict class {_e(r['class'])} for "
                 f"{100 * pr['stamped']:.0f} % of them (before: {100 * pr['before']:.0f} %{control}). "
                 + ("<span class='flag'>The model relies on this region.</span>" if pr["flips"] >= 0.1 else
                    "Few predictions move: the model does not rely on this region alone.") + "</p>")
    figs = "".join(_img(files, r.get(k), f"class {r['class']} {k[4:]}")
                   for k in ("fig_groups", "fig_members", "fig_embedding"))
    return _template("finding.html").substitute(
        css_class="flagged" if flagged else "", id=_anchor(f"{name}-{r['class']}"), label=_e(r["class"]),
        badge=" <span class='flag'>(flagged)</span>" if flagged else " (ranked first, not flagged)",
        text=_e(r["text"]), planted=planted, probe=probe, figures=figs)


def _conservation(s):
    c = s["conservation"]
    return (f"Unexplained (residual) f(x) &minus; &Sigma;R &minus; R<sub>bias</sub> (Eq. (2.12)): max "
            f"{_fmt(c['max_abs_residual'])}, median {100 * c['median_relative_residual']:.2g} % of |f(x)|; of it, "
            f"Taylor remainder max {_fmt(c['max_abs_taylor_remainder'])}, absorbed by stabilisers max "
            f"{_fmt(c['max_abs_absorbed'])}.")


def _aopc(a, name, files):
    if not a:
        return "<p class='note'>AOPC not computed.</p>"
    parts = [f"<p>Regions are removed most-relevant-first (MoRF, Eq. (3.6)); a faster drop of f(x), i.e. a larger "
             f"AOPC (Eq. (3.7)), means the heatmap ranks the regions the model uses first. {_e(a['setup'])}</p>",
             _table(["heatmap", "AOPC"], [[_e(k), _fmt(v, 4)] for k, v in a["scores"].items()])]
    for c in a["comparisons"]:
        parts.append(f"<p class='{'neutral' if not c['better'] else ''}'>{_e(c['text'])}</p>")
    if a.get("warning"):
        parts.append(f"<p class='alert'>{_e(a['warning'])}.</p>")
    parts.append(_img(files, a.get("fig_curves"), f"{name} perturbation curves"))
    return "\n".join(parts)


def _context(c, name):
    if not c:
        return ""
    rows = []
    for r in c["classes"]:
        rows.append([_e(r["class"]), r["n_images"], _fmt(r["ratio"]),
                     "&ndash;" if r["outside_share"] is None else f"{100 * r['outside_share']:.0f} %",
                     r["undefined"]])
    return (f"<h3 id='context-{_anchor(name)}'>Context ratio (Eq. (4.11))</h3>"
            "<p>&mu; = mean <em>positive</em> relevance per pixel outside the object mask over the mean inside "
            "(the thesis' definition; signed relevance can make the ratio negative or arbitrarily large when the "
            "inside nearly cancels, which says nothing about context). &mu; = 1: relevance spread evenly over "
            "object and context; below 1: concentrated on the object; above 1: more relevance per pixel on the "
            f"context. For comparison: the context is {100 * c['outside_area']:.0f} % of the image area. Median "
            "over the class's images; images whose object holds no positive relevance have no ratio "
            "(counted as undefined).</p>"
            + _table(["class", "images", "context ratio μ (median)", "positive relevance outside", "undefined"],
                     rows))


def render_report(summary, files):
    """The self-contained HTML report (figures embedded as base64 PNG)."""

    d = summary["data"]
    meta = (f"Data: {_e(d['name'])}, X of shape {tuple(d['shape'])}{', with labels' if d['has_y'] else ''}"
            f"{', with object masks' if d['has_masks'] else ''} &middot; sklrp {_e(summary['sklrp_version'])} "
            f"&middot; {_e(summary['created'])} &middot; {summary['seconds']:.1f} s")
    notes = "".join(f"<p class='note'>{_e(n)}</p>" for n in summary.get("notes", []))
    overview = _table(["model", "estimator", "samples", "accuracy", "flagged classes", "AOPC (LRP)",
                       "max |unexplained|"],
                      [[f"<a href='#model-{_anchor(s['name'])}'>{_e(s['name'])}</a>", _e(s["model"]), s["n_samples"],
                        _fmt(s["accuracy"]), _flag_cell(s), _aopc_cell(s),
                        _fmt(s["conservation"]["max_abs_residual"])] for s in summary["models"]],
                      text_cols=(1, 4))
    alpha = next((s["strategies"]["alpha"] for s in summary["models"] if s.get("strategies")), 0.05)
    measured = (MEASURED.format(**MEASURED_FIGURES) if is_image(d.get("image_shape") or [])
                else MEASURED_TABULAR.format(**MEASURED_TABULAR_FIGURES))
    howto = _template("howto.html").substitute(alpha=alpha, measured=measured)
    models = []
    for s in summary["models"]:
        name, st = s["name"], s.get("strategies")
        findings = "".join(_finding(name, r, files) for r in (st or {}).get("classes", [])
                           if r["flagged"] or r.get("fig_groups") or r.get("planted") or r.get("probe"))
        relevance = (_img(files, s.get("fig_heatmaps"), f"{name} relevance maps")
                     + _img(files, s.get("fig_mean_heatmaps"), f"{name} mean relevance per class"))
        models.append(_template("model.html").substitute(
            id=_anchor(name), name=_e(name),
            description=(f"{_e(s['model'])}; explained: {_e(s['explained'])}; LRP rule {_e(s['rule'])}. "
                         + _conservation(s)),
            verdict=_verdict(name, st), class_table=_class_table(st), findings=findings,
            spectra=_img(files, (st or {}).get("fig_class_spectra"), "eigenvalue spectra per class"),
            relevance=relevance, aopc=_aopc(s.get("aopc"), name, files), context=_context(s.get("context_ratio"), name),
            notes="".join(f"<p class='note'>{_e(n)}</p>" for n in s.get("notes", []))))
    css = resources.files(__package__).joinpath("templates", "style.css").read_text(encoding="utf-8")
    return _template("page.html").substitute(css=css, meta=meta, notes=notes, overview=overview, howto=howto,
                                             models="\n".join(models))
