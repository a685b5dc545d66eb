"""`make demo`: train CLIP and xCLIP with the fashion-tiny preset, evaluate both (and xCLIP's
prototypes), print a table."""
from __future__ import annotations

import time
from pathlib import Path

from lipkit.config import load_config
from lipkit.eval.registry import LINEAR_PROBE, PROTOTYPE_COLLAPSE, ZEROSHOT_CLASSIFICATION
from lipkit.eval.results import format_table
from lipkit.eval.runner import evaluate_run
from lipkit.train import train

OBJECTIVES = ("clip", "xclip")


def run_demo(out: Path, steps: int | None = None) -> list[dict]:
    rows = []
    for name in OBJECTIVES:
        overrides = [f"objective.name={name}"] + ([f"train.steps={steps}"] if steps else [])
        cfg = load_config("fashion-tiny", overrides)
        run_dir = out / name
        print(f"== training {name} -> {run_dir}", flush=True)
        result = train(cfg, run_dir, overwrite=True)
        if result.stopped_by is not None:
            print(f"demo stopped by {result.stopped_by}; {name} was checkpointed at {result.checkpoint}. "
                  f"Finish it with: lipkit train --out {run_dir} --resume latest", flush=True)
            return rows
        t0 = time.perf_counter()
        tasks = ["zeroshot", "linear"] + (["collapse"] if "prototypes" in result.model.heads else [])
        records = evaluate_run(run_dir, tasks, out=run_dir / "results.json")
        by_task = {r["task"]: r["metrics"] for r in records}
        protos = by_task.get(PROTOTYPE_COLLAPSE)
        rows.append({
            "objective": name,
            "zero-shot top-1": f"{by_task[ZEROSHOT_CLASSIFICATION]['acc1']:.3f}",
            "linear-probe top-1": f"{by_task[LINEAR_PROBE]['acc1']:.3f}",
            # nCLIP's prototypes of the test images: mutual information / log C, NMI with the
            # class, prototypes used (docs/guides/objectives.md, "nCLIP: the default, and seeing collapse")
            "image prototypes (I/log C, NMI, used)": "–" if protos is None else
                f"{protos['image_mutual_information_ratio']:.2f}, {protos['image_label_nmi']:.2f}, "
                f"{protos['image_distinct_prototypes']}",
            "train time": f"{result.seconds:.0f} s",
            "eval time": f"{time.perf_counter() - t0:.0f} s",
        })
    table = format_table(rows, list(rows[0]))
    print("\n" + table)
    (out / "summary.md").write_text(table + "\n")
    return rows
