"""Evaluation during training and the best checkpoint (lipkit.train.in_training_eval,
lipkit.train.best_checkpoint), on tiny fashion-tiny runs through the command line:

- a run evaluated every 2 steps (its image loader drawing from torch's generator) ends with bitwise
  the weights of a run without evaluation, and does not when the random state is not put back;
- the records in metrics.jsonl are those `lipkit eval` gives for the checkpoint of the same step;
- RUN/checkpoints/best holds the weights of the best evaluation by the rule (min, ties keep the
  earlier), bitwise those of that step's checkpoint, readable by lipkit.load and lipkit eval, and
  is never pruned;
- a run resumed in place from a mid-run checkpoint with evaluation on ends bitwise equal, evaluates
  at the same steps, keeps a better best it finds on disk and replaces a worse one;
- bad input gets one line, before the run directory is written."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file

import lipkit
from _tiny_runs import one_line_error, train_tiny
from lipkit.cli import main
from lipkit.config import load_config
from lipkit.data.fashion_mnist import load_fashion_mnist
from lipkit.eval.runner import evaluate_spec
from lipkit.runs.checksums import damage, write_manifest
from lipkit.train import in_training_eval
from lipkit.train.best_checkpoint import BEST_FILE, BestKeeper, better
from _ports import free_port

STEPS = 12
TRAINED = ["train.steps=12", "train.lr=3e-3", "model.vision.dropout=0.1", "model.text.dropout=0.1"]
# the default eval data (Fashion-MNIST's training images after data.train_limit=128), two tasks, and
# a metric to minimise
HELD_BACK = ["train.eval_every_steps=2", "eval.test_limit=300", "train.eval_tasks=[zeroshot,retrieval]",
             "train.keep_best=retrieval/text_retrieval_median_rank", "train.keep_best_mode=min",
             "train.save_every_steps=2", "train.keep_checkpoints=10"]
FOLDER_CLASSES = {1: "trouser", 3: "dress", 7: "sneaker", 8: "bag"}


def _weights(run: Path) -> dict:
    return {name: load_file(run / name) for name in ("model.safetensors", "objective.safetensors")}


def _bitwise_equal(a: dict, b: dict) -> bool:
    return all(x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and (x[k] == y[k]).all() for k in x)
               for x, y in ((a[n], b[n]) for n in a))


def _records(run: Path) -> tuple[list[dict], list[dict]]:
    """(evaluation records, training records) of metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval_seconds" in r], [r for r in rows if "loss" in r]


def _checkpoint(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Class folders of 40 Fashion-MNIST test images as PNG files: images decoded by the image
    loader, which draws its seed from torch's generator."""
    root = tmp_path_factory.mktemp("evalset") / "clothes"
    images, labels = load_fashion_mnist("test")
    for label, name in FOLDER_CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(labels == label)[:10]:
            Image.fromarray(images[i]).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train-eval")


@pytest.fixture(scope="module")
def plain(runs) -> Path:
    assert train_tiny(runs / "plain", *TRAINED) == 0
    return runs / "plain"


@pytest.fixture(scope="module")
def held_back(runs) -> Path:
    assert train_tiny(runs / "held-back", *TRAINED, *HELD_BACK) == 0
    return runs / "held-back"


# --------------------------------------------------------------------------- the trajectory
def test_evaluating_leaves_the_trajectory_bitwise_unchanged(plain, runs, folder, monkeypatch):
    evaluated = runs / "folder"
    assert train_tiny(evaluated, *TRAINED, "train.eval_every_steps=2", f"train.eval_dataset={folder}",
                      "eval.num_workers=0", "train.keep_best=zeroshot/acc1") == 0
    evals, _ = _records(evaluated)
    assert [r["step"] for r in evals] == list(range(0, STEPS + 1, 2)) and evals[0]["zeroshot/images"] == 40
    assert _bitwise_equal(_weights(evaluated), _weights(plain))

    # the known-bad setting: the random state not put back after each evaluation
    monkeypatch.setattr(in_training_eval, "preserved_rng", lambda device: contextlib.nullcontext())
    careless = runs / "careless"
    assert train_tiny(careless, *TRAINED, "train.eval_every_steps=2", f"train.eval_dataset={folder}",
                      "eval.num_workers=0") == 0
    assert not _bitwise_equal(_weights(careless), _weights(plain))


def test_records_are_lipkit_eval_of_the_same_steps_checkpoint(held_back):
    evals, training = _records(held_back)
    assert [r["step"] for r in evals] == list(range(0, STEPS + 1, 2))
    assert [r["step"] for r in training] == list(range(1, STEPS + 1))  # the loss log is untouched
    rows = [json.loads(line) for line in (held_back / "metrics.jsonl").read_text().splitlines()]
    assert "loss" in rows[-1]  # a step's training record follows its evaluation (lipkit report reads the last)
    record = evals[4]
    assert record["step"] == 8 and record["samples"] == 8 * 32
    [zeroshot, retrieval] = evaluate_spec(str(_checkpoint(held_back, 8)), ["zeroshot", "retrieval"],
                                          ["eval.split=validation", "eval.test_limit=300"],
                                          datasets=["fashion-mnist"], progress=False).records
    assert zeroshot["dataset"] == "fashion-mnist:validation"
    expected = {**{f"zeroshot/{k}": v for k, v in zeroshot["metrics"].items()},
                **{f"retrieval/{k}": v for k, v in retrieval["metrics"].items()}}
    expected = {k: v for k, v in expected.items() if isinstance(v, (int, float))}
    assert {k: v for k, v in record.items() if "/" in k} == expected


# --------------------------------------------------------------------------- the best
def _expected_best(evals: list[dict], metric: str) -> dict:
    best = None
    for r in evals:  # min; a tie keeps the earlier
        if best is None or r[metric] < best[metric]:
            best = r
    return best


def test_best_is_the_best_evaluation_bitwise_and_readable(held_back):
    metric = "retrieval/text_retrieval_median_rank"
    evals, _ = _records(held_back)
    expected = _expected_best(evals, metric)
    assert 0 < expected["step"] < STEPS and len({r[metric] for r in evals}) > 2  # a choice that means something
    best = held_back / "checkpoints" / "best"
    info = json.loads((best / BEST_FILE).read_text())
    assert (info["metric"], info["mode"], info["step"], info["value"]) == (metric, "min", expected["step"],
                                                                          expected[metric])
    assert info["metrics"] == {k: v for k, v in expected.items() if "/" in k}
    assert _bitwise_equal(_weights(best), _weights(_checkpoint(held_back, expected["step"])))
    assert damage(best) is None and not (best / "trainer.pt").exists()

    model, preprocess, tokenizer = lipkit.load(best)
    reference = load_file(_checkpoint(held_back, expected["step"]) / "model.safetensors")
    assert all((v == reference[k]).all() for k, v in model.state_dict().items())
    [zeroshot, retrieval] = evaluate_spec(str(best), ["zeroshot", "retrieval"],
                                          ["eval.split=validation", "eval.test_limit=300"],
                                          datasets=["fashion-mnist"], progress=False).records
    assert retrieval["metrics"]["text_retrieval_median_rank"] == info["value"]
    assert zeroshot["metrics"]["acc1"] == info["metrics"]["zeroshot/acc1"]


def test_best_is_never_pruned(runs):
    run = runs / "pruned"
    assert train_tiny(run, *TRAINED[:1], "train.eval_every_steps=2", "eval.test_limit=100",
                      "train.keep_best=zeroshot/acc1", "train.save_every_steps=2", "train.keep_checkpoints=1") == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", f"step-{STEPS:08d}"]
    assert damage(run / "checkpoints" / "best") is None


# --------------------------------------------------------------------------- resume
def _resume_in_place(tmp_path: Path, held_back: Path, best_value: float) -> tuple[Path, bytes]:
    """A copy of the held-back run whose best.json says `best_value`, resumed in place from its
    step-4 checkpoint; (the run, its best weights before the resume)."""
    run = tmp_path / "resumed"
    shutil.copytree(held_back, run)
    best = run / "checkpoints" / "best"
    info = json.loads((best / BEST_FILE).read_text())
    (best / BEST_FILE).write_text(json.dumps({**info, "value": best_value}))
    write_manifest(best, [p.name for p in best.iterdir() if p.name != "manifest.json"])
    before = (best / "model.safetensors").read_bytes()
    # the checkpoint's own config, as `lipkit train --out RUN --resume CHECKPOINT` reads it
    assert main(["train", "--out", str(run), "--resume", str(_checkpoint(run, 4)),
                 "--set", "train.keep_checkpoints=1"]) == 0
    return run, before


def test_resume_with_evaluation_is_exact_and_keeps_a_better_best(held_back, tmp_path):
    run, before = _resume_in_place(tmp_path, held_back, best_value=-1.0)  # no median rank beats it
    assert _bitwise_equal(_weights(run), _weights(held_back))
    evals, _ = _records(run)
    assert [r["step"] for r in evals] == list(range(0, STEPS + 1, 2))  # the same schedule, no step twice
    original, _ = _records(held_back)
    assert [{k: v for k, v in r.items() if k != "eval_seconds"} for r in evals] == \
        [{k: v for k, v in r.items() if k != "eval_seconds"} for r in original]
    best = run / "checkpoints" / "best"
    assert (best / "model.safetensors").read_bytes() == before
    assert json.loads((best / BEST_FILE).read_text())["value"] == -1.0
    # keep_checkpoints=1 pruned the rest; the best stays
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "abandoned-after-step-00000004", "best", f"step-{STEPS:08d}"]


def test_resume_replaces_a_worse_best(held_back, tmp_path):
    run, _ = _resume_in_place(tmp_path, held_back, best_value=1e9)
    info = json.loads((run / "checkpoints" / "best" / BEST_FILE).read_text())
    expected = json.loads((held_back / "checkpoints" / "best" / BEST_FILE).read_text())
    assert info["step"] == expected["step"] > 4 and info["value"] == expected["value"]
    assert _bitwise_equal(_weights(run / "checkpoints" / "best"), _weights(held_back / "checkpoints" / "best"))


def test_evaluations_reach_tensorboard_with_their_step(tmp_path, monkeypatch):
    scalars = []

    class Writer:  # records what MetricsLog sends to TensorBoard (the package is an optional extra)
        def __init__(self, logdir):
            pass

        def add_scalar(self, tag, value, global_step):
            scalars.append((tag, value, global_step))

        flush = close = lambda self: None

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "tensorboard" else find_spec(name, *a))
    run = tmp_path / "run"
    assert train_tiny(run, "train.steps=4", "train.eval_every_steps=2", "eval.test_limit=50",
                      "train.tensorboard=true") == 0
    evals, _ = _records(run)
    assert [(r["step"], r["zeroshot/acc1"]) for r in evals] == [
        (step, value) for tag, value, step in scalars if tag == "zeroshot/acc1"] and len(evals) == 3


# --------------------------------------------------------------------------- several processes
TWO_PROCESSES = ["train.steps=6", "train.batch_size=32", "train.warmup_steps=1", "train.progress=false",
                 "train.lr=3e-3", "data.train_limit=256", "objective.name=xclip", "objective.nclip.balance=center",
                 "train.strategy=fsdp", "model.vision.width=32", "model.vision.layers=1", "model.vision.heads=2",
                 "model.vision.dropout=0.1", "model.text.width=32", "model.text.layers=1", "model.text.heads=2",
                 "model.embed_dim=16", "model.prototypes.num_prototypes=16", "model.prototypes.hidden_dim=32",
                 "model.prototypes.bottleneck_dim=8", "train.save_every_steps=2", "train.keep_checkpoints=10"]
EVALUATED = ["train.eval_every_steps=2", "eval.test_limit=100", "train.keep_best=zeroshot/acc1"]


def _two_process_worker(rank: int, size: int, port: int, out_dir: str) -> None:
    from lipkit.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for name, extra in (("plain", []), ("evaluated", EVALUATED)):
            train(load_config("fashion-tiny", TWO_PROCESSES + extra), Path(out_dir) / f"{name}-rank{rank}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.multiprocess
def test_two_processes_under_fsdp_evaluate_on_rank_0_without_changing_the_run(tmp_path):
    mp.spawn(_two_process_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    plain, evaluated = tmp_path / "plain-rank0", tmp_path / "evaluated-rank0"
    assert _bitwise_equal(_weights(evaluated), _weights(plain))
    assert not (tmp_path / "evaluated-rank1").exists()
    evals, _ = _records(evaluated)
    assert [r["step"] for r in evals] == [0, 2, 4, 6]
    info = json.loads((evaluated / "checkpoints" / "best" / BEST_FILE).read_text())
    assert info["value"] == max(r["zeroshot/acc1"] for r in evals)
    assert info["step"] == next(r["step"] for r in evals if r["zeroshot/acc1"] == info["value"])
    # the weights gathered from both shards are those of that step's checkpoint (step 4 of this run)
    assert info["step"] > 0 and _bitwise_equal(_weights(evaluated / "checkpoints" / "best"),
                                               _weights(_checkpoint(evaluated, info["step"])))


# --------------------------------------------------------------------------- schedule and names
def test_minutes_schedule_continues_across_a_resume(monkeypatch):
    from lipkit.config import RunConfig

    now = [1000.0]
    monkeypatch.setattr(in_training_eval, "_clock", lambda: now[0])
    cfg = RunConfig()
    cfg.train.eval_every_minutes, cfg.train.steps = 2.0, 100
    evaluation = in_training_eval.TrainingEvaluation(cfg, None, None, is_main=True)
    now[0] += 119
    assert not evaluation.time_due()
    now[0] += 1
    assert evaluation.time_due() and evaluation.due(7, True) and not evaluation.due(7, False)
    evaluation.last_eval = now[0] - 90  # evaluated 90 s ago; a checkpoint now, a resume an hour later
    saved = evaluation.state_dict()
    now[0] += 3600
    resumed = in_training_eval.TrainingEvaluation(cfg, None, None, is_main=True)
    resumed.load_state_dict(saved)
    assert not resumed.time_due()
    now[0] += 30
    assert resumed.time_due()
    assert resumed.due(100, False)  # the last step is always evaluated
    assert not in_training_eval.TrainingEvaluation(cfg, None, None, is_main=False).time_due()  # rank 0's clock decides


def test_metric_names():
    records = [
        {"dataset": "d", "task": "zeroshot_classification", "metrics": {"acc1": 0.5, "test_split": "all images"}},
        {"dataset": "d-c", "task": "ood_classification", "metrics": {"zeroshot_drop": 0.25}},
        {"dataset": "d-shift", "task": "ood_classification", "metrics": {"zeroshot_drop": 0.125}},
        {"dataset": "wordsim353", "task": "word_similarity", "metrics": {"wordsim_spearman": 0.1}},
        {"dataset": "d", "task": "caption_probe", "metrics": {"caption_probe_acc1": 0.75, "flag": True}},
    ]
    metrics, shown = in_training_eval.metric_names(records, "d")
    assert metrics == {"zeroshot/acc1": 0.5, "ood/c/zeroshot_drop": 0.25, "ood/shift/zeroshot_drop": 0.125,
                       "text/word_similarity/wordsim353/wordsim_spearman": 0.1,
                       "text/caption_probe/caption_probe_acc1": 0.75}
    assert shown == ["zeroshot/acc1", "ood/c/zeroshot_drop", "ood/shift/zeroshot_drop",
                     "text/word_similarity/wordsim353/wordsim_spearman", "text/caption_probe/caption_probe_acc1"]


def test_better_and_the_keeper():
    assert better(0.5, None, "max") and better(0.6, 0.5, "max") and not better(0.5, 0.5, "max")
    assert better(4.0, 5.0, "min") and not better(5.0, 5.0, "min") and not better(6.0, 5.0, "min")
    assert not better(math.nan, None, "max") and not better(math.nan, 1.0, "min")
    keeper = BestKeeper("zeroshot/acc1", "max")
    first = keeper.offer({"zeroshot/acc1": 0.3}, step=2, samples=64)
    keeper.accept(first)
    assert keeper.offer({"zeroshot/acc1": 0.3}, step=4, samples=128) is None
    assert keeper.offer({"zeroshot/acc1": 0.4}, step=6, samples=192).step == 6


# --------------------------------------------------------------------------- bad input: one line, nothing written
def _captions_only(tmp_path: Path) -> Path:
    table = tmp_path / "captions.jsonl"
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    table.write_text("".join(json.dumps({"image": f"{i}.png", "caption": f"a photo {i}"}) + "\n" for i in range(3)))
    return table


@pytest.mark.parametrize("sets, says", [
    (["train.keep_best=zeroshot/acc1"], "train.keep_best: zeroshot/acc1 needs evaluations: set train.eval_every_steps"),
    (["train.eval_every_steps=2", "train.eval_tasks=[zeroshot]", "train.keep_best=linear/acc1"],
     "train.keep_best: linear/acc1 is a metric of task linear, which train.eval_tasks (zeroshot) does not run"),
    (["train.eval_every_steps=2", "train.keep_best=acc1"], "train.keep_best: 'acc1' is not a metric name"),
    (["train.eval_every_steps=2", "train.eval_tasks=[zeroshot,zero]"], "train.eval_tasks: unknown task(s) zero;"),
    (["train.eval_every_minutes=-1"], "train.eval_every_minutes: must be >= 0"),
    (["train.eval_every_steps=2", "data.train_limit=0"],
     "train.eval_dataset (not given: the run's held-back split): eval.split=validation on fashion-mnist reads the "
     "training images the run held back, but its data.train_limit is 0"),
    (["train.eval_every_steps=2", "data.source=digits", "data.image_mean=[0.5]", "data.image_std=[0.5]"],
     "train.eval_dataset: not given, and the run's data (digits) has no held-back split built in"),
    (["train.eval_every_steps=2", "train.eval_dataset=no/such/folder"],
     "train.eval_dataset: no/such/folder: no such file or folder"),
    # only the evaluation at step 0 can tell: still before the run directory is written
    (["train.eval_every_steps=2", "eval.test_limit=50", "train.keep_best=zeroshot/top1"],
     "train.keep_best: zeroshot/top1 is not a metric of the evaluation at step 0; it gives zeroshot/acc1, "
     "zeroshot/acc5, zeroshot/images, zeroshot/mean_per_class_recall"),
    (["train.eval_every_steps=2", "train.eval_tasks=[zeroshot]", "train.eval_dataset=CAPTIONS"],
     "train.eval_tasks: zeroshot on captions: it has no labels"),
])
def test_bad_input_is_one_line_before_anything_is_written(sets, says, tmp_path, capsys):
    sets = [s.replace("CAPTIONS", str(_captions_only(tmp_path))) for s in sets]
    run = tmp_path / "run"
    assert train_tiny(run, "train.steps=4", *sets) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"lipkit: error: {says}"), line
    assert not run.exists()
