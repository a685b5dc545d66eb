"""Bad input as a new user gives it, through the command line: for each case, what the user saw
(one `lipkit: error:` line, a traceback, or the command working) and whether what was already
written was kept. `make faults` runs these after the kill points; `python benchmarks/faults.py
--cases-only` runs only these and rewrites their section of docs/reliability.md.

Every case builds what it needs in `work` (a tiny finished run, Hugging Face exports, tmpfs mounts
where the machine allows them: root and mount(8)); a case this machine cannot set up is reported
as "not run here" with the reason. The outcome is decided from what happened, never assumed:
"traceback" when stderr holds one, "lost" when a check of what should have been kept fails, "one
line" for exit 2 with exactly one error line, "works" for exit 0 with the expected result."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
TINY = ["train.batch_size=32", "train.warmup_steps=1", "train.log_every_steps=1", "train.progress=false",
        "data.train_limit=128", "model.vision.width=32", "model.vision.layers=1", "model.vision.heads=2",
        "model.text.width=32", "model.text.layers=1", "model.text.heads=2", "model.embed_dim=16"]


@dataclass
class Case:
    group: str
    case: str
    command: str = ""
    status: int | None = None
    saw: list[str] = field(default_factory=list)  # the lines worth showing: the error, a note, a result
    traceback: bool = False
    kept: str = ""  # what was kept (or, for a command that works, what it did)
    kept_ok: bool = True
    expect: str = "one line"  # or "works"
    skipped: str = ""  # why this machine could not run it

    @property
    def outcome(self) -> str:
        if self.skipped:
            return "not run here"
        if self.traceback:
            return "traceback"
        if not self.kept_ok:
            return "lost"
        if self.expect == "one line":
            return "one line" if self.status == 2 and len(self.saw) == 1 else f"exit {self.status}"
        return "works" if self.status == 0 else f"exit {self.status}"


class Cli:
    """Runs `lipkit ARGS` as a user would (a fresh process; stderr not a terminal)."""

    def __init__(self, work: Path):
        self.work = work

    def __call__(self, case: Case, *args: str, python: Path | str = sys.executable,
                 cwd: Path | None = None) -> tuple[str, str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        done = subprocess.run([str(python), "-m", "lipkit", *args], capture_output=True, text=True, env=env,
                              check=False, cwd=cwd or self.work, timeout=600)
        shown = " ".join(a if " " not in a else repr(a) for a in args).replace(str(self.work) + "/", "")
        case.command = f"lipkit {shown}"
        case.status = done.returncode
        case.traceback = "Traceback (most recent call last)" in done.stderr
        case.saw = [line for line in done.stderr.splitlines() if line.startswith("lipkit: error: ")]
        return done.stdout, done.stderr


def snapshot(folder: Path) -> dict:
    """Every file under `folder` and its bytes and write time (the run lock aside)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def train_args(run: Path, *sets: str) -> list[str]:
    return ["train", "--config", "fashion-tiny", *(f"--set={s}" for s in [*TINY, *sets]), "--out", str(run)]


@contextlib.contextmanager
def mounted(path: Path, size: str = "64m"):
    """A tmpfs on `path`, or None where this machine cannot mount one."""
    from faults import can_mount  # beside this file

    if not can_mount():
        yield None
        return
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


class Cases:
    def __init__(self, work: Path):
        self.work = work
        self.cli = Cli(work)
        self._finished: Path | None = None
        self._hf: Path | None = None

    # ---- shared set-up
    def finished_run(self) -> Path:
        """A 4-step CLIP run, checkpoints at steps 2 and 4 (each case copies it)."""
        if self._finished is None:
            self._finished = self.work / "finished"
            done = Case("", "")
            self.cli(done, *train_args(self._finished, "train.steps=4", "train.save_every_steps=2"))
            if done.status != 0:
                raise SystemExit(f"the tiny run failed: {done.saw}")
        return self._finished

    def copy_of_run(self, name: str) -> Path:
        run = self.work / name
        shutil.copytree(self.finished_run(), run)
        return run

    def hf_export(self) -> Path:
        if self._hf is None:
            self._hf = self.work / "hf-export"
            self.cli(Case("", ""), "export", str(self.finished_run()), "--to", "hf", str(self._hf))
        return self._hf

    def kept_run(self, case: Case, run: Path, before: dict) -> None:
        case.kept_ok = snapshot(run) == before and not [p for p in run.parent.iterdir()
                                                          if p.name.startswith(f".{run.name}.")]
        case.kept = "the old run, every file unchanged" if case.kept_ok else "**the old run changed**"

    # ---- tracebacks that were
    def architecture(self, setting: str) -> Case:
        case = Case("was a traceback", f"`--set {setting}` with `--overwrite` of a finished run")
        run = self.copy_of_run(f"arch-{setting}")
        before = snapshot(run)
        self.cli(case, *train_args(run, "train.steps=4", setting), "--overwrite")
        self.kept_run(case, run, before)
        return case

    def pickled_hf(self) -> Case:
        case = Case("was a traceback", "`lipkit import hf:DIR` of a pickled `pytorch_model.bin` that runs a command")
        source = self.work / "pickled-hf"
        shutil.copytree(self.hf_export(), source)
        marker = self.work / "code-ran"
        _pickle_weights(source / "model.safetensors", source / "pytorch_model.bin", marker)
        self.cli(case, "import", f"hf:{source}", str(self.work / "pickled-hf-import"))
        case.kept_ok = not marker.exists() and not (self.work / "pickled-hf-import").exists()
        case.kept = "no code ran; no output folder" if case.kept_ok else "**code ran or a folder was written**"
        return case

    def pickled_open_clip(self) -> Case:
        case = Case("was a traceback", "`lipkit import open_clip:DIR` whose `open_clip_pytorch_model.bin` runs a "
                                       "command")
        if not PEER_PYTHON.exists():
            case.skipped = "open_clip lives in .venv-peer (make peer)"
            return case
        source = self.work / "pickled-open-clip"
        export = Case("", "")
        self.cli(export, "export", str(self.finished_run()), "--to", "open_clip", str(source), python=PEER_PYTHON)
        if export.status != 0:
            case.skipped = f"the open_clip export failed here: {export.saw}"
            return case
        marker = self.work / "code-ran-open-clip"
        _pickle_weights(source / "open_clip_model.safetensors", source / "open_clip_pytorch_model.bin", marker)
        self.cli(case, "import", f"open_clip:{source}", str(self.work / "pickled-oc-import"), python=PEER_PYTHON)
        case.kept_ok = not marker.exists() and not (self.work / "pickled-oc-import").exists()
        case.kept = "no code ran; no output folder" if case.kept_ok else "**code ran or a folder was written**"
        return case

    def mount_point(self, what: str) -> Case:
        case = Case("was a traceback", f"`lipkit {what}` into an empty mount point (a tmpfs, as a Docker volume)",
                    expect="works")
        with mounted(self.work / f"volume-{what}") as volume:
            if volume is None:
                case.skipped = "this machine cannot mount a tmpfs"
                return case
            if what == "export":
                self.cli(case, "export", str(self.finished_run()), "--to", "hf", str(volume))
            else:
                self.cli(case, "import", f"hf:{self.hf_export()}", str(volume))
            names = sorted(p.name for p in volume.iterdir())
            case.kept = f"the mount point holds {', '.join(names)}"
            case.kept_ok = bool(names) and not [n for n in names if n.startswith(".")]
        return case

    def full_disk_export(self) -> Case:
        case = Case("was a traceback", "`lipkit export` onto a full disk (a 100 KiB tmpfs; the weights need 180 KB)")
        with mounted(self.work / "small", size="100k") as small:
            if small is None:
                case.skipped = "this machine cannot mount a tmpfs"
                return case
            self.cli(case, "export", str(self.finished_run()), "--to", "hf", str(small / "out"))
            left = sorted(p.name for p in small.iterdir())
            case.kept_ok = not left
            case.kept = "nothing half-written left on the disk" if not left else f"**left: {', '.join(left)}**"
        return case

    def convert_prefix(self) -> Case:
        case = Case("was a traceback", "`lipkit data convert digits --to shards DIR --prefix ../x`")
        out = self.work / "convert-out"
        self.cli(case, "data", "convert", "digits", "--to", "shards", str(out), "--prefix", "../x")
        case.kept_ok = not out.exists() and not list(self.work.glob("x-*"))
        case.kept = "no folder created" if case.kept_ok else "**a folder or shard was written**"
        return case

    # ---- silently wrong that was
    def silent_setting(self, setting: str, what: str) -> Case:
        case = Case("was silently wrong", f"`--set {setting}` ({what})")
        run = self.work / f"silent-{setting}"
        self.cli(case, *train_args(run, "train.steps=2", setting))
        case.kept_ok = not run.exists()
        case.kept = "nothing written" if case.kept_ok else "**a run directory was written**"
        return case

    def yaml_file(self, name: str, text: str, what: str) -> Case:
        case = Case("was silently wrong", what)
        config = self.work / name
        config.write_text(text)
        self.cli(case, "train", "--config", str(config), "--out", str(self.work / f"yaml-{name}"))
        case.kept_ok = not (self.work / f"yaml-{name}").exists()
        case.kept = "nothing written" if case.kept_ok else "**a run directory was written**"
        return case

    def manifest_deleted(self) -> Case:
        case = Case("was silently wrong", "`--resume latest` when the newest checkpoint's manifest.json was deleted",
                    expect="works")
        run = self.copy_of_run("no-manifest")
        (run / "checkpoints" / "step-00000004" / "manifest.json").unlink()
        out, err = self.cli(case, "train", "--out", str(run), "--resume", "latest", "--set", "train.steps=6")
        case.saw = [line for line in err.splitlines() if "is damaged" in line] + _result_line(out)
        aside = run / "checkpoints" / "abandoned-after-step-00000002" / "step-00000004"
        case.kept_ok = "(resumed at step 2)" in out and aside.is_dir()
        case.kept = ("resumed from step-00000002; the unchecked step-00000004 kept aside in "
                     "checkpoints/abandoned-after-step-00000002/" if case.kept_ok
                     else "**resumed from the unchecked one**")
        return case

    def finished_resume(self) -> Case:
        case = Case("was silently wrong", "`--resume latest` of a run that already reached train.steps", expect="works")
        run = self.copy_of_run("finished-resume")
        before = snapshot(run)
        out, _ = self.cli(case, "train", "--out", str(run), "--resume", "latest")
        case.saw = _result_line(out)
        case.kept_ok = snapshot(run) == before and "nothing to train" in out
        case.kept = "every file untouched" if case.kept_ok else "**files rewritten or a misleading result**"
        return case

    # ---- lost that was
    def overwrite_mount_point(self) -> Case:
        case = Case("was lost", "`--overwrite` of a run whose directory is a mount point")
        with mounted(self.work / "run-volume") as run:
            if run is None:
                case.skipped = "this machine cannot mount a tmpfs"
                return case
            shutil.copytree(self.finished_run(), run, dirs_exist_ok=True)
            before = snapshot(run)
            out, _ = self.cli(case, *train_args(run, "train.steps=4", "train.seed=1"), "--overwrite")
            self.kept_run(case, run, before)
            if "trained" in out:
                case.kept_ok, case.kept = False, "**the new run trained before the refusal**"
            elif case.kept_ok:
                case.kept += "; refused before training"
        return case

    def killed_export(self) -> Case:
        case = Case("was lost", "`lipkit export` killed while writing, then another export into the same folder",
                    expect="works")
        parent = self.work / "exports"
        parent.mkdir()
        killer = textwrap.dedent(f"""
            import os, signal, sys
            from lipkit.interop import hf
            from lipkit.interop.export import export_run
            real = hf.write
            def write_then_die(out, *args):
                real(out, *args)
                os.kill(os.getpid(), signal.SIGKILL)
            hf.write = write_then_die
            export_run({str(self.finished_run())!r}, "hf", {str(parent / "first")!r})
        """)
        subprocess.run([sys.executable, "-c", killer], capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       check=False)
        stale = [p.name for p in parent.iterdir()]
        self.cli(case, "export", str(self.finished_run()), "--to", "hf", str(parent / "second"))
        left = sorted(p.name for p in parent.iterdir())
        case.kept_ok = bool(stale) and left == ["second"]
        case.kept = (f"the killed export's {stale[0]} was removed by the second export" if case.kept_ok
                     else f"**left: {', '.join(left)}** (after the kill: {', '.join(stale) or 'nothing'})")
        case.kept = case.kept.replace(str(self.work) + "/", "")
        return case

    # ---- friction on the way
    def own_rgb_data(self) -> list[Case]:
        missing = Case("friction", "own data with `--config fashion-tiny` (a grayscale tower), the CSV misspelt")
        self.cli(missing, *train_args(self.work / "rgb-run", f"data.source={self.work / 'pairs.csv'}"))
        missing.kept, missing.kept_ok = "the missing file is named first, not the image settings", True
        if missing.saw and "cannot open" not in missing.saw[0]:
            missing.kept_ok, missing.kept = False, "**blamed the image settings**"
        _colour_pairs(self.work)
        sets = ["train.steps=1", "train.batch_size=8", f"data.source={self.work / 'pairs.csv'}"]
        rgb = Case("friction", "own RGB data with `--config fashion-tiny`")
        self.cli(rgb, *train_args(self.work / "rgb-run", *sets))
        rgb.kept = "nothing written; the line says what to set"
        advice = Case("friction", "... with the advice, `--set model.vision.channels=3`", expect="works")
        out, _ = self.cli(advice, *train_args(self.work / "rgb-run", *sets, "model.vision.channels=3"))
        advice.saw, advice.kept = _result_line(out), "a run directory"
        return [missing, rgb, advice]

    def init_missing(self) -> Case:
        case = Case("friction", "`--init nonexist`")
        self.cli(case, "train", "--init", "nonexist", "--out", str(self.work / "init-run"))
        case.kept = "nothing written"
        return case

    def resume_without_checkpoint(self) -> list[Case]:
        attempt = Case("friction", "`lipkit train --out RUN --resume latest` after an attempt that ended before its "
                                   "first checkpoint", expect="works")
        run = self.work / "attempt"
        _killed_before_its_first_checkpoint(run)
        out, err = self.cli(attempt, "train", "--out", str(run), "--resume", "latest", "--set", "train.steps=2")
        attempt.saw = [line for line in err.splitlines() if "note:" in line][:1] + _result_line(out)
        attempt.kept = "started again from the attempt's own config.yaml"
        attempt.kept_ok = (run / "checkpoints" / "step-00000002").is_dir()
        empty = Case("friction", "`lipkit train --out NEW --resume latest` with nothing in NEW")
        self.cli(empty, "train", "--out", str(self.work / "empty-run"), "--resume", "latest")
        empty.kept = "nothing written; the line says to pass --config"
        return [attempt, empty]

    def section_as_value(self) -> Case:
        case = Case("friction", "`train: 5` in a config file, with `--set train.steps=3`")
        config = self.work / "train5.yaml"
        config.write_text("base: fashion-tiny\ntrain: 5\n")
        self.cli(case, "train", "--config", str(config), "--set", "train.steps=3", "--out", str(self.work / "t5"))
        case.kept = "nothing written; the file is blamed, not the flag"
        case.kept_ok = bool(case.saw) and "--set" not in case.saw[0]
        return case

    def label_names(self) -> Case:
        case = Case("friction", "`lipkit data convert pairs.csv --label-column label` with class names as labels")
        folder = self.work / "labelled"
        _colour_pairs(folder, labels=True)
        self.cli(case, "data", "convert", str(folder / "pairs.csv"), "--to", "shards", str(folder / "shards"),
                 "--label-column", "label")
        case.kept_ok = not (folder / "shards").exists() and bool(case.saw) and "pairs.csv:2:" in case.saw[0]
        case.kept = "nothing written; file and line named" if case.kept_ok else "**no file and line**"
        return case

    def report_non_run(self) -> Case:
        case = Case("friction", "`lipkit report DIR` on a folder that is not a run")
        (self.work / "photos").mkdir()
        self.cli(case, "report", str(self.work / "photos"), "--out", str(self.work / "report.html"))
        case.kept_ok = bool(case.saw) and "'lipkit eval" not in case.saw[0]
        case.kept = "no page written; no advice that would fail" if case.kept_ok else "**suggests lipkit eval DIR**"
        return case

    def progress_in_log(self) -> Case:
        case = Case("friction", "training with progress bars and stderr sent to a log file (not a terminal)",
                    expect="works")
        _, err = self.cli(case, *train_args(self.work / "progress-run", "train.steps=20", "train.progress=true"))
        bars = [line for line in err.splitlines() if line.startswith("train clip")]
        case.saw = [bar.split(" [")[0] for bar in bars[-1:]]  # the count, not the speed
        case.kept_ok = "\r" not in err and "\x1b" not in err and len(bars) <= 3
        case.kept = (f"{len(bars)} plain lines for 20 steps, no carriage returns or escape codes" if case.kept_ok
                     else f"**{err.count(chr(13))} carriage returns**")
        return case

    def argmax_label(self) -> Case:
        case = Case("friction", "`lipkit report` of an nCLIP model's collapse figures", expect="works")
        results = self.work / "collapse-results.json"
        results.write_text(json.dumps([{"task": "prototype_collapse", "dataset": "fashion-mnist", "model": "collapsed",
                                        "metrics": {"argmax_agreement": 1.0}}]))
        page = self.work / "collapse.html"
        self.cli(case, "report", str(results), "--out", str(page))
        text = page.read_text(encoding="utf-8") if page.is_file() else ""
        case.kept_ok = "not a score: a collapsed model" in text
        case.saw = ["argmax agreement: “not a score: a collapsed model (one prototype for everything) agrees 100%”"
                    if case.kept_ok else "argmax agreement: “higher is better”"]
        case.kept = "the page" if page.is_file() else "no page"
        return case

    def file_modes(self) -> Case:
        case = Case("friction", "file modes of `lipkit export` and `lipkit import` output (umask 022)", expect="works")
        mask = os.umask(0o022)
        try:
            self.cli(case, "import", f"hf:{self.hf_export()}", str(self.work / "modes-import"))
        finally:
            os.umask(mask)
        modes = {f"{p.parent.name}/{p.name}": oct(p.stat().st_mode & 0o777)
                 for folder in (self.hf_export(), self.work / "modes-import") if folder.is_dir()
                 for p in folder.iterdir()}
        odd = {k: v for k, v in modes.items() if v != "0o644"}
        case.kept_ok = bool(modes) and not odd
        case.kept = f"all {len(modes)} files 0644" if case.kept_ok else f"**{odd}**"
        return case

    def all(self, log=print) -> list[Case]:
        steps = [
            lambda: self.architecture("model.vision.patch_size=5"),
            lambda: self.architecture("model.vision.heads=3"),
            lambda: self.architecture("model.vision.width=0"),
            self.pickled_hf, self.pickled_open_clip,
            lambda: self.mount_point("export"), lambda: self.mount_point("import"),
            self.full_disk_export, self.convert_prefix,
            lambda: self.silent_setting("train.lr=.inf", "trained every weight to NaN"),
            lambda: self.silent_setting("model.embed_dim=0", "trained nothing"),
            lambda: self.yaml_file("lr-twice.yaml", "base: fashion-tiny\ntrain:\n  lr: 1.0e-3\n  lr: 0.1\n",
                                   "a config file giving `lr` twice"),
            lambda: self.yaml_file("train-twice.yaml", "base: fashion-tiny\ntrain: {steps: 4}\ntrain: {lr: 0.1}\n",
                                   "a config file with two `train:` sections"),
            lambda: self.yaml_file("underscore.yaml", "base: fashion-tiny\ntrain: {steps: 1_000}\n",
                                   "`steps: 1_000` (YAML 1.1 read 1000; YAML 1.2, a string)"),
            self.manifest_deleted, self.finished_resume,
            self.overwrite_mount_point, self.killed_export,
            self.own_rgb_data, self.init_missing, self.resume_without_checkpoint, self.section_as_value,
            self.label_names, self.report_non_run, self.progress_in_log, self.argmax_label, self.file_modes,
        ]
        cases = []
        for step in steps:
            found = step()
            for case in found if isinstance(found, list) else [found]:
                case.saw = [line.replace(str(self.work) + "/", "") for line in case.saw]
                log(f"[{case.outcome}] {case.case}: {'; '.join(case.saw) or case.skipped}")
                cases.append(case)
        return cases


# --------------------------------------------------------------------------- helpers
def _killed_before_its_first_checkpoint(run: Path) -> None:
    """A 500-step run (one checkpoint, at the end) killed with SIGKILL once it logged a step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lipkit", *train_args(run, "train.steps=500")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and metrics.stat().st_size:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()


def _result_line(stdout: str) -> list[str]:
    """The command's result line, without its timing (this page reports what happened, not speed)."""
    lines = [line for line in stdout.splitlines() if line.startswith(("trained ", "nothing to train"))][:1]
    return [re.sub(r" in [0-9.]+s;", ";", line) for line in lines]


def _pickle_weights(safetensors_file: Path, pickle_file: Path, marker: Path) -> None:
    """The weights as a torch pickle that also runs `touch MARKER` when unpickled (weights_only
    refuses it; anything that loads it fully runs the command)."""
    import torch
    from safetensors.torch import load_file

    state = dict(load_file(str(safetensors_file)))
    state["payload"] = _Payload(str(marker))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    pickle_file.write_bytes(buffer.getvalue())
    safetensors_file.unlink()


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _colour_pairs(folder: Path, labels: bool = False) -> None:
    """pairs.csv and 8 small colour PNGs beside it; with `labels`, a label column of class names."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,caption" + (",label" if labels else "")]
    for i in range(8):
        Image.new("RGB", (12, 10), (30 * i, 200, 90)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,a green square number {i}" + (",green" if labels else ""))
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")


def run_cases(work: Path, log=print) -> list[Case]:
    work.mkdir(parents=True, exist_ok=True)
    return Cases(work).all(log)
