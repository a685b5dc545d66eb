"""`lipkit experiment`: claim verdicts against hand-computed statistics, metric extraction, spec
errors, and a tiny grid end to end (resume, retrain on change, eval-only, pruning, the page)."""
import json
import math
from pathlib import Path

import pytest
import yaml

from lipkit.cli import main
from lipkit.config import ConfigError
from lipkit.experiment import load_spec
from lipkit.experiment.claims import judge
from lipkit.experiment.grid import build_cells
from lipkit.experiment.metrics import extract
from lipkit.experiment.spec import ClaimSpec, DatasetSpec, ExperimentSpec, SettingSpec
from lipkit.experiment.summary import Stat, summarise


def test_stat_is_mean_and_sample_std():
    s = Stat.of([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert s.se == pytest.approx(s.std / math.sqrt(3))
    assert Stat.of([0.5]).std == 0.0


def _spec(batches=(64, 256)):
    return ExperimentSpec(seeds=[0, 1, 2], batch_sizes=list(batches),
                          datasets=[DatasetSpec("d", "fashion-tiny", 100)],
                          settings=[SettingSpec("a"), SettingSpec("b")])


def _records(values):
    """values: {(setting, batch): [per-seed zeroshot]} -> cell records."""
    return [{"dataset": "d", "setting": s, "batch_size": b, "seed": i, "train_seconds": 1.0,
             "metrics": {"zeroshot": v}}
            for (s, b), vs in values.items() for i, v in enumerate(vs)]


def test_greater_claim_counts_wins_ties_and_losses_by_two_standard_errors():
    spec = _spec()
    claim = ClaimSpec("c", "a beats b", "greater", ["a"], ["b"], ["zeroshot"])
    # batch 64: a - b = 0.1, se = sqrt(2 * (0.01^2 / 3)) = 0.0082 -> win; batch 256: identical -> tie
    groups = summarise(_records({("a", 64): [0.59, 0.60, 0.61], ("b", 64): [0.49, 0.50, 0.51],
                                 ("a", 256): [0.5, 0.6, 0.7], ("b", 256): [0.5, 0.6, 0.7]}))
    v = judge(claim, spec, groups)
    outcomes = {c.batch: (c.outcome, c.diff, c.se) for c in v.conditions}
    assert outcomes["64"][0] == "win"
    assert outcomes["64"][1] == pytest.approx(0.1)
    assert outcomes["64"][2] == pytest.approx(math.sqrt(2 * 0.01 ** 2 / 3))
    assert outcomes["256"][0] == "tie"
    assert v.verdict == "inconclusive"  # one win of two conditions is not a majority

    groups = summarise(_records({("a", 64): [0.59, 0.60, 0.61], ("b", 64): [0.49, 0.50, 0.51],
                                 ("a", 256): [0.69, 0.70, 0.71], ("b", 256): [0.49, 0.50, 0.51]}))
    assert judge(claim, spec, groups).verdict == "supported"

    groups = summarise(_records({("a", 64): [0.49, 0.50, 0.51], ("b", 64): [0.59, 0.60, 0.61],
                                 ("a", 256): [0.69, 0.70, 0.71], ("b", 256): [0.49, 0.50, 0.51]}))
    assert judge(claim, spec, groups).verdict == "not supported"  # one loss, one win


def test_not_less_tolerates_ties_but_not_losses():
    spec = _spec()
    claim = ClaimSpec("c", "a is as good", "not_less", ["a"], ["b"], ["zeroshot"])
    same = {("a", 64): [0.5, 0.6, 0.7], ("b", 64): [0.5, 0.6, 0.7],
            ("a", 256): [0.5, 0.6, 0.7], ("b", 256): [0.5, 0.6, 0.7]}
    assert judge(claim, spec, summarise(_records(same))).verdict == "supported"
    worse = dict(same)
    worse[("a", 64)] = [0.1, 0.11, 0.12]
    worse[("a", 256)] = [0.1, 0.11, 0.12]
    assert judge(claim, spec, summarise(_records(worse))).verdict == "not supported"


def test_gap_claim_compares_small_and_large_batch_differences():
    spec = _spec()
    claim = ClaimSpec("g", "gap", "gap_grows_as_batch_shrinks", ["a"], ["b"], ["zeroshot"])
    groups = summarise(_records({("a", 64): [0.69, 0.70, 0.71], ("b", 64): [0.49, 0.50, 0.51],
                                 ("a", 256): [0.51, 0.52, 0.53], ("b", 256): [0.49, 0.50, 0.51]}))
    v = judge(claim, spec, groups)
    (c,) = v.conditions
    assert c.batch == "64 vs 256"
    assert c.diff == pytest.approx(0.2 - 0.02)
    assert c.se == pytest.approx(math.sqrt(4 * 0.01 ** 2 / 3))
    assert v.verdict == "supported"


def test_a_selection_is_chosen_on_the_validation_split_never_the_test_split():
    from lipkit.experiment.selection import choose
    from lipkit.experiment.spec import SelectionSpec

    spec = _spec(batches=(64,))
    spec.settings.append(SettingSpec("c"))
    spec.selections = [SelectionSpec("tuned", "tuned", ["a", "b"])]
    spec.validation_metrics = ["zeroshot", "linear"]
    records = _records({("a", 64): [0.9, 0.9, 0.9], ("b", 64): [0.5, 0.5, 0.5], ("c", 64): [0.7, 0.7, 0.7]})
    for r in records:  # on validation b is better (mean of zero-shot and linear): b is chosen
        r["validation"] = ({"zeroshot": 0.2, "linear": 0.6} if r["setting"] == "a" else
                           {"zeroshot": 0.5, "linear": 0.5} if r["setting"] == "b" else {})
    groups, (choice,) = choose(spec, records, summarise(records))
    assert choice.chosen == "b" and choice.scores["a"].mean == pytest.approx(0.4)
    tuned = groups[("d", "tuned", 64)]
    assert tuned.chosen == "b" and tuned.metrics["zeroshot"].mean == pytest.approx(0.5)
    claim = ClaimSpec("c", "c beats the tuned one", "greater", ["c"], ["tuned"], ["zeroshot"])
    assert judge(claim, spec, groups).conditions[0].diff == pytest.approx(0.2)


def test_one_seed_is_no_evidence_and_missing_conditions_count():
    spec = _spec()
    claim = ClaimSpec("c", "a beats b", "greater", ["a"], ["b"], ["zeroshot"])
    # one seed a side: the spread is unknown, so even 0.9 against 0.1 is a tie, never a win
    v = judge(claim, spec, summarise(_records({("a", 64): [0.9], ("b", 64): [0.1],
                                               ("a", 256): [0.9], ("b", 256): [0.1]})))
    assert [c.outcome for c in v.conditions] == ["tie", "tie"] and v.verdict == "inconclusive"
    # batch 256 of b failed: that condition is missing, and one win of two is no majority
    v = judge(claim, spec, summarise(_records({("a", 64): [0.59, 0.60, 0.61], ("b", 64): [0.49, 0.50, 0.51],
                                               ("a", 256): [0.69, 0.70, 0.71]})))
    assert [c.outcome for c in v.conditions] == ["win", "missing"] and v.verdict == "inconclusive"
    nothing = judge(claim, spec, summarise(_records({("a", 64): [0.5, 0.6, 0.7]})))
    assert nothing.verdict == "no data"


def test_a_selection_with_a_candidate_short_of_seeds_chooses_nothing():
    from lipkit.experiment.selection import choose
    from lipkit.experiment.spec import SelectionSpec

    spec = _spec(batches=(64,))
    spec.selections = [SelectionSpec("tuned", "tuned", ["a", "b"])]
    spec.validation_metrics = ["zeroshot"]
    records = _records({("a", 64): [0.5, 0.5, 0.5], ("b", 64): [0.9, 0.9]})  # b diverged on one seed
    for r in records:
        r["validation"] = {"zeroshot": r["metrics"]["zeroshot"]}
    groups, (choice,) = choose(spec, records, summarise(records))
    assert choice.chosen is None and ("d", "tuned", 64) not in groups


def test_extract_reads_each_metric_from_its_record():
    records = [
        {"dataset": "fashion-mnist", "task": "zeroshot_classification", "metrics": {"acc1": 0.7}},
        {"dataset": "fashion-mnist-c", "task": "ood_classification",
         "metrics": {"zeroshot_shifted_acc1": 0.3, "linear_shifted_acc1": 0.4}},
        {"dataset": "tuxpaint-style", "task": "ood_classification", "metrics": {"zeroshot_shifted_acc1": 0.2}},
        {"dataset": "wordsim353", "task": "word_similarity", "metrics": {"wordsim_spearman": 0.1}},
    ]
    assert extract(records) == {"zeroshot": 0.7, "ood_zeroshot": 0.3, "ood_linear": 0.4,
                                "style_zeroshot": 0.2, "wordsim": 0.1}


TINY = ["model.vision.width=32", "model.vision.layers=1", "model.vision.heads=2", "model.text.width=32",
        "model.text.layers=1", "model.text.heads=2", "model.embed_dim=32", "model.prototypes.hidden_dim=64",
        "model.prototypes.bottleneck_dim=16", "model.prototypes.num_prototypes=32", "train.warmup_steps=1",
        "data.train_limit=512", "eval.test_limit=200", "eval.linear_train_limit=300"]


def _write_spec(path: Path, **changes) -> Path:
    spec = {"title": "tiny", "seeds": [0], "batch_sizes": [32], "tasks": ["zeroshot", "linear"],
            "datasets": [{"name": "fm", "config": "fashion-tiny", "samples": 96, "set": TINY}],
            "settings": [{"name": "clip", "set": ["objective.name=clip"]},
                         {"name": "xclip", "set": ["objective.name=xclip"]}],
            "claims": [{"id": "x", "text": "xCLIP beats CLIP", "a": ["xclip"], "b": ["clip"],
                        "metrics": ["zeroshot", "linear"]}]}
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("change, message", [
    ({"claims": [{"id": "x", "a": ["nope"], "b": ["clip"], "metrics": ["zeroshot"]}]}, "unknown setting"),
    ({"claims": [{"id": "x", "a": ["xclip"], "b": ["clip"], "metrics": ["accuracy"]}]}, "unknown metric"),
    ({"settings": [{"name": "clip", "set": ["objective.nam=clip"]}], "claims": []},
     "experiment cell fm/clip/b32/s0: unknown key .objective.nam."),
    ({"settings": [{"name": "clip"}, {"name": "clip"}]}, "'clip' appears twice"),
    ({"batch_sizes": [0]}, "batch_sizes"),
    ({"seed": [1]}, "unknown key 'seed'"),
    ({"selections": [{"name": "t", "candidates": ["clip"]}]}, r"selections.t.candidates: list two or more"),
    ({"selections": [{"name": "t", "candidates": ["clip", "nope"]}]}, r"unknown: \['nope'\]"),
    ({"selections": [{"name": "clip", "candidates": ["clip", "xclip"]}]}, "'clip' appears twice"),
    ({"settings": [{"name": "clip"}, {"name": "xclip"}, {"name": "clip2"}],
      "selections": [{"name": "xt", "candidates": ["xclip", "clip2"]}],
      "claims": [{"id": "x", "a": ["xt"], "b": ["clip"], "metrics": ["zeroshot"]}]},
     r"claims.x: the sides have unequal tries \(xt: 2, clip: 1\)"),
    ({"datasets": [{"name": "fm", "config": "fashion-tiny", "samples": 9, "settings": ["nope"]}]},
     r"datasets.fm.settings: unknown setting"),
])
def test_spec_errors_name_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(_write_spec(tmp_path / "e.yaml", **change))


def test_missing_experiment_file_is_one_line_exit_2(tmp_path, capsys):
    assert main(["experiment", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_grid_runs_resumes_and_writes_the_page(tmp_path, capsys):
    spec_file = _write_spec(tmp_path / "e.yaml")
    out, page = tmp_path / "grid", tmp_path / "docs" / "results.md"
    args = ["experiment", str(spec_file), "--out", str(out), "--page", str(page)]
    assert main(args) == 0
    cells = sorted(out.glob("cells/**/cell.json"))
    assert len(cells) == 2
    first = {c: c.read_text() for c in cells}
    record = json.loads(cells[0].read_text())
    assert record["steps"] == 3 and record["samples"] == 96
    assert {"zeroshot", "linear"} <= set(record["metrics"])
    run_dir = cells[0].parent / "run"
    assert (run_dir / "results.json").is_file() and not (run_dir / "model.safetensors").exists()

    summary = json.loads((out / "summary.json").read_text())
    assert {g["setting"] for g in summary["groups"]} == {"clip", "xclip"}
    assert summary["claims"][0]["id"] == "x"
    text = page.read_text()
    assert text.startswith("# tiny\n\nGenerated by `lipkit experiment ")
    assert "| xCLIP beats CLIP |" in text and (page.parent / "results" / "fm.png").is_file()

    capsys.readouterr()
    assert main(args) == 0  # everything done: nothing reruns
    assert "0 cells run" in capsys.readouterr().out
    assert {c: c.read_text() for c in cells} == first

    # Changing one setting retrains only its cell; --summary-only meanwhile leaves the stale one out.
    _write_spec(spec_file, settings=[{"name": "clip", "set": ["objective.name=clip"]},
                                     {"name": "xclip", "set": ["objective.name=xclip", "train.lr=0.0005"]}])
    capsys.readouterr()
    assert main(args + ["--summary-only"]) == 0
    err = capsys.readouterr().err
    assert "1 cell(s) in" in err and "were run with another config" in err and "fm/xclip/b32/s0" in err
    assert {g["setting"] for g in json.loads((out / "summary.json").read_text())["groups"]} == {"clip"}
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "1 already done, 1 to run" in log and "fm/xclip/b32/s0" in log and "fm/clip/b32" not in log
    clip_cell = out / "cells/fm/clip/b32/s0/cell.json"
    assert clip_cell.read_text() == first[clip_cell]


@pytest.mark.slow
def test_selection_candidates_are_scored_on_the_held_back_training_images(tmp_path, capsys):
    spec_file = _write_spec(tmp_path / "e.yaml", selections=[{"name": "tuned", "candidates": ["clip", "xclip"]}],
                            claims=[], validation_metrics=["zeroshot"])
    out, page = tmp_path / "grid", tmp_path / "results.md"
    assert main(["experiment", str(spec_file), "--out", str(out), "--page", str(page)]) == 0
    record = json.loads((out / "cells/fm/xclip/b32/s0/cell.json").read_text())
    assert set(record["validation"]) == {"zeroshot"} and 0 <= record["validation"]["zeroshot"] <= 1
    (zeroshot,) = json.loads((out / "cells/fm/xclip/b32/s0/run/validation.json").read_text())
    # data.train_limit=512 in TINY: validation reads training images from index 512 on
    assert zeroshot["dataset"] == "fashion-mnist:validation"
    summary = json.loads((out / "summary.json").read_text())
    (choice,) = summary["choices"]
    assert choice["chosen"] in ("clip", "xclip") and set(choice["validation_scores"]) == {"clip", "xclip"}
    assert "## Settings chosen on the validation split" in page.read_text()


@pytest.mark.slow
def test_a_trained_cell_without_its_record_is_only_evaluated(tmp_path, capsys):
    spec_file = _write_spec(tmp_path / "e.yaml", keep="models",
                            settings=[{"name": "clip", "set": ["objective.name=clip"]}], claims=[])
    args = ["experiment", str(spec_file), "--out", str(tmp_path / "grid")]
    assert main(args) == 0
    cell_dir = tmp_path / "grid/cells/fm/clip/b32/s0"
    assert (cell_dir / "run/model.safetensors").is_file()  # keep: models
    before = json.loads((cell_dir / "cell.json").read_text())
    (cell_dir / "cell.json").unlink()
    model_mtime = (cell_dir / "run/model.safetensors").stat().st_mtime_ns
    assert main(args) == 0
    after = json.loads((cell_dir / "cell.json").read_text())
    assert (cell_dir / "run/model.safetensors").stat().st_mtime_ns == model_mtime  # not retrained
    assert after["train_seconds"] == before["train_seconds"]
    assert after["metrics"] == pytest.approx(before["metrics"])


def test_cell_digests_survive_new_config_fields():
    """A field added to the config must not make every recorded grid stale: one whose default keeps
    the old behaviour is `neutral_default`, and digests leave it out while it holds that default.
    These digests were recorded on 2026-12-06 (the paper-claims grid); a change here retrains
    every cell of every grid."""
    cells = {c.key: c for c in build_cells(load_spec(Path(__file__).parents[1] / "experiments/paper-claims.yaml"))}
    assert cells["fashion-mnist/clip/b64/s0"].digest == "a9f2d275a9377d2f"
    assert cells["fashion-mnist/xclip@strong/b256/s0"].digest == "20eb8119e4f8262f"
    assert cells["tuxpaint-openclipart/clip/b256/s0"].digest == "bf9271f75515befb"


def test_digest_dict_leaves_out_only_neutral_fields_at_their_default():
    from dataclasses import dataclass, field

    from lipkit.typed_config import digest_dict, to_dict

    @dataclass
    class Inner:
        k: int = 1

    @dataclass
    class Cfg:
        a: int = 0
        new: Inner = field(default_factory=Inner, metadata={"neutral_default": True})
        flag: bool = field(default=False, metadata={"neutral_default": True})

    assert digest_dict(Cfg()) == {"a": 0}
    assert to_dict(Cfg()) == {"a": 0, "new": {"k": 1}, "flag": False}
    assert digest_dict(Cfg(a=2, new=Inner(3), flag=True)) == {"a": 2, "new": {"k": 3}, "flag": True}


class _Killed(BaseException):
    pass


@pytest.mark.slow
def test_a_killed_invocation_still_counts_its_wall_time(tmp_path):
    from lipkit.experiment.page import _wall_time
    from lipkit.experiment.runner import grid_wall_seconds, run_grid

    spec = load_spec(_write_spec(tmp_path / "e.yaml", claims=[]))
    out = tmp_path / "grid"

    def killed_after_the_first_cell(line: str) -> None:
        if line.startswith("[1/"):
            raise _Killed  # as SIGKILL would, after the first cell's record is written

    with pytest.raises(_Killed):
        run_grid(spec, out, log=killed_after_the_first_cell)
    cells = build_cells(spec)
    first, invocations = grid_wall_seconds(out, cells)
    record = json.loads((out / "cells/fm/clip/b32/s0/cell.json").read_text())
    assert invocations == 1 and first >= record["wall_seconds"] > 0
    assert not (out / "cells/fm/xclip/b32/s0/cell.json").exists()

    result = run_grid(spec, out, log=lambda line: None)
    total, invocations = grid_wall_seconds(out, cells)
    assert result.ran == 1 and invocations == 2
    assert total == pytest.approx(first + result.seconds, rel=1e-9)

    # a changed spec is another grid: its cells train again, and the old grid's time does not count
    changed = load_spec(_write_spec(tmp_path / "e.yaml", claims=[], seeds=[1]))
    assert grid_wall_seconds(out, build_cells(changed)) == (0.0, 0)
    assert grid_wall_seconds(out, cells) == (total, 2)

    assert _wall_time((600.0, 1), 540.0) == ("Wall time of the grid: 10.0 min; inside the cells "
                                            "(loading, training, evaluation): 9.0 min.")
    assert "summed over the 3 invocations" in _wall_time((600.0, 3), 540.0)
    assert "left no record of its own" in _wall_time((60.0, 2), 540.0)
