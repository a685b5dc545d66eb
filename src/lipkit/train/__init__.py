"""Training: `train(cfg, run_dir)` (lipkit.train.loop reads top to bottom), one optimizer step
(step), checkpoints written and restored (checkpointing), and the pieces around them: batches,
accumulation, parallel, precision, rng, optim, run_place, metrics_log, collapse_guard, signals,
trainer_state, warm_start."""
from lipkit.train.loop import TrainResult, train
from lipkit.train.run_place import RunDirError
from lipkit.train.step import NonFiniteLossError

__all__ = ["NonFiniteLossError", "RunDirError", "TrainResult", "train"]
