"""Nothing lost: a run directory is validated before it is touched, replaced by --overwrite only
once the new run has its first checkpoint, locked against a second writer, resumed from the
newest intact checkpoint, and every failure on the way is one line naming the file."""
from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _tiny_runs import TINY, one_line_error, snapshot, train_tiny
from lipkit.cli import main
from lipkit.runs.loading import load_run
from lipkit.runs.directory import CheckpointError, CheckpointWriteError, list_checkpoints, write_checkpoint
from lipkit.runs.lock import RunLock, RunLockedError
from lipkit.train.run_place import RunDirError, RunPlace

# --------------------------------------------------------------------------- validate before touching
@pytest.mark.parametrize("sets, message", [
    (["train.batch_size=-64"], "train.batch_size: must be >= 1, got -64"),
    (["train.batch_size=30", "train.accum_steps=4"], "train.batch_size 30 must be a multiple of processes x train.accum_steps"),
    (["train.batch_size=512"], "train.batch_size 512 is larger than the training set (128 pairs)"),
    (["data.source=no/such/pairs.csv", "data.image_mean=[0.5]", "data.image_std=[0.5]"],
     "data.source: no/such/pairs.csv: cannot open (No such file or directory)"),
])
def test_a_refused_overwrite_leaves_the_old_run_as_it_was(old_run, sets, message, capsys):
    before = snapshot(old_run)
    assert train_tiny(old_run, "train.steps=4", *sets, extra=["--overwrite"]) == 2
    assert message in one_line_error(capsys)
    assert snapshot(old_run) == before
    assert sorted(p.name for p in old_run.parent.iterdir()) == ["run"]  # no staging left beside it


def test_tensorboard_without_the_package_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    assert train_tiny(tmp_path / "run", "train.steps=2", "train.tensorboard=true") == 2
    assert "train.tensorboard: the 'tensorboard' package is not installed" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_overwrite_keeps_the_old_run_until_the_new_one_fails_before_its_first_checkpoint(old_run, capsys):
    before = snapshot(old_run)
    assert train_tiny(old_run, "train.steps=4", "objective.name=test-always-nan", "train.max_bad_steps=0",
                  extra=["--overwrite"]) == 2
    assert "non-finite loss at step 1" in one_line_error(capsys)
    assert snapshot(old_run) == before
    assert sorted(p.name for p in old_run.parent.iterdir()) == ["run"]
    load_run(old_run)  # still usable


def test_overwrite_replaces_the_old_run_at_the_new_runs_first_checkpoint(old_run):
    old_weights = (old_run / "model.safetensors").read_bytes()
    assert train_tiny(old_run, "train.steps=3", "train.seed=1", extra=["--overwrite"]) == 0
    assert [p.name for p in list_checkpoints(old_run)] == ["step-00000003"]  # the old run's are gone
    assert (old_run / "model.safetensors").read_bytes() != old_weights
    assert [json.loads(line)["step"] for line in (old_run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in old_run.parent.iterdir()) == ["run"]


@pytest.mark.slow
def test_overwrite_killed_before_its_first_checkpoint_leaves_the_old_run_in_place(old_run):
    before = snapshot(old_run)
    args = [sys.executable, "-m", "lipkit", "train", "--config", "fashion-tiny",
            *(f"--set={s}" for s in [*TINY, "train.steps=100000", "train.seed=1"]), "--out", str(old_run), "--overwrite"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    staging = old_run.parent / ".run.incoming"
    try:
        deadline = time.monotonic() + 120
        while not (staging / "metrics.jsonl").is_file() or not (staging / "metrics.jsonl").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the new run did not start"
            time.sleep(0.05)
        assert snapshot(old_run) == before  # while it trains, the old run is whole where it was
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert snapshot(old_run) == before
    load_run(old_run)
    assert train_tiny(old_run, "train.steps=2", extra=["--overwrite"]) == 0  # the next writer clears the debris
    assert sorted(p.name for p in old_run.parent.iterdir()) == ["run"]


_SWAP_KILLED = """
import os, signal, sys
from pathlib import Path
from lipkit.train import run_place

renames = 0
real_replace = os.replace

def replace_then_die(src, dst):
    global renames
    real_replace(src, dst)
    renames += 1
    if renames == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

with run_place.RunPlace(Path(sys.argv[1])) as place:
    staging = place.open(overwrite=True, resuming=False)
    (staging / "model.safetensors").write_bytes(b"the new run's weights")
    os.replace = replace_then_die
    place.commit()
"""


@pytest.mark.parametrize("renames", [1, 2])
def test_a_swap_killed_midway_is_finished_by_the_next_writer(old_run, renames):
    proc = subprocess.run([sys.executable, "-c", _SWAP_KILLED, str(old_run), str(renames)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    beside = sorted(p.name for p in old_run.parent.iterdir())
    assert beside == ([".run.incoming", ".run.replaced"] if renames == 1 else [".run.replaced", "run"])
    with RunPlace(old_run):  # the next writer, on entering
        pass
    assert (old_run / "model.safetensors").read_bytes() == b"the new run's weights"
    assert sorted(p.name for p in old_run.parent.iterdir()) == ["run"]


def test_a_swap_whose_second_rename_fails_puts_the_old_run_back(old_run, monkeypatch):
    before = snapshot(old_run)
    real_replace = os.replace

    def second_rename_fails(src, dst):
        if Path(src).name == ".run.incoming":
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_replace(src, dst)

    with RunPlace(old_run) as place:
        staging = place.open(overwrite=True, resuming=False)
        (staging / "model.safetensors").write_bytes(b"the new run's weights")
        monkeypatch.setattr(os, "replace", second_rename_fails)
        with pytest.raises(RunDirError, match="the old run is back in place and the new one stays in"):
            place.commit()
        monkeypatch.undo()
    assert snapshot(old_run) == before
    assert (staging / "model.safetensors").read_bytes() == b"the new run's weights"


def test_an_attempt_that_ended_before_its_first_checkpoint_is_started_again(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    assert train_tiny(run, "train.steps=4", "objective.name=test-always-nan", "train.max_bad_steps=0") == 2
    assert (run / "config.yaml").is_file() and not list_checkpoints(run)
    with caplog.at_level(logging.WARNING, logger="lipkit.train"):
        assert train_tiny(run, "train.steps=2") == 0  # the corrected command, no --overwrite needed
    assert f"lipkit: note: {run} holds an attempt that ended before its first checkpoint" in caplog.text
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]


def test_resume_latest_without_a_checkpoint_starts_from_scratch_with_a_note(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="lipkit.train"):
        assert train_tiny(run, "train.steps=2", extra=["--resume", "latest"]) == 0
    assert f"lipkit: note: {run} holds no checkpoint yet; starting from step 0" in caplog.text
    assert "trained clip for 2 steps" in capsys.readouterr().out
    assert main(["train", "--out", str(tmp_path / "other"), "--resume", "latest"]) == 2  # no config to start from
    assert "holds no checkpoint and no config.yaml yet; pass --config" in one_line_error(capsys)


# --------------------------------------------------------------------------- one writer
def test_a_second_writer_is_refused_naming_the_holder_and_the_lock_dies_with_it(old_run, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lipkit.runs.lock import RunLock; RunLock(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(120)", str(old_run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(old_run)
        assert main(["train", "--out", str(old_run), "--resume", "latest", "--set=train.steps=6"]) == 2
        message = one_line_error(capsys)
        assert f"{old_run} is being written by another lipkit process (PID {holder.pid})" in message
        assert train_tiny(old_run, "train.steps=2", extra=["--overwrite"]) == 2
        assert f"PID {holder.pid}" in one_line_error(capsys)
        assert snapshot(old_run) == before
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the OS releases the lock
        holder.wait()
    assert main(["train", "--out", str(old_run), "--resume", "latest", "--set=train.steps=6"]) == 0


def test_forked_children_do_not_keep_a_run_locked(tmp_path):
    lock = RunLock(tmp_path)
    ready, started = os.pipe()
    child = os.fork()
    if child == 0:  # a data-loader worker, say: outlives the lock for a moment
        os.write(started, b"x")
        time.sleep(3)
        os._exit(0)
    os.read(ready, 1)  # the child runs (the fork hooks have run in it)
    try:
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            RunLock(tmp_path)
        lock.release()
        RunLock(tmp_path).release()  # free at once, though the child still runs
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


# --------------------------------------------------------------------------- resume from an intact checkpoint
def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_latest_falls_back_past_a_damaged_checkpoint(old_run, capsys, caplog):
    newest = list_checkpoints(old_run)[-1]
    _flip_a_byte(newest / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="lipkit.runs.directory"):
        assert main(["train", "--out", str(old_run), "--resume", "latest", "--set=train.steps=6"]) == 0
    assert (f"lipkit: warning: checkpoint {newest} is damaged (model.safetensors does not match the checksum "
            f"recorded when it was written); resuming from step-00000002 instead") in caplog.text
    assert "(resumed at step 2)" in capsys.readouterr().out
    # the damaged step-4 checkpoint was written again by the resumed run, whole
    assert [p.name for p in list_checkpoints(old_run)] == ["step-00000002", "step-00000004", "step-00000006"]
    assert main(["train", "--out", str(old_run), "--resume", "latest", "--set=train.steps=6"]) == 0
    assert "damaged" not in caplog.text.split("resuming from step-00000002 instead")[1]


def test_resuming_in_place_from_an_older_checkpoint_sets_the_later_ones_aside(old_run, caplog):
    step2 = list_checkpoints(old_run)[0]
    with caplog.at_level(logging.WARNING, logger="lipkit.runs.directory"):
        assert main(["train", "--out", str(old_run), "--resume", str(step2), "--set=train.steps=3"]) == 0
    aside = old_run / "checkpoints" / "abandoned-after-step-00000002"
    assert f"its later checkpoints (step-00000004) were moved to {aside}" in caplog.text
    assert [p.name for p in list_checkpoints(old_run)] == ["step-00000002", "step-00000003"]
    assert (aside / "step-00000004" / "model.safetensors").is_file()  # nothing lost, out of --resume latest's way
    assert [json.loads(line)["step"] for line in (old_run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert main(["train", "--out", str(old_run), "--resume", "latest", "--set=train.steps=4"]) == 0
    assert [p.name for p in list_checkpoints(old_run)] == ["step-00000002", "step-00000003", "step-00000004"]


def test_a_truncated_file_is_found_and_all_damaged_is_one_line(old_run, capsys):
    first, newest = list_checkpoints(old_run)
    trainer = newest / "trainer.pt"
    size = trainer.stat().st_size
    trainer.write_bytes(trainer.read_bytes()[: size // 2])
    (first / "tokenizer.json").unlink()
    assert main(["train", "--out", str(old_run), "--resume", "latest"]) == 2
    assert one_line_error(capsys) == (f"lipkit: error: {old_run / 'checkpoints'}: every checkpoint is damaged; "
                                       f"the newest, step-00000004: trainer.pt has {size // 2} bytes, {size} were written")
    assert main(["train", "--out", str(old_run), "--resume", str(first)]) == 2  # an explicit one: no fallback
    assert "the checkpoint is damaged (tokenizer.json is missing)" in one_line_error(capsys)


def test_a_trainer_state_that_is_not_a_checkpoint_gives_no_unsafe_advice(tmp_path):
    import pickle

    from lipkit.runs.directory import load_trainer_state

    pickle.dump({"format": 1, "payload": Path("/")}, open(tmp_path / "trainer.pt", "wb"))
    with pytest.raises(CheckpointError) as err:
        load_trainer_state(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'trainer.pt'}: not a lipkit trainer state (it holds more than tensors "
                              f"and plain containers, and lipkit loads nothing else)")
    (tmp_path / "trainer.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CheckpointError, match=r"not a lipkit trainer state \(not a complete torch file\)$"):
        load_trainer_state(tmp_path)


# --------------------------------------------------------------------------- disk full, read-only
def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_earlier_ones(tmp_path, monkeypatch, capsys):
    import lipkit.train.checkpointing as checkpointing

    writes = []

    def fill_up(state, path):
        writes.append(path)
        if len(writes) > 2:  # the model and objective of step 2 fit, nothing after
            path.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        torch_write(state, path)

    torch_write = checkpointing.write_tensors
    monkeypatch.setattr(checkpointing, "write_tensors", fill_up)
    run = tmp_path / "run"
    assert train_tiny(run, "train.steps=4", "train.save_every_steps=2") == 2
    assert one_line_error(capsys) == (f"lipkit: error: {run / 'checkpoints' / 'step-00000004'}: cannot write the "
                                       f"checkpoint (No space left on device); the checkpoints before it are intact")
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000002"]  # no half-written debris
    monkeypatch.setattr(checkpointing, "write_tensors", torch_write)
    assert main(["train", "--out", str(run), "--resume", "latest"]) == 0
    assert "(resumed at step 2)" in capsys.readouterr().out


def test_a_folder_turned_read_only_mid_run_is_one_line_and_keeps_the_checkpoints(tmp_path, monkeypatch, capsys):
    import json as real_json
    import types

    import lipkit.train.metrics_log as metrics_log

    def dumps(record):
        if record.get("step") == 3:  # after the checkpoint at step 2, the folder refuses writes
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_json.dumps(record)

    monkeypatch.setattr(metrics_log, "json", types.SimpleNamespace(dumps=dumps, loads=real_json.loads))
    run = tmp_path / "run"
    assert train_tiny(run, "train.steps=4", "train.save_every_steps=2") == 2
    assert one_line_error(capsys) == f"lipkit: error: {run / 'metrics.jsonl'}: Read-only file system"
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]
    monkeypatch.undo()
    assert main(["train", "--out", str(run), "--resume", "latest"]) == 0
    assert "(resumed at step 2)" in capsys.readouterr().out


def test_write_checkpoint_failing_is_a_lipkit_error_that_is_still_an_os_error(tmp_path):
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointWriteError) as err:
        write_checkpoint(tmp_path, 1, {"trainer.pt": full})
    assert isinstance(err.value, OSError) and not list(Path(tmp_path, "checkpoints").iterdir())


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write in: a read-only tmpfs where we may mount one (root), else a
    folder without write permission (which root would ignore)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_train_into_a_read_only_folder_stops_before_any_work(read_only_dir, capsys, monkeypatch):
    import lipkit.train.loop as loop

    monkeypatch.setattr(loop, "build_train_dataset", lambda *a, **k: pytest.fail("read data before checking --out"))
    assert train_tiny(read_only_dir / "run", "train.steps=2") == 2
    message = one_line_error(capsys)
    assert message.startswith(f"lipkit: error: --out {read_only_dir / 'run'}: cannot write in {read_only_dir} (")


def test_eval_into_a_read_only_folder_stops_before_any_task(finished_run, read_only_dir, capsys, monkeypatch):
    import lipkit.eval.runner as runner

    monkeypatch.setattr(runner, "evaluate_model", lambda *a, **k: pytest.fail("ran a task before checking --out"))
    assert main(["eval", str(finished_run), "--tasks", "zeroshot", "--out", str(read_only_dir / "r.json")]) == 2
    assert one_line_error(capsys).startswith(f"lipkit: error: --out {read_only_dir}: cannot write in {read_only_dir} (")
    assert main(["eval", str(finished_run), "--tasks", "zeroshot", "--out-dir", str(read_only_dir / "results")]) == 2
    assert "--out-dir" in one_line_error(capsys)


def test_report_on_a_run_not_yet_evaluated_shows_its_training(finished_run, tmp_path, capsys):
    assert main(["report", str(finished_run), "--out", str(tmp_path / "r.html")]) == 0
    assert "metrics.jsonl" not in capsys.readouterr().err
    assert "<html" in (tmp_path / "r.html").read_text()

