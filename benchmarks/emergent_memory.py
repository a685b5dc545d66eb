"""Peak memory of `lipkit eval RUN --tasks emergent` as the number of composites grows (docs/guides/emergent.md
"Emergent properties"): the task streams its images, so the peak should not grow with them.

    python benchmarks/emergent_memory.py RUN_DIR [--per-image 1 --per-image 50]

RUN_DIR is a tuxpaint-vit run (e.g. `lipkit train --config tuxpaint-vit --set train.steps=3
--out /tmp/vit`). For each P it runs, in a fresh process,

    lipkit eval RUN_DIR --tasks emergent --set eval.emergent.composites_per_image=P

on the 200 held-out Tux Paint stamps (200 × P composites: P = 50 is 10,000 images) and reports
that process's peak resident memory (VmHWM). Memory only: the wall time is printed, but on a
shared machine it is not a speed figure.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no /proc/self/status: this benchmark reads Linux's VmHWM")


def child(run: str, per_image: int, out: str) -> None:
    """Evaluate in this process; print its peak RSS and the images scored as JSON."""
    from lipkit.cli import main

    start = time.perf_counter()
    code = main(["eval", run, "--tasks", "emergent", "--set", f"eval.emergent.composites_per_image={per_image}",
                 "--out", out, "--quiet"])
    records = json.loads(Path(out).read_text())
    images = next((r["metrics"]["images"] for r in records if r["task"] == "attention_localization"), 0)
    print(json.dumps({"exit": code, "seconds": time.perf_counter() - start, "images": images,
                      "peak_mib": peak_mib()}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", help="a lipkit run directory with a ViT image tower (e.g. tuxpaint-vit)")
    parser.add_argument("--per-image", type=int, action="append", help="composites per stamp (default 1 and 50)")
    parser.add_argument("--child", nargs=2, metavar=("PER_IMAGE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.run, int(args.child[0]), args.child[1])
    rows = ["| images scored | peak RSS of the evaluating process | wall time (shared machine) |", "|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for per_image in args.per_image or [1, 50]:
            out = str(Path(tmp) / f"results-{per_image}.json")
            result = subprocess.run([sys.executable, __file__, args.run, "--child", str(per_image), out],
                                    check=True, capture_output=True, text=True)
            *table, last = result.stdout.strip().splitlines()
            r = json.loads(last)
            print("\n".join(table))
            rows.append(f"| {r['images']:,} | {r['peak_mib']:.0f} MiB | {r['seconds']:.0f} s |")
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
