"""Peak memory of `lipkit eval` on a generated class folder of N small images (docs/guides/evaluate.md "Evaluate
on your own data"): does it stay flat as N grows?

    python benchmarks/eval_memory.py RUN_DIR [--images 10000 --images 100000] [--root DIR]

For each N it writes ROOT/fashion-N/<class>/<i>.png (28x28 grey PNGs: the Fashion-MNIST
training images, then the test images, then the training images mirrored, as far as N needs;
kept for the next call), then runs

    lipkit eval RUN_DIR --dataset ROOT/fashion-N --tasks zeroshot,linear --set eval.few_shot_k=16 \
        --set eval.linear_train_limit=0

in a fresh process (the probe on 16 images a class, so that nothing but embedding all N images
grows with N) and reports that process's peak resident memory (VmHWM) and the largest peak of
its image-decoding workers. Memory only: the wall time is printed, but on a shared machine it
is not a speed figure.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

TASKS = ["--tasks", "zeroshot,linear", "--set", "eval.few_shot_k=16", "--set", "eval.linear_train_limit=0",
         "--quiet"]


def write_folder(root: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    from lipkit.data import fashion_mnist_prompts, load_fashion_mnist

    folder = root / f"fashion-{n}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    train, train_labels = load_fashion_mnist("train")
    test, test_labels = load_fashion_mnist("test")
    images = np.concatenate([train, test, train[:, :, ::-1]])
    labels = np.concatenate([train_labels, test_labels, train_labels])
    if n > len(images):
        raise SystemExit(f"at most {len(images)} images")
    names = [c.replace(" ", "_") for c in fashion_mnist_prompts().class_names]
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.ascontiguousarray(images[i])).save(folder / names[labels[i]] / f"{i:06d}.png")
    done.write_text(f"{n}\n")
    return folder


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(run: str, folder: str, out: str) -> None:
    """Evaluate in this process; print its peak RSS and its workers' as JSON."""
    from lipkit.cli import main

    start = time.perf_counter()
    code = main(["eval", run, "--dataset", folder, "--out", out] + TASKS)
    print(json.dumps({"exit": code, "seconds": time.perf_counter() - start,
                      "main_peak_mib": peak_mib(),
                      "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", help="a lipkit run directory (28x28 grey images, e.g. fashion-tiny)")
    parser.add_argument("--images", type=int, action="append", help="folder sizes (default 10000 and 100000)")
    parser.add_argument("--root", default="/tmp/lipkit-eval-memory", help="where the folders are written")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.run, *args.child)
    rows = ["| images | peak RSS, main process | largest peak RSS, a decoding worker | wall time (shared machine) |",
            "|---:|---:|---:|---:|"]
    for n in args.images or [10_000, 100_000]:
        folder = write_folder(Path(args.root), n)
        out = Path(args.root) / f"results-{n}.json"
        result = subprocess.run([sys.executable, __file__, args.run, "--child", str(folder), str(out)],
                                check=True, capture_output=True, text=True)
        *table, last = result.stdout.strip().splitlines()
        r = json.loads(last)
        print("\n".join(table))
        rows.append(f"| {n:,} | {r['main_peak_mib']:.0f} MiB | {r['worker_peak_mib']:.0f} MiB | {r['seconds']:.0f} s |")
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
