"""What torchrun starts in tests/test_multinode.py's elastic run: `lipkit ARGS`, with a lost worker.

    torchrun ... tests/_multinode_workers.py --die RANK STEP --record FILE -- train --config ... --resume latest

Once in the whole job, the worker of global rank RANK kills itself with SIGKILL when step STEP is
done, as a node lost mid-run would (FILE.died marks it done: torchrun's TORCHELASTIC_RESTART_COUNT
cannot tell, since an agent whose own workers were healthy restarts them without counting a
restart). Every worker of every attempt appends `rank start_step` to FILE when its training starts
(the step it resumed from, 0 for a new run)."""
from __future__ import annotations

import inspect
import os
import signal
import sys


def main(argv: list[str]) -> int:
    split = argv.index("--")
    options, args = argv[:split], argv[split + 1:]
    die_rank, die_step = int(options[options.index("--die") + 1]), int(options[options.index("--die") + 2])
    record = options[options.index("--record") + 1]
    rank = int(os.environ["RANK"])

    from lipkit.train.monitor import Monitor

    start, done = Monitor.__init__, Monitor.step_done

    def start_and_record(self, *args, **kwargs):
        start(self, *args, **kwargs)
        start_step = inspect.signature(start).bind(self, *args, **kwargs).arguments["start_step"]
        with open(record, "a") as f:
            f.write(f"{rank} {start_step}\n")

    def step_done_then_die(self, outcome, learner, data_wait):
        done(self, outcome, learner, data_wait)
        if rank == die_rank and learner.progress.step == die_step:
            try:
                os.close(os.open(f"{record}.died", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:  # killed once already: this is the restarted group
                return
            os.kill(os.getpid(), signal.SIGKILL)

    Monitor.__init__, Monitor.step_done = start_and_record, step_done_then_die
    from lipkit.cli import main as lipkit

    return lipkit(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def check_worker(rank: int, size: int, port: int, out_dir: str) -> None:
    """For mp.spawn: lipkit.train.shared_dir's checks in `size` gloo processes, each writing what
    it raised (or "ok") per case into OUT/rank{rank}.json. The cases: a run directory every rank
    sees; one whose nearest existing path is a file (rank 0 cannot write it); ranks that resolved
    --resume to different checkpoints."""
    import json
    from pathlib import Path

    import torch.distributed as dist

    from lipkit.distributed import DistInfo
    from lipkit.errors import LipkitError
    from lipkit.train.shared_dir import check_run_dir, same_checkpoint_everywhere

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    out, info = Path(out_dir), DistInfo(rank=rank, world_size=size)
    cases = {
        "shared": lambda: check_run_dir(out / "run", info),
        "unwritable": lambda: check_run_dir(out / "a-file" / "run", info),
        "same checkpoint": lambda: same_checkpoint_everywhere(Path("run/checkpoints/step-00000006"), size),
        "different checkpoints": lambda: same_checkpoint_everywhere(
            Path(f"run/checkpoints/step-0000000{6 - 3 * rank}") if rank < 2 else None, size),
    }
    results = {}
    try:
        for name, case in cases.items():
            try:
                case()
                results[name] = "ok"
            except LipkitError as e:
                results[name] = f"{type(e).__name__}: {e}"
    finally:
        dist.destroy_process_group()
    (out / f"rank{rank}.json").write_text(json.dumps(results))
