"""The five studies of the theory lab (OBJECTIVES.md §6). Each declares the points it needs, then
turns the per-seed metrics into JSON entries, findings (numbers, not verdicts: docs/theory.md
reads them) and one figure.

A point fixes every knob a study varies (objective, temperature, batch_size, embed_dim, latent,
and lam for clip_reg), filled from the base config, so equal points of two studies share runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lipkit.theory.config import TheoryConfig
from lipkit.theory.plots import HeatMap, Panel, Series, heat_maps, line_panels
from lipkit.theory.runner import Runner
from lipkit.theory.stats import paired_gain, summarise


def make_point(cfg: TheoryConfig, objective: str, **changes) -> dict:
    point = {
        "objective": objective,
        "temperature": float(cfg.encoder.temperature),
        "batch_size": int(cfg.train.batch_size),
        "embed_dim": int(cfg.encoder.embed_dim),
        "latent": cfg.data.latent,
    }
    if objective == "clip_reg":
        point["lam"] = float(cfg.objective.clip_reg.lam)
    point.update(changes)
    if objective != "clip_reg":
        point.pop("lam", None)
    for key in ("temperature", "lam"):
        if key in point:
            point[key] = float(point[key])
    return point


def reg_point(cfg: TheoryConfig, lam: float, **changes) -> dict:
    """CLIP+Reg at lambda; lambda 0 is CLIP itself (the same loss), so it shares CLIP's runs."""
    return make_point(cfg, "clip", **changes) if lam == 0 else make_point(cfg, "clip_reg", lam=lam, **changes)


def entry(runner: Runner, point: dict) -> dict:
    runs = runner.runs(point)
    return {
        "params": point,
        "runs": [{"seed": s, "metrics": m} for s, m in zip(runner.seeds, runs)],
        "summary": summarise(runs),
    }


def series(runner: Runner, label: str, xs: list, points: list[dict], metric: str, scale: float = 1.0) -> Series:
    stats = [summarise(runner.runs(p))[metric] for p in points]
    return Series(label, list(xs), [scale * s["mean"] for s in stats], [scale * s["std"] for s in stats])


def _label(objective: str, cfg: TheoryConfig) -> str:
    return f"clip_reg (λ={cfg.objective.clip_reg.lam:g})" if objective == "clip_reg" else objective


@dataclass
class Study:
    name: str
    claim: str
    points: Callable[[TheoryConfig], list[dict]]
    analyse: Callable[[TheoryConfig, Runner, Path], tuple[list[dict], dict]]  # entries, findings; writes the PNG


# ----------------------------------------------------------------------------- margin-vs-temperature
def _margin_points(cfg):
    return [make_point(cfg, o, temperature=t) for o in cfg.studies.margin_objectives for t in cfg.studies.temperatures]


def _margin_analyse(cfg, runner, png):
    grid = cfg.studies
    taus = grid.temperatures
    by_obj = {o: [make_point(cfg, o, temperature=t) for t in taus] for o in grid.margin_objectives}
    findings: dict = {}
    for o, points in by_obj.items():
        means = [summarise(runner.runs(p))["margin_mean"]["mean"] for p in points]
        findings[o] = {
            "margin_mean_by_tau": means,
            "tau_of_max_margin": taus[max(range(len(taus)), key=means.__getitem__)],
            "margin_at_smallest_tau_over_max": means[0] / max(means) if max(means) > 0 else None,
        }
    if "clip" in by_obj and "clip_reg" in by_obj:
        findings["clip_reg_minus_clip"] = {
            metric: [paired_gain(runner.runs(a), runner.runs(b), metric) for a, b in zip(by_obj["clip"], by_obj["clip_reg"])]
            for metric in ("margin_mean", "margin_p10", "top1")
        }
    panels = [
        Panel("mean margin, cosine units", "temperature τ", "margin", [], "log", 0.0),
        Panel("mean margin, logit units (cosine × scale)", "temperature τ", "margin / τ", [], "log", 0.0),
        Panel("10th-percentile margin, cosine units", "temperature τ", "margin p10", [], "log", 0.0),
        Panel("zero-shot top-1", "temperature τ", "accuracy", [], "log"),
    ]
    for o, points in by_obj.items():
        for panel, metric in zip(panels, ("margin_mean", "margin_logit_mean", "margin_p10", "top1")):
            panel.series.append(series(runner, _label(o, cfg), taus, points, metric))
    line_panels(png, f"Margin vs temperature ({grid.seeds} seeds, mean ± std)", panels)
    return [entry(runner, p) for ps in by_obj.values() for p in ps], findings


# ----------------------------------------------------------------------------- regularizer-sweep
def _reg_points(cfg):
    taus = cfg.studies.temperatures
    # CLIP at every tau is the reference of the gains, whether or not 0 is in the lambda grid
    return [reg_point(cfg, lam, temperature=t) for lam in [0.0, *cfg.studies.reg_lambdas] for t in taus]


def _reg_analyse(cfg, runner, png):
    grid = cfg.studies
    lams, taus = grid.reg_lambdas, grid.temperatures
    cells = [[reg_point(cfg, lam, temperature=t) for t in taus] for lam in lams]
    clip_row = [make_point(cfg, "clip", temperature=t) for t in taus]
    margin = [[summarise(runner.runs(p))["margin_mean"]["mean"] for p in row] for row in cells]
    gain = {
        metric: [[paired_gain(runner.runs(c), runner.runs(p), metric) for c, p in zip(clip_row, row)] for row in cells]
        for metric in ("margin_mean", "top1")
    }
    best = [max(range(len(lams)), key=lambda i: margin[i][j]) for j in range(len(taus))]
    findings = {
        "lambdas": lams,
        "temperatures": taus,
        "margin_mean": margin,
        "margin_gain_over_clip": [[g["mean"] for g in row] for row in gain["margin_mean"]],
        "top1_gain_over_clip": [[g["mean"] for g in row] for row in gain["top1"]],
        "margin_gain_positive_seeds": [[g["positive_seeds"] for g in row] for row in gain["margin_mean"]],
        "best_lambda_by_tau": [lams[i] for i in best],
    }
    labels = dict(row_labels=[f"{x:g}" for x in lams], column_labels=[f"{t:g}" for t in taus],
                  row_name="λ (times s = 1/τ)", column_name="temperature τ")
    every_seed = {m: [[g["positive_seeds"] == g["seeds"] for g in row] for row in gain[m]] for m in gain}
    heat_maps(png, f"CLIP+Reg: λ × τ ({grid.seeds} seeds, means; gains paired by seed, * = positive on every seed)", [
        HeatMap("mean margin (cosine)", margin, **labels),
        HeatMap("margin gain over CLIP", findings["margin_gain_over_clip"], diverging=True,
                marks=every_seed["margin_mean"], **labels),
        HeatMap("top-1 gain over CLIP", findings["top1_gain_over_clip"], diverging=True, marks=every_seed["top1"],
                **labels),
    ])
    return [entry(runner, p) for row in cells for p in row], findings


# ----------------------------------------------------------------------------- square-vs-clip
def _compare_points(cfg):
    g = cfg.studies
    return [make_point(cfg, o, embed_dim=d, latent=lat)
            for lat in g.compare_latents for o in g.compare_objectives for d in g.compare_embed_dims]


def _compare_analyse(cfg, runner, png):
    g = cfg.studies
    dims = g.compare_embed_dims
    panels, entries, findings = [], [], {"embed_dims": dims, "latents": {}}
    for lat in g.compare_latents:
        by_obj = {o: [make_point(cfg, o, embed_dim=d, latent=lat) for d in dims] for o in g.compare_objectives}
        f: dict = {
            m: {o: [summarise(runner.runs(p))[m]["mean"] for p in points] for o, points in by_obj.items()}
            for m in ("top1", "margin_mean")
        }
        if "clip" in by_obj:
            f["minus_clip_top1"] = {
                o: [paired_gain(runner.runs(c), runner.runs(p), "top1") for c, p in zip(by_obj["clip"], points)]
                for o, points in by_obj.items() if o != "clip"
            }
        findings["latents"][lat] = f
        top1 = Panel(f"zero-shot top-1, {lat} latent", "embedding dimension d", "accuracy", [], "log2", xticks=dims)
        margin = Panel(f"mean margin (cosine), {lat} latent", "embedding dimension d", "margin", [], "log2", 0.0,
                       xticks=dims)
        for o, points in by_obj.items():
            top1.series.append(series(runner, _label(o, cfg), dims, points, "top1"))
            margin.series.append(series(runner, _label(o, cfg), dims, points, "margin_mean"))
            entries += [entry(runner, p) for p in points]
        panels += [top1, margin]
    line_panels(png, f"Square loss vs CLIP and baselines, {cfg.data.num_classes} classes "
                     f"({g.seeds} seeds, mean ± std)", panels)
    return entries, findings


# ----------------------------------------------------------------------------- top-r
def _top_r_points(cfg):
    return [make_point(cfg, o, embed_dim=cfg.studies.top_r_embed_dim) for o in cfg.studies.top_r_objectives]


def _top_r_analyse(cfg, runner, png):
    k = cfg.data.num_classes
    rs = list(range(1, k + 1))
    points = {o: make_point(cfg, o, embed_dim=cfg.studies.top_r_embed_dim) for o in cfg.studies.top_r_objectives}
    findings = {"r": rs, "error_by_r": {}}
    panel = Panel(f"top-r zero-shot error, d = {cfg.studies.top_r_embed_dim}", "r", "error (1 − top-r accuracy)",
                  [], xticks=rs)
    for o, p in points.items():
        s = summarise(runner.runs(p))
        findings["error_by_r"][o] = [1 - s[f"top{r}"]["mean"] for r in rs]
        panel.series.append(Series(_label(o, cfg), rs, findings["error_by_r"][o], [s[f"top{r}"]["std"] for r in rs]))
    line_panels(png, f"Top-r error vs r ({cfg.studies.seeds} seeds, mean ± std)", [panel], columns=1)
    return [entry(runner, p) for p in points.values()], findings


# ----------------------------------------------------------------------------- batch-size
def _batch_points(cfg):
    g = cfg.studies
    return [make_point(cfg, o, temperature=t, batch_size=b)
            for t in g.batch_temperatures for o in g.batch_objectives for b in g.batch_sizes]


def _batch_analyse(cfg, runner, png):
    g = cfg.studies
    panels, entries, findings = [], [], {"batch_sizes": g.batch_sizes}
    for t in g.batch_temperatures:
        by_obj = {o: [make_point(cfg, o, temperature=t, batch_size=b) for b in g.batch_sizes] for o in g.batch_objectives}
        margin = Panel(f"mean margin, τ = {t:g}", "batch size", "margin", [], "log2", 0.0, xticks=g.batch_sizes)
        top1 = Panel(f"zero-shot top-1, τ = {t:g}", "batch size", "accuracy", [], "log2", xticks=g.batch_sizes)
        f_t: dict = {}
        for o, points in by_obj.items():
            margin.series.append(series(runner, _label(o, cfg), g.batch_sizes, points, "margin_mean"))
            top1.series.append(series(runner, _label(o, cfg), g.batch_sizes, points, "top1"))
            f_t[o] = {m: [summarise(runner.runs(p))[m]["mean"] for p in points] for m in ("margin_mean", "top1")}
            entries += [entry(runner, p) for p in points]
        if "clip" in by_obj and "clip_reg" in by_obj:
            f_t["clip_reg_minus_clip_margin"] = [
                paired_gain(runner.runs(a), runner.runs(b), "margin_mean") for a, b in zip(by_obj["clip"], by_obj["clip_reg"])
            ]
        findings[f"tau={t:g}"] = f_t
        panels += [margin, top1]
    line_panels(png, f"Batch size, {cfg.train.steps} steps each ({g.seeds} seeds, mean ± std)", panels)
    return entries, findings


STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        Study("margin-vs-temperature",
              "The margin CLIP learns depends on the temperature: at small τ the loss is satisfied by a "
              "small cosine margin (of order τ); the positive-pair regularizer raises it.",
              _margin_points, _margin_analyse),
        Study("regularizer-sweep",
              "CLIP+Reg raises the margin at small τ for a suitable λ; too large a λ hurts.",
              _reg_points, _reg_analyse),
        Study("square-vs-clip",
              "A square loss on similarities fails at zero-shot where CLIP succeeds.",
              _compare_points, _compare_analyse),
        Study("top-r", "The top-r zero-shot error falls with r.", _top_r_points, _top_r_analyse),
        Study("batch-size",
              "How batch size moves CLIP's margin and zero-shot accuracy, and whether CLIP+Reg's gain "
              "depends on it.",
              _batch_points, _batch_analyse),
    )
}
