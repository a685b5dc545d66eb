"""The WiSE-FT curve: zero-shot accuracy in distribution and under a distribution shift along the
weight-space line from run A (α = 0) to run B (α = 1), as `lipkit interpolate --alphas` measures it
(Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, Fig. 1).

`sweep` loads each mix (1 − α)·A + α·B into one model and runs the zero-shot task on the
in-distribution dataset and on the shifted one (built-in names or paths, as `lipkit eval --dataset`
reads them; each opened once); `CURVE_FILE` in the interpolated run holds the curve, which
`lipkit report` draws. `read_curve` reads it back. Only `sweep` needs torch, and imports it when
called, so the report reads curves without it.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from .errors import EvalError

CURVE_FILE = "wise_ft.json"
METRIC = "acc1"  # of the zeroshot_classification records


def parse_alphas(text: str) -> list[float]:
    """`0,0.25,0.5` -> [0.0, 0.25, 0.5]: each in [0, 1], sorted, without repeats."""
    try:
        alphas = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EvalError(f"--alphas {text}: expected numbers between 0 and 1 separated by commas, "
                        "e.g. 0,0.25,0.5,0.75,1") from None
    bad = [a for a in alphas if not 0.0 <= a <= 1.0]
    if bad or not alphas:
        raise EvalError(f"--alphas {text}: each must be between 0 (run A) and 1 (run B)"
                        + (f", got {bad[0]:g}" if bad else ""))
    return sorted(set(alphas))


def _zeroshot(em, data, progress: bool) -> dict:
    from .context import Context
    from .errors import TaskSkipped
    from .registry import TASKS
    from .results import result_record

    ctx = Context(em, data, progress=progress, store={})  # a new store: the weights changed
    ctx.prepare(["zeroshot"])
    try:
        [result] = TASKS["zeroshot"].evaluate(em, data, cache=ctx)
    except TaskSkipped as skipped:
        raise EvalError(f"zero-shot cannot run on {data.name}: {skipped.reason}") from None
    return result_record(result.dataset, em.name, em.pretrained, result.task, result.metrics)


def sweep(run_dir: Path, pair, alphas: Sequence[float], *, dataset: str = "", shift: str = "",
          overrides: Sequence[str] = (), progress: bool = True) -> dict:
    """The curve over `alphas` of the checked `pair` (lipkit.runs.interpolate.Pair), evaluated as
    the run directory `run_dir` (a mix of the pair: its config, tokenizer and preprocessing) is;
    `dataset` (default: its eval.dataset) and `shift` are built-in names or paths, `overrides`
    `eval.KEY=VALUE` settings. Every dataset is opened before any mix is made."""
    import dataclasses

    from lipkit.progress import progress_bar

    from .adapter import from_lipkit_run
    from .runner import open_datasets

    em = from_lipkit_run(run_dir, overrides)
    specs = [dataset or em.eval.dataset] + ([shift] if shift else [])
    em.eval = dataclasses.replace(em.eval, datasets=specs, dataset_train="", shift="")
    datasets = open_datasets(em)
    em.pretrained = f"(1 - alpha) * {pair.a.path} + alpha * {pair.b.path}"
    points = []
    for alpha in progress_bar(list(alphas), desc="interpolate", disable=not progress):
        em.model.load_state_dict(pair.mix(alpha))
        em.name = f"wise-ft alpha={alpha:g}"
        records = [_zeroshot(em, d, progress) for d in datasets]
        accs = [r["metrics"][METRIC] for r in records]
        points.append({"alpha": alpha, "in_distribution": accs[0], "shifted": accs[1] if shift else None,
                       "records": records})
    return {"format": 1, "task": "zeroshot_classification", "metric": METRIC,
            "a": str(pair.a.path), "b": str(pair.b.path),
            "in_distribution": datasets[0].name, "shifted": datasets[1].name if shift else None,
            "points": points}


def curve_rows(curve: dict) -> list[dict]:
    """The curve as table rows: alpha, then the accuracy on each dataset (named)."""
    names = [curve["in_distribution"]] + ([curve["shifted"]] if curve.get("shifted") else [])
    return [{"alpha": p["alpha"], **{f"{n} zero-shot {curve.get('metric', METRIC)}": p[k]
                                     for n, k in zip(names, ("in_distribution", "shifted"))}}
            for p in curve["points"]]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_curve(path: Path) -> dict:
    """A curve `sweep` wrote (with the run's `alpha`, the mix it holds, added), checked."""
    try:
        curve = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EvalError(f"{path}: cannot read the WiSE-FT curve ({e})") from None
    points = curve.get("points") if isinstance(curve, dict) else None
    shifted = isinstance(curve, dict) and curve.get("shifted") is not None
    good = (isinstance(points, list) and points and isinstance(curve.get("in_distribution"), str)
            and all(isinstance(p, dict) and _number(p.get("alpha")) and _number(p.get("in_distribution"))
                    and (_number(p.get("shifted")) if shifted else p.get("shifted") is None) for p in points))
    if not good:
        raise EvalError(f"{path}: not a WiSE-FT curve of lipkit interpolate (needs points with alpha, "
                        "in_distribution and shifted accuracies)")
    return curve
