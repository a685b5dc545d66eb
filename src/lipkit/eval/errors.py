"""The one-line error for evaluation inputs a user can fix (a task, a model spec, a data file)."""
from lipkit.errors import LipkitError


class EvalError(LipkitError, ValueError):
    """An evaluation input that cannot be used, stated in one line that names it."""
