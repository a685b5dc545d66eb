"""`lipkit eval` against CLIP_benchmark 1.6.2 on the same model and the same data, timed in one run:
zero-shot classification, retrieval and the linear probe (CLIP_benchmark's solver in both, and
lipkit's own), each as a user runs it, with the ratio CLIP_benchmark time / lipkit time (above 1:
lipkit is faster). Run it with .venv-peer, where clip-benchmark is installed (`make peer`):

    .venv-peer/bin/python benchmarks/clip_benchmark_speed.py [--images 2000] [--model FOLDER] [--root DIR]

Data: Fashion-MNIST, written by CLIP_benchmark's own writer (tests/_clip_benchmark.py): a
classification set of `--images` test and `--images` training images (10 classes, CLIP_benchmark's
layout), and a retrieval set of `--images` further test images with two captions each. The model:
`--model` (an open_clip folder, e.g. from `lipkit export --to open_clip`), else a 3-step fashion-tiny
run exported to open_clip. Each task runs as its own command would: CLIP_benchmark loads the
model, builds the `wds/` dataset and runs the task (its `run()`, call for call, amp off, features
not cached); lipkit runs `lipkit eval open_clip:local-dir:MODEL --tasks TASK`. Both read images
with the same batch size and number of decoding workers, in this one process, one after the
other, `--repeats` times (the fastest of each is kept). The last row is every task in one command
each way (lipkit embeds each image set once for all its tasks).

Wall time on a shared machine is only as good as the machine is quiet: run it alone.
"""
from __future__ import annotations

import argparse
import os
import contextlib
import io
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the CLIP_benchmark side, shared with its agreement test
SHARDS = 8  # per split: CLIP_benchmark gives each decoding worker whole shards
SECTION = "## lipkit eval against CLIP_benchmark"


def _data(root: Path, n: int) -> tuple[Path, Path]:
    """(classification, retrieval) datasets in CLIP_benchmark's layout, written once per size."""
    from PIL import Image

    from _clip_benchmark import write_classification, write_retrieval
    from lipkit.data import fashion_mnist_prompts, load_fashion_mnist

    classes, captions = root / f"fashion{n}", root / f"fashion{n}_captions"
    shard = -(-n // SHARDS)
    if not (classes / "test" / "nshards.txt").is_file():
        shutil.rmtree(classes, ignore_errors=True)
        prompts = fashion_mnist_prompts()
        train, train_labels = load_fashion_mnist("train")
        test, test_labels = load_fashion_mnist("test")
        write_classification(classes, {
            "train": [(Image.fromarray(train[i]), int(train_labels[i])) for i in range(n)],
            "test": [(Image.fromarray(test[i]), int(test_labels[i])) for i in range(n)]},
            prompts.class_names, [t.replace("{}", "{c}") for t in prompts.templates[:4]], shard_size=shard)
    if not (captions / "test" / "nshards.txt").is_file():
        shutil.rmtree(captions, ignore_errors=True)
        names = fashion_mnist_prompts().class_names
        test, test_labels = load_fashion_mnist("test")
        write_retrieval(captions, [(Image.fromarray(test[i]), [f"a photo of a {names[test_labels[i]]}, number {i}",
                                                             f"picture {i}: {names[test_labels[i]]}"])
                                   for i in range(n, 2 * n)], shard_size=shard)
    return classes, captions


def _model(root: Path) -> Path:
    from _interop_data import tiny_run
    from lipkit.interop.export import export_run

    folder = root / "model"
    if not (folder / "open_clip_config.json").is_file():
        tiny_run(root / "run")
        export_run(root / "run", "open_clip", folder)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000, help="test images (and training images, and captioned images)")
    p.add_argument("--model", type=Path, help="an open_clip folder (default: a 3-step fashion-tiny run, exported)")
    p.add_argument("--root", type=Path, help="where the data (and the default model) are kept between runs")
    p.add_argument("--batch-size", type=int, default=64, help="both sides (CLIP_benchmark's default)")
    p.add_argument("--workers", type=int, default=2, help=f"image-decoding processes, both sides (at most {SHARDS})")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--page", type=Path, help=f"(re)write the section {SECTION!r} of this page, e.g. docs/performance.md")
    args = p.parse_args()
    args.load_before = os.getloadavg()[0]  # what else ran (the page says so), before this adds its own
    warnings.simplefilter("ignore")

    from _clip_benchmark import ClipBenchmark, lipkit_eval

    root = args.root or Path(tempfile.gettempdir()) / "lipkit-clip-benchmark-speed"
    root.mkdir(parents=True, exist_ok=True)
    model = args.model or _model(root)
    classes, captions = _data(root, args.images)
    work = Path(tempfile.mkdtemp(prefix="cbspeed-"))
    b, w = args.batch_size, args.workers

    def clip_benchmark(task: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # its probe's training log
            cb = ClipBenchmark(model, batch_size=b, num_workers=w)  # each of its runs loads the model
            if task == "zeroshot":
                cb.zeroshot_classification(classes)
            elif task == "retrieval":
                cb.zeroshot_retrieval(captions)
            else:
                cb.linear_probe(classes, Path(tempfile.mkdtemp(dir=work)))  # a fresh feature cache

    def lipkit(task: str, settings: tuple[str, ...] = ()) -> None:
        datasets = [captions] if task == "retrieval" else [classes, captions] if "," in task else [classes]
        with contextlib.redirect_stdout(io.StringIO()):  # its summary table
            lipkit_eval(model, datasets, task, work / "lipkit.json", batch_size=b,
                        settings=(f"eval.num_workers={w}",) + settings)

    def fastest(fn, *a) -> float:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn(*a)
            times.append(time.perf_counter() - start)
        return min(times)

    rows = [("zero-shot classification", fastest(clip_benchmark, "zeroshot"), fastest(lipkit, "zeroshot")),
            ("retrieval", fastest(clip_benchmark, "retrieval"), fastest(lipkit, "retrieval")),
            ("linear probe, CLIP_benchmark's solver (adamw)", fastest(clip_benchmark, "linear"),
             fastest(lipkit, "linear", ("eval.linear_solver=adamw",))),
            ("linear probe, lipkit's solver (lbfgs)", None, fastest(lipkit, "linear"))]
    total_cb = sum(r[1] for r in rows if r[1] is not None)
    rows.append(("all three (CLIP_benchmark: three runs; lipkit: one command)", total_cb,
                 fastest(lipkit, "zeroshot,retrieval,linear", ("eval.linear_solver=adamw",))))
    shutil.rmtree(work, ignore_errors=True)

    table = ["| task | CLIP_benchmark s | lipkit s | CLIP_benchmark / lipkit |", "|---|---|---|---|"]
    for name, theirs, ours in rows:
        ratio = f"**{theirs / ours:.2f}×**" if theirs is not None else ""
        table.append(f"| {name} | {'' if theirs is None else f'{theirs:.1f}'} | {ours:.1f} | {ratio} |")
    setting = (f"{args.images} test and {args.images} training images (10 classes), {args.images} captioned images "
               f"× 2 captions; batch {b}, {w} decoding workers each, the fastest of {args.repeats}")
    print(setting + f"; model {model}")
    print("\n".join(table))
    if args.page:
        write_section(args.page, setting, table, args)


def write_section(page: Path, setting: str, table: list[str], args) -> None:
    """Replace (or add) this benchmark's section of `page`; benchmarks/run_all.py keeps it."""
    import datetime
    import os

    import torch

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = args.load_before
    command = "python benchmarks/clip_benchmark_speed.py" + (f" --images {args.images}" if args.images != 2000 else "") \
        + (f" --repeats {args.repeats}" if args.repeats != 1 else "") + " --page docs/performance.md"
    body = [
        f"`.venv-peer/bin/{command}` on {now}: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, load average {load:.1f} when it started"
        + (" (other jobs were running: not a speed figure until rerun on a quiet machine)" if load > 0.5 else "")
        + ". The same open_clip model ("
        + (f"`{args.model}`" if args.model else "a 3-step fashion-tiny run exported by `lipkit export --to open_clip`")
        + ") and the same Fashion-MNIST folders written by "
        f"CLIP_benchmark's own writer: {setting}. Each task as its own command would run it: CLIP_benchmark "
        "1.6.2 loads the model, builds its `wds/` dataset and runs the task (amp off, its linear probe's "
        "feature cache empty); lipkit runs `lipkit eval open_clip:local-dir:MODEL --tasks TASK`. The numbers "
        "themselves agree (guides/evaluate.md, \"The same numbers as CLIP_benchmark\"). A ratio above 1: lipkit is faster. "
        "In one command lipkit embeds the classification images once for zero-shot and the probe, where each "
        "CLIP_benchmark run embeds them again.",
        "", *table,
    ]
    from lipkit.bench.page_sections import replace_section

    replace_section(page, SECTION, body)


if __name__ == "__main__":
    main()
