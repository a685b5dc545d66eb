"""Evaluation during training (`train.eval_every_steps`, `train.eval_every_minutes`): the tasks of
`lipkit eval` (its runner, lipkit.eval.runner: the same code and numbers) on one dataset, recorded in
metrics.jsonl, and the best evaluation's weights kept (`train.keep_best`, lipkit.train.best_checkpoint).

- Data: `train.eval_dataset` (a path or built-in name, as `lipkit eval --dataset`), or by default the
  run's held-back split: Fashion-MNIST's training images after `data.train_limit`, Tux Paint's 150
  validation stamps (a run that trains on split `fit`), i.e. `eval.split: validation`. The `eval.*`
  settings apply (`eval.test_limit` trims the images). Tasks: `train.eval_tasks`, or zero-shot when
  the data has class names, else retrieval.
- When: before the first step of a new run (step 0: the starting point, e.g. an imported model's
  zero-shot; a task that does not apply to the data or a `keep_best` metric it does not give stops
  the run there, before its directory is written), at every multiple of `eval_every_steps`, once
  `eval_every_minutes` of training have passed since the last one (that time is kept in checkpoints,
  so the schedule continues across a resume), and after the last step; not on a stop signal.
- It never changes the training: it evaluates a separate copy of the model (built once, loaded with
  the current weights each time, in eval mode and float32 as `lipkit eval` loads a checkpoint), so
  the training model's mode, BatchNorm statistics and gradients are never touched; every random
  generator it could draw from (python, numpy, torch's CPU and device generators: the image loader
  draws its seed from torch's) is put back afterwards; it reads none of the training data stream.
- Processes: rank 0 evaluates; the other ranks only take part in gathering the weights (a
  collective under FSDP) and then wait for it at the next step's collectives.
- Records: one metrics.jsonl line per evaluation, before that step's training record, with `step`,
  `samples`, `epoch`, `eval_seconds` and each metric as `TASK/METRIC` (see `metric_names`); the
  same keys go to TensorBoard; the progress bar shows the headline, a line per evaluation the rest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import sys
import time
from collections.abc import Iterator

import torch
from tqdm import tqdm

from lipkit.config import ConfigError, EvalConfig, RunConfig, SourceConfig, TrainConfig, save_config
from lipkit.runs.directory import CONFIG_FILE, MODEL_FILE, OBJECTIVE_FILE, TOKENIZER_FILE, write_tensors
from lipkit.tokenizer import Tokenizer
from lipkit.train.best_checkpoint import Best, BestKeeper, best_dir, write_best
from lipkit.train.rng import capture_rng, restore_rng
from lipkit.train.step import Learner
from lipkit.train.trainer_state import Progress

_clock = time.monotonic  # replaced in tests


def check_eval_settings(t: TrainConfig) -> None:
    """One-line ConfigErrors for train.eval_* and keep_best values that cannot work, whatever the data."""
    from lipkit.eval.errors import EvalError
    from lipkit.eval.registry import parse_tasks

    if t.eval_every_steps < 0:
        raise ConfigError(f"train.eval_every_steps: must be >= 0 (0 = off), got {t.eval_every_steps}")
    if not 0 <= t.eval_every_minutes < math.inf:
        raise ConfigError(f"train.eval_every_minutes: must be >= 0 and finite (0 = off), got {t.eval_every_minutes}")
    if t.eval_tasks:
        try:
            parse_tasks(t.eval_tasks)
        except EvalError as e:
            raise ConfigError(f"train.eval_tasks: {str(e).removeprefix('--tasks: ')}") from None
    if t.keep_best and not scheduled(t):
        raise ConfigError(f"train.keep_best: {t.keep_best} needs evaluations: set train.eval_every_steps or "
                          f"train.eval_every_minutes")
    if t.keep_best and "/" not in t.keep_best:
        raise ConfigError(f"train.keep_best: {t.keep_best!r} is not a metric name; metrics are named TASK/METRIC "
                          f"as metrics.jsonl records them, e.g. zeroshot/acc1")
    task = t.keep_best.split("/")[0]
    if t.keep_best and t.eval_tasks and task not in t.eval_tasks:
        raise ConfigError(f"train.keep_best: {t.keep_best} is a metric of task {task}, which train.eval_tasks "
                          f"({', '.join(t.eval_tasks)}) does not run")


def scheduled(t: TrainConfig) -> bool:
    return t.eval_every_steps > 0 or t.eval_every_minutes > 0


def eval_data_config(cfg: RunConfig) -> EvalConfig:
    """The eval settings of the evaluation during training: `train.eval_dataset` as the one dataset,
    or the run's held-back split (`eval.split: validation` of its one built-in source); a
    ConfigError when the run's data has none."""
    from lipkit.eval.datasets import BUILTIN_DATASETS

    if cfg.train.eval_dataset:
        return dataclasses.replace(cfg.eval, dataset=cfg.train.eval_dataset, datasets=[])
    sources = cfg.data.sources or [SourceConfig(path=cfg.data.source)]
    source = sources[0]
    builtin = len(sources) == 1 and source.format in ("auto", "builtin") and source.path in BUILTIN_DATASETS
    if builtin and source.path == "tuxpaint" and source.split not in ("fit", "holdout"):
        raise ConfigError(f"train.eval_dataset: not given, so the evaluation reads the run's held-back split, "
                          f"Tux Paint's validation stamps, but the run trains on them (split "
                          f"{source.split or 'all'!r}); train on split fit (data.sources: [{{path: tuxpaint, "
                          f"split: fit}}]) or give train.eval_dataset")
    if not builtin:
        what = f"{len(sources)} sources" if len(sources) > 1 else source.path
        raise ConfigError(f"train.eval_dataset: not given, and the run's data ({what}) has no held-back split "
                          f"built in (only {', '.join(BUILTIN_DATASETS)} have one); give a dataset as "
                          f"`lipkit eval --dataset` takes it (class folders, a CSV/TSV/JSONL table, shards)")
    return dataclasses.replace(cfg.eval, dataset=source.path, datasets=[], split="validation")


def metric_names(records: list[dict], dataset: str) -> tuple[dict[str, float], list[str]]:
    """(every numeric metric of `records` named TASK[/RECORD][/SET]/METRIC, the headline ones):
    TASK is the `lipkit eval` task; RECORD the record's task when the task writes several kinds
    (text, emergent); SET the record's dataset when it is not `dataset` itself, less the
    `dataset-` prefix (ood: c, shift, style; text: wordsim353). So zeroshot/acc1,
    retrieval/image_retrieval_recall@1, ood/c/zeroshot_drop, text/caption_probe/caption_probe_acc1."""
    from lipkit.eval.registry import TASKS, headline, task_of_record

    metrics, shown = {}, []
    for r in records:
        task = task_of_record(r["task"])
        parts = [task] + ([r["task"]] if len(TASKS[task].headline) > 1 else [])
        if r["dataset"] != dataset:
            parts.append(r["dataset"].removeprefix(dataset + "-"))
        for key, value in r["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics["/".join([*parts, key])] = value
        shown += ["/".join([*parts, key]) for key in headline(r["task"]) or () if key in r["metrics"]]
    return metrics, shown


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Every generator the evaluation could draw from, as it was before it."""
    state = capture_rng(device)
    try:
        yield
    finally:
        restore_rng(state, device)


class TrainingEvaluation:
    """The evaluations of one training run: when they are due, running them, recording them, and
    the best kept. `build` returns None when none is scheduled."""

    def __init__(self, cfg: RunConfig, tokenizer: Tokenizer, learner: Learner, is_main: bool):
        self.cfg, self.tokenizer, self.learner, self.is_main = cfg, tokenizer, learner, is_main
        self.eval_cfg = eval_data_config(cfg)
        self.tasks: list[str] = []  # resolved by check(), on rank 0
        self.data_name = ""
        self.keeper = BestKeeper(cfg.train.keep_best, cfg.train.keep_best_mode) if cfg.train.keep_best else None
        self.last_eval, self.last_step = _clock(), None
        self.place = self.log = self.monitor = None
        self._model = self._preprocess = None
        self._pending = None  # the step-0 evaluation, published once the run directory is open
        self._notes_seen: set[str] = set()

    @classmethod
    def build(cls, cfg: RunConfig, tokenizer: Tokenizer, learner: Learner, is_main: bool, *, fresh: bool,
              saved: dict | None = None) -> TrainingEvaluation | None:
        """Checked against its data (rank 0) and, for a `fresh` run, evaluated at step 0, before the
        run directory is written; `saved`: the schedule's state from the checkpoint resumed."""
        if not scheduled(cfg.train):
            return None
        evaluation = cls(cfg, tokenizer, learner, is_main)
        if is_main:
            evaluation.check()
        if saved:
            evaluation.load_state_dict(saved)
        if fresh:
            evaluation.evaluate(learner.progress)
        return evaluation

    # ------------------------------------------------------------------ before training
    def check(self) -> None:
        """Open the dataset (files indexed, labels checked; no image embedded), choose the default
        tasks, and check that keep_best names one of them."""
        from lipkit.eval.adapter import EvalModel
        from lipkit.eval.errors import EvalError
        from lipkit.eval.runner import open_datasets

        t = self.cfg.train
        bare = EvalModel(None, None, None, name="", pretrained="", eval=self.eval_cfg, run=self.cfg,
                         seed=t.seed)
        try:
            with self._notes_once():
                [data] = open_datasets(bare)
        except EvalError as e:
            given = "" if t.eval_dataset else " (not given: the run's held-back split)"
            raise ConfigError(f"train.eval_dataset{given}: {e}") from None
        self.data_name = data.name
        if t.eval_tasks:
            self.tasks = list(dict.fromkeys(t.eval_tasks))
        elif data.has_labels and data.class_names is not None and len(data.class_names) > 1:
            self.tasks = ["zeroshot"]
        elif not data.test.missing_captions():
            self.tasks = ["retrieval"]
        else:
            raise ConfigError(f"train.eval_tasks: {data.name} has neither class names nor a caption for every "
                              f"image, so no task is chosen for it; name them (lipkit eval's tasks)")
        task = t.keep_best.split("/")[0]
        if self.keeper is not None and task not in self.tasks:
            raise ConfigError(f"train.keep_best: {t.keep_best} is a metric of task {task}, which the evaluation "
                              f"does not run (its tasks: {', '.join(self.tasks)}); metrics are named TASK/METRIC, "
                              f"e.g. {self.tasks[0]}/...")

    # ------------------------------------------------------------------ schedule
    def time_due(self) -> bool:
        """eval_every_minutes of training since the last evaluation (rank 0's clock decides)."""
        minutes = self.cfg.train.eval_every_minutes
        return self.is_main and minutes > 0 and _clock() - self.last_eval >= 60 * minutes

    def due(self, step: int, time_due: float) -> bool:
        every = self.cfg.train.eval_every_steps
        return (every > 0 and step % every == 0) or bool(time_due) or step == self.cfg.train.steps

    def state_dict(self) -> dict:
        last_step = -1 if self.last_step is None else self.last_step
        return {"seconds_since": _clock() - self.last_eval, "last_step": last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_eval = _clock() - float(state["seconds_since"])
        self.last_step = None if state["last_step"] < 0 else int(state["last_step"])

    # ------------------------------------------------------------------ running
    def attach(self, place, log, monitor, resuming_here: bool) -> None:
        """Where records and the best go, once the run directory is open; a run resumed in place
        continues from the best it kept; the step-0 evaluation is published."""
        self.place, self.log, self.monitor = place, log, monitor
        if self.keeper is not None and resuming_here and self.is_main:
            self.keeper.resume(place.path)
        if self._pending is not None:
            self._publish(*self._pending, pause=False)
            self._pending = None

    def evaluate(self, progress: Progress) -> None:
        """Evaluate the current weights (every rank calls it: gathering them is a collective under
        FSDP); rank 0 records the result and keeps the best."""
        state = self.learner.parallel.model_state()
        self.last_step = progress.step
        if not self.is_main:
            self.last_eval = _clock()
            return
        start = time.perf_counter()
        with preserved_rng(self.learner.device):
            records = self._run(state, progress.step)
        seconds = time.perf_counter() - start
        metrics, shown = metric_names(records, self.data_name)
        record = {"step": progress.step, "samples": progress.samples, "epoch": progress.position["epoch"],
                  "eval_seconds": seconds, **metrics}
        new_best = self.keeper.offer(metrics, progress.step, progress.samples) if self.keeper is not None else None
        objective_state = self.learner.objective.state_dict() if new_best is not None else None
        if self.log is None:  # step 0: the run directory is not open yet; the weights cannot change before it is
            clone = (lambda s: {k: v.clone() for k, v in s.items()}) if new_best is not None else (lambda s: None)
            self._pending = (record, shown, new_best, clone(state), clone(objective_state))
        else:
            self._publish(record, shown, new_best, state, objective_state, pause=True)
        self.last_eval = _clock()

    def _run(self, state: dict[str, torch.Tensor], step: int) -> list[dict]:
        from lipkit.eval.adapter import from_lipkit_model
        from lipkit.eval.errors import TaskSkipped
        from lipkit.eval.runner import evaluate_model

        model = self._eval_model()
        model.load_state_dict(state)
        cfg = dataclasses.replace(self.cfg, eval=self.eval_cfg)
        em = from_lipkit_model(model, self.tokenizer, self._preprocess, cfg, name="training", pretrained=f"step {step}")
        try:
            with self._notes_once():
                return evaluate_model(em, self.tasks, progress=False, strict=True).records
        except TaskSkipped as e:
            raise ConfigError(f"train.eval_tasks: {e}; choose tasks that apply to it, or another "
                              f"train.eval_dataset") from None

    def _eval_model(self):
        """The copy evaluated: built once (inside the RNG guard: building draws initial weights)."""
        if self._model is None:
            from lipkit.models import LIPModel
            from lipkit.runs.loading import image_transform

            self._model = LIPModel(self.cfg.model).to(self.learner.device).eval().requires_grad_(False)
            self._preprocess = image_transform(self.cfg)
        return self._model

    @contextlib.contextmanager
    def _notes_once(self) -> Iterator[None]:
        """The evaluation's notes on stderr ("acc5 left out", limits, skipped images), each once
        per run rather than at every evaluation."""
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stderr(buffer):
                yield
        finally:
            for line in buffer.getvalue().splitlines():
                if line not in self._notes_seen:
                    self._notes_seen.add(line)
                    tqdm.write(line, file=sys.stderr)

    def _publish(self, record: dict, shown: list[str], new_best: Best | None, state, objective_state, *,
                 pause: bool) -> None:
        """The best written (when this one is), the record logged, the line printed."""
        if new_best is not None:
            write_best(self.place.path, new_best, {
                CONFIG_FILE: lambda p: save_config(self.cfg, p),
                TOKENIZER_FILE: self.tokenizer.save,
                MODEL_FILE: lambda p: write_tensors(state, p),
                OBJECTIVE_FILE: lambda p: write_tensors(objective_state, p),
            })
            self.keeper.accept(new_best)
        self.log.write(record)
        headline = self.cfg.train.keep_best or (shown[0] if shown else "")
        self.monitor.evaluated(record["eval_seconds"] if pause else 0.0,
                               {headline: f"{record[headline]:.4f}"} if headline in record else {})
        line = ", ".join(f"{name} {record[name]:.4f}" for name in shown)
        best = self.keeper.best if self.keeper is not None else None
        if best is not None:
            where = f" (new: {best_dir(self.place.path)})" if new_best is not None else ""
            line += f"; best {best.metric} {best.value:.4f} at step {best.step}{where}"
        tqdm.write(f"lipkit: evaluation at step {record['step']} on {self.data_name} "
                   f"({record['eval_seconds']:.1f} s): {line}")
