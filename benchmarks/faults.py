"""Fault injection: kill a training run at random moments and check that resuming loses nothing.

    python benchmarks/faults.py [--points 20] [--seed N] [--out docs/reliability.md]   # make faults
    python benchmarks/faults.py --cases-only --out docs/reliability.md   # bad input only (benchmarks/faults_cases.py)

A fashion-tiny xCLIP run (dropout, nCLIP running centers, feature-cache accumulation, several
epochs: every piece of state a resume must restore) is killed with SIGKILL at `--points` random
moments: half at a random step (the parent waits for the step in metrics.jsonl, then kills the
process group), half inside a random checkpoint write (the run kills itself at a random phase:
after one of the checkpoint's files, after its manifest, after the rename, while copying the
weights into the run directory, while pruning old checkpoints). Each is continued with the same
command plus `--resume latest` and must end with bitwise the weights of an uninterrupted run, and
a metrics.jsonl that holds every step once. Then: damaged checkpoints, a full disk and read-only
folders, each with what the user sees. Last, bad input as a user gives it (faults_cases.py): what
they see and what was kept. The page (--out) is written from these results; with --cases-only,
only the bad input runs, and only its section of the page is rewritten (the kill points' section
stays as the last full run wrote it).

Real faults where the machine allows them (root, allowed to mount): a small tmpfs for the full
disk and a read-only tmpfs; otherwise a patched writer raises ENOSPC and the read-only cases use a
folder without write permission."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

STEPS, SAVE_EVERY = 64, 4
SETTINGS = [
    f"train.steps={STEPS}", f"train.save_every_steps={SAVE_EVERY}", "train.batch_size=128", "train.accum_steps=2",
    "train.warmup_steps=3", "train.log_every_steps=1", "train.progress=false", "train.threads=1",
    "data.train_limit=640",  # 5 steps an epoch: kills land mid-epoch
    "model.vision.width=32", "model.vision.layers=2", "model.vision.heads=2", "model.vision.dropout=0.1",
    "model.text.width=32", "model.text.layers=2", "model.text.heads=2", "model.text.dropout=0.1",
    "model.embed_dim=32", "objective.name=xclip", "objective.nclip.balance=center",
    "model.prototypes.num_prototypes=32", "model.prototypes.hidden_dim=64", "model.prototypes.bottleneck_dim=16",
]
CHECKPOINTS = STEPS // SAVE_EVERY
CHECKPOINT_FILES = ("config.yaml", "tokenizer.json", "model.safetensors", "objective.safetensors", "trainer.pt")
PHASES = tuple(f"after {name}" for name in CHECKPOINT_FILES) + (
    "after manifest.json", "after the rename", "while copying the weights", "while pruning")
ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- running lipkit
def train_args(run: Path, *extra: str) -> list[str]:
    return ["train", "--config", "fashion-tiny", *(f"--set={s}" for s in SETTINGS), "--out", str(run), *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def lipkit(args: list[str], inject: dict | None = None) -> subprocess.Popen:
    """`lipkit ARGS` in its own session (a kill reaches its data-loader workers too); with
    `inject`, the run kills itself at that moment of a checkpoint write (see `_inject`). Output
    goes to files, so a run waited on by polling never blocks on a full pipe."""
    cmd = [sys.executable, "-m", "lipkit", *args] if inject is None else \
        [sys.executable, __file__, "--inject", json.dumps(inject), "--", *args]
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=_env(), start_new_session=True, cwd=ROOT)
    proc.output_files = (out, err)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a run; any process it left in its session is killed."""
    status = proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    texts = []
    for f in proc.output_files:
        f.seek(0)
        texts.append(f.read())
        f.close()
    return status, texts[0], texts[1]


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):  # a line being written
            pass
    return steps


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    for name in ("model.safetensors", "objective.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        if x.keys() != y.keys() or not all(x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
                                           and bool((x[k] == y[k]).all()) for k in x):
            return False
    return True


def error_line(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("lipkit: error: ")), "")


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("lipkit: warning: ", "lipkit: note: "))]


def resumed_at(stdout: str) -> int:
    marker = "(resumed at step "
    return int(stdout.split(marker, 1)[1].split(")", 1)[0]) if marker in stdout else 0


# --------------------------------------------------------------------------- the run killing itself
def _inject(spec: dict) -> None:
    """Patch lipkit so that this process SIGKILLs itself at `spec["phase"]` of checkpoint write
    number `spec["checkpoint"]` (1-based), or raises ENOSPC there (`spec["enospc"]`)."""
    import errno

    import lipkit.runs.directory as run_dir
    import lipkit.train.checkpointing as checkpointing

    count = {"n": 0}

    def fault(phase: str) -> None:
        if count["n"] == spec["checkpoint"] and phase == spec["phase"]:
            if spec.get("enospc"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), phase)
            os.kill(os.getpid(), signal.SIGKILL)

    write_checkpoint, fsync, atomic_write, prune = (checkpointing.write_checkpoint, run_dir.fsync,
                                                    checkpointing.atomic_write, checkpointing.prune_checkpoints)

    def counted_write_checkpoint(run, step, files):
        count["n"] += 1
        return write_checkpoint(run, step, files)

    def fsync_then_fault(path):
        fsync(path)
        if path.name in CHECKPOINT_FILES or path.name == "manifest.json":
            fault(f"after {path.name}")
        elif path.name == "checkpoints":
            fault("after the rename")

    def copy_then_fault(path, write):
        def write_then_fault(tmp):
            write(tmp)
            fault("while copying the weights")  # the copy is in a temp file, not yet renamed
        return atomic_write(path, write_then_fault)

    def prune_with_fault(run, keep):
        doomed = run_dir.list_checkpoints(run)[:-keep]
        if doomed:  # half deleted, as a kill in the middle of rmtree leaves it
            (doomed[0] / "model.safetensors").unlink(missing_ok=True)
            fault("while pruning")
        return prune(run, keep)

    checkpointing.write_checkpoint = counted_write_checkpoint
    run_dir.fsync = fsync_then_fault
    checkpointing.atomic_write = copy_then_fault
    checkpointing.prune_checkpoints = prune_with_fault


# --------------------------------------------------------------------------- kills at random moments
@dataclass
class KillPoint:
    kind: str  # "step" or "checkpoint"
    step: int = 0  # step kills: killed once this step is logged
    checkpoint: int = 0  # checkpoint kills: which checkpoint write (1-based) ...
    phase: str = ""  # ... and where in it
    killed: bool = False
    last_logged_step: int = 0
    resumed_at: int = 0
    resume_status: int = -1
    notes: list[str] = field(default_factory=list)
    bitwise_equal: bool = False
    metrics_complete: bool = False

    @property
    def moment(self) -> str:
        if self.kind == "step":
            return f"after step {self.step} was logged"
        return f"checkpoint {self.checkpoint} (step {self.checkpoint * SAVE_EVERY}), {self.phase}"


def draw_points(n: int, seed: int) -> list[KillPoint]:
    """Steps and checkpoint writes in turn; the checkpoint phases in a random order that goes
    through all of them before it repeats one."""
    rng = random.Random(seed)
    phases: list[str] = []
    points = []
    for i in range(n):
        if i % 2 == 0:
            points.append(KillPoint("step", step=rng.randint(1, STEPS - 3)))
            continue
        phases = phases or rng.sample(PHASES, len(PHASES))
        phase = phases.pop()
        first = 4 if phase == "while pruning" else 1  # pruning starts once there are more than 3
        points.append(KillPoint("checkpoint", checkpoint=rng.randint(first, CHECKPOINTS), phase=phase))
    return points


def uninterrupted_run(work: Path) -> Path:
    run = work / "uninterrupted"
    status, _, err = finish(lipkit(train_args(run)))
    if status != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{err[-3000:]}")
    return run


def kill_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(logged_steps(run)) < step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_point(point: KillPoint, run: Path, reference: Path) -> KillPoint:
    if point.kind == "step":
        proc = lipkit(train_args(run))
        kill_step(proc, run, point.step)
    else:
        proc = lipkit(train_args(run), inject={"checkpoint": point.checkpoint, "phase": point.phase})
    status, _, err = finish(proc)
    point.killed = status == -signal.SIGKILL
    if not point.killed:
        point.notes.append(f"not killed (status {status}): {error_line(err) or err[-300:]}")
    point.last_logged_step = max(logged_steps(run), default=0)
    point.resume_status, out, err = finish(lipkit(train_args(run, "--resume", "latest")))
    point.resumed_at = resumed_at(out)
    point.notes += warnings_of(err)
    if point.resume_status != 0:
        point.notes.append(error_line(err) or err[-300:])
        return point
    point.bitwise_equal = same_weights(run, reference)
    point.metrics_complete = logged_steps(run) == list(range(1, STEPS + 1))
    return point


def kill_and_resume(points: int, seed: int, work: Path, reference: Path | None = None,
                    log=print) -> list[KillPoint]:
    """Draw `points` kill moments with `seed`, run each in `work`, return what happened."""
    reference = reference or uninterrupted_run(work)
    results = []
    for i, point in enumerate(draw_points(points, seed), 1):
        run_point(point, work / f"point-{i:02d}", reference)
        log(f"[{i}/{points}] killed {point.moment}: resumed at step {point.resumed_at}, "
            f"{'bitwise equal' if point.bitwise_equal else 'NOT EQUAL'}" + "".join(f"; {n}" for n in point.notes))
        results.append(point)
    return results


# --------------------------------------------------------------------------- damaged checkpoints
def damaged_checkpoints(work: Path, reference: Path) -> dict:
    """Killed after step 30, then the newest checkpoint gets a flipped bit in its weights and the
    one before it loses half of trainer.pt: the resume must pass over both, with a warning each."""
    run = work / "damaged"
    proc = lipkit(train_args(run))
    kill_step(proc, run, 30)
    finish(proc)
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    newest, before = checkpoints[-1], checkpoints[-2]
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    trainer = before / "trainer.pt"
    trainer.write_bytes(trainer.read_bytes()[: trainer.stat().st_size // 2])
    status, out, err = finish(lipkit(train_args(run, "--resume", "latest")))
    return {"case": "damaged checkpoints", "damage": f"{newest.name}: one bit of model.safetensors flipped; "
                                                    f"{before.name}: trainer.pt cut in half",
            "status": status, "warnings": warnings_of(err), "resumed_at": resumed_at(out),
            "bitwise_equal": status == 0 and same_weights(run, reference)}


# --------------------------------------------------------------------------- full disk, read-only
def can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", tmp], capture_output=True).returncode:
            return False
        subprocess.run(["umount", tmp], check=True)
    return True


@contextlib.contextmanager
def tmpfs(path: Path, size: int, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"{'ro,' if read_only else ''}size={size}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _disk_bytes(*paths: Path) -> int:
    """Space taken on disk (whole blocks, as a tmpfs counts it)."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_blocks * 512 for f in files)


def disk_full(work: Path, reference: Path, mount: bool) -> dict:
    """The disk fills up during the third checkpoint; once there is room again, the run resumes."""
    with contextlib.ExitStack() as stack:
        if mount:
            one_checkpoint = _disk_bytes(sorted((reference / "checkpoints").glob("step-*"))[-1])
            size = _disk_bytes(*(reference / n for n in ("config.yaml", "tokenizer.json", "model.safetensors",
                                                         "objective.safetensors", "metrics.jsonl")))
            size += int(2.5 * one_checkpoint)
            how = (f"a {size // 1024} KiB tmpfs (room for about 2.5 checkpoints of {one_checkpoint // 1024} KiB), "
                   f"grown once the run failed")
            disk = stack.enter_context(tmpfs(work / "small-disk", size))
            run, inject = disk / "run", None
        else:
            how = "a patched writer raising ENOSPC in the third checkpoint (this machine may not mount a tmpfs)"
            run, inject = work / "disk-full", {"checkpoint": 3, "phase": "after trainer.pt", "enospc": True}
        status, _, err = finish(lipkit(train_args(run), inject=inject))
        intact = [p.name for p in sorted((run / "checkpoints").glob("step-*"))]
        if mount:
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resume_status, out, _ = finish(lipkit(train_args(run, "--resume", "latest")))
        return {"case": "disk full", "how": how, "status": status, "error": error_line(err), "intact": intact,
                "resume_status": resume_status, "resumed_at": resumed_at(out),
                "bitwise_equal": resume_status == 0 and same_weights(run, reference)}


@contextlib.contextmanager
def read_only_folder(work: Path, mount: bool):
    if mount:
        with tmpfs(work / "read-only", 1 << 16, read_only=True) as folder:
            yield folder, "a read-only tmpfs"
        return
    folder = work / "read-only"
    folder.mkdir(mode=0o555)
    try:
        yield folder, "a folder without write permission"
    finally:
        folder.chmod(0o755)


def read_only(work: Path, reference: Path, mount: bool) -> list[dict]:
    cases = []
    with read_only_folder(work, mount) as (folder, how):
        status, _, err = finish(lipkit(train_args(folder / "run")))
        cases.append({"case": "train into a read-only folder", "how": how, "status": status,
                      "error": error_line(err), "traceback": "Traceback" in err})
        status, out, err = finish(lipkit(["eval", str(reference), "--tasks", "zeroshot,linear", "--quiet",
                                          "--out", str(folder / "results.json")]))
        cases.append({"case": "eval into a read-only folder", "how": how, "status": status, "error": error_line(err),
                      "traceback": "Traceback" in err, "tasks_run": "zeroshot" in out})
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20, help="kill moments (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments (default: random)")
    parser.add_argument("--out", default=None, help="write the results page here (e.g. docs/reliability.md)")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--cases-only", action="store_true",
                        help="run only the bad-input cases and rewrite only their section of --out")
    args = parser.parse_args(argv)
    if args.cases_only:
        return cases_only(args, argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    mount = can_mount()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        print(f"seed {seed}; runs in {work}; real tmpfs faults: {'yes' if mount else 'no'}", flush=True)
        reference = uninterrupted_run(work)
        points = kill_and_resume(args.points, seed, work, reference, log=lambda s: print(s, flush=True))
        others = [damaged_checkpoints(work, reference), disk_full(work, reference, mount),
                  *read_only(work, reference, mount)]
        # the page names files relative to the (temporary) work folder
        others = [json.loads(json.dumps(case).replace(str(work), "WORK")) for case in others]
        for point in points:
            point.notes = [n.replace(str(work), "WORK") for n in point.notes]
        for case in others:
            print(json.dumps(case), flush=True)
        from faults_cases import run_cases  # beside this file

        cases = run_cases(work / "cases", log=lambda s: print(s, flush=True))
    equal = sum(p.bitwise_equal and p.metrics_complete for p in points)
    print(f"{equal}/{len(points)} resumed runs bitwise equal to the uninterrupted one")
    if args.out:
        from faults_page import write_page  # beside this file

        command = "make faults" if args.points == 20 and args.out == "docs/reliability.md" else \
            "python " + " ".join(["benchmarks/faults.py", *(argv if argv is not None else sys.argv[1:])])
        write_page(Path(args.out), points, seed, others, command, steps=STEPS, save_every=SAVE_EVERY,
                   train_command="lipkit " + " ".join(train_args(Path("RUN"))), cases=cases)
        print(f"wrote {args.out}")
    return 0 if equal == len(points) and _cases_held(cases) else 1


def _cases_held(cases: list) -> bool:
    return all(c.outcome in ("one line", "works", "not run here") for c in cases)


def cases_only(args: argparse.Namespace, argv: list[str] | None) -> int:
    from faults_cases import run_cases  # beside this file

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        print(f"bad-input cases in {tmp}; real tmpfs faults: {'yes' if can_mount() else 'no'}", flush=True)
        cases = run_cases(Path(tmp), log=lambda s: print(s, flush=True))
    if args.out:
        from faults_page import write_cases_section  # beside this file

        command = "python " + " ".join(["benchmarks/faults.py", *(argv if argv is not None else sys.argv[1:])])
        write_cases_section(Path(args.out), cases, command)
        print(f"wrote the bad-input section of {args.out}")
    return 0 if _cases_held(cases) else 1


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--inject":
        _inject(json.loads(sys.argv[2]))
        from lipkit.cli import main as lipkit_main

        sys.exit(lipkit_main(sys.argv[4:]))
    sys.exit(main())
