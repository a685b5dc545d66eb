"""Bad input, second round: each case a new user met is one line on stderr (exit 2) naming the bad
thing, or works; nothing is silently wrong and nothing already written is lost. benchmarks/faults.py
(`--cases-only`) runs the same cases through the command line for docs/reliability.md."""
from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from _tiny_runs import one_line_error, snapshot, train_tiny
from lipkit.cli import main
from lipkit.config import ConfigError, load_config
from lipkit.runs.directory import list_checkpoints
from lipkit.train.run_place import RunDirError, RunPlace
from lipkit.yaml_loader import parse_yaml

@pytest.fixture
def tmpfs():
    """mount(path, size): a tmpfs on `path` for the test (skipped where this machine cannot mount)."""
    mounted = []

    def mount(path: Path, size: str = "64m") -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                              check=False)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


# --------------------------------------------------------------------------- tracebacks that were
@pytest.mark.parametrize("setting, message", [
    ("model.vision.patch_size=5", "model.vision.patch_size: 5 does not divide model.vision.image_size 28"),
    ("model.vision.heads=3", "model.vision.heads: 3 does not divide model.vision.width 32"),
    ("model.text.heads=3", "model.text.heads: 3 does not divide model.text.width 32"),
    ("model.vision.width=0", "model.vision.width: must be >= 1, got 0"),
    ("model.embed_dim=0", "model.embed_dim: must be >= 1, got 0"),
    ("train.lr=.inf", "train.lr: must be > 0 and finite, got inf"),
    ("train.lr=.nan", "train.lr: must be > 0 and finite, got nan"),
    ("train.lr=0", "train.lr: must be > 0 and finite, got 0.0"),
])
def test_a_model_or_rate_that_cannot_train_is_one_line_before_anything_is_written(old_run, setting, message, capsys):
    before = snapshot(old_run)
    assert train_tiny(old_run, "train.steps=4", setting, extra=["--overwrite"]) == 2
    assert message in one_line_error(capsys)
    assert snapshot(old_run) == before
    assert sorted(p.name for p in old_run.parent.iterdir()) == ["run"]


@pytest.fixture(scope="module")
def hf_export(finished_run, tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    os.environ["HF_HUB_OFFLINE"] = "1"
    out = tmp_path_factory.mktemp("hf") / "hf"
    mask = os.umask(0o022)
    try:
        assert main(["export", str(finished_run), "--to", "hf", str(out)]) == 0
    finally:
        os.umask(mask)
    return out


def test_pickled_weights_are_refused_in_one_line_and_run_nothing(hf_export, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    source = tmp_path / "pickled"
    shutil.copytree(hf_export, source)
    marker = tmp_path / "code-ran"
    state = load_file(str(source / "model.safetensors"))
    state["payload"] = _Payload(marker)
    torch.save(state, source / "pytorch_model.bin")
    (source / "model.safetensors").unlink()
    assert main(["import", f"hf:{source}", str(tmp_path / "imported")]) == 2
    line = one_line_error(capsys)
    assert f"hf:{source}: its weights file is a pickle holding more than tensors (it refers to posix.system)" in line
    assert not marker.exists() and not (tmp_path / "imported").exists()


class _Payload:
    """Unpickling this runs a shell command (what a weights file of unknown origin may hold)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_export_and_import_into_an_empty_mount_point(finished_run, hf_export, tmpfs, tmp_path, capsys):
    volume = tmpfs(tmp_path / "volume")
    assert main(["export", str(finished_run), "--to", "hf", str(volume)]) == 0
    assert sorted(p.name for p in volume.iterdir()) == sorted(p.name for p in hf_export.iterdir())
    imported = tmpfs(tmp_path / "imported")
    assert main(["import", f"hf:{volume}", str(imported)]) == 0
    assert (imported / "model.safetensors").is_file() and not [p for p in imported.iterdir() if p.name.startswith(".")]


def test_export_onto_a_full_disk_is_one_line_and_keeps_nothing(finished_run, hf_export, tmpfs, tmp_path, capsys):
    small = tmpfs(tmp_path / "small", size="100k")  # room for the config files, not the weights
    assert main(["export", str(finished_run), "--to", "hf", str(small / "out")]) == 2
    assert f"{small / 'out'}: cannot write the export (No space left on device)" in one_line_error(capsys)
    assert list(small.iterdir()) == []


def test_a_rust_writers_full_disk_is_one_line_too(finished_run, hf_export, tmp_path, monkeypatch, capsys):
    """Where no tmpfs can be mounted: safetensors' own error type, as it reports a full disk."""
    from safetensors import SafetensorError

    import lipkit.runs.directory as run_dir

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(run_dir, "save_file", full)
    assert main(["export", str(finished_run), "--to", "hf", str(tmp_path / "out")]) == 2
    assert "cannot write the export (No space left on device); nothing of it was kept" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_convert_refuses_a_prefix_that_is_a_path_before_writing(tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["data", "convert", "digits", "--to", "shards", str(out), "--prefix", "../x"]) == 2
    assert "--prefix '../x': must be a plain file name" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- silently wrong
def test_a_key_given_twice_is_refused_with_its_lines(tmp_path, capsys):
    twice = tmp_path / "twice.yaml"
    twice.write_text("base: fashion-tiny\ntrain:\n  steps: 4\n  lr: 0.1\n  lr: 0.2\n")
    assert main(["train", "--config", str(twice), "--out", str(tmp_path / "run")]) == 2
    assert f"{twice}:5:3: not valid YAML: duplicate key 'lr' (first at line 4)" in one_line_error(capsys)
    sections = tmp_path / "sections.yaml"
    sections.write_text("train: {steps: 4}\nmodel: {embed_dim: 8}\ntrain: {lr: 0.2}\n")
    with pytest.raises(ConfigError, match=r"sections.yaml:3:1: not valid YAML: duplicate key 'train' "
                                          r"\(first at line 1\)"):
        load_config(str(sections))
    assert not (tmp_path / "run").exists()


def test_plain_values_are_read_as_yaml_1_2(tmp_path):
    from lipkit.yaml_loader import dump_yaml

    values = parse_yaml("a: 1_000\nb: 010\nc: 0o10\nd: 1e6\ne: yes\nf: 1:30\ng: 2026-01-01\nh: .inf\ni: ~\n", "x")
    assert values == {"a": "1_000", "b": 10, "c": 8, "d": 1e6, "e": "yes", "f": "1:30", "g": "2026-01-01",
                      "h": float("inf"), "i": None}
    config = tmp_path / "c.yaml"
    config.write_text("base: fashion-tiny\ntrain: {steps: 1_000}\n")
    with pytest.raises(ConfigError, match=r"train.steps: expected int, got str '1_000'"):
        load_config(str(config))
    # what lipkit writes, it reads back as written: strings that look like numbers stay quoted
    data = {"s": ["1e6", "0o17", "010", "1_000", "yes", "null", ""], "n": [1e-5, 3, True, None]}
    assert parse_yaml(dump_yaml(data), "x") == data


def test_a_checkpoint_without_its_manifest_is_passed_over_as_damaged(old_run, capsys, caplog):
    (old_run / "checkpoints" / "step-00000004" / "manifest.json").unlink()
    assert main(["train", "--out", str(old_run), "--resume", "latest", "--set", "train.steps=6"]) == 0
    assert "(resumed at step 2)" in capsys.readouterr().out
    assert "step-00000004 is damaged (manifest.json is missing, so its files cannot be checked)" in caplog.text


def test_resuming_a_finished_run_trains_nothing_and_says_so(old_run, capsys):
    before = snapshot(old_run, times=True)
    assert main(["train", "--out", str(old_run), "--resume", "latest"]) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and "is at step 4, which is train.steps" in out and "nan" not in out
    assert snapshot(old_run, times=True) == before  # not even the last checkpoint written again
    assert main(["train", "--out", str(old_run), "--resume", "latest", "--set", "train.steps=3"]) == 2
    assert "train.steps=3: the checkpoint to resume" in one_line_error(capsys)
    assert snapshot(old_run, times=True) == before


# --------------------------------------------------------------------------- lost
def test_overwrite_of_a_mount_point_is_refused_before_training(finished_run, tmpfs, tmp_path, capsys):
    run = tmpfs(tmp_path / "run")
    shutil.copytree(finished_run, run, dirs_exist_ok=True)
    before = snapshot(run)
    assert train_tiny(run, "train.steps=4", "train.seed=1", extra=["--overwrite"]) == 2
    assert f"--overwrite: {run} is a mount point, which cannot be renamed" in one_line_error(capsys)
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_swap_whose_first_rename_fails_keeps_the_new_run_beside_the_old(old_run, monkeypatch):
    before = snapshot(old_run)
    real_replace = os.replace

    def first_rename_fails(src, dst):
        if Path(src) == old_run:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        real_replace(src, dst)

    with RunPlace(old_run) as place:
        staging = place.open(overwrite=True, resuming=False)
        (staging / "model.safetensors").write_bytes(b"the new run's weights")
        monkeypatch.setattr(os, "replace", first_rename_fails)
        with pytest.raises(RunDirError,
                           match=r"cannot move the old run .* \(Device or resource busy\); it is as it was"):
            place.commit()
        monkeypatch.undo()
    assert snapshot(old_run) == before
    assert (staging / "model.safetensors").read_bytes() == b"the new run's weights"


_STAGE_AND_WAIT = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from lipkit.files import staged_directory
    with staged_directory(Path(sys.argv[1])) as tmp:
        (tmp / "weights").write_bytes(b"x" * 5000)
        print(tmp, flush=True)
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
""")


def test_the_staging_folder_of_a_killed_export_is_cleared_by_the_next_one(tmp_path):
    from lipkit.files import staged_directory

    live = subprocess.Popen([sys.executable, "-c", _STAGE_AND_WAIT, str(tmp_path / "live"), "wait"],
                            stdout=subprocess.PIPE, text=True)
    try:
        in_use = Path(live.stdout.readline().strip())
        killed = subprocess.run([sys.executable, "-c", _STAGE_AND_WAIT, str(tmp_path / "killed"), "die"],
                                capture_output=True, text=True, check=False)
        assert killed.returncode == -signal.SIGKILL
        stale = Path(killed.stdout.strip())
        assert stale.is_dir() and in_use.is_dir()
        with staged_directory(tmp_path / "next") as tmp:
            (tmp / "weights").write_bytes(b"y")
        assert not stale.exists()  # the killed writer's
        assert in_use.is_dir()  # a live writer's is kept
    finally:
        live.kill()
        live.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [in_use.name, "next"]


# --------------------------------------------------------------------------- friction on the way
def test_colour_images_with_the_grayscale_preset(tmp_path, capsys):
    assert train_tiny(tmp_path / "run", f"data.source={tmp_path / 'pairs.csv'}") == 2  # the missing file comes first
    assert f"data.source: {tmp_path / 'pairs.csv'}: cannot open (No such file or directory)" in one_line_error(capsys)
    rows = ["image,caption"]
    for i in range(8):
        Image.new("RGB", (12, 10), (30 * i, 200, 90)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,a green square number {i}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    sets = ["train.steps=1", "train.batch_size=8", f"data.source={tmp_path / 'pairs.csv'}"]
    assert train_tiny(tmp_path / "run", *sets) == 2
    assert "for colour images set model.vision.channels=3" in one_line_error(capsys)
    assert train_tiny(tmp_path / "run", *sets, "model.vision.channels=3") == 0  # the advice works


def test_init_from_a_folder_that_is_no_model(tmp_path, capsys):
    assert main(["train", "--init", str(tmp_path / "nonexist"), "--out", str(tmp_path / "run")]) == 2
    assert f"--init {tmp_path / 'nonexist'}: no such directory" in one_line_error(capsys)
    assert main(["train", "--init", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "not a run or `lipkit import` directory (no config.yaml)" in one_line_error(capsys)


def test_resume_latest_without_a_checkpoint_starts_again_from_the_attempts_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_tiny(run, "train.steps=2", "objective.name=test-always-nan", "train.max_bad_steps=0") == 2
    assert (run / "config.yaml").is_file() and not list_checkpoints(run)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "latest", "--set", "objective.name=clip"]) == 0
    assert "trained clip for 2 steps" in capsys.readouterr().out
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]


def test_a_value_where_a_section_belongs_is_blamed_on_its_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("base: fashion-tiny\ntrain: 5\n")
    assert main(["train", "--config", str(config), "--set", "train.steps=3", "--out", str(tmp_path / "run")]) == 2
    assert f"lipkit: error: {config}: train: expected a section (a mapping of keys), got 5" == one_line_error(capsys)
    assert main(["train", "--config", "fashion-tiny", "--set", "train=5", "--set", "train.steps=3",
                 "--out", str(tmp_path / "run")]) == 2
    assert "'train' is a value (set by --set 'train=5'), not a section" in one_line_error(capsys)


def test_label_names_are_refused_with_file_and_line(tmp_path, capsys):
    Image.new("RGB", (12, 10), (255, 0, 0)).save(tmp_path / "red.png")
    (tmp_path / "pairs.csv").write_text("image,caption,label\nred.png,a red square,0\nred.png,a red thing,red\n")
    assert main(["data", "convert", str(tmp_path / "pairs.csv"), "--to", "shards", str(tmp_path / "out"),
                 "--label-column", "label"]) == 2
    assert f"{tmp_path / 'pairs.csv'}:3: label 'red' is not an integer class index" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_report_on_a_folder_that_is_not_a_run_suggests_nothing_that_fails(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert main(["report", str(tmp_path / "photos"), "--out", str(tmp_path / "r.html")]) == 2
    line = one_line_error(capsys)
    assert "not a run directory (no config.yaml)" in line and f"'lipkit eval {tmp_path / 'photos'}" not in line


def test_argmax_agreement_is_not_called_higher_is_better():
    from lipkit.eval.registry import PROTOTYPE_COLLAPSE
    from lipkit.report.collect import RunData
    from lipkit.report.html import _glance

    runs = [RunData(name, Path(name), records=[{"task": PROTOTYPE_COLLAPSE, "dataset": "fashion-mnist",
                                                "metrics": {"argmax_agreement": value}}])
            for name, value in (("collapsed", 1.0), ("healthy", 0.4))]
    row = _glance(runs, {"collapsed": "#000", "healthy": "#111"})
    assert "not a score: a collapsed model" in row and "higher is better" not in row
    assert "bar best" not in row  # the collapsed model's 100% is not marked as the best


def test_progress_bars_in_a_log_file_are_plain_lines(tmp_path, capsys):
    from lipkit.progress import PlainLines, progress_bar

    log = io.StringIO()
    for _ in progress_bar(range(2000), desc="convert", file=log):
        pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert len(lines) == 2 and lines[-1].startswith("convert: 100%") and "2000/2000" in lines[-1]
    plain = PlainLines(io.StringIO(), interval=0)
    plain.write("\r\x1b[A status 1   \r")
    assert plain.stream.getvalue() == "status 1\n"
    assert train_tiny(tmp_path / "run", "train.steps=3", "train.progress=true") == 0
    err = capsys.readouterr().err
    assert "\r" not in err and 1 <= sum("train clip" in line for line in err.splitlines()) <= 2


def test_exported_and_imported_weights_are_readable_like_every_other_file(hf_export, tmp_path):
    mask = os.umask(0o022)
    try:
        assert main(["import", f"hf:{hf_export}", str(tmp_path / "imported")]) == 0
    finally:
        os.umask(mask)
    for folder in (hf_export, tmp_path / "imported"):
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
        assert set(modes.values()) == {"0o644"}, modes


def test_the_cases_section_of_the_reliability_page_is_rewritten_alone(tmp_path):
    """`faults.py --cases-only` rewrites its own section and leaves the kill points' as they were."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "faults_page.py"
    spec = importlib.util.spec_from_file_location("lipkit_faults_page", path)
    page_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page_module)

    class Case:  # what faults_cases.Case gives the page
        def __init__(self, case, outcome, saw):
            self.group, self.case, self.outcome, self.saw = "was lost", case, outcome, [saw]
            self.status, self.traceback, self.kept, self.skipped = 2, False, "the old run", ""

    page = tmp_path / "reliability.md"
    page.write_text("# Reliability\n\n## SIGKILL at random moments\n\n**20/20** bitwise equal\n")
    page_module.write_cases_section(page, [Case("a", "one line", "lipkit: error: a")], "cmd")
    page_module.write_cases_section(page, [Case("b|c", "lost", "lipkit: error: b")], "cmd")
    text = page.read_text()
    assert text.startswith("# Reliability\n\n## SIGKILL at random moments\n\n**20/20** bitwise equal\n\n## Bad input")
    assert text.count("## Bad input") == 1 and "lipkit: error: a" not in text
    assert "| was lost | b\\|c | exit 2; `lipkit: error: b` | **lost** | the old run |" in text
