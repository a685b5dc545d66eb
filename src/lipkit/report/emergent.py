"""The report's "Emergent properties" section, from the records and pictures of `lipkit eval
--tasks emergent`: the localisation Jaccard table with its trivial baselines, the attention
overlays of the same images side by side (one column per run), each run's prototype gallery and
its nearest neighbours. HTML only; every picture is the PNG the evaluation wrote, embedded."""
from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from lipkit.eval.registry import ATTENTION_LOCALIZATION, NEAREST_NEIGHBOURS, PROTOTYPE_GALLERY

from .collect import RunData

CSS = """
table.jaccard { border-collapse:collapse; font-size:14px; font-variant-numeric:tabular-nums; }
.jaccard th, .jaccard td { padding:6px 12px; border-bottom:1px solid var(--line); text-align:right; }
.jaccard th:first-child, .jaccard td:first-child { text-align:left; }
.jaccard thead th { font-weight:normal; color:var(--muted); }
.jaccard td.baseline { color:var(--muted); }
table.overlays { border-collapse:collapse; width:100%; }
.overlays th { font-weight:normal; color:var(--muted); text-align:left; padding:4px 6px; }
.overlays td { padding:4px 6px; vertical-align:top; }
.overlays img, .tiles img { max-width:100%; height:auto; image-rendering:pixelated; }
.tiles { display:grid; grid-template-columns:repeat(auto-fill, minmax(320px, 1fr)); gap:12px; }
.tiles figure { margin:0; } .tiles figcaption { font-size:12.5px; }
h3 { font-size:15px; margin:18px 0 8px; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return '<span class="hint">(picture missing)</span>'
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _alt(what: str, which, run: RunData) -> str:
    return f"{what} {which} ({run.label})"


def _records(run: RunData, task: str) -> list[dict]:
    return [r for r in run.records if r.get("task") == task]


def _details(run: RunData, record: dict) -> dict:
    return run.details.get(f"{record.get('dataset')}/{record.get('task')}", {})


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def jaccard_table(runs: Sequence[RunData]) -> str:
    rows = []
    for run in runs:
        for r in _records(run, ATTENTION_LOCALIZATION):
            m = r.get("metrics", {})
            best = f"{_number(m.get('jaccard_best_head'))} (head {m.get('best_head', '–')})"
            rows.append(f"<tr><td>{_e(run.label)}</td><td>{_e(r.get('dataset', ''))}</td>"
                        f"<td>{_number(m.get('jaccard_mean_map'))}</td><td>{best}</td>"
                        f"<td>{_number(m.get('jaccard_rollout'))}</td>"
                        f"<td class=\"baseline\">{_number(m.get('jaccard_gaussian_prior'))}</td>"
                        f"<td class=\"baseline\">{_number(m.get('jaccard_uniform'))}</td>"
                        f"<td>{m.get('images', '–')}</td></tr>")
    if not rows:
        return ""
    return ('<div class="panel"><table class="jaccard"><thead><tr><th>run</th><th>data</th>'
            "<th>heads' mean</th><th>best head</th><th>rollout</th><th>centred Gaussian</th>"
            f"<th>uniform</th><th>images</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            '<div class="hint">Jaccard index with the foreground mask, mean over images (higher is '
            "better); the last two columns are the trivial baselines.</div></div>")


def overlays(runs: Sequence[RunData]) -> str:
    """Rows of images, a column per run: each run's maps of the same image."""
    columns = []
    for run in runs:
        for r in _records(run, ATTENTION_LOCALIZATION):
            columns.append((run, r, _details(run, r).get("overlays", [])))
    if not any(o for _, _, o in columns):
        return ""
    head = "".join(f"<th>{_e(run.label)} · {_e(r.get('dataset', ''))}</th>" for run, r, _ in columns)
    body = []
    for i in range(max(len(o) for _, _, o in columns)):
        cells = []
        for run, _, drawn in columns:
            if i >= len(drawn):
                cells.append("<td>–</td>")
                continue
            o = drawn[i]
            alt = "attention of {} on {}".format(run.label, o.get("image", i))
            cells.append(f"<td>{_img(run.picture(o.get('file', '')), alt)}"
                         f'<div class="hint">{_e(o.get("image", ""))}</div></td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="panel"><table class="overlays"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
            '<div class="hint">Green: the object\'s mask. Heat: the class token\'s attention over the '
            "patches (brighter is more); white outline: the patches that hold 60% of it "
            "(eval.emergent.attention_mass), which the Jaccard index scores.</div></div>")


def _prototype_caption(p: dict) -> str:
    parts = [f"prototype {p['prototype']}", f"{p.get('usage', 0):.0%} of images"]
    if "purity" in p:
        parts.append(f"purity {p['purity']:.2f} ({_e(p.get('label', ''))})")
    parts.append(f"image/caption agreement {p.get('agreement', 0):.2f}")
    captions = ", ".join(f"“{_e(text)}” ×{n}" for text, n in p.get("captions", []))
    return " · ".join(parts) + (f"<br>captions: {captions}" if captions else "")


def galleries(runs: Sequence[RunData]) -> str:
    out = []
    for run in runs:
        for r in _records(run, PROTOTYPE_GALLERY):
            m = r.get("metrics", {})
            drawn = [p for p in _details(run, r).get("prototypes", []) if p.get("sheet")]
            if not drawn:
                continue
            purity = (f", image purity {_number(m.get('image_purity'))}, caption purity "
                      f"{_number(m.get('text_purity'))}" if "image_purity" in m else "")
            figures = "".join(f"<figure>{_img(run.picture(p['sheet']), _alt('prototype', p['prototype'], run))}"
                              f"<figcaption>{_prototype_caption(p)}</figcaption></figure>" for p in drawn)
            out.append(f"<h3>{_e(run.label)}: {m.get('prototypes_used', '–')} of {m.get('num_prototypes', '–')} "
                       f"prototypes used{purity}, image/caption agreement "
                       f"{_number(m.get('cross_modal_agreement'))}</h3><div class=\"tiles\">{figures}</div>")
    return f'<div class="panel">{"".join(out)}</div>' if out else ""


def neighbours(runs: Sequence[RunData]) -> str:
    out = []
    for run in runs:
        for r in _records(run, NEAREST_NEIGHBOURS):
            m = r.get("metrics", {})
            queries = _details(run, r).get("queries", [])
            if not queries:
                continue
            figures = []
            for q in queries:
                caption = f"query {q.get('index')}" + (f" ({_e(q['label'])})" if q.get("label") else "")
                if q.get("caption"):
                    caption += f"; second row: nearest to its caption “{_e(q['caption'])}”"
                figures.append(f"<figure>{_img(run.picture(q.get('sheet', '')), _alt('neighbours of', q.get('index'), run))}"
                               f"<figcaption>{caption}</figcaption></figure>")
            precision = ", ".join(f"{label} {_number(m[key])}" for key, label in (
                ("image_neighbour_precision", "by image"), ("caption_neighbour_precision", "by caption"))
                if key in m)
            share = f" ({precision}, k = {m.get('k')})" if precision else ""
            out.append(f"<h3>{_e(run.label)}: neighbours in the query's class{share}</h3>"
                       f'<div class="tiles">{"".join(figures)}</div>')
    return f'<div class="panel">{"".join(out)}</div>' if out else ""


def section_content(runs: Sequence[RunData]) -> str:
    return jaccard_table(runs) + overlays(runs) + galleries(runs) + neighbours(runs)
