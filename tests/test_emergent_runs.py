"""`lipkit eval RUN --tasks emergent` end to end on tiny tuxpaint-vit runs: records, pictures, the
one-line skip of a tower without attention, and the report's section rendered in Chromium."""
import json
import re
import shutil
import subprocess
import tempfile

import pytest

from lipkit.cli import main
from lipkit.config import load_config
from lipkit.train import train

pytestmark = pytest.mark.slow

TINY = ["data.sources=[{path: tuxpaint, split: train}]", "data.num_workers=0", "model.vision.width=32",
        "model.vision.layers=2", "model.vision.heads=2", "model.text.width=32", "model.text.layers=1",
        "model.text.heads=2", "model.embed_dim=32", "model.prototypes.hidden_dim=64",
        "model.prototypes.bottleneck_dim=32", "model.prototypes.num_prototypes=8", "train.steps=2",
        "train.batch_size=16", "train.warmup_steps=1", "train.progress=false"]
EVAL = ["eval.test_limit=12", "eval.emergent.composites_per_image=1", "eval.emergent.overlays=3",
        "eval.emergent.backgrounds=[fashion-mnist,noise]", "eval.emergent.neighbour_queries=2",
        "eval.emergent.gallery_top_k=4", "eval.num_workers=0"]
IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def _evaluate(run_dir, *extra):
    args = ["eval", str(run_dir), "--tasks", "emergent", "--out", str(run_dir / "results.json"), "--quiet"]
    for override in EVAL + list(extra):
        args += ["--set", override]
    return main(args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("emergent")
    out = {}
    for objective in ("clip", "xclip"):
        train(load_config("tuxpaint-vit", TINY + [f"objective.name={objective}"]), root / objective)
        assert _evaluate(root / objective) == 0
        out[objective] = root / objective
    return out


def _records(run_dir):
    return {r["task"]: r for r in json.loads((run_dir / "results.json").read_text())}


def test_records_pictures_and_baselines(runs):
    clip, xclip = _records(runs["clip"]), _records(runs["xclip"])
    assert set(clip) == {"attention_localization", "nearest_neighbours"}  # no prototype heads
    assert set(xclip) == {"attention_localization", "prototype_gallery", "nearest_neighbours"}
    m = xclip["attention_localization"]["metrics"]
    assert xclip["attention_localization"]["dataset"] == "tuxpaint-composites" and m["images"] == 12
    assert {"jaccard_head0", "jaccard_head1", "jaccard_mean_map", "jaccard_best_head",
            "jaccard_gaussian_prior", "jaccard_uniform"} <= set(m)
    assert m["jaccard_best_head"] == max(m["jaccard_head0"], m["jaccard_head1"])
    assert m["jaccard_uniform"] == pytest.approx(m["mask_area"])
    # the same composites for every run: the baselines agree to the last digit
    assert clip["attention_localization"]["metrics"]["jaccard_gaussian_prior"] == m["jaccard_gaussian_prior"]
    details = json.loads((runs["xclip"] / "results.details.json").read_text())
    files = runs["xclip"] / "results.files"
    overlays = details["tuxpaint-composites/attention_localization"]["overlays"]
    assert len(overlays) == 3 and all((files / o["file"]).read_bytes()[:4] == b"\x89PNG" for o in overlays)
    prototypes = details["tuxpaint/prototype_gallery"]["prototypes"]
    assert prototypes and all((files / p["sheet"]).is_file() for p in prototypes if "sheet" in p)
    g = xclip["prototype_gallery"]["metrics"]
    assert 0 < g["image_purity"] <= 1 and g["images"] == 12
    queries = details["tuxpaint/nearest_neighbours"]["queries"]
    assert len(queries) == 2 and all(len(q["by_image"]) == 4 and q["index"] not in q["by_image"] for q in queries)


def test_a_tower_without_attention_is_skipped_in_one_line(tmp_path, capsys):
    run_dir = tmp_path / "effnet"
    train(load_config("tuxpaint-vit", TINY + ["model.vision.name=efficientnet_lite0", "train.steps=1"]), run_dir)
    capsys.readouterr()
    assert _evaluate(run_dir) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [("emergent on tuxpaint: attention localisation skipped, its image tower "
                    "(EfficientNetLite0) has no attention maps")]
    assert set(_records(run_dir)) == {"nearest_neighbours"}


def test_report_shows_the_section_and_renders_in_chromium(runs, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(runs["clip"]), str(runs["xclip"]), "--out", str(out)]) == 0
    page = out.read_text()
    assert "<h2>Emergent properties</h2>" in page and "centred Gaussian" in page
    alts = [alt for alt, _ in IMG.findall(page)]
    assert sum(a.startswith("attention of clip") for a in alts) == 3
    assert sum(a.startswith("attention of xclip") for a in alts) == 3
    assert any(a.startswith("prototype ") and a.endswith("(xclip)") for a in alts)
    assert sum(a.startswith("neighbours of") for a in alts) == 4
    row = re.search(r"<tr><td>xclip</td>.*?</tr>", page).group(0)
    m = _records(runs["xclip"])["attention_localization"]["metrics"]
    assert f"<td>{m['jaccard_mean_map']:.3f}</td>" in row and f"{m['jaccard_uniform']:.3f}" in row
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed")
    from test_report import CHECK_IMAGES, CHROMIUM_FLAGS

    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_IMAGES + "</body>"))
    n = len(alts)
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                              "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=120, check=False).stdout
    assert f"<title>{n}/{n}</title>" in dom, dom[:300]


def test_out_dir_keeps_the_pictures_for_the_report(runs, tmp_path):
    from lipkit.report import load_source

    args = ["eval", str(runs["xclip"]), "--tasks", "emergent", "--out-dir", str(tmp_path / "records"), "--quiet"]
    for override in EVAL:
        args += ["--set", override]
    assert main(args) == 0
    folder = load_source(tmp_path / "records")
    overlays = folder.details["tuxpaint-composites/attention_localization"]["overlays"]
    assert folder.picture(overlays[0]["file"])[:4] == b"\x89PNG"
    assert (tmp_path / "records" / "files" / overlays[0]["file"]).is_file()
    assert folder.picture("../../etc/passwd") is None
