"""`lipkit report`: the page is self-contained, shows the right numbers, and renders in Chromium."""
import base64
import io
import json
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image

from _eval_runs import HAVE_EVAL_EXTRA, evaluated_runs
from lipkit.cli import main
from lipkit.report import ReportError, build_report, load_source, load_sources
from lipkit.report.collect import read_log

pytestmark = pytest.mark.slow

IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    runs = evaluated_runs()
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(runs["clip"]), str(runs["xclip"]), "--out", str(out)]) == 0
    return out, runs


def test_page_is_self_contained_with_every_figure(report):
    out, _ = report
    page = out.read_text()
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    assert "<script" not in page
    figures = IMG.findall(page)
    alts = [alt for alt, _ in figures]
    expected = ["training curves", "classification accuracy", "recall curves", "prototype usage"]
    if HAVE_EVAL_EXTRA:
        expected += ["accuracy under corruption", "clean vs shifted", "word similarity"]
    assert sorted(alts) == sorted(expected)
    for alt, data in figures:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n", alt
        with Image.open(io.BytesIO(png)) as im:
            assert im.width > 300 and im.height > 150, alt
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_glance_table_shows_each_runs_numbers_and_marks_the_best(report):
    out, runs = report
    page = out.read_text()
    row = re.search(r"<tr><th scope=\"row\">Zero-shot top-1.*?</tr>", page).group(0)
    values = []
    for name in ("clip", "xclip"):
        records = json.loads((runs[name] / "results.json").read_text())
        acc = next(r["metrics"]["acc1"] for r in records if r["task"] == "zeroshot_classification")
        values.append(acc)
        assert f"<b>{acc:.3f}</b>" in row
    cells = re.findall(r'<span class="(bar(?: best)?)"><b>([0-9.]+)</b>', row)
    assert [float(v) for _, v in cells] == pytest.approx(values, abs=5e-4)
    best = [float(v) for cls, v in cells if cls == "bar best"]
    assert best == pytest.approx([max(values)], abs=5e-4) or values[0] == values[1]
    # collapse rows exist for xclip only: clip shows a dash
    collapse_row = re.search(r"Prototype mutual information.*?</tr>", page).group(0)
    assert collapse_row.count('class="na"') == 1


def test_report_from_results_files_and_folders(report, tmp_path):
    _, runs = report
    run = load_source(runs["xclip"] / "results.json")
    assert run.label == "xclip" and run.details and not run.log
    folder = load_source(runs["xclip"].parent / "xclip-records")
    assert len(folder.records) == len(run.records) and folder.details == run.details
    page = build_report([runs["xclip"] / "results.json"], tmp_path / "r.html").read_text()
    assert "training curves" not in page and "recall curves" in page  # no metrics.jsonl there
    both = load_sources([runs["xclip"], runs["xclip"] / "results.json"])
    assert [r.label for r in both] == ["xclip", "xclip (2)"]


def test_report_errors(tmp_path, capsys):
    with pytest.raises(ReportError, match="no such run directory"):
        load_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="nothing to report"):
        load_source(tmp_path / "empty")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"dataset": "x"}]')
    with pytest.raises(ReportError, match="not CLIP_benchmark records"):
        load_source(bad)
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2
    assert "lipkit: error:" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_log_with_a_half_written_last_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert read_log(log) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    log.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ReportError, match="metrics.jsonl:2"):
        read_log(log)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]
# Appended to a copy of the page: after load, the title becomes "<decoded images>/<images>".
CHECK_IMAGES = ("<script>window.addEventListener('load', () => { const im = [...document.images];"
                "document.title = im.filter(i => i.complete && i.naturalWidth > 0).length + '/' + im.length;"
                "});</script>")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium is not installed")
def test_page_renders_in_headless_chromium(report, tmp_path):
    out, _ = report
    page = out.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_IMAGES + "</body>"))
    n = len(IMG.findall(page))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
             "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120).stdout
    assert f"<title>{n}/{n}</title>" in dom, dom[:300]
    with tempfile.TemporaryDirectory() as profile:
        shot = tmp_path / "shot.png"
        subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--hide-scrollbars",
                        "--window-size=1280,2000", f"--screenshot={shot}", out.as_uri()],
                       capture_output=True, timeout=120)
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        assert len(np.unique(np.asarray(im.convert("L").resize((64, 64))))) > 20  # not blank
