"""The theory lab: data model, measures on hand-built encoders, training through the shared
objective code, and a short seeded run of every study whose JSON has every field."""
from __future__ import annotations

import json
import math

import pytest
import torch

from lipkit.cli import main as cli_main
from lipkit.config import ConfigError
from lipkit.theory import (
    STUDIES,
    SyntheticDataModel,
    SyntheticEncoders,
    load_theory_config,
    run_config,
    run_studies,
    train_and_measure,
    zero_shot_measures,
)
from lipkit.theory.config import SyntheticDataConfig, SyntheticEncoderConfig
from lipkit.theory.lab import RUN_METRICS
from lipkit.theory.runner import Runner
from lipkit.theory.stats import paired_gain

TINY = [
    "studies.seeds=2", "train.steps=25", "train.batch_size=16", "data.test_size=300", "data.num_classes=4",
    "studies.temperatures=[0.05,0.5]", "studies.reg_lambdas=[0,0.1]", "studies.compare_embed_dims=[2,4]",
    "studies.top_r_embed_dim=2", "studies.batch_sizes=[8,16]", "studies.batch_temperatures=[0.1]",
]


# ----------------------------------------------------------------------------- data model
def test_onehot_data_model_structure():
    cfg = SyntheticDataConfig(latent="onehot", num_classes=5, image_shared_dim=6, text_shared_dim=7,
                              image_unique_dim=3, text_unique_dim=2, noise_std=0.0, unique_std=0.0)
    data = SyntheticDataModel(cfg, seed=0)
    assert (data.image_dim, data.text_dim) == (9, 9)
    x, y, labels = data.sample(50, torch.Generator().manual_seed(1))
    assert x.shape == (50, 9) and y.shape == (50, 9) and labels.shape == (50,)
    # without noise and unique features a pair is exactly [A e_c ; 0], [C e_c ; 0]
    torch.testing.assert_close(x[:, :6], data.A[:, labels].T)
    torch.testing.assert_close(y[:, :7], data.C[:, labels].T)
    assert x[:, 6:].abs().max() == 0 and y[:, 7:].abs().max() == 0
    # the prompt of class k is the noise-free text of k
    torch.testing.assert_close(data.prompts()[labels], y)


def test_data_model_blocks_have_the_configured_norms():
    cfg = SyntheticDataConfig(noise_std=0.5, unique_std=2.0, instance_dim=4, instance_std=0.25)
    data = SyntheticDataModel(cfg, seed=3)
    x, y, labels = data.sample(20000, torch.Generator().manual_seed(0))
    u = x[:, cfg.image_shared_dim:]
    assert u.pow(2).sum(-1).mean().sqrt().item() == pytest.approx(2.0, rel=0.02)
    # shared block minus the class signal = instance part + noise, independent: E|.|^2 adds up
    residual = x[:, : cfg.image_shared_dim] - data.codes[labels] @ data.A.T
    expected = 0.5**2 + 0.25**2 * data.B.pow(2).sum().item() / cfg.instance_dim
    assert residual.pow(2).sum(-1).mean().item() == pytest.approx(expected, rel=0.03)
    # images and texts of one pair share the instance latent: their residuals correlate through B, D
    text_residual = y[:, : cfg.text_shared_dim] - data.codes[labels] @ data.C.T
    cross = (residual.T @ text_residual) / len(x)
    expected_cross = data.B @ data.D.T * (0.25**2 / cfg.instance_dim)
    torch.testing.assert_close(cross, expected_cross, atol=0.01, rtol=0)


def test_attribute_codes_are_distinct_sparse_and_unit_norm():
    cfg = SyntheticDataConfig(latent="attributes", num_classes=9, num_attributes=6, attributes_per_class=2)
    codes = SyntheticDataModel(cfg, seed=1).codes
    assert codes.shape == (9, 6)
    assert ((codes > 0).sum(-1) == 2).all()
    torch.testing.assert_close(codes.norm(dim=-1), torch.ones(9))
    assert len({tuple(r.tolist()) for r in codes}) == 9
    torch.testing.assert_close(SyntheticDataModel(cfg, seed=1).codes, codes)  # seeded
    assert not torch.equal(SyntheticDataModel(cfg, seed=2).codes, codes)


# ----------------------------------------------------------------------------- measures
def test_margin_and_top_r_of_a_hand_built_encoder_pair():
    """Three classes, no noise: image of class c is e_c, its text is e_c. The text encoder is the
    identity; the image encoder maps e_0, e_1, e_2 to the columns of M. By hand:
      class 0 -> (0.8, 0.6, 0): sims (0.8, 0.6, 0.0), margin  0.2, rank 0
      class 1 -> (0, 0.6, 0.8): sims (0.0, 0.6, 0.8), margin -0.2, rank 1
      class 2 -> (0.6, 0, 0.8): sims (0.6, 0.0, 0.8), margin  0.2, rank 0
    and a fourth image (class 1) at (1, 1, 0)/sqrt 2 ties classes 0 and 1: margin 0, the tie goes
    to class 0, so rank 1."""
    enc = SyntheticEncoders(3, 3, SyntheticEncoderConfig(embed_dim=3, temperature=0.1))
    m = torch.tensor([[0.8, 0.0, 0.6], [0.6, 0.6, 0.0], [0.0, 0.8, 0.8]])
    with torch.no_grad():
        enc.image.weight.copy_(m)
        enc.text.weight.copy_(torch.eye(3))
    image_embeds = enc.encode_image(torch.eye(3))
    torch.testing.assert_close(image_embeds, m.T)  # the columns of M, already unit norm
    tie = torch.full((1, 3), 0.5).sqrt() * torch.tensor([[1.0, 1.0, 0.0]])  # exactly equal cosines
    labels = torch.tensor([0, 1, 2, 1])
    out = zero_shot_measures(torch.cat([image_embeds, tie]), enc.encode_text(torch.eye(3)), labels, scale=10.0)
    assert out["top1"] == pytest.approx(0.5)
    assert out["top2"] == pytest.approx(1.0) and out["top3"] == pytest.approx(1.0)
    assert out["margin_mean"] == pytest.approx((0.2 - 0.2 + 0.2 + 0.0) / 4, abs=1e-6)
    assert out["margin_logit_mean"] == pytest.approx(10 * 0.05, abs=1e-5)
    # 10th percentile of (-0.2, 0, 0.2, 0.2), linear interpolation: -0.2 + 0.3 * 0.2
    assert out["margin_p10"] == pytest.approx(-0.14, abs=1e-6)
    assert out["margin_logit_p10"] == pytest.approx(-1.4, abs=1e-5)
    assert enc(torch.eye(3), torch.eye(3))["logit_scale"].item() == pytest.approx(10.0)


# ----------------------------------------------------------------------------- training
def test_runs_are_seeded_and_train_through_the_shared_objectives():
    cfg = load_theory_config(None, ["train.steps=60", "data.test_size=400"])
    a = train_and_measure(run_config(cfg, "clip"), seed=0)
    assert a == train_and_measure(run_config(cfg, "clip"), seed=0)
    assert a != train_and_measure(run_config(cfg, "clip"), seed=1)
    assert set(RUN_METRICS) | {f"top{r}" for r in range(1, 13)} == set(a)
    assert a["top1"] > 0.5  # 12 classes: well above chance after 60 steps
    assert a["scale"] == pytest.approx(10.0)  # 1 / tau, fixed
    siglip = train_and_measure(run_config(cfg, "siglip"), seed=0)
    assert siglip["scale"] != pytest.approx(10.0, abs=1e-3)  # SigLIP's own t was trained


def test_mlp_encoders_and_a_learned_temperature():
    cfg = load_theory_config(None, ["train.steps=40", "data.test_size=300", "encoder.kind=mlp", "encoder.hidden_dim=16",
                                    "encoder.learn_temperature=true", "encoder.max_logit_scale=9", "train.lr=0.05"])
    out = train_and_measure(run_config(cfg, "clip"), seed=0)
    assert out["top1"] > 0.3 and math.isfinite(out["margin_mean"])
    assert out["scale"] <= 9.0 + 1e-5  # starts at 1/0.1 = 10, clamped to 9 after every step


def test_run_config_changes_only_what_it_names():
    base = load_theory_config()
    cfg = run_config(base, "clip_reg", temperature=0.02, lam=0.5, batch_size=8, embed_dim=3)
    assert (cfg.objective.name, cfg.encoder.temperature, cfg.objective.clip_reg.lam) == ("clip_reg", 0.02, 0.5)
    assert (cfg.train.batch_size, cfg.encoder.embed_dim) == (8, 3)
    assert base.objective.name == "clip" and base.encoder.temperature == 0.1  # the base is untouched
    with pytest.raises(KeyError):
        run_config(base, "clip", steps=3)


def test_worker_processes_give_the_same_runs():
    cfg = load_theory_config(None, TINY)
    points = [{"objective": "clip", "temperature": 0.1}, {"objective": "square"}]
    local, pool = Runner(cfg, workers=1, progress=False), Runner(cfg, workers=2, progress=False)
    local.run(points)
    pool.run(points)
    assert local.results == pool.results and len(local.results) == 4


def test_paired_gain():
    base = [{"m": 1.0}, {"m": 2.0}, {"m": 3.0}]
    other = [{"m": 1.5}, {"m": 2.0}, {"m": 4.0}]
    g = paired_gain(base, other, "m")
    assert g["mean"] == pytest.approx(0.5) and g["std"] == pytest.approx(0.5)
    assert (g["positive_seeds"], g["seeds"]) == (2, 3)


# ----------------------------------------------------------------------------- studies
@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    cfg = load_theory_config(None, TINY)
    result = run_studies(list(STUDIES), cfg, out, progress=False)
    return cfg, out, result


FINDINGS = {
    "margin-vs-temperature": {"clip", "clip_reg", "clip_reg_minus_clip"},
    "regularizer-sweep": {"lambdas", "temperatures", "margin_mean", "margin_gain_over_clip", "top1_gain_over_clip",
                          "margin_gain_positive_seeds", "best_lambda_by_tau"},
    "square-vs-clip": {"embed_dims", "latents"},
    "top-r": {"r", "error_by_r"},
    "batch-size": {"batch_sizes", "tau=0.1"},
}


@pytest.mark.parametrize("name", list(STUDIES))
def test_study_json_has_every_field(name, tiny_lab):
    cfg, out, _ = tiny_lab
    doc = json.loads((out / f"{name}.json").read_text())
    assert set(doc) == {"study", "claim", "seeds", "config", "points", "findings", "plot"}
    assert doc["study"] == name and doc["claim"] and doc["seeds"] == [0, 1]
    assert doc["config"]["train"]["steps"] == 25 and doc["config"]["objective"]["clip_reg"]["lambda"] == 0.01
    metric_keys = set(RUN_METRICS) | {f"top{r}" for r in range(1, cfg.data.num_classes + 1)}
    assert doc["points"]
    for point in doc["points"]:
        assert {"objective", "temperature", "batch_size", "embed_dim", "latent"} <= set(point["params"])
        assert [r["seed"] for r in point["runs"]] == [0, 1]
        for run in point["runs"]:
            assert set(run["metrics"]) == metric_keys
            assert all(math.isfinite(v) for v in run["metrics"].values())
        assert set(point["summary"]) == metric_keys
        for key, stat in point["summary"].items():
            values = [r["metrics"][key] for r in point["runs"]]
            assert stat["mean"] == pytest.approx(sum(values) / 2)
            assert stat["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    assert set(doc["findings"]) == FINDINGS[name]
    png = out / doc["plot"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_studies_share_runs_and_grids_are_what_was_asked(tiny_lab):
    cfg, out, result = tiny_lab
    # distinct points: margin 2 objectives x 2 taus = 4; the sweep's lambda 0 row is margin's CLIP, its
    # lambda 0.1 row is new (margin's clip_reg has lambda 0.01) = 2; compare 5 objectives x d in {2, 4}
    # x 2 latents = 20; top-r reuses compare's d = 2; batch 2 objectives x 2 sizes at d = 8 = 4.
    assert result.runs_trained == 2 * (4 + 2 + 20 + 4)
    compare = json.loads((out / "square-vs-clip.json").read_text())["findings"]
    assert set(compare["latents"]) == {"onehot", "attributes"}
    assert set(compare["latents"]["attributes"]["minus_clip_top1"]) == {"square", "siglip", "cyclip", "clip_reg"}
    sweep = json.loads((out / "regularizer-sweep.json").read_text())
    assert [p["params"]["objective"] for p in sweep["points"]] == ["clip", "clip", "clip_reg", "clip_reg"]
    assert sweep["findings"]["margin_gain_over_clip"][0] == [0.0, 0.0]  # lambda 0 is CLIP itself
    assert result.cpu_seconds > 0 and result.wall_seconds > 0


def test_cli_runs_a_study_and_reports_errors_in_one_line(tmp_path, capsys):
    assert cli_main(["theory", "top-r", "--out", str(tmp_path), "--no-progress", *sum((["--set", s] for s in TINY), [])]) == 0
    assert (tmp_path / "top-r.json").exists() and (tmp_path / "top-r.png").exists()
    assert "theory top-r:" in capsys.readouterr().out
    assert cli_main(["theory", "margins", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lipkit: error: theory: unknown study 'margins'") and err.count("\n") == 1
    assert cli_main(["theory", "top-r", "--out", str(tmp_path), "--set", "data.num_clases=3"]) == 2
    assert "unknown key 'data.num_clases'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ("encoder.temperature=0", "encoder.temperature: must be > 0"),
        ("data.num_classes=1", "data.num_classes: zero-shot needs at least 2 classes"),
        ("data.latent=attributes", "data.num_classes: 12 classes need distinct attribute sets"),
        ("studies.compare_objectives=[clip,nclip]", "need heads the lab's encoders do not have"),
        ("studies.batch_objectives=[clipp]", "studies.batch_objectives: unknown objective(s) ['clipp']"),
        ("studies.reg_lambdas=[-1]", "studies.reg_lambdas: must be a non-empty list of values >= 0"),
        ("encoder.kind=rnn", "encoder.kind: expected one of 'linear' | 'mlp'"),
    ],
)
def test_bad_theory_settings_are_one_line_config_errors(override, message):
    extra = ["data.num_attributes=4"] if "attributes" in override else []
    with pytest.raises(ConfigError) as err:
        load_theory_config(None, [override, *extra])
    assert message in str(err.value) and "\n" not in str(err.value)
