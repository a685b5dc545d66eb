"""The experiment's recipe axis (lipkit.experiment.recipes): every setting, selection and claim
gets a twin per further recipe, and `recipe_batch_sizes` trains a recipe's twins at fewer batch
sizes, with the claims judged only where both sides trained."""
import pytest

from lipkit.config import ConfigError
from lipkit.experiment.claims import judge
from lipkit.experiment.grid import build_cells
from lipkit.experiment.selection import choose
from lipkit.experiment.spec import read_spec
from lipkit.experiment.summary import summarise

SPEC = """
seeds: [0, 1, 2]
batch_sizes: [64, 256]
recipes: [basic, strong]
datasets:
  - {name: d, config: fashion-tiny, samples: 512, recipe_batch_sizes: [{recipe: strong, batch_sizes: [256]}]}
  - {name: basic-only, config: fashion-tiny, samples: 512, recipes: [basic], settings: [clip, xclip]}
settings:
  - {name: clip, set: [objective.name=clip]}
  - {name: clip-t0.1, set: [objective.name=clip, model.learn_logit_scale=false, model.init_logit_scale=10.0]}
  - {name: xclip, set: [objective.name=xclip]}
  - {name: xclip-w, set: [objective.name=xclip, objective.xclip.w_clip=0.3]}
selections:
  - {name: clip-tuned, candidates: [clip, clip-t0.1]}
  - {name: xclip-tuned, candidates: [xclip, xclip-w]}
claims:
  - {id: x, text: xCLIP beats CLIP, a: [xclip-tuned], b: [clip-tuned], metrics: [zeroshot]}
  - {id: gap, text: gap grows, kind: gap_grows_as_batch_shrinks, a: [xclip-tuned], b: [clip-tuned],
     metrics: [zeroshot]}
  - {id: strong-helps, text: the strong recipe improves CLIP, a: [clip@strong], b: [clip], metrics: [zeroshot],
     datasets: [d]}
"""


def _spec(tmp_path, text=SPEC):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    return read_spec(path)


def test_twins_train_only_at_their_recipes_batch_sizes(tmp_path):
    spec = _spec(tmp_path)
    cells = {(c.dataset.name, c.setting.name, c.batch_size) for c in build_cells(spec) if c.seed == 0}
    assert {(s, b) for d, s, b in cells if d == "d"} == (
        {(s, b) for s in ("clip", "clip-t0.1", "xclip", "xclip-w") for b in (64, 256)}
        | {(f"{s}@strong", 256) for s in ("clip", "clip-t0.1", "xclip", "xclip-w")})
    assert {(s, b) for d, s, b in cells if d == "basic-only"} == {(s, b) for s in ("clip", "xclip") for b in (64, 256)}
    strong = next(c for c in build_cells(spec) if c.setting.name == "clip@strong")
    assert strong.config().data.image_views == 2  # the strong layer is under the twin's settings


def test_claims_get_twins_where_both_sides_trained_under_the_recipe(tmp_path):
    spec = _spec(tmp_path)
    claims = {c.id: c for c in spec.claims}
    # a gap claim needs two batch sizes: the strong recipe has one here, so it gets no twin
    assert set(claims) == {"x", "x@strong", "gap", "strong-helps"}
    assert claims["x@strong"].a == ["xclip-tuned@strong"] and claims["x@strong"].datasets == ["d"]

    values = {("clip", 64): 0.5, ("clip", 256): 0.5, ("clip-t0.1", 64): 0.4, ("clip-t0.1", 256): 0.4,
              ("xclip", 64): 0.7, ("xclip", 256): 0.7, ("xclip-w", 64): 0.6, ("xclip-w", 256): 0.6,
              ("clip@strong", 256): 0.8, ("clip-t0.1@strong", 256): 0.1,
              ("xclip@strong", 256): 0.2, ("xclip-w@strong", 256): 0.3}
    records = [{"dataset": "d", "setting": s, "batch_size": b, "seed": i, "train_seconds": 1.0,
                "metrics": {"zeroshot": v + 0.001 * i}, "validation": {"zeroshot": v, "linear": v}}
               for (s, b), v in values.items() for i in range(3)]
    groups, choices = choose(spec, records, summarise(records))
    made = {(c.selection, c.batch_size): c.chosen for c in choices if c.dataset == "d"}
    assert made == {("clip-tuned", 64): "clip", ("clip-tuned", 256): "clip", ("xclip-tuned", 64): "xclip",
                    ("xclip-tuned", 256): "xclip", ("clip-tuned@strong", 256): "clip@strong",
                    ("xclip-tuned@strong", 256): "xclip-w@strong"}
    strong = judge(claims["x@strong"], spec, groups)
    assert [(c.batch, c.outcome) for c in strong.conditions] == [("256", "loss")]  # 0.3 < 0.8; no batch 64
    assert strong.verdict == "not supported"
    helps = judge(claims["strong-helps"], spec, groups)
    assert [(c.batch, c.outcome) for c in helps.conditions] == [("256", "win")]  # judged where both trained
    basic = judge(claims["x"], spec, groups)  # on d both batch sizes; basic-only has no records here
    assert [(c.dataset, c.batch, c.outcome) for c in basic.conditions] == [
        ("d", "64", "win"), ("d", "256", "win"), ("basic-only", "64", "missing"), ("basic-only", "256", "missing")]


@pytest.mark.parametrize("entry, message", [
    ("{recipe: basic, batch_sizes: [256]}", r"recipe_batch_sizes: 'basic' is not a further recipe"),
    ("{recipe: stronger, batch_sizes: [256]}", r"recipe_batch_sizes: 'stronger' is not a further recipe"),
    ("{recipe: strong, batch_sizes: []}", r"recipe_batch_sizes.strong: list positive batch sizes"),
])
def test_recipe_batch_sizes_errors_name_the_key(tmp_path, entry, message):
    text = SPEC.replace("recipe_batch_sizes: [{recipe: strong, batch_sizes: [256]}]", f"recipe_batch_sizes: [{entry}]")
    with pytest.raises(ConfigError, match=message):
        _spec(tmp_path, text)
