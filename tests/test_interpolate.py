"""`lipkit interpolate` (WiSE-FT): the mix (1 − α)·A + α·B of two runs, its ends exact, its middle the
mix computed another way, its non-float buffers by the stated rule, mismatched runs refused in one
line, and the α sweep's curve (zero-shot in distribution and under shift) in the report."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import lipkit
from _tiny_runs import one_line_error, train_tiny
from lipkit.cli import main
from lipkit.config import load_config, save_config
from lipkit.data import load_fashion_mnist
from lipkit.data.fashion_mnist import PROMPTS_FILE
from lipkit.models import LIPModel
from lipkit.report import ReportError, load_source
from lipkit.runs.checksums import damage
from lipkit.runs.directory import CONFIG_FILE, MODEL_FILE, list_checkpoints, save_model, write_tensors
from lipkit.runs.interpolate import mix_states, pair_runs

pytestmark = pytest.mark.slow
FINE_TUNE = ["train.steps=2", "train.batch_size=32", "train.warmup_steps=1", "train.progress=false",
             "data.train_limit=128", "model.prototypes.num_prototypes=32"]
EVAL = ["--set", "eval.test_limit=100", "--set", "eval.num_workers=0"]


def _fine_tune(init: Path, out: Path, *sets: str) -> None:
    assert main(["train", "--init", str(init), *(f"--set={s}" for s in FINE_TUNE + list(sets)),
                 "--out", str(out)]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """a: a CLIP run; b: a fine-tuned from a with xCLIP (adds the prototype heads); lora: a
    fine-tuned with LoRA; shift: Fashion-MNIST test images in negative, as class folders."""
    root = tmp_path_factory.mktemp("interpolate")
    out = {"a": root / "a", "b": root / "b", "lora": root / "lora", "shift": root / "shift"}
    assert train_tiny(out["a"], "train.steps=3") == 0
    _fine_tune(out["a"], out["b"], "objective.name=xclip")
    _fine_tune(out["a"], out["lora"], "model.lora.enabled=true")
    images, labels = load_fashion_mnist("test")
    names = json.loads(PROMPTS_FILE.read_text())["class_names"]
    for i in range(60):
        folder = out["shift"] / names[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - images[i]).save(folder / f"{i:03d}.png")
    return out


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / MODEL_FILE))


def _embed(run: Path, **load) -> tuple[torch.Tensor, torch.Tensor]:
    model, _, tokenizer = lipkit.load(run, **load)
    torch.manual_seed(0)
    with torch.no_grad():
        return (model.encode_image(torch.randn(5, 1, 28, 28), normalize=True),
                model.encode_text(tokenizer(["a photo of a bag", "a pair of trousers"]), normalize=True))


# --------------------------------------------------------------------------- the mix, by hand
def test_mix_by_hand_exact_ends_and_non_float_rule():
    a = {"w": torch.tensor([1.0, -0.0, 3.0]), "count": torch.tensor(3), "same": torch.tensor([4, 5]),
         "mask": torch.tensor([True, False])}
    b = {"w": torch.tensor([5.0, float("inf"), -1.0]), "count": torch.tensor(7), "same": torch.tensor([4, 5]),
         "mask": torch.tensor([False, False])}
    mid = mix_states(a, b, 0.25)
    assert mid["w"].tolist() == [2.0, float("inf"), 2.0]  # 0.75·1 + 0.25·5, ..., 0.75·3 − 0.25
    assert mid["count"].item() == 3 and mid["mask"].tolist() == [True, False]  # α < 0.5: A's
    late = mix_states(a, b, 0.75)
    assert late["count"].item() == 7 and late["mask"].tolist() == [False, False]  # from 0.5 on: B's
    assert late["same"].tolist() == [4, 5] and late["count"].dtype == torch.int64
    for alpha, end in ((0.0, a), (1.0, b)):
        got = mix_states(a, b, alpha)
        assert all(_bits(got[k]) == _bits(end[k]) for k in a), alpha
    # the formula itself would not give the ends: −0.0 becomes +0.0 and 0·inf NaN
    naive = (1 - 0.0) * a["w"] + 0.0 * b["w"]
    assert _bits(naive) != _bits(a["w"])


def test_mix_is_rounded_once_from_float64():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    expected = (0.7 * a.numpy().astype(np.float64) + 0.3 * b.numpy().astype(np.float64)).astype(np.float32)
    assert mix_states({"w": a}, {"w": b}, 0.3)["w"].numpy().tobytes() == expected.tobytes()
    bf = {"w": a.bfloat16()}, {"w": b.bfloat16()}
    got = mix_states(*bf, 0.3)["w"]
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, (0.7 * bf[0]["w"].double() + 0.3 * bf[1]["w"].double()).bfloat16())


# --------------------------------------------------------------------------- whole runs
def test_ends_reproduce_the_runs_bitwise_and_load(runs, tmp_path, capsys):
    a, b = runs["a"], runs["b"]
    assert main(["interpolate", str(a), str(b), str(tmp_path / "at0"), "--alpha", "0"]) == 0
    assert main(["interpolate", str(a), str(b), "--alpha", "1", str(tmp_path / "at1")]) == 0
    out = capsys.readouterr().out
    assert "left out: the prototypes head(s) only run B has" in out
    at0, at1, wa, wb = _weights(tmp_path / "at0"), _weights(tmp_path / "at1"), _weights(a), _weights(b)
    assert set(at0) == set(wa) and all(_bits(at0[k]) == _bits(wa[k]) for k in wa)
    assert set(at1) == {k for k in wb if "prototypes" not in k}
    assert all(_bits(at1[k]) == _bits(wb[k]) for k in at1)
    for end, run in ((tmp_path / "at0", a), (tmp_path / "at1", b)):
        for mine, theirs in zip(_embed(end), _embed(run)):
            assert torch.equal(mine, theirs)
        assert damage(end) is None  # manifest.json matches every file
    record = json.loads((tmp_path / "at1" / "interpolation.json").read_text())
    assert record["alpha"] == 1.0 and record["b"]["path"] == str(b.resolve())
    # lipkit eval reads the mix as any run
    assert main(["eval", str(tmp_path / "at0"), "--tasks", "zeroshot", "--quiet", *EVAL]) == 0


def test_mid_alpha_is_the_mix_computed_another_way(runs, tmp_path):
    a, b = runs["a"], runs["b"]
    assert main(["interpolate", str(a), str(b), str(tmp_path / "mid"), "--alpha", "0.3"]) == 0
    mid, wa, wb = _weights(tmp_path / "mid"), _weights(a), _weights(b)
    changed = [k for k in mid if not torch.equal(wa[k], wb[k])]
    assert len(changed) > 10  # fine-tuning moved the weights
    for key in changed:
        expected = 0.7 * wa[key].numpy().astype(np.float64) + 0.3 * wb[key].numpy().astype(np.float64)
        assert mid[key].numpy().tobytes() == expected.astype(np.float32).tobytes(), key
    # a hand-made pair: one tensor 1.0 in A and 5.0 in B gives 2.0 at α = 0.25
    a2, b2 = tmp_path / "a2", tmp_path / "b2"
    shutil.copytree(a, a2)
    shutil.copytree(b, b2)
    key = "text.token_embedding.weight" if "text.token_embedding.weight" in wa else changed[0]
    write_tensors({**wa, key: torch.ones_like(wa[key])}, a2 / MODEL_FILE)
    write_tensors({**wb, key: torch.full_like(wb[key], 5.0)}, b2 / MODEL_FILE)
    assert main(["interpolate", str(a2), str(b2), str(tmp_path / "quarter"), "--alpha", "0.25"]) == 0
    assert torch.equal(_weights(tmp_path / "quarter")[key], torch.full_like(wa[key], 2.0))


def test_non_float_buffers_come_from_the_nearer_run(runs, tmp_path, capsys):
    b, c = runs["b"], tmp_path / "c"  # c: b with its BatchNorm statistics moved on
    shutil.copytree(b, c)
    wb = _weights(b)
    counts = [k for k in wb if k.endswith("num_batches_tracked")]
    means = [k for k in wb if k.endswith("running_mean")]
    assert counts and means
    write_tensors({**wb, **{k: wb[k] + 5 for k in counts}, **{k: wb[k] + 1.0 for k in means}}, c / MODEL_FILE)
    for alpha, end in (("0.25", wb), ("0.75", _weights(c))):
        assert main(["interpolate", str(b), str(c), str(tmp_path / alpha), "--alpha", alpha]) == 0
        mixed = _weights(tmp_path / alpha)
        assert all(torch.equal(mixed[k], end[k]) for k in counts)
        assert all(torch.allclose(mixed[k], wb[k] + float(alpha), atol=1e-6) for k in means)
    out = capsys.readouterr().out
    assert "taken from the nearer run (A's): " in out and counts[0] in out
    assert "taken from the nearer run (B's): " in out


def test_a_checkpoint_and_a_lora_run_mix_as_their_merged_model(runs, tmp_path):
    a, b, lora = runs["a"], runs["b"], runs["lora"]
    [checkpoint] = list_checkpoints(b)[-1:]
    assert main(["interpolate", str(a), str(checkpoint), str(tmp_path / "ckpt"), "--alpha", "1"]) == 0
    for mine, theirs in zip(_embed(tmp_path / "ckpt"), _embed(b)):
        assert torch.equal(mine, theirs)
    assert main(["interpolate", str(a), str(lora), str(tmp_path / "lora1"), "--alpha", "1"]) == 0
    assert not any("lora" in k for k in _weights(tmp_path / "lora1"))
    merged, plain = _embed(lora, merged=True), _embed(a)
    for mine, theirs, base in zip(_embed(tmp_path / "lora1"), merged, plain):
        assert torch.equal(mine, theirs) and not torch.equal(mine, base)  # the adapters moved it
    damaged = tmp_path / "damaged"
    shutil.copytree(checkpoint, damaged)
    data = bytearray((damaged / MODEL_FILE).read_bytes())
    data[-1] ^= 1
    (damaged / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(lipkit.runs.InterpolateError, match="damaged .model.safetensors does not match"):
        pair_runs(a, damaged)


# --------------------------------------------------------------------------- refused in one line
def _other_architecture(a: Path, out: Path) -> None:
    """`a` with two vision blocks and 24-dimensional embeddings (weights drawn fresh)."""
    shutil.copytree(a, out)
    cfg = load_config(str(a / CONFIG_FILE), ["model.vision.layers=2", "model.embed_dim=24"], recorded=True)
    save_config(cfg, out / CONFIG_FILE)
    save_model(LIPModel(cfg.model), out)


def test_mismatched_runs_and_bad_input_are_one_line(runs, tmp_path, capsys):
    a, b = runs["a"], runs["b"]
    _other_architecture(a, tmp_path / "wide")
    out = tmp_path / "out"
    assert main(["interpolate", str(a), str(tmp_path / "wide"), str(out)]) == 2
    line = one_line_error(capsys)
    assert "are not the same architecture" in line and "A lacks vision.transformer.blocks.1." in line
    assert re.search(r"shape differs for \S*projection.weight \[16, 32\] vs \[24, 32\]", line), line
    other_tok = tmp_path / "other-tokenizer"
    shutil.copytree(b, other_tok)
    tok = json.loads((b / "tokenizer.json").read_text())
    tok["model"]["vocab"] = {(k + "x" if v == 7 else k): v for k, v in tok["model"]["vocab"].items()}
    (other_tok / "tokenizer.json").write_text(json.dumps(tok))
    cases = [
        ([str(a), str(other_tok), str(out)], "have different tokenizers"),
        ([str(a), str(tmp_path / "missing"), str(out)], "run B " + str(tmp_path / "missing") + ": no such run"),
        ([str(a), str(b), str(out), "--alpha", "1.5"], "--alpha: must be between 0 (run A) and 1 (run B), got 1.5"),
        ([str(a), str(b), str(out), "--alphas", "0,x"], "--alphas 0,x: expected numbers"),
        ([str(a), str(b), str(out), "--shift", "fashion-mnist"], "give --alphas too"),
        ([str(a), str(b), str(out), "--alphas", "0,1", "--shift", str(tmp_path / "nowhere"), "--quiet"],
         str(tmp_path / "nowhere")),
    ]
    for args, message in cases:
        assert main(["interpolate", *args]) == 2, args
        assert message in one_line_error(capsys), args
        assert not out.exists()  # nothing written, no staging folder left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["interpolate", str(a), str(b), str(out)]) == 2
    assert "already exists" in one_line_error(capsys) and (out / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- the sweep and the report
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]
CHECK_IMAGES = ("<script>window.addEventListener('load', () => { const im = [...document.images];"
                "document.title = im.filter(i => i.complete && i.naturalWidth > 0).length + '/' + im.length;"
                "});</script>")


def test_sweep_writes_the_curve_that_eval_gives_and_the_report_draws_it(runs, tmp_path, capsys):
    a, b, shift = runs["a"], runs["b"], runs["shift"]
    out = tmp_path / "wise"
    assert main(["interpolate", str(a), str(b), str(out), "--alphas", "1,0,0.5", "--alpha", "0.5",
                 "--shift", str(shift), "--quiet", *EVAL]) == 0
    printed = capsys.readouterr().out
    curve = json.loads((out / "wise_ft.json").read_text())
    assert [p["alpha"] for p in curve["points"]] == [0.0, 0.5, 1.0] and curve["alpha"] == 0.5
    assert curve["in_distribution"] == "fashion-mnist" and curve["shifted"] == "shift"
    # each end is what lipkit eval says of that run, on both datasets
    for point, run in ((curve["points"][0], a), (curve["points"][2], b)):
        results = tmp_path / f"{run.name}.json"
        assert main(["eval", str(run), "--tasks", "zeroshot", "--dataset", "fashion-mnist", "--dataset",
                     str(shift), "--out", str(results), "--quiet", *EVAL]) == 0
        acc = {r["dataset"]: r["metrics"]["acc1"] for r in json.loads(results.read_text())}
        assert (point["in_distribution"], point["shifted"]) == (acc["fashion-mnist"], acc["shift"])
    assert f"{curve['points'][1]['shifted']:.4f}" in printed
    # the middle is the written run itself
    mid = tmp_path / "mid.json"
    assert main(["eval", str(out), "--tasks", "zeroshot", "--out", str(mid), "--quiet", *EVAL]) == 0
    assert json.loads(mid.read_text())[0]["metrics"]["acc1"] == curve["points"][1]["in_distribution"]

    page_file = tmp_path / "report.html"
    assert main(["report", str(out), "--out", str(page_file)]) == 0
    page = page_file.read_text()
    [png] = re.findall(r'<img alt="weight-space interpolation" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    with Image.open(io.BytesIO(base64.b64decode(png))) as im:
        assert im.width > 600 and im.height > 200
    table = re.search(r'<table class="curve">.*?</table>', page).group(0)
    rows = re.findall(r"<tr( class=\"held\")?><td>([0-9.]+)</td><td>([0-9.]+)</td><td>([0-9.]+)</td></tr>", table)
    assert [float(x) for r in rows for x in r[1:]] == pytest.approx(
        [p[k] for p in curve["points"] for k in ("alpha", "in_distribution", "shifted")], abs=5e-4)
    assert [bool(r[0]) for r in rows] == [False, True, False]
    if shutil.which("chromium"):
        probe = tmp_path / "probe.html"
        probe.write_text(page.replace("</body>", CHECK_IMAGES + "</body>"))
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                  "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                                 capture_output=True, text=True, timeout=120).stdout
        assert "<title>1/1</title>" in dom, dom[:300]
    (out / "wise_ft.json").write_text(json.dumps({**curve, "points": [{"alpha": 0}]}))
    with pytest.raises(ReportError, match="wise_ft.json: not a WiSE-FT curve"):
        load_source(out)


def test_the_mix_keeps_bs_config_with_the_common_heads(runs, tmp_path):
    pair = pair_runs(runs["a"], runs["b"])
    assert pair.config.model.heads == ["clip"] and pair.config.objective.name == "xclip"
    expected = dataclasses.replace(pair.b.config.model, heads=["clip"])
    assert pair.config.model == expected
