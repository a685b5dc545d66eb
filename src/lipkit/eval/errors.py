"""The one-line error for evaluation inputs a user can fix (a task, a model spec, a data file)."""
from lipkit.errors import LipkitError


class EvalError(LipkitError, ValueError):
    """An evaluation input that cannot be used, stated in one line that names it."""


class TaskSkipped(EvalError):
    """A task that does not apply to a dataset (no labels, no captions, ...); `lipkit eval` skips
    it with a note and goes on."""

    def __init__(self, task: str, dataset: str, reason: str):
        super().__init__(f"{task} on {dataset}: {reason}")
        self.reason = reason
