"""Runs studies end to end: every point they need (each trained once), then per study a JSON file
and a PNG in the output directory, both written atomically."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from lipkit.config import to_dict
from lipkit.files import write_json
from lipkit.theory.config import TheoryConfig
from lipkit.theory.runner import Runner
from lipkit.theory.studies import STUDIES

# Every per-run metric besides top1..topK (checked by the tests, described in docs/theory.md).
RUN_METRICS = ("margin_mean", "margin_p10", "margin_logit_mean", "margin_logit_p10", "scale",
               "positive_cosine", "final_loss")


@dataclass
class LabResult:
    files: list[Path]
    runs_trained: int
    wall_seconds: float
    cpu_seconds: float  # this process and its worker processes, user + system


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_studies(names: list[str], cfg: TheoryConfig, out_dir: Path, workers: int = 1, progress: bool = True) -> LabResult:
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        raise KeyError(f"unknown studies {unknown}")  # the command validates names first
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    runner = Runner(cfg, workers=workers, progress=progress)
    runner.run([p for n in names for p in STUDIES[n].points(cfg)], desc=f"theory {' + '.join(names)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name in names:
        study = STUDIES[name]
        png = out_dir / f"{name}.png"
        entries, findings = study.analyse(cfg, runner, png)
        doc = {
            "study": name,
            "claim": study.claim,
            "seeds": runner.seeds,
            "config": to_dict(cfg),
            "points": entries,
            "findings": findings,
            "plot": png.name,
        }
        write_json(out_dir / f"{name}.json", doc, allow_nan=False)
        files += [out_dir / f"{name}.json", png]
    return LabResult(files, len(runner.results), time.perf_counter() - wall0, _cpu_seconds() - cpu0)
