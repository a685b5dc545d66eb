"""Training: `train(cfg, run_dir)` (lipkit.train.loop reads top to bottom), one optimizer step
(step), checkpoints written and restored (checkpointing), and the pieces around them: batches,
accumulation, parallel, precision, rng, optim, run_place, metrics_log, collapse_guard, signals,
trainer_state, warm_start."""
from lipkit.faces import lazy_face

_HOMES = {"TrainResult": "loop", "train": "loop", "RunDirError": "run_place", "NonFiniteLossError": "step"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_face(__name__, _HOMES)
