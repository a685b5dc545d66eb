"""What a run shows and records as it trains: the progress bar, a metrics.jsonl record every
`train.log_every_steps` (every term averaged over ranks) that the collapse guard reads, the
throughput window and its data-wait warning, and the warning about too many prototypes."""
from __future__ import annotations

import math

from tqdm import tqdm

from lipkit import distributed
from lipkit.config import RunConfig
from lipkit.progress import progress_bar
from lipkit.train.collapse_guard import CollapseError, CollapseGuard, prototype_capacity_warning
from lipkit.train.metrics_log import MetricsLog, Throughput
from lipkit.train.step import Learner, StepOutcome


class Monitor:
    def __init__(self, cfg: RunConfig, log: MetricsLog, guard: CollapseGuard, learner: Learner, start_step: int,
                 is_main: bool):
        self.t, self.log, self.guard, self.is_main = cfg.train, log, guard, is_main
        capacity = prototype_capacity_warning(cfg.model.prototypes.num_prototypes, cfg.train.batch_size)
        nclip = cfg.objective.nclip  # the warning is about ME-MAX's smoothness term
        smoothing = nclip.balance in ("memax", "sinkhorn_memax") and nclip.lambda_smooth > 0
        if capacity and smoothing and "prototypes" in learner.objective.required_heads and is_main:
            tqdm.write(f"lipkit: warning: {capacity}")
        self.bar = progress_bar(total=cfg.train.steps, initial=start_step, desc=f"train {cfg.objective.name}",
                                unit="step", disable=not (cfg.train.progress and is_main), dynamic_ncols=True)
        self.throughput = Throughput(cfg.train.data_wait_warn_share, cfg.data.num_workers)
        self.loss = math.nan  # of the last step that was not skipped
        self.evaluation: dict[str, str] = {}  # the last evaluation's headline, shown beside the loss

    def step_done(self, outcome: StepOutcome, learner: Learner, data_wait: float) -> None:
        self.throughput.add(self.t.batch_size, data_wait)
        if outcome.finite:
            self.loss = outcome.terms["loss"].item()
        step = learner.progress.step
        if step % self.t.log_every_steps == 0 or step == self.t.steps:
            self._record(outcome, learner)
        self.bar.update(1)

    def _record(self, outcome: StepOutcome, learner: Learner) -> None:
        """One metrics.jsonl record; the collapse guard reads it, and stops the run after it is
        written when train.stop_on_collapse."""
        progress = learner.progress
        figures, warning = self.throughput.window()
        record = {
            "step": progress.step, "samples": progress.samples, "epoch": progress.position["epoch"],
            "lr": learner.optimizer.param_groups[0]["lr"], **figures, "bad_steps": progress.bad_steps,
            **({"grad_norm": outcome.grad_norm} if outcome.grad_norm is not None else {}),
            **{name: distributed.all_reduce_mean(v.detach().float()) for name, v in outcome.terms.items()},
        }
        collapse = self.guard.check(progress.step, record)
        if collapse:
            record["collapse"] = collapse
        self.log.write(record)
        if collapse and self.t.stop_on_collapse:
            raise CollapseError(f"{collapse} (train.stop_on_collapse=true)")
        if collapse and self.is_main:
            tqdm.write(f"lipkit: warning: {collapse}")
        self.bar.set_postfix(loss=f"{self.loss:.4f}", lr=f"{record['lr']:.2e}", sps=f"{figures['samples_per_s']:.0f}",
                             **self.evaluation)
        if warning and self.is_main:
            tqdm.write(f"lipkit: warning: {warning}")

    def evaluated(self, seconds: float, headline: dict[str, str]) -> None:
        """An evaluation during training took `seconds`: left out of the throughput window; its
        `headline` ({metric: value}) shown from now on."""
        self.throughput.start += seconds
        self.evaluation = headline
        shown = {} if math.isnan(self.loss) else {"loss": f"{self.loss:.4f}"}  # no loss before the first step
        self.bar.set_postfix(**shown, **headline)

    def close(self) -> None:
        self.bar.close()
