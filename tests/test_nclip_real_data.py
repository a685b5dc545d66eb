"""nCLIP alone, from scratch, on real images (Fashion-MNIST), at the scale where its towers used to
collapse: with the default (information maximisation plus the prototype heads' global-batch
BatchNorm) the prototypes of held-back test images carry information; without the BatchNorm the
same objective collapses to an input-independent output within the first steps. The collapse
guard names the second and stays quiet on the first; `train.stop_on_collapse` stops it."""
from __future__ import annotations

import json

import pytest

from lipkit.config import load_config
from lipkit.eval.runner import evaluate_run
from lipkit.train import train
from lipkit.train.collapse_guard import CollapseError

pytestmark = pytest.mark.slow

SHORT = ["objective.name=nclip", "train.steps=60", "train.batch_size=128", "train.warmup_steps=10",
         "train.log_every_steps=5", "train.progress=false", "data.train_limit=5120",
         "model.vision.width=64", "model.vision.layers=2", "model.text.width=64", "model.text.layers=2",
         "model.prototypes.hidden_dim=512", "model.prototypes.num_prototypes=128"]
HELD_BACK = 1000  # Fashion-MNIST test images, captioned with the evaluation templates


def _collapse_metrics(run_dir):
    (record,) = [r for r in evaluate_run(run_dir, ["collapse"]) if r["task"] == "prototype_collapse"]
    return record["metrics"]


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nclip-real")
    out = {}
    for name, extra in (("default", []), ("no-batchnorm", ["model.prototypes.batch_norm=false"])):
        cfg = load_config("fashion-tiny", SHORT + extra + [f"eval.test_limit={HELD_BACK}"])
        out[name] = train(cfg, root / name).run_dir
    return out


def test_default_keeps_information_where_the_plain_form_collapses(runs):
    good, bad = _collapse_metrics(runs["default"]), _collapse_metrics(runs["no-batchnorm"])
    assert good["image_mutual_information_ratio"] > 0.3 and good["text_mutual_information_ratio"] > 0.2
    assert good["image_label_nmi"] > 0.3 and good["image_distinct_prototypes"] >= 4
    assert bad["image_mutual_information_ratio"] < 0.02 and bad["image_distinct_prototypes"] == 1


def test_guard_names_the_collapse_once_and_stays_quiet_on_the_default(runs, capsys):
    assert not any("collapse" in r for r in _log(runs["default"]))
    flagged = [r for r in _log(runs["no-batchnorm"]) if "collapse" in r]
    assert len(flagged) == 1
    message = flagged[0]["collapse"]
    assert "input-independent output" in message and "image prototypes" in message
    assert "model.prototypes.batch_norm=true" in message
    # after the warm-up (10 steps), three logged steps (every 5) below the threshold: steps 15, 20, 25
    assert flagged[0]["step"] == 25


def test_stop_on_collapse_stops_with_the_numbers(tmp_path):
    cfg = load_config("fashion-tiny", SHORT + ["model.prototypes.batch_norm=false", "train.stop_on_collapse=true"])
    with pytest.raises(CollapseError, match=r"at step 25: the image prototypes.*stop_on_collapse=true"):
        train(cfg, tmp_path / "stopped")
    assert _log(tmp_path / "stopped")[-1]["step"] == 25  # the step that completed it is logged
