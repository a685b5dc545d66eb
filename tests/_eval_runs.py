"""Two tiny trained runs (clip, xclip), evaluated on every task through the CLI, shared by
tests/test_eval_runner.py and tests/test_report.py (built once per test process)."""
import atexit
import functools
import importlib.metadata
import importlib.util
import shutil
import tempfile
from pathlib import Path

import torch

from lipkit.cli import main
from lipkit.config import load_config
from lipkit.eval.registry import DEFAULT_TASKS
from lipkit.train import train

TRAIN = ["train.steps=3", "train.batch_size=64", "train.warmup_steps=1", "train.log_every_steps=1",
         "train.progress=false", "data.train_limit=512", "model.prototypes.num_prototypes=64"]
# Small but complete: 300 test images, all 7 tasks, 2 corruptions x 2 severities.
EVAL = ["eval.test_limit=300", "eval.linear_train_limit=400", "eval.retrieval_limit=120",
        "eval.ood_limit=300", "eval.ood_corruptions=[gaussian_noise,contrast]",
        "eval.ood_severities=[1,5]", "eval.batch_size=150"]


def _have_eval_extra() -> bool:
    """imagecorruptions-imaug and gensim (`lipkit[eval]`, which `make test` installs)."""
    try:
        importlib.metadata.distribution("gensim")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("imagecorruptions") is not None


HAVE_EVAL_EXTRA = _have_eval_extra()
NEED_EVAL_EXTRA = ("ood", "text")
ALL_TASKS = ",".join(t for t in DEFAULT_TASKS if HAVE_EVAL_EXTRA or t not in NEED_EVAL_EXTRA)


@functools.lru_cache(maxsize=None)
def evaluated_runs() -> dict[str, Path]:
    root = Path(tempfile.mkdtemp(prefix="lipkit-eval-runs-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    runs = {}
    for objective in ("clip", "xclip"):
        torch.manual_seed(0)
        run_dir = root / objective
        train(load_config("fashion-tiny", TRAIN + [f"objective.name={objective}"]), run_dir)
        args = ["eval", str(run_dir), "--tasks", ALL_TASKS, "--out", str(run_dir / "results.json"),
                "--out-dir", str(root / f"{objective}-records"), "--quiet"]
        for override in EVAL:
            args += ["--set", override]
        assert main(args) == 0
        runs[objective] = run_dir
    return runs
