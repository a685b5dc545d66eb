"""Runs the lab's (point, seed) pairs once each, in this process or a pool of worker processes.

A point is a dict of changes to the base config (objective, temperature, lam, batch_size,
embed_dim; see train.run_config). Studies declare their points; `theory all` runs the union, so a
point two studies share is trained once."""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from lipkit.progress import progress_bar
from lipkit.theory.config import TheoryConfig
from lipkit.theory.train import run_config, train_and_measure

Metrics = dict[str, float]


def point_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def _run(args: tuple[TheoryConfig, dict, int]) -> Metrics:
    cfg, point, seed = args
    return train_and_measure(run_config(cfg, **point), seed)


class Runner:
    def __init__(self, cfg: TheoryConfig, workers: int = 1, progress: bool = True):
        self.cfg = cfg
        self.workers = workers
        self.progress = progress
        self.results: dict[tuple[str, int], Metrics] = {}

    @property
    def seeds(self) -> list[int]:
        return list(range(self.cfg.studies.seeds))

    def run(self, points: list[dict], desc: str = "theory") -> None:
        todo, queued = [], set()
        for point in points:
            for seed in self.seeds:
                key = (point_key(point), seed)
                if key not in self.results and key not in queued:
                    queued.add(key)
                    todo.append((point, seed))
        if not todo:
            return
        bar = progress_bar(total=len(todo), desc=desc, unit="run", disable=not self.progress, dynamic_ncols=True)
        jobs = [(self.cfg, point, seed) for point, seed in todo]
        if self.workers <= 1:
            outputs = []
            for job in jobs:
                outputs.append(train_and_measure(run_config(job[0], **job[1]), job[2]))
                bar.update(1)
        else:
            # spawn: a forked child would inherit the parent's OpenMP state
            with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn")) as pool:
                outputs = []
                for out in pool.map(_run, jobs):
                    outputs.append(out)
                    bar.update(1)
        bar.close()
        for (point, seed), metrics in zip(todo, outputs):
            self.results[(point_key(point), seed)] = metrics

    def runs(self, point: dict) -> list[Metrics]:
        """Per-seed metrics of a point that has been run."""
        return [self.results[(point_key(point), seed)] for seed in self.seeds]
