"""`lipkit report`: one self-contained HTML page (inline CSS, PNG figures as data URIs)."""
from __future__ import annotations

import base64
import datetime as _dt
import html
import os
from collections.abc import Sequence
from pathlib import Path

from lipkit.eval.registry import (
    CAPTION_PROBE,
    KNN_CLASSIFICATION,
    LINEAR_PROBE,
    OOD_CLASSIFICATION,
    PROTOTYPE_COLLAPSE,
    WORD_SIMILARITY,
    ZEROSHOT_CLASSIFICATION,
    ZEROSHOT_RETRIEVAL,
)
from lipkit.files import atomic_write

from . import emergent, plots, wise_ft
from .collect import RunData, load_sources

# (label, task, metric, dataset suffix, higher is better: True, False, or how to read a figure with no
# better direction, scale): scale "unit" is a share in
# [0, 1], "signed" in [-1, 1], "of:KEY" a count out of the record's KEY (the bar is the share).
GLANCE = [
    ("Zero-shot top-1", ZEROSHOT_CLASSIFICATION, "acc1", "", True, "unit"),
    ("Zero-shot mean per-class recall", ZEROSHOT_CLASSIFICATION, "mean_per_class_recall", "", True, "unit"),
    ("Linear probe top-1", LINEAR_PROBE, "acc1", "", True, "unit"),
    ("kNN top-1 (k = 20)", KNN_CLASSIFICATION, "acc1", "", True, "unit"),
    ("Image → text R@1", ZEROSHOT_RETRIEVAL, "text_retrieval_recall@1", "", True, "unit"),
    ("Text → image R@1", ZEROSHOT_RETRIEVAL, "image_retrieval_recall@1", "", True, "unit"),
    ("Corruptions: zero-shot drop", OOD_CLASSIFICATION, "zeroshot_drop", "-c", False, "unit"),
    ("Corruptions: linear drop", OOD_CLASSIFICATION, "linear_drop", "-c", False, "unit"),
    ("Photo → cartoon: zero-shot drop", OOD_CLASSIFICATION, "zeroshot_drop", "-style", False, "unit"),
    ("WordSim-353 Spearman ρ", WORD_SIMILARITY, "wordsim_spearman", "", True, "signed"),
    ("Caption-category probe top-1", CAPTION_PROBE, "caption_probe_acc1", "", True, "unit"),
    ("Prototype mutual information I/log min(K, C), images", PROTOTYPE_COLLAPSE,
     "image_mutual_information_ratio", "", True, "unit"),
    ("Prototype mutual information I/log min(K, C), texts", PROTOTYPE_COLLAPSE,
     "text_mutual_information_ratio", "", True, "unit"),
    ("Prototype–class NMI, images", PROTOTYPE_COLLAPSE, "image_label_nmi", "", True, "unit"),
    ("Prototype–class NMI, texts", PROTOTYPE_COLLAPSE, "text_label_nmi", "", True, "unit"),
    ("Prototypes used (argmax), images", PROTOTYPE_COLLAPSE, "image_distinct_prototypes", "", True,
     "of:num_prototypes"),
    ("Image/text argmax agreement", PROTOTYPE_COLLAPSE, "argmax_agreement", "", "not a score: a collapsed model "
     "(one prototype for everything) agrees 100%", "unit"),
]

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --card:#fff; --accent:#3366cc; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 28px 48px; }
header h1 { margin:0; font-size:28px; letter-spacing:-0.3px; }
header p { margin:4px 0 0; color:var(--muted); }
h2 { font-size:19px; margin:34px 0 4px; }
h2 + p.lead { margin:0 0 12px; color:var(--muted); max-width:820px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(250px, 1fr)); gap:14px; margin-top:20px; }
.card { background:var(--card); border-radius:10px; padding:14px 16px; border-top:5px solid var(--c);
        box-shadow:0 1px 3px rgba(15,23,42,.08); }
.card .name { font-weight:bold; font-size:17px; }
.card .obj { display:inline-block; margin-left:6px; padding:1px 8px; border-radius:9px; font-size:12px;
             background:var(--c); color:#fff; vertical-align:2px; }
.card dl { display:grid; grid-template-columns:auto 1fr; gap:2px 12px; margin:10px 0 0; font-size:13px; }
.card dt { color:var(--muted); } .card dd { margin:0; text-align:right; font-variant-numeric:tabular-nums; }
.panel { background:var(--card); border-radius:10px; padding:16px 18px; box-shadow:0 1px 3px rgba(15,23,42,.08); }
table.glance { border-collapse:collapse; width:100%; font-size:14px; }
.glance th, .glance td { padding:7px 10px; border-bottom:1px solid var(--line); text-align:left; }
.glance thead th { font-size:13px; color:var(--muted); font-weight:normal; border-bottom:2px solid var(--line); }
.glance thead th .dot { display:inline-block; width:10px; height:10px; border-radius:5px; background:var(--c); margin-right:6px; }
.glance td.v { width:var(--w); min-width:150px; }
.bar { display:flex; align-items:center; gap:8px; font-variant-numeric:tabular-nums; }
.bar i { display:block; height:8px; border-radius:4px; background:var(--c); opacity:.85; width:var(--p); min-width:2px; }
.bar.best b { font-weight:bold; } .bar:not(.best) b { font-weight:normal; }
.glance td.na { color:#a0aab4; }
.hint { color:var(--muted); font-size:12px; }
figure { margin:0; } figure.panel + figure.panel { margin-top:14px; }
figure img { display:block; max-width:100%; height:auto; margin:0 auto; }
figcaption { color:var(--muted); font-size:13px; margin-top:8px; max-width:900px; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:14px; }
@media (max-width: 900px) { .grid2 { grid-template-columns:1fr; } }
footer { margin-top:36px; color:var(--muted); font-size:12px; }
code { font-size:12.5px; background:#eef1f5; padding:1px 5px; border-radius:4px; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _figure(png: bytes | None, alt: str, caption: str) -> str:
    if png is None:
        return ""
    return f'<figure class="panel">{_img(png, alt)}<figcaption>{caption}</figcaption></figure>'


def _fmt(value, scale: str, total=None) -> str:
    if scale.startswith("of:"):
        return f"{value:.0f} / {total:.0f}" if total else f"{value:.0f}"
    return f"{value:.3f}"


def _run_card(run: RunData, colour: str) -> str:
    last = run.log[-1] if run.log else {}
    rows = []
    if last:
        rows.append(("steps", f"{last.get('step', '–')}"))
        if isinstance(last.get("samples"), (int, float)):
            rows.append(("samples seen", f"{last['samples']:,}"))
        if isinstance(last.get("loss"), (int, float)):
            rows.append(("final loss", f"{last['loss']:.3f}"))
        speeds = [r["samples_per_s"] for r in run.log if isinstance(r.get("samples_per_s"), (int, float))]
        if speeds:
            rows.append(("samples / s", f"{sorted(speeds)[len(speeds) // 2]:,.0f}"))
    datasets = sorted({r.get("dataset", "") for r in run.records})
    if datasets:
        rows.append(("evaluated on", ", ".join(datasets)))
    rows.append(("results", f"{len(run.records)} records"))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return (f'<div class="card" style="--c:{colour}"><span class="name">{_e(run.label)}</span>'
            f'<span class="obj">{_e(run.objective)}</span><dl>{dl}</dl>'
            f'<div class="hint">{_e(run.path)}</div></div>')


def _glance(runs: Sequence[RunData], colours: dict[str, str]) -> str:
    head = "".join(f'<th style="--c:{colours[r.label]}"><span class="dot"></span>{_e(r.label)}</th>'
                   for r in runs)
    body = []
    for label, task, key, suffix, higher, scale in GLANCE:
        values = [run.metric(task, key, suffix) for run in runs]
        present = [v for v in values if v is not None]
        if not present:
            continue
        best = None if isinstance(higher, str) else max(present) if higher else min(present)
        cells = []
        for run, v in zip(runs, values):
            if v is None:
                cells.append('<td class="na">–</td>')
                continue
            total = run.metric(task, scale[3:], suffix) if scale.startswith("of:") else None
            share = min(1.0, abs(v) / (total or 1.0)) if scale.startswith("of:") else min(1.0, abs(v))
            cls = "bar best" if len(present) > 1 and v == best else "bar"
            cells.append(f'<td class="v" style="--c:{colours[run.label]};--p:{share * 100:.1f}%">'
                         f'<span class="{cls}"><b>{_fmt(v, scale, total)}</b><i></i></span></td>')
        arrow = higher if isinstance(higher, str) else "higher is better" if higher else "lower is better"
        body.append(f'<tr><th scope="row">{_e(label)}<div class="hint">{arrow}</div></th>{"".join(cells)}</tr>')
    if not body:
        return ""
    return (f'<div class="panel"><table class="glance"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _section(title: str, lead: str, content: str) -> str:
    if not content.strip():
        return ""
    return f"<section><h2>{_e(title)}</h2><p class=\"lead\">{lead}</p>{content}</section>"


def render(runs: Sequence[RunData], title: str = "lipkit report") -> str:
    """The page for `runs`, as a string."""
    colours = plots.palette(runs)
    cards = "".join(_run_card(r, colours[r.label]) for r in runs)
    classify = plots.grouped_bars(runs, [
        ("zero-shot", ZEROSHOT_CLASSIFICATION, "acc1"),
        ("linear probe", LINEAR_PROBE, "acc1"),
        ("kNN", KNN_CLASSIFICATION, "acc1"),
    ], "top-1 accuracy", "top-1 accuracy")
    robust = plots.grouped_bars(runs, [
        ("zero-shot\nclean", OOD_CLASSIFICATION, "zeroshot_clean_acc1", "-c"),
        ("zero-shot\ncorrupted", OOD_CLASSIFICATION, "zeroshot_shifted_acc1", "-c"),
        ("linear\nclean", OOD_CLASSIFICATION, "linear_clean_acc1", "-c"),
        ("linear\ncorrupted", OOD_CLASSIFICATION, "linear_shifted_acc1", "-c"),
        ("zero-shot\ncartoons", OOD_CLASSIFICATION, "zeroshot_shifted_acc1", "-style"),
    ], "accuracy, clean vs shifted", "top-1 accuracy")
    text_bars = plots.grouped_bars(runs, [
        ("WordSim-353\nSpearman ρ", WORD_SIMILARITY, "wordsim_spearman"),
        ("caption-category\nprobe top-1", CAPTION_PROBE, "caption_probe_acc1"),
    ], "text tower", ylim=(min(0.0, *(r.metric(WORD_SIMILARITY, "wordsim_spearman") or 0 for r in runs)) - 0.05, 1))
    sections = [
        _section("At a glance", "The headline number of every task; the best run per row is in "
                 "bold, and each bar is the value on a 0–1 scale.", _glance(runs, colours)),
        _section("Training", "Loss per logged step (faint: raw; solid: moving average), each "
                 "objective's terms, and nCLIP's prototype usage when the objective has one.",
                 _figure(plots.training_curves(runs), "training curves",
                         "From each run's <code>metrics.jsonl</code>.")),
        _section("Classification", "Zero-shot uses prompt templates never seen in training; "
                 "the probes use frozen features.",
                 _figure(classify, "classification accuracy",
                         "Linear probe: logistic regression, weight decay chosen on a validation "
                         "split. kNN: cosine, k = 20, T = 0.07.")),
        _section("Retrieval", "How often the right caption (or image) is in the top K. Captions "
                 "with the same text count as the same caption.",
                 _figure(plots.recall_curves(runs), "recall curves",
                         "Dots mark R@1, R@5 and R@10.")),
        _section("Robustness", "Accuracy as the test images are corrupted (ImageNet-C "
                 "corruptions, severity 1–5) or change style.",
                 _figure(plots.corruption_curves(runs), "accuracy under corruption",
                         "Solid: zero-shot; dashed: linear probe fitted on clean features. "
                         "Severity 0 is the clean test set.")
                 + _figure(robust, "clean vs shifted", "Means over all corruptions and severities.")),
        _section("Text representations", "Does the text tower place related words together, "
                 "and do its caption embeddings carry the caption's category?",
                 _figure(text_bars, "word similarity",
                         "WordSim-353: Spearman correlation of 353 human word-similarity "
                         "judgements with cosine similarity. Caption probe: logistic regression "
                         "from caption embeddings to the category the caption names.")),
        _section("Prototype collapse", "For nCLIP / xCLIP: does the data spread over the "
                 "prototypes, or does everything land on a few?",
                 _figure(plots.prototype_usage(runs), "prototype usage",
                         "Share of samples whose most likely prototype is each prototype, most "
                         "used first. Healthy use is a long, flat histogram near the dashed "
                         "uniform line; a single bar reaching 1 is collapse onto one "
                         "prototype.")),
        _section("Emergent properties", "Do the properties of visual self-supervised models "
                 "emerge? Whether the class token's attention covers the object (Jaccard index "
                 "with its mask, against a centred Gaussian and a uniform map), what the "
                 "prototypes stand for, and whether neighbours share a class "
                 "(<code>lipkit eval RUN --tasks emergent</code>).", emergent.section_content(runs)),
        _section("Weight-space interpolation (WiSE-FT)", "Zero-shot accuracy of the weight-space mixes "
                 "of two runs, in distribution and under a distribution shift: does a mix of the fine-tuned "
                 "model with the one it started from keep the gains and the robustness?",
                 wise_ft.section_content(runs)),
    ]
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    n = len(runs)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}{emergent.CSS}{wise_ft.CSS}</style></head><body><main>"
            f"<header><h1>{_e(title)}</h1><p>{n} run{'s' if n != 1 else ''} · generated {stamp}</p>"
            f'</header><div class="cards">{cards}</div>{"".join(sections)}'
            f"<footer>Made by <code>lipkit report</code>. Numbers are CLIP_benchmark records "
            f"(<code>lipkit eval --out</code>); every figure is embedded in this file.</footer>"
            f"</main></body></html>\n")


def build_report(sources: Sequence[str | Path], out: str | Path, title: str = "lipkit report") -> Path:
    """Read the runs, write the page atomically; returns its path."""
    page = render(load_sources(sources), title)
    out = Path(out)
    def write(tmp: Path) -> None:
        tmp.write_text(page, encoding="utf-8")
        os.chmod(tmp, 0o644)  # a page to share, not the 0600 of a temp file

    atomic_write(out, write)
    return out
