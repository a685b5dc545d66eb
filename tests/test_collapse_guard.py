"""The nCLIP collapse guard on logged records (the end-to-end case is tests/test_nclip_real_data.py)."""
import pytest

from lipkit.config import ConfigError, TrainConfig
from lipkit.train.collapse_guard import CollapseGuard, prototype_capacity_warning


def record(image, text=0.5, used=12.0, top=0.8, prefix="nclip/"):
    return {f"{prefix}image_mi_ratio": image, f"{prefix}text_mi_ratio": text,
            f"{prefix}distinct_prototypes": used, f"{prefix}mean_max_prob": top}


def test_fires_once_after_patience_logged_steps_below_the_threshold_after_warm_up():
    guard = CollapseGuard(TrainConfig(warmup_steps=20, collapse_threshold=0.05, collapse_patience=3))
    assert guard.check(10, record(0.0)) is None and guard.check(20, record(0.0)) is None  # warm-up
    assert guard.check(30, record(0.01)) is None and guard.check(40, record(0.02)) is None
    assert guard.check(50, record(0.3)) is None  # recovered: the count starts again
    assert guard.check(60, record(0.01)) is None and guard.check(70, record(0.0)) is None
    message = guard.check(80, record(0.001, used=1, top=0.99))
    assert message.startswith("nCLIP collapse onto one prototype (every input gets the same one-hot assignment) "
                              "at step 80: the image prototypes' batch mutual information")
    assert "(0.010, 0.000, 0.001; distinct prototypes 1, mean max probability 0.99)" in message
    assert "model.prototypes.batch_norm=true" in message
    assert guard.check(90, record(0.0)) is None  # once per run


def test_names_the_soft_collapse_and_the_text_side():
    guard = CollapseGuard(TrainConfig(warmup_steps=0, collapse_patience=2))
    guard.check(1, record(0.4, text=0.0, used=1, top=0.2, prefix=""))
    message = guard.check(2, record(0.4, text=0.0, used=1, top=0.2, prefix=""))
    assert "input-independent output (every input gets the same soft distribution)" in message
    assert "the text prototypes'" in message


def test_quiet_without_prototypes_or_on_a_healthy_run():
    guard = CollapseGuard(TrainConfig(warmup_steps=0, collapse_patience=1))
    assert guard.check(5, {"loss": 1.0, "contrastive_loss": 1.0}) is None
    assert all(guard.check(s, record(0.3, text=0.2)) is None for s in range(1, 50))


def test_bad_guard_settings_are_config_errors():
    with pytest.raises(ConfigError, match="train.collapse_patience: must be >= 1"):
        CollapseGuard(TrainConfig(collapse_patience=0))
    with pytest.raises(ConfigError, match="train.collapse_threshold"):
        CollapseGuard(TrainConfig(collapse_threshold=1.5))


def test_prototype_capacity_warning_names_the_numbers():
    assert prototype_capacity_warning(256, 256) is None
    message = prototype_capacity_warning(8192, 256)
    assert "num_prototypes=8192 exceeds the global batch of 256" in message
    assert "Use num_prototypes <= 256" in message


def test_the_kind_is_read_from_the_collapsing_modality_and_nan_is_no_evidence():
    # the image side sits on one prototype while the text side is healthy: pooled, 40 prototypes
    # are used and the mean top probability is middling, but the image usage entropy says one-hot
    guard = CollapseGuard(TrainConfig(warmup_steps=0, collapse_patience=2))
    image_one_hot = record(0.0, text=0.6, used=40, top=0.6, prefix="") | {"image_usage_entropy_ratio": 0.01}
    assert guard.check(1, image_one_hot) is None
    assert guard.check(2, record(float("nan"), prefix="")) is None  # a skipped step neither counts nor resets
    message = guard.check(3, image_one_hot)
    assert message.startswith("nCLIP collapse onto one prototype") and "image usage entropy H(p̄)/log K 0.01" in message
    # the same counts with a flat average distribution: the soft, input-independent collapse
    guard = CollapseGuard(TrainConfig(warmup_steps=0, collapse_patience=1))
    soft = record(0.0, text=0.6, used=1, top=0.95, prefix="") | {"image_usage_entropy_ratio": 0.8}
    assert "input-independent output" in guard.check(1, soft)
