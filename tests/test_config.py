import subprocess
import sys

import pytest
import yaml

from lipkit.config import (
    ConfigError,
    RunConfig,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from lipkit.objectives import build_objective


def test_preset_loads_and_overrides_apply():
    cfg = load_config("fashion-tiny", ["train.steps=7", "objective.name=xclip", "objective.clip_reg.lambda=0.25"])
    assert cfg.train.steps == 7
    assert cfg.objective.name == "xclip"
    assert cfg.objective.clip_reg.lam == 0.25
    assert cfg.model.vision.patch_size == 7  # from the preset, not the dataclass default (4)


def test_base_chain_merges_sections():
    cfg = load_config("xclip-paper-weights")
    assert (cfg.objective.xclip.w_clip, cfg.objective.xclip.w_nclip) == (0.3, 0.7)
    assert cfg.model.vision.patch_size == 7  # inherited from fashion-tiny


def test_a_base_that_is_not_a_name_is_one_config_error(tmp_path):
    (tmp_path / "c.yaml").write_text("base: [fashion-tiny]\n")
    with pytest.raises(ConfigError, match=r"base: expected a preset name or a file, got \['fashion-tiny'\]"):
        load_config(str(tmp_path / "c.yaml"))


def test_yaml_round_trip(tmp_path):
    cfg = load_config("fashion-tiny", ["objective.clip_reg.lambda=0.5", "model.heads=[clip]"])
    save_config(cfg, tmp_path / "c.yaml")
    back = load_config(str(tmp_path / "c.yaml"))
    assert back == cfg
    assert "lambda" in to_dict(cfg)["objective"]["clip_reg"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stpes=3", "unknown key 'train.stpes'; allowed keys: steps, batch_size,"),
        ("model.vision.widht=3", "unknown key 'model.vision.widht'; allowed keys: name, "),
        ("train.steps=abc", "train.steps: expected int, got str 'abc'"),
        ("train.lr=true", "train.lr: expected float, got bool True"),
        ("train.progress=1", "train.progress: expected bool, got int 1"),
        ("objective.clip.direction_reduction=max", "objective.clip.direction_reduction: expected one of 'mean' | 'sum', got 'max'"),
        ("objective.nclip=3", "objective.nclip: expected a mapping"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("fashion-tiny", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_objective_names_the_available_ones():
    from lipkit.objectives import available_objectives

    assert {"clip", "clip_reg", "nclip", "xclip", "siglip", "cyclip", "square"} <= set(available_objectives())
    cfg = load_config("fashion-tiny", ["objective.name=simclr"])
    with pytest.raises(ConfigError) as err:
        build_objective(cfg.objective)
    assert str(err.value) == f"objective.name: unknown objective 'simclr'; available: {', '.join(available_objectives())}"


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="presets: .*fashion-tiny"):
        load_config("no-such-preset")


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config("fashion-tiny", ["train.steps"])


def test_defaults_match_the_papers():
    cfg = from_dict({})
    assert isinstance(cfg, RunConfig)
    assert cfg.model.init_logit_scale == pytest.approx(1 / 0.07)
    assert cfg.model.max_logit_scale == 100
    nclip = cfg.objective.nclip  # information maximisation (OBJECTIVES.md 2, revised 2026-11-29)
    assert (nclip.temperature, nclip.target_temperature, nclip.lambda_sharp, nclip.lambda_smooth) == (0.1, 0.1, 1, 1)
    assert (cfg.model.prototypes.hidden_dim, cfg.model.prototypes.bottleneck_dim) == (2048, 256)
    assert cfg.model.prototypes.batch_norm and cfg.model.prototypes.num_prototypes <= cfg.train.batch_size


def test_a_run_recorded_before_a_field_existed_keeps_its_old_meaning(tmp_path):
    """model.prototypes.batch_norm is new: a config.yaml written without it means no BatchNorm (the
    weights it was saved with have none), while a new config without it means the new default."""
    cfg = from_dict({})
    old = to_dict(cfg)
    del old["model"]["prototypes"]["batch_norm"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    assert load_config(str(path), recorded=True).model.prototypes.batch_norm is False
    assert load_config(str(path)).model.prototypes.batch_norm is True
    del old["model"]["prototypes"]  # a whole section missing: its fields' recorded defaults too
    path.write_text(yaml.safe_dump(old))
    assert load_config(str(path), recorded=True).model.prototypes.batch_norm is False
    assert from_dict({}, recorded=True).model.prototypes.batch_norm is False


def test_the_command_line_is_built_without_torch():
    """`lipkit --help` stays fast: the eval task names come from lipkit.eval.registry alone."""
    code = ("import sys; from lipkit.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_a_run_recorded_before_data_normalization_keeps_its_evaluation_transform(tmp_path):
    """Runs written before data.normalization were evaluated with Fashion-MNIST's statistics when
    their tower had one channel, with data.image_mean / image_std otherwise."""
    path = tmp_path / "config.yaml"
    for channels, recorded in ((1, "fashion-mnist"), (3, "mean-std")):
        old = to_dict(from_dict({"model": {"vision": {"channels": channels}}}))
        del old["data"]["normalization"]
        path.write_text(yaml.safe_dump(old))
        assert load_config(str(path), recorded=True).data.normalization == recorded
        assert load_config(str(path)).data.normalization == "mean-std"  # a new config: the default
        old["data"]["normalization"] = "mean-std"  # a run that recorded it: as recorded
        path.write_text(yaml.safe_dump(old))
        assert load_config(str(path), recorded=True).data.normalization == "mean-std"


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--config", "fashion-tiny", "--set", "train.stpes=3", "--out", "x"], "lipkit: error: unknown key 'train.stpes'"),
        (["train", "--config", "fashion-tiny", "--set", "objective.name=foo", "--out", "x"], "lipkit: error: objective.name: unknown objective 'foo'"),
        (["eval", "no/such/run"], "lipkit: error: no/such/run: not a lipkit run directory"),
    ],
)
def test_cli_prints_one_line_and_exits_2(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lipkit", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()  # nothing written on a config error


# --------------------------------------------------------------------------- YAML: one loader everywhere
@pytest.mark.parametrize("text, value", [("5e-4", 0.0005), ("1e6", 1e6), ("1.0e5", 1e5), ("-2E-3", -0.002),
                                         ("1.5", 1.5), ("3", 3.0)])
def test_exponent_floats_load_as_floats_from_set_and_files(text, value, tmp_path):
    # YAML 1.1 (PyYAML's default) reads 5e-4 and 1e6 as strings, which the typed field refused
    assert load_config("fashion-tiny", [f"train.lr={text}"]).train.lr == value
    path = tmp_path / "run.yaml"
    path.write_text(f"base: fashion-tiny\ntrain:\n  lr: {text}\n")
    assert load_config(str(path)).train.lr == value


def test_exponent_floats_in_theory_configs_and_experiment_specs(tmp_path):
    from lipkit.experiment.grid import build_cells, load_spec
    from lipkit.theory import load_theory_config

    (tmp_path / "lab.yaml").write_text("train:\n  lr: 5e-3\n")
    assert load_theory_config(str(tmp_path / "lab.yaml"), ["data.noise_std=1e-1"]).train.lr == 0.005
    assert load_theory_config(None, ["data.noise_std=1e-1"]).data.noise_std == 0.1
    (tmp_path / "base.yaml").write_text("base: fashion-tiny\ntrain:\n  weight_decay: 1e-2\n")
    (tmp_path / "e.yaml").write_text(
        "title: t\nbatch_sizes: [32]\ndatasets: [{name: fm, config: base.yaml, samples: 64}]\n"
        "settings: [{name: a, set: [train.lr=5e-4]}]\n")
    (cell,) = build_cells(load_spec(tmp_path / "e.yaml"))
    cfg = cell.config()
    assert (cfg.train.lr, cfg.train.weight_decay) == (0.0005, 0.01)


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 1e-3\n  steps: [1, 2\nmodel: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value) == f"{path}:4:6: not valid YAML: expected ',' or ']', but got ':'"
    path.write_text("train:\n\tsteps: 3\n")  # a tab where YAML wants spaces
    with pytest.raises(ConfigError, match=rf"^{path}:2:1: not valid YAML: found character '\\t'"):
        load_config(str(path))


def test_yaml_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  steps: 3  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{path}:2:18: not UTF-8 text \(byte 0xE9\)"):
        load_config(str(path))
    path.write_bytes(b"\xef\xbb\xbftrain:\n  steps: 3\n")  # a byte-order mark is fine
    assert load_config(str(path)).train.steps == 3


@pytest.mark.parametrize("value", ["0", "-64"])
def test_batch_size_below_one_says_so(value, tmp_path, capsys):
    from lipkit.cli import main

    assert main(["train", "--config", "fashion-tiny", f"--set=train.batch_size={value}", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"lipkit: error: train.batch_size: must be >= 1, got {value}\n"
    assert not (tmp_path / "r").exists()
